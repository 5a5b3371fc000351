"""Export a trained MobileSeg to a Paddle Inference model or to ONNX, with a ``deploy.yaml``.

    mobileseg export --config configs/mobileseg/mobileseg_mobilenetv2_cityscapes_1024x512_80k.yml \
        --model_path output/best_model/model.pdparams --save_dir output/inference

Flags follow PaddleSeg's ``tools/export.py`` (``--config --model_path --save_dir --input_shape
--output_op``) plus ``--format paddle|onnx``. The model's own export rewrites (same maths) and
the exported wrapper are in ``mobileseg_paddle.models.export_rewrites``; ``deploy.yaml`` is
written by ``deploy_yaml``.

What is written (into a temporary folder next to ``save_dir``, renamed into place when complete):

- ``--format paddle``: ``model.pdmodel`` (program, legacy format) and ``model.json`` (the same
  program in Paddle 3's PIR format), sharing one ``model.pdiparams``; ``deploy.yaml``.
  ``deploy.yaml`` points Paddle Inference at ``model.pdmodel``: on Paddle 3.3.1 a PIR program
  that contains an interpolation cannot run with oneDNN (the PIR oneDNN executor does not
  convert the ``double[]`` ``scale`` attribute of ``bilinear_interp``/``nearest_interp``:
  "ConvertPirAttribute2RuntimeAttribute not support ArrayAttribute<DoubleAttribute>"), while
  the same program in the legacy format runs through the oneDNN passes of the analysis
  predictor. ``--program pir`` or ``legacy`` writes only one of them. The legacy program is
  traced in this process (``DygraphOldIrGuard`` with the model's legacy-op builders).
- ``--format onnx``: ``model.onnx`` (through paddle2onnx) and ``deploy.yaml``.
"""

import argparse
import os
import shutil
import sys
import tempfile

import paddle

import mobileseg_paddle
from mobileseg_paddle.builder import build_model
from mobileseg_paddle.config import load_config, normalization
from mobileseg_paddle.deploy import deploy_yaml
from mobileseg_paddle.deploy.deploy_yaml import MIN_INPUT_SIZE, OUTPUT_OPS
from mobileseg_paddle.errors import UserError, run_main
from mobileseg_paddle.models.export_rewrites import DeployModel, legacy_tracing, prepare_for_deploy

PROGRAMS = ("both", "legacy", "pir")
DEFAULT_ONNX_OPSET = 13
MIN_ONNX_OPSET = 7  # paddle2onnx's lowest


# ----------------------------------------------------------------------------------------------
# Writing programs


def parse_input_shape(values):
    """``--input_shape N C H W`` -> list of 4 ints, -1 (or None) meaning dynamic.
    None -> [-1, 3, -1, -1]."""
    if values is None:
        return [-1, 3, -1, -1]
    if len(values) != 4:
        raise UserError(f"--input_shape: expected 4 values N C H W, got {len(values)}: "
                          f"{' '.join(str(v) for v in values)}")
    shape = []
    for v in values:
        try:
            v = int(v)
        except (TypeError, ValueError):
            raise UserError(f"--input_shape: {v!r} is not an integer") from None
        if v == 0 or v < -1:
            raise UserError(f"--input_shape: sizes must be positive or -1 (dynamic), got {v}")
        shape.append(v)
    if shape[1] != 3:
        raise UserError(f"--input_shape: the models take 3-channel (RGB) images, got C={shape[1]}")
    for name, v in zip("HW", shape[2:]):
        if v != -1 and v < MIN_INPUT_SIZE:
            raise UserError(f"--input_shape: {name}={v} is below the smallest supported size "
                              f"{MIN_INPUT_SIZE}")
    return shape


def _input_spec(shape):
    return [paddle.static.InputSpec([None if v == -1 else v for v in shape], "float32", "x")]


