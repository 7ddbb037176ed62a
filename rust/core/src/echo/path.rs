//! The echo path's delay and per-band gain, learnt from the mic and the far end's history.
//!
//! For every candidate lag `d` (10 ms steps) and band `b`, a running quantile of the log
//! ratio `x = ln(mic_b[k] - noise_b) - ln(far_b[k - d])` over the blocks where that far band
//! was playing. At the echo's lag the echo follows the far end, so `x` stays near the path's
//! gain `ln g_b`; at other lags it swings with the unrelated envelopes, and it falls far
//! whenever the far end was loud at that lag while the mic was quiet.
//!
//! Why quantiles and not a mean and variance (the textbook choice): double talk. The user's
//! voice only ever *adds* mic energy, so it pushes a mean (and a variance) up at every lag;
//! a median ignores whatever happens less than half the time, and the user rarely talks
//! over more than half of the agent's speech before the agent stops. And where no echo
//! reaches the mic at all (a working browser echo canceller), the median falls to the
//! mic's noise over the far end at every lag: the gate learns that there is nothing to
//! suppress instead of waiting for a delay it will never find.
//!
//! * The median of `x` is the band's gain at that lag; the 90th percentile minus the median
//!   is how far above that gain the echo scatters (reverberation, loudspeaker distortion,
//!   a delay between two lags), which the gate adds to its margin. A value far above the
//!   90th percentile is the user, not the echo, and leaves it alone.
//! * The lag's score is the mean over the bands of the median minus the scatter: the echo's
//!   lag is where the ratio is highest *and* steadiest (next to it the median is nearly as
//!   high during a long vowel, but the ratio wanders). The best score counts as found once
//!   it stands [`FOUND_DB`] above the median score of all lags, after at least
//!   [`MIN_FAR_BLOCKS`] blocks of far-end audio, away from the ends of the range, and once
//!   its trackers have had most of the updates the busiest lag has had.
//!
//! The quantiles are tracked by steps (a step up when `x` is above, a step down when below,
//! in the ratio that leaves the wanted fraction below): no sorting, no history, a few
//! additions per lag and band per block. The median moves 0.2 dB per update once settled,
//! faster over its first updates, so the gains of a new session are learnt within about a
//! second of far-end speech.

use super::bands::{BandPowers, N_BANDS};

/// Step of the median trackers, in natural-log units (0.22 dB).
const MEDIAN_STEP: f32 = 0.05;
/// Upward step of the 90th-percentile trackers (nine times the downward one).
const UPPER_STEP_UP: f32 = 0.1;
/// Downward step of the 90th-percentile trackers.
const UPPER_STEP_DOWN: f32 = UPPER_STEP_UP / 9.0;
/// The first updates of a tracker take larger steps, `1 + WARMUP / (1 + n / 4)` times the
/// step at its `n`-th update (a stochastic-approximation schedule): a tracker starting 20 dB
/// from its quantile gets there in about 40 updates instead of 90, and the trackers of lags
/// that have seen fewer far-end blocks (the far end has not played for that long yet) catch
/// up with the others instead of standing out for seconds.
const WARMUP: f32 = 8.0;
/// A log ratio this far above its 90th percentile (8.7 dB) is the user talking over the
/// echo, not the echo's scatter: it does not move the tracker, or a few seconds of double
/// talk would teach the gate that the echo can be as loud as the user.
const UPPER_OUTLIER: f32 = 2.0;
/// A lag can only be found once its trackers have had this share of the updates of the lag
/// that has had the most. A lag `d` blocks long only starts learning `d` blocks after the
/// far end starts playing, so for a while its trackers lag behind on their way down from
/// the initial gain, and look like a better match than the lags that have learnt more.
const SETTLED_SHARE: f32 = 0.8;
/// The best lag counts as the echo's once its score stands this far above the median score
/// of all lags, in dB (a pure echo: 15-25 dB measured; no echo: below 4 dB).
pub(crate) const FOUND_DB: f32 = 6.0;
/// Blocks of far-end audio (10 ms each) before a lag can be found: 0.5 s.
pub(crate) const MIN_FAR_BLOCKS: u32 = 50;

/// The far end's band powers over the last `lags` blocks, as a ring, with their logs.
#[derive(Debug, Clone)]
pub(crate) struct FarHistory {
    powers: Vec<BandPowers>,
    logs: Vec<BandPowers>,
    totals: Vec<f32>,
    /// Index of the newest entry.
    newest: usize,
}

/// Band powers below this count as this (-120 dB), so that logs stay finite.
pub(crate) const POWER_FLOOR: f32 = 1e-12;

