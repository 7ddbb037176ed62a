//! Python bindings of `voicecore_core::ring`: `SampleRing` and its `RingStats` snapshot.
//!
//! The core hands out a `Producer` and a `Consumer` that must each stay on one thread. A
//! Python object can be shared by any number of threads, so each half sits behind its own
//! mutex: the intended one producer thread and one consumer thread never contend (they take
//! different locks), while accidental misuse (two threads pushing) is serialised instead of
//! being undefined behaviour. The counters are read through the core's lock-free `Monitor`,
//! so observing a ring never waits for either half.
//!
//! Every lock is taken inside `audio::detach`, with the GIL released, and dropped before the
//! GIL is taken back. Waiting for a half's lock while holding the GIL would deadlock against a
//! thread that holds that lock and needs the GIL to return its result.

use std::sync::{Mutex, MutexGuard, PoisonError};

use numpy::{PyArray1, PyArrayDyn, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use voicecore_core::ring::{sample_ring, Consumer, Monitor, OverflowPolicy, Producer, RingStats};
use voicecore_core::RingError;

use crate::audio::{self, AudioInput, Samples};
use crate::errors::{to_py_err, AudioFormatError, AudioTypeError};

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySampleRing>()?;
    m.add_class::<PyRingStats>()?;
    Ok(())
}

