//! An echo gate: the agent's own voice, leaking from the user's loudspeaker into their mic,
//! must never pass for the user speaking.
//!
//! # The problem
//!
//! On a speakerphone with the browser's echo cancellation off, or weak, the mic hears the
//! agent. A VAD cannot tell that voice from the user's, so the server would duck the agent
//! for its own words, or cut it off (a false barge-in). The server, though, holds what the
//! mic may be hearing: the agent's audio (the *far end*), in the order it plays. The gate
//! uses it to judge every 10 ms of mic audio: *echo* (explained by the far end) or *near
//! end* (something the far end does not explain: the user, alone or over the agent).
//!
//! # The model
//!
//! The echo of a far-end block reaches the mic some fixed delay later, at some gain per
//! frequency band, smeared by the room a little:
//! `mic_b[k] ~ g_b * far_b[k - d] (+ a decaying tail) + noise_b + user_b`.
//! No linear echo canceller is attempted: it would need the exact waveform path, which
//! loudspeaker distortion, browser processing and clock drift keep breaking. Energies per
//! band are robust to all three, and enough to decide *whether* the user is speaking.
//!
//! * **The far end's clock.** [`far_audio`](EchoGate::far_audio) queues the agent's audio in
//!   play order; while [`set_playing`](EchoGate::set_playing) is on, every 10 ms of mic
//!   audio processed takes 10 ms of it from the queue: the far end "plays" on the mic's
//!   clock (an empty queue plays silence). The constant offset between that and what really
//!   reaches the mic (network both ways, the client's playout cushion, the acoustic path) is
//!   the delay the gate learns.
//! * **Bands** (`echo/bands.rs`): 28 bands from 125 Hz to 7.8 kHz, each at least 94 Hz and
//!   12 % of its frequency wide, of a 20 ms Hann window every 10 ms; the same for the mic and
//!   the far end (resampled to 16 kHz on the way in).
//! * **Delay and gain** (`echo/path.rs`): for every lag (10 ms steps, up to `max_delay_ms`)
//!   and band, running quantiles of `ln(mic above its noise) - ln(far at that lag)`. The
//!   echo's lag is where the medians are highest and steadiest (the echo always follows the
//!   far end there); the median is the band's gain, the 90th percentile how far the echo
//!   scatters above it. Found within about a second of the far end starting to play.
//! * **The reference.** Per band, the loudest far block within one block of the lag (the
//!   delay is rarely a whole number of blocks, and drifts), held with a decay of 60 dB per
//!   `tail_ms` (the room's reverberation). The echo expected is `reference * gain * scatter`.
//! * **The decision.** The mic energy the expected echo cannot explain,
//!   `U = sum_b max(0, mic_b - margin * echo_b - smear)`, is the near end's, where `smear`
//!   is the whole expected echo 15 dB down spread over the bands (a loudspeaker's distortion
//!   puts the echo's harmonics where the far end has none). The block is near-end *activity*
//!   when `U` is `onset_db` above the noise floor and above `min_level_dbfs`: what the engine
//!   should duck on ([`near_end_ms`]). Otherwise, if an echo within 10 dB of the noise floor
//!   is possible (the far end played within the reference's reach), the block is *echo* and
//!   is suppressed; otherwise it is quiet and passes. Blocks of activity always pass.
//!
//! # Before the delay is found
//!
//! The gate does not know where the echo is, so it assumes the worst place: the reference
//! is the loudest far block of *any* lag within `max_delay_ms`, with the highest gain any lag
//! has measured, starting from `initial_gain_db` (-3 dB: louder than a speakerphone's echo
//! usually is, 6-20 dB below the far end, so the first words are safe; the quantiles fall
//! from there as soon as the mic is quieter than that). This costs double talk during the
//! first second or so of the first reply (the user must be louder than the agent's loudest
//! recent block), never false activity. What is learnt stays learnt across replies: the
//! delay is the session's. Where no echo reaches the mic at all (a working browser echo
//! canceller), no lag is ever found, but the gains fall towards the mic's noise over the far
//! end: the gate then passes the user almost as if there were no far end.
//!
//! # Suppression without a trace
//!
//! A suppressed block is faded (over 2 ms) to `suppression_db` and filled with *comfort
//! noise* of the mic's own noise spectrum and level. Silence would be worse than the echo:
//! a VAD learns its noise floor from the quietest audio it sees, and after a stretch of
//! near-digital silence the room's ordinary noise, when it comes back, reads as speech
//! (measured: an energy VAD behind a gate that only attenuated confirmed more speech in the
//! echo than on the raw mic). For the same reason the noise floor stands still while an echo
//! is possible (the agent's voice would otherwise lift it, and the comfort noise with it),
//! and the comfort noise's level is the mean of the mic's quiet blocks, not the floor's
//! minimum (which sits 1-4 dB below the mean).
//!
//! # Trade-offs (measured in `tests/test_echo_gate.py`, `benches/bench_echo_gate.py`)
//!
//! * The echo alone (real and synthetic speech, echo at -10 and -6 dB, through a room with
//!   a 300 ms tail and through a distorting small loudspeaker, delays 40-150 ms): no run of
//!   near-end activity of 20 ms, before or after the delay is found; the energy VAD behind
//!   the gate confirms no speech in it.
//! * Double talk: the user is heard where their voice stands out of the echo, in some
//!   bands, by the margin. With the echo 10 dB below the far end, a user 5 dB above the
//!   echo is heard within 30 ms of where they would be without it at 96 % of onsets; at the
//!   echo's own level, 77 %. Their syllables quieter than the echo are suppressed (no worse
//!   for the engine, which has ducked by then, but the STT should hear the raw mic).
//! * A jump in the delay (the client's player ran dry and resumed later) leaves the gate on
//!   the old lag until it finds the new one (0.5-1 s of far-end speech), during which the
//!   echo may read as the user (runs of 40-90 ms measured for jumps of 60-120 ms);
//!   [`realign`](EchoGate::realign) says the timeline moved.
//! * `tail_ms` shorter than the room's reverberation lets the tail of loud words through as
//!   near end; longer hides the user right after the agent's words.
//! * Latency: none. Output sample `n` is input sample `n`, gated by the decision on the
//!   10 ms block it belongs to once that block is complete, by the one before until then.
//! * Cost: about 0.8 ms of CPU per second of audio while the agent plays, 0.26 ms while it
//!   is silent (two or one 512-point FFTs per 10 ms, and the quantiles of 61 lags): about
//!   12 and 4 times the energy VAD's on the same audio.
//!
//! [`near_end_ms`]: EchoGate::near_end_ms

