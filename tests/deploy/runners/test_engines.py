"""The CPU engine choice of Paddle Inference (``--engine``): what ``auto`` runs (the engine the
export recorded, oneDNN for an older export), OpenVINO's set-up and where its compile cache goes
(never the working directory or the export folder), and the one-line refusals. Parity of each
engine with dygraph: test_paddle_inference.py; the measured choice at export:
tests/deploy/test_export.py."""

import os
import shutil

import paddle.inference as pi
import pytest
import yaml
from test_export import exports
from test_paddle_inference import RecordingConfig

from mobileseg_paddle.deploy import deploy_yaml
from mobileseg_paddle.deploy import infer as I
from mobileseg_paddle.deploy import runners as R
from mobileseg_paddle.deploy.deploy_yaml import DEPLOY_KEY, DeployConfig
from mobileseg_paddle.deploy.runners import paddle_inference as P
from mobileseg_paddle.errors import UserError


def _copy(folder, dest, edit=None, drop=()):
    """A copy of an export, its deploy.yaml edited by ``edit(doc)``, the files ``drop`` left
    out."""
    shutil.copytree(folder, dest, ignore=shutil.ignore_patterns(*drop) if drop else None)
    if edit:
        path = os.path.join(dest, "deploy.yaml")
        with open(path) as f:
            doc = yaml.safe_load(f)
        edit(doc)
        with open(path, "w") as f:
            yaml.safe_dump(doc, f)
    return str(dest)


def _recorded(engine):
    def edit(doc):
        doc[DEPLOY_KEY]["engine"] = {"default": engine, "chosen": "--engine"}
    return edit


def test_auto_runs_the_recorded_engine(tmp_path):
    folder = _copy(exports()["mobilenetv2"]["paddle"], tmp_path / "export", _recorded("plain"))
    deploy = DeployConfig(folder)
    assert deploy.engine == "plain"
    assert R.resolve_options(deploy).engine == "plain"
    assert R.resolve_options(deploy, R.PredictorOptions(engine="onednn")).engine == "onednn"
    # PaddleSeg's flag still means the plain kernels; the PIR program never goes to OpenVINO
    assert R.resolve_options(deploy, R.PredictorOptions(enable_mkldnn=False)).engine == "plain"
    deploy.engine = "openvino"
    assert R.resolve_options(deploy, R.PredictorOptions(program="pir")).engine == "onednn"
    # bare files and ONNX exports have no recorded engine
    bare = R.ModelFiles.from_paddle(deploy.file("legacy"), deploy.file("params"))
    assert R.resolve_options(bare).engine == "onednn"


def test_an_export_of_format_version_1_loads_and_runs_on_onednn(tmp_path, dygraph_case):
    """An older export: no engine, no OpenVINO program; auto runs oneDNN and OpenVINO is
    refused in one line (its program there has the pooling form OpenVINO gets wrong)."""
    def older(doc):
        ours = doc[DEPLOY_KEY]
        ours["format_version"] = 1
        del ours["engine"]
        del ours["files"]["openvino"]
    folder = _copy(exports()["mobilenetv2"]["paddle"], tmp_path / "old", older,
                   drop=("model.openvino.pdmodel",))
    deploy = DeployConfig(folder)
    assert deploy.engine == "onednn"
    x, ref = dygraph_case("mobilenetv2")[(128, 256)]
    with R.create_runner(deploy) as runner:
        assert runner.opts.engine == "onednn"
        assert runner(x).shape == ref.shape
    with pytest.raises(UserError) as e:
        R.create_runner(deploy, "paddle", R.PredictorOptions(engine="openvino"))
    assert str(e.value) == (f"{deploy.path}: --engine openvino needs an export of this version "
                            f"(model.openvino.pdmodel); re-export the model or use --engine "
                            f"onednn")


