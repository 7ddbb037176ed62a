//! The core's errors: one enum per domain, as rubato and rtrb do.
//!
//! Each component refuses only what it can refuse, so a caller matching on a
//! [`ResampleError`] never has to consider a pacer's stream ids or a socket's state. Every
//! variant carries the offending values and its message says what would have been accepted,
//! so a user can act on it ("sample rate 0 Hz is not supported; use 8000 or 16000 Hz").
//!
//! The enums are deliberately *not* `#[non_exhaustive]`: the Python binding maps each variant
//! to one exception class of `voicecore.exceptions` with an exhaustive `match` (see
//! `rust/python/src/errors.rs`), so a new variant fails to compile there until it is given
//! its precise exception, instead of falling into a catch-all.
//!
//! | enum              | raised by                                               |
//! |-------------------|---------------------------------------------------------|
//! | [`RingError`]     | [`sample_ring`](crate::ring::sample_ring), policy names |
//! | [`ResampleError`] | [`Resampler`](crate::resample::Resampler)               |
//! | [`VadError`]      | [`FeatureExtractor`](crate::vad::FeatureExtractor), [`EnergyVad`](crate::vad::EnergyVad) |
//! | [`PacerError`]    | [`FramePacer`](crate::pacer::FramePacer) and its streams |
//! | [`SinkError`]     | [`SocketSink`](crate::sink::SocketSink)                 |
//! | [`EchoError`]     | [`EchoGate`](crate::echo::EchoGate)                     |
//! | [`OsError`]       | eventfds, timers, threads (inside [`PacerError::Os`])   |

use std::fmt;

/// The operating system refused a resource: an eventfd, a timer, a thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsError {
    /// The system call or operation that failed.
    pub operation: &'static str,
    /// The OS error message.
    pub message: String,
}

impl OsError {
    /// The error of the last failed system call (`errno`), for `operation`.
    pub fn last(operation: &'static str) -> Self {
        Self {
            operation,
            message: std::io::Error::last_os_error().to_string(),
        }
    }
}

impl fmt::Display for OsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} failed: {} (the process may be out of file descriptors or threads)",
            self.operation, self.message
        )
    }
}

impl std::error::Error for OsError {}

/// What a sample ring refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingError {
    /// A capacity of 0, negative, or above [`MAX_CAPACITY`](crate::ring::MAX_CAPACITY).
    InvalidCapacity {
        /// The capacity asked for, in samples (wide enough for a negative Python int and
        /// any `usize`).
        capacity: i128,
    },
    /// A capacity in range whose memory could not be allocated.
    OutOfMemory {
        /// The capacity asked for, in samples.
        capacity: usize,
    },
    /// An overflow policy name other than `"overwrite"` or `"reject"`.
    UnknownPolicy {
        /// The name given.
        name: String,
    },
    /// A negative sample count (a pop or peek of `-1` samples).
    NegativeCount {
        /// The argument's name as the caller spells it.
        name: &'static str,
        /// The count given.
        value: i64,
    },
}

impl fmt::Display for RingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidCapacity { capacity } => write!(
                f,
                "capacity = {capacity} is invalid; expected {}",
                crate::ring::CAPACITY_EXPECTED
            ),
            Self::OutOfMemory { capacity } => write!(
                f,
                "capacity = {capacity} is invalid: its {} bytes could not be allocated; \
                 use a smaller ring",
                capacity.saturating_mul(2)
            ),
            Self::UnknownPolicy { name } => write!(
                f,
                "policy = {name:?} is invalid; expected \"overwrite\" or \"reject\""
            ),
            Self::NegativeCount { name, value } => {
                write!(
                    f,
                    "{name} = {value} is invalid; expected a sample count >= 0"
                )
            }
        }
    }
}

impl std::error::Error for RingError {}