mod bands;
mod path;

use std::collections::VecDeque;

use bands::{BandAnalyser, BandPowers, ComfortNoise, BLOCK_LEN, N_BANDS};
use path::{EchoPath, FarHistory, POWER_FLOOR};

pub use crate::error::EchoError;
use crate::resample::{Resampler, Sample};
use crate::vad::noise::NoiseFloor;

/// The mic's sample rate, in Hz: the gate works at the engine's rate.
pub const SAMPLE_RATE: u32 = 16_000;
/// The gate's block, in ms.
pub const BLOCK_MS: u32 = 10;

/// Blocks of jitter around the lag that the reference covers on each side.
const JITTER_BLOCKS: usize = 1;
/// Far-end blocks quieter than this (sum of the bands: -60 dBFS) carry no audio (a TTS's
/// silences, a paused playout).
const FAR_PLAYING_FLOOR: f32 = 1e-6;
/// A far band quieter than this (-75 dBFS) tells nothing about the echo path...
const FAR_BAND_FLOOR: f32 = 3.16e-8;
/// ...nor does one 35 dB below the loudest far block of the history (the far end's own
/// noise between words).
const FAR_BAND_RELATIVE: f32 = 3.16e-4;
/// The mic's power above its noise floor is floored at this share of the floor before its
/// log is taken: a mic at its noise says "the echo is at most about this", not "minus
/// infinity".
const MIC_EXCESS_FLOOR: f32 = 0.1;
/// The echo's energy that may land in any band, as a share of its total (-15 dB), spread
/// evenly over the bands. A small loudspeaker driven hard distorts: the harmonics of the
/// agent's loud vowels land in bands where the far end itself is quiet, so no per-band gain
/// predicts them. Measured on real speech through a soft-clipping loudspeaker: -20 dB still
/// let 30 ms of echo through as near end, -15 dB none; the cost is a few double-talk onsets
/// heard 10-20 ms later.
const DISTORTION: f32 = 0.0316;
/// An echo is possible when the echo expected comes within this of the noise floor (-10 dB).
const ECHO_POSSIBLE: f32 = 0.1;
/// The noise floor's window, in blocks (3 s), as the energy VAD's.
const NOISE_WINDOW_BLOCKS: usize = 300;
/// Smoothing of the comfort noise's level per quiet block (a 0.5 s time constant).
const COMFORT_SMOOTHING: f32 = 0.02;
/// A quiet block's band counts at most this far above the floor (6 dB) in the comfort
/// noise's level, so a soft word does not lift it.
const COMFORT_CEILING: f32 = 4.0;
/// Length of the fade between the mic and comfort noise, in samples (2 ms).
const FADE_LEN: f32 = 32.0;
/// Smoothing of the far end's mean band powers (the weights of the reported gain).
const FAR_MEAN_SMOOTHING: f32 = 0.01;

