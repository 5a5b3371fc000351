"""Python inference on exported models (Paddle Inference and onnxruntime)."""
