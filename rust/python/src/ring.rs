//! Python bindings of `voicecore_core::ring` (under construction by its owner).

use pyo3::prelude::*;

pub fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
