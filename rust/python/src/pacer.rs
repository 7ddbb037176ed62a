//! Python bindings of `voicecore_core::pacer`.
//!
//! Thin wrappers: `FramePacer` owns the core pacer (and through it the pacer thread);
//! `PacerStream` is a handle holding its pacer and its stream id. Every call that copies audio
//! or may wait on the pacer's lock releases the GIL; the pacer thread itself never takes it.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};
use voicecore_core::pacer::{
    ClockKind, EventFd, FramePacer, LatenessSummary, PacerError, StreamConfig, StreamEventKind,
    StreamInfo,
};

use crate::audio::{self, AudioInput, Samples};
use crate::errors::{to_py_err, ConfigError};
use crate::sink::PySocketSink;

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyFramePacer>()?;
    m.add_class::<PyPacerStream>()?;
    m.add_class::<PyReleasedFrame>()?;
    m.add_class::<PyStreamEvent>()?;
    m.add_class::<PyFlushReport>()?;
    m.add_class::<PyPacerStats>()?;
    m.add_class::<PyStreamStats>()?;
    Ok(())
}

fn ms_of_ns(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn ms_of_samples(samples: u64, sample_rate: u32) -> f64 {
    samples as f64 * 1000.0 / sample_rate as f64
}

/// Releases fixed-duration audio frames of many streams on absolute deadlines, from its own
/// OS thread that never takes the GIL.
///
/// Each stream (``open_stream``) has a playout queue bounded in ms, a target cushion of audio
/// buffered at the client, and a maximum lead over the client's playback. A new stream sends
/// a burst up to the cushion, then one frame per frame period on deadlines ``t0 + n * frame``
/// of ``CLOCK_MONOTONIC`` (the clock of ``time.monotonic_ns()``); client playout reports keep
/// the cushion on target under clock drift. Released frames (of streams without a sink) and
/// stream events (``StreamEvent``: a stream started, a finished utterance drained) wait in a
/// queue: ``fileno()`` is readable while there may be some, and ``take_released()`` and
/// ``take_events()`` take them (Trio: ``trio.lowlevel.wait_readable(pacer.fileno())``, see
/// ``voicecore.pacing``).
///
/// The thread asks for SCHED_FIFO scheduling, else the lowest nice value it may take, and
/// ``scheduling`` says what it got. With ``clock="virtual"`` there is no thread: time starts
/// at 0 and only ``advance``/``advance_to`` move it, releasing what falls due on the caller's
/// thread, so tests are deterministic (pair it with ``trio.testing.MockClock``).
///
/// Use as a context manager, or call ``stop()``; afterwards every call but ``stats()``,
/// ``take_released()`` and ``take_events()`` raises ``PacerStoppedError``.
///
/// Args:
///     frame_ms: frame duration in ms: 10, 20 or 40.
///     clock: ``"real"`` (a pacer thread on the monotonic clock) or ``"virtual"``.
///     realtime: ask for real-time scheduling (SCHED_FIFO / negative nice); ``False`` keeps
///         the thread at normal priority (to measure what real-time buys).
///
/// Raises:
///     ConfigError: ``frame_ms`` not 10, 20 or 40, or an unknown ``clock``.
///     ResourceError: the OS refused an eventfd, timer or thread (an ``OSError``).
#[pyclass(module = "voicecore._core", name = "FramePacer", frozen)]
pub struct PyFramePacer {
    core: FramePacer,
}

#[pymethods]
impl PyFramePacer {
    #[new]
    #[pyo3(signature = (frame_ms = 20, *, clock = "real", realtime = true))]
    fn new(py: Python<'_>, frame_ms: i64, clock: &str, realtime: bool) -> PyResult<Self> {
        let clock = ClockKind::parse(clock).map_err(to_py_err)?;
        // Starting the thread waits for it to report its scheduling.
        let core =
            audio::detach(py, || FramePacer::new(frame_ms, clock, realtime)).map_err(to_py_err)?;
        Ok(Self { core })
    }

    /// Frame duration, in ms.
    #[getter]
    fn frame_ms(&self) -> u32 {
        self.core.frame_ms()
    }

    /// ``"real"`` or ``"virtual"``.
    #[getter]
    fn clock(&self) -> &'static str {
        self.core.clock().name()
    }

    /// What the pacer thread obtained: ``"SCHED_FIFO(10)"``, ``"nice -20"``, ``"normal"``, or
    /// ``"virtual clock (no thread)"``.
    #[getter]
    fn scheduling(&self) -> String {
        self.core.scheduling().to_string()
    }

    /// Whether ``stop()`` has been called.
    #[getter]
    fn stopped(&self, py: Python<'_>) -> bool {
        audio::detach(py, || self.core.is_stopped())
    }

    /// Opens a playout stream (mono PCM16) and returns its handle.
    ///
    /// Args:
    ///     sample_rate: in Hz: 8000, 12000, 16000, 22050 (not with 10 ms frames), 24000,
    ///         32000, 44100 or 48000.
    ///     channels: must be 1.
    ///     cushion_ms: target audio buffered at the client, in ms (>= frame_ms).
    ///     max_lead_ms: most audio the client may hold ahead of playback, in ms
    ///         (>= cushion_ms + frame_ms); ``None`` means ``cushion_ms + 4 * frame_ms``.
    ///     queue_ms: capacity of the playout queue, in ms (>= frame_ms).
    ///     sink: a ``SocketSink`` to which the pacer thread writes each released frame
    ///         itself, as one WebSocket binary message: the client's audio then never waits
    ///         for Python. Such a stream's frames are *not* handed over (``take_released()``
    ///         never returns them; Python gets no copy of the audio it would only discard):
    ///         its ``StreamEvent``s and ``stats()`` say what Python needs. Frames the sink
    ///         refuses count in ``StreamStats.sink_refused``.
    ///     held: open the stream held (see ``PacerStream.hold``): it queues audio but
    ///         releases nothing until ``resume()``, which sends the cushion burst at once
    ///         (the ``"started"`` event comes then). For a reply generated before the user's
    ///         turn is confirmed.
    ///
    /// Raises:
    ///     UnsupportedSampleRateError, ConfigError: a value out of range.
    ///     PacerStoppedError: the pacer has been stopped.
    #[pyo3(signature = (sample_rate, *, channels = 1, cushion_ms = 120, max_lead_ms = None, queue_ms = 2000, sink = None, held = false))]
    #[allow(clippy::too_many_arguments)] // the keyword arguments of one Python call
    fn open_stream(
        slf: &Bound<'_, Self>,
        sample_rate: i64,
        channels: i64,
        cushion_ms: i64,
        max_lead_ms: Option<i64>,
        queue_ms: i64,
        sink: Option<&Bound<'_, PySocketSink>>,
        held: bool,
    ) -> PyResult<PyPacerStream> {
        let config = StreamConfig {
            sample_rate,
            channels,
            cushion_ms,
            max_lead_ms,
            queue_ms,
            sink: sink.map(|sink| Arc::clone(sink.get().core())),
            held,
        };
        let core = &slf.get().core;
        let (info, writable) = audio::detach(slf.py(), || {
            let info = core.open_stream(&config)?;
            Ok::<_, PacerError>((info, core.writable_event(info.id)?))
        })
        .map_err(to_py_err)?;
        Ok(PyPacerStream::new(slf.clone().unbind(), info, writable))
    }

    /// The descriptor that is readable while released frames or stream events may be waiting
    /// (and once the pacer has stopped). Owned by the pacer: do not close it.
    fn fileno(&self) -> i32 {
        self.core.released_fd()
    }

    /// Takes every released frame waiting, oldest first (an empty list if none): frames of
    /// streams without a sink only. ``fileno()`` becomes unreadable until the next release or
    /// event, unless stream events still wait for a consumer of ``take_events()``. Works
    /// after ``stop()``.
    fn take_released(&self, py: Python<'_>) -> PyResult<Vec<PyReleasedFrame>> {
        let mut frames = Vec::new();
        audio::detach(py, || self.core.take_released(&mut frames));
        let objects = frames
            .iter()
            .map(|frame| {
                Ok(PyReleasedFrame {
                    stream_id: frame.stream_id,
                    seq: frame.seq,
                    pcm16: audio::pcm16_bytes(py, &frame.samples)?.unbind(),
                    deadline_ns: frame.deadline_ns,
                    released_ns: frame.released_ns,
                    lateness_ns: frame.lateness_ns(),
                })
            })
            .collect::<PyResult<Vec<_>>>()?;
        // The buffers go back to the pacer thread, which then allocates nothing per frame.
        audio::detach(py, || self.core.recycle(frames));
        Ok(objects)
    }

    /// Takes every stream event waiting (``"started"``, ``"drained"``, ``"late"``), oldest first (an empty
    /// list if none). ``fileno()`` becomes readable whenever a frame or an event is queued;
    /// once a consumer has called both ``take_events()`` and ``take_released()``, it stays
    /// readable while either kind waits, so one wake-up followed by both calls misses
    /// nothing. (A consumer that never calls ``take_events()`` is not woken again for events
    /// it does not take; at most 4096 events are kept, oldest dropped.) Works after
    /// ``stop()``.
    fn take_events(&self, py: Python<'_>) -> Vec<PyStreamEvent> {
        let mut events = Vec::new();
        audio::detach(py, || self.core.take_events(&mut events));
        events
            .into_iter()
            .map(|event| PyStreamEvent {
                stream_id: event.stream_id,
                kind: event.kind.name(),
                at_ns: event.at_ns,
                lateness_ns: match event.kind {
                    StreamEventKind::Started { lateness_ns }
                    | StreamEventKind::Late { lateness_ns } => Some(lateness_ns),
                    StreamEventKind::Drained => None,
                },
            })
            .collect()
    }

    /// Now on the pacer's clock, in ns (``CLOCK_MONOTONIC``, or the virtual time).
    fn now_ns(&self, py: Python<'_>) -> i64 {
        audio::detach(py, || self.core.now_ns())
    }

    /// Virtual clock only: advances time by ``ms`` milliseconds (>= 0), releasing every frame
    /// due on the way at its exact deadline.
    ///
    /// Raises:
    ///     ConfigError: a negative or non-finite ``ms``, or a real-clock pacer.
    ///     PacerStoppedError: the pacer has been stopped.
    fn advance(&self, py: Python<'_>, ms: f64) -> PyResult<()> {
        if !(ms.is_finite() && ms >= 0.0) {
            return Err(ConfigError::new_err(format!(
                "advance(ms = {ms}) is invalid; expected a finite duration of at least 0 ms"
            )));
        }
        let duration_ns = (ms * 1e6).round() as i64;
        audio::detach(py, || self.core.advance_ns(duration_ns)).map_err(to_py_err)
    }

    /// Virtual clock only: moves time to ``now_ns`` (never backwards), releasing every frame
    /// due on the way.
    ///
    /// Raises:
    ///     ConfigError: a time before the current virtual time, or a real-clock pacer.
    ///     PacerStoppedError: the pacer has been stopped.
    fn advance_to(&self, py: Python<'_>, now_ns: i64) -> PyResult<()> {
        audio::detach(py, || self.core.advance_to(now_ns)).map_err(to_py_err)
    }

    /// Statistics over the pacer's life: frames, underruns, flushes, drops, lateness.
    fn stats(&self, py: Python<'_>) -> PyPacerStats {
        let stats = audio::detach(py, || self.core.stats());
        PyPacerStats {
            scheduling: stats.scheduling.to_string(),
            open_streams: stats.open_streams,
            frames_released: stats.counters.frames_released,
            underruns: stats.counters.underruns,
            flushes: stats.counters.flushes,
            dropped_samples: stats.counters.dropped_samples,
            sink_refused: stats.counters.sink_refused,
            lateness: stats.lateness,
        }
    }

    /// Stops the pacer thread (idempotent); waiting producers and consumers wake up.
    fn stop(&self, py: Python<'_>) {
        audio::detach(py, || self.core.stop());
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_exc_info))]
    fn __exit__(&self, py: Python<'_>, _exc_info: &Bound<'_, PyTuple>) {
        self.stop(py);
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let stats = audio::detach(py, || self.core.stats());
        format!(
            "FramePacer(frame_ms={}, clock={:?}, scheduling={:?}, open_streams={}, stopped={})",
            self.core.frame_ms(),
            self.core.clock().name(),
            stats.scheduling.to_string(),
            stats.open_streams,
            if self.stopped(py) { "True" } else { "False" },
        )
    }
}

