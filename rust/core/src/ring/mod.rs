//! Lock-free single-producer/single-consumer rings of PCM16 samples.
//!
//! [`sample_ring`] splits one fixed-size ring into a [`Producer`] half and a [`Consumer`] half
//! (the rtrb design): each half is owned by one thread, and neither ever blocks, allocates or
//! takes a lock. A third, cloneable [`Monitor`] reads the counters from any thread.
//!
//! Two overflow policies are chosen at construction ([`OverflowPolicy`]):
//!
//! * [`OverflowPolicy::OverwriteOldest`] for mic capture: the producer (the network reader)
//!   must never wait, so when the consumer falls behind the oldest unread samples are
//!   overwritten and counted.
//! * [`OverflowPolicy::Reject`] for playout: the ring is the backpressure point, so a push
//!   into a full ring stores what fits and reports how much that was; the rest is counted
//!   as rejected and stays with the caller.
//!
//! # The protocol, and why it is free of data races
//!
//! Positions are `u64` sample counts since construction that never wrap (2^64 samples at
//! 192 kHz is three million years); position `p` lives in slot `p % capacity`. Slots are
//! `AtomicI16` accessed with `Relaxed` ordering, so a consumer reading a slot that the producer
//! is overwriting is a *race condition* we detect, never a *data race* (undefined behaviour).
//! The cost is that copies go sample by sample instead of through `memcpy`; a 20 ms frame is
//! still a few hundred nanoseconds, far below the cost of the Python call around it.
//!
//! The producer publishes three things, in this order, for each push ending at position `end`:
//!
//! 1. `claim = end` (Relaxed), then a `Release` fence;
//! 2. the samples, into their slots (Relaxed);
//! 3. `write_pos = end` (Release).
//!
//! The consumer (pop, peek) loads `write_pos` (Acquire), copies the slots of the positions it
//! wants, then issues an `Acquire` fence and loads `claim` (Relaxed): a seqlock whose sequence
//! number is the claim. Every copied position `p` below `claim - capacity` is discarded as
//! overwritten. Why each kept sample is exactly the one written at its position:
//!
//! * It is not older than position `p`: `p < write_pos`, and the Acquire load of `write_pos`
//!   synchronises with the Release store that followed the store of position `p`, so by
//!   coherence the slot read returns that store or a later one.
//! * It is not newer: a later store into the same slot carries a position `q >= p + capacity`
//!   and follows the Release fence after `claim = end_q > q`. If our Relaxed slot load read it,
//!   that fence synchronises with our Acquire fence, so our claim load returns at least
//!   `end_q`, and `p < end_q - capacity` is discarded.
//!
//! The claim covers a whole push before its first sample is stored, so validation is
//! conservative: a sample that was *about* to be overwritten may be discarded too. That only
//! moves the moment at which it is counted as overwritten, which would have happened anyway.
//!
//! With [`OverflowPolicy::Reject`] the producer also loads `read_pos` (Acquire) and writes only
//! into slots the consumer has released with its Release store of `read_pos`, so the consumer's
//! reads happen before the producer's overwrites and validation never discards anything.
//!
//! Both halves are wait-free: a push or a pop is a bounded number of steps whatever the other
//! thread does (no retry loop, no compare-and-swap), which is what a real-time thread needs.
//! The price is that a pop racing a lapping producer returns fewer samples than were
//! available when it started; it does not retry.
//!
//! The model is checked exhaustively on small rings with `loom`
//! (`RUSTFLAGS="--cfg loom" cargo test -p voicecore-core --release ring`) and by two-thread
//! stress tests over sequence numbers.
//!
//! # Counters
//!
//! `written` = samples accepted (for overwrite-oldest: all samples offered), `rejected` =
//! samples a reject-policy ring refused, `read` = samples delivered by pops, `overwritten` =
//! samples the producer overwrote before any pop delivered them, `cleared` = samples dropped by
//! [`Consumer::clear`]. An *underflow* is one pop that asked for more samples than were
//! available when it started (`underflows` counts those pops, `underflow_samples` the samples
//! they were short by); peeks never count as underflows. Whenever neither half is inside a
//! call, `written == read + overwritten + cleared + available`; a snapshot taken during a call
//! may lag it, but never counts a sample twice (the sum is then at most `written`).
//!
//! Samples are stored as PCM16. Float input ([`Producer::push_f32`]) is converted on the way
//! in, with the full scale of 32768 used throughout voicecore, rounding to nearest and clamping
//! to the i16 range (NaN becomes 0).

