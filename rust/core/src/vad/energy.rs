//! A streaming energy VAD with an adaptive per-band noise floor, hangover and minimum
//! speech/silence durations.

use super::features::{FeatureConfig, FeatureExtractor, Features, SILENCE_DBFS};
use super::noise::NoiseFloor;
use super::{frame_length, Sample};
use crate::error::VadError;

/// The sub-bands whose signal-to-noise ratios make the score, in Hz. Roughly octave-wide
/// as webrtcvad's, from voice pitch to fricatives, so that coloured noise (pink noise is
/// loudest at the bottom) hides speech only in the bands it actually covers. At 8 kHz the
/// bands above Nyquist are left out.
const SCORE_BANDS_HZ: [(f32, f32); 8] = [
    (80.0, 250.0),
    (250.0, 500.0),
    (500.0, 1000.0),
    (1000.0, 1500.0),
    (1500.0, 2500.0),
    (2500.0, 3500.0),
    (3500.0, 5000.0),
    (5000.0, 7500.0),
];

/// How fast the speech peak level of the level gate decays, in dB per second: slowly, so that
/// a background talker stays gated through the user's pauses, yet is heard after a long
/// silence of the user (20 dB in 40 s).
const PEAK_DECAY_DB_PER_S: f32 = 0.5;

/// Band powers below this (mean square, full scale 1.0; -120 dB) count as this, so that
/// digital silence gives finite ratios.
const BAND_POWER_FLOOR: f32 = 1e-12;

/// Settings of [`EnergyVad`]. Durations are in milliseconds and are rounded up to whole
/// frames.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnergyVadConfig {
    /// Sample rate in Hz: 8000 or 16000.
    pub sample_rate: u32,
    /// Frame duration in ms: 10, 20 or 30.
    pub frame_ms: u32,
    /// A frame is speech when its score (see [`FrameDecision::score`], in dB) reaches this,
    /// in (0, 60] dB.
    pub threshold_db: f32,
    /// Speech is extended by this long after its last speech frame (keeps trailing
    /// consonants), in [0, 10000] ms.
    pub hangover_ms: f32,
    /// A run of speech frames must last this long before speech starts; shorter bursts
    /// (clicks, door slams) are ignored. In [0, 10000] ms; at least one frame.
    pub min_speech_ms: f32,
    /// A pause must last this long (after the hangover) before speech ends; shorter pauses
    /// are bridged. In [0, 10000] ms.
    pub min_silence_ms: f32,
    /// The noise floor of each band is the minimum of its smoothed power over this window,
    /// in [200, 30000] ms: a louder noise is learnt within one window (until then it may
    /// read as speech); speech without any pause for longer than this lifts the floor.
    pub noise_window_ms: f32,
    /// Frames quieter than this RMS level (dBFS) are never speech, whatever their SNR, in
    /// [-120, 0]. Keeps a near-silent line from triggering on its own hiss.
    pub min_level_dbfs: f32,
    /// Frames more than this many dB below the recent speech peak level are not speech, in
    /// [1, 120] dB; `None` turns the gate off. The peak is the loudest RMS level of the
    /// frames inside confirmed speech segments, decaying by 0.5 dB per second. It rejects
    /// background talkers and noises well below the user's voice (a near-field microphone
    /// hears its user far louder than the room), at the price of weak frames of a user
    /// who drops far below their own recent peak; hangover and minimum silence bridge those.
    pub level_gate_db: Option<f32>,
}

impl Default for EnergyVadConfig {
    fn default() -> Self {
        Self {
            sample_rate: 16000,
            frame_ms: 20,
            threshold_db: 4.0,
            hangover_ms: 150.0,
            min_speech_ms: 90.0,
            min_silence_ms: 200.0,
            noise_window_ms: 3000.0,
            min_level_dbfs: -60.0,
            level_gate_db: Some(20.0),
        }
    }
}

/// Whether speech started or ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpeechEventKind {
    /// Speech starts at the event's sample.
    Start,
    /// Speech ended just before the event's sample.
    End,
}

/// A speech boundary, stamped with an absolute sample index of the stream (sample 0 is the
/// first sample given after construction or [`EnergyVad::reset`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpeechEvent {
    /// Start or end.
    pub kind: SpeechEventKind,
    /// For a start, the first sample of speech; for an end, one past its last sample.
    pub sample: u64,
}

