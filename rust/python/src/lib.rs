//! `voicecore._core`: thin pyo3 wrappers over `voicecore-core`.
//!
//! No logic lives here: each `Py*` class converts arguments, releases the GIL through
//! [`audio::detach`] and delegates to the core type. Errors go through
//! [`errors::to_py_err`]. The public Python surface is `voicecore/__init__.py`; the typed
//! contract is `voicecore/_core.pyi`, checked against this module by `mypy.stubtest`.

use pyo3::prelude::*;

mod audio;
mod echo;
mod errors;
mod pacer;
mod resample;
mod ring;
mod sink;
mod vad;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    ring::register(m)?;
    resample::register(m)?;
    vad::register(m)?;
    pacer::register(m)?;
    sink::register(m)?;
    echo::register(m)?;
    Ok(())
}
