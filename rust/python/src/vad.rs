//! Python bindings of `voicecore_core::vad`: `VadFeatures`, `FrameFeatures`, `EnergyVad`,
//! `SpeechEvent` and `VadFrames`.

use std::sync::{Mutex, MutexGuard, PoisonError};

use numpy::{PyArray1, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use voicecore_core::vad::{
    EnergyVad, EnergyVadConfig, FeatureConfig, FeatureExtractor, Features, FrameDecision,
    SpeechEvent, SpeechEventKind,
};
use voicecore_core::VadError;

use crate::audio::{detach, AudioInput, Samples};
use crate::errors::{to_py_err, ConfigError};

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyVadFeatures>()?;
    m.add_class::<PyFrameFeatures>()?;
    m.add_class::<PyEnergyVad>()?;
    m.add_class::<PySpeechEvent>()?;
    m.add_class::<PyVadFrames>()?;
    Ok(())
}

/// Every lock is taken with the GIL released (inside `detach`): a thread waiting for a VAD
/// that another thread is feeding must not stall the interpreter meanwhile.
///
/// A poisoned lock only means another thread panicked while holding it; the core types have
/// no invariant a half-finished call could break, so carry on with the data.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Python ints are unbounded: reject values outside `u32` (negative ones above all) with a
/// ConfigError rather than the OverflowError pyo3 would raise.
fn to_u32(name: &'static str, value: i64, expected: &'static str) -> PyResult<u32> {
    u32::try_from(value).map_err(|_| {
        ConfigError::new_err(format!("{name} = {value} is invalid; expected {expected}"))
    })
}

/// Per-frame VAD features (level, zero-crossing rate, spectral shape, log-mel energies).
///
/// Args:
///     sample_rate: 8000 or 16000 (Hz).
///     frame_ms: frame duration in ms: 10, 20 or 30.
///     n_mels: number of log-mel bands, 0..=128 (0 skips them).
///
/// Raises:
///     UnsupportedSampleRateError: for another sample rate.
///     ConfigError: for another frame duration or a band count out of range.
#[pyclass(name = "VadFeatures", module = "voicecore._core", frozen)]
pub struct PyVadFeatures {
    inner: Mutex<(FeatureExtractor, Features)>,
    config: FeatureConfig,
    frame_len: usize,
}

#[pymethods]
impl PyVadFeatures {
    #[new]
    #[pyo3(signature = (sample_rate = 16000, frame_ms = 20, n_mels = 40))]
    fn new(sample_rate: i64, frame_ms: i64, n_mels: i64) -> PyResult<Self> {
        let config = FeatureConfig {
            sample_rate: to_u32("sample_rate", sample_rate, "8000 or 16000 (Hz)")?,
            frame_ms: to_u32("frame_ms", frame_ms, "10, 20 or 30 (ms)")?,
            n_mels: to_u32("n_mels", n_mels, "0..=128")? as usize,
        };
        let extractor = FeatureExtractor::new(config).map_err(to_py_err)?;
        let features = extractor.new_features();
        Ok(Self {
            frame_len: extractor.frame_len(),
            inner: Mutex::new((extractor, features)),
            config,
        })
    }

    /// Sample rate in Hz.
    #[getter]
    fn sample_rate(&self) -> u32 {
        self.config.sample_rate
    }

    /// Frame duration in ms.
    #[getter]
    fn frame_ms(&self) -> u32 {
        self.config.frame_ms
    }

    /// Number of log-mel bands.
    #[getter]
    fn n_mels(&self) -> usize {
        self.config.n_mels
    }

    /// Frame length in samples (`sample_rate * frame_ms / 1000`).
    #[getter]
    fn frame_length(&self) -> usize {
        self.frame_len
    }