fn lock<T>(half: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code path panics while holding a half's lock, so a poisoned lock still guards a
    // consistent half.
    half.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A sample count from Python: negative counts are refused (zero is a valid, empty request).
fn sample_count(name: &'static str, value: i64) -> PyResult<usize> {
    usize::try_from(value).map_err(|_| to_py_err(RingError::NegativeCount { name, value }))
}

/// Lock-free single-producer/single-consumer ring of PCM16 samples.
///
/// One thread pushes (e.g. the websocket reader), one thread pops (e.g. the DSP loop); the
/// two never wait for each other. Every method releases the GIL while it copies.
///
/// The ring stores PCM16. ``push`` takes PCM16 bytes/bytearray/memoryview or 1-D
/// C-contiguous numpy int16 or float32 arrays, read in place; float32 (nominal range
/// [-1, 1]) is converted as it is stored: scaled by 32768, rounded, clamped to the int16
/// range, NaN becoming 0. Pops and peeks return numpy int16 arrays (``pop_bytes`` and
/// ``peek_last_bytes`` return PCM16 bytes; ``pop_into`` fills an array you own).
///
/// Args:
///     capacity: size of the ring, in samples (e.g. 2 s at 16 kHz = 32000); 1 to 2**26.
///     policy: what a push into a full ring does. ``"overwrite"`` (mic capture) stores
///         everything, overwriting the oldest unread samples and counting them as
///         ``overwritten``; ``"reject"`` (playout backpressure) stores what fits, counts the
///         rest as ``rejected`` and returns how much it stored. Required: every pipeline
///         edge declares its overflow policy.
///
/// Raises:
///     ConfigError: capacity zero, negative or above 2**26; policy not one of the two names.
#[pyclass(module = "voicecore._core", name = "SampleRing", frozen)]
pub struct PySampleRing {
    producer: Mutex<Producer>,
    consumer: Mutex<Consumer>,
    monitor: Monitor,
}

#[pymethods]
impl PySampleRing {
    #[new]
    fn new(capacity: i64, policy: &str) -> PyResult<Self> {
        let policy: OverflowPolicy = policy.parse().map_err(to_py_err)?;
        let capacity = usize::try_from(capacity).map_err(|_| {
            to_py_err(RingError::InvalidCapacity {
                capacity: i128::from(capacity),
            })
        })?;
        let (producer, consumer) = sample_ring(capacity, policy).map_err(to_py_err)?;
        let monitor = producer.monitor();
        Ok(Self {
            producer: Mutex::new(producer),
            consumer: Mutex::new(consumer),
            monitor,
        })
    }

    /// Pushes audio and returns how many samples the ring accepted.
    ///
    /// With ``"overwrite"`` that is always all of them (if more than ``capacity`` are pushed
    /// at once, only the last ``capacity`` survive). With ``"reject"`` it is as many as fit,
    /// taken from the start of ``audio``: offer the rest again once the consumer has made
    /// room (``free`` tells how much that is).
    ///
    /// Raises:
    ///     AudioTypeError: not bytes-like, or an array of another dtype than int16/float32.
    ///     AudioFormatError: odd PCM16 byte length, a 2-D or non-contiguous array.
    fn push(&self, py: Python<'_>, audio: &Bound<'_, PyAny>) -> PyResult<usize> {
        let input = AudioInput::extract(audio)?;
        Ok(audio::detach(py, || {
            let mut producer = lock(&self.producer);
            match input.samples() {
                Samples::I16(samples) => producer.push(samples),
                Samples::F32(samples) => producer.push_f32(samples),
            }
        }))
    }

    /// Pops up to ``n`` of the oldest unread samples as a numpy int16 array.
    ///
    /// Returns fewer than ``n`` samples if fewer are available; that pop counts as one
    /// underflow in ``stats()``. With ``"overwrite"``, samples the producer overwrites during
    /// the copy are dropped (and counted as overwritten), never returned out of order.
    ///
    /// Raises:
    ///     ConfigError: ``n`` is negative.
    fn pop<'py>(&self, py: Python<'py>, n: i64) -> PyResult<Bound<'py, PyArray1<i16>>> {
        let samples = self.pop_vec(py, n)?;
        Ok(PyArray1::from_vec(py, samples))
    }

    /// Like ``pop``, returning PCM16 little-endian bytes.
    fn pop_bytes<'py>(&self, py: Python<'py>, n: i64) -> PyResult<Bound<'py, PyBytes>> {
        let samples = self.pop_vec(py, n)?;
        audio::pcm16_bytes(py, &samples)
    }

    /// Pops up to ``len(out)`` samples into the front of ``out`` and returns how many; the
    /// allocation-free form of ``pop`` (same underflow accounting, with ``n = len(out)``).
    ///
    /// Raises:
    ///     AudioTypeError: ``out`` is not a numpy int16 array.
    ///     AudioFormatError: ``out`` is not one-dimensional, not contiguous, or read-only.
    fn pop_into(&self, py: Python<'_>, out: &Bound<'_, PyAny>) -> PyResult<usize> {
        let Ok(array) = out.cast::<PyArray1<i16>>() else {
            if out.cast::<PyArrayDyn<i16>>().is_ok() {
                return Err(AudioFormatError::new_err(
                    "out must be a one-dimensional int16 array",
                ));
            }
            return Err(AudioTypeError::new_err(
                "out must be a numpy array of dtype int16 \
                 (e.g. numpy.empty(320, dtype=numpy.int16))",
            ));
        };
        let mut borrowed = array.try_readwrite().map_err(|error| {
            AudioFormatError::new_err(format!("out cannot be written to: {error}"))
        })?;
        let samples = borrowed.as_slice_mut().map_err(|_| {
            AudioFormatError::new_err(
                "out is not contiguous; pass numpy.ascontiguousarray(out) or a fresh array",
            )
        })?;
        Ok(audio::detach(py, || lock(&self.consumer).pop_into(samples)))
    }

    /// The most recent ``n`` samples the producer wrote (at most ``capacity``), oldest first,
    /// as a numpy int16 array, without consuming anything: the pre-roll before a speech
    /// onset. Includes samples already popped as long as they have not been overwritten;
    /// never counts as an underflow.
    ///
    /// Raises:
    ///     ConfigError: ``n`` is negative.
    fn peek_last<'py>(&self, py: Python<'py>, n: i64) -> PyResult<Bound<'py, PyArray1<i16>>> {
        let samples = self.peek_vec(py, n)?;
        Ok(PyArray1::from_vec(py, samples))
    }

    /// Like ``peek_last``, returning PCM16 little-endian bytes.
    fn peek_last_bytes<'py>(&self, py: Python<'py>, n: i64) -> PyResult<Bound<'py, PyBytes>> {
        let samples = self.peek_vec(py, n)?;
        audio::pcm16_bytes(py, &samples)
    }

    /// Drops every unread sample (a barge-in flush) and returns how many, in samples; they
    /// are counted as ``cleared``. Samples pushed while it runs are kept.
    fn clear(&self, py: Python<'_>) -> u64 {
        audio::detach(py, || lock(&self.consumer).clear())
    }

    /// A snapshot of the counters, in samples (see ``RingStats``).
    fn stats(&self) -> PyRingStats {
        PyRingStats(self.monitor.stats())
    }

    /// Size of the ring, in samples.
    #[getter]
    fn capacity(&self) -> usize {
        self.monitor.capacity()
    }

    /// The overflow policy: ``"overwrite"`` or ``"reject"``.
    #[getter]
    fn policy(&self) -> &'static str {
        self.monitor.policy().name()
    }

    /// Unread samples a pop would return now (at most ``capacity``).
    #[getter]
    fn available(&self) -> u64 {
        self.monitor.available()
    }

    /// Samples that can be pushed before the ring is full (``capacity - available``).
    #[getter]
    fn free(&self) -> u64 {
        self.monitor.free()
    }

    fn __repr__(&self) -> String {
        let stats = self.monitor.stats();
        format!(
            "SampleRing(capacity={}, policy='{}', available={})",
            stats.capacity,
            self.monitor.policy().name(),
            stats.available
        )
    }
}

