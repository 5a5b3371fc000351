"""The ``mobileseg`` command (also ``python -m mobileseg_paddle``).

``train``, ``val`` and ``predict`` take the flags of PaddleSeg's tools/train.py, tools/val.py and
tools/predict.py with the same meanings and run ``paddleseg.core.train/evaluate/predict``;
``export``, ``quant``, ``infer``, ``bench`` and ``lite`` hand the rest of the command line to
``mobileseg_paddle.deploy``; ``quickstart`` runs the offline quick start. Bad input ends with one
line on stderr, ``mobileseg <command>: error: ...``, and exit status 2 (``errors.run_main``).

Multi-GPU / multi-node: ``python -m paddle.distributed.launch [--devices 0,1] \\
    mobileseg_paddle/__main__.py train --config ...`` (the same entry in every process).
"""

import argparse
import contextlib
import os
import sys

from . import compat, register  # noqa: F401  (register: the MSP_ components)
from .builder import build_model, without_pretrained
from .config import load_config
from .errors import UserError, one_line, run_main

compat.apply()  # paddleseg 2.8 on Paddle 3: see compat.py

DEPLOY_COMMANDS = {  # subcommand -> (module, help)
    "export": ("mobileseg_paddle.deploy.export", "export an inference model (see deploy/export.py)"),
    "infer": ("mobileseg_paddle.deploy.infer", "run an exported model with Paddle Inference"),
    "quant": ("mobileseg_paddle.deploy.quant", "INT8 post-training quantization into an export"),
    "bench": ("mobileseg_paddle.deploy.benchmark", "benchmark exported models"),
    "lite": ("mobileseg_paddle.deploy.lite", "convert/run models with Paddle Lite"),
    "paddleseg": ("mobileseg_paddle.paddleseg_tools",
                  "run a PaddleSeg script (tools/train.py ...) with our components"),
}


# --- arguments ----------------------------------------------------------------------------------

def _add_common(p, device_default="gpu"):
    p.add_argument("--config", required=True, help="The path of config file.")
    p.add_argument("--device", default=device_default, choices=["cpu", "gpu", "xpu", "npu", "mlu"],
                   help="Device to run on (falls back to cpu when the device is unavailable).")
    p.add_argument("--opts", nargs="+", metavar="KEY=VALUE",
                   help="Update config items, e.g. --opts batch_size=2 model.num_classes=3.")


def _add_precision(p):
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16"],
                   help="fp16: automatic mixed precision (AMP).")
    p.add_argument("--amp_level", default="O1", choices=["O1", "O2"],
                   help="AMP level: O1 mixed precision, O2 pure fp16 (except black-listed ops).")