    /// Features of one frame of exactly `frame_length` samples.
    ///
    /// Args:
    ///     frame: PCM16 bytes/bytearray/memoryview, or a 1-D C-contiguous numpy int16 or
    ///         float32 array (float full scale 1.0).
    ///
    /// Raises:
    ///     AudioFormatError: if the frame does not hold exactly `frame_length` samples, or
    ///         is odd-length PCM16, non-contiguous or not 1-D.
    ///     AudioTypeError: for another type or dtype.
    fn compute(&self, py: Python<'_>, frame: &Bound<'_, PyAny>) -> PyResult<PyFrameFeatures> {
        let audio = AudioInput::extract(frame)?;
        let features = detach(py, || {
            let mut guard = lock(&self.inner);
            let (extractor, features) = &mut *guard;
            match audio.samples() {
                Samples::I16(s) => extractor.compute(s, features),
                Samples::F32(s) => extractor.compute(s, features),
            }
            .map(|()| features.clone())
        })
        .map_err(to_py_err)?;
        Ok(PyFrameFeatures(features))
    }

    /// Features of every whole frame of `audio`, in one call (one GIL release).
    ///
    /// Frames are consecutive and non-overlapping from the first sample; a trailing partial
    /// frame is ignored. Returns a dict of float32 arrays: `rms_dbfs`, `zero_crossing_rate`,
    /// `spectral_flatness`, `spectral_centroid_hz`, `speech_band_ratio` of shape
    /// `(n_frames,)` and `log_mel` of shape `(n_frames, n_mels)` (units as on
    /// `FrameFeatures`).
    ///
    /// Raises:
    ///     AudioFormatError / AudioTypeError: for unusable audio, as `compute`.
    fn compute_many<'py>(
        &self,
        py: Python<'py>,
        audio: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let audio = AudioInput::extract(audio)?;
        let n_mels = self.config.n_mels;
        let columns = detach(py, || {
            let mut guard = lock(&self.inner);
            let (extractor, features) = &mut *guard;
            match audio.samples() {
                Samples::I16(s) => features_of_frames(extractor, features, s),
                Samples::F32(s) => features_of_frames(extractor, features, s),
            }
        })
        .map_err(to_py_err)?;
        let n_frames = columns.rms_dbfs.len();
        let dict = PyDict::new(py);
        dict.set_item("rms_dbfs", PyArray1::from_vec(py, columns.rms_dbfs))?;
        dict.set_item("zero_crossing_rate", PyArray1::from_vec(py, columns.zcr))?;
        dict.set_item(
            "spectral_flatness",
            PyArray1::from_vec(py, columns.flatness),
        )?;
        dict.set_item(
            "spectral_centroid_hz",
            PyArray1::from_vec(py, columns.centroid_hz),
        )?;
        dict.set_item(
            "speech_band_ratio",
            PyArray1::from_vec(py, columns.speech_band_ratio),
        )?;
        dict.set_item(
            "log_mel",
            PyArray1::from_vec(py, columns.log_mel).reshape([n_frames, n_mels])?,
        )?;
        Ok(dict)
    }

    fn __repr__(&self) -> String {
        format!(
            "VadFeatures(sample_rate={}, frame_ms={}, n_mels={})",
            self.config.sample_rate, self.config.frame_ms, self.config.n_mels
        )
    }
}

/// Feature columns of many frames (log-mel row-major, one row per frame).
struct FeatureColumns {
    rms_dbfs: Vec<f32>,
    zcr: Vec<f32>,
    flatness: Vec<f32>,
    centroid_hz: Vec<f32>,
    speech_band_ratio: Vec<f32>,
    log_mel: Vec<f32>,
}

fn features_of_frames<S: voicecore_core::vad::Sample>(
    extractor: &mut FeatureExtractor,
    features: &mut Features,
    samples: &[S],
) -> Result<FeatureColumns, VadError> {
    let n_frames = samples.len() / extractor.frame_len();
    let mut columns = FeatureColumns {
        rms_dbfs: Vec::with_capacity(n_frames),
        zcr: Vec::with_capacity(n_frames),
        flatness: Vec::with_capacity(n_frames),
        centroid_hz: Vec::with_capacity(n_frames),
        speech_band_ratio: Vec::with_capacity(n_frames),
        log_mel: Vec::with_capacity(n_frames * extractor.config().n_mels),
    };
    for frame in samples.chunks_exact(extractor.frame_len()) {
        extractor.compute(frame, features)?;
        columns.rms_dbfs.push(features.rms_dbfs);
        columns.zcr.push(features.zero_crossing_rate);
        columns.flatness.push(features.spectral_flatness);
        columns.centroid_hz.push(features.spectral_centroid_hz);
        columns.speech_band_ratio.push(features.speech_band_ratio);
        columns.log_mel.extend_from_slice(&features.log_mel);
    }
    Ok(columns)
}

