//! One playout stream: its bounded queue, its model of the client's buffer, its counters.
//!
//! # The client model
//!
//! The pacer cannot see the client's buffer; it estimates it as
//! `buffered = released - played`, where `released` is exact (the samples this stream has
//! handed out) and `played` is a straight line: `played(t) = anchor_played + (t - anchor) *
//! rate`, where `rate` is the sample rate corrected by an estimate of the client's clock drift
//! (`rate_ppm`). The client cannot play what it has not received, so the estimate is capped at
//! `released`.
//!
//! Frame `k` is due when releasing it leaves the client at most `cushion` ahead:
//! `played(t) >= released + frame - cushion`. On a fresh stream (`played = released = 0`)
//! the first `cushion / frame` frames are therefore due at once (the burst that gives
//! playback its cushion) and the next ones at `t0 + n * frame`: absolute deadlines computed
//! from the anchor in integer nanoseconds, so 10,000 frames later there is no accumulated
//! error at all.
//!
//! # Client reports
//!
//! A playout report ("I hold `b` ms") measures `played = released - b`. The difference from
//! the model's estimate drives a second-order phase-locked loop: half of the phase error
//! corrects the anchor at once (at most one frame per report, so a bogus report cannot
//! trigger a burst), and a tenth of it, divided by the time since the previous report,
//! corrects the rate. With reports every 250 ms the loop's poles sit at |z| = 0.71, so a
//! +-1 % drift is absorbed within a few seconds and the cushion then stays on target with no
//! steady-state error. Reports received while the client has run dry say nothing about its
//! clock and only re-anchor the phase. The report is taken to describe the moment it arrives:
//! network delay makes the client look slightly fuller than it is, which errs on the safe
//! side.
//!
//! The last report also enforces `max_lead` directly: extrapolated by the audio released and
//! played since, the client must never be sent a frame that would take it beyond `max_lead`.
//!
//! # Deadlines and lateness
//!
//! A deadline is never earlier than the moment the pacer learnt of it (`not_before`): audio
//! pushed after its model slot (the producer was late), or a schedule moved by a report, is
//! due "now". Lateness therefore measures the pacer's own reaction time, not the producer's.
//!
//! # Underruns
//!
//! A scheduled stream that finds less than a frame queued at its deadline counts one underrun
//! per frame slot, invents no audio, and keeps checking on the frame grid (`deadline +
//! frame`), so lateness stays meaningful throughout. When audio arrives the stream resumes at
//! once: if the model says the client still holds audio, the missing frames are sent as soon
//! as possible to rebuild the cushion; if the client has run dry, the model is re-anchored at
//! the resume instant and playback restarts with a burst, exactly like a fresh stream.
//! A stream whose producer called [`finish`](super::FramePacer::finish) goes idle when its queue
//! drains, with no underrun: that is the end of an utterance, not a gap.
//!
//! # Hold and resume
//!
//! [`hold`](super::FramePacer::hold) pauses one stream where it is (the client has paused its
//! playout, keeping what it holds: the user started speaking over the agent), and a stream
//! may be opened held ([`StreamConfig::held`]: a reply generated before the user's turn is
//! confirmed). A held stream has no deadline at all (its heap entry goes stale, so the pacer
//! thread neither spins nor wakes for it, beyond the one deadline its timer may already be
//! armed for), releases nothing and counts no underrun; `push` still queues, up to the
//! queue's capacity, with the usual backpressure. Its client model is frozen: the client
//! paused, so `played(t)` stays where it was when the hold began.
//! [`resume`](super::FramePacer::resume) re-anchors the model at the resume instant on that
//! frozen position, so the stream goes on from the exact sample it paused at: a client
//! paused with a full cushion gets its next frame one frame period later, not a burst; a
//! stream opened held (nothing released) sends its cushion burst at once, and its `started`
//! event comes then. A stream held mid-utterance is scheduled again at its resume even with
//! less than a frame queued, and the underrun policy goes on from there. Frames due at the
//! resume are due *at* the resume instant, so their lateness measures the pacer, not the
//! hold.
//!
//! A playout report taken while held re-anchors the phase only, like one from a dry client:
//! a paused client's position is exact (it does not move while the report travels), but
//! time passed and nothing played, so it says nothing about the client's clock. The first
//! report after a resume does not update the rate either: the client resumes when the word
//! reaches it, a little after the server's resume instant, and that delay is not drift. The
//! `max_lead` guard's extrapolation skips the hold for the same reason. Reports never end a
//! hold; `flush` and `finish` work while held (a finished utterance drains once its last
//! frame is released, after the resume; at once if nothing is left to release).

