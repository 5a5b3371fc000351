"""A stand-in for ``paddle.inference.Config`` that records the calls made on it: a CPU build of
Paddle refuses ``enable_tensorrt_engine`` ("To use Paddle-TensorRT, please compile with
TENSORRT first"), so GPU and TensorRT configurations are checked on this recorder."""


class RecordingConfig:
    """Records the calls made on a paddle.inference.Config."""

    def __init__(self, *args):
        self.calls = [("__init__", args, {})]

    def __getattr__(self, name):
        def record(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return self if name == "pass_builder" else None
        return record

    def called(self, name):
        return [(a, k) for n, a, k in self.calls if n == name]
