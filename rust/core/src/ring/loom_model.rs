//! Exhaustive interleaving checks of the ring protocol with `loom`, on rings small enough
//! that every schedule (and every value a Relaxed load may legally return) is explored.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test -p voicecore-core --release ring`.
//! Every sample's value is its position + 1, so a test can tell which write it came from.
//! These models have teeth: without the validation step, or without the consumer's Acquire
//! fence before it loads the claim, both overwrite models fail.

use super::*;
use loom::thread;

/// The consumer's own overwritten count (it alone stores it, so it is exact on its thread).
fn counted_overwritten(consumer: &Consumer) -> u64 {
    consumer.shared.consumer.overwritten.load(Ordering::Relaxed)
}

/// Checks that `samples` are positions `first..` of the sequence (value = position + 1).
fn assert_run_from(first: u64, samples: &[i16]) {
    for (offset, &sample) in samples.iter().enumerate() {
        assert_eq!(i64::from(sample), (first + offset as u64 + 1) as i64);
    }
}

/// A pop racing with a push that laps the whole ring returns only samples that are exactly
/// what was written at their positions, starting right after the overwritten ones.
#[test]
fn pop_racing_an_overwrite_never_returns_a_stale_or_torn_sample() {
    loom::model(|| {
        let (mut producer, mut consumer) = sample_ring(2, OverflowPolicy::OverwriteOldest).unwrap();
        producer.push(&[1, 2]);
        let writer = thread::spawn(move || {
            producer.push(&[3, 4]);
        });
        let mut out = [0; 2];
        let count = consumer.pop_into(&mut out);
        assert_run_from(counted_overwritten(&consumer), &out[..count]);
        let delivered_first = count as u64 + counted_overwritten(&consumer);
        writer.join().unwrap();

        let rest = consumer.pop(4);
        assert_run_from(delivered_first.max(counted_overwritten(&consumer)), &rest);
        let stats = consumer.monitor().stats();
        assert_eq!(stats.written, 4);
        assert_eq!(stats.read + stats.overwritten + stats.available, 4);
    });
}

/// A peek racing with a push returns a contiguous run of the sequence.
#[test]
fn peek_racing_an_overwrite_returns_a_contiguous_run() {
    loom::model(|| {
        let (mut producer, consumer) = sample_ring(2, OverflowPolicy::OverwriteOldest).unwrap();
        producer.push(&[1, 2]);
        let writer = thread::spawn(move || {
            producer.push(&[3]);
        });
        let recent = consumer.peek_last(2);
        if let Some(&first) = recent.first() {
            assert_run_from(u64::from(first as u16) - 1, &recent);
        }
        writer.join().unwrap();
        assert_eq!(consumer.peek_last(2), [2, 3]);
    });
}

/// With the reject policy, a producer filling the ring while the consumer drains it loses,
/// duplicates and reorders nothing: what was accepted is what is received, in order.
#[test]
fn reject_policy_hands_over_every_accepted_sample_once() {
    loom::model(|| {
        let (mut producer, mut consumer) = sample_ring(2, OverflowPolicy::Reject).unwrap();
        let writer = thread::spawn(move || {
            let mut accepted = producer.push(&[1, 2]);
            accepted += producer.push(&[3]);
            accepted
        });
        let mut received = consumer.pop(1);
        let accepted = writer.join().unwrap();
        received.extend(consumer.pop(2));
        assert_eq!(received.len(), accepted);
        assert_run_from(0, &received);
        let stats = consumer.monitor().stats();
        assert_eq!(stats.rejected, 3 - accepted as u64);
        assert_eq!(stats.overwritten, 0);
    });
}