def _add_aug(p, flag):
    p.add_argument(f"--{flag}", action="store_true",
                   help="Use multi-scale and flip test-time augmentation.")
    p.add_argument("--scales", nargs="+", type=float, default=1.0,
                   help=f"Scales for augmentation (with --{flag}), e.g. --scales 0.75 1.0 1.25.")
    p.add_argument("--flip_horizontal", action="store_true",
                   help=f"Add horizontally flipped inputs (with --{flag}).")
    p.add_argument("--flip_vertical", action="store_true",
                   help=f"Add vertically flipped inputs (with --{flag}).")
    p.add_argument("--is_slide", action="store_true", help="Sliding-window inference.")
    p.add_argument("--crop_size", nargs=2, type=int, metavar=("W", "H"),
                   help="Sliding window size (with --is_slide).")
    p.add_argument("--stride", nargs=2, type=int, metavar=("W", "H"),
                   help="Sliding window stride (with --is_slide).")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="mobileseg", description="MobileSeg models on PaddleSeg's trainer (Paddle 3).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model (as PaddleSeg's tools/train.py)")
    _add_common(p)
    p.add_argument("--save_dir", default="./output", help="Where checkpoints are written.")
    p.add_argument("--num_workers", type=int, default=0, help="Data loader worker processes.")
    p.add_argument("--do_eval", action="store_true", help="Evaluate at every checkpoint.")
    p.add_argument("--use_vdl", action="store_true", help="Log to VisualDL.")
    p.add_argument("--resume_model", help="Checkpoint folder (save_dir/iter_N) to resume from.")
    p.add_argument("--iters", type=int, help="Total training iterations (overrides config).")
    p.add_argument("--batch_size", type=int, help="Batch size per device (overrides config).")
    p.add_argument("--learning_rate", type=float, help="Base learning rate (overrides config).")
    p.add_argument("--save_interval", type=int, default=1000, help="Iterations between checkpoints.")
    p.add_argument("--log_iters", type=int, default=10, help="Iterations between log lines.")
    p.add_argument("--keep_checkpoint_max", type=int, default=5, help="Checkpoints kept.")
    p.add_argument("--seed", type=int, help="Random seed.")
    _add_precision(p)
    p.add_argument("--profiler_options", help="paddleseg train profiler options.")
    p.add_argument("--repeats", type=int, default=1, help="Repeat the training list N times.")
    p.add_argument("--overwrite", action="store_true",
                   help="Train into a --save_dir that holds checkpoints of an earlier run "
                        "(refused otherwise, unless resuming).")
    p.add_argument("--quant", action="store_true",
                   help="Quantization-aware training: convolutions see their inputs and weights "
                        "as INT8 rounds them (mobileseg quant then exports the result).")
    p.add_argument("--model_path",
                   help="Start from these trained weights (model.pdparams or its folder) "
                        "instead of the config's pretrained ones: fine-tuning, e.g. with --quant.")

    p = sub.add_parser("val", help="evaluate mIoU (as PaddleSeg's tools/val.py)")
    _add_common(p)
    p.add_argument("--model_path", help="Trained weights (model.pdparams or its folder).")
    p.add_argument("--num_workers", type=int, default=0, help="Data loader worker processes.")
    _add_aug(p, "aug_eval")
    _add_precision(p)
    p.add_argument("--auc_roc", action="store_true", help="Also compute the ROC AUC.")

    p = sub.add_parser("predict", help="segment images (as PaddleSeg's tools/predict.py)")
    _add_common(p)
    p.add_argument("--model_path", required=True, help="Trained weights (model.pdparams).")
    p.add_argument("--image_path", required=True,
                   help="An image, a folder of images, or a text file listing image paths.")
    p.add_argument("--save_dir", default="./output/result",
                   help="Writes added_prediction/ (overlays) and pseudo_color_prediction/.")
    _add_aug(p, "aug_pred")
    p.add_argument("--custom_color", nargs="+", type=int,
                   help="Colour map as r g b r g b ... (default: paddleseg's).")

    p = sub.add_parser("quickstart", help="offline demo: synthetic data, train, evaluate, predict")
    from .quickstart import add_arguments
    add_arguments(p)

    for name, (_, text) in DEPLOY_COMMANDS.items():
        p = sub.add_parser(name, help=text, add_help=False)
        p.add_argument("args", nargs=argparse.REMAINDER)
    return parser


# --- shared steps -------------------------------------------------------------------------------

def build(builder, what):
    """``builder.<what>`` with builder failures turned into one line."""
    try:
        return getattr(builder, what)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"config {what}: {one_line(e)}") from None


def checked_dataset(builder, what):
    from .checks import CheckedDataset, check_samples
    dataset = build(builder, what)
    check_samples(dataset, what)
    return CheckedDataset(dataset, what)


def model_of(cfg, model_path=None, seg_builder=None):
    """The config's model through the one builder, with ``model_path``'s weights loaded strictly
    (missing file, other num_classes, other model: one error); without it the config's own
    ``pretrained`` weights. In eval mode (paddleseg's train switches it to training)."""
    return build_model(cfg, model_path, seg_builder=seg_builder)[0]


SHOW_SETUP_INFO = True  # the quick start turns the repeated environment/config dump off


def _setup(args, cfg):
    from paddleseg.utils import utils
    if SHOW_SETUP_INFO:
        utils.show_env_info()
        utils.show_cfg_info(cfg)
    utils.set_device(args.device)


# --- commands -----------------------------------------------------------------------------------