impl SpeechEvent {
    /// The event's time in seconds from the start of the stream.
    pub fn seconds(&self, sample_rate: u32) -> f64 {
        self.sample as f64 / f64::from(sample_rate)
    }
}

/// What the VAD concluded about one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameDecision {
    /// Index of the frame in the stream (frame `i` covers samples `i * frame_len ..`).
    pub frame: u64,
    /// Continuous speech score in dB, 0 at the noise floor: `10 log10(1 + L)` where `L` is
    /// the mean over eight bands (80-7500 Hz) of the log-likelihood ratio `g - ln g - 1`
    /// of each band's power over its noise floor `g`. It ignores both level gates.
    pub score: f32,
    /// The frame on its own is speech: score at or above the threshold, level at or above
    /// `min_level_dbfs` and within `level_gate_db` of the recent speech peak.
    pub is_speech: bool,
    /// The detector is inside a speech segment after this frame (speech confirmed, or in
    /// its hangover / a pause not yet long enough to end it). Causal: the first
    /// `min_speech` frames of a segment read `false` here although the start event later
    /// places the segment's start at the first of them.
    pub in_segment: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Outside speech; `run` consecutive speech frames so far, the first being `run_start`.
    Silence { run_start: u64, run: u64 },
    /// Inside a speech segment whose last speech frame is `last_speech`.
    Speech { last_speech: u64 },
}

/// A streaming voice-activity detector: per-band likelihood ratio over an adaptive
/// (minimum-statistics) noise floor, with hangover and minimum speech/silence durations,
/// emitting sample-accurate events.
///
/// Audio may come in chunks of any size; partial frames are kept until completed, so the
/// events do not depend on how the stream was chunked.
///
/// Timestamps are exact sample indices on the frame grid: a start is the first sample of the
/// first frame of the run that confirmed speech; an end is one past the last speech frame
/// plus the hangover. Confirmation delay: a start is emitted once `min_speech_ms` of speech
/// frames have been seen (so it arrives that long after the sample it names); an end once
/// `hangover_ms + min_silence_ms` of non-speech frames have been seen.
#[derive(Debug)]
pub struct EnergyVad {
    config: EnergyVadConfig,
    extractor: FeatureExtractor,
    features: Features,
    band_bins: [std::ops::Range<usize>; SCORE_BANDS_HZ.len()],
    /// Bands below Nyquist (all of them at 16 kHz), the divisor of the mean.
    bands_in_use: f32,
    noise: NoiseFloor<{ SCORE_BANDS_HZ.len() }>,
    hangover_frames: u64,
    min_speech_frames: u64,
    min_silence_frames: u64,
    frame_len: usize,
    /// Samples of an incomplete frame, converted to float, waiting for the rest.
    partial: Vec<f32>,
    partial_len: usize,
    frames_done: u64,
    /// One past the last sample of the last frame judged speech on its own.
    speech_until: u64,
    state: State,
    /// Loudest level inside confirmed speech, decaying (the level gate's reference), dBFS.
    speech_peak_dbfs: f32,
    peak_decay_per_frame: f32,
}

fn check_range(
    name: &'static str,
    value: f32,
    ok: bool,
    expected: &'static str,
) -> Result<(), VadError> {
    if value.is_finite() && ok {
        Ok(())
    } else {
        Err(VadError::InvalidSetting {
            name,
            value,
            expected,
        })
    }
}

/// Whole frames covering `ms` milliseconds (rounded up).
fn frames_for(ms: f32, frame_ms: u32) -> u64 {
    (f64::from(ms) / f64::from(frame_ms)).ceil() as u64
}