def save_paddle_programs(net, out_dir, shape, program="both"):
    """Trace ``net`` and save it as ``model.pdmodel`` (legacy) and/or ``model.json`` (PIR)
    with one ``model.pdiparams``. Returns {"legacy": file, "pir": file} for what was written."""

    if program not in PROGRAMS:
        raise UserError(f"--program: expected one of {PROGRAMS}, got {program!r}")
    spec = _input_spec(shape)
    written = {}
    if program in ("both", "legacy"):
        # Also Paddle Lite's writer. In this process: the program equals what a process started
        # with FLAGS_enable_pir_api=0 writes (tests/deploy/lite/test_lite_models.py).
        with paddle.pir_utils.DygraphOldIrGuard(), legacy_tracing():
            static = paddle.jit.to_static(net, input_spec=spec, full_graph=True)
            paddle.jit.save(static, os.path.join(out_dir, "model"))
        written["legacy"] = "model.pdmodel"
        info = os.path.join(out_dir, "model.pdiparams.info")
        if os.path.exists(info):  # training-only metadata, not read by inference
            os.remove(info)
    if program in ("both", "pir"):
        sub = os.path.join(out_dir, "_pir") if written else out_dir
        with paddle.pir_utils.DygraphPirGuard():
            static = paddle.jit.to_static(net, input_spec=spec, full_graph=True)
            paddle.jit.save(static, os.path.join(sub, "model"))
        if sub != out_dir:
            # both formats store the same parameters in the same order: keep one file
            if not _same_file(os.path.join(sub, "model.pdiparams"),
                              os.path.join(out_dir, "model.pdiparams")):
                raise RuntimeError("the legacy and PIR exports wrote different parameter files")
            os.replace(os.path.join(sub, "model.json"), os.path.join(out_dir, "model.json"))
            shutil.rmtree(sub)
        written["pir"] = "model.json"
    return written


def _same_file(a, b):
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            ca, cb = fa.read(1 << 20), fb.read(1 << 20)
            if ca != cb:
                return False
            if not ca:
                return True


def save_onnx(net, out_dir, shape, opset=DEFAULT_ONNX_OPSET):
    """Trace ``net`` to a PIR program in a scratch folder and convert it with paddle2onnx to
    ``out_dir/model.onnx``. Returns "model.onnx"."""
    import paddle2onnx

    with tempfile.TemporaryDirectory(prefix="p2o-", dir=out_dir) as scratch:
        with paddle.pir_utils.DygraphPirGuard():
            static = paddle.jit.to_static(net, input_spec=_input_spec(shape), full_graph=True)
            paddle.jit.save(static, os.path.join(scratch, "model"))
        # optimize_tool="None": paddle2onnx's default ("polygraphy") switches on polygraphy's
        # automatic pip installs (POLYGRAPHY_AUTOINSTALL_DEPS=1), which can replace packages
        # of the environment (it upgraded numpy to 2.x here); its "onnxoptimizer" option
        # fails on paddle2onnx 2.1.0's own pass list. onnxruntime optimizes the graph itself.
        paddle2onnx.export(os.path.join(scratch, "model.json"),
                           os.path.join(scratch, "model.pdiparams"),
                           os.path.join(out_dir, "model.onnx"), opset_version=opset,
                           auto_upgrade_opset=True, enable_onnx_checker=True,
                           optimize_tool="None")
    path = os.path.join(out_dir, "model.onnx")
    if not os.path.isfile(path):
        raise RuntimeError("paddle2onnx did not write model.onnx")
    written = onnx_opset(path)
    if written != opset:  # paddle2onnx raises it to the lowest that expresses every op
        print(f"note: --opset {opset} raised to {written}: the lowest opset that expresses "
              f"every op of this model", file=sys.stderr)
    return "model.onnx"


def onnx_opset(path):
    import onnx
    model = onnx.load(path, load_external_data=False)
    return max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def check_opset(opset):
    import onnx
    highest = onnx.defs.onnx_opset_version()
    if not MIN_ONNX_OPSET <= opset <= highest:
        raise UserError(f"--opset {opset}: expected {MIN_ONNX_OPSET} to {highest} (what "
                        f"paddle2onnx and this onnx {onnx.__version__} write)")


# ----------------------------------------------------------------------------------------------
# Export