use std::collections::VecDeque;
use std::sync::Arc;

use super::stats::LatenessHistogram;
use super::wake::EventFd;
use crate::error::PacerError;
use crate::sink::SocketSink;

/// Sample rates a stream may use, in Hz.
pub const SUPPORTED_RATES: [u32; 8] = [8000, 12000, 16000, 22050, 24000, 32000, 44100, 48000];
pub(crate) const SUPPORTED_TEXT: &str =
    "8000, 12000, 16000, 22050, 24000, 32000, 44100 or 48000 Hz \
     (22050 only with 20 or 40 ms frames, where a frame is a whole number of samples)";

/// Half of a report's phase error corrects the model at once.
const PHASE_GAIN: f64 = 0.5;
/// A tenth of it (per second since the previous report) corrects the rate estimate.
const RATE_GAIN: f64 = 0.1;
/// The client's clock is assumed within +-5 % of nominal; beyond that a report is noise.
const MAX_RATE_PPM: i64 = 50_000;
/// Reports closer together than this carry too little drift to estimate the rate from.
const MIN_RATE_INTERVAL_NS: i64 = 50_000_000;
/// The longest client buffer a report may claim, in ms.
const MAX_REPORTED_MS: f64 = 60_000.0;

const NS_PER_SECOND: i128 = 1_000_000_000;
const PPM: i128 = 1_000_000;

/// Parameters of one playout stream, as the caller gives them (validated on open).
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Sample rate of the audio pushed and released, in Hz (see [`SUPPORTED_RATES`]).
    pub sample_rate: i64,
    /// Number of channels; only mono (1) is supported.
    pub channels: i64,
    /// Target of audio buffered at the client, in ms (at least one frame).
    pub cushion_ms: i64,
    /// Most audio the client may ever be sent ahead of its playback, in ms; `None` means
    /// `cushion_ms` + 4 frames.
    pub max_lead_ms: Option<i64>,
    /// Capacity of the playout queue, in ms (at least one frame).
    pub queue_ms: i64,
    /// Where the pacer thread writes each released frame itself, as one WebSocket binary
    /// message, before handing the frame over (so the client's audio does not wait for the
    /// consumer); `None`: frames only go to the hand-off queue.
    pub sink: Option<Arc<SocketSink>>,
    /// Open the stream held (see [`FramePacer::hold`](super::FramePacer::hold)): it queues
    /// audio but releases nothing until [`resume`](super::FramePacer::resume).
    pub held: bool,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            sample_rate: 16_000,
            channels: 1,
            cushion_ms: 120,
            max_lead_ms: None,
            queue_ms: 2000,
            sink: None,
            held: false,
        }
    }
}

/// A validated stream's identity and sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamInfo {
    /// The stream's id, unique within its pacer (never reused).
    pub id: u64,
    /// Sample rate, in Hz.
    pub sample_rate: u32,
    /// Samples per released frame.
    pub frame_samples: usize,
    /// Target client cushion, in ms.
    pub cushion_ms: u32,
    /// Maximum lead over the client's playback, in ms.
    pub max_lead_ms: u32,
    /// Playout queue capacity, in ms.
    pub queue_ms: u32,
}