/// Settings of [`EchoGate`]. The defaults suit a speakerphone whose echo is 6-20 dB below
/// the far end, with up to 600 ms between the far end's release and its echo.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EchoGateConfig {
    /// Sample rate of the far-end audio, in Hz (any rate the resampler takes to 16 kHz).
    pub far_rate: u32,
    /// The longest delay from the far end's release (as played on the mic's clock) to its
    /// echo in the mic, in ms: 10-2000, rounded up to whole 10 ms blocks.
    pub max_delay_ms: u32,
    /// How far above the echo expected (gain times reference times the echo's measured
    /// scatter) the mic must be before a band counts as near end, in dB: 0-30. The scatter
    /// adapts the margin to the room; this is its floor (3 dB where a fixed margin would
    /// need about 6).
    pub margin_db: f32,
    /// The gain of the mic in echo blocks, in dB: -120-0 (comfort noise fills the rest).
    pub suppression_db: f32,
    /// Near-end activity must be this far above the mic's noise floor, in dB: 0-60.
    pub onset_db: f32,
    /// ... and above this level (dBFS of the unexplained energy): -120-0.
    pub min_level_dbfs: f32,
    /// The echo's tail: the reference falls 60 dB in this time, in ms: 0-2000 (0: no tail).
    pub tail_ms: f32,
    /// The echo gain assumed before any is measured, in dB (energy): -60-20.
    pub initial_gain_db: f32,
    /// The most far-end audio queued and not yet played, in ms: 1000-3600000. Audio beyond
    /// it is refused and counted ([`EchoStats::far_rejected_ms`]).
    pub max_far_ms: u32,
}

impl Default for EchoGateConfig {
    fn default() -> Self {
        Self {
            far_rate: SAMPLE_RATE,
            max_delay_ms: 600,
            margin_db: 3.0,
            suppression_db: -40.0,
            onset_db: 12.0,
            min_level_dbfs: -55.0,
            tail_ms: 300.0,
            initial_gain_db: -3.0,
            max_far_ms: 600_000,
        }
    }
}

impl EchoGateConfig {
    fn check(&self) -> Result<(), EchoError> {
        let ranges: [(&'static str, f64, f64, f64, &'static str); 8] = [
            (
                "max_delay_ms",
                self.max_delay_ms.into(),
                10.0,
                2000.0,
                "10 to 2000 (ms)",
            ),
            (
                "margin_db",
                self.margin_db.into(),
                0.0,
                30.0,
                "0 to 30 (dB)",
            ),
            (
                "suppression_db",
                self.suppression_db.into(),
                -120.0,
                0.0,
                "-120 to 0 (dB)",
            ),
            ("onset_db", self.onset_db.into(), 0.0, 60.0, "0 to 60 (dB)"),
            (
                "min_level_dbfs",
                self.min_level_dbfs.into(),
                -120.0,
                0.0,
                "-120 to 0 (dBFS)",
            ),
            (
                "tail_ms",
                self.tail_ms.into(),
                0.0,
                2000.0,
                "0 to 2000 (ms)",
            ),
            (
                "initial_gain_db",
                self.initial_gain_db.into(),
                -60.0,
                20.0,
                "-60 to 20 (dB)",
            ),
            (
                "max_far_ms",
                self.max_far_ms.into(),
                1000.0,
                3_600_000.0,
                "1000 to 3600000 (ms)",
            ),
        ];
        for (name, value, low, high, expected) in ranges {
            if !(value.is_finite() && (low..=high).contains(&value)) {
                return Err(EchoError::InvalidSetting {
                    name,
                    value,
                    expected,
                });
            }
        }
        Ok(())
    }
}

