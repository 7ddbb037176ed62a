//! The two clocks a pacer can run on.
//!
//! Real deadlines are nanoseconds of `CLOCK_MONOTONIC`: the clock `clock_nanosleep`,
//! `timerfd` and Python's `time.monotonic_ns()` all read on Linux, so a deadline reported to
//! Python can be compared with Python's own clock. Virtual time starts at 0 and only moves
//! when a test advances it, which makes every release instant predictable.

use crate::error::PacerError;

/// Which clock a [`FramePacer`](super::FramePacer) releases frames against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockKind {
    /// `CLOCK_MONOTONIC`, with a dedicated OS thread sleeping to each deadline.
    Real,
    /// A hand-stepped clock starting at 0 ns; no thread: deadlines are processed on the
    /// thread that calls [`FramePacer::advance_to`](super::FramePacer::advance_to).
    Virtual,
}

impl ClockKind {
    /// Parses `"real"` or `"virtual"`.
    pub fn parse(name: &str) -> Result<Self, PacerError> {
        match name {
            "real" => Ok(Self::Real),
            "virtual" => Ok(Self::Virtual),
            other => Err(PacerError::UnknownClock { name: other.into() }),
        }
    }

    /// The name [`ClockKind::parse`] accepts.
    pub fn name(self) -> &'static str {
        match self {
            Self::Real => "real",
            Self::Virtual => "virtual",
        }
    }
}

/// Now, in nanoseconds of `CLOCK_MONOTONIC`.
pub fn monotonic_now_ns() -> i64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux,
    // so the call cannot fail (the return value carries no information here).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    // `time_t` and `c_long` are i64 on the 64-bit Linux targets voicecore builds for.
    now.tv_sec * 1_000_000_000 + now.tv_nsec
}

/// A `timespec` for an absolute time in nanoseconds (negative times clamp to 0).
pub(crate) fn timespec_of(ns: i64) -> libc::timespec {
    let ns = ns.max(0);
    libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_clock_moves_forward() {
        let first = monotonic_now_ns();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(monotonic_now_ns() - first >= 2_000_000);
    }

    #[test]
    fn parses_clock_names() {
        assert_eq!(ClockKind::parse("real"), Ok(ClockKind::Real));
        assert_eq!(
            ClockKind::parse("virtual").map(ClockKind::name),
            Ok("virtual")
        );
        assert!(matches!(
            ClockKind::parse("wall"),
            Err(PacerError::UnknownClock { .. })
        ));
        let spec = timespec_of(3_000_000_005);
        assert_eq!((spec.tv_sec, spec.tv_nsec), (3, 5));
    }
}