impl StreamInfo {
    /// Validates `config` for a pacer releasing `frame_ms` frames.
    pub(crate) fn validate(
        id: u64,
        config: &StreamConfig,
        frame_ms: u32,
    ) -> Result<Self, PacerError> {
        let rate = u32::try_from(config.sample_rate)
            .ok()
            .filter(|rate| SUPPORTED_RATES.contains(rate))
            .filter(|rate| (*rate as u64 * frame_ms as u64) % 1000 == 0);
        let Some(sample_rate) = rate else {
            return Err(match u32::try_from(config.sample_rate) {
                Ok(rate) => PacerError::UnsupportedSampleRate { rate, frame_ms },
                Err(_) => PacerError::InvalidSampleRate {
                    sample_rate: config.sample_rate,
                },
            });
        };
        if config.channels != 1 {
            return Err(PacerError::UnsupportedChannels {
                channels: config.channels,
            });
        }
        let frame = frame_ms as i64;
        if !(frame..=10_000).contains(&config.cushion_ms) {
            return Err(PacerError::InvalidCushion {
                cushion_ms: config.cushion_ms,
                frame_ms,
            });
        }
        let max_lead_ms = config.max_lead_ms.unwrap_or(config.cushion_ms + 4 * frame);
        if !(config.cushion_ms + frame..=20_000).contains(&max_lead_ms) {
            return Err(PacerError::InvalidMaxLead {
                max_lead_ms,
                cushion_ms: config.cushion_ms,
                frame_ms,
            });
        }
        if !(frame..=600_000).contains(&config.queue_ms) {
            return Err(PacerError::InvalidQueue {
                queue_ms: config.queue_ms,
                frame_ms,
            });
        }
        Ok(Self {
            id,
            sample_rate,
            frame_samples: (sample_rate * frame_ms / 1000) as usize,
            cushion_ms: config.cushion_ms as u32,
            max_lead_ms: max_lead_ms as u32,
            queue_ms: config.queue_ms as u32,
        })
    }

    /// `ms` milliseconds in samples at this stream's rate.
    pub fn samples_of_ms(&self, ms: u32) -> i64 {
        self.sample_rate as i64 * ms as i64 / 1000
    }
}

/// What a flush dropped and what had already gone out, so a conversation can keep only what
/// the user heard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushReport {
    /// Samples discarded: still queued, plus frames released but not yet taken by Python
    /// (those never reach the client, so they count as dropped, not released).
    pub dropped_samples: u64,
    /// Samples this stream has released and handed over since it was opened.
    pub released_samples: u64,
    /// Of those, the samples the client is estimated to hold unplayed (its `clear` discards
    /// them): `released - client_buffered` is what the user has heard.
    pub client_buffered_samples: u64,
}

/// Counters of one stream (and, summed, of a pacer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames released.
    pub frames_released: u64,
    /// Frame slots that found less than a frame queued.
    pub underruns: u64,
    /// Calls to flush.
    pub flushes: u64,
    /// Samples dropped by flush or close.
    pub dropped_samples: u64,
    /// Released frames the stream's socket sink refused (full, closed or broken); they were
    /// still handed over.
    pub sink_refused: u64,
}

/// The last playout report, for the `max_lead` guard.
#[derive(Debug, Clone, Copy)]
struct PlayoutReport {
    at_ns: i64,
    buffered: i64,
    released_then: i64,
}

/// Where a stream is in the deadline heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Not scheduled: no audio yet, finished and drained, or flushed.
    Idle,
    /// Has a deadline in the heap; `starved` after an underrun, until audio comes back.
    Scheduled { starved: bool },
}

/// One stream's state, owned by the pacer's engine (always under its lock).
pub(crate) struct Stream {
    pub info: StreamInfo,
    queue: VecDeque<i16>,
    capacity: usize,
    /// Readable once the queue has drained to half its capacity after a push was cut short.
    pub writable: Arc<EventFd>,
    wants_writable: bool,
    finishing: bool,
    pub phase: Phase,
    /// Bumped at every rescheduling; heap entries of older generations are stale.
    pub generation: u64,
    next_seq: u64,
    released: i64,
    anchor_ns: i64,
    anchor_played: i64,
    rate_ppm: i64,
    last_report: Option<PlayoutReport>,
    last_rate_report_ns: Option<i64>,
    not_before_ns: i64,
    pub counters: Counters,
    pub lateness: LatenessHistogram,
    /// Where released frames go on the wire directly (see [`StreamConfig::sink`]).
    pub sink: Option<Arc<SocketSink>>,
    /// A frame has been released (the `started` event was emitted).
    started: bool,
    /// The queue has drained since the last accepted push (the `drained` event was
    /// emitted), or a flush cancelled the utterance: no `drained` until new audio comes.
    drained: bool,
    /// When the current hold began; `None` while the stream is not held.
    held_since_ns: Option<i64>,
    /// Holds begun (opening held counts as one).
    holds: u64,
    /// Total duration of the holds that have ended, in ns.
    held_ns: i64,
}

