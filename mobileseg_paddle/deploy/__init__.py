"""Deployment of trained models: export (``export``), inference (``infer``, with the runners of
``runners``), speed measurement (``benchmark``) and Paddle Lite (``lite``). Nothing here imports
paddle at import time: the onnxruntime side runs without it."""
