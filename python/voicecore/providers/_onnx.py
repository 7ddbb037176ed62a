"""One way to open a small ONNX model for the providers: an onnxruntime session, its inputs
checked, a clear error for a file that is not the expected model.

One intra- and one inter-op thread by default: the providers' concurrency comes from their
sessions' threads and worker pools, and a thread pool inside one small inference costs more
than it saves (measured for Silero and for Piper voices, where two threads made an inference
slower). A model whose single inference is long enough to split (Smart Turn: a Whisper-sized
encoder over 8 s of audio) asks for more intra-op threads; they do not spin while idle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from voicecore.exceptions import ConfigError

__all__ = ["checked_session", "single_thread_session"]


def checked_session(path: Path, inputs: list[str], what: str, *, intra_op_threads: int) -> Any:
    """An onnxruntime session over the model at ``path`` on ``intra_op_threads`` threads,
    whose sorted input names must be ``inputs``; ``what`` names the expected model in the
    error (``ConfigError``) otherwise."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    if intra_op_threads > 1:
        # Spinning workers would burn a core after every run (measured: twice the CPU per
        # Smart Turn prediction on the 2-core VM) for a few ms less latency.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
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


def single_thread_session(path: Path, inputs: list[str], what: str) -> Any:
    """:func:`checked_session` on one intra-op thread (Silero, Piper)."""
    return checked_session(path, inputs, what, intra_op_threads=1)
