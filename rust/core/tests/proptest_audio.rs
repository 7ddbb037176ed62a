//! Property tests of the sample ring and the streaming resampler: arbitrary operation
//! sequences and chunkings against simple reference models.
//!
//! The case count defaults to 64 per property so `cargo test --release` stays fast; set
//! `PROPTEST_CASES` for a longer run (e.g. `PROPTEST_CASES=5000`).

use std::collections::VecDeque;

use proptest::prelude::*;
use voicecore_core::resample::{Resampler, COMMON_RATES, MAX_RATE, MIN_RATE};
use voicecore_core::ring::{sample_ring, OverflowPolicy, RingStats};
use voicecore_core::ResampleError;

/// 64 cases unless `PROPTEST_CASES` says otherwise (proptest's own default is 256).
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(64);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

// --- ring -----------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum RingOp {
    Push(Vec<i16>),
    PushF32(Vec<f32>),
    Pop(usize),
    PopInto(usize),
    PeekLast(usize),
    Clear,
}

fn float_sample() -> impl Strategy<Value = f32> {
    prop_oneof![
        8 => -1.5f32..1.5f32,
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NEG_INFINITY),
    ]
}

fn ring_op(capacity: usize) -> impl Strategy<Value = RingOp> {
    // Sizes up to a little over twice the capacity: oversized pushes and pops included.
    let size = 0..=capacity * 2 + 3;
    prop_oneof![
        4 => prop::collection::vec(any::<i16>(), size.clone()).prop_map(RingOp::Push),
        1 => prop::collection::vec(float_sample(), size.clone()).prop_map(RingOp::PushF32),
        3 => size.clone().prop_map(RingOp::Pop),
        2 => size.clone().prop_map(RingOp::PopInto),
        2 => size.prop_map(RingOp::PeekLast),
        1 => Just(RingOp::Clear),
    ]
}

/// The ring's specification: a bounded queue of unread samples plus the last `capacity`
/// samples written (what `peek_last` may return), with the counters of `RingStats`.
struct RingModel {
    capacity: usize,
    policy: OverflowPolicy,
    unread: VecDeque<i16>,
    recent: VecDeque<i16>,
    stats: RingStats,
}

impl RingModel {
    fn new(capacity: usize, policy: OverflowPolicy) -> Self {
        Self {
            capacity,
            policy,
            unread: VecDeque::new(),
            recent: VecDeque::new(),
            stats: RingStats {
                capacity: capacity as u64,
                ..RingStats::default()
            },
        }
    }

    fn push(&mut self, samples: &[i16]) -> usize {
        let accepted = match self.policy {
            OverflowPolicy::OverwriteOldest => samples.len(),
            OverflowPolicy::Reject => samples.len().min(self.capacity - self.unread.len()),
        };
        self.stats.rejected += (samples.len() - accepted) as u64;
        self.stats.written += accepted as u64;
        for &sample in &samples[..accepted] {
            if self.unread.len() == self.capacity {
                self.unread.pop_front();
                self.stats.overwritten += 1;
            }
            self.unread.push_back(sample);
            if self.recent.len() == self.capacity {
                self.recent.pop_front();
            }
            self.recent.push_back(sample);
        }
        accepted
    }

    fn pop(&mut self, wanted: usize) -> Vec<i16> {
        if self.unread.len() < wanted {
            self.stats.underflows += 1;
            self.stats.underflow_samples += (wanted - self.unread.len()) as u64;
        }
        let count = wanted.min(self.unread.len());
        self.stats.read += count as u64;
        self.unread.drain(..count).collect()
    }

    fn peek_last(&self, max: usize) -> Vec<i16> {
        let count = max.min(self.recent.len());
        self.recent
            .iter()
            .skip(self.recent.len() - count)
            .copied()
            .collect()
    }

    fn clear(&mut self) -> u64 {
        let cleared = self.unread.len() as u64;
        self.stats.cleared += cleared;
        self.unread.clear();
        cleared
    }

    fn snapshot(&self) -> RingStats {
        RingStats {
            available: self.unread.len() as u64,
            ..self.stats
        }
    }
}

/// The PCM16 value a float sample is stored as (the module's documented conversion).
fn stored_f32(sample: f32) -> i16 {
    (sample * 32768.0).round() as i16
}

fn policy() -> impl Strategy<Value = OverflowPolicy> {
    prop_oneof![
        Just(OverflowPolicy::OverwriteOldest),
        Just(OverflowPolicy::Reject)
    ]
}

fn ring_case() -> impl Strategy<Value = (usize, OverflowPolicy, Vec<RingOp>)> {
    (1usize..=64, policy()).prop_flat_map(|(capacity, policy)| {
        (
            Just(capacity),
            Just(policy),
            prop::collection::vec(ring_op(capacity), 0..60),
        )
    })
}

proptest! {
    #![proptest_config(config())]

    /// Every operation returns what the model returns, and the counters match after each.
    #[test]
    fn ring_matches_model((capacity, policy, ops) in ring_case()) {
        let (mut producer, mut consumer) = sample_ring(capacity, policy).unwrap();
        let monitor = consumer.monitor();
        let mut model = RingModel::new(capacity, policy);
        for op in &ops {
            match op {
                RingOp::Push(samples) => {
                    prop_assert_eq!(producer.push(samples), model.push(samples));
                }
                RingOp::PushF32(samples) => {
                    let converted: Vec<i16> = samples.iter().copied().map(stored_f32).collect();
                    prop_assert_eq!(producer.push_f32(samples), model.push(&converted));
                }
                RingOp::Pop(max) => prop_assert_eq!(consumer.pop(*max), model.pop(*max)),
                RingOp::PopInto(len) => {
                    let mut out = vec![0i16; *len];
                    let count = consumer.pop_into(&mut out);
                    prop_assert_eq!(&out[..count], &model.pop(*len)[..]);
                }
                RingOp::PeekLast(max) => {
                    prop_assert_eq!(consumer.peek_last(*max), model.peek_last(*max));
                }
                RingOp::Clear => prop_assert_eq!(consumer.clear(), model.clear()),
            }
            let stats = monitor.stats();
            prop_assert_eq!(stats, model.snapshot(), "after {:?}", op);
            prop_assert_eq!(
                stats.written,
                stats.read + stats.overwritten + stats.cleared + stats.available
            );
            prop_assert_eq!(consumer.available(), model.unread.len() as u64);
            prop_assert_eq!(producer.free(), (capacity - model.unread.len()) as u64);
        }
    }
}