impl EnergyVad {
    /// Builds a detector. Errors: [`VadError::UnsupportedRate`] for a rate other than
    /// 8000/16000 Hz, [`VadError::UnsupportedFrameDuration`] for a frame other than
    /// 10/20/30 ms, [`VadError::InvalidSetting`] for any setting out of its range (see the
    /// fields of [`EnergyVadConfig`]).
    pub fn new(config: EnergyVadConfig) -> Result<Self, VadError> {
        let frame_len = frame_length(config.sample_rate, config.frame_ms)?;
        let c = &config;
        check_range(
            "threshold_db",
            c.threshold_db,
            c.threshold_db > 0.0 && c.threshold_db <= 60.0,
            "a number of dB in (0, 60]",
        )?;
        for (name, value) in [
            ("hangover_ms", c.hangover_ms),
            ("min_speech_ms", c.min_speech_ms),
            ("min_silence_ms", c.min_silence_ms),
        ] {
            check_range(
                name,
                value,
                (0.0..=10_000.0).contains(&value),
                "a duration in [0, 10000] ms",
            )?;
        }
        check_range(
            "noise_window_ms",
            c.noise_window_ms,
            (200.0..=30_000.0).contains(&c.noise_window_ms),
            "a duration in [200, 30000] ms",
        )?;
        check_range(
            "min_level_dbfs",
            c.min_level_dbfs,
            (-120.0..=0.0).contains(&c.min_level_dbfs),
            "a level in [-120, 0] dBFS",
        )?;
        if let Some(gate) = c.level_gate_db {
            check_range(
                "level_gate_db",
                gate,
                (1.0..=120.0).contains(&gate),
                "a level difference in [1, 120] dB, or None for no gate",
            )?;
        }
        // The score needs band energies only: no mel bands.
        let extractor = FeatureExtractor::new(FeatureConfig {
            sample_rate: config.sample_rate,
            frame_ms: config.frame_ms,
            n_mels: 0,
        })?;
        let bin_hz = extractor.bin_hz();
        let n_bins = extractor.power_spectrum().len();
        let band_bins = SCORE_BANDS_HZ.map(|(low, high)| {
            let first = ((low / bin_hz).ceil() as usize).min(n_bins);
            let end = ((high / bin_hz).ceil() as usize).clamp(first, n_bins);
            first..end
        });
        let bands_in_use = band_bins.iter().filter(|bins| !bins.is_empty()).count();
        Ok(Self {
            features: extractor.new_features(),
            extractor,
            band_bins,
            bands_in_use: bands_in_use as f32,
            noise: NoiseFloor::new(
                frames_for(config.noise_window_ms, config.frame_ms) as usize,
                f64::from(config.frame_ms) / 1000.0,
            ),
            hangover_frames: frames_for(config.hangover_ms, config.frame_ms),
            min_speech_frames: frames_for(config.min_speech_ms, config.frame_ms).max(1),
            min_silence_frames: frames_for(config.min_silence_ms, config.frame_ms),
            frame_len,
            partial: vec![0.0; frame_len],
            partial_len: 0,
            frames_done: 0,
            speech_until: 0,
            state: State::Silence {
                run_start: 0,
                run: 0,
            },
            speech_peak_dbfs: SILENCE_DBFS,
            peak_decay_per_frame: PEAK_DECAY_DB_PER_S * config.frame_ms as f32 / 1000.0,
            config,
        })
    }

    /// The configuration this detector was built with.
    pub fn config(&self) -> EnergyVadConfig {
        self.config
    }

    /// Frame length in samples.
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// Samples received since construction or the last reset (including a partial frame).
    pub fn samples_received(&self) -> u64 {
        self.frames_done * self.frame_len() as u64 + self.partial_len as u64
    }

    /// One past the last sample of the last frame judged speech on its own (0 before any):
    /// where speech really ended, without the hangover an end event includes.
    pub fn speech_until(&self) -> u64 {
        self.speech_until
    }

    /// True while inside a speech segment (confirmed, or in its hangover / a short pause).
    pub fn in_segment(&self) -> bool {
        matches!(self.state, State::Speech { .. })
    }

    /// Forgets all audio: the sample counter restarts at 0 and the noise floor is learnt
    /// again from the next frame.
    pub fn reset(&mut self) {
        self.noise.reset();
        self.speech_peak_dbfs = SILENCE_DBFS;
        self.partial_len = 0;
        self.frames_done = 0;
        self.speech_until = 0;
        self.state = State::Silence {
            run_start: 0,
            run: 0,
        };
    }

    /// Convenience form of [`process_into`](Self::process_into) that returns the events.
    pub fn process<S: Sample>(&mut self, input: &[S]) -> Vec<SpeechEvent> {
        let mut events = Vec::new();
        self.process_into(input, &mut events, None);
        events
    }