impl PySampleRing {
    fn pop_vec(&self, py: Python<'_>, n: i64) -> PyResult<Vec<i16>> {
        let n = sample_count("n", n)?;
        Ok(audio::detach(py, || lock(&self.consumer).pop(n)))
    }

    fn peek_vec(&self, py: Python<'_>, n: i64) -> PyResult<Vec<i16>> {
        let n = sample_count("n", n)?;
        Ok(audio::detach(py, || lock(&self.consumer).peek_last(n)))
    }
}

/// A snapshot of a ``SampleRing``'s counters, all in samples except ``underflows``.
///
/// Exact whenever neither the producer nor the consumer is inside a call, and then
/// ``written == read + overwritten + cleared + available``; taken during a push or pop it may
/// not include that call yet.
///
/// Attributes:
///     capacity: size of the ring.
///     available: unread samples.
///     written: samples accepted by pushes (``"overwrite"`` accepts all samples offered).
///     read: samples returned by pops.
///     overwritten: samples overwritten before any pop returned them (``"overwrite"``).
///     rejected: samples a full ``"reject"`` ring refused.
///     underflows: pops that asked for more samples than were available (a count of pops).
///     underflow_samples: samples those pops were short by, in total.
///     cleared: unread samples dropped by ``clear()``.
#[pyclass(module = "voicecore._core", name = "RingStats", frozen, eq)]
#[derive(PartialEq)]
pub struct PyRingStats(RingStats);

#[pymethods]
impl PyRingStats {
    #[getter]
    fn capacity(&self) -> u64 {
        self.0.capacity
    }
    #[getter]
    fn available(&self) -> u64 {
        self.0.available
    }
    #[getter]
    fn written(&self) -> u64 {
        self.0.written
    }
    #[getter]
    fn read(&self) -> u64 {
        self.0.read
    }
    #[getter]
    fn overwritten(&self) -> u64 {
        self.0.overwritten
    }
    #[getter]
    fn rejected(&self) -> u64 {
        self.0.rejected
    }
    #[getter]
    fn underflows(&self) -> u64 {
        self.0.underflows
    }
    #[getter]
    fn underflow_samples(&self) -> u64 {
        self.0.underflow_samples
    }
    #[getter]
    fn cleared(&self) -> u64 {
        self.0.cleared
    }

    fn __repr__(&self) -> String {
        let s = &self.0;
        format!(
            "RingStats(capacity={}, available={}, written={}, read={}, overwritten={}, \
             rejected={}, underflows={}, underflow_samples={}, cleared={})",
            s.capacity,
            s.available,
            s.written,
            s.read,
            s.overwritten,
            s.rejected,
            s.underflows,
            s.underflow_samples,
            s.cleared
        )
    }
}