def cmd_train(args):
    from paddleseg.core import train
    from paddleseg.cvlibs import SegBuilder
    from paddleseg.utils import utils
    cfg = load_config(args.config, args.opts, learning_rate=args.learning_rate,
                      iters=args.iters, batch_size=args.batch_size)
    _check_train_args(args)
    if args.resume_model:
        compat.check_checkpoint(args.resume_model)
    if args.model_path:  # the config's pretrained weights would be overwritten: not fetched
        cfg.dic["model"] = without_pretrained(cfg.dic["model"])
    builder = SegBuilder(cfg)
    _setup(args, cfg)
    utils.set_seed(args.seed)
    utils.set_cv2_num_threads(args.num_workers)
    model = model_of(cfg, args.model_path, seg_builder=builder)
    if args.quant:
        from .qat import quantization_aware
        print(f"quantization-aware training: {quantization_aware(model)} convolutions "
              f"fake-quantized (INT8)", flush=True)
    model = utils.convert_sync_batchnorm(model, args.device)
    train_dataset = checked_dataset(builder, "train_dataset")
    if args.repeats > 1:
        train_dataset.file_list *= args.repeats
    if len(train_dataset) < cfg.batch_size:
        raise UserError(f"train_dataset: {len(train_dataset)} samples, fewer than batch_size "
                        f"{cfg.batch_size}; paddleseg drops an incomplete batch, so training "
                        f"would never start: lower batch_size or add samples")
    val_dataset = checked_dataset(builder, "val_dataset") if args.do_eval else None
    from . import distributed
    watchdog = distributed.start(model)  # several processes: exit when a peer is lost
    train(model, train_dataset, val_dataset=val_dataset, optimizer=build(builder, "optimizer"),
          save_dir=args.save_dir, iters=cfg.iters, batch_size=cfg.batch_size,
          resume_model=args.resume_model, save_interval=args.save_interval,
          log_iters=args.log_iters, num_workers=args.num_workers, use_vdl=args.use_vdl,
          losses=build(builder, "loss"), keep_checkpoint_max=args.keep_checkpoint_max,
          test_config=cfg.test_config, precision=args.precision, amp_level=args.amp_level,
          profiler_options=args.profiler_options, to_static_training=cfg.to_static_training)
    if watchdog is not None:
        watchdog.stop()
    print(f"checkpoints: {os.path.abspath(args.save_dir)}")
    return 0


