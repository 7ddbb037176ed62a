//! Single-thread behaviour of the ring, then two-thread stress tests over sequence numbers.

use super::*;

fn ring(capacity: usize, policy: OverflowPolicy) -> (Producer, Consumer) {
    sample_ring(capacity, policy).expect("valid capacity")
}

/// The sample a stress producer writes at `position`: the position itself, modulo 2^16.
fn sequence_sample(position: u64) -> i16 {
    position as u16 as i16
}

/// A tiny xorshift generator, so chunk sizes vary without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % bound as u64) as usize
    }
}

#[test]
fn rejects_zero_and_oversized_capacities() {
    for capacity in [0, MAX_CAPACITY + 1, usize::MAX] {
        let error = sample_ring(capacity, OverflowPolicy::Reject).unwrap_err();
        assert_eq!(
            error,
            RingError::InvalidCapacity {
                capacity: capacity as i128
            },
            "{error}"
        );
        assert!(error.to_string().contains("67108864"), "{error}");
    }
    assert_eq!(ring(1, OverflowPolicy::Reject).0.capacity(), 1);
}

#[test]
fn policy_names_round_trip_and_unknown_names_are_refused() {
    for policy in [OverflowPolicy::OverwriteOldest, OverflowPolicy::Reject] {
        assert_eq!(policy.name().parse::<OverflowPolicy>(), Ok(policy));
    }
    let error = "drop".parse::<OverflowPolicy>().unwrap_err();
    assert_eq!(
        error,
        RingError::UnknownPolicy {
            name: "drop".into()
        }
    );
    assert_eq!(
        error.to_string(),
        "policy = \"drop\" is invalid; expected \"overwrite\" or \"reject\""
    );
}

#[test]
fn pops_in_order_across_the_wrap() {
    let (mut producer, mut consumer) = ring(5, OverflowPolicy::Reject);
    let mut next = 0i16;
    for _ in 0..7 {
        let chunk = [next, next + 1, next + 2];
        assert_eq!(producer.push(&chunk), 3);
        assert_eq!(consumer.pop(3), chunk);
        next += 3;
    }
    assert_eq!(consumer.available(), 0);
    let stats = consumer.monitor().stats();
    assert_eq!((stats.written, stats.read, stats.underflows), (21, 21, 0));
}

#[test]
fn reject_policy_accepts_what_fits_and_counts_the_rest() {
    let (mut producer, mut consumer) = ring(4, OverflowPolicy::Reject);
    assert_eq!(producer.push(&[1, 2, 3]), 3);
    assert_eq!(producer.free(), 1);
    assert_eq!(producer.push(&[4, 5, 6]), 1);
    assert_eq!(producer.push(&[7]), 0);
    assert_eq!(consumer.pop(10), [1, 2, 3, 4]);
    let stats = producer.monitor().stats();
    assert_eq!(
        (stats.written, stats.rejected, stats.overwritten),
        (4, 3, 0)
    );
    assert_eq!(producer.push(&[5, 6]), 2);
    assert_eq!(consumer.pop(2), [5, 6]);
}

#[test]
fn overwrite_policy_drops_the_oldest_and_counts_them() {
    let (mut producer, mut consumer) = ring(4, OverflowPolicy::OverwriteOldest);
    assert_eq!(producer.push(&[1, 2, 3]), 3);
    assert_eq!(producer.push(&[4, 5, 6]), 3);
    assert_eq!(producer.free(), 0);
    let monitor = consumer.monitor();
    // Counted as soon as they are overwritten, before the consumer notices.
    assert_eq!(monitor.stats().overwritten, 2);
    assert_eq!(consumer.available(), 4);
    assert_eq!(consumer.pop(2), [3, 4]);
    assert_eq!(producer.push(&[7]), 1);
    assert_eq!(consumer.pop(10), [5, 6, 7]);
    let stats = monitor.stats();
    assert_eq!(
        (
            stats.written,
            stats.read,
            stats.overwritten,
            stats.available
        ),
        (7, 5, 2, 0)
    );
}

#[test]
fn an_oversized_push_keeps_its_last_capacity_samples() {
    let (mut producer, mut consumer) = ring(3, OverflowPolicy::OverwriteOldest);
    assert_eq!(producer.push(&[1, 2, 3, 4, 5, 6, 7]), 7);
    assert_eq!(consumer.peek_last(10), [5, 6, 7]);
    assert_eq!(consumer.pop(10), [5, 6, 7]);
    let stats = consumer.monitor().stats();
    assert_eq!((stats.written, stats.overwritten, stats.read), (7, 4, 3));

    let (mut producer, mut consumer) = ring(3, OverflowPolicy::Reject);
    assert_eq!(producer.push(&[1, 2, 3, 4, 5]), 3);
    assert_eq!(consumer.pop(10), [1, 2, 3]);
}