// --- resampler ------------------------------------------------------------------------------

fn common_rate() -> impl Strategy<Value = u32> {
    prop::sample::select(COMMON_RATES.to_vec())
}

/// Cut points splitting `len` samples into chunks (empty and one-sample chunks included).
fn chunk_bounds(len: usize, cuts: &[prop::sample::Index]) -> Vec<(usize, usize)> {
    let mut points: Vec<usize> = cuts.iter().map(|cut| cut.index(len + 1)).collect();
    points.push(0);
    points.push(len);
    points.sort_unstable();
    points.windows(2).map(|pair| (pair[0], pair[1])).collect()
}

/// The whole stream through one resampler in the given chunks, then the flush.
fn run_chunked<S: voicecore_core::resample::Sample>(
    resampler: &mut Resampler,
    signal: &[S],
    bounds: &[(usize, usize)],
) -> Vec<S> {
    let mut output = Vec::new();
    for &(start, end) in bounds {
        let expected = resampler.output_len(end - start);
        let chunk = resampler.process(&signal[start..end]);
        assert_eq!(chunk.len(), expected, "output_len disagrees with process");
        output.extend(chunk);
    }
    output.extend(resampler.flush::<S>());
    output
}

proptest! {
    #![proptest_config(config())]

    /// Any chunking gives the whole-signal output bit for bit, with the documented length:
    /// `latency + ceil(n * L / M)` samples for a stream of `n`.
    #[test]
    fn resampler_chunking_invariant_i16(
        in_rate in common_rate(),
        out_rate in common_rate(),
        signal in prop::collection::vec(any::<i16>(), 0..3000),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let mut resampler = Resampler::new(in_rate, out_rate).unwrap();
        let (up, down) = resampler.ratio();
        let whole = run_chunked(&mut resampler, &signal, &[(0, signal.len())]);
        prop_assert_eq!(
            whole.len(),
            resampler.latency() + (signal.len() * up).div_ceil(down)
        );
        // The flush reset the stream: the same resampler serves the chunked run.
        let chunked = run_chunked(&mut resampler, &signal, &chunk_bounds(signal.len(), &cuts));
        prop_assert_eq!(chunked, whole);
    }

    /// The same for float input, including NaN, infinities and out-of-range values: no
    /// panic, identical bits whatever the chunking (NaN compared as bits).
    #[test]
    fn resampler_chunking_invariant_f32(
        in_rate in common_rate(),
        out_rate in common_rate(),
        signal in prop::collection::vec(float_sample(), 0..3000),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let mut resampler = Resampler::new(in_rate, out_rate).unwrap();
        let whole = run_chunked(&mut resampler, &signal, &[(0, signal.len())]);
        let chunked = run_chunked(&mut resampler, &signal, &chunk_bounds(signal.len(), &cuts));
        let bits = |samples: &[f32]| samples.iter().map(|s| s.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(bits(&chunked), bits(&whole));
    }

    /// Any pair of integer rates either builds a resampler that works or is refused with an
    /// error; out-of-range rates are always refused.
    #[test]
    fn resampler_arbitrary_rates_never_panic(
        in_rate in prop_oneof![4 => MIN_RATE..=MAX_RATE, 1 => any::<u32>()],
        out_rate in prop_oneof![4 => MIN_RATE..=MAX_RATE, 1 => any::<u32>()],
        len in 0usize..2000,
        short_by in 1usize..4,
    ) {
        let in_range = |rate: u32| (MIN_RATE..=MAX_RATE).contains(&rate);
        match Resampler::new(in_rate, out_rate) {
            Ok(mut resampler) => {
                prop_assert!(in_range(in_rate) && in_range(out_rate));
                let input = vec![0.25f32; len];
                let needed = resampler.output_len(len);
                // Too small an output buffer is an error that consumes nothing.
                if needed > 0 {
                    let mut small = vec![0f32; needed - short_by.min(needed)];
                    prop_assert!(resampler.process_into(&input, &mut small).is_err());
                    prop_assert_eq!(resampler.output_len(len), needed);
                }
                let mut output = vec![0f32; needed];
                prop_assert_eq!(resampler.process_into(&input, &mut output).unwrap(), needed);
                prop_assert!(output.iter().all(|sample| sample.is_finite()));
                let mut tail = vec![0f32; resampler.latency()];
                prop_assert_eq!(resampler.flush_into(&mut tail).unwrap(), resampler.latency());
            }
            // Refusals, out of range or too complex a ratio, say which rate is the problem.
            Err(error) => {
                let names_a_rate = match error {
                    ResampleError::UnsupportedRate { rate } => rate == in_rate || rate == out_rate,
                    ResampleError::RatioTooComplex { in_rate: a, out_rate: b, .. } => {
                        (a, b) == (in_rate, out_rate)
                    }
                    ResampleError::OutputTooShort { .. } => false,
                };
                prop_assert!(names_a_rate, "unexpected error: {}", error);
            }
        }
    }
}