/// A playout stream of a ``FramePacer`` (from ``FramePacer.open_stream``).
///
/// ``push`` queues audio, sliced into frames at the stream's rate; a trailing partial frame
/// waits for more audio or for ``finish()``. The queue is bounded: ``push`` returns how many
/// samples fit, and ``writable_fileno()`` becomes readable once the queue has drained to half
/// its capacity (``voicecore.pacing.push`` awaits it for you).
#[pyclass(module = "voicecore._core", name = "PacerStream", frozen)]
pub struct PyPacerStream {
    pacer: Py<PyFramePacer>,
    // Shared with the core stream, so the descriptor stays open while this handle lives,
    // even after close (a Trio task may still be waiting on it).
    writable: Arc<EventFd>,
    /// The stream id (``ReleasedFrame.stream_id`` and ``StreamEvent.stream_id`` of it).
    #[pyo3(get)]
    id: u64,
    /// Sample rate, in Hz.
    #[pyo3(get)]
    sample_rate: u32,
    /// Samples per frame.
    #[pyo3(get)]
    frame_samples: usize,
    /// Target client cushion, in ms.
    #[pyo3(get)]
    cushion_ms: u32,
    /// Maximum lead over the client's playback, in ms.
    #[pyo3(get)]
    max_lead_ms: u32,
    /// Playout queue capacity, in ms.
    #[pyo3(get)]
    queue_ms: u32,
}

