//! Audio crossing the Python boundary, and the one helper that releases the GIL.
//!
//! Callers hand us PCM16 as `bytes`/`bytearray`/`memoryview`, or one-dimensional numpy arrays
//! of `int16` or `float32`. We read them in place through the buffer protocol (no conversion
//! to a Python list, no intermediate copy) and hand results back in the caller's own type:
//! bytes in, bytes out; an array in, an array of the same dtype out.

use numpy::PyArray1;
use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyMemoryView};

use crate::errors::{AudioFormatError, AudioTypeError};

#[cfg(not(target_endian = "little"))]
compile_error!("voicecore reads PCM16 bytes in place and needs a little-endian target");

/// Runs `work` with the GIL released: every call that copies or computes goes through here,
/// so a long resample or VAD pass never stalls other Python threads.
pub fn detach<T, F>(py: Python<'_>, work: F) -> T
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    py.detach(work)
}

/// The Python type audio came in as, so the result can go back in the same type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioKind {
    /// `bytes`, `bytearray` or a byte `memoryview` of PCM16 little-endian samples.
    Pcm16Bytes,
    /// A numpy `int16` array (or an `h`-format memoryview).
    Int16,
    /// A numpy `float32` array (or an `f`-format memoryview), nominal range [-1, 1].
    Float32,
}

/// Borrowed samples, either PCM16 or float.
#[derive(Debug, Clone, Copy)]
pub enum Samples<'a> {
    /// 16-bit signed integer samples.
    I16(&'a [i16]),
    /// 32-bit float samples, nominal range [-1, 1].
    F32(&'a [f32]),
}

impl Samples<'_> {
    /// Number of samples.
    pub fn len(&self) -> usize {
        match self {
            Samples::I16(s) => s.len(),
            Samples::F32(s) => s.len(),
        }
    }
}

enum Held {
    Bytes(PyBuffer<u8>),
    /// Byte input whose start is not 2-byte aligned (a memoryview slice at an odd offset):
    /// the only case where we copy, because an `&[i16]` must be aligned.
    UnalignedBytes(Vec<i16>),
    Int16(PyBuffer<i16>),
    Float32(PyBuffer<f32>),
}

/// Audio borrowed from a Python object for the duration of one call.
///
/// Holding the buffer export keeps the memory alive and stops `bytearray` from resizing.
/// Like numpy's own kernels, we read it with the GIL released: the caller must not mutate the
/// same buffer from another thread during the call.
pub struct AudioInput {
    held: Held,
}

// SAFETY: the buffer export is only read (never written) through the `&[T]` views handed out
// by `samples()`, and `PyBuffer` itself is `Send`; the pointer stays valid while `held` lives.
unsafe impl Sync for AudioInput {}

impl AudioInput {
    /// Accepts PCM16 bytes-like objects or 1-D C-contiguous numpy int16/float32 arrays.
    pub fn extract(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        let py = obj.py();
        let is_byte_object = obj.is_instance_of::<PyBytes>()
            || obj.is_instance_of::<PyByteArray>()
            || obj.is_instance_of::<PyMemoryView>();
        if is_byte_object {
            if let Ok(buffer) = PyBuffer::<u8>::get(obj) {
                check_layout(&buffer)?;
                if buffer.len_bytes() % 2 != 0 {
                    return Err(AudioFormatError::new_err(format!(
                        "PCM16 audio must be a whole number of 2-byte samples; got {} bytes",
                        buffer.len_bytes()
                    )));
                }
                if (buffer.buf_ptr() as usize) % std::mem::align_of::<i16>() != 0 {
                    let bytes = buffer.to_vec(py)?;
                    let samples = bytes
                        .chunks_exact(2)
                        .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
                        .collect();
                    return Ok(Self {
                        held: Held::UnalignedBytes(samples),
                    });
                }
                return Ok(Self {
                    held: Held::Bytes(buffer),
                });
            }
        }
        if let Ok(buffer) = PyBuffer::<i16>::get(obj) {
            check_layout(&buffer)?;
            return Ok(Self {
                held: Held::Int16(buffer),
            });
        }
        if let Ok(buffer) = PyBuffer::<f32>::get(obj) {
            check_layout(&buffer)?;
            return Ok(Self {
                held: Held::Float32(buffer),
            });
        }
        Err(AudioTypeError::new_err(describe_unsupported(obj)))
    }