    /// Feeds a chunk of audio of any length. Appends the events it completes to `events`
    /// and, if given, one [`FrameDecision`] per completed frame to `frames`. Allocates
    /// nothing once the vectors have capacity.
    pub fn process_into<S: Sample>(
        &mut self,
        mut input: &[S],
        events: &mut Vec<SpeechEvent>,
        mut frames: Option<&mut Vec<FrameDecision>>,
    ) {
        let frame_len = self.frame_len();
        if self.partial_len > 0 {
            let take = (frame_len - self.partial_len).min(input.len());
            let (head, rest) = input.split_at(take);
            for (slot, &sample) in self.partial[self.partial_len..].iter_mut().zip(head) {
                *slot = sample.to_unit();
            }
            self.partial_len += take;
            input = rest;
            if self.partial_len < frame_len {
                return;
            }
            self.partial_len = 0;
            // Moved out for the call (no allocation: `take` leaves an empty Vec behind).
            let frame = std::mem::take(&mut self.partial);
            let decision = self.push_frame(&frame, events);
            self.partial = frame;
            if let Some(frames) = frames.as_deref_mut() {
                frames.push(decision);
            }
        }
        let mut chunks = input.chunks_exact(frame_len);
        for frame in &mut chunks {
            let decision = self.push_frame(frame, events);
            if let Some(frames) = frames.as_deref_mut() {
                frames.push(decision);
            }
        }
        let rest = chunks.remainder();
        for (slot, &sample) in self.partial.iter_mut().zip(rest) {
            *slot = sample.to_unit();
        }
        self.partial_len = rest.len();
    }

    /// Ends an open speech segment at the end of the audio received so far (call it at the
    /// end of a stream): returns its end event, placed after the hangover but never beyond
    /// the last sample received. `None` if no segment is open.
    pub fn flush(&mut self) -> Option<SpeechEvent> {
        let State::Speech { last_speech } = self.state else {
            return None;
        };
        let padded_end = (last_speech + 1 + self.hangover_frames) * self.frame_len() as u64;
        self.state = State::Silence {
            run_start: 0,
            run: 0,
        };
        Some(SpeechEvent {
            kind: SpeechEventKind::End,
            sample: padded_end.min(self.samples_received()),
        })
    }

    fn push_frame<S: Sample>(
        &mut self,
        frame: &[S],
        events: &mut Vec<SpeechEvent>,
    ) -> FrameDecision {
        let index = self.frames_done;
        self.frames_done += 1;
        // Every frame handed over here is exactly `frame_len` long (see `process_into`).
        self.extractor.analyse(frame, &mut self.features);
        let score = self.score_and_track_noise();
        let level = self.features.rms_dbfs;
        self.speech_peak_dbfs =
            (self.speech_peak_dbfs - self.peak_decay_per_frame).max(SILENCE_DBFS);
        let loud_enough = match self.config.level_gate_db {
            Some(gate) => level >= self.speech_peak_dbfs - gate,
            None => true,
        };
        let is_speech =
            score >= self.config.threshold_db && level >= self.config.min_level_dbfs && loud_enough;
        self.advance_state(index, is_speech, events);
        if is_speech {
            self.speech_until = (index + 1) * self.frame_len() as u64;
        }
        // Only frames of confirmed segments set the peak: a door slam or a click, too short to
        // be confirmed, must not gate the speech that follows.
        if is_speech && self.in_segment() {
            self.speech_peak_dbfs = self.speech_peak_dbfs.max(level);
        }
        FrameDecision {
            frame: index,
            score,
            is_speech,
            in_segment: self.in_segment(),
        }
    }

    /// Updates the noise floor with the frame just computed and scores the frame against it.
    ///
    /// The score is the mean over bands of the log-likelihood ratio of "speech + noise" over
    /// "noise" for a band whose a-posteriori SNR is `g = power / noise` (Sohn, Kim and Sung,
    /// "A statistical model-based voice activity detector", 1999, with the a-priori SNR
    /// taken as `g - 1`): `g - ln g - 1`, which is 0 at the noise floor and grows about
    /// linearly with the SNR. Unlike a mean of dB it lets one loud band (a voiced frame's
    /// pitch region, a fricative's top band) carry the frame, while noise fluctuations of a
    /// few dB add almost nothing. Reported as `10 log10(1 + mean)` so thresholds read as dB.
    fn score_and_track_noise(&mut self) -> f32 {
        let power = self.extractor.power_spectrum();
        let band_power = self
            .band_bins
            .clone()
            .map(|bins| power[bins].iter().sum::<f32>().max(BAND_POWER_FLOOR));
        let floor = self.noise.update(&band_power);
        let llr_sum: f32 = band_power
            .iter()
            .zip(&floor)
            .map(|(&p, &n)| {
                let g = p / n.max(BAND_POWER_FLOOR);
                g - g.ln() - 1.0
            })
            .sum();
        10.0 * (1.0 + llr_sum / self.bands_in_use).log10()
    }

