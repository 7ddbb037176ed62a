//! The frame pacer: fixed-duration frames released on absolute deadlines by one OS thread.
//!
//! A [`FramePacer`] owns one thread serving any number of streams through a deadline heap
//! (a server with 100 sessions has one pacer thread, not 100). Each stream has a playout
//! queue bounded in ms, a target client cushion and a maximum lead (see [`stream`] for the
//! model of the client's buffer, the drift correction, the underrun policy, and how a stream
//! is held and resumed).
//!
//! The thread sleeps on a `timerfd` armed with the absolute deadline of the earliest stream
//! (never a relative sleep, so nothing accumulates) and an eventfd that API calls write when
//! they change the schedule. It asks for SCHED_FIFO (see [`priority`]). Released frames and
//! stream lifecycle events ([`StreamEvent`]: a stream `started`, a finished utterance
//! `drained`) go into a hand-off queue and one eventfd becomes readable, which Trio awaits
//! with `wait_readable`; a full playout queue tells its producer when space is back through a
//! per-stream eventfd. No thread here ever touches Python.
//!
//! With [`ClockKind::Virtual`] there is no thread: [`FramePacer::advance_to`] processes every
//! deadline up to the given virtual time on the caller's thread, so tests are deterministic.
//!
//! A stream may have a [`SocketSink`](crate::sink::SocketSink): the releasing code then writes
//! each frame to the client's socket itself, as a WebSocket binary message, so the client's
//! audio never waits for the consumer (a blocked event loop, a GC pause). Such a stream's
//! frames do not enter the hand-off queue at all: Rust owns the audio it sent, and the
//! consumer, which only needs to know when the agent became audible and when it finished,
//! gets the stream's events and statistics instead of a copy of every frame. A wake that
//! releases frames also flushes every sink's leftover bytes.
//!
//! Locking: short critical sections, all [`sync::PiMutex`] (priority inheritance), so a
//! preempted Python thread holding one cannot delay the real-time thread: the engine (streams
//! and heap; taken by every API call and by the thread per wake), the hand-off queue, and each
//! stream's sink (one non-blocking send). The engine lock is always taken first; the hand-off
//! and sink locks are never held together, and nothing holding either takes the engine lock.

pub mod clock;
pub mod priority;
pub mod stats;
pub mod stream;
pub mod sync;
mod thread;
pub mod wake;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

pub use clock::{monotonic_now_ns, ClockKind};
pub use priority::Scheduling;
pub use stats::LatenessHistogram;
pub use stream::{Counters, FlushReport, StreamConfig, StreamInfo, SUPPORTED_RATES};
pub use wake::EventFd;

pub use crate::error::PacerError;

/// Result of the pacer's operations.
type Result<T> = std::result::Result<T, PacerError>;
use stream::{Phase, Stream};
use sync::PiMutex;

/// Frame durations a pacer can release, in ms.
pub const FRAME_DURATIONS_MS: [u32; 3] = [10, 20, 40];
/// Most spare frame buffers kept for reuse; beyond, returned buffers are freed.
const MAX_SPARE_BUFFERS: usize = 512;
/// Most stream events kept for the consumer; beyond, the oldest are dropped (only a consumer
/// that never takes them lets this many pile up).
pub const MAX_PENDING_EVENTS: usize = 4096;
/// Release lateness above which a frame is reported as [`StreamEventKind::Late`], in ns: a
/// quarter of the shortest frame, far above the pacer's normal p99 (microseconds) and far
/// below an audible gap; only a frozen or CPU-starved process releases that late.
pub const LATE_FRAME_NS: i64 = 5_000_000;
/// Longest step of virtual time per `advance_to` call: one hour.
const MAX_VIRTUAL_STEP_NS: i64 = 3_600_000_000_000;

