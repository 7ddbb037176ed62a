//! File descriptors that wake a sleeper: eventfds (pacer -> Trio, Python -> pacer) and the
//! pacer thread's absolute timer.
//!
//! The pacer thread sleeps in `poll` on two descriptors: a `timerfd` armed with the absolute
//! deadline (`TFD_TIMER_ABSTIME`, so a preemption between computing and arming the wait can
//! never stretch it, unlike a relative timeout) and an eventfd that any API call writes when
//! it changes the schedule. Released frames and queue space are announced to Python the
//! same way, through eventfds Trio waits on with `trio.lowlevel.wait_readable`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::error::OsError;

/// A non-blocking, close-on-exec Linux eventfd used as a level-triggered "something
/// happened" flag: readable from the first [`signal`](Self::signal) until [`drain`](Self::drain).
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// Creates the eventfd.
    pub fn new() -> Result<Self, OsError> {
        // SAFETY: plain syscall wrapper; the flags are valid for eventfd(2).
        let raw = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(OsError::last("eventfd"));
        }
        Ok(Self {
            // SAFETY: `raw` is a fresh descriptor that nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
        })
    }

    /// Makes the descriptor readable (idempotent until drained).
    pub fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our own descriptor. The only possible
        // failure is EAGAIN when the counter is at its maximum, which still leaves the
        // descriptor readable: exactly what a signal wants.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Makes the descriptor unreadable again; returns whether it had been signalled.
    pub fn drain(&self) -> bool {
        let mut count: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64 from our own non-blocking descriptor; when
        // it is not signalled the read fails with EAGAIN and leaves `count` untouched.
        let read = unsafe { libc::read(self.fd.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
        read == 8 && count > 0
    }

    /// The raw descriptor, for `poll` or Trio's `wait_readable`. It stays owned by `self`.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A `timerfd` on `CLOCK_MONOTONIC` armed with absolute deadlines.
#[derive(Debug)]
pub struct DeadlineTimer {
    fd: OwnedFd,
}

impl DeadlineTimer {
    /// Creates a disarmed timer.
    pub fn new() -> Result<Self, OsError> {
        // SAFETY: plain syscall wrapper with valid flags.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(OsError::last("timerfd_create"));
        }
        Ok(Self {
            // SAFETY: `raw` is a fresh descriptor that nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(raw) },
        })
    }

    /// Fires at `deadline_ns` of `CLOCK_MONOTONIC` (at once if it has passed), or never when
    /// `None`.
    pub fn arm(&self, deadline_ns: Option<i64>) {
        let value = match deadline_ns {
            // A zero it_value would disarm the timer: an overdue deadline becomes 1 ns,
            // which has passed and so fires immediately.
            Some(deadline) => super::clock::timespec_of(deadline.max(1)),
            None => super::clock::timespec_of(0),
        };
        let spec = libc::itimerspec {
            it_interval: super::clock::timespec_of(0),
            it_value: value,
        };
        // SAFETY: valid descriptor and itimerspec; the old-value pointer may be null. With
        // valid arguments timerfd_settime cannot fail.
        unsafe {
            libc::timerfd_settime(
                self.fd.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
    }

    /// Blocks until the timer fires or `wake` is signalled, then clears both. Returns early
    /// on a signal (EINTR): the caller re-reads the clock and the schedule anyway.
    pub fn wait(&self, wake: &EventFd) {
        let mut fds = [
            libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: wake.raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfds for the duration of the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if ready > 0 {
            if fds[0].revents & libc::POLLIN != 0 {
                let mut expirations: u64 = 0;
                // SAFETY: reads the 8-byte expiration count into a valid u64.
                unsafe {
                    libc::read(
                        self.fd.as_raw_fd(),
                        (&mut expirations as *mut u64).cast(),
                        8,
                    )
                };
            }
            if fds[1].revents & libc::POLLIN != 0 {
                wake.drain();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::clock::monotonic_now_ns;
    use super::*;

    #[test]
    fn eventfd_is_a_level_flag() {
        let flag = EventFd::new().unwrap();
        assert!(!flag.drain());
        flag.signal();
        flag.signal();
        assert!(flag.drain());
        assert!(!flag.drain());
    }

    #[test]
    fn timer_fires_at_an_absolute_deadline_and_wake_interrupts_it() {
        let timer = DeadlineTimer::new().unwrap();
        let wake = EventFd::new().unwrap();
        let deadline = monotonic_now_ns() + 3_000_000;
        timer.arm(Some(deadline));
        timer.wait(&wake);
        assert!(monotonic_now_ns() >= deadline);

        timer.arm(None);
        wake.signal();
        let before = monotonic_now_ns();
        timer.wait(&wake);
        assert!(monotonic_now_ns() - before < 1_000_000_000);
        assert!(!wake.drain(), "wait must clear the wake flag");
    }
}
