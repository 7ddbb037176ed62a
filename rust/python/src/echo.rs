//! Python binding of `voicecore_core::echo`: `EchoGate` and its `EchoStats` snapshot.

use std::sync::{Mutex, MutexGuard, PoisonError};

use pyo3::prelude::*;
use voicecore_core::echo::{EchoGate, EchoGateConfig, EchoStats, SAMPLE_RATE};

use crate::audio::{detach, f32_output, i16_output, AudioInput, Samples};
use crate::errors::{to_py_err, ConfigError};

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyEchoGate>()?;
    m.add_class::<PyEchoStats>()?;
    Ok(())
}

/// Every lock is taken with the GIL released (inside `detach`). A poisoned lock only means
/// another thread panicked while holding it; the gate has no invariant a half-finished call
/// could break, so carry on with the data.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Python ints are unbounded: values outside `u32` (negative ones above all) are refused
/// with a ConfigError naming them, rather than pyo3's OverflowError.
fn to_u32(name: &'static str, value: i64, expected: &'static str) -> PyResult<u32> {
    u32::try_from(value).map_err(|_| {
        ConfigError::new_err(format!("{name} = {value} is invalid; expected {expected}"))
    })
}

/// An echo gate: keeps the agent's own voice, leaking from the user's loudspeaker into their
/// mic, from passing for the user speaking, while the user's speech over the agent passes.
///
/// Feed it the agent's audio in play order (``far_audio``), say when it plays
/// (``set_playing``), and pass every block of mic audio at 16 kHz through ``process``: echo
/// is replaced by comfort noise at the mic's own noise level; the user's speech, and
/// everything while the agent is silent, passes untouched. ``near_end_ms`` says how long the
/// user (or anything the agent's audio does not explain) has been active: the signal to
/// duck on.
///
/// The gate learns the echo's delay (from when the far end plays on the mic's clock to its
/// echo in the mic: network, the client's cushion and the room together) and its level per
/// band within about 0.5 s of the agent speaking; until then it assumes the echo may come
/// from anywhere in the last ``max_delay_ms``, as loud as ``initial_gain_db``.
///
/// Args:
///     far_rate: sample rate of the far-end (agent) audio, in Hz.
///     max_delay_ms: the longest delay from the far end's playing to its echo, 10-2000 ms.
///     margin_db: how far above the echo expected a band must be to count as near end
///         (besides the echo's measured scatter), 0-30 dB.
///     suppression_db: the mic's gain in echo blocks, -120-0 dB (comfort noise fills in).
///     onset_db: near-end activity must be this far above the mic's noise floor, 0-60 dB.
///     min_level_dbfs: ... and above this level, -120-0 dBFS.
///     tail_ms: the echo's tail (reverberation): 60 dB of decay in this time, 0-2000 ms.
///     initial_gain_db: the echo's level assumed before it is measured, -60-20 dB.
///     max_far_ms: the most far-end audio queued and not played, 1000-3600000 ms; more is
///         refused and counted in ``stats().far_rejected_ms``.
///
/// Raises:
///     UnsupportedSampleRateError: a far rate that cannot be resampled to 16 kHz.
///     ConfigError: another setting out of its range.
#[pyclass(name = "EchoGate", module = "voicecore._core", frozen)]
pub struct PyEchoGate {
    inner: Mutex<EchoGate>,
    config: EchoGateConfig,
}