def _check_train_args(args):
    """Flags paddleseg would take and then fail on (or hang with), as one line each."""
    for flag in ("save_interval", "log_iters", "keep_checkpoint_max", "repeats"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    if args.num_workers < 0:
        raise UserError(f"--num_workers must be >= 0, got {args.num_workers}")
    earlier = _earlier_checkpoints(args.save_dir)
    if earlier and not (args.resume_model or args.overwrite):
        raise UserError(f"--save_dir {args.save_dir} holds checkpoints of an earlier run "
                        f"({', '.join(earlier)}): resume with --resume_model "
                        f"{os.path.join(args.save_dir, earlier[0])}, choose another --save_dir, "
                        f"or pass --overwrite")


def _earlier_checkpoints(save_dir):
    if not os.path.isdir(save_dir):
        return []
    names = [n for n in os.listdir(save_dir) if n == "best_model" or compat.is_iter_dir(n)]
    return sorted(names, key=lambda n: (n == "best_model", -compat.iteration_of(n)))


def _check_scales(args, aug_flag):
    scales = args.scales if isinstance(args.scales, list) else [args.scales]
    if any(not s > 0 for s in scales):
        raise UserError(f"--scales must be positive, got {' '.join(map(str, scales))}")


def _test_config(cfg, args, aug_flag):
    """PaddleSeg's merge of the config's test_config with the command-line flags."""
    from paddleseg.utils import logger
    _check_scales(args, aug_flag)
    test_config = cfg.test_config
    test_config.pop("aug_eval", None)
    if getattr(args, aug_flag):
        test_config.update({aug_flag: True, "scales": args.scales,
                            "flip_horizontal": args.flip_horizontal,
                            "flip_vertical": args.flip_vertical})
    elif args.flip_horizontal or args.flip_vertical or args.scales != 1.0:
        logger.warning(f"--scales/--flip_* take effect only with --{aug_flag}")
    if args.is_slide:
        if not args.crop_size or not args.stride:
            raise UserError("--is_slide needs --crop_size W H and --stride W H")
        test_config.update(is_slide=True, crop_size=args.crop_size, stride=args.stride)
    return test_config


def run_val(args):
    """Evaluate as tools/val.py does; return {'miou', 'acc', 'kappa', 'class_iou'}."""
    from paddleseg.core import evaluate
    from paddleseg.cvlibs import SegBuilder
    from paddleseg.utils import logger
    cfg = load_config(args.config, args.opts)
    builder = SegBuilder(cfg)
    test_config = _test_config(cfg, args, "aug_eval")
    if args.auc_roc:
        test_config["auc_roc"] = True
    _setup(args, cfg)
    model = model_of(cfg, args.model_path)
    if args.model_path:
        logger.info("Loaded trained weights successfully.")
    else:
        logger.warning("no --model_path: evaluating the weights the config builds")
    val_dataset = checked_dataset(builder, "val_dataset")
    miou, acc, class_iou, _, kappa = evaluate(
        model, val_dataset, num_workers=args.num_workers, precision=args.precision,
        amp_level=args.amp_level, **test_config)
    return {"miou": float(miou), "acc": float(acc), "kappa": float(kappa),
            "class_iou": [float(x) for x in class_iou]}


def cmd_val(args):
    result = run_val(args)
    print(f"mIoU={result['miou']:.4f} Acc={result['acc']:.4f} Kappa={result['kappa']:.4f}")
    return 0


MIN_PREDICT_SIZE = 32  # one pixel at the backbone's stride 32


def _encodable(paths, logger):
    """Paths without the file names that are not valid UTF-8 (OpenCV crashes on them), each
    skipped with a warning."""
    kept = []
    for path in paths:
        try:
            path.encode("utf-8")
            kept.append(path)
        except UnicodeEncodeError:
            logger.warning(f"skipped {path.encode('utf-8', 'surrogateescape')!r}: the file name is "
                           f"not valid UTF-8")
    if not kept:
        raise UserError("--image_path: no image with a readable file name")
    return kept


def _check_predict_outputs(image_list, image_dir, save_dir):
    """paddleseg's predict names its outputs by each image's path relative to ``image_dir``
    (minus the extension for the mask): refuse a list whose outputs would leave ``save_dir``,
    land on an input, or share a name, before anything is written. Returns the output paths."""
    root = os.path.realpath(save_dir)
    inputs = {os.path.realpath(p) for p in image_list}
    seen = {}
    for path in image_list:
        name = path.replace(image_dir, "") if image_dir is not None else os.path.basename(path)
        name = name.lstrip("/\\")
        for sub, out in (("added_prediction", name),
                         ("pseudo_color_prediction", os.path.splitext(name)[0] + ".png")):
            target = os.path.realpath(os.path.join(root, sub, out))
            if os.path.commonpath([target, root]) != root:
                raise UserError(f"--image_path: {path} would be written outside --save_dir "
                                f"({target}); list images inside the list file's folder")
            if target in inputs:
                raise UserError(f"--save_dir {save_dir}: the result for {path} would overwrite "
                                f"the input image {target}")
            if target in seen:
                raise UserError(f"--image_path: {seen[target]} and {path} would both be written "
                                f"to {target}; rename one of them")
            seen[target] = path
    return list(seen)


class _CheckedCv2:
    """``cv2`` as paddleseg's predict sees it: ``imwrite`` is infer's ``write_image`` (cv2's own
    returns False on a write error, which predict ignores, and leaves a partial file)."""

    def __init__(self, cv2):
        self._cv2 = cv2

    def __getattr__(self, name):
        return getattr(self._cv2, name)

    def imwrite(self, path, img, params=()):
        from mobileseg_paddle.deploy.infer import write_image
        write_image(path, img, params)
        return True


class _CheckedImage:
    """A PIL image whose ``save(path)`` encodes in memory and writes through ``write_bytes``
    (PIL's own leaves a truncated file when the disk is full)."""

    def __init__(self, image):
        self._image = image

    def __getattr__(self, name):
        return getattr(self._image, name)

    def save(self, path, format=None, **params):
        import io

        from PIL import Image
        path = os.fspath(path)
        fmt = format or Image.registered_extensions().get(os.path.splitext(path)[1].lower())
        buf = io.BytesIO()
        self._image.save(buf, format=fmt, **params)
        from mobileseg_paddle.deploy.infer import write_bytes
        write_bytes(path, buf.getvalue())


@contextlib.contextmanager
def _checked_predict_writes():
    """For one call of ``paddleseg.core.predict``: its overlays (cv2.imwrite) and masks (PIL
    save) are written whole or not at all, and a failed write is one ``UserError``, which
    starts a line of its own (paddleseg's progress bar leaves its line open on stderr)."""
    import importlib
    import types

    from paddleseg.utils import progbar, visualize
    # the module (``paddleseg.core.predict`` as an attribute is the function)
    predict_module = importlib.import_module("paddleseg.core.predict")
    saved = predict_module.cv2, predict_module.progbar, visualize.get_pseudo_color_map
    pseudo_color = visualize.get_pseudo_color_map
    bar_open = []

    class Progbar(progbar.Progbar):
        def update(self, current, values=None, finalize=None):
            super().update(current, values, finalize)
            bar_open[:] = [self._total_width > 0 and self.target is not None
                           and current < self.target and not finalize]

    def checked_pseudo_color(*args, **kwargs):
        return _CheckedImage(pseudo_color(*args, **kwargs))

    predict_module.cv2 = _CheckedCv2(saved[0])
    predict_module.progbar = types.SimpleNamespace(Progbar=Progbar)
    visualize.get_pseudo_color_map = checked_pseudo_color
    try:
        yield
    except BaseException:
        if any(bar_open):
            sys.stderr.write("\n")
            sys.stderr.flush()
        raise
    finally:
        predict_module.cv2, predict_module.progbar, visualize.get_pseudo_color_map = saved


def _check_written(outputs):
    """After predict (one process writes them all): every output is there and not empty."""
    import paddle
    if paddle.distributed.get_world_size() > 1:
        return
    for path in outputs:
        if not os.path.isfile(path) or os.path.getsize(path) == 0:
            raise UserError(f"predict did not write {path} (a write failure)")


def cmd_predict(args):
    from paddleseg.core import predict
    from paddleseg.cvlibs import SegBuilder
    from paddleseg.transforms import Compose
    from paddleseg.utils import get_image_list, logger

    from .checks import _image_size
    cfg = load_config(args.config, args.opts)
    builder = SegBuilder(cfg)
    test_config = _test_config(cfg, args, "aug_pred")
    if args.custom_color:
        test_config["custom_color"] = args.custom_color
    _setup(args, cfg)
    if not os.path.exists(args.image_path):
        raise UserError(f"--image_path {args.image_path}: not found (expected an image, a folder "
                         f"or a file listing images)")
    try:
        image_list, image_dir = get_image_list(args.image_path)
    except Exception as e:
        raise UserError(f"--image_path {args.image_path}: {one_line(e)}") from None
    image_list = _encodable(image_list, logger)
    outputs = _check_predict_outputs(image_list, image_dir, args.save_dir)
    for path in image_list:
        size = _image_size(path, "image")
        if min(size) < MIN_PREDICT_SIZE:
            raise UserError(f"image {path} is {size[0]}x{size[1]} pixels; expected at least "
                            f"{MIN_PREDICT_SIZE}x{MIN_PREDICT_SIZE}")
    model = model_of(cfg, args.model_path)
    img_channels = cfg.val_dataset_cfg.get("img_channels", 3)
    transforms = Compose(build(builder, "val_transforms"), img_channels=img_channels)
    logger.info(f"The number of images: {len(image_list)}")
    try:
        with _checked_predict_writes():
            predict(model, model_path=args.model_path, transforms=transforms,
                    image_list=image_list, image_dir=image_dir, save_dir=args.save_dir,
                    **test_config)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"prediction failed: {one_line(e)}") from None
    _check_written(outputs)
    print(f"overlays: {os.path.abspath(os.path.join(args.save_dir, 'added_prediction'))}")
    print(f"masks: {os.path.abspath(os.path.join(args.save_dir, 'pseudo_color_prediction'))}")
    return 0


def cmd_quickstart(args):
    from .quickstart import run
    return run(args)


def run_deploy(command, argv):
    """Import ``deploy.<...>`` only now (it may pull in heavy or optional packages)."""
    import importlib
    module_name = DEPLOY_COMMANDS[command][0]
    repo_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if repo_root not in sys.path and os.path.isdir(os.path.join(repo_root, "deploy")):
        sys.path.insert(0, repo_root)  # a source checkout: deploy/ sits next to the package
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
            raise UserError(f"{module_name} is not available in this installation") from None
        raise
    return module.main(argv)


COMMANDS = {"train": cmd_train, "val": cmd_val, "predict": cmd_predict,
            "quickstart": cmd_quickstart}


def main(argv=None):
    """Run one command; return the exit status (the console script exits with it)."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    if argv and argv[0] in DEPLOY_COMMANDS:  # everything after the name belongs to deploy
        command = argv[0]
        runner = lambda: run_deploy(command, argv[1:])  # noqa: E731
    else:
        args = build_parser().parse_args(argv)
        command = args.command
        runner = lambda: COMMANDS[command](args)  # noqa: E731
    return run_main(command, runner)
