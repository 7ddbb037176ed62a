//! The one place where core errors become Python exceptions.
//!
//! The exception classes are defined in Python (`voicecore/exceptions.py`) so that they can
//! subclass both `VoicecoreError` and the builtin they mean (`ValueError`, `TypeError`),
//! which a class created in Rust cannot.

use pyo3::exceptions::PyConnectionResetError;
use pyo3::PyErr;
use voicecore_core::Error;

pyo3::import_exception!(voicecore.exceptions, ConfigError);
pyo3::import_exception!(voicecore.exceptions, UnsupportedSampleRateError);
pyo3::import_exception!(voicecore.exceptions, AudioFormatError);
pyo3::import_exception!(voicecore.exceptions, AudioTypeError);
pyo3::import_exception!(voicecore.exceptions, UnknownStreamError);
pyo3::import_exception!(voicecore.exceptions, PacerStoppedError);
pyo3::import_exception!(voicecore.exceptions, ResourceError);
pyo3::import_exception!(voicecore.exceptions, SendBufferFullError);

/// Maps a core error to its precise Python exception, keeping the core's message.
pub fn to_py_err(error: Error) -> PyErr {
    let message = error.to_string();
    match error {
        Error::UnsupportedSampleRate { .. } => UnsupportedSampleRateError::new_err(message),
        Error::InvalidParameter { .. } => ConfigError::new_err(message),
        Error::InvalidAudio { .. } => AudioFormatError::new_err(message),
        Error::UnknownStream { .. } => UnknownStreamError::new_err(message),
        Error::PacerStopped => PacerStoppedError::new_err(message),
        Error::Os { .. } => ResourceError::new_err(message),
        Error::SinkFull { .. } => SendBufferFullError::new_err(message),
        // The builtin: code that already handles a dropped connection keeps working.
        Error::SinkClosed { .. } => PyConnectionResetError::new_err(message),
        // `Error` is non-exhaustive for downstream crates; a new variant must get its own arm.
        #[allow(unreachable_patterns)]
        _ => ConfigError::new_err(message),
    }
}
