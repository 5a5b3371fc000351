"""mobileseg-paddle: MobileSeg models for PaddleSeg on Paddle 3.

Importing the package registers our components into PaddleSeg's manager under ``MSP_`` names
(see ``register.py``)."""

__version__ = "0.1.0"

from . import register  # noqa: F401  (registration is the import's purpose)