impl PyPacerStream {
    fn new(pacer: Py<PyFramePacer>, info: StreamInfo, writable: Arc<EventFd>) -> Self {
        Self {
            pacer,
            writable,
            id: info.id,
            sample_rate: info.sample_rate,
            frame_samples: info.frame_samples,
            cushion_ms: info.cushion_ms,
            max_lead_ms: info.max_lead_ms,
            queue_ms: info.queue_ms,
        }
    }

    fn core(&self) -> &FramePacer {
        &self.pacer.get().core
    }
}

#[pymethods]
impl PyPacerStream {
    /// Queues audio (PCM16 bytes-like, or a 1-D numpy int16/float32 array at the stream's
    /// rate) and returns how many samples fit; push the rest after ``writable_fileno()``
    /// becomes readable.
    ///
    /// Raises:
    ///     AudioTypeError: an unsupported type or dtype.
    ///     AudioFormatError: odd PCM16 byte length, a 2-D or non-contiguous array, or
    ///         non-finite float samples.
    ///     UnknownStreamError: the stream is closed.
    ///     PacerStoppedError: the pacer has been stopped.
    fn push(&self, py: Python<'_>, audio: &Bound<'_, PyAny>) -> PyResult<usize> {
        let input = AudioInput::extract(audio)?;
        let core = self.core();
        let id = self.id;
        audio::detach(py, || match input.samples() {
            Samples::I16(samples) => core.push(id, samples),
            Samples::F32(samples) => core.push_f32(id, samples),
        })
        .map_err(to_py_err)
    }