/// One frame handed to the consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleasedFrame {
    /// The stream it belongs to.
    pub stream_id: u64,
    /// Its position in the stream: 0, 1, 2... (never reset; frames a flush takes back
    /// before the consumer saw them leave a gap).
    pub seq: u64,
    /// The samples, exactly one frame.
    pub samples: Vec<i16>,
    /// When it was due, in ns of the pacer's clock.
    pub deadline_ns: i64,
    /// When the pacer released it, in ns of the pacer's clock.
    pub released_ns: i64,
}

impl ReleasedFrame {
    /// `released_ns - deadline_ns`: how late the pacer was.
    pub fn lateness_ns(&self) -> i64 {
        self.released_ns - self.deadline_ns
    }
}

/// What happened to a stream, for the consumer's lifecycle bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEventKind {
    /// The stream's first frame was released: its audio became audible (on the wire for a
    /// stream with a sink). Once per stream, never again (not even after a flush).
    Started {
        /// That frame's release lateness (release time minus deadline), in ns.
        lateness_ns: i64,
    },
    /// After [`FramePacer::finish`], the last queued sample has been released. Once per
    /// utterance: new audio pushed before the queue drained continues the utterance, and a
    /// [`FramePacer::flush`] cancels it (no `Drained` follows a flush until new audio is
    /// pushed and finished).
    Drained,
    /// A frame was released more than [`LATE_FRAME_NS`] after its deadline. Only late frames
    /// are reported (the consumer's diagnostics line them up with their causes); on-time
    /// frames are counted in the statistics only.
    Late {
        /// That frame's release lateness, in ns.
        lateness_ns: i64,
    },
}

impl StreamEventKind {
    /// `"started"`, `"drained"` or `"late"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Started { .. } => "started",
            Self::Drained => "drained",
            Self::Late { .. } => "late",
        }
    }
}

/// One lifecycle event of a stream, queued for the consumer beside the released frames.
///
/// Every stream emits them, with or without a sink, so the consumer has one lifecycle path;
/// a stream with a sink emits nothing else (its frames are on the wire, not in the queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamEvent {
    /// The stream it belongs to.
    pub stream_id: u64,
    /// What happened.
    pub kind: StreamEventKind,
    /// When, in ns of the pacer's clock.
    pub at_ns: i64,
}

/// Lateness quantiles, in ns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatenessSummary {
    /// Number of frames measured.
    pub count: u64,
    /// Median.
    pub p50_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// Maximum (exact).
    pub max_ns: u64,
}

impl From<&LatenessHistogram> for LatenessSummary {
    fn from(histogram: &LatenessHistogram) -> Self {
        Self {
            count: histogram.count(),
            p50_ns: histogram.quantile_ns(0.5),
            p99_ns: histogram.quantile_ns(0.99),
            max_ns: histogram.max_ns(),
        }
    }
}

/// A pacer's statistics over its life (closed streams included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacerStats {
    /// The scheduling class the pacer thread obtained.
    pub scheduling: Scheduling,
    /// Streams open now.
    pub open_streams: usize,
    /// Summed counters of every stream.
    pub counters: Counters,
    /// Release lateness of every frame.
    pub lateness: LatenessSummary,
}

/// One stream's statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStats {
    /// The stream's counters.
    pub counters: Counters,
    /// Samples waiting in the playout queue.
    pub queued_samples: u64,
    /// Samples released and handed over since the stream opened.
    pub released_samples: u64,
    /// Estimated samples the client holds now.
    pub client_buffered_samples: u64,
    /// Estimated client clock drift, in parts per million (positive: it plays fast).
    pub client_rate_ppm: i64,
    /// Whether the stream is scheduled (playing, or starved waiting for audio); a stream
    /// held mid-utterance stays `playing` (it goes on at its resume).
    pub playing: bool,
    /// Whether the stream is held now.
    pub held: bool,
    /// Holds begun since the stream opened (opening held counts as one).
    pub holds: u64,
    /// Total time held, the current hold included, in ns.
    pub held_ns: u64,
    /// Release lateness of this stream's frames.
    pub lateness: LatenessSummary,
}