/// What the streaming resampler refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResampleError {
    /// A rate outside [`MIN_RATE`](crate::resample::MIN_RATE)..=
    /// [`MAX_RATE`](crate::resample::MAX_RATE).
    UnsupportedRate {
        /// The rate given, in Hz.
        rate: u32,
    },
    /// Two rates in range whose reduced ratio `L/M` needs too large a filter table.
    RatioTooComplex {
        /// The input rate, in Hz.
        in_rate: u32,
        /// The output rate, in Hz.
        out_rate: u32,
        /// `L`, the number of polyphase phases the pair needs.
        phases: u32,
        /// The coefficients its table would hold.
        coefficients: usize,
    },
    /// An output buffer shorter than the outputs the call must write (nothing was consumed).
    OutputTooShort {
        /// The buffer's length, in samples.
        len: usize,
        /// The samples the call must write.
        needed: usize,
    },
}

impl fmt::Display for ResampleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::resample::SUPPORTED_RATES;
        match self {
            Self::UnsupportedRate { rate } => {
                write!(
                    f,
                    "sample rate {rate} Hz is not supported; use {SUPPORTED_RATES}"
                )
            }
            Self::RatioTooComplex {
                in_rate,
                out_rate,
                phases,
                coefficients,
            } => write!(
                f,
                "sample rate {out_rate} Hz is not supported from {in_rate} Hz: the ratio \
                 reduces to L/M with L = {phases} and {coefficients} filter coefficients; use \
                 {SUPPORTED_RATES}"
            ),
            Self::OutputTooShort { len, needed } => write!(
                f,
                "output length = {len} is invalid; expected at least {needed} samples \
                 (Resampler::output_len, or latency() for a flush)"
            ),
        }
    }
}

impl std::error::Error for ResampleError {}

/// What the VAD (features and energy detector) refuses.
#[derive(Debug, Clone, PartialEq)]
pub enum VadError {
    /// A rate other than 8000 or 16000 Hz.
    UnsupportedRate {
        /// The rate given, in Hz.
        rate: u32,
    },
    /// A frame duration other than 10, 20 or 30 ms.
    UnsupportedFrameDuration {
        /// The duration given, in ms.
        frame_ms: u32,
    },
    /// More mel bands than [`MAX_MELS`](crate::vad::MAX_MELS).
    TooManyMelBands {
        /// The band count given.
        n_mels: usize,
    },
    /// A mel band count in range that this frame size cannot resolve: some band would
    /// cover no FFT bin.
    MelBandsTooNarrow {
        /// The band count given.
        n_mels: usize,
        /// Bins of the frame's power spectrum.
        n_bins: usize,
        /// The sample rate, in Hz.
        sample_rate: u32,
    },
    /// An energy-VAD setting out of its range (or not finite).
    InvalidSetting {
        /// The setting's name, as the caller spells it.
        name: &'static str,
        /// The value given.
        value: f32,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// A frame of the wrong length for the configured rate and duration.
    WrongFrameLength {
        /// The length given, in samples.
        len: usize,
        /// The frame length, in samples.
        expected: usize,
        /// The configured frame duration, in ms.
        frame_ms: u32,
        /// The configured rate, in Hz.
        sample_rate: u32,
    },
}

impl fmt::Display for VadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnsupportedRate { rate } => write!(
                f,
                "sample rate {rate} Hz is not supported; use 8000 or 16000 Hz (resample first)"
            ),
            Self::UnsupportedFrameDuration { frame_ms } => write!(
                f,
                "frame_ms = {frame_ms} is invalid; expected 10, 20 or 30 (ms)"
            ),
            Self::TooManyMelBands { n_mels } => write!(
                f,
                "n_mels = {n_mels} is invalid; expected 0..={}",
                crate::vad::MAX_MELS
            ),
            Self::MelBandsTooNarrow {
                n_mels,
                n_bins,
                sample_rate,
            } => write!(
                f,
                "n_mels = {n_mels} is invalid for a {n_bins}-bin spectrum at {sample_rate} Hz; \
                 expected fewer mel bands (every band must cover at least one FFT bin; use a \
                 longer frame or fewer bands)"
            ),
            Self::InvalidSetting {
                name,
                value,
                expected,
            } => write!(f, "{name} = {value} is invalid; expected {expected}"),
            Self::WrongFrameLength {
                len,
                expected,
                frame_ms,
                sample_rate,
            } => write!(
                f,
                "invalid audio: a {frame_ms} ms frame at {sample_rate} Hz is {expected} \
                 samples; got {len}"
            ),
        }
    }
}

