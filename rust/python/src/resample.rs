//! Python bindings of `voicecore_core::resample`.

use std::sync::{Mutex, MutexGuard, PoisonError};

use pyo3::prelude::*;
use voicecore_core::resample::{Resampler, SUPPORTED_RATES};

use crate::audio::{self, AudioInput, AudioKind, Samples};
use crate::errors::{to_py_err, ConfigError, UnsupportedSampleRateError};

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyResampler>()?;
    Ok(())
}

/// Output of one call, in the sample type the caller will get back.
enum Resampled {
    Pcm16(Vec<i16>),
    Float32(Vec<f32>),
}

impl Resampled {
    fn into_py(self, py: Python<'_>, kind: AudioKind) -> PyResult<Bound<'_, PyAny>> {
        match self {
            Resampled::Pcm16(samples) => audio::i16_output(py, kind, samples),
            Resampled::Float32(samples) => Ok(audio::f32_output(py, samples)),
        }
    }
}

/// The resampler and the type of the audio it last processed (what `flush` returns).
struct Stream {
    resampler: Resampler,
    kind: AudioKind,
}

/// Streaming resampler between two sample rates (mono), by an exact rational ratio.
///
/// Any pair of 8000, 11025, 16000, 22050, 24000, 32000, 44100 and 48000 Hz works, as do
/// most other integer rates from 1000 to 384000 Hz. The output does not depend on how the
/// input is chunked: a signal fed at once, in 20 ms chunks or in random-sized chunks gives
/// the same samples.
///
/// Timing: after ``n`` input samples in total, ``ceil(n * out_rate / in_rate)`` output
/// samples have come out (so 20 ms in gives 20 ms out at every common rate but 11025 Hz,
/// where 20 ms is not a whole number of samples). The output lags the input by ``latency``
/// output samples (the filter's look-ahead; 23 samples = 1.4 ms at 48k->16k, 48 samples =
/// 1 ms at 24k->48k): drop the first ``latency`` samples of a stream to align it with the
/// input, and call ``flush()`` at the end to get its last ``latency`` samples.
///
/// Quality: passband to 0.85 of the lower Nyquist frequency, 105 dB Kaiser design; a
/// 1 kHz sine keeps >= 109 dB SNR for every pair of the rates above.
///
/// Audio in and out: PCM16 bytes in -> PCM16 bytes out, int16 array -> int16 array
/// (rounded, saturated), float32 array -> float32 array. Every call releases the GIL.
/// The object is thread-safe (calls are serialised), but one stream should be fed from
/// one place in order.
///
/// Args:
///     in_rate: input sample rate in Hz.
///     out_rate: output sample rate in Hz.
///
/// Raises:
///     UnsupportedSampleRateError: a rate out of range or a pair whose ratio is too complex;
///         the message lists what is accepted.
#[pyclass(module = "voicecore._core", name = "Resampler", frozen)]
pub struct PyResampler {
    stream: Mutex<Stream>,
    /// Input sample rate in Hz.
    #[pyo3(get)]
    in_rate: u32,
    /// Output sample rate in Hz.
    #[pyo3(get)]
    out_rate: u32,
    /// Delay of the output behind the input, in output samples (the filter's look-ahead);
    /// also the number of samples ``flush()`` returns.
    #[pyo3(get)]
    latency: usize,
    ratio: (usize, usize),
    taps: usize,
}

impl PyResampler {
    fn lock(&self) -> MutexGuard<'_, Stream> {
        // No code path panics while holding the lock, so a poisoned lock still holds a
        // consistent resampler.
        self.stream.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn rate(value: i64) -> PyResult<u32> {
    u32::try_from(value).map_err(|_| {
        UnsupportedSampleRateError::new_err(format!(
            "sample rate {value} Hz is not supported; use {SUPPORTED_RATES}"
        ))
    })
}

#[pymethods]
impl PyResampler {
    #[new]
    fn new(py: Python<'_>, in_rate: i64, out_rate: i64) -> PyResult<Self> {
        let (in_rate, out_rate) = (rate(in_rate)?, rate(out_rate)?);
        // Designing the filter takes up to a few milliseconds for complex ratios.
        let resampler =
            audio::detach(py, || Resampler::new(in_rate, out_rate)).map_err(to_py_err)?;
        Ok(Self {
            latency: resampler.latency(),
            ratio: resampler.ratio(),
            taps: resampler.taps_per_output(),
            stream: Mutex::new(Stream {
                resampler,
                kind: AudioKind::Float32,
            }),
            in_rate,
            out_rate,
        })
    }

    /// Number of output samples ``process`` will return for ``input_len`` more input
    /// samples, in the current state (exact).
    ///
    /// Raises:
    ///     ConfigError: ``input_len`` is negative.
    fn output_len(&self, py: Python<'_>, input_len: i64) -> PyResult<usize> {
        let input_len = usize::try_from(input_len).map_err(|_| {
            ConfigError::new_err(format!(
                "input_len = {input_len} is invalid; expected a number of samples >= 0"
            ))
        })?;
        // The lock may be held by a long `process` in another thread: wait without the GIL.
        Ok(audio::detach(py, || {
            self.lock().resampler.output_len(input_len)
        }))
    }

    /// Resamples a chunk of audio; returns the output samples now due, in the input's type.
    ///
    /// Args:
    ///     audio: PCM16 bytes/bytearray/memoryview, or a 1-D C-contiguous numpy int16 or
    ///         float32 array (read in place, not copied).
    ///
    /// Raises:
    ///     AudioTypeError: an unsupported type or dtype.
    ///     AudioFormatError: odd PCM16 byte length, a non-contiguous or 2-D array.
    fn process<'py>(&self, audio: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let py = audio.py();
        let input = AudioInput::extract(audio)?;
        let kind = input.kind();
        let output = audio::detach(py, || {
            let mut stream = self.lock();
            stream.kind = kind;
            let resampler = &mut stream.resampler;
            match input.samples() {
                Samples::I16(samples) => Resampled::Pcm16(resampler.process(samples)),
                Samples::F32(samples) => Resampled::Float32(resampler.process(samples)),
            }
        });
        output.into_py(py, kind)
    }

    /// Ends the stream: returns its last ``latency`` output samples (the input padded with
    /// zeros) and resets the resampler, ready for a new stream.
    ///
    /// The samples come in the type of the last ``process`` input (a float32 array if
    /// there was none).
    fn flush<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let (kind, output) = audio::detach(py, || {
            let mut stream = self.lock();
            let kind = stream.kind;
            let output = match kind {
                AudioKind::Pcm16Bytes | AudioKind::Int16 => {
                    Resampled::Pcm16(stream.resampler.flush())
                }
                AudioKind::Float32 => Resampled::Float32(stream.resampler.flush()),
            };
            (kind, output)
        });
        output.into_py(py, kind)
    }

    /// Forgets the current stream without returning anything: the next input starts a new
    /// stream, exactly as on a new resampler.
    fn reset(&self, py: Python<'_>) {
        audio::detach(py, || self.lock().resampler.reset());
    }

    fn __repr__(&self) -> String {
        let (up, down) = self.ratio;
        format!(
            "Resampler(in_rate={}, out_rate={}, ratio={up}/{down}, taps={}, latency={})",
            self.in_rate, self.out_rate, self.taps, self.latency
        )
    }
}
