//! voicecore's real-time audio core.
//!
//! Everything in here has a deadline, so none of it may wait on Python: this crate has no
//! pyo3 dependency and its threads never touch the interpreter. The Python binding
//! (`rust/python`) is a thin layer of wrappers over these types.
//!
//! * [`ring`]: lock-free single-producer/single-consumer sample ring buffers, with an
//!   overwrite-oldest policy (mic capture) and a reject policy (playout backpressure).
//! * [`resample`]: a streaming polyphase resampler between common speech and music rates.
//! * [`vad`]: per-frame VAD features and an adaptive-noise-floor energy VAD.
//! * [`echo`]: an echo gate that keeps the agent's own voice, leaking into the user's mic,
//!   from passing for the user.
//! * [`pacer`]: a frame pacer on its own OS thread releasing frames on absolute deadlines.
//! * [`sink`]: a non-blocking socket writer through which the pacer thread puts released
//!   frames on the wire itself, as WebSocket messages.
#![deny(missing_docs)]

pub mod echo;
pub mod error;
pub mod pacer;
pub mod resample;
pub mod ring;
pub mod sink;
pub mod vad;

pub use error::{EchoError, OsError, PacerError, ResampleError, RingError, SinkError, VadError};
