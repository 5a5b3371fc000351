"""mobileseg-paddle: MobileSeg models for PaddleSeg on Paddle 3.

Importing the package loads neither paddle nor paddleseg (the onnxruntime runner and the
benchmark workers stay without them). ``import mobileseg_paddle.register`` (or
``mobileseg_paddle.register_all()``) enters our components into PaddleSeg's manager under
``MSP_`` names; every command and the config loader do it themselves."""

import warnings

# Paddle warns at import when ccache (used only to compile custom C++ ops) is missing: two lines
# of noise before every one-line error of our commands.
warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)

__version__ = "0.1.0"


def register_all():
    """Register the ``MSP_`` components into PaddleSeg's manager (idempotent)."""
    from . import register
    register.register_all()