    fn advance_state(&mut self, index: u64, is_speech: bool, events: &mut Vec<SpeechEvent>) {
        let frame_len = self.frame_len() as u64;
        self.state = match self.state {
            State::Silence { run_start, run } if is_speech => {
                let run_start = if run == 0 { index } else { run_start };
                if run + 1 >= self.min_speech_frames {
                    events.push(SpeechEvent {
                        kind: SpeechEventKind::Start,
                        sample: run_start * frame_len,
                    });
                    State::Speech { last_speech: index }
                } else {
                    State::Silence {
                        run_start,
                        run: run + 1,
                    }
                }
            }
            State::Silence { .. } => State::Silence {
                run_start: 0,
                run: 0,
            },
            State::Speech { .. } if is_speech => State::Speech { last_speech: index },
            State::Speech { last_speech } => {
                let gap = index - last_speech;
                if gap >= self.hangover_frames + self.min_silence_frames {
                    events.push(SpeechEvent {
                        kind: SpeechEventKind::End,
                        sample: (last_speech + 1 + self.hangover_frames) * frame_len,
                    });
                    State::Silence {
                        run_start: 0,
                        run: 0,
                    }
                } else {
                    self.state
                }
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 16000;

    /// Silence with 1 kHz tone bursts at the given (start, end) sample ranges, plus quiet
    /// deterministic noise so that the noise floor has something to track.
    fn bursts(len: usize, ranges: &[(usize, usize)]) -> Vec<i16> {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        (0..len)
            .map(|n| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let hiss = ((state >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 60.0;
                let tone = if ranges.iter().any(|&(a, b)| (a..b).contains(&n)) {
                    8000.0 * (std::f32::consts::TAU * 1000.0 * n as f32 / RATE as f32).sin()
                } else {
                    0.0
                };
                (tone + hiss) as i16
            })
            .collect()
    }

    fn vad(frame_ms: u32) -> EnergyVad {
        EnergyVad::new(EnergyVadConfig {
            frame_ms,
            ..EnergyVadConfig::default()
        })
        .unwrap()
    }

    fn collect(v: &mut EnergyVad, audio: &[i16], chunk: usize) -> Vec<SpeechEvent> {
        let mut events = Vec::new();
        for piece in audio.chunks(chunk) {
            v.process_into(piece, &mut events, None);
        }
        events
    }

    fn start(sample: u64) -> SpeechEvent {
        SpeechEvent {
            kind: SpeechEventKind::Start,
            sample,
        }
    }

    fn end(sample: u64) -> SpeechEvent {
        SpeechEvent {
            kind: SpeechEventKind::End,
            sample,
        }
    }

    #[test]
    fn burst_on_the_frame_grid_gives_exact_timestamps() {
        // 20 ms frames = 320 samples; burst from frame 50 to frame 100 (1.0 s to 2.0 s).
        let audio = bursts(4 * RATE as usize, &[(16000, 32000)]);
        let events = vad(20).process(&audio);
        // End = last speech frame end (32000) + hangover 150 ms rounded up to 8 frames.
        assert_eq!(events, vec![start(16000), end(32000 + 8 * 320)]);
    }

    #[test]
    fn events_do_not_depend_on_chunking() {
        let audio = bursts(5 * RATE as usize, &[(7001, 20011), (40000, 52000)]);
        let whole = vad(30).process(&audio);
        assert_eq!(whole.len(), 4);
        for chunk in [1, 7, 333, 480, 1001] {
            assert_eq!(collect(&mut vad(30), &audio, chunk), whole, "chunk {chunk}");
        }
        // Off-grid onset: the start is the first sample of the frame holding the onset.
        assert_eq!(whole[0], start(7001 / 480 * 480));
    }

    #[test]
    fn a_click_shorter_than_min_speech_is_ignored() {
        let audio = bursts(3 * RATE as usize, &[(16000, 16480)]);
        assert!(vad(10).process(&audio).is_empty());
        assert!(vad(30).process(&audio).is_empty());
    }

    #[test]
    fn short_pauses_are_bridged_and_long_ones_split() {
        // 100 ms pause: bridged (hangover 150 + min silence 200). 600 ms pause: split.
        let audio = bursts(
            6 * RATE as usize,
            &[(16000, 24000), (25600, 32000), (41600, 48000)],
        );
        let events = vad(20).process(&audio);
        let kinds: Vec<_> = events.iter().map(|e| e.kind).collect();
        use SpeechEventKind::{End, Start};
        assert_eq!(kinds, vec![Start, End, Start, End]);
        assert_eq!(events[1], end(32000 + 8 * 320));
        assert_eq!(events[2], start(41600));
    }

    #[test]
    fn speech_until_is_the_end_of_the_last_speech_frame_without_hangover() {
        let audio = bursts(4 * RATE as usize, &[(16000, 32000)]);
        let mut v = vad(20);
        assert_eq!(v.speech_until(), 0);
        for chunk in audio.chunks(320).take(75) {
            v.process(chunk);
        }
        assert_eq!(
            v.speech_until(),
            75 * 320,
            "mid-burst: the frame just heard"
        );
        let events = collect(&mut v, &audio[75 * 320..], 333);
        assert_eq!(v.speech_until(), 32000, "the hangover does not move it");
        assert_eq!(events, vec![end(32000 + 8 * 320)]);
        v.reset();
        assert_eq!(v.speech_until(), 0);
    }

    #[test]
    fn flush_closes_an_open_segment_and_reset_restarts_time() {
        let audio = bursts(2 * RATE as usize, &[(16000, 32000)]);
        let mut v = vad(20);
        assert_eq!(v.process(&audio), vec![start(16000)]);
        assert!(v.in_segment());
        assert_eq!(v.flush(), Some(end(32000)));
        assert_eq!(v.flush(), None);
        v.reset();
        assert_eq!(v.samples_received(), 0);
        assert_eq!(v.process(&audio), vec![start(16000)]);
    }

    #[test]
    fn frame_decisions_carry_scores() {
        let audio = bursts(2 * RATE as usize, &[(16000, 32000)]);
        let mut v = vad(20);
        let mut events = Vec::new();
        let mut frames = Vec::new();
        v.process_into(&audio, &mut events, Some(&mut frames));
        assert_eq!(frames.len(), 100);
        assert!(frames[..50].iter().all(|f| !f.is_speech && f.score < 4.0));
        assert!(frames[51..99].iter().all(|f| f.is_speech && f.score > 20.0));
        assert!(!frames[51].in_segment || frames[51].frame >= 50);
        assert!(frames[60].in_segment);
    }

    /// A louder talker, then a background one 30 dB below: the level gate keeps the
    /// background out while the first one's peak is recent; without the gate it is speech.
    #[test]
    fn the_level_gate_rejects_a_much_quieter_talker() {
        let mut audio = bursts(5 * RATE as usize, &[(16000, 32000)]);
        let quiet = bursts(5 * RATE as usize, &[(48000, 64000)]);
        for (sample, background) in audio.iter_mut().zip(&quiet).skip(40000) {
            *sample = background / 32;
        }
        assert_eq!(vad(20).process(&audio).len(), 2);
        let ungated = EnergyVad::new(EnergyVadConfig {
            level_gate_db: None,
            ..EnergyVadConfig::default()
        })
        .unwrap()
        .process(&audio);
        assert_eq!(ungated.len(), 4);
        assert_eq!(ungated[2], start(48000));
    }

    #[test]
    fn invalid_settings_are_refused() {
        let bad = [
            EnergyVadConfig {
                threshold_db: 0.0,
                ..Default::default()
            },
            EnergyVadConfig {
                hangover_ms: -1.0,
                ..Default::default()
            },
            EnergyVadConfig {
                min_speech_ms: f32::NAN,
                ..Default::default()
            },
            EnergyVadConfig {
                noise_window_ms: 100.0,
                ..Default::default()
            },
            EnergyVadConfig {
                min_level_dbfs: 3.0,
                ..Default::default()
            },
            EnergyVadConfig {
                frame_ms: 25,
                ..Default::default()
            },
            EnergyVadConfig {
                level_gate_db: Some(0.0),
                ..Default::default()
            },
        ];
        for config in bad {
            assert!(matches!(
                EnergyVad::new(config),
                Err(VadError::InvalidSetting { .. }
                    | VadError::UnsupportedFrameDuration { frame_ms: 25 })
            ));
        }
        assert!(matches!(
            EnergyVad::new(EnergyVadConfig {
                sample_rate: 22050,
                ..Default::default()
            }),
            Err(VadError::UnsupportedRate { rate: 22050 })
        ));
    }
}