#[pymethods]
impl PyEchoGate {
    #[new]
    #[pyo3(signature = (
        far_rate,
        *,
        max_delay_ms = 600,
        margin_db = 3.0,
        suppression_db = -40.0,
        onset_db = 12.0,
        min_level_dbfs = -55.0,
        tail_ms = 300.0,
        initial_gain_db = -3.0,
        max_far_ms = 600_000
    ),
    // Spelled out because pyo3 renders the negative defaults as `...`, which stubtest flags.
    text_signature = "(far_rate, *, max_delay_ms=600, margin_db=3.0, suppression_db=-40.0, \
        onset_db=12.0, min_level_dbfs=-55.0, tail_ms=300.0, initial_gain_db=-3.0, \
        max_far_ms=600000)")]
    #[allow(clippy::too_many_arguments)]
    fn new(
        far_rate: i64,
        max_delay_ms: i64,
        margin_db: f32,
        suppression_db: f32,
        onset_db: f32,
        min_level_dbfs: f32,
        tail_ms: f32,
        initial_gain_db: f32,
        max_far_ms: i64,
    ) -> PyResult<Self> {
        let config = EchoGateConfig {
            far_rate: to_u32("far_rate", far_rate, "a sample rate in Hz")?,
            max_delay_ms: to_u32("max_delay_ms", max_delay_ms, "10 to 2000 (ms)")?,
            margin_db,
            suppression_db,
            onset_db,
            min_level_dbfs,
            tail_ms,
            initial_gain_db,
            max_far_ms: to_u32("max_far_ms", max_far_ms, "1000 to 3600000 (ms)")?,
        };
        let gate = EchoGate::new(config).map_err(to_py_err)?;
        Ok(Self {
            inner: Mutex::new(gate),
            config,
        })
    }

    /// The mic's sample rate: 16000 Hz.
    #[classattr]
    const SAMPLE_RATE: u32 = SAMPLE_RATE;

    /// Sample rate of the far-end audio, in Hz.
    #[getter]
    fn far_rate(&self) -> u32 {
        self.config.far_rate
    }

    /// The longest delay looked for, in ms.
    #[getter]
    fn max_delay_ms(&self) -> u32 {
        self.config.max_delay_ms
    }

    /// True while the far end plays (see ``set_playing``).
    #[getter]
    fn playing(&self, py: Python<'_>) -> bool {
        detach(py, || lock(&self.inner).playing())
    }

    /// The length of the current run of near-end activity at the end of the mic audio
    /// processed so far, in ms (a multiple of 10; 0 when the last complete 10 ms block was
    /// not near end). Duck when it reaches 20-30 ms.
    #[getter]
    fn near_end_ms(&self, py: Python<'_>) -> u32 {
        detach(py, || lock(&self.inner).near_end_ms())
    }

    /// Queues far-end (agent) audio at ``far_rate``, in the order it plays.
    ///
    /// Args:
    ///     audio: PCM16 bytes/bytearray/memoryview, or a 1-D C-contiguous numpy int16 or
    ///         float32 array (float full scale 1.0).
    ///
    /// Raises:
    ///     AudioFormatError / AudioTypeError: for unusable audio.
    fn far_audio(&self, py: Python<'_>, audio: &Bound<'_, PyAny>) -> PyResult<()> {
        let audio = AudioInput::extract(audio)?;
        detach(py, || {
            let mut gate = lock(&self.inner);
            match audio.samples() {
                Samples::I16(s) => gate.far_audio(s),
                Samples::F32(s) => gate.far_audio(s),
            }
        });
        Ok(())
    }

    /// Starts (True) or stops (False) playing the far end: while it plays, every 10 ms of
    /// mic audio processed takes 10 ms of the queue (silence when the queue is empty).
    fn set_playing(&self, py: Python<'_>, playing: bool) {
        detach(py, || lock(&self.inner).set_playing(playing));
    }

    /// Drops the far end's queue (a cut or a hold: that audio will not play). What already
    /// played is still expected to echo.
    fn clear_far(&self, py: Python<'_>) {
        detach(py, || lock(&self.inner).clear_far());
    }

    /// Forgets the echo's delay, keeping its level: for when the playout timeline moved (the
    /// client's player ran dry, or its buffer was reset). Until the delay is found again
    /// (about 0.5 s of far-end speech) the gate expects the echo at any delay.
    fn realign(&self, py: Python<'_>) {
        detach(py, || lock(&self.inner).realign());
    }

    /// Gates mic audio at 16 kHz; returns the same number of samples in the same type
    /// (bytes in, bytes out; an int16 array in, an int16 array out; float32 likewise).
    ///
    /// Any length is accepted, with no added latency: a sample is gated by the decision on
    /// the 10 ms block it belongs to once that block is complete, and by the decision before
    /// it until then (pass whole 10 ms blocks to have every block judged on its own).
    ///
    /// Raises:
    ///     AudioFormatError / AudioTypeError: for unusable audio.
    fn process<'py>(
        &self,
        py: Python<'py>,
        audio: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let input = AudioInput::extract(audio)?;
        let kind = input.kind();
        let output = detach(py, || {
            let mut gate = lock(&self.inner);
            match input.samples() {
                Samples::I16(s) => Gated::Pcm16(gate.process(s)),
                Samples::F32(s) => Gated::Float32(gate.process(s)),
            }
        });
        match output {
            Gated::Pcm16(samples) => i16_output(py, kind, samples),
            Gated::Float32(samples) => Ok(f32_output(py, samples)),
        }
    }

    /// What the gate has seen and learnt so far (see ``EchoStats``).
    fn stats(&self, py: Python<'_>) -> PyEchoStats {
        PyEchoStats(detach(py, || lock(&self.inner).stats()))
    }

    fn __repr__(&self) -> String {
        let c = &self.config;
        format!(
            "EchoGate(far_rate={}, max_delay_ms={}, margin_db={}, suppression_db={}, \
             onset_db={}, min_level_dbfs={}, tail_ms={}, initial_gain_db={}, max_far_ms={})",
            c.far_rate,
            c.max_delay_ms,
            c.margin_db,
            c.suppression_db,
            c.onset_db,
            c.min_level_dbfs,
            c.tail_ms,
            c.initial_gain_db,
            c.max_far_ms
        )
    }
}