/// The features of one frame (see `VadFeatures.compute`).
#[pyclass(name = "FrameFeatures", module = "voicecore._core", frozen)]
pub struct PyFrameFeatures(Features);

#[pymethods]
impl PyFrameFeatures {
    /// RMS level in dBFS (full-scale sine: -3.01), floored at -120 for silence.
    #[getter]
    fn rms_dbfs(&self) -> f32 {
        self.0.rms_dbfs
    }

    /// Fraction of adjacent sample pairs whose sign differs, in [0, 1] (a tone of f Hz:
    /// about 2 f / sample_rate).
    #[getter]
    fn zero_crossing_rate(&self) -> f32 {
        self.0.zero_crossing_rate
    }

    /// Geometric over arithmetic mean of the power spectrum, in [0, 1] (white noise near 1,
    /// a tone near 0, digital silence 1).
    #[getter]
    fn spectral_flatness(&self) -> f32 {
        self.0.spectral_flatness
    }

    /// Power-weighted mean frequency in Hz (0 for digital silence).
    #[getter]
    fn spectral_centroid_hz(&self) -> f32 {
        self.0.spectral_centroid_hz
    }

    /// Share of the spectral power between 300 and 3400 Hz, in [0, 1].
    #[getter]
    fn speech_band_ratio(&self) -> f32 {
        self.0.speech_band_ratio
    }

    /// Natural-log mel band energies (full-scale mean square = 1.0), floored at ln(1e-12);
    /// a new float32 array of shape (n_mels,) on each access.
    #[getter]
    fn log_mel<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f32>> {
        PyArray1::from_slice(py, &self.0.log_mel)
    }

    fn __repr__(&self) -> String {
        format!(
            "FrameFeatures(rms_dbfs={:.2}, zero_crossing_rate={:.4}, spectral_flatness={:.4}, \
             spectral_centroid_hz={:.1}, speech_band_ratio={:.4}, n_mels={})",
            self.0.rms_dbfs,
            self.0.zero_crossing_rate,
            self.0.spectral_flatness,
            self.0.spectral_centroid_hz,
            self.0.speech_band_ratio,
            self.0.log_mel.len()
        )
    }
}

/// A speech boundary at an absolute sample index of the stream.
///
/// Args:
///     kind: "start" (speech begins at `sample`) or "end" (speech ended just before it).
///     sample: sample index from the start of the stream (0 = first sample given after
///         construction or `reset()`).
///     sample_rate: the stream's sample rate in Hz, for `time_s`.
#[pyclass(name = "SpeechEvent", module = "voicecore._core", frozen, eq, hash)]
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PySpeechEvent {
    event: SpeechEvent,
    sample_rate: u32,
}

#[pymethods]
impl PySpeechEvent {
    #[new]
    fn new(kind: &str, sample: u64, sample_rate: i64) -> PyResult<Self> {
        let kind = match kind {
            "start" => SpeechEventKind::Start,
            "end" => SpeechEventKind::End,
            other => {
                return Err(ConfigError::new_err(format!(
                    "kind = {other:?} is invalid; expected \"start\" or \"end\""
                )))
            }
        };
        let sample_rate = to_u32("sample_rate", sample_rate, "a positive rate in Hz")?;
        if sample_rate == 0 {
            return Err(ConfigError::new_err(
                "sample_rate = 0 is invalid; expected a positive rate in Hz",
            ));
        }
        Ok(Self {
            event: SpeechEvent { kind, sample },
            sample_rate,
        })
    }