impl Stream {
    pub fn new(
        info: StreamInfo,
        writable: Arc<EventFd>,
        sink: Option<Arc<SocketSink>>,
        held: bool,
        now_ns: i64,
    ) -> Self {
        let capacity = info.samples_of_ms(info.queue_ms) as usize;
        Self {
            info,
            // Up to 2 s preallocated; a longer queue grows in `push`, on the producer's
            // thread (the pacer thread only ever drains it).
            queue: VecDeque::with_capacity(
                (capacity + info.frame_samples).min(2 * info.sample_rate as usize),
            ),
            capacity,
            writable,
            wants_writable: false,
            finishing: false,
            phase: Phase::Idle,
            generation: 0,
            next_seq: 0,
            released: 0,
            anchor_ns: now_ns,
            anchor_played: 0,
            rate_ppm: 0,
            last_report: None,
            last_rate_report_ns: None,
            not_before_ns: now_ns,
            counters: Counters::default(),
            lateness: LatenessHistogram::new(),
            sink,
            started: false,
            drained: false,
            held_since_ns: held.then_some(now_ns),
            holds: u64::from(held),
            held_ns: 0,
        }
    }

    /// True exactly once: at the first frame this stream releases (the `started` event).
    pub fn mark_started(&mut self) -> bool {
        !std::mem::replace(&mut self.started, true)
    }

    /// True exactly once per utterance: when, after [`finish`](Self::finish), the queue is
    /// empty (the `drained` event). A push of new audio starts a new utterance; a flush
    /// cancels the current one without a `drained`.
    pub fn take_drained(&mut self) -> bool {
        if self.finishing && self.queue.is_empty() && !self.drained {
            self.drained = true;
            true
        } else {
            false
        }
    }

    pub fn frame_ns(&self) -> i64 {
        self.info.frame_samples as i64 * NS_PER_SECOND as i64 / self.info.sample_rate as i64
    }

    pub fn queued_samples(&self) -> usize {
        self.queue.len()
    }

    pub fn released_samples(&self) -> i64 {
        self.released
    }

    pub fn rate_ppm(&self) -> i64 {
        self.rate_ppm
    }

    /// Whether a hold is in progress.
    pub fn is_held(&self) -> bool {
        self.held_since_ns.is_some()
    }

    /// Holds begun since the stream opened (opening held counts as one).
    pub fn holds(&self) -> u64 {
        self.holds
    }

    /// Total time held by `now`, the current hold included, in ns.
    pub fn held_ns(&self, now_ns: i64) -> i64 {
        self.held_ns + self.held_since_ns.map_or(0, |since| now_ns - since)
    }

    pub fn has_frame(&self) -> bool {
        self.queue.len() >= self.info.frame_samples
    }

    /// Idle, or starved: new audio must (re)schedule the stream.
    fn waiting_for_audio(&self) -> bool {
        matches!(self.phase, Phase::Idle | Phase::Scheduled { starved: true })
    }

    /// Time for the client to play `samples` at the estimated rate, rounded up.
    fn duration_ns(&self, samples: i64) -> i64 {
        let per_second = self.info.sample_rate as i128 * (PPM + self.rate_ppm as i128);
        let numerator = samples as i128 * NS_PER_SECOND * PPM;
        ((numerator + per_second - 1) / per_second) as i64
    }

    /// Samples the client plays in `elapsed_ns` at the estimated rate, rounded down.
    fn samples_in(&self, elapsed_ns: i64) -> i64 {
        let per_second = self.info.sample_rate as i128 * (PPM + self.rate_ppm as i128);
        (elapsed_ns.max(0) as i128 * per_second / (NS_PER_SECOND * PPM)) as i64
    }

    /// The model's play position at `now`, not capped by what was released. Frozen while
    /// held: the client has paused (the anchor was moved to the hold's start).
    fn unbounded_played(&self, now_ns: i64) -> i64 {
        if self.is_held() {
            return self.anchor_played;
        }
        self.anchor_played + self.samples_in(now_ns - self.anchor_ns)
    }

    /// Estimated samples the client holds at `now`.
    pub fn client_buffered(&self, now_ns: i64) -> i64 {
        self.released - self.unbounded_played(now_ns).min(self.released)
    }

