"""mobileseg-paddle: MobileSeg models for PaddleSeg on Paddle 3.

Importing the package registers our components into PaddleSeg's manager under ``MSP_`` names
(see ``register.py``)."""

import warnings

# Paddle warns at import when ccache (used only to compile custom C++ ops) is missing: two lines
# of noise before every one-line error of our commands. Set before register imports paddle.
warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)

__version__ = "0.1.0"

from . import register  # noqa: E402, F401  (registration is the import's purpose)