#[test]
fn underflow_is_one_pop_that_found_fewer_samples_than_it_asked_for() {
    let (mut producer, mut consumer) = ring(8, OverflowPolicy::Reject);
    producer.push(&[1, 2, 3]);
    let mut out = [0; 5];
    assert_eq!(consumer.pop_into(&mut out), 3);
    assert_eq!(out[..3], [1, 2, 3]);
    assert!(consumer.pop(2).is_empty());
    assert!(consumer.pop(0).is_empty());
    producer.push(&[4, 5]);
    assert_eq!(consumer.pop(2), [4, 5]);
    assert_eq!(consumer.peek_last(20).len(), 5);
    let stats = consumer.monitor().stats();
    assert_eq!((stats.underflows, stats.underflow_samples), (2, 4));
}

#[test]
fn peek_last_returns_recent_history_without_consuming() {
    let (mut producer, mut consumer) = ring(6, OverflowPolicy::OverwriteOldest);
    assert!(consumer.peek_last(4).is_empty());
    producer.push(&[1, 2, 3, 4]);
    assert_eq!(consumer.peek_last(2), [3, 4]);
    assert_eq!(consumer.pop(4), [1, 2, 3, 4]);
    // Already consumed, still retained: this is the pre-roll before a speech onset.
    assert_eq!(consumer.peek_last(3), [2, 3, 4]);
    producer.push(&[5, 6, 7, 8]);
    assert_eq!(consumer.peek_last(100), [3, 4, 5, 6, 7, 8]);
    let mut out = [0; 2];
    assert_eq!(consumer.peek_last_into(&mut out), 2);
    assert_eq!(out, [7, 8]);
    assert_eq!(consumer.available(), 4);
    assert_eq!(consumer.monitor().stats().read, 4);
}

#[test]
fn float_samples_are_scaled_rounded_and_clamped() {
    let (mut producer, mut consumer) = ring(8, OverflowPolicy::Reject);
    let input = [0.0, 0.5, -0.5, 1.0, -1.0, 2.0, f32::NAN, 1.0 / 65536.0];
    assert_eq!(producer.push_f32(&input), 8);
    assert_eq!(
        consumer.pop(8),
        [0, 16384, -16384, 32767, -32768, 32767, 0, 1]
    );
}

#[test]
fn clear_drops_unread_samples_and_keeps_the_invariant() {
    let (mut producer, mut consumer) = ring(4, OverflowPolicy::OverwriteOldest);
    producer.push(&[1, 2, 3, 4, 5, 6]);
    assert_eq!(consumer.pop(1), [3]);
    assert_eq!(consumer.clear(), 3);
    assert_eq!(consumer.available(), 0);
    producer.push(&[7]);
    assert_eq!(consumer.pop(4), [7]);
    let stats = consumer.monitor().stats();
    assert_eq!(
        stats.written,
        stats.read + stats.overwritten + stats.cleared + stats.available
    );
    assert_eq!((stats.overwritten, stats.cleared), (2, 3));
}