/// What the gate has seen and learnt (see [`EchoGate::stats`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EchoStats {
    /// Blocks judged echo and suppressed.
    pub echo_blocks: u64,
    /// Blocks of near-end activity.
    pub near_end_blocks: u64,
    /// The echo's delay behind the far end as played on the mic's clock, in ms, once found.
    pub delay_ms: Option<u32>,
    /// The echo's level relative to the far end's (energy, for the far end's average
    /// spectrum), in dB, once the delay is found.
    pub echo_gain_db: Option<f32>,
    /// Far-end audio queued and not yet played, in ms.
    pub far_queued_ms: f64,
    /// Far-end audio refused because the queue held `max_far_ms`, in ms.
    pub far_rejected_ms: f64,
}

impl EchoStats {
    /// True once the echo's delay is found (the gate then looks for the echo only there).
    pub fn converged(&self) -> bool {
        self.delay_ms.is_some()
    }
}

/// The far end: a queue of audio at 16 kHz, played on the mic's clock.
struct FarEnd {
    resampler: Option<Resampler>,
    /// The far end's samples as f32, and the resampler's output (reused buffers).
    converted: Vec<f32>,
    resampled: Vec<f32>,
    queue: VecDeque<f32>,
    max_queued: usize,
    rejected: u64,
    playing: bool,
}

impl FarEnd {
    fn push<S: Sample>(&mut self, samples: &[S]) {
        self.converted.clear();
        self.converted.extend(samples.iter().map(|s| s.to_f32()));
        let at_16k = match &mut self.resampler {
            Some(resampler) => {
                let len = resampler.output_len(self.converted.len());
                self.resampled.resize(len, 0.0);
                // The output is sized by `output_len`, so it is never too short.
                let written = resampler
                    .process_into(&self.converted, &mut self.resampled)
                    .unwrap_or(0);
                &self.resampled[..written]
            }
            None => &self.converted[..],
        };
        let room = self.max_queued.saturating_sub(self.queue.len());
        let kept = at_16k.len().min(room);
        self.queue.extend(&at_16k[..kept]);
        self.rejected += (at_16k.len() - kept) as u64;
    }

    /// The next block as played: the queue's head while playing (silence where it runs
    /// out), silence otherwise.
    fn play(&mut self, block: &mut [f32; BLOCK_LEN]) {
        block.fill(0.0);
        if self.playing {
            let taken = self.queue.len().min(BLOCK_LEN);
            for (slot, sample) in block.iter_mut().zip(self.queue.drain(..taken)) {
                *slot = sample;
            }
        }
    }

    fn clear(&mut self) {
        self.queue.clear();
        if let Some(resampler) = &mut self.resampler {
            resampler.reset();
        }
    }
}

/// The per-block state of the mic side: the decision and what suppression needs.
struct MicSide {
    /// The block being filled, and the one before it (the analysis window's first half).
    block: [f32; BLOCK_LEN],
    previous: [f32; BLOCK_LEN],
    filled: usize,
    noise: NoiseFloor<N_BANDS>,
    floor: BandPowers,
    /// True while an echo was possible at the last block: the floor stands still.
    floor_frozen: bool,
    comfort_level: BandPowers,
    comfort_level_known: bool,
    comfort: ComfortNoise,
    /// Comfort noise of the current block, once made.
    comfort_block: [f32; BLOCK_LEN],
    comfort_made_for: Option<u64>,
    /// The mic's gain now (1: untouched), and where it is heading.
    gain: f32,
    target: f32,
}

