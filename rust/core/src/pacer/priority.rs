//! Asking the OS to run the pacer thread before everything else.
//!
//! Measured on this project's 2-core machine with both cores saturated by other processes
//! (docs: RECIPES.md, "Pacing thread priority"): p99 lateness 3.1 ms as a normal thread,
//! 0.006 ms at nice -20, 0.000 ms under SCHED_FIFO. So the thread asks for SCHED_FIFO at a
//! modest priority (10: above every normal thread, below the kernel's own RT threads and
//! anything a deployer runs at a higher RT priority), else the lowest nice value it may take,
//! else stays normal, and reports what it got. A container without CAP_SYS_NICE and with
//! RLIMIT_RTPRIO 0 simply ends up "normal", which is why the result is reported, not assumed.
//!
//! Memory is deliberately not locked (`mlockall`): that would pin the whole Python process.

use std::fmt;

/// The SCHED_FIFO priority the pacer thread asks for.
pub const FIFO_PRIORITY: i32 = 10;

/// The scheduling class a pacer thread obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduling {
    /// Real-time FIFO scheduling at this priority.
    Fifo(i32),
    /// Normal scheduling at this (negative) nice value.
    Nice(i32),
    /// Normal scheduling, default nice value (not permitted more, or not asked).
    Normal,
    /// No thread at all: a virtual-clock pacer runs on its caller's thread.
    Virtual,
}

impl fmt::Display for Scheduling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fifo(priority) => write!(f, "SCHED_FIFO({priority})"),
            Self::Nice(nice) => write!(f, "nice {nice}"),
            Self::Normal => f.write_str("normal"),
            Self::Virtual => f.write_str("virtual clock (no thread)"),
        }
    }
}

/// Configures the calling thread for pacing and returns what it obtained.
///
/// The timer slack (by default 50 us for normal threads, which the kernel may add to every
/// timed wake to batch them) is set to 1 ns in every case: it needs no privilege. With
/// `realtime` false the thread keeps its normal class (used to measure what SCHED_FIFO buys).
pub fn configure_current_thread(realtime: bool) -> Scheduling {
    // SAFETY: PR_SET_TIMERSLACK takes one unsigned long argument and affects only the calling
    // thread; failure leaves the default slack, which is harmless.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
    if !realtime {
        return Scheduling::Normal;
    }
    let param = libc::sched_param {
        sched_priority: FIFO_PRIORITY,
    };
    // SAFETY: pid 0 means the calling thread; `param` is a valid sched_param. Failure (EPERM)
    // changes nothing and is handled below.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } == 0 {
        return Scheduling::Fifo(FIFO_PRIORITY);
    }
    // On Linux the nice value is per thread: PRIO_PROCESS with our thread id changes only us.
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as libc::id_t;
    for nice in -20..0 {
        // SAFETY: valid `which`/`who` for the calling thread; failure (EACCES/EPERM beyond
        // RLIMIT_NICE) changes nothing, and we try the next, more modest value.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) } == 0 {
            return Scheduling::Nice(nice);
        }
    }
    Scheduling::Normal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_reports_what_it_obtained() {
        let (normal, asked) = std::thread::spawn(|| {
            (
                configure_current_thread(false),
                configure_current_thread(true),
            )
        })
        .join()
        .unwrap();
        assert_eq!(normal, Scheduling::Normal);
        assert!(matches!(
            asked,
            Scheduling::Fifo(FIFO_PRIORITY) | Scheduling::Nice(_) | Scheduling::Normal
        ));
        assert_eq!(Scheduling::Fifo(10).to_string(), "SCHED_FIFO(10)");
        assert_eq!(Scheduling::Nice(-20).to_string(), "nice -20");
    }
}
