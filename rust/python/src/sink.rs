//! Python bindings of `voicecore_core::sink`: `SocketSink` and its `SinkStats` snapshot.
//!
//! The Python object holds the core sink in an `Arc`, shared with the pacer streams it is
//! given to; every call takes the sink's lock inside `audio::detach`, with the GIL released,
//! so Python never waits for the pacer thread while holding the GIL.

use std::sync::Arc;

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use voicecore_core::sink::{SinkStats, SocketSink};

use crate::audio::{self, AudioInput, Samples};
use crate::errors::{to_py_err, AudioTypeError, ConfigError};

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySocketSink>()?;
    m.add_class::<PySinkStats>()?;
    Ok(())
}

/// A non-blocking writer to a connected socket, shared by Python and the pacer thread.
///
/// Give it to ``FramePacer.open_stream(..., sink=...)`` and the pacer thread writes every
/// released frame itself, as one WebSocket binary message (server to client: unmasked,
/// payload PCM16 little-endian), straight to the socket: the client's audio no longer waits
/// for the event loop, so a blocked loop or a GC pause does not gap it. Python writes its own
/// messages (already framed, e.g. WebSocket text frames) through ``write`` on the same object:
/// every write is one atomic unit, so messages never interleave and keep their order.
///
/// Writes never block. Bytes the kernel does not take at once wait (at most
/// ``max_pending_bytes`` of them) and go out ahead of later writes, on the next write,
/// ``flush()``, or the pacer's next release. A write that does not fit is refused whole
/// (``SendBufferFullError``); after a fatal send error (peer closed or reset) or ``close()``,
/// writes raise ``ConnectionResetError``.
///
/// The sink does not own the descriptor: call ``close()`` before closing the socket, so the
/// pacer thread never writes to a reused descriptor number.
///
/// Args:
///     fd: the connected socket's descriptor (``sock.fileno()``).
///     max_pending_bytes: most bytes that may wait for a slow peer (>= 1).
///
/// Raises:
///     ConfigError: ``fd`` is not an open socket, or ``max_pending_bytes`` < 1.
#[pyclass(module = "voicecore._core", name = "SocketSink", frozen)]
pub struct PySocketSink {
    core: Arc<SocketSink>,
}

impl PySocketSink {
    /// The shared core sink, for a pacer stream.
    pub fn core(&self) -> &Arc<SocketSink> {
        &self.core
    }
}

/// A byte view of a bytes-like object, read in place.
struct ByteInput {
    buffer: PyBuffer<u8>,
}

impl ByteInput {
    fn extract(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        let buffer = PyBuffer::<u8>::get(obj).map_err(|_| {
            let type_name = obj
                .get_type()
                .name()
                .map(|name| name.to_string())
                .unwrap_or_else(|_| "?".into());
            PyTypeError::new_err(format!(
                "data must be bytes, bytearray or a byte memoryview, not {type_name}"
            ))
        })?;
        if !buffer.is_c_contiguous() {
            return Err(PyTypeError::new_err(
                "data must be a contiguous buffer; pass bytes(data)",
            ));
        }
        Ok(Self { buffer })
    }

    fn bytes(&self) -> &[u8] {
        let len = self.buffer.len_bytes();
        if len == 0 {
            return &[];
        }
        // SAFETY: `extract` checked that the export is C-contiguous, so `len` bytes lie at
        // `buf_ptr`; the export (which also stops a bytearray from resizing) lives as long as
        // `self`, which outlives the borrow. As for audio, the caller must not mutate the
        // buffer from another thread during the call.
        unsafe { std::slice::from_raw_parts(self.buffer.buf_ptr() as *const u8, len) }
    }
}

#[pymethods]
impl PySocketSink {
    #[new]
    #[pyo3(signature = (fd, *, max_pending_bytes = 1_048_576))]
    fn new(py: Python<'_>, fd: i64, max_pending_bytes: i64) -> PyResult<Self> {
        let fd = i32::try_from(fd).map_err(|_| {
            ConfigError::new_err(format!(
                "fd = {fd} is invalid; expected the descriptor of a connected socket"
            ))
        })?;
        let bound = usize::try_from(max_pending_bytes).map_err(|_| {
            ConfigError::new_err(format!(
                "max_pending_bytes = {max_pending_bytes} is invalid; expected at least 1 byte"
            ))
        })?;
        let core = audio::detach(py, || SocketSink::new(fd, bound)).map_err(to_py_err)?;
        Ok(Self {
            core: Arc::new(core),
        })
    }

    /// Writes ``data`` (already framed bytes) as one unit, never blocking; returns the bytes
    /// still waiting for the peer afterwards (0: all on the wire).
    ///
    /// Raises:
    ///     TypeError: ``data`` is not a contiguous bytes-like object.
    ///     SendBufferFullError: the peer reads too slowly; nothing was queued.
    ///     ConnectionResetError: the sink is closed or the connection broke.
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<usize> {
        let input = ByteInput::extract(data)?;
        let bytes = input.bytes();
        audio::detach(py, || self.core.write(bytes)).map_err(to_py_err)
    }

