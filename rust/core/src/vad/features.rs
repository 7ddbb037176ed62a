//! Per-frame features: level, zero-crossing rate, spectral shape and log-mel energies.

use std::f64::consts::LN_2;
use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

use super::mel::MelFilterbank;
use super::{frame_length, Sample};
use crate::error::VadError;

/// The level reported for digital silence, in dBFS: the floor under every level and band
/// energy so that silence gives finite numbers instead of `-inf`.
pub const SILENCE_DBFS: f32 = -120.0;

/// [`SILENCE_DBFS`] as a mean-square power (full scale = 1.0).
const POWER_FLOOR: f32 = 1e-12;

/// Floor of a single spectrum bin inside the flatness geometric mean (keeps `ln` finite).
const BIN_FLOOR: f32 = 1e-20;

/// The telephone speech band whose share of the energy is reported, in Hz.
pub(crate) const SPEECH_BAND_HZ: (f32, f32) = (300.0, 3400.0);

/// Largest number of mel bands accepted (more is finer than any 30 ms spectrum resolves).
pub const MAX_MELS: usize = 128;

/// How to cut and describe frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureConfig {
    /// Sample rate in Hz: 8000 or 16000.
    pub sample_rate: u32,
    /// Frame duration in ms: 10, 20 or 30.
    pub frame_ms: u32,
    /// Number of log-mel bands, 0..=128; 0 skips the mel computation.
    pub n_mels: usize,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        Self {
            sample_rate: 16000,
            frame_ms: 20,
            n_mels: 40,
        }
    }
}

/// The features of one frame.
///
/// Spectral features are computed on the Hann-windowed frame and ignore the DC bin, so a DC
/// offset in the input does not count as energy. A frame whose spectral power is below
/// [`SILENCE_DBFS`] (digital silence) reports flatness 1.0 (no structure), centroid 0 Hz and
/// speech-band ratio 0.0.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// RMS level of the frame in dB relative to full scale (a full-scale square wave is
    /// 0 dBFS, a full-scale sine -3.01 dBFS), floored at [`SILENCE_DBFS`].
    pub rms_dbfs: f32,
    /// Fraction of adjacent sample pairs whose sign differs, in [0, 1]; a tone of `f` Hz
    /// gives about `2 f / sample_rate`.
    pub zero_crossing_rate: f32,
    /// Geometric over arithmetic mean of the power spectrum, in [0, 1]: near 1 for white
    /// noise, near 0 for a tone.
    pub spectral_flatness: f32,
    /// Power-weighted mean frequency of the spectrum, in Hz.
    pub spectral_centroid_hz: f32,
    /// Share of the spectral power between 300 and 3400 Hz, in [0, 1].
    pub speech_band_ratio: f32,
    /// Natural log of each mel band's energy (power spectrum scaled so that its bins sum to
    /// about the frame's mean square, full scale = 1.0), floored at `ln(1e-12)` (-120 dB).
    pub log_mel: Vec<f32>,
}

impl Features {
    /// Features with room for `n_mels` bands, to be filled by [`FeatureExtractor::compute`].
    pub fn with_mels(n_mels: usize) -> Self {
        Self {
            rms_dbfs: SILENCE_DBFS,
            zero_crossing_rate: 0.0,
            spectral_flatness: 1.0,
            spectral_centroid_hz: 0.0,
            speech_band_ratio: 0.0,
            log_mel: vec![POWER_FLOOR.ln(); n_mels],
        }
    }
}

/// Computes [`Features`] frame by frame, with every buffer allocated up front.
///
/// The FFT is a real-input FFT of the frame zero-padded to the next power of two (256 points
/// for 10 ms at 16 kHz, 512 for 20 and 30 ms), planned once.
pub struct FeatureExtractor {
    config: FeatureConfig,
    frame_len: usize,
    fft: Arc<dyn RealToComplex<f32>>,
    window: Vec<f32>,
    /// Scale turning |X_k|^2 into power whose bins sum to about the frame's mean square.
    power_scale: f32,
    fft_input: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
    power: Vec<f32>,
    bin_hz: f32,
    /// Centre frequency of each bin in Hz (for the centroid).
    bin_freqs: Vec<f32>,
    speech_bins: std::ops::RangeInclusive<usize>,
    mel: MelFilterbank,
}

impl std::fmt::Debug for FeatureExtractor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeatureExtractor")
            .field("config", &self.config)
            .field("frame_len", &self.frame_len)
            .field("fft_len", &self.fft.len())
            .finish_non_exhaustive()
    }
}