/// A heap entry: the stream `id` is due at `deadline_ns` if still at `generation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    deadline_ns: i64,
    id: u64,
    generation: u64,
}

/// Everything the pacer thread and the API calls share, under the engine lock.
struct Engine {
    frame_ms: u32,
    clock: ClockKind,
    virtual_now_ns: i64,
    stopped: bool,
    next_id: u64,
    streams: HashMap<u64, Stream>,
    heap: BinaryHeap<Reverse<Due>>,
    /// Frames released during one wake, published to the hand-off queue in one go (only of
    /// streams without a sink).
    staging: Vec<ReleasedFrame>,
    /// Stream events of one wake, published with the frames.
    staged_events: Vec<StreamEvent>,
    /// Frames released during the current wake, sinks included.
    released_this_wake: usize,
    /// Frame buffers ready for reuse, refilled from the hand-off queue's returns.
    spare: Vec<Vec<i16>>,
    totals: Counters,
    lateness: LatenessHistogram,
}

/// Released frames and stream events on their way to the consumer, and buffers on their way
/// back.
#[derive(Default)]
struct Handoff {
    ready: VecDeque<ReleasedFrame>,
    events: VecDeque<StreamEvent>,
    returned: Vec<Vec<i16>>,
    /// A consumer has called [`FramePacer::take_released`]: frames still waiting after a
    /// [`FramePacer::take_events`] keep the descriptor readable.
    frames_wanted: bool,
    /// A consumer has called [`FramePacer::take_events`]: events still waiting after a
    /// [`FramePacer::take_released`] keep the descriptor readable. Until then a consumer
    /// that only takes frames is not woken again and again by events it never takes.
    events_wanted: bool,
}

impl Handoff {
    fn push_events(&mut self, events: impl IntoIterator<Item = StreamEvent>) {
        self.events.extend(events);
        let excess = self.events.len().saturating_sub(MAX_PENDING_EVENTS);
        self.events.drain(..excess);
    }
}

struct Shared {
    engine: PiMutex<Engine>,
    handoff: PiMutex<Handoff>,
    /// Readable when `handoff.ready` or `handoff.events` may hold something (or the pacer
    /// stopped).
    released: EventFd,
    /// Wakes the pacer thread early: the schedule changed, or stop.
    wake: EventFd,
}

impl Engine {
    fn now_ns(&self) -> i64 {
        match self.clock {
            ClockKind::Real => monotonic_now_ns(),
            ClockKind::Virtual => self.virtual_now_ns,
        }
    }

    fn check_running(&self) -> Result<()> {
        if self.stopped {
            Err(PacerError::Stopped)
        } else {
            Ok(())
        }
    }

    fn stream(&mut self, id: u64) -> Result<&mut Stream> {
        self.check_running()?;
        self.streams
            .get_mut(&id)
            .ok_or(PacerError::UnknownStream { id })
    }

    /// Puts stream `id` in the heap at its next deadline (older entries become stale).
    fn schedule(&mut self, id: u64, starved: bool, deadline_ns: i64) {
        if let Some(stream) = self.streams.get_mut(&id) {
            stream.generation += 1;
            stream.phase = Phase::Scheduled { starved };
            self.heap.push(Reverse(Due {
                deadline_ns,
                id,
                generation: stream.generation,
            }));
        }
    }

    fn reschedule(&mut self, id: u64) {
        if let Some(deadline) = self.streams.get(&id).map(Stream::next_deadline_ns) {
            self.schedule(id, false, deadline);
        }
    }

    /// The earliest live deadline, dropping stale heap entries on the way.
    fn next_due(&mut self) -> Option<Due> {
        while let Some(&Reverse(due)) = self.heap.peek() {
            let live = self
                .streams
                .get(&due.id)
                .is_some_and(|stream| stream.generation == due.generation);
            if live {
                return Some(due);
            }
            self.heap.pop();
        }
        None
    }