use std::fmt;
use std::str::FromStr;

pub use crate::error::RingError;

// loom is a dev-dependency, so only the unit-test build under `--cfg loom` swaps in its
// model-checked atomics; a normal build with that flag (an integration test) keeps std's.
#[cfg(all(test, loom))]
use loom::sync::{
    atomic::{fence, AtomicI16, AtomicU64, Ordering},
    Arc,
};
#[cfg(not(all(test, loom)))]
use std::sync::{
    atomic::{fence, AtomicI16, AtomicU64, Ordering},
    Arc,
};

#[cfg(all(test, loom))]
mod loom_model;
#[cfg(all(test, not(loom)))]
mod tests;

/// The largest ring [`sample_ring`] builds, in samples: 2^26 samples (128 MiB) is 23 minutes
/// at 48 kHz, far beyond any real-time buffer, and keeps a mistyped size from exhausting memory.
pub const MAX_CAPACITY: usize = 1 << 26;

/// The valid capacities, in words, for error messages (also used by the Python binding).
pub const CAPACITY_EXPECTED: &str = "a capacity of 1 to 67108864 samples (2**26)";

/// What a push into a full ring does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OverflowPolicy {
    /// Store every sample, overwriting the oldest unread ones (counted as `overwritten`).
    /// For capture: the producer is a real-time source that must never wait.
    OverwriteOldest,
    /// Store only what fits and report it; the rest is counted as `rejected`.
    /// For playout: a full ring is the backpressure signal to the producer.
    Reject,
}

impl OverflowPolicy {
    /// The policy's short name, as the Python API spells it: `"overwrite"` or `"reject"`.
    pub fn name(self) -> &'static str {
        match self {
            OverflowPolicy::OverwriteOldest => "overwrite",
            OverflowPolicy::Reject => "reject",
        }
    }
}

impl fmt::Display for OverflowPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for OverflowPolicy {
    type Err = RingError;

    /// Parses `"overwrite"` or `"reject"` (the names of [`OverflowPolicy::name`]).
    fn from_str(name: &str) -> Result<Self, RingError> {
        match name {
            "overwrite" => Ok(OverflowPolicy::OverwriteOldest),
            "reject" => Ok(OverflowPolicy::Reject),
            other => Err(RingError::UnknownPolicy { name: other.into() }),
        }
    }
}

/// A snapshot of a ring's state and counters, in samples (see the module docs for the exact
/// definitions). Exact whenever neither half is inside a call; taken during a push or pop it
/// may not yet include that call, but it never counts a sample twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RingStats {
    /// The ring's size, in samples.
    pub capacity: u64,
    /// Unread samples waiting for the consumer.
    pub available: u64,
    /// Samples accepted by pushes (overwrite-oldest accepts every sample offered).
    pub written: u64,
    /// Samples delivered by pops.
    pub read: u64,
    /// Samples overwritten by the producer before a pop delivered them.
    pub overwritten: u64,
    /// Samples a reject-policy ring refused because it was full.
    pub rejected: u64,
    /// Pops that asked for more samples than were available.
    pub underflows: u64,
    /// Samples those pops were short by, in total.
    pub underflow_samples: u64,
    /// Unread samples dropped by [`Consumer::clear`].
    pub cleared: u64,
}