impl std::error::Error for VadError {}

/// What the frame pacer refuses.
#[derive(Debug, Clone, PartialEq)]
pub enum PacerError {
    /// A frame duration other than 10, 20 or 40 ms.
    UnsupportedFrameDuration {
        /// The duration given, in ms.
        frame_ms: i64,
    },
    /// A clock name other than `"real"` or `"virtual"`.
    UnknownClock {
        /// The name given.
        name: String,
    },
    /// A stream rate that is not one of [`SUPPORTED_RATES`](crate::pacer::SUPPORTED_RATES),
    /// or whose frame would not be a whole number of samples.
    UnsupportedSampleRate {
        /// The rate given, in Hz.
        rate: u32,
        /// The pacer's frame duration, in ms.
        frame_ms: u32,
    },
    /// A stream rate that is no rate at all (negative, or beyond `u32`).
    InvalidSampleRate {
        /// The value given.
        sample_rate: i64,
    },
    /// A channel count other than 1.
    UnsupportedChannels {
        /// The count given.
        channels: i64,
    },
    /// A cushion shorter than one frame or longer than 10 s.
    InvalidCushion {
        /// The cushion given, in ms.
        cushion_ms: i64,
        /// The pacer's frame duration, in ms.
        frame_ms: u32,
    },
    /// A maximum lead below `cushion_ms + frame_ms` or above 20 s.
    InvalidMaxLead {
        /// The maximum lead given (or defaulted), in ms.
        max_lead_ms: i64,
        /// The stream's cushion, in ms.
        cushion_ms: i64,
        /// The pacer's frame duration, in ms.
        frame_ms: u32,
    },
    /// A playout queue shorter than one frame or longer than 600 s.
    InvalidQueue {
        /// The capacity given, in ms.
        queue_ms: i64,
        /// The pacer's frame duration, in ms.
        frame_ms: u32,
    },
    /// A playout report that is negative, not finite, or above 60 s.
    InvalidPlayoutReport {
        /// The buffered duration reported, in ms.
        buffered_ms: f64,
    },
    /// Float audio with a sample that is NaN or infinite (no PCM16 value means that).
    NonFiniteSample {
        /// The sample's index in the pushed buffer.
        index: usize,
        /// Its value.
        value: f32,
    },
    /// An operation on a stream that does not exist (never opened, or closed).
    UnknownStream {
        /// The stream's id.
        id: u64,
    },
    /// The pacer has been stopped; no further streams or frames.
    Stopped,
    /// Virtual time moved by hand on a real-clock pacer.
    NotVirtual,
    /// Virtual time moved backwards.
    TimeBackwards {
        /// The time asked for, in ns.
        requested_ns: i64,
        /// The virtual now, in ns.
        now_ns: i64,
    },
    /// Virtual time moved by more than one hour in one call.
    StepTooLong {
        /// The time asked for, in ns.
        requested_ns: i64,
        /// The virtual now, in ns.
        now_ns: i64,
    },
    /// A negative duration to advance virtual time by.
    NegativeDuration {
        /// The duration given, in ns.
        duration_ns: i64,
    },
    /// The operating system refused an eventfd, a timer or the pacer thread.
    Os(OsError),
}

impl From<OsError> for PacerError {
    fn from(error: OsError) -> Self {
        Self::Os(error)
    }
}