/// The echo gate (see the module documentation).
///
/// All buffers are allocated in [`EchoGate::new`]; [`process_into`](Self::process_into)
/// allocates nothing, [`far_audio`](Self::far_audio) only to grow its queue.
pub struct EchoGate {
    config: EchoGateConfig,
    far: FarEnd,
    analyser: BandAnalyser,
    far_block: [f32; BLOCK_LEN],
    far_previous: [f32; BLOCK_LEN],
    history: FarHistory,
    far_mean: BandPowers,
    path: EchoPath,
    /// The reference per band (the far end's power the echo follows, with its tail).
    reference: BandPowers,
    mic: MicSide,
    /// Complete blocks processed.
    blocks: u64,
    near_run: u32,
    echo_blocks: u64,
    near_end_blocks: u64,
    lags: usize,
    margin: f32,
    suppression: f32,
    onset: f32,
    min_level: f32,
    tail_decay: f32,
}

impl std::fmt::Debug for EchoGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EchoGate")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn from_db(db: f32) -> f32 {
    10f32.powf(db / 10.0)
}

impl EchoGate {
    /// Builds a gate. Errors: [`EchoError::UnsupportedFarRate`] for a far rate the resampler
    /// cannot take to 16 kHz, [`EchoError::InvalidSetting`] for a setting out of its range.
    pub fn new(config: EchoGateConfig) -> Result<Self, EchoError> {
        config.check()?;
        let resampler = if config.far_rate == SAMPLE_RATE {
            None
        } else {
            Some(Resampler::new(config.far_rate, SAMPLE_RATE).map_err(|_| {
                EchoError::UnsupportedFarRate {
                    rate: config.far_rate,
                }
            })?)
        };
        let max_delay_blocks = config.max_delay_ms.div_ceil(BLOCK_MS) as usize;
        let lags = max_delay_blocks + 1;
        let tail_blocks = config.tail_ms / BLOCK_MS as f32;
        Ok(Self {
            far: FarEnd {
                resampler,
                converted: Vec::new(),
                resampled: Vec::new(),
                queue: VecDeque::new(),
                max_queued: (u64::from(config.max_far_ms) * u64::from(SAMPLE_RATE) / 1000) as usize,
                rejected: 0,
                playing: false,
            },
            analyser: BandAnalyser::new(),
            far_block: [0.0; BLOCK_LEN],
            far_previous: [0.0; BLOCK_LEN],
            // The lags, and one more block each side for the reference's jitter.
            history: FarHistory::new(lags + JITTER_BLOCKS + 1),
            far_mean: [0.0; N_BANDS],
            path: EchoPath::new(
                lags,
                config.initial_gain_db / 10.0 * std::f32::consts::LN_10,
            ),
            reference: [0.0; N_BANDS],
            mic: MicSide {
                block: [0.0; BLOCK_LEN],
                previous: [0.0; BLOCK_LEN],
                filled: 0,
                noise: NoiseFloor::new(NOISE_WINDOW_BLOCKS, f64::from(BLOCK_MS) / 1000.0),
                floor: [0.0; N_BANDS],
                floor_frozen: false,
                comfort_level: [0.0; N_BANDS],
                comfort_level_known: false,
                comfort: ComfortNoise::new(),
                comfort_block: [0.0; BLOCK_LEN],
                comfort_made_for: None,
                gain: 1.0,
                target: 1.0,
            },
            blocks: 0,
            near_run: 0,
            echo_blocks: 0,
            near_end_blocks: 0,
            lags,
            margin: from_db(config.margin_db),
            suppression: 10f32.powf(config.suppression_db / 20.0),
            onset: from_db(config.onset_db),
            min_level: from_db(config.min_level_dbfs),
            tail_decay: if tail_blocks > 0.0 {
                from_db(-60.0 / tail_blocks)
            } else {
                0.0
            },
            config,
        })
    }

    /// The configuration this gate was built with.
    pub fn config(&self) -> EchoGateConfig {
        self.config
    }

    /// Queues far-end audio (the agent's, at `far_rate`), in the order it plays. Audio past
    /// `max_far_ms` of queue is refused and counted.
    pub fn far_audio<S: Sample>(&mut self, samples: &[S]) {
        self.far.push(samples);
    }

    /// Starts or stops playing the far end: while playing, every 10 ms of mic audio takes
    /// 10 ms of the queue.
    pub fn set_playing(&mut self, playing: bool) {
        self.far.playing = playing;
    }

    /// True while the far end plays.
    pub fn playing(&self) -> bool {
        self.far.playing
    }