impl FeatureExtractor {
    /// Plans the FFT and builds the window and mel filterbank for `config`.
    ///
    /// Errors: [`VadError::UnsupportedRate`] for a rate other than 8000/16000 Hz,
    /// [`VadError::UnsupportedFrameDuration`] for a frame duration other than 10/20/30 ms,
    /// [`VadError::TooManyMelBands`] or [`VadError::MelBandsTooNarrow`] for a mel band count
    /// out of range.
    pub fn new(config: FeatureConfig) -> Result<Self, VadError> {
        let frame_len = frame_length(config.sample_rate, config.frame_ms)?;
        if config.n_mels > MAX_MELS {
            return Err(VadError::TooManyMelBands {
                n_mels: config.n_mels,
            });
        }
        let fft_len = frame_len.next_power_of_two();
        let n_bins = fft_len / 2 + 1;
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(fft_len);
        // Periodic Hann: the standard analysis window for frame-wise spectra.
        let window: Vec<f32> = (0..frame_len)
            .map(|n| {
                let phase = std::f64::consts::TAU * n as f64 / frame_len as f64;
                (0.5 - 0.5 * phase.cos()) as f32
            })
            .collect();
        let window_energy: f32 = window.iter().map(|w| w * w).sum();
        let bin_hz = config.sample_rate as f32 / fft_len as f32;
        let speech_bins = (SPEECH_BAND_HZ.0 / bin_hz).ceil() as usize
            ..=((SPEECH_BAND_HZ.1 / bin_hz).floor() as usize).min(n_bins - 1);
        let mel = MelFilterbank::new(config.n_mels, n_bins, config.sample_rate)?;
        Ok(Self {
            config,
            frame_len,
            spectrum: fft.make_output_vec(),
            scratch: fft.make_scratch_vec(),
            fft_input: fft.make_input_vec(),
            fft,
            window,
            // One-sided spectrum: each bin but DC/Nyquist stands for two of the full FFT.
            power_scale: 2.0 / (fft_len as f32 * window_energy),
            power: vec![0.0; n_bins],
            bin_hz,
            bin_freqs: (0..n_bins).map(|k| k as f32 * bin_hz).collect(),
            speech_bins,
            mel,
        })
    }

    /// The configuration this extractor was built with.
    pub fn config(&self) -> FeatureConfig {
        self.config
    }

    /// Frame length in samples.
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// Width of one spectrum bin in Hz.
    pub fn bin_hz(&self) -> f32 {
        self.bin_hz
    }

    /// The one-sided power spectrum of the last frame computed (`fft_len / 2 + 1` bins,
    /// bin `k` at `k * bin_hz()` Hz, scaled so the bins sum to about the mean square).
    pub fn power_spectrum(&self) -> &[f32] {
        &self.power
    }

    /// A [`Features`] value sized for this extractor, to reuse across frames.
    pub fn new_features(&self) -> Features {
        Features::with_mels(self.config.n_mels)
    }

    /// Computes the features of one frame of exactly [`frame_len`](Self::frame_len) samples
    /// into `out`, allocating nothing (beyond sizing `out.log_mel` once if it has the wrong
    /// length).
    ///
    /// Errors: [`VadError::WrongFrameLength`] if the frame has the wrong length.
    pub fn compute<S: Sample>(&mut self, frame: &[S], out: &mut Features) -> Result<(), VadError> {
        if frame.len() != self.frame_len {
            return Err(VadError::WrongFrameLength {
                len: frame.len(),
                expected: self.frame_len,
                frame_ms: self.config.frame_ms,
                sample_rate: self.config.sample_rate,
            });
        }
        out.log_mel.resize(self.config.n_mels, 0.0);
        self.analyse(frame, out);
        Ok(())
    }