impl fmt::Display for PacerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnsupportedFrameDuration { frame_ms } => {
                write!(
                    f,
                    "frame_ms = {frame_ms} is invalid; expected 10, 20 or 40 (ms)"
                )
            }
            Self::UnknownClock { name } => write!(
                f,
                "clock = {name:?} is invalid; expected \"real\" or \"virtual\""
            ),
            Self::UnsupportedSampleRate { rate, frame_ms } => write!(
                f,
                "sample rate {rate} Hz is not supported with {frame_ms} ms frames; use {}",
                crate::pacer::stream::SUPPORTED_TEXT
            ),
            Self::InvalidSampleRate { sample_rate } => write!(
                f,
                "sample_rate = {sample_rate} is invalid; expected {}",
                crate::pacer::stream::SUPPORTED_TEXT
            ),
            Self::UnsupportedChannels { channels } => {
                write!(f, "channels = {channels} is invalid; expected 1 (mono)")
            }
            Self::InvalidCushion {
                cushion_ms,
                frame_ms,
            } => write!(
                f,
                "cushion_ms = {cushion_ms} is invalid; expected at least one frame \
                 ({frame_ms} ms) and at most 10000 ms"
            ),
            Self::InvalidMaxLead {
                max_lead_ms,
                cushion_ms,
                frame_ms,
            } => write!(
                f,
                "max_lead_ms = {max_lead_ms} is invalid; expected at least cushion_ms + \
                 frame_ms ({}) and at most 20000 ms",
                cushion_ms.saturating_add(i64::from(*frame_ms))
            ),
            Self::InvalidQueue { queue_ms, frame_ms } => write!(
                f,
                "queue_ms = {queue_ms} is invalid; expected at least one frame ({frame_ms} ms) \
                 and at most 600000 ms"
            ),
            Self::InvalidPlayoutReport { buffered_ms } => write!(
                f,
                "buffered_ms = {buffered_ms} is invalid; expected a finite number of ms from 0 \
                 to 60000"
            ),
            Self::NonFiniteSample { index, value } => write!(
                f,
                "invalid audio: sample {index} is {value}, not a finite number"
            ),
            Self::UnknownStream { id } => write!(
                f,
                "pacer stream {id} does not exist (never opened, or closed)"
            ),
            Self::Stopped => write!(
                f,
                "the pacer has been stopped; create a new FramePacer for further streams"
            ),
            Self::NotVirtual => write!(
                f,
                "clock = \"real\" is invalid here; expected a \"virtual\" clock to advance \
                 time by hand"
            ),
            Self::TimeBackwards {
                requested_ns,
                now_ns,
            } => write!(
                f,
                "now_ns = {requested_ns} is invalid; expected a time no earlier than the \
                 pacer's virtual now ({now_ns})"
            ),
            Self::StepTooLong {
                requested_ns,
                now_ns,
            } => write!(
                f,
                "now_ns = {requested_ns} is invalid; expected at most 3600 s past the pacer's \
                 virtual now ({now_ns}) per call"
            ),
            Self::NegativeDuration { duration_ns } => write!(
                f,
                "duration = {duration_ns} ns is invalid; expected a duration of at least 0"
            ),
            Self::Os(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for PacerError {}

/// What a socket sink refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkError {
    /// A descriptor that is not open.
    BadDescriptor {
        /// The descriptor given.
        fd: i32,
    },
    /// An open descriptor that is not a socket.
    NotASocket {
        /// The descriptor given.
        fd: i32,
    },
    /// A pending-bytes bound of 0.
    InvalidBound {
        /// The bound given, in bytes.
        max_pending_bytes: usize,
    },
    /// A write refused whole: it would take the bytes waiting for a slow peer past the
    /// sink's bound.
    Full {
        /// Bytes of the refused write.
        requested: usize,
        /// Bytes already waiting for the peer.
        pending: usize,
        /// The most bytes that may wait.
        bound: usize,
    },
    /// The sink takes no more writes: it was closed, or the connection broke.
    Closed {
        /// True when a send failed (peer closed or reset); false after an explicit close.
        broken: bool,
    },
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadDescriptor { fd } => write!(
                f,
                "fd = {fd} is invalid; expected an open file descriptor of a connected socket"
            ),
            Self::NotASocket { fd } => write!(
                f,
                "fd = {fd} is invalid; expected a socket (this descriptor is not one)"
            ),
            Self::InvalidBound { max_pending_bytes } => write!(
                f,
                "max_pending_bytes = {max_pending_bytes} is invalid; expected at least 1 byte"
            ),
            Self::Full {
                requested,
                pending,
                bound,
            } => write!(
                f,
                "the peer reads too slowly: {pending} bytes already wait for it and {requested} \
                 more would pass the bound of {bound}; nothing of this write was queued"
            ),
            Self::Closed { broken: true } => {
                write!(f, "the connection broke (the peer closed or reset it)")
            }
            Self::Closed { broken: false } => write!(f, "the socket sink has been closed"),
        }
    }
}

