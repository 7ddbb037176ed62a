//! The one place where core errors become Python exceptions.
//!
//! The exception classes are defined in Python (`voicecore/exceptions.py`) so that they can
//! subclass both `VoicecoreError` and the builtin they mean (`ValueError`, `TypeError`),
//! which a class created in Rust cannot.
//!
//! Each core domain has its own error enum; each gets one [`IntoPyErr`] impl below whose
//! `match` is exhaustive, with no catch-all arm: a variant added in the core does not compile
//! here until it is mapped to its precise exception. (`impl From<RingError> for PyErr` is not
//! possible in this crate, which owns neither type, hence the local trait.) Call sites write
//! `.map_err(to_py_err)` whatever the domain.

use pyo3::exceptions::PyConnectionResetError;
use pyo3::PyErr;
use voicecore_core::{
    EchoError, OsError, PacerError, ResampleError, RingError, SinkError, VadError,
};

pyo3::import_exception!(voicecore.exceptions, ConfigError);
pyo3::import_exception!(voicecore.exceptions, UnsupportedSampleRateError);
pyo3::import_exception!(voicecore.exceptions, AudioFormatError);
pyo3::import_exception!(voicecore.exceptions, AudioTypeError);
pyo3::import_exception!(voicecore.exceptions, UnknownStreamError);
pyo3::import_exception!(voicecore.exceptions, PacerStoppedError);
pyo3::import_exception!(voicecore.exceptions, ResourceError);
pyo3::import_exception!(voicecore.exceptions, SendBufferFullError);

/// A core error that maps to one precise Python exception, keeping the core's message.
pub trait IntoPyErr: std::fmt::Display {
    /// The Python exception for this error.
    fn into_py_err(self) -> PyErr;
}

/// Maps any core error to its Python exception (for `.map_err(to_py_err)`).
pub fn to_py_err<E: IntoPyErr>(error: E) -> PyErr {
    error.into_py_err()
}

impl IntoPyErr for OsError {
    fn into_py_err(self) -> PyErr {
        ResourceError::new_err(self.to_string())
    }
}

impl IntoPyErr for RingError {
    fn into_py_err(self) -> PyErr {
        let message = self.to_string();
        match self {
            RingError::InvalidCapacity { .. }
            | RingError::OutOfMemory { .. }
            | RingError::UnknownPolicy { .. }
            | RingError::NegativeCount { .. } => ConfigError::new_err(message),
        }
    }
}

impl IntoPyErr for ResampleError {
    fn into_py_err(self) -> PyErr {
        let message = self.to_string();
        match self {
            ResampleError::UnsupportedRate { .. } | ResampleError::RatioTooComplex { .. } => {
                UnsupportedSampleRateError::new_err(message)
            }
            ResampleError::OutputTooShort { .. } => ConfigError::new_err(message),
        }
    }
}

impl IntoPyErr for VadError {
    fn into_py_err(self) -> PyErr {
        let message = self.to_string();
        match self {
            VadError::UnsupportedRate { .. } => UnsupportedSampleRateError::new_err(message),
            VadError::UnsupportedFrameDuration { .. }
            | VadError::TooManyMelBands { .. }
            | VadError::MelBandsTooNarrow { .. }
            | VadError::InvalidSetting { .. } => ConfigError::new_err(message),
            VadError::WrongFrameLength { .. } => AudioFormatError::new_err(message),
        }
    }
}

impl IntoPyErr for PacerError {
    fn into_py_err(self) -> PyErr {
        let message = self.to_string();
        match self {
            PacerError::UnsupportedSampleRate { .. } => {
                UnsupportedSampleRateError::new_err(message)
            }
            PacerError::UnsupportedFrameDuration { .. }
            | PacerError::UnknownClock { .. }
            | PacerError::InvalidSampleRate { .. }
            | PacerError::UnsupportedChannels { .. }
            | PacerError::InvalidCushion { .. }
            | PacerError::InvalidMaxLead { .. }
            | PacerError::InvalidQueue { .. }
            | PacerError::InvalidPlayoutReport { .. }
            | PacerError::NotVirtual
            | PacerError::TimeBackwards { .. }
            | PacerError::StepTooLong { .. }
            | PacerError::NegativeDuration { .. } => ConfigError::new_err(message),
            PacerError::NonFiniteSample { .. } => AudioFormatError::new_err(message),
            PacerError::UnknownStream { .. } => UnknownStreamError::new_err(message),
            PacerError::Stopped => PacerStoppedError::new_err(message),
            PacerError::Os(error) => error.into_py_err(),
        }
    }
}

impl IntoPyErr for SinkError {
    fn into_py_err(self) -> PyErr {
        let message = self.to_string();
        match self {
            SinkError::BadDescriptor { .. }
            | SinkError::NotASocket { .. }
            | SinkError::InvalidBound { .. } => ConfigError::new_err(message),
            SinkError::Full { .. } => SendBufferFullError::new_err(message),
            // The builtin: code that already handles a dropped connection keeps working.
            SinkError::Closed { .. } => PyConnectionResetError::new_err(message),
        }
    }
}

impl IntoPyErr for EchoError {
    fn into_py_err(self) -> PyErr {
        let message = self.to_string();
        match self {
            EchoError::UnsupportedFarRate { .. } => UnsupportedSampleRateError::new_err(message),
            EchoError::InvalidSetting { .. } => ConfigError::new_err(message),
            EchoError::OutputLength { .. } => AudioFormatError::new_err(message),
        }
    }
}
