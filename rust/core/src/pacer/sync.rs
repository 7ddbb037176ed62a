//! A priority-inheritance mutex.
//!
//! The pacer thread shares two short critical sections with Python threads (queueing pushed
//! audio, handing released frames over). With a plain futex mutex, a normal-priority Python
//! thread preempted while holding the lock (both cores busy with other work) would keep the
//! SCHED_FIFO pacer waiting for a whole scheduler time slice: milliseconds of lateness. A
//! `PTHREAD_PRIO_INHERIT` mutex lends the holder the pacer's priority for as long as the pacer
//! waits on it, so the critical section finishes at once (classic priority-inversion cure).

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

/// A mutex whose holder inherits the priority of the highest-priority waiter.
pub struct PiMutex<T> {
    // Boxed: a pthread mutex must not move once initialised.
    raw: Box<UnsafeCell<libc::pthread_mutex_t>>,
    data: UnsafeCell<T>,
}

// SAFETY: the pthread mutex serialises every access to `data`, so sharing the mutex between
// threads hands `T` from one thread to another, which `T: Send` allows.
unsafe impl<T: Send> Sync for PiMutex<T> {}
// SAFETY: moving the mutex moves `T` (Send) and the boxed pthread mutex, whose address does
// not change.
unsafe impl<T: Send> Send for PiMutex<T> {}

impl<T> PiMutex<T> {
    /// A new unlocked mutex around `data`. If the platform refuses priority inheritance (or
    /// the attribute calls fail), the statically initialised plain mutex remains: still
    /// correct, only without the boost.
    pub fn new(data: T) -> Self {
        let raw = Box::new(UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER));
        // SAFETY: `attr` is initialised by pthread_mutexattr_init before use and destroyed
        // after; `raw` points to boxed, not yet shared storage, initialised exactly once here.
        unsafe {
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            if libc::pthread_mutexattr_init(&mut attr) == 0 {
                libc::pthread_mutexattr_setprotocol(&mut attr, libc::PTHREAD_PRIO_INHERIT);
                libc::pthread_mutex_init(raw.get(), &attr);
                libc::pthread_mutexattr_destroy(&mut attr);
            }
        }
        Self {
            raw,
            data: UnsafeCell::new(data),
        }
    }

    /// Locks, blocking until the mutex is free.
    pub fn lock(&self) -> PiGuard<'_, T> {
        // SAFETY: `raw` is an initialised mutex that lives as long as `self`.
        let status = unsafe { libc::pthread_mutex_lock(self.raw.get()) };
        // A default-type mutex only fails on a self-deadlock (EDEADLK), which would be a bug
        // in this module, never an input error; continuing unlocked would be unsound.
        assert_eq!(status, 0, "pthread_mutex_lock failed: {status}");
        PiGuard {
            mutex: self,
            _same_thread: PhantomData,
        }
    }
}

impl<T> Drop for PiMutex<T> {
    fn drop(&mut self) {
        // SAFETY: we own the mutex exclusively (`&mut self`), so it is unlocked and unused.
        unsafe { libc::pthread_mutex_destroy(self.raw.get()) };
    }
}

/// Access to the data of a locked [`PiMutex`]; unlocks when dropped.
pub struct PiGuard<'a, T> {
    mutex: &'a PiMutex<T>,
    // A pthread mutex must be unlocked by the thread that locked it: the guard is !Send.
    _same_thread: PhantomData<*const ()>,
}

impl<T> Deref for PiGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard's existence proves we hold the lock, so no other reference to
        // `data` exists.
        unsafe { &*self.mutex.data.get() }
    }
}

impl<T> DerefMut for PiGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes this the only borrow through the guard.
        unsafe { &mut *self.mutex.data.get() }
    }
}

impl<T> Drop for PiGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: this thread locked the mutex when it created the guard.
        unsafe { libc::pthread_mutex_unlock(self.mutex.raw.get()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn serialises_concurrent_increments() {
        let counter = Arc::new(PiMutex::new(0u64));
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        *counter.lock() += 1;
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        assert_eq!(*counter.lock(), 40_000);
    }
}
