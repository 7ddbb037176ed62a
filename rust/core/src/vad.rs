//! Per-frame voice-activity features and an adaptive-noise-floor energy VAD.
//!
//! * [`FeatureExtractor`] turns one 10/20/30 ms frame into [`Features`]: RMS level in dBFS,
//!   zero-crossing rate, spectral flatness, spectral centroid, the share of energy in the
//!   telephone speech band (300-3400 Hz) and log-mel energies. FFT plans, window, mel
//!   filterbank and scratch buffers are built once; computing a frame allocates nothing.
//! * [`EnergyVad`] is a streaming detector on top of it: it takes audio in chunks of any
//!   size, scores every frame against a per-band noise floor that it tracks on its own, and
//!   turns the per-frame decisions into [`SpeechEvent`]s (speech start / speech end) stamped
//!   with absolute sample indices of the stream.
//!
//! Samples are either `i16` (PCM16, full scale 32768) or `f32` in [-1, 1]; both go through
//! the [`Sample`] trait so the same code serves bytes from a socket and float arrays.

mod energy;
mod features;
mod mel;
pub(crate) mod noise;

pub use energy::{EnergyVad, EnergyVadConfig, FrameDecision, SpeechEvent, SpeechEventKind};
pub use features::{FeatureConfig, FeatureExtractor, Features, MAX_MELS, SILENCE_DBFS};

pub use crate::error::VadError;

/// A sample type the VAD can read: converted to `f32` in [-1, 1] on the way in.
pub trait Sample: Copy + Send + Sync + 'static {
    /// The sample as a float where full scale is 1.0.
    fn to_unit(self) -> f32;
}

impl Sample for i16 {
    #[inline]
    fn to_unit(self) -> f32 {
        // PCM16 full scale is 32768 (the magnitude of i16::MIN), as in every DAW and soxr.
        f32::from(self) * (1.0 / 32768.0)
    }
}

impl Sample for f32 {
    #[inline]
    fn to_unit(self) -> f32 {
        self
    }
}

/// Validates a (sample rate, frame duration) pair and returns the frame length in samples.
///
/// Only the durations webrtcvad accepts are allowed (10/20/30 ms): they are what telephony
/// and WebRTC stacks deliver, and they keep the FFT sizes small.
pub(crate) fn frame_length(sample_rate: u32, frame_ms: u32) -> Result<usize, VadError> {
    if sample_rate != 8000 && sample_rate != 16000 {
        return Err(VadError::UnsupportedRate { rate: sample_rate });
    }
    if !matches!(frame_ms, 10 | 20 | 30) {
        return Err(VadError::UnsupportedFrameDuration { frame_ms });
    }
    Ok((sample_rate / 1000 * frame_ms) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_lengths_follow_rate_and_duration() {
        assert_eq!(frame_length(16000, 10).unwrap(), 160);
        assert_eq!(frame_length(16000, 30).unwrap(), 480);
        assert_eq!(frame_length(8000, 20).unwrap(), 160);
    }

    #[test]
    fn unsupported_rate_and_duration_are_refused() {
        assert!(matches!(
            frame_length(44100, 20),
            Err(VadError::UnsupportedRate { rate: 44100 })
        ));
        assert_eq!(
            frame_length(16000, 25),
            Err(VadError::UnsupportedFrameDuration { frame_ms: 25 })
        );
        assert_eq!(
            frame_length(16000, 0),
            Err(VadError::UnsupportedFrameDuration { frame_ms: 0 })
        );
    }

    #[test]
    fn pcm16_full_scale_maps_to_unit() {
        assert_eq!(i16::MIN.to_unit(), -1.0);
        assert!((i16::MAX.to_unit() - 1.0).abs() < 1e-4);
        assert_eq!(0.25f32.to_unit(), 0.25);
    }
}