    /// Drops the far end's queue (a cut or a hold: that audio will not play). What already
    /// played may still echo, and is still expected.
    pub fn clear_far(&mut self) {
        self.far.clear();
    }

    /// Forgets the echo's delay, keeping its gain: for when the playout timeline moved (the
    /// client's player ran dry, or its buffer was reset). Until the delay is found again the
    /// gate expects the echo at any lag, which is safe and costs double talk for a while.
    pub fn realign(&mut self) {
        self.path.forget_lag();
    }

    /// The length of the current run of near-end activity at the end of the audio processed
    /// so far, in ms (0 when the last complete block was not near end).
    pub fn near_end_ms(&self) -> u32 {
        self.near_run.saturating_mul(BLOCK_MS)
    }

    /// What the gate has seen and learnt.
    pub fn stats(&self) -> EchoStats {
        let per_ms = f64::from(SAMPLE_RATE) / 1000.0;
        EchoStats {
            echo_blocks: self.echo_blocks,
            near_end_blocks: self.near_end_blocks,
            delay_ms: self.path.lag().map(|lag| lag as u32 * BLOCK_MS),
            echo_gain_db: self.path.log_gains().map(|gains| {
                let far_total: f32 = self.far_mean.iter().sum();
                let echo_total: f32 = gains
                    .iter()
                    .zip(&self.far_mean)
                    .map(|(g, f)| g.exp() * f)
                    .sum();
                10.0 * (echo_total.max(POWER_FLOOR) / far_total.max(POWER_FLOOR)).log10()
            }),
            far_queued_ms: self.far.queue.len() as f64 / per_ms,
            far_rejected_ms: self.far.rejected as f64 / per_ms,
        }
    }

    /// Gates `input` (mic audio at 16 kHz) into a new vector of the same length.
    pub fn process<S: Sample>(&mut self, input: &[S]) -> Vec<S> {
        let mut output = vec![S::from_f32(0.0); input.len()];
        self.gate(input, &mut output);
        output
    }

    /// Gates `input` into `output`, which must have the same length.
    ///
    /// Errors: [`EchoError::OutputLength`] (nothing processed) for another length.
    pub fn process_into<S: Sample>(
        &mut self,
        input: &[S],
        output: &mut [S],
    ) -> Result<(), EchoError> {
        if output.len() != input.len() {
            return Err(EchoError::OutputLength {
                len: output.len(),
                expected: input.len(),
            });
        }
        self.gate(input, output);
        Ok(())
    }

    fn gate<S: Sample>(&mut self, input: &[S], output: &mut [S]) {
        let mut done = 0;
        while done < input.len() {
            let start = self.mic.filled;
            let take = (BLOCK_LEN - start).min(input.len() - done);
            for (slot, sample) in self.mic.block[start..start + take]
                .iter_mut()
                .zip(&input[done..done + take])
            {
                *slot = sample.to_f32();
            }
            self.mic.filled += take;
            if self.mic.filled == BLOCK_LEN {
                self.decide();
            }
            self.emit(
                &input[done..done + take],
                &mut output[done..done + take],
                start,
            );
            if self.mic.filled == BLOCK_LEN {
                self.mic.previous = self.mic.block;
                self.mic.filled = 0;
                self.blocks += 1;
            }
            done += take;
        }
    }

    /// Writes the gated samples of block positions `start..` (the gain heads for the
    /// current target, fading over [`FADE_LEN`] samples).
    fn emit<S: Sample>(&mut self, input: &[S], output: &mut [S], start: usize) {
        let step = (1.0 - self.suppression) / FADE_LEN;
        let needs_comfort = self.mic.gain < 1.0 || self.mic.target < 1.0;
        if needs_comfort && self.mic.comfort_made_for != Some(self.blocks) {
            if self.mic.comfort_made_for != self.blocks.checked_sub(1) {
                self.mic.comfort.restart();
            }
            self.mic
                .comfort
                .next_block(&self.mic.comfort_level, &mut self.mic.comfort_block);
            self.mic.comfort_made_for = Some(self.blocks);
        }
        for (offset, (out, &sample)) in output.iter_mut().zip(input).enumerate() {
            let mic = &mut self.mic;
            mic.gain = if mic.gain < mic.target {
                (mic.gain + step).min(mic.target)
            } else {
                (mic.gain - step).max(mic.target)
            };
            *out = if mic.gain >= 1.0 {
                sample
            } else {
                let noise = mic.comfort_block[start + offset];
                S::from_f32(mic.gain * sample.to_f32() + (1.0 - mic.gain * mic.gain).sqrt() * noise)
            };
        }
    }