    /// Serves one due entry at `now_ns`: a release, an underrun, or the end of an utterance.
    fn serve(&mut self, due: Due, now_ns: i64) {
        self.heap.pop();
        let Some(stream) = self.streams.get_mut(&due.id) else {
            return;
        };
        if stream.has_frame() {
            // A recycled buffer: allocation only until the consumer has returned a few.
            let mut buffer = self.spare.pop().unwrap_or_default();
            let seq = stream.release_into(&mut buffer);
            let lateness = now_ns - due.deadline_ns;
            stream.lateness.record(lateness);
            self.lateness.record(lateness);
            self.totals.frames_released += 1;
            self.released_this_wake += 1;
            if stream.mark_started() {
                self.staged_events.push(StreamEvent {
                    stream_id: due.id,
                    kind: StreamEventKind::Started {
                        lateness_ns: lateness,
                    },
                    at_ns: now_ns,
                });
            }
            if lateness > LATE_FRAME_NS {
                self.staged_events.push(StreamEvent {
                    stream_id: due.id,
                    kind: StreamEventKind::Late {
                        lateness_ns: lateness,
                    },
                    at_ns: now_ns,
                });
            }
            if stream.take_drained() {
                self.staged_events.push(StreamEvent {
                    stream_id: due.id,
                    kind: StreamEventKind::Drained,
                    at_ns: now_ns,
                });
            }
            if let Some(sink) = &stream.sink {
                // On the wire, and that is all: the consumer gets no copy of this audio (it
                // only needs the events and the statistics). A refusal (slow or gone peer)
                // is counted and pacing goes on.
                if sink.write_ws_binary_pcm16(&buffer).is_err() {
                    stream.counters.sink_refused += 1;
                    self.totals.sink_refused += 1;
                }
                self.spare.push(buffer);
            } else {
                self.staging.push(ReleasedFrame {
                    stream_id: due.id,
                    seq,
                    samples: buffer,
                    deadline_ns: due.deadline_ns,
                    released_ns: now_ns,
                });
            }
            let next = stream.next_deadline_ns();
            self.schedule(due.id, false, next);
            return;
        }
        if stream.slot_without_frame() {
            stream.phase = Phase::Idle;
        } else {
            let next = due.deadline_ns + stream.frame_ns();
            self.totals.underruns += 1;
            self.schedule(due.id, true, next);
        }
    }

    /// Serves every entry due by now (real clock) or by `until_ns` (virtual clock, stepping
    /// the virtual time to each deadline), publishes the released frames, and returns the
    /// next deadline.
    fn run_due(
        &mut self,
        handoff: &PiMutex<Handoff>,
        released: &EventFd,
        until_ns: i64,
    ) -> Option<i64> {
        while let Some(due) = self.next_due() {
            let now = match self.clock {
                ClockKind::Real => monotonic_now_ns(),
                ClockKind::Virtual => {
                    if due.deadline_ns > until_ns {
                        break;
                    }
                    self.virtual_now_ns = self.virtual_now_ns.max(due.deadline_ns);
                    self.virtual_now_ns
                }
            };
            if due.deadline_ns > now {
                break;
            }
            self.serve(due, now);
        }
        if self.clock == ClockKind::Virtual {
            self.virtual_now_ns = self.virtual_now_ns.max(until_ns);
        }
        if self.released_this_wake > 0 {
            self.released_this_wake = 0;
            // Bytes a full socket kept back (behind a frame or a Python write) drain here,
            // without waiting for Python.
            for sink in self
                .streams
                .values()
                .filter_map(|stream| stream.sink.as_ref())
            {
                sink.flush();
            }
        }
        if !self.staging.is_empty() || !self.staged_events.is_empty() {
            let mut handoff = handoff.lock();
            handoff.ready.extend(self.staging.drain(..));
            handoff.push_events(self.staged_events.drain(..));
            let wanted = MAX_SPARE_BUFFERS.saturating_sub(self.spare.len());
            let available = handoff.returned.len();
            self.spare
                .extend(handoff.returned.drain(available.saturating_sub(wanted)..));
            drop(handoff);
            released.signal();
        }
        self.next_due().map(|due| due.deadline_ns)
    }
}