    /// Ends an utterance: pads the partial last frame with silence and returns the number of
    /// silent samples added; once the queue drains the stream goes idle without underruns,
    /// and a ``"drained"`` ``StreamEvent`` is queued (at once if nothing is queued).
    fn finish(&self, py: Python<'_>) -> PyResult<usize> {
        let core = self.core();
        audio::detach(py, || core.finish(self.id)).map_err(to_py_err)
    }

    /// Drops the queued audio and the released frames not yet taken, at once; nothing of it
    /// is released afterwards. Returns what was dropped and what had gone out (tell the
    /// client to clear its buffer: the next audio starts with a fresh cushion). With a sink,
    /// released frames are already on the wire: they count as released, not dropped. No
    /// ``"drained"`` event follows a flush (the utterance was cut, not played out).
    fn flush(&self, py: Python<'_>) -> PyResult<PyFlushReport> {
        let core = self.core();
        let report = audio::detach(py, || core.flush(self.id)).map_err(to_py_err)?;
        Ok(PyFlushReport {
            dropped_samples: report.dropped_samples,
            released_samples: report.released_samples,
            client_buffered_samples: report.client_buffered_samples,
            sample_rate: self.sample_rate,
        })
    }

    /// Takes a client playout report: the client holds ``buffered_ms`` ms of this stream's
    /// audio now. A few reports a second keep the cushion on target under clock drift.
    ///
    /// Raises:
    ///     ConfigError: negative, non-finite, or above 60000 ms.
    fn report_playout(&self, py: Python<'_>, buffered_ms: f64) -> PyResult<()> {
        let core = self.core();
        audio::detach(py, || core.report_playout(self.id, buffered_ms)).map_err(to_py_err)
    }