    /// Writes PCM16 audio (bytes-like, or a 1-D numpy int16 array) as one WebSocket binary
    /// message, header and payload as one unit; returns the bytes still waiting afterwards.
    ///
    /// Raises:
    ///     AudioTypeError: float32 or another unsupported type or dtype.
    ///     AudioFormatError: odd PCM16 byte length, a 2-D or non-contiguous array.
    ///     SendBufferFullError: the peer reads too slowly; nothing was queued.
    ///     ConnectionResetError: the sink is closed or the connection broke.
    fn write_ws_binary_pcm16(&self, py: Python<'_>, audio: &Bound<'_, PyAny>) -> PyResult<usize> {
        let input = AudioInput::extract(audio)?;
        let Samples::I16(samples) = input.samples() else {
            return Err(AudioTypeError::new_err(
                "write_ws_binary_pcm16 takes PCM16 audio (bytes-like or an int16 array), \
                 not float32; convert with (samples * 32767).astype(numpy.int16)",
            ));
        };
        audio::detach(py, || self.core.write_ws_binary_pcm16(samples)).map_err(to_py_err)
    }

    /// Sends what is waiting, as far as the socket takes it now; returns the bytes still
    /// waiting. Never raises: a fatal send error sets ``broken`` instead.
    fn flush(&self, py: Python<'_>) -> usize {
        audio::detach(py, || self.core.flush())
    }

    /// Stops using the descriptor (idempotent): once this returns, neither Python nor the
    /// pacer thread writes to it again, and waiting bytes are dropped. Call it before closing
    /// the socket.
    fn close(&self, py: Python<'_>) {
        audio::detach(py, || self.core.close());
    }

    /// Changes the bound (>= 1 byte). Bytes already waiting stay, even above a lower bound:
    /// only later writes are refused.
    ///
    /// Raises:
    ///     ConfigError: ``max_pending_bytes`` < 1.
    fn set_max_pending_bytes(&self, py: Python<'_>, max_pending_bytes: i64) -> PyResult<()> {
        let bound = usize::try_from(max_pending_bytes).map_err(|_| {
            ConfigError::new_err(format!(
                "max_pending_bytes = {max_pending_bytes} is invalid; expected at least 1 byte"
            ))
        })?;
        audio::detach(py, || self.core.set_max_pending_bytes(bound)).map_err(to_py_err)
    }

    /// Drops every waiting message except the one the socket has partly taken (its rest
    /// stays, so the stream remains well-formed); returns the bytes dropped. For a peer too
    /// far behind: its stale backlog goes, and a last message can still reach it.
    fn discard_pending(&self, py: Python<'_>) -> usize {
        audio::detach(py, || self.core.discard_pending())
    }

    /// Refuses the pacer's frames (``write_ws_binary_pcm16``) from now on while ``write``
    /// goes on: call it before a close frame, after which no data frame may follow.
    fn stop_audio(&self, py: Python<'_>) {
        audio::detach(py, || self.core.stop_audio());
    }

    /// Bytes accepted but not yet taken by the socket.
    #[getter]
    fn pending_bytes(&self, py: Python<'_>) -> usize {
        audio::detach(py, || self.core.pending_bytes())
    }

    /// Whether ``close()`` has been called.
    #[getter]
    fn closed(&self, py: Python<'_>) -> bool {
        audio::detach(py, || self.core.is_closed())
    }

    /// Whether a send failed fatally (the peer closed or reset the connection).
    #[getter]
    fn broken(&self, py: Python<'_>) -> bool {
        audio::detach(py, || self.core.is_broken())
    }

    /// Most bytes that may wait for the peer.
    #[getter]
    fn max_pending_bytes(&self, py: Python<'_>) -> usize {
        audio::detach(py, || self.core.max_pending_bytes())
    }

    /// The socket's descriptor (owned by the caller's socket object, not by the sink).
    fn fileno(&self) -> i32 {
        self.core.fd()
    }

    /// The sink's counters.
    fn stats(&self, py: Python<'_>) -> PySinkStats {
        PySinkStats {
            stats: audio::detach(py, || self.core.stats()),
        }
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let (pending, closed, broken) = audio::detach(py, || {
            (
                self.core.pending_bytes(),
                self.core.is_closed(),
                self.core.is_broken(),
            )
        });
        let flag = |value: bool| if value { "True" } else { "False" };
        format!(
            "SocketSink(fd={}, max_pending_bytes={}, pending_bytes={}, closed={}, broken={})",
            self.core.fd(),
            self.core.max_pending_bytes(),
            pending,
            flag(closed),
            flag(broken)
        )
    }
}

/// Counters of a ``SocketSink`` over its life.
#[pyclass(module = "voicecore._core", name = "SinkStats", frozen)]
pub struct PySinkStats {
    stats: SinkStats,
}

#[pymethods]
impl PySinkStats {
    /// Bytes the socket accepted.
    #[getter]
    fn bytes_written(&self) -> u64 {
        self.stats.bytes_written
    }

    /// Writes accepted (each one message, on the wire or waiting behind earlier ones).
    #[getter]
    fn messages(&self) -> u64 {
        self.stats.messages
    }

    /// Writes refused: the pending bound was exceeded, or the sink was closed or broken.
    #[getter]
    fn refused(&self) -> u64 {
        self.stats.refused
    }

    /// Accepted writes that left bytes waiting (the socket's buffer was full).
    #[getter]
    fn partial_writes(&self) -> u64 {
        self.stats.partial_writes
    }

    fn __repr__(&self) -> String {
        format!(
            "SinkStats(bytes_written={}, messages={}, refused={}, partial_writes={})",
            self.stats.bytes_written,
            self.stats.messages,
            self.stats.refused,
            self.stats.partial_writes
        )
    }
}