/// A frame pacer: one thread (or a virtual clock) releasing frames of many streams on time.
///
/// Every method takes `&self` and is safe to call from any thread. Dropping the pacer stops
/// its thread.
pub struct FramePacer {
    shared: Arc<Shared>,
    frame_ms: u32,
    clock: ClockKind,
    scheduling: Scheduling,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for FramePacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FramePacer")
            .field("frame_ms", &self.frame_ms)
            .field("clock", &self.clock)
            .field("scheduling", &self.scheduling)
            .finish_non_exhaustive()
    }
}

impl FramePacer {
    /// A pacer releasing `frame_ms` frames (10, 20 or 40). With [`ClockKind::Real`] it starts
    /// its thread, which asks for real-time scheduling when `realtime` is true (see
    /// [`priority`]); with [`ClockKind::Virtual`] there is no thread and `realtime` is moot.
    pub fn new(frame_ms: i64, clock: ClockKind, realtime: bool) -> Result<Self> {
        let frame_ms = u32::try_from(frame_ms)
            .ok()
            .filter(|ms| FRAME_DURATIONS_MS.contains(ms))
            .ok_or(PacerError::UnsupportedFrameDuration { frame_ms })?;
        let shared = Arc::new(Shared {
            engine: PiMutex::new(Engine {
                frame_ms,
                clock,
                virtual_now_ns: 0,
                stopped: false,
                next_id: 1,
                streams: HashMap::new(),
                heap: BinaryHeap::with_capacity(64),
                staging: Vec::with_capacity(64),
                staged_events: Vec::with_capacity(64),
                released_this_wake: 0,
                spare: Vec::with_capacity(MAX_SPARE_BUFFERS),
                totals: Counters::default(),
                lateness: LatenessHistogram::new(),
            }),
            handoff: PiMutex::new(Handoff::default()),
            released: EventFd::new()?,
            wake: EventFd::new()?,
        });
        let (scheduling, thread) = match clock {
            ClockKind::Virtual => (Scheduling::Virtual, None),
            ClockKind::Real => {
                let (scheduling, handle) = thread::spawn(Arc::clone(&shared), realtime)?;
                (scheduling, Some(handle))
            }
        };
        Ok(Self {
            shared,
            frame_ms,
            clock,
            scheduling,
            thread: Mutex::new(thread),
        })
    }

    /// Frame duration, in ms.
    pub fn frame_ms(&self) -> u32 {
        self.frame_ms
    }

    /// The clock this pacer runs on.
    pub fn clock(&self) -> ClockKind {
        self.clock
    }

    /// The scheduling class the pacer thread obtained.
    pub fn scheduling(&self) -> Scheduling {
        self.scheduling
    }

    /// Now on the pacer's clock, in ns.
    pub fn now_ns(&self) -> i64 {
        self.shared.engine.lock().now_ns()
    }

    /// Whether [`stop`](Self::stop) has been called.
    pub fn is_stopped(&self) -> bool {
        self.shared.engine.lock().stopped
    }

    /// The eventfd that is readable while released frames or stream events may be waiting
    /// (and after stop).
    pub fn released_fd(&self) -> RawFd {
        self.shared.released.raw_fd()
    }

    /// Opens a stream; it plays once it has a frame of audio (and, when opened
    /// [`held`](StreamConfig::held), once resumed).
    pub fn open_stream(&self, config: &StreamConfig) -> Result<StreamInfo> {
        let writable = Arc::new(EventFd::new()?);
        let mut engine = self.shared.engine.lock();
        engine.check_running()?;
        let info = StreamInfo::validate(engine.next_id, config, engine.frame_ms)?;
        engine.next_id += 1;
        let now = engine.now_ns();
        engine.streams.insert(
            info.id,
            Stream::new(info, writable, config.sink.clone(), config.held, now),
        );
        Ok(info)
    }