    /// [`compute`](Self::compute) for a frame whose length the caller has checked.
    pub(crate) fn analyse<S: Sample>(&mut self, frame: &[S], out: &mut Features) {
        debug_assert_eq!(frame.len(), self.frame_len);
        debug_assert_eq!(out.log_mel.len(), self.config.n_mels);
        // Time domain: level and zero crossings on the plain frame, then the window in place.
        let samples = &mut self.fft_input[..self.frame_len];
        for (slot, &sample) in samples.iter_mut().zip(frame) {
            *slot = sample.to_unit();
        }
        let mean_square = dot(samples, samples) / self.frame_len as f32;
        out.rms_dbfs = 10.0 * mean_square.max(POWER_FLOOR).log10();
        let crossings: u32 = samples
            .iter()
            .zip(&samples[1..])
            .map(|(a, b)| u32::from((*a < 0.0) != (*b < 0.0)))
            .sum();
        out.zero_crossing_rate = crossings as f32 / (self.frame_len - 1) as f32;
        for (x, w) in samples.iter_mut().zip(&self.window) {
            *x *= w;
        }

        // Frequency domain. realfft uses its input buffer as scratch, so the zero padding
        // beyond `frame_len` must be restored every frame.
        self.fft_input[self.frame_len..].fill(0.0);
        // realfft fails only on buffer lengths that differ from its plan; ours come from the
        // plan's own `make_*_vec` and are never resized.
        let transformed = self.fft.process_with_scratch(
            &mut self.fft_input,
            &mut self.spectrum,
            &mut self.scratch,
        );
        debug_assert!(transformed.is_ok(), "{transformed:?}");
        for (p, c) in self.power.iter_mut().zip(&self.spectrum) {
            *p = c.norm_sqr() * self.power_scale;
        }

        let spectral = &self.power[1..];
        let total = sum(spectral);
        if total < POWER_FLOOR {
            out.spectral_flatness = 1.0;
            out.spectral_centroid_hz = 0.0;
            out.speech_band_ratio = 0.0;
        } else {
            out.spectral_centroid_hz = dot(spectral, &self.bin_freqs[1..]) / total;
            let speech = sum(&self.power[self.speech_bins.clone()]);
            out.speech_band_ratio = (speech / total).min(1.0);
            let n = spectral.len() as f64;
            let log_geometric_mean = ln_sum(spectral, BIN_FLOOR) / n;
            let arithmetic_mean = f64::from(total) / n;
            out.spectral_flatness =
                ((log_geometric_mean.exp() / arithmetic_mean) as f32).clamp(0.0, 1.0);
        }
        self.mel
            .apply_log(&self.power, POWER_FLOOR, &mut out.log_mel);
    }
}

/// Lanes of the reductions below. A single running float sum is a serial chain the compiler
/// may not reorder; independent lanes let it vectorise (about 4x faster on a frame).
const LANES: usize = 8;