    /// Holds the stream: it releases nothing from now on (no frame is due, no underrun is
    /// counted, the pacer thread does not wake for it) and the pacer's model of the client's
    /// buffer is frozen, since the client has paused its playout keeping what it holds.
    /// ``push`` still queues (up to the queue's capacity, with the usual backpressure);
    /// ``flush()`` works as usual (``heard`` counts what the client played before it
    /// paused); after ``finish()`` the ``"drained"`` event comes once ``resume()`` has
    /// released the rest. Playout reports taken while held correct the client's position
    /// only (nothing played, so nothing is learnt about its clock) and never end the hold.
    ///
    /// Returns ``True`` when the hold began, ``False`` when the stream was held already
    /// (nothing changes: two holds make one).
    ///
    /// Raises:
    ///     UnknownStreamError: the stream is closed.
    ///     PacerStoppedError: the pacer has been stopped.
    fn hold(&self, py: Python<'_>) -> PyResult<bool> {
        let core = self.core();
        audio::detach(py, || core.hold(self.id)).map_err(to_py_err)
    }

    /// Resumes a held stream from the exact sample it paused at: the client plays on from
    /// now with the buffer it kept, so a client paused with a full cushion gets no extra
    /// audio, while a stream opened held (nothing sent yet) sends its cushion burst at once.
    /// Frames due at the resume are due now (their lateness is measured from now).
    ///
    /// Returns ``True`` when the stream was held, ``False`` when it was not (nothing
    /// changes).
    ///
    /// Raises:
    ///     UnknownStreamError: the stream is closed.
    ///     PacerStoppedError: the pacer has been stopped.
    fn resume(&self, py: Python<'_>) -> PyResult<bool> {
        let core = self.core();
        audio::detach(py, || core.resume(self.id)).map_err(to_py_err)
    }

    /// Whether the stream is held (``hold()``, or opened with ``held=True``, and not
    /// resumed since).
    ///
    /// Raises:
    ///     UnknownStreamError: the stream is closed.
    ///     PacerStoppedError: the pacer has been stopped.
    #[getter]
    fn held(&self, py: Python<'_>) -> PyResult<bool> {
        let core = self.core();
        audio::detach(py, || core.is_held(self.id)).map_err(to_py_err)
    }