/// A snapshot of what an ``EchoGate`` has seen and learnt.
#[pyclass(name = "EchoStats", module = "voicecore._core", frozen, eq)]
#[derive(PartialEq)]
pub struct PyEchoStats(EchoStats);

#[pymethods]
impl PyEchoStats {
    /// 10 ms blocks judged echo and suppressed.
    #[getter]
    fn echo_blocks(&self) -> u64 {
        self.0.echo_blocks
    }

    /// 10 ms blocks of near-end activity.
    #[getter]
    fn near_end_blocks(&self) -> u64 {
        self.0.near_end_blocks
    }

    /// The echo's delay behind the far end as played on the mic's clock, in ms (a multiple
    /// of 10), or None until it is found.
    #[getter]
    fn delay_ms(&self) -> Option<u32> {
        self.0.delay_ms
    }

    /// The echo's level relative to the far end's, in dB (energy, for the far end's
    /// average spectrum), or None until the delay is found.
    #[getter]
    fn echo_gain_db(&self) -> Option<f32> {
        self.0.echo_gain_db
    }

    /// True once the echo's delay is found.
    #[getter]
    fn converged(&self) -> bool {
        self.0.converged()
    }

    /// Far-end audio queued and not yet played, in ms.
    #[getter]
    fn far_queued_ms(&self) -> f64 {
        self.0.far_queued_ms
    }

    /// Far-end audio refused because the queue held ``max_far_ms``, in ms.
    #[getter]
    fn far_rejected_ms(&self) -> f64 {
        self.0.far_rejected_ms
    }

    fn __repr__(&self) -> String {
        let s = &self.0;
        let optional = |value: Option<String>| value.unwrap_or_else(|| "None".to_owned());
        format!(
            "EchoStats(echo_blocks={}, near_end_blocks={}, delay_ms={}, echo_gain_db={}, \
             converged={}, far_queued_ms={}, far_rejected_ms={})",
            s.echo_blocks,
            s.near_end_blocks,
            optional(s.delay_ms.map(|d| d.to_string())),
            optional(s.echo_gain_db.map(|g| format!("{g:.1}"))),
            if s.converged() { "True" } else { "False" },
            s.far_queued_ms,
            s.far_rejected_ms
        )
    }
}

/// The gated samples, in the input's sample type.
enum Gated {
    Pcm16(Vec<i16>),
    Float32(Vec<f32>),
}
