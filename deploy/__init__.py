"""Deployment of trained MobileSeg models: export (``deploy.export``), inference
(``deploy.python.infer``) and speed measurement (``deploy.benchmark``)."""

import warnings

# Paddle's import-time "No ccache found" warning (ccache only speeds up compiling custom C++
# ops) would precede the one-line errors of every deploy command; deploy is imported first.
warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning)