/// Overwrite policy under two threads: everything the consumer gets is an in-order run of
/// the producer's sequence, the gaps between runs are exactly the overwritten count, peeks
/// are contiguous, and at the end `written == read + overwritten + available`.
#[test]
fn stress_overwrite_policy_never_tears_or_reorders() {
    const TOTAL: u64 = 3_000_000;
    for capacity in [7, 256, 1000] {
        let (mut producer, mut consumer) = ring(capacity, OverflowPolicy::OverwriteOldest);
        let writer = std::thread::spawn(move || {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
            let mut chunk = Vec::new();
            let mut position = 0u64;
            while position < TOTAL {
                let len = 1 + rng.below(2 * capacity);
                chunk.clear();
                chunk.extend((position..position + len as u64).map(sequence_sample));
                assert_eq!(producer.push(&chunk), len);
                position += len as u64;
            }
            position
        });
        let monitor = consumer.monitor();
        // A third thread takes snapshots throughout: they may lag a call in progress but
        // never count a sample twice, and the counters only grow.
        let observing = Arc::new(std::sync::atomic::AtomicBool::new(true));
        // The consumer starts only once the observer is running, so their work overlaps
        // however the OS schedules the threads.
        let observer_started = Arc::new(std::sync::Barrier::new(2));
        let observer = {
            let (monitor, observing) = (monitor.clone(), Arc::clone(&observing));
            let started = Arc::clone(&observer_started);
            std::thread::spawn(move || {
                let mut previous = RingStats::default();
                let mut snapshots = 0u64;
                loop {
                    let stats = monitor.stats();
                    let accounted = stats.read + stats.overwritten + stats.cleared;
                    assert!(accounted + stats.available <= stats.written, "{stats:?}");
                    assert!(stats.read >= previous.read && stats.written >= previous.written);
                    previous = stats;
                    snapshots += 1;
                    if snapshots == 1 {
                        started.wait();
                    }
                    if !observing.load(Ordering::Relaxed) {
                        return snapshots;
                    }
                }
            })
        };
        observer_started.wait();
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let mut out = vec![0i16; capacity + 3];
        let mut expected = 0u64;
        let mut overwritten_seen = 0u64;
        let mut lapped_pops = 0u64;
        loop {
            let finished = writer.is_finished();
            if rng.below(8) == 0 {
                let peeked = consumer.peek_last_into(&mut out);
                assert!(out[..peeked]
                    .windows(2)
                    .all(|pair| pair[1] == pair[0].wrapping_add(1)));
            }
            let wanted = 1 + rng.below(out.len());
            let count = consumer.pop_into(&mut out[..wanted]);
            // The consumer's own count (without the producer's not-yet-stepped-over lead):
            // the samples it skipped in this pop are exactly the newly overwritten ones.
            let overwritten = consumer.shared.consumer.overwritten.load(Ordering::Relaxed);
            if overwritten > overwritten_seen {
                lapped_pops += 1;
            }
            expected += overwritten - overwritten_seen;
            overwritten_seen = overwritten;
            for (offset, &sample) in out[..count].iter().enumerate() {
                assert_eq!(sample, sequence_sample(expected + offset as u64));
            }
            expected += count as u64;
            if finished && consumer.available() == 0 {
                break;
            }
        }
        let written = writer.join().expect("producer thread");
        observing.store(false, Ordering::Relaxed);
        assert!(observer.join().expect("observer thread") > 0);
        let stats = monitor.stats();
        assert_eq!(stats.written, written);
        assert_eq!(stats.read + stats.overwritten + stats.available, written);
        assert_eq!(expected, written);
        assert!(lapped_pops > 0, "the producer never lapped the consumer");
    }
}

/// Reject policy under two threads: the producer retries what was refused, so the consumer
/// must receive the whole sequence exactly once, in order (checked sample by sample and by a
/// checksum over the values).
#[test]
fn stress_reject_policy_loses_and_duplicates_nothing() {
    const TOTAL: u64 = 3_000_000;
    for capacity in [5, 320, 999] {
        let (mut producer, mut consumer) = ring(capacity, OverflowPolicy::Reject);
        let writer = std::thread::spawn(move || {
            let mut rng = Rng(0xD1B5_4A32_D192_ED03);
            let mut chunk = Vec::new();
            let mut position = 0u64;
            let mut checksum = 0u64;
            while position < TOTAL {
                let len = (1 + rng.below(2 * capacity)).min((TOTAL - position) as usize);
                chunk.clear();
                chunk.extend((position..position + len as u64).map(sequence_sample));
                let accepted = producer.push(&chunk);
                checksum = chunk[..accepted].iter().fold(checksum, |sum, &s| {
                    sum.wrapping_mul(31).wrapping_add(s as u64)
                });
                position += accepted as u64;
                if accepted == 0 {
                    std::thread::yield_now();
                }
            }
            checksum
        });
        let mut rng = Rng(0xA076_1D64_78BD_642F);
        let mut out = vec![0i16; capacity + 3];
        let mut received = 0u64;
        let mut checksum = 0u64;
        while received < TOTAL {
            let wanted = 1 + rng.below(out.len());
            let count = consumer.pop_into(&mut out[..wanted]);
            for (offset, &sample) in out[..count].iter().enumerate() {
                assert_eq!(sample, sequence_sample(received + offset as u64));
                checksum = checksum.wrapping_mul(31).wrapping_add(sample as u64);
            }
            received += count as u64;
        }
        assert_eq!(writer.join().expect("producer thread"), checksum);
        let stats = consumer.monitor().stats();
        assert_eq!(
            (stats.written, stats.read, stats.overwritten),
            (TOTAL, TOTAL, 0)
        );
        assert!(stats.rejected > 0, "the ring never filled up");
    }
}