/// Creates a ring holding `capacity` samples and returns its two halves.
///
/// # Errors
/// [`RingError::InvalidCapacity`] if `capacity` is 0 or above [`MAX_CAPACITY`],
/// [`RingError::OutOfMemory`] if the memory cannot be allocated.
pub fn sample_ring(
    capacity: usize,
    policy: OverflowPolicy,
) -> Result<(Producer, Consumer), RingError> {
    if capacity == 0 || capacity > MAX_CAPACITY {
        return Err(RingError::InvalidCapacity {
            capacity: capacity as i128,
        });
    }
    let mut slots = Vec::new();
    slots
        .try_reserve_exact(capacity)
        .map_err(|_| RingError::OutOfMemory { capacity })?;
    slots.extend((0..capacity).map(|_| AtomicI16::new(0)));
    let shared = Arc::new(Shared {
        slots: slots.into_boxed_slice(),
        capacity: capacity as u64,
        policy,
        producer: ProducerSide {
            claim: AtomicU64::new(0),
            write_pos: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        },
        consumer: ConsumerSide {
            read_pos: AtomicU64::new(0),
            read: AtomicU64::new(0),
            overwritten: AtomicU64::new(0),
            underflows: AtomicU64::new(0),
            underflow_samples: AtomicU64::new(0),
            cleared: AtomicU64::new(0),
        },
    });
    let producer = Producer {
        shared: Arc::clone(&shared),
        write_pos: 0,
    };
    let consumer = Consumer {
        shared,
        read_pos: 0,
    };
    Ok((producer, consumer))
}

/// Fields only the producer stores to. Aligned to 128 bytes (two cache lines, for CPUs that
/// prefetch lines in pairs) so that the consumer's stores never invalidate them (false sharing).
#[repr(align(128))]
struct ProducerSide {
    /// End position of the push in progress (equal to `write_pos` between pushes).
    claim: AtomicU64,
    /// Every position below this one has been written.
    write_pos: AtomicU64,
    rejected: AtomicU64,
}

/// Fields only the consumer stores to; see [`ProducerSide`] for the alignment.
#[repr(align(128))]
struct ConsumerSide {
    /// Every position below this one has been consumed (delivered, overwritten or cleared).
    read_pos: AtomicU64,
    read: AtomicU64,
    overwritten: AtomicU64,
    underflows: AtomicU64,
    underflow_samples: AtomicU64,
    cleared: AtomicU64,
}

struct Shared {
    slots: Box<[AtomicI16]>,
    capacity: u64,
    policy: OverflowPolicy,
    producer: ProducerSide,
    consumer: ConsumerSide,
}

impl Shared {
    /// The slot index of `position` and how many slots follow it before the ring wraps.
    fn slot_run(&self, position: u64) -> (usize, usize) {
        // The remainder is below `capacity`, which is a `usize`.
        let index = (position % self.capacity) as usize;
        (index, self.slots.len() - index)
    }

    /// Stores `source`, converted, at positions `first..first + source.len()` (at most
    /// `capacity` of them).
    fn store<T: Copy>(&self, first: u64, source: &[T], convert: impl Fn(T) -> i16) {
        let (index, run) = self.slot_run(first);
        let (head, tail) = source.split_at(run.min(source.len()));
        for (slot, &sample) in self.slots[index..].iter().zip(head) {
            slot.store(convert(sample), Ordering::Relaxed);
        }
        for (slot, &sample) in self.slots.iter().zip(tail) {
            slot.store(convert(sample), Ordering::Relaxed);
        }
    }

    /// Copies positions `first..first + out.len()` (at most `capacity` of them) into `out`.
    /// The copy is only trustworthy after [`Shared::validate`].
    fn load(&self, first: u64, out: &mut [i16]) {
        let (index, run) = self.slot_run(first);
        let (head, tail) = out.split_at_mut(run.min(out.len()));
        for (sample, slot) in head.iter_mut().zip(&self.slots[index..]) {
            *sample = slot.load(Ordering::Relaxed);
        }
        for (sample, slot) in tail.iter_mut().zip(self.slots.iter()) {
            *sample = slot.load(Ordering::Relaxed);
        }
    }