def export(config, save_dir, model_path=None, input_shape=None, output_op="argmax",
           fmt="paddle", program="both", opset=DEFAULT_ONNX_OPSET, model=None):
    """Export and return the path of the written deploy.yaml.

    ``model`` (optional) is an already built and loaded model to export instead of building
    one from ``config`` and ``model_path`` (``config`` still provides transforms and names)."""
    if output_op not in OUTPUT_OPS:
        raise UserError(f"--output_op: expected one of {OUTPUT_OPS}, got {output_op!r}")
    if fmt not in ("paddle", "onnx"):
        raise UserError(f"--format: expected paddle or onnx, got {fmt!r}")
    shape = parse_input_shape(input_shape)
    if fmt == "onnx":
        check_opset(opset)
    save_dir = os.path.abspath(save_dir)
    _check_save_dir(save_dir)
    if program not in PROGRAMS:
        raise UserError(f"--program: expected one of {PROGRAMS}, got {program!r}")
    _check_foreign(save_dir, _written_files(fmt, program))  # at once; again when switching
    if model is None:
        model, cfg = build_model(config, model_path)
    else:
        cfg = load_config(config, sections=("model",))
    net = DeployModel(prepare_for_deploy(model, target=fmt), output_op,
                      channels_last_argmax=(fmt == "paddle"))

    with _export_lock(save_dir):
        journal_lost = _recover(save_dir)  # an export into it that was killed mid-switch
        _check_save_dir(save_dir)  # again: another export may have finished meanwhile
        _remove_leftovers(save_dir)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(save_dir)}.partial-",
                               dir=os.path.dirname(save_dir))
        try:
            if fmt == "paddle":
                files = save_paddle_programs(net, tmp, shape, program)
                files["params"] = "model.pdiparams"
            else:
                files = {"onnx": save_onnx(net, tmp, shape, opset)}
            mean, std = normalization(cfg)
            info = deploy_yaml.make(cfg, int(model.num_classes), shape, output_op, fmt, files,
                                    mean, std, f"mobileseg_paddle {mobileseg_paddle.__version__}",
                                    paddle.__version__, config)
            deploy_yaml.write(tmp, info)
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp made it private
            _move_into_place(tmp, save_dir, journal_lost)
        except OSError as e:  # a full disk, a folder made read-only meanwhile
            shutil.rmtree(tmp, ignore_errors=True)
            raise UserError(f"--save_dir {save_dir}: cannot write the export: "
                            f"{e.strerror or e}") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return os.path.join(save_dir, deploy_yaml.FILENAME)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _check_save_dir(save_dir):
    """``save_dir`` may be new, empty, or an export of ours (a deploy.yaml with our block); any
    other folder is refused, so a mistyped path or a project folder holding some unrelated
    deploy.yaml never loses a file."""
    if os.path.exists(save_dir):
        if not os.path.isdir(save_dir):
            raise UserError(f"--save_dir {save_dir} exists and is not a folder")
        if os.listdir(save_dir) and not deploy_yaml.is_our_export(save_dir):
            raise UserError(f"--save_dir {save_dir} is not empty and holds no export of "
                            f"mobileseg (no deploy.yaml of ours); choose a new or empty folder")
    probe = os.path.dirname(save_dir) or "."
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise UserError(f"--save_dir {save_dir}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK):
        raise UserError(f"--save_dir {save_dir}: folder {probe} is not writable")


def _our_files(save_dir, journal_lost=False):
    """The files a previous export of ours wrote in ``save_dir`` (those it may replace), its
    deploy.yaml first. When its deploy.yaml cannot tell (an older format version, or
    ``journal_lost``: an export interrupted by an older version, a marker without a journal),
    the export file names present are ours (``_check_save_dir`` has found the folder ours)."""
    try:
        if journal_lost:
            raise UserError("no journal")
        old = deploy_yaml.DeployConfig(save_dir, allow_recovery=False)
    except UserError:
        return [n for n in deploy_yaml.EXPORT_FILES
                if os.path.isfile(os.path.join(save_dir, n))]
    names = [name for name in old.files.values() if os.path.dirname(name) == ""]
    return [deploy_yaml.FILENAME] + [n for n in dict.fromkeys(names) if n != deploy_yaml.FILENAME]


def _written_files(fmt, program):
    """The names an export of ``fmt``/``program`` writes."""
    if fmt == "onnx":
        return ["model.onnx", deploy_yaml.FILENAME]
    programs = {"legacy": ["model.pdmodel"], "pir": ["model.json"]}.get(
        program, ["model.pdmodel", "model.json"])
    return programs + ["model.pdiparams", deploy_yaml.FILENAME]


def _check_foreign(save_dir, new, old=None):
    """Refuse to replace a file of ``save_dir`` that the export there does not name (the
    user's own ``model.json`` beside an export without one)."""
    if not os.path.isdir(save_dir):
        return
    if old is None:
        old = _our_files(save_dir, os.path.lexists(
            os.path.join(save_dir, deploy_yaml.INCOMPLETE_MARKER)))
    foreign = [n for n in new if n not in old and os.path.lexists(os.path.join(save_dir, n))]
    if foreign:
        raise UserError(f"--save_dir {save_dir}: {', '.join(foreign)} is not a file of the export "
                        f"there (its deploy.yaml does not name it) and would be replaced; move "
                        f"it away or choose another folder")


def _recover(save_dir):
    """An export into ``save_dir`` that was killed while switching files: undo or finish it
    (``deploy_yaml.recover``), before anything else (under the lock). Returns True when the
    folder holds an export interrupted by an older version (no journal to follow: its marker
    stays, and this export's journal replaces it)."""
    if not os.path.isdir(save_dir):
        return False
    try:
        return deploy_yaml.recover(save_dir) == "unknown"
    except OSError as e:
        raise UserError(f"--save_dir {save_dir}: cannot recover the interrupted export in it: "
                        f"{e.strerror or e}") from None


def _remove_leftovers(save_dir):
    """Staging folders of an export of ``save_dir`` that was killed (under the lock, no other
    export of this folder is running; ``_recover`` has run)."""
    parent, name = os.path.split(save_dir)
    for entry in os.listdir(parent):
        if entry.startswith(f".{name}.partial-"):
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


def _move_into_place(tmp, save_dir, journal_lost=False):
    """Put the completed export of ``tmp`` into ``save_dir``. A new folder is one rename. In an
    existing one only the files of the previous export of ours are replaced or removed, through
    the journal of ``deploy_yaml`` (``write_journal``, backups, deploy.yaml moved in last as
    the commit point): a kill at any moment leaves either the previous export or the new one,
    complete, once ``deploy_yaml.recover`` has run (the next export or the next load runs it).
    Everything else in the folder (results, a checkpoint) stays."""
    if not os.path.exists(save_dir):
        os.rename(tmp, save_dir)
        return
    new = sorted(n for n in os.listdir(tmp) if n != deploy_yaml.FILENAME) + [deploy_yaml.FILENAME]
    old = _our_files(save_dir, journal_lost)
    _check_foreign(save_dir, new, old)
    journal = {"staging": tmp, "old": old, "new": new}
    deploy_yaml.write_journal(save_dir, tmp, old, new)
    try:
        for name in old:  # deploy.yaml first
            path = os.path.join(save_dir, name)
            if os.path.lexists(path):
                os.rename(path, os.path.join(save_dir, deploy_yaml.backup_name(name)))
        for name in new:  # deploy.yaml last: the commit point
            os.rename(os.path.join(tmp, name), os.path.join(save_dir, name))
    except BaseException:
        deploy_yaml.undo_switch(save_dir, journal)  # the previous export back, then re-raise
        raise
    deploy_yaml.finish_switch(save_dir, journal)


_export_lock = deploy_yaml.export_lock  # one export at a time per parent folder (flock)


# ----------------------------------------------------------------------------------------------
# Command line


def build_parser():
    p = argparse.ArgumentParser(
        prog="mobileseg export",
        description="Export a MobileSeg model to Paddle Inference or ONNX, with a deploy.yaml.")
    p.add_argument("--config", required=True, help="the training config (.yml)")
    p.add_argument("--model_path", default=None,
                   help="trained weights (model.pdparams); without it the config's pretrained "
                        "weights (or random ones) are exported")
    p.add_argument("--save_dir", default="./output/inference_model",
                   help="folder to write (replaced if it holds a previous export)")
    p.add_argument("--input_shape", nargs="+", default=None, metavar="DIM",
                   help="input shape N C H W; -1 for a dynamic dimension (default: -1 3 -1 -1)")
    p.add_argument("--output_op", default="argmax", choices=OUTPUT_OPS,
                   help="argmax: int32 label map; softmax: probabilities; none: logits")
    p.add_argument("--format", default="paddle", choices=("paddle", "onnx"))
    p.add_argument("--program", default="both", choices=PROGRAMS,
                   help="paddle format only: legacy model.pdmodel, PIR model.json, or both")
    p.add_argument("--opset", type=int, default=DEFAULT_ONNX_OPSET, help="ONNX opset version")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)

    def run():
        path = export(args.config, args.save_dir, model_path=args.model_path,
                      input_shape=args.input_shape, output_op=args.output_op, fmt=args.format,
                      program=args.program, opset=args.opset)
        print(f"exported to {os.path.dirname(path)} (deploy.yaml, {args.format})")

    return run_main("export", run)