    /// "start" or "end".
    #[getter]
    fn kind(&self) -> &'static str {
        match self.event.kind {
            SpeechEventKind::Start => "start",
            SpeechEventKind::End => "end",
        }
    }

    /// Sample index in the stream: first speech sample (start) or one past the last (end).
    #[getter]
    fn sample(&self) -> u64 {
        self.event.sample
    }

    /// Sample rate of the stream in Hz.
    #[getter]
    fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// The event's time in seconds from the start of the stream (`sample / sample_rate`).
    #[getter]
    fn time_s(&self) -> f64 {
        self.event.seconds(self.sample_rate)
    }

    fn __repr__(&self) -> String {
        format!(
            "SpeechEvent(kind={:?}, sample={}, sample_rate={})  # {:.3} s",
            self.kind(),
            self.event.sample,
            self.sample_rate,
            self.time_s()
        )
    }
}

/// Per-frame output of `EnergyVad.process_frames`: the events plus one entry per frame
/// completed by the call.
#[pyclass(name = "VadFrames", module = "voicecore._core", frozen)]
pub struct PyVadFrames {
    /// The speech events completed by the call.
    #[pyo3(get)]
    events: Py<PyList>,
    /// Stream index of the first frame below (frame i covers samples
    /// `i * frame_length .. (i + 1) * frame_length`).
    #[pyo3(get)]
    first_frame: u64,
    /// float32 speech score per frame in dB, 0 at the noise floor: `10 log10(1 + L)`, `L`
    /// the mean over eight bands (80-7500 Hz) of the likelihood ratio `g - ln g - 1` of
    /// each band's power over its noise floor `g`.
    #[pyo3(get)]
    scores: Py<PyAny>,
    /// bool per frame: the frame alone is speech (score >= threshold_db and level >=
    /// min_level_dbfs), before hangover and minimum durations.
    #[pyo3(get)]
    is_speech: Py<PyAny>,
    /// bool per frame: inside a speech segment after that frame (causal; see
    /// `EnergyVad` for the confirmation delay).
    #[pyo3(get)]
    in_segment: Py<PyAny>,
}

#[pymethods]
impl PyVadFrames {
    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        self.scores.bind(py).len()
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "VadFrames(first_frame={}, frames={}, events={})",
            self.first_frame,
            self.__len__(py)?,
            self.events.bind(py).len()
        ))
    }
}

/// Streaming energy VAD: per-band likelihood ratio over an adaptive (minimum-statistics)
/// noise floor, with hangover and minimum speech / silence durations, emitting
/// sample-accurate speech events.
///
/// Feed audio in chunks of any size; partial frames are kept, so the events do not depend
/// on the chunking. Timestamps are absolute sample indices on the frame grid: a start is
/// the first sample of the first frame of the run that confirmed speech; an end is one past
/// the last speech frame plus the hangover. Confirmation delay: a start event is emitted
/// `min_speech_ms` (rounded up to frames) after the sample it names; an end event after
/// `hangover_ms + min_silence_ms` of non-speech.
///
/// Args:
///     sample_rate: 8000 or 16000 (Hz).
///     frame_ms: 10, 20 or 30 (ms).
///     threshold_db: a frame is speech when its score (dB, 0 at the noise floor; see
///         `VadFrames.scores`) reaches this; (0, 60].
///     hangover_ms: speech is extended this long after its last speech frame; [0, 10000].
///     min_speech_ms: speech must last this long before it starts (shorter bursts are
///         ignored); [0, 10000], at least one frame.
///     min_silence_ms: a pause must last this long after the hangover to end speech;
///         [0, 10000].
///     noise_window_ms: each band's noise floor is the minimum of its smoothed power over
///         this window; louder noise is learnt within one window; [200, 30000].
///     min_level_dbfs: frames quieter than this RMS level are never speech; [-120, 0].
///     level_gate_db: frames more than this many dB below the recent speech peak level
///         (loudest level inside confirmed speech, decaying 0.5 dB/s) are not speech:
///         rejects background talkers well below the user; [1, 120], None disables it.
///
/// Raises:
///     UnsupportedSampleRateError: for another sample rate.
///     ConfigError: for any other setting out of range (negative durations included).
#[pyclass(name = "EnergyVad", module = "voicecore._core", frozen)]
pub struct PyEnergyVad {
    inner: Mutex<EnergyVad>,
    config: EnergyVadConfig,
}