/// Sum of `values`, in `LANES` independent partial sums.
fn sum(values: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane += v;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Dot product of two equally long slices, in `LANES` independent partial sums.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (ca, cb) in a_chunks.zip(b_chunks) {
        for ((lane, x), y) in lanes.iter_mut().zip(ca).zip(cb) {
            *lane += x * y;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `sum(ln(max(v, floor)))` with a handful of logarithms instead of one per value (a log
/// per bin would cost more than the FFT itself): multiplies in f64, in `LANES` independent
/// products, and moves each product's binary exponent out into an integer every `LANES`
/// factors, before the product can leave the normal range.
fn ln_sum(values: &[f32], floor: f32) -> f64 {
    const EXPONENT_MASK: u64 = 0x7ff << 52;
    const EXPONENT_BIAS: i64 = 1023;
    let mut mantissas = [1.0f64; LANES];
    let mut exponent = 0i64;
    let mut renormalise = |mantissas: &mut [f64; LANES]| {
        for m in mantissas.iter_mut() {
            // At most LANES factors in [1e-20, ~1] times a mantissa in [1, 2): within
            // [1e-160, 2e8], normal f64, so the exponent field is the true binary exponent.
            let bits = m.to_bits();
            exponent += ((bits & EXPONENT_MASK) >> 52) as i64 - EXPONENT_BIAS;
            *m = f64::from_bits((bits & !EXPONENT_MASK) | ((EXPONENT_BIAS as u64) << 52));
        }
    };
    let blocks = values.chunks_exact(LANES * LANES);
    let tail = blocks.remainder();
    for block in blocks {
        for chunk in block.chunks_exact(LANES) {
            for (m, &v) in mantissas.iter_mut().zip(chunk) {
                *m *= f64::from(v.max(floor));
            }
        }
        renormalise(&mut mantissas);
    }
    for chunk in tail.chunks(LANES) {
        for (m, &v) in mantissas.iter_mut().zip(chunk) {
            *m *= f64::from(v.max(floor));
        }
    }
    renormalise(&mut mantissas);
    mantissas.iter().map(|m| m.ln()).sum::<f64>() + exponent as f64 * LN_2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(hz: f32, amplitude: f32, len: usize, rate: u32) -> Vec<f32> {
        (0..len)
            .map(|n| amplitude * (std::f32::consts::TAU * hz * n as f32 / rate as f32).sin())
            .collect()
    }

    /// Deterministic white noise (xorshift), uniform in [-amplitude, amplitude].
    fn noise(len: usize, amplitude: f32, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                amplitude * ((state >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
            })
            .collect()
    }

    fn features_of(samples: &[f32], frame_ms: u32) -> Features {
        let mut extractor = FeatureExtractor::new(FeatureConfig {
            frame_ms,
            ..FeatureConfig::default()
        })
        .unwrap();
        let mut out = extractor.new_features();
        extractor.compute(samples, &mut out).unwrap();
        out
    }

    #[test]
    fn ln_sum_matches_the_naive_sum() {
        let values: Vec<f32> = (1..300)
            .map(|i| (i as f32 * 0.37).sin().abs() * 1e-3)
            .collect();
        let naive: f64 = values.iter().map(|&v| f64::from(v.max(1e-20)).ln()).sum();
        assert!((ln_sum(&values, 1e-20) - naive).abs() < 1e-6 * naive.abs());
    }

    #[test]
    fn full_scale_sine_level_and_tone_features() {
        let f = features_of(&tone(1000.0, 1.0, 480, 16000), 30);
        assert!((f.rms_dbfs + 3.0103).abs() < 0.01, "{}", f.rms_dbfs);
        assert!((f.zero_crossing_rate - 0.125).abs() < 0.01);
        assert!((f.spectral_centroid_hz - 1000.0).abs() < 60.0);
        assert!(f.spectral_flatness < 0.05);
        assert!(f.speech_band_ratio > 0.99);
    }

    #[test]
    fn white_noise_is_flat_and_high_tone_is_outside_the_speech_band() {
        let n = features_of(&noise(480, 0.5, 7), 30);
        assert!(n.spectral_flatness > 0.4, "{}", n.spectral_flatness);
        let high = features_of(&tone(5000.0, 0.5, 320, 16000), 20);
        assert!(high.speech_band_ratio < 0.01);
        assert!((high.spectral_centroid_hz - 5000.0).abs() < 100.0);
    }

    #[test]
    fn silence_gives_finite_floor_values() {
        let f = features_of(&[0.0f32; 160], 10);
        assert_eq!(f.rms_dbfs, SILENCE_DBFS);
        assert_eq!(f.zero_crossing_rate, 0.0);
        assert_eq!(f.spectral_flatness, 1.0);
        assert_eq!(f.spectral_centroid_hz, 0.0);
        assert_eq!(f.speech_band_ratio, 0.0);
        assert!(f
            .log_mel
            .iter()
            .all(|v| (*v - POWER_FLOOR.ln()).abs() < 1e-3));
    }

    #[test]
    fn pcm16_and_float_input_agree() {
        let float = tone(440.0, 0.5, 320, 16000);
        let pcm: Vec<i16> = float.iter().map(|x| (x * 32768.0).round() as i16).collect();
        let a = features_of(&float, 20);
        let mut extractor = FeatureExtractor::new(FeatureConfig::default()).unwrap();
        let mut b = extractor.new_features();
        extractor.compute(&pcm, &mut b).unwrap();
        assert!((a.rms_dbfs - b.rms_dbfs).abs() < 1e-3);
        assert!((a.spectral_centroid_hz - b.spectral_centroid_hz).abs() < 1.0);
    }

    #[test]
    fn mel_energy_peaks_in_the_band_of_the_tone() {
        let f = features_of(&tone(2000.0, 0.5, 320, 16000), 20);
        let peak = (0..f.log_mel.len())
            .max_by(|&a, &b| f.log_mel[a].total_cmp(&f.log_mel[b]))
            .unwrap();
        // 2 kHz is 1521 mel; bands are centred every (2840 - 32) / 41 = 68.5 mel from 32 mel
        // (20 Hz), so the tone sits between the centres of bands 20 and 21 (0-based).
        assert!((20..=21).contains(&peak), "{peak}");
    }

    #[test]
    fn wrong_frame_length_and_bad_config_are_errors() {
        let mut extractor = FeatureExtractor::new(FeatureConfig::default()).unwrap();
        let mut out = extractor.new_features();
        assert!(matches!(
            extractor.compute(&[0i16; 319], &mut out),
            Err(VadError::WrongFrameLength {
                len: 319,
                expected: 320,
                ..
            })
        ));
        assert!(FeatureExtractor::new(FeatureConfig {
            n_mels: 129,
            ..FeatureConfig::default()
        })
        .is_err());
        assert!(FeatureExtractor::new(FeatureConfig {
            sample_rate: 48000,
            ..FeatureConfig::default()
        })
        .is_err());
    }

    #[test]
    fn eight_khz_is_supported() {
        let mut extractor = FeatureExtractor::new(FeatureConfig {
            sample_rate: 8000,
            frame_ms: 30,
            n_mels: 24,
        })
        .unwrap();
        let mut out = extractor.new_features();
        extractor
            .compute(&tone(1000.0, 0.5, 240, 8000), &mut out)
            .unwrap();
        assert!((out.spectral_centroid_hz - 1000.0).abs() < 80.0);
    }
}
