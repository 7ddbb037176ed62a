//! Band powers of 10 ms blocks, and comfort noise shaped like a band spectrum.
//!
//! Both sides of the gate (the mic and the agent's audio) go through the same analysis, so
//! that a band's echo is compared with the same band of its source: a 20 ms Hann window over
//! the current block and the one before it (hop 10 ms), a 512-point FFT (31.25 Hz bins), and
//! [`N_BANDS`] bands from 125 Hz to 7.8 kHz.
//!
//! Why these bands: two voices talking at once rarely have their energy in the same narrow
//! bands in the same 10 ms (different pitch harmonics, different formants), so the finer the
//! bands, the more often the user's voice stands out of the echo somewhere. But a band of one
//! or two bins is dominated by single harmonics moving in and out of it, and its echo level
//! scatters too much to predict (measured: bands of 1-2 bins below 300 Hz made the gate
//! misjudge echo as the user). So each band is at least 3 bins (94 Hz) wide, and 12 % of its
//! frequency wide above 800 Hz, roughly the ear's critical bands. Below 125 Hz there is
//! little speech and much hum and handling noise; above 7.8 kHz the mic's resampling
//! filter (16 kHz) leaves nothing reliable.

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};

/// Samples in one 10 ms block at 16 kHz.
pub(crate) const BLOCK_LEN: usize = 160;
/// The analysis window: the current block and the one before it.
const WINDOW_LEN: usize = 2 * BLOCK_LEN;
/// FFT length (the window zero-padded): 31.25 Hz bins.
const FFT_LEN: usize = 512;

/// Number of bands.
pub(crate) const N_BANDS: usize = 28;

/// Band `b` covers FFT bins `BAND_EDGES[b]..BAND_EDGES[b + 1]` (bin `k` is `k * 31.25` Hz):
/// from bin 4 (125 Hz), each band `max(3, 12 %)` of its lower edge wide, the last one
/// stretched to bin 250 (7.8 kHz). `band_edges_follow_the_rule` checks the table.
const BAND_EDGES: [usize; N_BANDS + 1] = [
    4, 7, 10, 13, 16, 19, 22, 25, 28, 31, 35, 39, 44, 49, 55, 62, 69, 77, 86, 96, 108, 121, 136,
    152, 170, 190, 213, 239, 250,
];

/// Power of each band, in mean square (full scale 1.0): the bands of a block of white noise
/// sum to about its mean square.
pub(crate) type BandPowers = [f32; N_BANDS];

/// Computes the band powers of 10 ms blocks (the same analysis for the mic and the far end).
pub(crate) struct BandAnalyser {
    fft: Arc<dyn RealToComplex<f32>>,
    window: Vec<f32>,
    input: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
    /// Turns `|X_k|^2` into the bin's share of the mean square (one-sided spectrum).
    power_scale: f32,
}

impl std::fmt::Debug for BandAnalyser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BandAnalyser").finish_non_exhaustive()
    }
}

impl BandAnalyser {
    pub(crate) fn new() -> Self {
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(FFT_LEN);
        // Periodic Hann over 20 ms: with a 10 ms hop, every sample weighs the same in total.
        let window: Vec<f32> = (0..WINDOW_LEN)
            .map(|n| {
                let phase = std::f64::consts::TAU * n as f64 / WINDOW_LEN as f64;
                (0.5 - 0.5 * phase.cos()) as f32
            })
            .collect();
        let window_energy: f32 = window.iter().map(|w| w * w).sum();
        Self {
            input: fft.make_input_vec(),
            spectrum: fft.make_output_vec(),
            scratch: fft.make_scratch_vec(),
            fft,
            window,
            power_scale: 2.0 / (FFT_LEN as f32 * window_energy),
        }
    }

    /// The band powers of the 20 ms made of `previous` and `current` (10 ms each).
    pub(crate) fn analyse(
        &mut self,
        previous: &[f32; BLOCK_LEN],
        current: &[f32; BLOCK_LEN],
        out: &mut BandPowers,
    ) {
        let samples = previous.iter().chain(current);
        for ((slot, &sample), &w) in self.input.iter_mut().zip(samples).zip(&self.window) {
            *slot = sample * w;
        }
        // realfft uses its input as scratch: the zero padding is restored every block.
        self.input[WINDOW_LEN..].fill(0.0);
        // realfft fails only on buffer lengths other than its plan's; ours come from the plan.
        let transformed =
            self.fft
                .process_with_scratch(&mut self.input, &mut self.spectrum, &mut self.scratch);
        debug_assert!(transformed.is_ok(), "{transformed:?}");
        for (band, power) in out.iter_mut().enumerate() {
            let bins = &self.spectrum[BAND_EDGES[band]..BAND_EDGES[band + 1]];
            *power = bins.iter().map(|c| c.norm_sqr()).sum::<f32>() * self.power_scale;
        }
    }
}

/// Noise with a given band spectrum, 10 ms at a time, continuous across blocks.
///
/// Each block is the overlap-add of 20 ms frames of random-phase noise under a sine
/// (square-root Hann) window: the squared windows of overlapping frames sum to one, so the
/// noise's power is steady, with no frame-rate flutter a VAD could take for syllables.
pub(crate) struct ComfortNoise {
    ifft: Arc<dyn ComplexToReal<f32>>,
    spectrum: Vec<Complex<f32>>,
    frame: Vec<f32>,
    scratch: Vec<Complex<f32>>,
    window: Vec<f32>,
    /// The second half of the last frame, to add to the next block.
    tail: [f32; BLOCK_LEN],
    /// xorshift64* state (never 0).
    state: u64,
}

