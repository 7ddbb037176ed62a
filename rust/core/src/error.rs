//! The one error type of the core.
//!
//! Every variant carries the offending value and says what would have been accepted, so the
//! message is something a user can act on. The Python binding maps each variant to one
//! exception class of `voicecore.exceptions` (see `rust/python/src/errors.rs`).

use std::fmt;

/// Result alias used throughout the core.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything the core can refuse.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// A sample rate the component cannot work at.
    UnsupportedSampleRate {
        /// The rate that was asked for, in Hz.
        rate: u32,
        /// The rates (or range) that are accepted, for the message.
        supported: &'static str,
    },
    /// A construction parameter (size, duration, threshold) out of its valid range.
    InvalidParameter {
        /// The parameter's name as the caller spells it.
        name: &'static str,
        /// The value that was given, formatted.
        value: String,
        /// What would have been accepted, for the message.
        expected: &'static str,
    },
    /// Audio data whose layout the call cannot take (length not a whole number of frames...).
    InvalidAudio {
        /// What is wrong with it, in words.
        reason: String,
    },
    /// An operation on a pacer stream that does not exist (never opened, or closed).
    UnknownStream {
        /// The stream's id.
        id: u64,
    },
    /// The pacer thread has stopped; no further streams or frames.
    PacerStopped,
    /// The operating system refused a resource (an eventfd, a timer, a thread).
    Os {
        /// The system call or operation that failed.
        operation: &'static str,
        /// The OS error message.
        message: String,
    },
    /// A socket sink refused a write whole: it would take the bytes waiting for a slow peer
    /// past the sink's bound.
    SinkFull {
        /// Bytes of the refused write.
        requested: usize,
        /// Bytes already waiting for the peer.
        pending: usize,
        /// The most bytes that may wait.
        bound: usize,
    },
    /// A socket sink takes no more writes: it was closed, or the connection broke.
    SinkClosed {
        /// True when a send failed (peer closed or reset); false after an explicit close.
        broken: bool,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UnsupportedSampleRate { rate, supported } => {
                write!(f, "sample rate {rate} Hz is not supported; use {supported}")
            }
            Error::InvalidParameter {
                name,
                value,
                expected,
            } => write!(f, "{name} = {value} is invalid; expected {expected}"),
            Error::InvalidAudio { reason } => write!(f, "invalid audio: {reason}"),
            Error::UnknownStream { id } => {
                write!(
                    f,
                    "pacer stream {id} does not exist (never opened, or closed)"
                )
            }
            Error::PacerStopped => write!(f, "the pacer has been stopped"),
            Error::Os { operation, message } => write!(f, "{operation} failed: {message}"),
            Error::SinkFull {
                requested,
                pending,
                bound,
            } => write!(
                f,
                "the peer reads too slowly: {pending} bytes already wait for it and {requested} \
                 more would pass the bound of {bound}; nothing of this write was queued"
            ),
            Error::SinkClosed { broken: true } => {
                write!(f, "the connection broke (the peer closed or reset it)")
            }
            Error::SinkClosed { broken: false } => write!(f, "the socket sink has been closed"),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// Shorthand for [`Error::InvalidParameter`].
    pub fn invalid(name: &'static str, value: impl fmt::Display, expected: &'static str) -> Self {
        Error::InvalidParameter {
            name,
            value: value.to_string(),
            expected,
        }
    }
}