    /// After `load(first, out[..count])`: moves the samples that were not overwritten during
    /// the copy to the front of `out` and returns how many were dropped from the front (the
    /// seqlock check explained in the module docs).
    fn validate(&self, first: u64, out: &mut [i16], count: usize) -> usize {
        fence(Ordering::Acquire);
        let claim = self.producer.claim.load(Ordering::Relaxed);
        let valid_from = claim.saturating_sub(self.capacity);
        // At most `count`, which is a `usize`.
        let torn = valid_from.saturating_sub(first).min(count as u64) as usize;
        if torn > 0 {
            out.copy_within(torn..count, 0);
        }
        torn
    }

    /// Unread samples, given the consumer's position (never more than the capacity: older
    /// ones have been overwritten).
    fn unread(&self, read_pos: u64) -> u64 {
        let write_pos = self.producer.write_pos.load(Ordering::Acquire);
        write_pos.saturating_sub(read_pos).min(self.capacity)
    }

    fn stats(&self) -> RingStats {
        // The consumer's counters first, then its position, then the producer's. The
        // consumer publishes its position before the counters of the samples it moved past
        // (see `Consumer::publish`), so if we see a counter's new value we also see the new
        // position: a snapshot taken during a pop can miss that pop's samples, but never
        // count them twice (once in a counter and once as still available).
        let read = self.consumer.read.load(Ordering::Acquire);
        let overwritten = self.consumer.overwritten.load(Ordering::Acquire);
        let cleared = self.consumer.cleared.load(Ordering::Acquire);
        let underflows = self.consumer.underflows.load(Ordering::Relaxed);
        let underflow_samples = self.consumer.underflow_samples.load(Ordering::Relaxed);
        let read_pos = self.consumer.read_pos.load(Ordering::Acquire);
        let written = self.producer.write_pos.load(Ordering::Acquire);
        let rejected = self.producer.rejected.load(Ordering::Relaxed);
        // Samples lapped by the producer that the consumer has not yet stepped over.
        let lapped = written
            .saturating_sub(self.capacity)
            .saturating_sub(read_pos);
        RingStats {
            capacity: self.capacity,
            available: written.saturating_sub(read_pos).min(self.capacity),
            written,
            read,
            overwritten: overwritten + lapped,
            rejected,
            underflows,
            underflow_samples,
            cleared,
        }
    }
}

/// The writing half of a ring: owned by one thread, never blocks, never allocates.
pub struct Producer {
    shared: Arc<Shared>,
    /// Our own copy of `write_pos`: only we store it, so we never need to load it.
    write_pos: u64,
}

impl Producer {
    /// Pushes PCM16 samples and returns how many were accepted: all of them with
    /// [`OverflowPolicy::OverwriteOldest`] (only the last `capacity` of an oversized push can
    /// survive), as many as fit with [`OverflowPolicy::Reject`] (the first ones; the rest are
    /// counted as rejected and should be offered again later).
    pub fn push(&mut self, samples: &[i16]) -> usize {
        self.push_converted(samples, |sample| sample)
    }

    /// Like [`Producer::push`] for float samples of nominal range [-1, 1], converted to PCM16
    /// while they are stored (scale 32768, rounded, clamped; NaN becomes 0).
    pub fn push_f32(&mut self, samples: &[f32]) -> usize {
        // `as` saturates at the i16 range and maps NaN to 0, which is the clamping we want.
        self.push_converted(samples, |sample| (sample * 32768.0).round() as i16)
    }

    fn push_converted<T: Copy>(&mut self, samples: &[T], convert: impl Fn(T) -> i16) -> usize {
        let shared = &*self.shared;
        let accepted = match shared.policy {
            OverflowPolicy::OverwriteOldest => samples.len(),
            OverflowPolicy::Reject => {
                let free = self.free() as usize;
                if samples.len() > free {
                    let refused = (samples.len() - free) as u64;
                    shared
                        .producer
                        .rejected
                        .fetch_add(refused, Ordering::Relaxed);
                }
                samples.len().min(free)
            }
        };
        if accepted == 0 {
            return 0;
        }
        let end = self.write_pos + accepted as u64;
        // Of an oversized push only the last `capacity` samples can survive; the others are
        // overwritten at once, so we skip storing them (they count as written and overwritten).
        let stored = accepted.min(shared.slots.len());
        shared.producer.claim.store(end, Ordering::Relaxed);
        fence(Ordering::Release);
        shared.store(
            end - stored as u64,
            &samples[accepted - stored..accepted],
            convert,
        );
        shared.producer.write_pos.store(end, Ordering::Release);
        self.write_pos = end;
        accepted
    }