    /// Closes the stream, dropping its queued audio. Further calls raise
    /// ``UnknownStreamError``.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let core = self.core();
        audio::detach(py, || core.close_stream(self.id)).map_err(to_py_err)
    }

    /// The descriptor that becomes readable when a cut-short ``push`` may go on (the queue
    /// drained to half its capacity), and on flush, close and stop. ``push`` clears it when
    /// it cuts a push short. Owned by the stream: do not close it.
    fn writable_fileno(&self) -> i32 {
        self.writable.raw_fd()
    }

    /// This stream's statistics.
    fn stats(&self, py: Python<'_>) -> PyResult<PyStreamStats> {
        let core = self.core();
        let stats = audio::detach(py, || core.stream_stats(self.id)).map_err(to_py_err)?;
        let ms = |samples: u64| ms_of_samples(samples, self.sample_rate);
        Ok(PyStreamStats {
            frames_released: stats.counters.frames_released,
            underruns: stats.counters.underruns,
            flushes: stats.counters.flushes,
            dropped_samples: stats.counters.dropped_samples,
            sink_refused: stats.counters.sink_refused,
            queued_samples: stats.queued_samples,
            queued_ms: ms(stats.queued_samples),
            released_samples: stats.released_samples,
            client_buffered_ms: ms(stats.client_buffered_samples),
            client_rate_ppm: stats.client_rate_ppm,
            playing: stats.playing,
            holds: stats.holds,
            held_ms: ms_of_ns(stats.held_ns),
            lateness: stats.lateness,
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "PacerStream(id={}, sample_rate={}, frame_samples={}, cushion_ms={}, max_lead_ms={}, queue_ms={})",
            self.id,
            self.sample_rate,
            self.frame_samples,
            self.cushion_ms,
            self.max_lead_ms,
            self.queue_ms
        )
    }
}

/// One frame released by the pacer.
#[pyclass(module = "voicecore._core", name = "ReleasedFrame", frozen, get_all)]
pub struct PyReleasedFrame {
    /// The stream it belongs to (``PacerStream.id``).
    stream_id: u64,
    /// Its position in the stream: 0, 1, 2... (never reset; frames a flush takes back
    /// before the consumer saw them leave a gap).
    seq: u64,
    /// The frame's audio: PCM16 little-endian bytes, exactly one frame.
    pcm16: Py<PyBytes>,
    /// When it was due, in ns of the pacer's clock.
    deadline_ns: i64,
    /// When the pacer released it, in ns of the pacer's clock.
    released_ns: i64,
    /// ``released_ns - deadline_ns``.
    lateness_ns: i64,
}

#[pymethods]
impl PyReleasedFrame {
    fn __repr__(&self, py: Python<'_>) -> String {
        format!(
            "ReleasedFrame(stream_id={}, seq={}, samples={}, deadline_ns={}, lateness_ns={})",
            self.stream_id,
            self.seq,
            self.pcm16.bind(py).as_bytes().len() / 2,
            self.deadline_ns,
            self.lateness_ns
        )
    }
}

/// A lifecycle event of a pacer stream (from ``FramePacer.take_events()``).
///
/// Every stream emits them, with or without a sink, so the engine has one lifecycle path.
/// A stream with a ``SocketSink`` emits nothing else: its frames go on the wire from the
/// pacer thread and are never copied for Python, so these events (and ``stats()``) are how
/// Python learns that the agent became audible and that it finished.
///
/// ``kind`` is ``"started"`` (the stream's first frame was released: the agent became
/// audible; once per stream, ``lateness_ns`` is that frame's release lateness) or
/// ``"drained"`` (after ``finish()``, the last queued sample has been released; once per
/// utterance, never after a ``flush()`` until new audio is pushed and finished;
/// ``lateness_ns`` is None) or ``"late"`` (a frame was released more than 5 ms after its
/// deadline: only late frames are reported; ``lateness_ns`` is its lateness).
#[pyclass(module = "voicecore._core", name = "StreamEvent", frozen, get_all)]
pub struct PyStreamEvent {
    /// The stream it belongs to (``PacerStream.id``).
    stream_id: u64,
    /// ``"started"``, ``"drained"`` or ``"late"``.
    kind: &'static str,
    /// When, in ns of the pacer's clock (the clock of ``FramePacer.now_ns()``).
    at_ns: i64,
    /// ``"started"``/``"late"``: that frame's release lateness, in ns; ``"drained"``: None.
    lateness_ns: Option<i64>,
}