    /// The stream's "writable" eventfd: readable once its queue has drained to half its
    /// capacity after a push was cut short (and on flush, close and stop). Shared ownership,
    /// so the descriptor outlives the stream for a waiter still holding it.
    pub fn writable_event(&self, id: u64) -> Result<Arc<EventFd>> {
        Ok(Arc::clone(&self.shared.engine.lock().stream(id)?.writable))
    }

    fn wake_thread(&self) {
        if self.clock == ClockKind::Real {
            self.shared.wake.signal();
        }
    }

    /// Queues PCM16 samples; returns how many fit (the rest must be pushed again once the
    /// writable eventfd is readable). A trailing partial frame waits for more audio or
    /// [`finish`](Self::finish).
    pub fn push(&self, id: u64, samples: &[i16]) -> Result<usize> {
        let mut engine = self.shared.engine.lock();
        let now = engine.now_ns();
        let (accepted, schedule) = engine.stream(id)?.push(samples, now);
        if schedule {
            engine.reschedule(id);
            drop(engine);
            self.wake_thread();
        }
        Ok(accepted)
    }

    /// Queues float samples (nominal range [-1, 1], clipped) as PCM16; returns how many fit.
    /// Non-finite samples are refused, since no PCM16 value means NaN.
    pub fn push_f32(&self, id: u64, samples: &[f32]) -> Result<usize> {
        if let Some(index) = samples.iter().position(|sample| !sample.is_finite()) {
            return Err(PacerError::NonFiniteSample {
                index,
                value: samples[index],
            });
        }
        // Converted outside the lock, so the pacer thread never waits for it.
        let pcm: Vec<i16> = samples
            .iter()
            .map(|sample| (sample.clamp(-1.0, 1.0) * 32767.0).round() as i16)
            .collect();
        self.push(id, &pcm)
    }

    /// Pads the stream's partial last frame with silence and marks the end of an utterance:
    /// once its queue drains, the stream goes idle without counting underruns. Returns the
    /// number of silent samples added (0 when the queue ended on a frame boundary).
    ///
    /// A [`StreamEventKind::Drained`] event follows once the last queued sample has been
    /// released (at once when nothing is queued).
    pub fn finish(&self, id: u64) -> Result<usize> {
        let mut engine = self.shared.engine.lock();
        let now = engine.now_ns();
        let stream = engine.stream(id)?;
        let (padding, schedule) = stream.finish(now);
        if stream.take_drained() {
            // Engine lock, then hand-off lock: the documented order.
            self.shared.handoff.lock().push_events([StreamEvent {
                stream_id: id,
                kind: StreamEventKind::Drained,
                at_ns: now,
            }]);
            self.shared.released.signal();
        }
        if schedule {
            engine.reschedule(id);
            drop(engine);
            self.wake_thread();
        }
        Ok(padding)
    }

    /// Drops the stream's queued audio and its released frames not yet taken, at once, and
    /// says how much was dropped and how much had gone out; nothing of the dropped audio is
    /// released afterwards. The stream goes idle: its next audio starts with a fresh burst
    /// (the caller tells the client to clear its buffer). A stream with a sink has no frames
    /// in the hand-off queue: its released frames are already on the wire, so they count as
    /// released, not dropped. No [`StreamEventKind::Drained`] follows a flush.
    pub fn flush(&self, id: u64) -> Result<FlushReport> {
        let mut engine = self.shared.engine.lock();
        let has_sink = engine.stream(id)?.sink.is_some();
        let mut purged = 0i64;
        if !has_sink {
            let mut handoff = self.shared.handoff.lock();
            let mut index = 0;
            while index < handoff.ready.len() {
                if handoff.ready[index].stream_id == id {
                    if let Some(frame) = handoff.ready.remove(index) {
                        purged += frame.samples.len() as i64;
                        handoff.returned.push(frame.samples);
                    }
                } else {
                    index += 1;
                }
            }
        }
        let now = engine.now_ns();
        let stream = engine.stream(id)?;
        let report = stream.flush(purged, now);
        engine.totals.flushes += 1;
        engine.totals.dropped_samples += report.dropped_samples;
        Ok(report)
    }

