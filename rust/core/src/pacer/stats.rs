//! Lateness statistics: a preallocated log-linear histogram (HDR-like).
//!
//! The pacer thread records one value per released frame, so recording must not allocate and
//! must cost a few instructions: the bucket index is computed from the value's leading zeros.
//! Values below 64 ns have a bucket each; above, every power of two is split into 32 linear
//! sub-buckets, so a quantile is exact to within 1/32 (about 3 %) of its value. The exact
//! maximum is kept beside the buckets.

/// Values below this many nanoseconds get a bucket of their own.
const EXACT_BELOW: u64 = 64;
/// log2 of the number of sub-buckets per power of two.
const SUB_BITS: u32 = 5;
const SUB_BUCKETS: usize = 1 << SUB_BITS;
/// 64 exact buckets, then 32 sub-buckets for each exponent 6..=63.
const BUCKETS: usize = EXACT_BELOW as usize + (64 - 6) * SUB_BUCKETS;

/// A histogram of non-negative durations in nanoseconds, with quantiles.
#[derive(Clone)]
pub struct LatenessHistogram {
    counts: Box<[u64; BUCKETS]>,
    total: u64,
    max_ns: u64,
}

impl Default for LatenessHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for LatenessHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatenessHistogram")
            .field("count", &self.total)
            .field("p50_ns", &self.quantile_ns(0.5))
            .field("p99_ns", &self.quantile_ns(0.99))
            .field("max_ns", &self.max_ns)
            .finish()
    }
}

impl LatenessHistogram {
    /// An empty histogram (allocates its buckets once, here).
    pub fn new() -> Self {
        Self {
            counts: Box::new([0; BUCKETS]),
            total: 0,
            max_ns: 0,
        }
    }

    /// Records one duration; negative values (an early wake, impossible with the clocks
    /// used here but cheap to guard) count as zero.
    pub fn record(&mut self, value_ns: i64) {
        let value = value_ns.max(0) as u64;
        self.counts[bucket_of(value)] += 1;
        self.total += 1;
        self.max_ns = self.max_ns.max(value);
    }

    /// Number of recorded values.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The largest recorded value, exact (0 when empty).
    pub fn max_ns(&self) -> u64 {
        self.max_ns
    }

    /// The value below or at which a fraction `q` (0..=1) of the records lie: the upper edge
    /// of the bucket holding that rank, capped by the exact maximum (0 when empty).
    pub fn quantile_ns(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return bucket_upper_edge(index).min(self.max_ns);
            }
        }
        self.max_ns
    }

    /// Forgets every record.
    pub fn clear(&mut self) {
        self.counts.fill(0);
        self.total = 0;
        self.max_ns = 0;
    }
}

fn bucket_of(value: u64) -> usize {
    if value < EXACT_BELOW {
        return value as usize;
    }
    let exponent = 63 - value.leading_zeros(); // >= 6
    let sub = (value >> (exponent - SUB_BITS)) as usize - SUB_BUCKETS; // top 6 bits minus the leading 1
    EXACT_BELOW as usize + (exponent as usize - 6) * SUB_BUCKETS + sub
}

fn bucket_upper_edge(index: usize) -> u64 {
    if index < EXACT_BELOW as usize {
        return index as u64;
    }
    let offset = index - EXACT_BELOW as usize;
    let exponent = (offset / SUB_BUCKETS) as u32 + 6;
    let sub = (offset % SUB_BUCKETS) as u64;
    let width = 1u64 << (exponent - SUB_BITS);
    // The bucket holds [(32 + sub) * width, (33 + sub) * width); the top one ends at u64::MAX.
    (SUB_BUCKETS as u64 + sub + 1)
        .checked_mul(width)
        .map_or(u64::MAX, |end| end - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_in_order() {
        let mut previous = 0;
        for value in [
            0u64,
            1,
            63,
            64,
            65,
            100,
            1_000,
            1_000_000,
            u64::MAX / 2,
            u64::MAX,
        ] {
            let index = bucket_of(value);
            assert!(index < BUCKETS);
            assert!(index >= previous, "buckets must grow with the value");
            assert!(bucket_upper_edge(index) >= value);
            previous = index;
        }
    }

    #[test]
    fn quantiles_are_within_three_percent() {
        let mut histogram = LatenessHistogram::new();
        for micros in 1..=1000i64 {
            histogram.record(micros * 1000);
        }
        let p50 = histogram.quantile_ns(0.5) as f64;
        let p99 = histogram.quantile_ns(0.99) as f64;
        assert!((p50 / 500_000.0 - 1.0).abs() < 0.035, "p50 {p50}");
        assert!((p99 / 990_000.0 - 1.0).abs() < 0.035, "p99 {p99}");
        assert_eq!(histogram.max_ns(), 1_000_000);
        assert_eq!(histogram.count(), 1000);
        histogram.record(-5);
        assert_eq!(histogram.quantile_ns(0.0), 0);
        histogram.clear();
        assert_eq!((histogram.count(), histogram.quantile_ns(0.99)), (0, 0));
    }
}