    /// When the next frame may go out: the model's slot, the `max_lead` guard and
    /// `not_before`, whichever is latest.
    pub fn next_deadline_ns(&self) -> i64 {
        let frame = self.info.frame_samples as i64;
        let cushion = self.info.samples_of_ms(self.info.cushion_ms);
        let ahead = self.released + frame - cushion - self.anchor_played;
        let model = if ahead <= 0 {
            i64::MIN
        } else {
            self.anchor_ns + self.duration_ns(ahead)
        };
        let guard = match self.last_report {
            Some(report) => {
                let max_lead = self.info.samples_of_ms(self.info.max_lead_ms);
                let excess =
                    report.buffered + (self.released - report.released_then) + frame - max_lead;
                if excess <= 0 {
                    i64::MIN
                } else {
                    report.at_ns + self.duration_ns(excess)
                }
            }
            None => i64::MIN,
        };
        model.max(guard).max(self.not_before_ns)
    }

    /// Makes the stream due no earlier than `now` (the pacer learnt of a change now), after
    /// re-anchoring the model if the client has run dry. Returns whether it must be
    /// (re)scheduled: it has a frame to release.
    fn restart(&mut self, now_ns: i64) -> bool {
        if self.unbounded_played(now_ns) >= self.released {
            self.anchor_ns = now_ns;
            self.anchor_played = self.released;
        }
        self.not_before_ns = now_ns;
        self.has_frame()
    }

    /// Queues as many of `samples` as fit; returns (accepted, must be scheduled).
    pub fn push(&mut self, samples: &[i16], now_ns: i64) -> (usize, bool) {
        let accepted = samples
            .len()
            .min(self.capacity.saturating_sub(self.queue.len()));
        self.queue.extend(&samples[..accepted]);
        if accepted < samples.len() {
            // Clear a stale signal first, so the next one means "space now".
            self.writable.drain();
            self.wants_writable = true;
        }
        if accepted > 0 {
            self.finishing = false;
            self.drained = false;
        }
        let schedule =
            accepted > 0 && !self.is_held() && self.waiting_for_audio() && self.restart(now_ns);
        (accepted, schedule)
    }

    /// Pads the queued tail with silence to a frame boundary and lets the stream go idle,
    /// without an underrun, once it drains. Returns (padded samples, must be scheduled);
    /// when the queue is empty already, [`take_drained`](Self::take_drained) is true at once.
    ///
    /// The padding may take the queue past its capacity by less than one frame: refusing it
    /// would leave the last words of an utterance stuck.
    pub fn finish(&mut self, now_ns: i64) -> (usize, bool) {
        let frame = self.info.frame_samples;
        let padding = (frame - self.queue.len() % frame) % frame;
        self.queue.resize(self.queue.len() + padding, 0);
        self.finishing = true;
        let schedule =
            padding > 0 && !self.is_held() && self.waiting_for_audio() && self.restart(now_ns);
        (padding, schedule)
    }