impl std::fmt::Debug for ComfortNoise {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComfortNoise").finish_non_exhaustive()
    }
}

impl ComfortNoise {
    pub(crate) fn new() -> Self {
        let ifft = RealFftPlanner::<f32>::new().plan_fft_inverse(FFT_LEN);
        let window = (0..WINDOW_LEN)
            .map(|n| (std::f64::consts::PI * n as f64 / WINDOW_LEN as f64).sin() as f32)
            .collect();
        Self {
            spectrum: ifft.make_input_vec(),
            frame: ifft.make_output_vec(),
            scratch: ifft.make_scratch_vec(),
            ifft,
            window,
            tail: [0.0; BLOCK_LEN],
            state: 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// Forgets the last frame: the next block starts a new stretch of noise (fading in over
    /// its first half window).
    pub(crate) fn restart(&mut self) {
        self.tail = [0.0; BLOCK_LEN];
    }

    /// A uniform random number in [-1, 1) (xorshift64*: plenty for noise, no dependency).
    fn uniform(&mut self) -> f32 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let bits = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
        bits as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// The next 10 ms of noise whose band powers (as [`BandAnalyser`] measures them) are
    /// `level`.
    pub(crate) fn next_block(&mut self, level: &BandPowers, out: &mut [f32; BLOCK_LEN]) {
        self.spectrum.fill(Complex::new(0.0, 0.0));
        for (band, &power) in level.iter().enumerate() {
            let (first, end) = (BAND_EDGES[band], BAND_EDGES[band + 1]);
            // A bin of an unnormalised inverse FFT adds `2 |X|^2` to the frame's mean square
            // (its mirror image counts too); each component uniform in [-1, 1) has mean square
            // 1/3, so `|X|^2` averages `2/3 * amplitude^2`: amplitude^2 = 3/4 of the bin's
            // power gives the bin its share.
            let amplitude = (0.75 * power.max(0.0) / (end - first) as f32).sqrt();
            for bin in first..end {
                let (re, im) = (self.uniform(), self.uniform());
                self.spectrum[bin] = Complex::new(re * amplitude, im * amplitude);
            }
        }
        // The DC and Nyquist bins are outside every band, so zero, as realfft requires.
        let transformed =
            self.ifft
                .process_with_scratch(&mut self.spectrum, &mut self.frame, &mut self.scratch);
        debug_assert!(transformed.is_ok(), "{transformed:?}");
        for (n, sample) in out.iter_mut().enumerate() {
            *sample = self.tail[n] + self.frame[n] * self.window[n];
        }
        for (n, slot) in self.tail.iter_mut().enumerate() {
            *slot = self.frame[BLOCK_LEN + n] * self.window[BLOCK_LEN + n];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn band_edges_follow_the_rule() {
        let mut low = 4;
        for (band, pair) in BAND_EDGES.windows(2).enumerate() {
            assert_eq!(pair[0], low);
            let rule = (low + 3).max((low as f64 * 1.12).round() as usize);
            if band + 1 < N_BANDS {
                assert_eq!(pair[1], rule, "band {band}");
            } else {
                assert_eq!(pair[1], 250);
            }
            low = pair[1];
        }
    }

    fn white_noise(n: usize, rms: f32, seed: u64) -> Vec<f32> {
        let mut noise = ComfortNoise::new();
        noise.state = seed;
        // Sum of 4 uniforms: close enough to Gaussian for a level test.
        (0..n)
            .map(|_| (0..4).map(|_| noise.uniform()).sum::<f32>() * rms * (3.0f32 / 4.0).sqrt())
            .collect()
    }

    fn mean_bands(samples: &[f32]) -> BandPowers {
        let mut analyser = BandAnalyser::new();
        let mut total = [0.0f32; N_BANDS];
        let mut bands = [0.0f32; N_BANDS];
        let blocks: Vec<[f32; BLOCK_LEN]> = samples
            .chunks_exact(BLOCK_LEN)
            .map(|c| c.try_into().unwrap())
            .collect();
        for pair in blocks.windows(2) {
            analyser.analyse(&pair[0], &pair[1], &mut bands);
            for (t, b) in total.iter_mut().zip(&bands) {
                *t += b / (blocks.len() - 1) as f32;
            }
        }
        total
    }

    #[test]
    fn white_noise_bands_add_up_to_its_in_band_share() {
        // 125-7812 Hz is 96 % of the 0-8000 Hz band of white noise.
        let noise = white_noise(16000 * 4, 0.01, 7);
        let total: f32 = mean_bands(&noise).iter().sum();
        let share = total / 1e-4;
        assert!((share - 0.961).abs() < 0.05, "{share}");
    }

    #[test]
    fn comfort_noise_has_the_band_powers_it_was_asked_for() {
        // A tilted spectrum: -40 dB at 125 Hz falling to -70 dB at 7.8 kHz.
        let level: BandPowers =
            std::array::from_fn(|b| 10f32.powf((-40.0 - 30.0 * b as f32 / N_BANDS as f32) / 10.0));
        let mut noise = ComfortNoise::new();
        let mut block = [0.0; BLOCK_LEN];
        let mut samples = Vec::new();
        for _ in 0..400 {
            noise.next_block(&level, &mut block);
            samples.extend_from_slice(&block);
        }
        let measured = mean_bands(&samples[BLOCK_LEN..]);
        for (band, (m, l)) in measured.iter().zip(&level).enumerate() {
            let error_db = 10.0 * (m / l).log10();
            assert!(error_db.abs() < 1.0, "band {band}: {error_db} dB");
        }
    }
}