    /// Takes a client playout report: the client holds `buffered_ms` of this stream's audio,
    /// now. Reports a few times a second keep the cushion on target under clock drift.
    pub fn report_playout(&self, id: u64, buffered_ms: f64) -> Result<()> {
        let mut engine = self.shared.engine.lock();
        let now = engine.now_ns();
        if engine.stream(id)?.report(buffered_ms, now)? {
            engine.reschedule(id);
            drop(engine);
            self.wake_thread();
        }
        Ok(())
    }

    /// Holds the stream (see [`stream`]'s "Hold and resume"): from now on it releases
    /// nothing and counts no underrun, and the model of the client's buffer is frozen (the
    /// client has paused its playout, keeping what it holds); `push` still queues. Returns
    /// true when the hold began, false when the stream was held already (nothing changes:
    /// two holds make one). The pacer thread has no deadline for a held stream; it may wake
    /// once more at the deadline it was sleeping to, and re-arms without it.
    pub fn hold(&self, id: u64) -> Result<bool> {
        let mut engine = self.shared.engine.lock();
        let now = engine.now_ns();
        Ok(engine.stream(id)?.hold(now))
    }

    /// Resumes a held stream: the client model goes on from where the hold froze it, from
    /// now, so the stream continues at the exact sample it paused at; frames due at once
    /// (a stream opened held sends its cushion burst) are due now. Returns true when the
    /// stream was held, false when it was not (nothing changes).
    pub fn resume(&self, id: u64) -> Result<bool> {
        let mut engine = self.shared.engine.lock();
        let now = engine.now_ns();
        let stream = engine.stream(id)?;
        if !stream.resume(now) {
            return Ok(false);
        }
        if let Some(starved) = stream.due_after_resume() {
            let deadline = stream.next_deadline_ns();
            engine.schedule(id, starved, deadline);
            drop(engine);
            self.wake_thread();
        }
        Ok(true)
    }

    /// Whether the stream is held.
    pub fn is_held(&self, id: u64) -> Result<bool> {
        Ok(self.shared.engine.lock().stream(id)?.is_held())
    }

    /// Closes the stream, dropping its queued audio; its id is never reused. Frames already
    /// released stay in the hand-off queue. A producer waiting on its writable eventfd wakes.
    pub fn close_stream(&self, id: u64) -> Result<()> {
        let mut engine = self.shared.engine.lock();
        engine.stream(id)?;
        if let Some(stream) = engine.streams.remove(&id) {
            engine.totals.dropped_samples += stream.queued_samples() as u64;
            stream.writable.signal();
        }
        Ok(())
    }

    /// One stream's statistics.
    pub fn stream_stats(&self, id: u64) -> Result<StreamStats> {
        let mut engine = self.shared.engine.lock();
        let now = engine.now_ns();
        let stream = engine.stream(id)?;
        Ok(StreamStats {
            counters: stream.counters,
            queued_samples: stream.queued_samples() as u64,
            released_samples: stream.released_samples() as u64,
            client_buffered_samples: stream.client_buffered(now) as u64,
            client_rate_ppm: stream.rate_ppm(),
            playing: stream.phase != Phase::Idle,
            held: stream.is_held(),
            holds: stream.holds(),
            held_ns: stream.held_ns(now) as u64,
            lateness: LatenessSummary::from(&stream.lateness),
        })
    }

    /// The pacer's statistics (works after stop too).
    pub fn stats(&self) -> PacerStats {
        let engine = self.shared.engine.lock();
        PacerStats {
            scheduling: self.scheduling,
            open_streams: engine.streams.len(),
            counters: engine.totals,
            lateness: LatenessSummary::from(&engine.lateness),
        }
    }

