"""One way to open a small ONNX model for the providers: an onnxruntime session on one
thread, its inputs checked, a clear error for a file that is not the expected model.

One intra- and one inter-op thread: the providers' concurrency comes from their sessions'
threads and worker pools, and a thread pool inside one small inference costs more than it
saves (measured for Silero and for Piper voices, where two threads made an inference slower).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from voicecore.exceptions import ConfigError

__all__ = ["single_thread_session"]


def single_thread_session(path: Path, inputs: list[str], what: str) -> Any:
    """An onnxruntime session over the model at ``path`` whose sorted input names must be
    ``inputs``; ``what`` names the expected model in the error (``ConfigError``) otherwise."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    try:
        session = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own classes for corrupt files
        raise ConfigError(f"{path} is not a loadable ONNX model: {exc}") from exc
    names = sorted(i.name for i in session.get_inputs())
    if names != inputs:
        raise ConfigError(
            f"{path} is not {what}: its inputs are {names}, expected {', '.join(inputs)}"
        )
    return session
