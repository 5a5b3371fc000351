"""Child process of ``convert``: build the config's model and export it in the legacy format.

Run as ``FLAGS_enable_pir_api=0 python -m deploy.lite.export_child --config C --out_prefix P
--input_shape 1,3,256,256 [--model_path W]``. Writes ``P.pdmodel``, ``P.pdiparams`` and
``P.info.json`` (num_classes, mean, std, model type). A user error is one line on stderr, exit 2.
"""

import argparse
import json
import os
import sys

# The program format is chosen when paddle is imported: force the legacy one for this process.
os.environ["FLAGS_enable_pir_api"] = "0"

from .errors import LiteError  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--model_path", default=None)
    parser.add_argument("--out_prefix", required=True)
    parser.add_argument("--input_shape", required=True)
    args = parser.parse_args(argv)
    shape = [int(s) for s in args.input_shape.split(",")]
    try:
        from .legacy_export import export_legacy
        from .model_source import build_model, load_config, normalization
        cfg = load_config(args.config)
        model = build_model(cfg, args.model_path)
        mean, std = normalization(cfg)
        export_legacy(model, args.out_prefix, shape)
    except LiteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    info = {"num_classes": int(model.num_classes), "mean": mean, "std": std,
            "model": type(model).__name__,
            "backbone": type(getattr(model, "backbone", None)).__name__}
    with open(args.out_prefix + ".info.json", "w") as f:
        json.dump(info, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