    /// The Python type the audio came in as.
    pub fn kind(&self) -> AudioKind {
        match self.held {
            Held::Bytes(_) | Held::UnalignedBytes(_) => AudioKind::Pcm16Bytes,
            Held::Int16(_) => AudioKind::Int16,
            Held::Float32(_) => AudioKind::Float32,
        }
    }

    /// The samples, borrowed in place.
    pub fn samples(&self) -> Samples<'_> {
        match &self.held {
            Held::Bytes(buffer) => Samples::I16(view(buffer, buffer.len_bytes() / 2)),
            Held::UnalignedBytes(samples) => Samples::I16(samples),
            Held::Int16(buffer) => Samples::I16(view(buffer, buffer.item_count())),
            Held::Float32(buffer) => Samples::F32(view(buffer, buffer.item_count())),
        }
    }
}

fn view<T, U>(buffer: &PyBuffer<T>, len: usize) -> &[U] {
    if len == 0 {
        return &[];
    }
    // SAFETY: `extract` checked that the export is one-dimensional and C-contiguous, so
    // `len` elements of `U` lie at `buf_ptr` (for byte input, `len` = bytes / 2 and the
    // pointer was checked to be 2-byte aligned). The export stays alive as long as `buffer`,
    // which outlives the returned borrow.
    unsafe { std::slice::from_raw_parts(buffer.buf_ptr() as *const U, len) }
}

fn check_layout<T>(buffer: &PyBuffer<T>) -> PyResult<()> {
    // The buffer protocol names the byte order in the format's first character; pyo3's
    // element check ignores it, so a big-endian array would be read with its bytes swapped.
    if matches!(buffer.format().to_bytes().first(), Some(b'>' | b'!')) {
        return Err(AudioTypeError::new_err(format!(
            "big-endian audio (format {:?}) is not supported; convert it with \
             samples.astype(samples.dtype.newbyteorder('<'))",
            buffer.format()
        )));
    }
    if buffer.dimensions() > 1 {
        return Err(AudioFormatError::new_err(format!(
            "audio must be one-dimensional (mono); got shape {:?}",
            buffer.shape()
        )));
    }
    if !buffer.is_c_contiguous() {
        return Err(AudioFormatError::new_err(
            "audio array is not contiguous; pass numpy.ascontiguousarray(samples)",
        ));
    }
    Ok(())
}

fn describe_unsupported(obj: &Bound<'_, PyAny>) -> String {
    const ACCEPTED: &str =
        "pass PCM16 bytes/bytearray/memoryview or a numpy array of dtype int16 or float32";
    if let Ok(dtype) = obj.getattr("dtype") {
        return format!("audio of dtype {dtype} is not supported; {ACCEPTED}");
    }
    if let Ok(view) = obj.cast::<PyMemoryView>() {
        if let Ok(format) = view.getattr("format") {
            return format!("memoryview of format {format:?} is not supported; {ACCEPTED}");
        }
    }
    let type_name = obj
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into());
    format!("audio of type {type_name} is not supported; {ACCEPTED}")
}

/// Returns int16 samples in the caller's type: `bytes` for byte input, an int16 array
/// otherwise (the array takes ownership of `samples`, no copy).
pub fn i16_output<'py>(
    py: Python<'py>,
    kind: AudioKind,
    samples: Vec<i16>,
) -> PyResult<Bound<'py, PyAny>> {
    Ok(match kind {
        AudioKind::Pcm16Bytes => pcm16_bytes(py, &samples)?.into_any(),
        AudioKind::Int16 | AudioKind::Float32 => PyArray1::from_vec(py, samples).into_any(),
    })
}

/// Returns float32 samples as a numpy array that takes ownership of `samples` (no copy).
pub fn f32_output(py: Python<'_>, samples: Vec<f32>) -> Bound<'_, PyAny> {
    PyArray1::from_vec(py, samples).into_any()
}

/// PCM16 little-endian `bytes` from samples (one copy, into the bytes object itself).
pub fn pcm16_bytes<'py>(py: Python<'py>, samples: &[i16]) -> PyResult<Bound<'py, PyBytes>> {
    PyBytes::new_with(py, samples.len() * 2, |out| {
        for (pair, sample) in out.chunks_exact_mut(2).zip(samples) {
            pair.copy_from_slice(&sample.to_le_bytes());
        }
        Ok(())
    })
}
