"""onnxruntime runner: ``PredictorOptions`` -> ``onnxruntime.SessionOptions`` -> session.
Imports no paddle.

onnxruntime runs its own kernels: the Paddle engine options (oneDNN, memory reuse, ...) do not
apply; ``ENGINES`` maps the device to execution providers."""

import numpy as np
import onnxruntime as ort

from mobileseg_paddle.deploy.runners import Runner, cpu_count
from mobileseg_paddle.errors import UserError, one_line

ENGINES = {  # device -> execution providers, in order of preference
    "cpu": ["CPUExecutionProvider"],
    "gpu": ["CUDAExecutionProvider", "CPUExecutionProvider"],
}


def check_device(opts):
    if opts.use_trt:
        raise UserError("--use_trt: TensorRT runs with the paddle backend (a Paddle export)")
    if opts.device == "gpu" and "CUDAExecutionProvider" not in ort.get_available_providers():
        raise UserError("--device gpu: this onnxruntime has no CUDA provider "
                        "(install onnxruntime-gpu)")


def session_options(opts):
    so = ort.SessionOptions()
    so.intra_op_num_threads = opts.cpu_threads or cpu_count()
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if opts.profile_file_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = opts.profile_file_prefix
    return so


class OnnxRuntimeRunner(Runner):
    """An onnxruntime session (same inputs and outputs as the Paddle Inference runner)."""

    backend = "onnxruntime"

    def __init__(self, files, opts):
        self.files, self.opts = files, opts
        try:
            self.session = ort.InferenceSession(files.onnx, session_options(opts),
                                                providers=ENGINES[opts.device])
        except Exception as e:
            raise UserError(f"cannot load {files.onnx}: {one_line(e)}") from None
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch):
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch)})[0]

    def end_profiling(self):
        """Path of the profile written since the session started (``profile_file_prefix``)."""
        return self.session.end_profiling()

    def close(self):
        self.session = None


def create(files, opts):
    return OnnxRuntimeRunner(files, opts)
