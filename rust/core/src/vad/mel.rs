//! A triangular mel filterbank over a one-sided power spectrum, built once and applied
//! without allocating.

use crate::error::VadError;

/// Lowest edge of the filterbank in Hz; below it there is only hum and DC (Kaldi's default).
const LOW_EDGE_HZ: f32 = 20.0;

/// HTK mel scale: linear below ~1 kHz, logarithmic above.
fn hz_to_mel(hz: f32) -> f32 {
    1127.0 * (1.0 + hz / 700.0).ln()
}

fn mel_to_hz(mel: f32) -> f32 {
    700.0 * ((mel / 1127.0).exp() - 1.0)
}

/// One triangle: the first FFT bin it covers and where its weights sit in the shared array.
#[derive(Debug, Clone)]
struct Band {
    first_bin: usize,
    weights: std::ops::Range<usize>,
}

/// `n_mels` triangular filters equally spaced on the mel scale from 20 Hz to Nyquist.
///
/// Each band stores only its non-zero weights (a triangle covers a handful of bins), so
/// applying the bank costs about two multiply-adds per spectrum bin whatever `n_mels` is.
#[derive(Debug, Clone)]
pub(crate) struct MelFilterbank {
    bands: Vec<Band>,
    weights: Vec<f32>,
}

impl MelFilterbank {
    /// Builds the bank for a power spectrum of `n_bins` bins (`fft_len / 2 + 1`) at
    /// `sample_rate`. Refuses a bank in which some band would cover no bin at all: its energy
    /// would always be zero, which is a configuration mistake rather than a feature.
    pub(crate) fn new(n_mels: usize, n_bins: usize, sample_rate: u32) -> Result<Self, VadError> {
        let nyquist = sample_rate as f32 / 2.0;
        let bin_hz = nyquist / (n_bins - 1) as f32;
        let low = hz_to_mel(LOW_EDGE_HZ);
        let high = hz_to_mel(nyquist);
        let step = (high - low) / (n_mels + 1) as f32;
        let edge_hz = |i: usize| mel_to_hz(low + step * i as f32);
        let mut bands = Vec::with_capacity(n_mels);
        let mut weights = Vec::new();
        for band in 0..n_mels {
            let (left, centre, right) = (edge_hz(band), edge_hz(band + 1), edge_hz(band + 2));
            let start = weights.len();
            let mut first_bin = None;
            for bin in 0..n_bins {
                let hz = bin as f32 * bin_hz;
                let weight = if hz > left && hz <= centre {
                    (hz - left) / (centre - left)
                } else if hz > centre && hz < right {
                    (right - hz) / (right - centre)
                } else {
                    0.0
                };
                if weight > 0.0 {
                    first_bin.get_or_insert(bin);
                    weights.push(weight);
                } else if first_bin.is_some() {
                    break;
                }
            }
            let Some(first_bin) = first_bin else {
                return Err(VadError::MelBandsTooNarrow {
                    n_mels,
                    n_bins,
                    sample_rate,
                });
            };
            bands.push(Band {
                first_bin,
                weights: start..weights.len(),
            });
        }
        Ok(Self { bands, weights })
    }

    /// Writes each band's natural-log energy, `ln(max(energy, floor))`, into `out`.
    pub(crate) fn apply_log(&self, power: &[f32], floor: f32, out: &mut [f32]) {
        for (band, slot) in self.bands.iter().zip(out.iter_mut()) {
            let weights = &self.weights[band.weights.clone()];
            let bins = &power[band.first_bin..band.first_bin + weights.len()];
            let energy: f32 = weights.iter().zip(bins).map(|(w, p)| w * p).sum();
            *slot = energy.max(floor).ln();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mel_scale_round_trips() {
        for hz in [0.0, 300.0, 1000.0, 3400.0, 8000.0] {
            assert!((mel_to_hz(hz_to_mel(hz)) - hz).abs() < 0.05, "{hz}");
        }
        // HTK anchor: 1000 Hz is about 1000 mel.
        assert!((hz_to_mel(1000.0) - 1000.0).abs() < 1.0);
    }

    #[test]
    fn a_single_bin_lands_in_the_band_centred_on_it() {
        let bank = MelFilterbank::new(40, 257, 16000).unwrap();
        assert_eq!(bank.bands.len(), 40);
        let mut power = vec![0.0f32; 257];
        power[64] = 1.0; // 64 * 31.25 Hz = 2000 Hz
        let mut out = vec![0.0f32; 40];
        bank.apply_log(&power, 1e-12, &mut out);
        let loudest = (0..40).max_by(|&a, &b| out[a].total_cmp(&out[b])).unwrap();
        let band_centre = mel_to_hz(
            hz_to_mel(LOW_EDGE_HZ)
                + (hz_to_mel(8000.0) - hz_to_mel(LOW_EDGE_HZ)) / 41.0 * (loudest + 1) as f32,
        );
        assert!((band_centre - 2000.0).abs() < 150.0, "{band_centre}");
    }

    #[test]
    fn too_many_bands_for_the_spectrum_are_refused() {
        assert!(matches!(
            MelFilterbank::new(128, 65, 8000),
            Err(VadError::MelBandsTooNarrow { n_mels: 128, .. })
        ));
    }
}