impl FarHistory {
    /// A history of `len` blocks, all silent.
    pub(crate) fn new(len: usize) -> Self {
        Self {
            powers: vec![[0.0; N_BANDS]; len],
            logs: vec![[POWER_FLOOR.ln(); N_BANDS]; len],
            totals: vec![0.0; len],
            newest: 0,
        }
    }

    /// Adds the newest block; the oldest is forgotten.
    pub(crate) fn push(&mut self, powers: &BandPowers) {
        self.newest = (self.newest + 1) % self.powers.len();
        self.powers[self.newest] = *powers;
        self.totals[self.newest] = powers.iter().sum();
        for (log, &power) in self.logs[self.newest].iter_mut().zip(powers) {
            *log = power.max(POWER_FLOOR).ln();
        }
    }

    fn index(&self, lag: usize) -> usize {
        (self.newest + self.powers.len() - lag) % self.powers.len()
    }

    /// The band powers of `lag` blocks ago (0: the newest).
    pub(crate) fn powers(&self, lag: usize) -> &BandPowers {
        &self.powers[self.index(lag)]
    }

    /// The loudest block held (sum of its bands).
    pub(crate) fn loudest(&self) -> f32 {
        self.totals.iter().fold(0.0, |a, &b| a.max(b))
    }
}

/// The running quantiles per lag and band, and the lag found.
#[derive(Debug, Clone)]
pub(crate) struct EchoPath {
    median: Vec<BandPowers>,
    upper: Vec<BandPowers>,
    /// Updates each tracker has had (saturating), for the warm-up steps.
    updates: Vec<[u16; N_BANDS]>,
    /// The updates of each lag, all bands together.
    lag_updates: Vec<u32>,
    scores: Vec<f32>,
    scratch: Vec<f32>,
    far_blocks: u32,
    lag: Option<usize>,
}

impl EchoPath {
    /// Lags `0..lags`, every band's gain assumed to be `initial_log_gain` (natural log).
    pub(crate) fn new(lags: usize, initial_log_gain: f32) -> Self {
        Self {
            median: vec![[initial_log_gain; N_BANDS]; lags],
            upper: vec![[initial_log_gain; N_BANDS]; lags],
            updates: vec![[0; N_BANDS]; lags],
            lag_updates: vec![0; lags],
            scores: vec![initial_log_gain; lags],
            scratch: vec![0.0; lags],
            far_blocks: 0,
            lag: None,
        }
    }

    /// The lag found (blocks), if any.
    pub(crate) fn lag(&self) -> Option<usize> {
        self.lag
    }

    /// Takes one block: `mic_log` is `ln` of the mic's band powers above the noise,
    /// `active_floor` the far band power below which a far band tells nothing, and
    /// `far_playing` whether the newest far block carried audio.
    pub(crate) fn update(
        &mut self,
        mic_log: &BandPowers,
        far: &FarHistory,
        active_floor: f32,
        far_playing: bool,
    ) {
        if far_playing {
            self.far_blocks = self.far_blocks.saturating_add(1);
        }
        for (lag, (((median, upper), updates), lag_updates)) in self
            .median
            .iter_mut()
            .zip(&mut self.upper)
            .zip(&mut self.updates)
            .zip(&mut self.lag_updates)
            .enumerate()
        {
            let index = far.index(lag);
            let (powers, logs) = (&far.powers[index], &far.logs[index]);
            for band in 0..N_BANDS {
                if powers[band] <= active_floor {
                    continue;
                }
                let x = mic_log[band] - logs[band];
                let boost = 1.0 + WARMUP / (1.0 + f32::from(updates[band]) / 4.0);
                updates[band] = updates[band].saturating_add(1);
                *lag_updates = lag_updates.saturating_add(1);
                median[band] += boost
                    * if x < median[band] {
                        -MEDIAN_STEP
                    } else {
                        MEDIAN_STEP
                    };
                if x < upper[band] + UPPER_OUTLIER {
                    upper[band] += boost
                        * if x < upper[band] {
                            -UPPER_STEP_DOWN
                        } else {
                            UPPER_STEP_UP
                        };
                }
            }
        }
        for ((score, median), upper) in self.scores.iter_mut().zip(&self.median).zip(&self.upper) {
            *score = median
                .iter()
                .zip(upper)
                .map(|(&m, &u)| m - (u - m).max(0.0))
                .sum::<f32>()
                / N_BANDS as f32;
        }
        let (best, &best_score) = self
            .scores
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .expect("at least one lag");
        self.scratch.copy_from_slice(&self.scores);
        let middle = self.scratch.len() / 2;
        let (_, &mut typical, _) = self.scratch.select_nth_unstable_by(middle, f32::total_cmp);
        let found_nats = FOUND_DB / 10.0 * std::f32::consts::LN_10;
        // A best lag at either end of the range is a slope, not a peak (an echo delay right at
        // `max_delay_ms` is not told apart from one beyond it).
        let inside = best > 0 && best + 1 < self.scores.len();
        let most = self.lag_updates.iter().copied().max().unwrap_or(0);
        let settled = self.lag_updates[best] as f32 >= SETTLED_SHARE * most as f32;
        self.lag = (self.far_blocks >= MIN_FAR_BLOCKS
            && inside
            && settled
            && best_score - typical > found_nats)
            .then_some(best);
    }