#[pymethods]
impl PyStreamEvent {
    fn __repr__(&self) -> String {
        let lateness = match self.lateness_ns {
            Some(ns) => format!(", lateness_ns={ns}"),
            None => String::new(),
        };
        format!(
            "StreamEvent(stream_id={}, kind={:?}, at_ns={}{lateness})",
            self.stream_id, self.kind, self.at_ns
        )
    }
}

/// What ``PacerStream.flush`` dropped and what had already gone out.
///
/// ``heard_samples`` (released minus what the client is estimated to still hold) is what the
/// user has heard, for a conversation history that keeps only that.
#[pyclass(module = "voicecore._core", name = "FlushReport", frozen)]
pub struct PyFlushReport {
    /// Samples discarded: still queued, plus released frames not yet taken.
    #[pyo3(get)]
    dropped_samples: u64,
    /// Samples released and handed over (or written to the sink) since the stream opened.
    #[pyo3(get)]
    released_samples: u64,
    /// Of those, the samples the client is estimated to hold unplayed.
    #[pyo3(get)]
    client_buffered_samples: u64,
    sample_rate: u32,
}

#[pymethods]
impl PyFlushReport {
    /// ``released_samples - client_buffered_samples``: what the user has heard.
    #[getter]
    fn heard_samples(&self) -> u64 {
        self.released_samples - self.client_buffered_samples
    }

    /// ``dropped_samples`` in ms.
    #[getter]
    fn dropped_ms(&self) -> f64 {
        ms_of_samples(self.dropped_samples, self.sample_rate)
    }

    /// ``released_samples`` in ms.
    #[getter]
    fn released_ms(&self) -> f64 {
        ms_of_samples(self.released_samples, self.sample_rate)
    }

    /// ``heard_samples`` in ms.
    #[getter]
    fn heard_ms(&self) -> f64 {
        ms_of_samples(self.heard_samples(), self.sample_rate)
    }

    fn __repr__(&self) -> String {
        format!(
            "FlushReport(dropped_samples={}, released_samples={}, client_buffered_samples={})",
            self.dropped_samples, self.released_samples, self.client_buffered_samples
        )
    }
}

/// Statistics of a ``FramePacer`` over its life (closed streams included). The lateness
/// figures come from the pacer's own histogram of every frame it released (sinks included).
#[pyclass(module = "voicecore._core", name = "PacerStats", frozen)]
pub struct PyPacerStats {
    /// The scheduling class the pacer thread obtained.
    #[pyo3(get)]
    scheduling: String,
    /// Streams open now.
    #[pyo3(get)]
    open_streams: usize,
    /// Frames released.
    #[pyo3(get)]
    frames_released: u64,
    /// Frame slots that found a playing stream's queue short of a frame.
    #[pyo3(get)]
    underruns: u64,
    /// Flushes.
    #[pyo3(get)]
    flushes: u64,
    /// Samples dropped by flushes and closes.
    #[pyo3(get)]
    dropped_samples: u64,
    /// Released frames a stream's ``SocketSink`` refused (full, closed or broken).
    #[pyo3(get)]
    sink_refused: u64,
    lateness: LatenessSummary,
}

#[pymethods]
impl PyPacerStats {
    /// Median release lateness (release time minus deadline), in ms.
    #[getter]
    fn lateness_p50_ms(&self) -> f64 {
        ms_of_ns(self.lateness.p50_ns)
    }

