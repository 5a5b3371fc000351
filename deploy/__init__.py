"""Deployment of trained MobileSeg models: export (``deploy.export``), inference
(``deploy.python.infer``) and speed measurement (``deploy.benchmark``)."""