    /// The log gain of each band at the lag found (its median), or `None`.
    pub(crate) fn log_gains(&self) -> Option<&BandPowers> {
        self.lag.map(|lag| &self.median[lag])
    }

    /// The echo's level the gate must allow for, per band (natural log, relative to the far
    /// end): at the lag found, the median plus the measured spread above it; with no lag
    /// found, the highest median over all lags (the reference is then the loudest far block
    /// of every lag too).
    pub(crate) fn allowance(&self, out: &mut BandPowers) {
        match self.lag {
            Some(lag) => {
                for ((slot, &median), &upper) in
                    out.iter_mut().zip(&self.median[lag]).zip(&self.upper[lag])
                {
                    *slot = median + (upper - median).max(0.0);
                }
            }
            None => {
                *out = [f32::NEG_INFINITY; N_BANDS];
                for median in &self.median {
                    for (slot, &m) in out.iter_mut().zip(median) {
                        *slot = slot.max(m);
                    }
                }
            }
        }
    }

    /// Forgets the lag (the playout timeline moved): every lag gets the highest quantiles
    /// any lag had, so the gain stays learnt while the lag is searched for again.
    pub(crate) fn forget_lag(&mut self) {
        for table in [&mut self.median, &mut self.upper] {
            let mut highest = [f32::NEG_INFINITY; N_BANDS];
            for row in table.iter() {
                for (h, &v) in highest.iter_mut().zip(row) {
                    *h = h.max(v);
                }
            }
            table.fill(highest);
        }
        self.updates.fill([0; N_BANDS]);
        self.lag_updates.fill(0);
        self.far_blocks = 0;
        self.lag = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A far end whose band powers jump between loud and quiet blocks at random, and a mic
    /// that hears it `delay` blocks later at `gain` (log), over `noise`.
    fn feed(path: &mut EchoPath, far: &mut FarHistory, delay: usize, gain: f32, blocks: usize) {
        let mut state = 12345u32;
        let mut past: Vec<BandPowers> = Vec::new();
        for _ in 0..blocks {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            // Loud a quarter of the time: at a wrong lag, a loud far block mostly meets a
            // quiet mic.
            let loud = state >> 30 == 0;
            let level = if loud { 1e-3 } else { 1e-7 };
            let powers: BandPowers = std::array::from_fn(|b| level * (1.0 + b as f32 * 0.01));
            far.push(&powers);
            past.push(powers);
            let heard = past
                .len()
                .checked_sub(delay + 1)
                .map_or([0.0; N_BANDS], |i| past[i]);
            let mic_log: BandPowers =
                std::array::from_fn(|b| (heard[b] * gain.exp()).max(POWER_FLOOR).ln());
            path.update(&mic_log, far, 1e-6, true);
        }
    }

    #[test]
    fn finds_the_delay_and_the_gain_of_a_pure_echo() {
        let mut far = FarHistory::new(62);
        let mut path = EchoPath::new(61, (0.5f32).ln());
        let gain = (0.1f32).ln();
        feed(&mut path, &mut far, 12, gain, 600);
        assert_eq!(path.lag(), Some(12));
        for &g in path.log_gains().unwrap() {
            assert!((g - gain).abs() < 0.2, "{g} vs {gain}");
        }
    }

    #[test]
    fn no_lag_is_found_before_half_a_second_of_far_audio() {
        let mut far = FarHistory::new(62);
        let mut path = EchoPath::new(61, (0.5f32).ln());
        feed(
            &mut path,
            &mut far,
            5,
            (0.1f32).ln(),
            MIN_FAR_BLOCKS as usize - 1,
        );
        assert_eq!(path.lag(), None);
    }

    #[test]
    fn forgetting_the_lag_keeps_the_highest_gains() {
        let mut far = FarHistory::new(62);
        let mut path = EchoPath::new(61, (0.5f32).ln());
        feed(&mut path, &mut far, 8, (0.1f32).ln(), 600);
        let gains = *path.log_gains().unwrap();
        path.forget_lag();
        assert_eq!(path.lag(), None);
        assert!(path.log_gains().is_none());
        // Without a lag the allowance is the highest median of any lag: never below the
        // gain learnt at the lag.
        let mut after = [0.0; N_BANDS];
        path.allowance(&mut after);
        for (a, g) in after.iter().zip(&gains) {
            assert!(a >= g, "{a} < {g}");
        }
    }
}