impl PyEnergyVad {
    fn event(&self, event: SpeechEvent) -> PySpeechEvent {
        PySpeechEvent {
            event,
            sample_rate: self.config.sample_rate,
        }
    }

    fn events_list<'py>(
        &self,
        py: Python<'py>,
        events: Vec<SpeechEvent>,
    ) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, events.into_iter().map(|e| self.event(e)))
    }
}

#[pymethods]
impl PyEnergyVad {
    #[new]
    #[pyo3(signature = (
        sample_rate = 16000,
        frame_ms = 20,
        *,
        threshold_db = 4.0,
        hangover_ms = 150.0,
        min_speech_ms = 90.0,
        min_silence_ms = 200.0,
        noise_window_ms = 3000.0,
        min_level_dbfs = -60.0,
        level_gate_db = Some(20.0),
    ),
    // Spelled out because pyo3 renders the negative default as `...`, which stubtest flags.
    text_signature = "(sample_rate=16000, frame_ms=20, *, threshold_db=4.0, hangover_ms=150.0, \
        min_speech_ms=90.0, min_silence_ms=200.0, noise_window_ms=3000.0, min_level_dbfs=-60.0, \
        level_gate_db=20.0)")]
    #[allow(clippy::too_many_arguments)]
    fn new(
        sample_rate: i64,
        frame_ms: i64,
        threshold_db: f32,
        hangover_ms: f32,
        min_speech_ms: f32,
        min_silence_ms: f32,
        noise_window_ms: f32,
        min_level_dbfs: f32,
        level_gate_db: Option<f32>,
    ) -> PyResult<Self> {
        let config = EnergyVadConfig {
            sample_rate: to_u32("sample_rate", sample_rate, "8000 or 16000 (Hz)")?,
            frame_ms: to_u32("frame_ms", frame_ms, "10, 20 or 30 (ms)")?,
            threshold_db,
            hangover_ms,
            min_speech_ms,
            min_silence_ms,
            noise_window_ms,
            min_level_dbfs,
            level_gate_db,
        };
        let vad = EnergyVad::new(config).map_err(to_py_err)?;
        Ok(Self {
            inner: Mutex::new(vad),
            config,
        })
    }

    /// Sample rate in Hz.
    #[getter]
    fn sample_rate(&self) -> u32 {
        self.config.sample_rate
    }

    /// Frame duration in ms.
    #[getter]
    fn frame_ms(&self) -> u32 {
        self.config.frame_ms
    }

    /// Frame length in samples.
    #[getter]
    fn frame_length(&self) -> usize {
        (self.config.sample_rate / 1000 * self.config.frame_ms) as usize
    }

    /// Speech threshold on the score, in dB.
    #[getter]
    fn threshold_db(&self) -> f32 {
        self.config.threshold_db
    }

    /// Hangover in ms.
    #[getter]
    fn hangover_ms(&self) -> f32 {
        self.config.hangover_ms
    }

    /// Minimum speech duration in ms.
    #[getter]
    fn min_speech_ms(&self) -> f32 {
        self.config.min_speech_ms
    }

    /// Minimum silence duration in ms.
    #[getter]
    fn min_silence_ms(&self) -> f32 {
        self.config.min_silence_ms
    }

    /// Noise-floor window in ms.
    #[getter]
    fn noise_window_ms(&self) -> f32 {
        self.config.noise_window_ms
    }

    /// Absolute level floor in dBFS.
    #[getter]
    fn min_level_dbfs(&self) -> f32 {
        self.config.min_level_dbfs
    }

    /// Level gate in dB below the recent speech peak, or None when off.
    #[getter]
    fn level_gate_db(&self) -> Option<f32> {
        self.config.level_gate_db
    }

    /// Samples received since construction or `reset()` (including a partial frame).
    #[getter]
    fn samples_received(&self, py: Python<'_>) -> u64 {
        detach(py, || lock(&self.inner).samples_received())
    }

    /// One past the last sample of the last frame judged speech on its own (0 before any):
    /// where speech really ended, without the hangover an ``end`` event includes.
    #[getter]
    fn speech_until(&self, py: Python<'_>) -> u64 {
        detach(py, || lock(&self.inner).speech_until())
    }

    /// True while inside a speech segment (confirmed, in hangover or a short pause).
    #[getter]
    fn in_segment(&self, py: Python<'_>) -> bool {
        detach(py, || lock(&self.inner).in_segment())
    }

    /// Feeds a chunk of audio of any length; returns the speech events it completes.
    ///
    /// Args:
    ///     audio: PCM16 bytes/bytearray/memoryview, or a 1-D C-contiguous numpy int16 or
    ///         float32 array (float full scale 1.0), at `sample_rate`.
    ///
    /// Raises:
    ///     AudioFormatError: odd-length PCM16, non-contiguous or multi-dimensional array.
    ///     AudioTypeError: another type or dtype.
    fn process<'py>(
        &self,
        py: Python<'py>,
        audio: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let audio = AudioInput::extract(audio)?;
        let events = detach(py, || {
            let mut vad = lock(&self.inner);
            match audio.samples() {
                Samples::I16(s) => vad.process(s),
                Samples::F32(s) => vad.process(s),
            }
        });
        self.events_list(py, events)
    }

    /// Like `process`, and also returns the score and decisions of every frame the chunk
    /// completes (what ROC curves and plots need).
    ///
    /// Raises:
    ///     AudioFormatError / AudioTypeError: as `process`.
    fn process_frames(&self, py: Python<'_>, audio: &Bound<'_, PyAny>) -> PyResult<PyVadFrames> {
        let audio = AudioInput::extract(audio)?;
        let (events, first_frame, scores, is_speech, in_segment) = detach(py, || {
            let mut vad = lock(&self.inner);
            let first_frame = vad.samples_received() / vad.frame_len() as u64;
            let mut events = Vec::new();
            let mut frames: Vec<FrameDecision> =
                Vec::with_capacity(audio.samples().len() / vad.frame_len() + 1);
            match audio.samples() {
                Samples::I16(s) => vad.process_into(s, &mut events, Some(&mut frames)),
                Samples::F32(s) => vad.process_into(s, &mut events, Some(&mut frames)),
            }
            let scores: Vec<f32> = frames.iter().map(|f| f.score).collect();
            let is_speech: Vec<bool> = frames.iter().map(|f| f.is_speech).collect();
            let in_segment: Vec<bool> = frames.iter().map(|f| f.in_segment).collect();
            (events, first_frame, scores, is_speech, in_segment)
        });
        Ok(PyVadFrames {
            events: self.events_list(py, events)?.unbind(),
            first_frame,
            scores: PyArray1::from_vec(py, scores).into_any().unbind(),
            is_speech: PyArray1::from_vec(py, is_speech).into_any().unbind(),
            in_segment: PyArray1::from_vec(py, in_segment).into_any().unbind(),
        })
    }

    /// Ends an open speech segment at the end of the audio received so far (call at the end
    /// of a stream). Returns its "end" event (after the hangover, never beyond the last
    /// sample received), or None when no segment is open.
    fn flush(&self, py: Python<'_>) -> Option<PySpeechEvent> {
        let event = detach(py, || lock(&self.inner).flush());
        event.map(|e| self.event(e))
    }

    /// Forgets all audio: sample indices restart at 0 and the noise floor is learnt again.
    fn reset(&self, py: Python<'_>) {
        detach(py, || lock(&self.inner).reset());
    }

    fn __repr__(&self) -> String {
        let c = &self.config;
        format!(
            "EnergyVad(sample_rate={}, frame_ms={}, threshold_db={}, hangover_ms={}, \
             min_speech_ms={}, min_silence_ms={}, noise_window_ms={}, min_level_dbfs={}, \
             level_gate_db={})",
            c.sample_rate,
            c.frame_ms,
            c.threshold_db,
            c.hangover_ms,
            c.min_speech_ms,
            c.min_silence_ms,
            c.noise_window_ms,
            c.min_level_dbfs,
            c.level_gate_db
                .map_or_else(|| "None".to_owned(), |gate| gate.to_string())
        )
    }
}