def test_openvino_cache_stays_out_of_the_working_directory_and_the_export(
        tmp_path, monkeypatch, dygraph_case):
    """Paddle's default place for OpenVINO's compiled models is ./__cache__: ours is the user's
    cache folder ($XDG_CACHE_HOME/mobileseg/openvino here)."""
    folder = exports()["mobilenetv2"]["paddle"]
    before = sorted(os.listdir(folder))
    cwd, xdg = tmp_path / "cwd", tmp_path / "xdg"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("MOBILESEG_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    x, ref = dygraph_case("mobilenetv2")[(128, 256)]
    with R.create_runner(DeployConfig(folder), "paddle",
                         R.PredictorOptions(engine="openvino", cpu_threads=1)) as runner:
        assert runner(x).shape == ref.shape
    assert os.listdir(cwd) == []
    assert sorted(os.listdir(folder)) == before
    (model_dir,) = os.listdir(xdg / "mobileseg" / "openvino")
    staged = xdg / "mobileseg" / "openvino" / model_dir
    assert sorted(os.listdir(staged)) == ["compiled", "model.pdiparams", "model.pdmodel"]
    assert os.listdir(staged / "compiled")  # the compiled model
    # the parameters linked, the program a copy without the phase form of its upsampling
    assert os.path.samefile(staged / "model.pdiparams", os.path.join(folder, "model.pdiparams"))
    with open(os.path.join(folder, "model.openvino.pdmodel"), "rb") as f:
        program = P.interpolated_tail(f.read())
    assert (staged / "model.pdmodel").read_bytes() == program


CREATE_RUNNER = """
import sys
from mobileseg_paddle.deploy.deploy_yaml import DeployConfig
from mobileseg_paddle.deploy import runners as R
opts = R.PredictorOptions(engine="openvino", cpu_threads=1, openvino_cache_dir=sys.argv[2])
print("ready", flush=True)
R.create_runner(DeployConfig(sys.argv[1]), "paddle", opts)
print("done", flush=True)
"""


def test_openvino_compiles_one_program_at_a_time(tmp_path):
    """OpenVINO writes its compiled model into the cache under its final name: a second
    process creating a predictor of the same program waits for the first (``_compile_lock``)
    instead of reading a half-written file. Here the lock is held by the test: the other
    process writes nothing and does not finish until it is released."""
    import subprocess
    import sys
    import time

    from mobileseg_paddle.fslock import folder_lock

    deploy = DeployConfig(exports()["mobilenetv2"]["paddle"])
    opts = R.resolve_options(deploy, R.PredictorOptions(engine="openvino",
                                                        openvino_cache_dir=str(tmp_path)))
    files = R.ModelFiles.of(deploy, "paddle", opts.program, opts.engine)
    compiled = P._compiled_dir(files, opts)
    os.makedirs(compiled)
    with folder_lock(compiled):
        proc = subprocess.Popen([sys.executable, "-c", CREATE_RUNNER, deploy.path, str(tmp_path)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(5)  # a compilation of this model takes about a second
            assert proc.poll() is None and os.listdir(compiled) == []
        except BaseException:
            proc.kill()
            raise
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    assert out.strip() == "done"
    assert [f for f in os.listdir(compiled) if f.endswith(".blob")]


def test_openvino_cache_of_a_deleted_export_is_removed(tmp_path):
    """``prune_openvino_cache`` (run when an OpenVINO runner starts) removes the folders whose
    staged parameters link dangles, the program's and its sizes', except a program another
    process is compiling; it keeps live links and copies."""
    from mobileseg_paddle.fslock import folder_lock

    export = tmp_path / "export"
    export.mkdir()
    (export / "model.pdiparams").write_bytes(b"params")
    root = tmp_path / "cache"

    def entry(name, target, copy=False):
        folder = root / name
        (folder / "compiled").mkdir(parents=True)
        (folder / "compiled" / "1.blob").write_bytes(b"blob")
        if copy:
            (folder / "model.pdiparams").write_bytes(b"params")
        else:
            os.symlink(target, folder / "model.pdiparams")
        return folder

    live = entry("aaaa", export / "model.pdiparams")
    gone = entry("bbbb", tmp_path / "deleted" / "model.pdiparams")
    gone_size = entry("bbbb-1x3x64x64", tmp_path / "deleted" / "model.pdiparams")
    busy = entry("cccc", tmp_path / "deleted" / "model.pdiparams")
    copied = entry("dddd", None, copy=True)
    (root / "stray.txt").write_text("not a folder")
    with folder_lock(busy / "compiled"):
        P.prune_openvino_cache(str(root))
    assert sorted(os.listdir(root)) == ["aaaa", "cccc", "dddd", "stray.txt"]
    assert os.listdir(live / "compiled") == ["1.blob"] and not gone.exists()
    assert not gone_size.exists() and copied.exists()
    P.prune_openvino_cache(str(root))  # no longer being compiled
    assert sorted(os.listdir(root)) == ["aaaa", "dddd", "stray.txt"]
    P.prune_openvino_cache(str(tmp_path / "missing"))  # no cache yet: nothing to do


def test_openvino_configuration(tmp_path):
    deploy = DeployConfig(exports()["mobilenetv2"]["paddle"])
    cfg = P.make_config(deploy, R.PredictorOptions(engine="openvino", cpu_threads=2,
                                                   openvino_cache_dir=str(tmp_path)),
                        RecordingConfig)
    ((program, params), _), = cfg.called("__init__")  # files (OpenVINO reads no buffer)
    assert os.path.dirname(program) == os.path.dirname(params)
    assert os.path.dirname(program).startswith(str(tmp_path))
    assert cfg.called("set_cpu_math_library_num_threads") == [((2,), {})]
    assert cfg.called("enable_openvino_engine") == [((pi.PrecisionType.Float32,), {})]
    (((cache,), _),) = cfg.called("set_optim_cache_dir")
    assert cache.startswith(str(tmp_path))
    assert not cfg.called("enable_mkldnn") and not cfg.called("enable_memory_optim")


def test_engines_refused_in_one_line(tmp_path, capsys):
    deploy = DeployConfig(exports()["mobilenetv2"]["paddle"])
    cases = [
        (R.PredictorOptions(engine="fast"),
         "--engine: expected one of auto, onednn, openvino, plain, got 'fast'"),
        (R.PredictorOptions(engine="openvino", enable_mkldnn=False),
         "--enable_mkldnn False asks for the plain CPU kernels, --engine openvino for another "
         "engine: pass one of them"),
        (R.PredictorOptions(engine="openvino", program="pir"),
         f"{deploy.path}: --engine openvino runs the legacy program, not the PIR one (leave out "
         f"--program pir)"),
        (R.PredictorOptions(engine="openvino", ir_optim=False),
         "--engine openvino needs --ir_optim True"),
    ]
    for opts, message in cases:
        with pytest.raises(UserError) as e:
            R.create_runner(deploy, "paddle", opts.replace(openvino_cache_dir=str(tmp_path)))
        assert str(e.value) == message
    onnx = DeployConfig(exports()["mobilenetv2"]["onnx_dynamic"])
    with pytest.raises(UserError, match="^--engine openvino: the engines are Paddle Inference's"):
        R.create_runner(onnx, "auto", R.PredictorOptions(engine="openvino"))
    # the command line: argparse's one line, status 2
    with pytest.raises(SystemExit) as e:
        I.main(["--config", deploy.path, "--image_path", ".", "--engine", "fast"])
    assert e.value.code == 2
    assert "--engine: invalid choice: 'fast'" in capsys.readouterr().err


def test_bad_recorded_engine_is_one_error(tmp_path):
    folder = _copy(exports()["mobilenetv2"]["paddle"], tmp_path / "export", _recorded("gpu"))
    with pytest.raises(UserError) as e:
        DeployConfig(folder)
    assert str(e.value) == (f"{os.path.join(folder, deploy_yaml.FILENAME)}: engine 'gpu': "
                            f"expected one of onednn, openvino, plain")