    /// Moves one frame into `out` (cleared first). Call only when [`has_frame`](Self::has_frame).
    /// Returns the frame's sequence number.
    pub fn release_into(&mut self, out: &mut Vec<i16>) -> u64 {
        out.clear();
        out.extend(self.queue.drain(..self.info.frame_samples));
        self.released += self.info.frame_samples as i64;
        self.counters.frames_released += 1;
        if self.wants_writable && self.queue.len() <= self.capacity / 2 {
            self.wants_writable = false;
            self.writable.signal();
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// A frame slot found the queue short: true when that is the end of a finished
    /// utterance (go idle), false for an underrun (counted here).
    pub fn slot_without_frame(&mut self) -> bool {
        if self.finishing && self.queue.is_empty() {
            self.finishing = false;
            return true;
        }
        self.counters.underruns += 1;
        false
    }

    /// Drops the queue; `purged` frames were released but never handed over and are taken
    /// back. The client is assumed to be told to clear its buffer, so the model restarts
    /// empty at `now`: the next audio starts with a fresh burst.
    pub fn flush(&mut self, purged_samples: i64, now_ns: i64) -> FlushReport {
        let queued = self.queue.len() as u64;
        self.queue.clear();
        self.released -= purged_samples;
        let client_buffered = self.client_buffered(now_ns);
        let dropped = queued + purged_samples as u64;
        self.counters.dropped_samples += dropped;
        self.counters.flushes += 1;
        self.finishing = false;
        // The utterance was cut, not played out: no `drained` for it.
        self.drained = true;
        self.phase = Phase::Idle;
        self.generation += 1;
        self.anchor_ns = now_ns;
        self.anchor_played = self.released;
        self.last_report = None;
        self.last_rate_report_ns = None;
        if self.wants_writable {
            self.wants_writable = false;
            self.writable.signal();
        }
        FlushReport {
            dropped_samples: dropped,
            released_samples: self.released as u64,
            client_buffered_samples: client_buffered as u64,
        }
    }

    /// Starts a hold at `now` (see the module doc): freezes the client model where it is and
    /// makes the stream's heap entry stale, so it has no deadline. Returns false (and changes
    /// nothing) when the stream is held already.
    pub fn hold(&mut self, now_ns: i64) -> bool {
        if self.is_held() {
            return false;
        }
        self.anchor_played = self.unbounded_played(now_ns).min(self.released);
        self.anchor_ns = now_ns;
        self.held_since_ns = Some(now_ns);
        self.holds += 1;
        self.generation += 1;
        true
    }

    /// Ends the hold at `now`: the client plays on from the frozen position, starting now,
    /// and nothing is due before now. Returns false (and changes nothing) when the stream is
    /// not held; the caller then schedules it if [`due_after_resume`](Self::due_after_resume).
    pub fn resume(&mut self, now_ns: i64) -> bool {
        let Some(since) = self.held_since_ns.take() else {
            return false;
        };
        self.held_ns += now_ns - since;
        self.anchor_ns = now_ns;
        if let Some(report) = &mut self.last_report {
            // Nothing played during the hold: the guard extrapolates over playing time only.
            report.at_ns = now_ns - (since - report.at_ns).max(0);
        }
        // The client resumes when the word reaches it, after `now`: the next report's phase
        // error holds that delay, which is not drift.
        self.last_rate_report_ns = None;
        self.not_before_ns = now_ns;
        true
    }

    /// After a resume: `Some(starved)` when the stream must be scheduled (it has a frame, or
    /// an utterance was in progress when the hold began, whose frame grid goes on), `None`
    /// when it stays idle.
    pub fn due_after_resume(&self) -> Option<bool> {
        match self.phase {
            _ if self.has_frame() => Some(false),
            Phase::Scheduled { starved } => Some(starved),
            Phase::Idle => None,
        }
    }

    /// Takes a client playout report (`buffered_ms` held at the client, now) into the model;
    /// returns whether the stream's deadline must be recomputed (it is playing, not held).
    pub fn report(&mut self, buffered_ms: f64, now_ns: i64) -> Result<bool, PacerError> {
        if !(0.0..=MAX_REPORTED_MS).contains(&buffered_ms) {
            return Err(PacerError::InvalidPlayoutReport { buffered_ms });
        }
        let buffered = (buffered_ms * self.info.sample_rate as f64 / 1000.0).round() as i64;
        let measured = (self.released - buffered).clamp(0, self.released);
        let unbounded = self.unbounded_played(now_ns);
        let estimate = unbounded.min(self.released);
        let error = measured - estimate;
        let client_playing = !self.is_held() && buffered > 0 && unbounded < self.released;
        if client_playing {
            if let Some(previous) = self.last_rate_report_ns {
                let interval = now_ns - previous;
                if interval >= MIN_RATE_INTERVAL_NS {
                    let correction = RATE_GAIN * error as f64 * 1e15
                        / (interval as f64 * self.info.sample_rate as f64);
                    self.rate_ppm = (self.rate_ppm + correction.round() as i64)
                        .clamp(-MAX_RATE_PPM, MAX_RATE_PPM);
                }
            }
            let frame = self.info.frame_samples as f64;
            let step = (PHASE_GAIN * error as f64).clamp(-frame, frame).round() as i64;
            self.anchor_played = (estimate + step).clamp(0, self.released);
            self.last_rate_report_ns = Some(now_ns);
        } else {
            // A dry client (or one we believe dry), or a paused one (held), says where it
            // stopped, not how fast it plays: take its position as is and wait for playback
            // to resume.
            self.anchor_played = measured;
            self.last_rate_report_ns = None;
        }
        self.anchor_ns = now_ns;
        self.last_report = Some(PlayoutReport {
            at_ns: now_ns,
            buffered,
            released_then: self.released,
        });
        self.not_before_ns = now_ns;
        // A starved stream keeps its frame grid until audio comes back; a held one has no
        // deadline until its resume.
        Ok(!self.is_held() && self.phase == Phase::Scheduled { starved: false })
    }
}