    /// Moves the released frames waiting for the consumer into `out`, oldest first (frames of
    /// streams without a sink only), and clears the released eventfd, unless stream events
    /// still wait for a consumer that takes them (one that has called
    /// [`take_events`](Self::take_events)). Works after stop, to drain what was released
    /// before.
    pub fn take_released(&self, out: &mut Vec<ReleasedFrame>) {
        let mut handoff = self.shared.handoff.lock();
        handoff.frames_wanted = true;
        // Clear the flag before taking (a release publishes under this lock and signals after
        // it), so nothing is ever left without a wake-up.
        self.shared.released.drain();
        out.extend(handoff.ready.drain(..));
        if handoff.events_wanted && !handoff.events.is_empty() {
            self.shared.released.signal();
        }
    }

    /// Moves the stream events waiting for the consumer into `out`, oldest first, and clears
    /// the released eventfd, unless released frames still wait for a consumer that takes
    /// them. Works after stop.
    ///
    /// The descriptor is readable whenever a frame or an event has been published; once a
    /// consumer takes both kinds, it stays readable while either kind waits, so one wake-up
    /// followed by both takes never misses anything.
    pub fn take_events(&self, out: &mut Vec<StreamEvent>) {
        let mut handoff = self.shared.handoff.lock();
        handoff.events_wanted = true;
        self.shared.released.drain();
        out.extend(handoff.events.drain(..));
        if handoff.frames_wanted && !handoff.ready.is_empty() {
            self.shared.released.signal();
        }
    }

    /// Gives frame buffers back for reuse, so the pacer thread does not allocate per frame.
    pub fn recycle(&self, frames: impl IntoIterator<Item = ReleasedFrame>) {
        let mut handoff = self.shared.handoff.lock();
        for frame in frames {
            if handoff.returned.len() >= MAX_SPARE_BUFFERS {
                break;
            }
            handoff.returned.push(frame.samples);
        }
    }

    /// Virtual clock only: moves time to `now_ns` (not backwards), releasing every frame due
    /// on the way, each at its exact deadline.
    pub fn advance_to(&self, now_ns: i64) -> Result<()> {
        let mut engine = self.shared.engine.lock();
        engine.check_running()?;
        if self.clock != ClockKind::Virtual {
            return Err(PacerError::NotVirtual);
        }
        if now_ns < engine.virtual_now_ns {
            return Err(PacerError::TimeBackwards {
                requested_ns: now_ns,
                now_ns: engine.virtual_now_ns,
            });
        }
        // Each step serves every frame slot on the way (a starved stream counts one underrun
        // per slot), so the work is bounded by bounding the step.
        if now_ns - engine.virtual_now_ns > MAX_VIRTUAL_STEP_NS {
            return Err(PacerError::StepTooLong {
                requested_ns: now_ns,
                now_ns: engine.virtual_now_ns,
            });
        }
        engine.run_due(&self.shared.handoff, &self.shared.released, now_ns);
        Ok(())
    }

    /// Virtual clock only: advances time by `duration_ns` (>= 0).
    pub fn advance_ns(&self, duration_ns: i64) -> Result<()> {
        if duration_ns < 0 {
            return Err(PacerError::NegativeDuration { duration_ns });
        }
        let now = self.now_ns();
        self.advance_to(now.saturating_add(duration_ns))
    }

    /// Stops the pacer: the thread exits, every stream's producer and the consumer wake, and
    /// every further call except the statistics and [`take_released`](Self::take_released)
    /// fails with [`PacerError::Stopped`]. Idempotent.
    pub fn stop(&self) {
        {
            let mut engine = self.shared.engine.lock();
            engine.stopped = true;
            for stream in engine.streams.values() {
                stream.writable.signal();
            }
        }
        self.shared.wake.signal();
        self.shared.released.signal();
        let handle = self.thread.lock().ok().and_then(|mut thread| thread.take());
        if let Some(handle) = handle {
            // A panic on the pacer thread would be a bug; it has nothing left to report here.
            let _ = handle.join();
        }
    }
}

impl Drop for FramePacer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests;