impl std::error::Error for SinkError {}

/// What the echo gate refuses.
#[derive(Debug, Clone, PartialEq)]
pub enum EchoError {
    /// A far-end rate the resampler cannot take to the gate's 16 kHz.
    UnsupportedFarRate {
        /// The rate given, in Hz.
        rate: u32,
    },
    /// A setting out of its range (or not finite).
    InvalidSetting {
        /// The setting's name, as the caller spells it.
        name: &'static str,
        /// The value given.
        value: f64,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// An output buffer whose length differs from the input's.
    OutputLength {
        /// The output's length, in samples.
        len: usize,
        /// The input's length, in samples.
        expected: usize,
    },
}

impl fmt::Display for EchoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnsupportedFarRate { rate } => write!(
                f,
                "far_rate = {rate} Hz is not supported; use {} (the gate resamples the far \
                 end to 16000 Hz)",
                crate::resample::SUPPORTED_RATES
            ),
            Self::InvalidSetting {
                name,
                value,
                expected,
            } => write!(f, "{name} = {value} is invalid; expected {expected}"),
            Self::OutputLength { len, expected } => write!(
                f,
                "output length = {len} is invalid; expected {expected} samples (the input's \
                 length)"
            ),
        }
    }
}

impl std::error::Error for EchoError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_value_and_what_is_accepted() {
        let cases: [(String, &[&str]); 8] = [
            (
                RingError::InvalidCapacity { capacity: -1 }.to_string(),
                &["capacity = -1", "67108864"],
            ),
            (
                ResampleError::UnsupportedRate { rate: 0 }.to_string(),
                &["sample rate 0 Hz", "44100"],
            ),
            (
                VadError::UnsupportedRate { rate: 44_100 }.to_string(),
                &["44100 Hz", "8000 or 16000"],
            ),
            (
                PacerError::InvalidQueue {
                    queue_ms: 5,
                    frame_ms: 20,
                }
                .to_string(),
                &["queue_ms = 5", "20 ms"],
            ),
            (
                SinkError::Full {
                    requested: 3,
                    pending: 9,
                    bound: 10,
                }
                .to_string(),
                &["9 bytes", "3", "10"],
            ),
            (
                EchoError::UnsupportedFarRate { rate: 7 }.to_string(),
                &["far_rate = 7 Hz", "48000"],
            ),
            (
                EchoError::InvalidSetting {
                    name: "margin_db",
                    value: -1.0,
                    expected: "0 to 30 (dB)",
                }
                .to_string(),
                &["margin_db = -1", "0 to 30"],
            ),
            (
                PacerError::from(OsError {
                    operation: "eventfd",
                    message: "Too many open files".into(),
                })
                .to_string(),
                &["eventfd failed", "Too many open files"],
            ),
        ];
        for (message, parts) in cases {
            for part in parts {
                assert!(message.contains(part), "{message:?} lacks {part:?}");
            }
        }
    }
}