    /// Judges the block just completed and sets the gain's target.
    fn decide(&mut self) {
        self.far.play(&mut self.far_block);
        let mut far = [0.0; N_BANDS];
        // Most of the time the agent is silent: no spectrum to compute.
        if self
            .far_block
            .iter()
            .chain(&self.far_previous)
            .any(|&s| s != 0.0)
        {
            self.analyser
                .analyse(&self.far_previous, &self.far_block, &mut far);
        }
        let far_playing = far.iter().sum::<f32>() > FAR_PLAYING_FLOOR;
        self.far_previous = self.far_block;
        let mut mic = [0.0; N_BANDS];
        self.analyser
            .analyse(&self.mic.previous, &self.mic.block, &mut mic);
        self.history.push(&far);

        if !self.mic.floor_frozen {
            self.mic.floor = self.mic.noise.update(&mic);
        }
        let floor = self.mic.floor;
        if far_playing {
            for (mean, &power) in self.far_mean.iter_mut().zip(&far) {
                *mean += FAR_MEAN_SMOOTHING * (power - *mean);
            }
        }

        let loudest = self.history.loudest();
        // With nothing audible in the far end's whole history there is nothing to learn.
        if loudest > FAR_BAND_FLOOR {
            let active_floor = FAR_BAND_FLOOR.max(FAR_BAND_RELATIVE * loudest);
            let mic_log: BandPowers = std::array::from_fn(|b| {
                (mic[b] - floor[b])
                    .max(MIC_EXCESS_FLOOR * floor[b])
                    .max(POWER_FLOOR)
                    .ln()
            });
            self.path
                .update(&mic_log, &self.history, active_floor, far_playing);
        }

        // The reference: the loudest far block within reach of the lag, with its tail.
        let reach = match self.path.lag() {
            Some(lag) => lag.saturating_sub(JITTER_BLOCKS)..=lag + JITTER_BLOCKS,
            None => 0..=self.lags - 1 + JITTER_BLOCKS,
        };
        let mut nearby = [0.0f32; N_BANDS];
        for lag in reach {
            for (n, &p) in nearby.iter_mut().zip(self.history.powers(lag)) {
                *n = n.max(p);
            }
        }
        let mut allowance = [0.0; N_BANDS];
        self.path.allowance(&mut allowance);
        let mut echo_bands = [0.0f32; N_BANDS];
        for band in 0..N_BANDS {
            self.reference[band] = nearby[band].max(self.tail_decay * self.reference[band]);
            echo_bands[band] = allowance[band].exp() * self.reference[band];
        }
        let expected: f32 = echo_bands.iter().sum();
        let smear = DISTORTION * expected / N_BANDS as f32;
        let unexplained: f32 = (0..N_BANDS)
            .map(|band| (mic[band] - self.margin * echo_bands[band] - smear).max(0.0))
            .sum();
        let noise: f32 = floor.iter().sum();
        let active = unexplained > self.onset * noise && unexplained > self.min_level;
        let echo_possible = expected > ECHO_POSSIBLE * noise;
        let echo = echo_possible && !active;
        self.mic.floor_frozen = echo_possible;

        if !self.mic.comfort_level_known {
            self.mic.comfort_level = floor;
            self.mic.comfort_level_known = true;
        }
        if !echo_possible && !active {
            for ((level, &power), &f) in self.mic.comfort_level.iter_mut().zip(&mic).zip(&floor) {
                *level += COMFORT_SMOOTHING * (power.min(COMFORT_CEILING * f) - *level);
            }
        }

        if active {
            self.near_run = self.near_run.saturating_add(1);
            self.near_end_blocks += 1;
        } else {
            self.near_run = 0;
        }
        if echo {
            self.echo_blocks += 1;
        }
        self.mic.target = if echo { self.suppression } else { 1.0 };
    }
}

#[cfg(test)]
mod tests;
