//! The pacer thread: wait for the earliest deadline (absolute), serve, repeat.

use std::sync::{mpsc, Arc};

use super::priority::{configure_current_thread, Scheduling};
use super::wake::DeadlineTimer;
use super::Shared;
use crate::error::{OsError, PacerError};

/// Starts the pacer thread; returns once it has configured its scheduling (so the caller can
/// report what it got).
pub(super) fn spawn(
    shared: Arc<Shared>,
    realtime: bool,
) -> Result<(Scheduling, std::thread::JoinHandle<()>), PacerError> {
    let timer = DeadlineTimer::new()?;
    let (report, scheduling) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("voicecore-pacer".into())
        .spawn(move || {
            // The receiver waits for this; if it has gone, nobody needs the answer.
            let _ = report.send(configure_current_thread(realtime));
            run(&shared, &timer);
        })
        .map_err(|error| OsError {
            operation: "spawning the pacer thread",
            message: error.to_string(),
        })?;
    let scheduling = scheduling.recv().map_err(|_| OsError {
        operation: "starting the pacer thread",
        message: "the thread exited before reporting its scheduling".into(),
    })?;
    Ok((scheduling, handle))
}

fn run(shared: &Shared, timer: &DeadlineTimer) {
    loop {
        let next = {
            let mut engine = shared.engine.lock();
            if engine.stopped {
                return;
            }
            engine.run_due(&shared.handoff, &shared.released, i64::MAX)
        };
        // Armed outside the lock. A schedule change after the computation above signals
        // `wake`, which makes the wait return at once, so no deadline is ever missed.
        timer.arm(next);
        timer.wait(&shared.wake);
    }
}