    /// 99th percentile of release lateness, in ms.
    #[getter]
    fn lateness_p99_ms(&self) -> f64 {
        ms_of_ns(self.lateness.p99_ns)
    }

    /// Maximum release lateness, in ms.
    #[getter]
    fn lateness_max_ms(&self) -> f64 {
        ms_of_ns(self.lateness.max_ns)
    }

    fn __repr__(&self) -> String {
        format!(
            "PacerStats(scheduling={:?}, open_streams={}, frames_released={}, underruns={}, flushes={}, \
             dropped_samples={}, lateness_p50_ms={:.4}, lateness_p99_ms={:.4}, lateness_max_ms={:.4})",
            self.scheduling,
            self.open_streams,
            self.frames_released,
            self.underruns,
            self.flushes,
            self.dropped_samples,
            self.lateness_p50_ms(),
            self.lateness_p99_ms(),
            self.lateness_max_ms()
        )
    }
}

/// Statistics of one ``PacerStream``. The lateness figures come from the stream's own
/// histogram in the pacer (every frame it released, written to a sink or handed over).
#[pyclass(module = "voicecore._core", name = "StreamStats", frozen)]
pub struct PyStreamStats {
    /// Frames released.
    #[pyo3(get)]
    frames_released: u64,
    /// Frame slots that found the queue short of a frame while playing.
    #[pyo3(get)]
    underruns: u64,
    /// Flushes.
    #[pyo3(get)]
    flushes: u64,
    /// Samples dropped by flushes.
    #[pyo3(get)]
    dropped_samples: u64,
    /// Released frames the stream's ``SocketSink`` refused (full, closed or broken).
    #[pyo3(get)]
    sink_refused: u64,
    /// Samples waiting in the playout queue.
    #[pyo3(get)]
    queued_samples: u64,
    /// Audio waiting in the playout queue, in ms.
    #[pyo3(get)]
    queued_ms: f64,
    /// Samples released (handed over, or written to the sink) since the stream opened.
    #[pyo3(get)]
    released_samples: u64,
    /// The pacer's estimate of the audio the client holds now, in ms.
    #[pyo3(get)]
    client_buffered_ms: f64,
    /// Estimated client clock drift in parts per million (positive: it plays fast).
    #[pyo3(get)]
    client_rate_ppm: i64,
    /// Whether the stream is scheduled (playing, or starved and waiting for audio); a
    /// stream held mid-utterance stays ``playing`` (it goes on at its resume).
    #[pyo3(get)]
    playing: bool,
    /// Holds begun since the stream opened (opening it held counts as one).
    #[pyo3(get)]
    holds: u64,
    /// Total time held, the current hold included, in ms.
    #[pyo3(get)]
    held_ms: f64,
    lateness: LatenessSummary,
}

#[pymethods]
impl PyStreamStats {
    /// Median release lateness, in ms.
    #[getter]
    fn lateness_p50_ms(&self) -> f64 {
        ms_of_ns(self.lateness.p50_ns)
    }

    /// 99th percentile of release lateness, in ms.
    #[getter]
    fn lateness_p99_ms(&self) -> f64 {
        ms_of_ns(self.lateness.p99_ns)
    }

    /// Maximum release lateness, in ms.
    #[getter]
    fn lateness_max_ms(&self) -> f64 {
        ms_of_ns(self.lateness.max_ns)
    }

    fn __repr__(&self) -> String {
        format!(
            "StreamStats(frames_released={}, underruns={}, flushes={}, queued_ms={:.1}, \
             client_buffered_ms={:.1}, client_rate_ppm={}, playing={}, holds={}, held_ms={:.1}, \
             lateness_p99_ms={:.4})",
            self.frames_released,
            self.underruns,
            self.flushes,
            self.queued_ms,
            self.client_buffered_ms,
            self.client_rate_ppm,
            if self.playing { "True" } else { "False" },
            self.holds,
            self.held_ms,
            self.lateness_p99_ms()
        )
    }
}