    /// Samples that can be pushed before the ring is full (before the oldest unread samples
    /// start being overwritten, or pushes start being rejected).
    pub fn free(&self) -> u64 {
        let read_pos = self.shared.consumer.read_pos.load(Ordering::Acquire);
        let unread = self.write_pos.saturating_sub(read_pos);
        self.shared.capacity.saturating_sub(unread)
    }

    /// The ring's capacity, in samples.
    pub fn capacity(&self) -> usize {
        self.shared.slots.len()
    }

    /// The ring's overflow policy.
    pub fn policy(&self) -> OverflowPolicy {
        self.shared.policy
    }

    /// A read-only handle on the counters, usable from any thread.
    pub fn monitor(&self) -> Monitor {
        Monitor {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The reading half of a ring: owned by one thread, never blocks, never allocates (except in
/// the `Vec`-returning conveniences).
pub struct Consumer {
    shared: Arc<Shared>,
    /// Our own copy of `read_pos`: only we store it, so we never need to load it.
    read_pos: u64,
}

impl Consumer {
    /// Pops up to `out.len()` of the oldest unread samples into the front of `out` and returns
    /// how many. A pop that finds fewer than `out.len()` samples available counts as one
    /// underflow. With overwrite-oldest, samples the producer overwrites while they are being
    /// copied are dropped (and counted as overwritten), so a pop may return fewer samples than
    /// were available; it never returns a sample out of order.
    pub fn pop_into(&mut self, out: &mut [i16]) -> usize {
        self.pop_counted(out, out.len() as u64)
    }

    /// Pops up to `max` samples into a new vector (see [`Consumer::pop_into`]); asking for more
    /// than [`Consumer::available`] counts as an underflow.
    pub fn pop(&mut self, max: usize) -> Vec<i16> {
        let mut out = vec![0; max.min(self.available() as usize)];
        let count = self.pop_counted(&mut out, max as u64);
        out.truncate(count);
        out
    }

    /// Pops into `out` while accounting an underflow against `wanted` samples (which may be
    /// more than `out.len()` when the caller sized `out` from what was available).
    fn pop_counted(&mut self, out: &mut [i16], wanted: u64) -> usize {
        let shared = &*self.shared;
        let write_pos = shared.producer.write_pos.load(Ordering::Acquire);
        let lapped = step_over_lapped(&mut self.read_pos, shared.capacity, write_pos);
        let available = write_pos - self.read_pos;
        if available < wanted {
            shared.consumer.underflows.fetch_add(1, Ordering::Relaxed);
            shared
                .consumer
                .underflow_samples
                .fetch_add(wanted - available, Ordering::Relaxed);
        }
        // At most `out.len()`, which is a `usize`.
        let count = available.min(out.len() as u64) as usize;
        let first = self.read_pos;
        let mut torn = 0;
        if count > 0 {
            shared.load(first, &mut out[..count]);
            torn = shared.validate(first, out, count);
        }
        self.read_pos = first + count as u64;
        let delivered = count - torn;
        self.publish(delivered as u64, lapped + torn as u64, 0);
        delivered
    }

    /// Publishes our position (releasing the slots behind it to a reject-policy producer),
    /// then adds the samples we moved past to their counters: in that order, which
    /// [`Shared::stats`] relies on.
    fn publish(&self, delivered: u64, overwritten: u64, cleared: u64) {
        let consumer = &self.shared.consumer;
        consumer.read_pos.store(self.read_pos, Ordering::Release);
        for (counter, moved_past) in [
            (&consumer.read, delivered),
            (&consumer.overwritten, overwritten),
            (&consumer.cleared, cleared),
        ] {
            if moved_past > 0 {
                counter.fetch_add(moved_past, Ordering::Release);
            }
        }
    }

    /// Copies the most recent `min(out.len(), capacity)` samples the producer wrote into the
    /// front of `out`, oldest first, without consuming anything, and returns how many.
    ///
    /// This is speech pre-roll: it includes samples already popped, as long as the producer
    /// has not overwritten them yet (the last `capacity` written, minus any overwritten during
    /// the copy), so a VAD that has consumed the frames before a speech onset can still fetch
    /// them. It never counts as an underflow.
    pub fn peek_last_into(&self, out: &mut [i16]) -> usize {
        let shared = &*self.shared;
        let write_pos = shared.producer.write_pos.load(Ordering::Acquire);
        // At most `out.len()`, which is a `usize`.
        let count = write_pos.min(shared.capacity).min(out.len() as u64) as usize;
        if count == 0 {
            return 0;
        }
        let first = write_pos - count as u64;
        shared.load(first, &mut out[..count]);
        let torn = shared.validate(first, out, count);
        count - torn
    }

    /// The most recent `max` samples in a new vector (see [`Consumer::peek_last_into`]).
    pub fn peek_last(&self, max: usize) -> Vec<i16> {
        let mut out = vec![0; max.min(self.shared.slots.len())];
        let count = self.peek_last_into(&mut out);
        out.truncate(count);
        out
    }

    /// Drops every unread sample (for a barge-in flush) and returns how many; they are
    /// counted as cleared. Samples pushed after the call starts are kept.
    pub fn clear(&mut self) -> u64 {
        let write_pos = self.shared.producer.write_pos.load(Ordering::Acquire);
        let lapped = step_over_lapped(&mut self.read_pos, self.shared.capacity, write_pos);
        let cleared = write_pos - self.read_pos;
        self.read_pos = write_pos;
        self.publish(0, lapped, cleared);
        cleared
    }

    /// Unread samples that a pop would return now (at most the capacity).
    pub fn available(&self) -> u64 {
        self.shared.unread(self.read_pos)
    }

    /// The ring's capacity, in samples.
    pub fn capacity(&self) -> usize {
        self.shared.slots.len()
    }

    /// The ring's overflow policy.
    pub fn policy(&self) -> OverflowPolicy {
        self.shared.policy
    }

    /// A read-only handle on the counters, usable from any thread.
    pub fn monitor(&self) -> Monitor {
        Monitor {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Moves a consumer position past the samples the producer has lapped (they are gone) and
/// returns how many that was.
fn step_over_lapped(read_pos: &mut u64, capacity: u64, write_pos: u64) -> u64 {
    let oldest_retained = write_pos.saturating_sub(capacity);
    let lapped = oldest_retained.saturating_sub(*read_pos);
    *read_pos += lapped;
    lapped
}

/// A read-only view of a ring's counters, for observability: cloneable, and safe to use from
/// any thread while the producer and consumer run (it only loads atomics).
#[derive(Clone)]
pub struct Monitor {
    shared: Arc<Shared>,
}

impl Monitor {
    /// A snapshot of the counters (see [`RingStats`] for when it is exact).
    pub fn stats(&self) -> RingStats {
        self.shared.stats()
    }

    /// Unread samples, as last published by the consumer (at most the capacity).
    pub fn available(&self) -> u64 {
        let read_pos = self.shared.consumer.read_pos.load(Ordering::Acquire);
        self.shared.unread(read_pos)
    }

    /// Samples that can be pushed before the ring is full, as last published by the consumer.
    pub fn free(&self) -> u64 {
        self.shared.capacity - self.available()
    }

    /// The ring's capacity, in samples.
    pub fn capacity(&self) -> usize {
        self.shared.slots.len()
    }

    /// The ring's overflow policy.
    pub fn policy(&self) -> OverflowPolicy {
        self.shared.policy
    }
}

impl fmt::Debug for Producer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("stats", &self.shared.stats())
            .finish()
    }
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("stats", &self.shared.stats())
            .finish()
    }
}

impl fmt::Debug for Monitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Monitor")
            .field("stats", &self.shared.stats())
            .finish()
    }
}
