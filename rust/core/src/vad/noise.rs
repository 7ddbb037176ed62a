//! Per-band noise floor by minimum statistics (after R. Martin, "Noise power spectral
//! density estimation based on optimal smoothing and minimum statistics", 2001, simplified:
//! fixed smoothing, no bias compensation).
//!
//! Why minima: a band's power during speech is well above its noise, but speech leaves every
//! band near its noise floor many times a second (pauses, stops, phonemes that live in
//! other bands). The minimum of the smoothed power over a window of a few seconds is
//! therefore a noise estimate that speech barely lifts, and that follows a rise of the
//! noise within one window. A tracker that creeps upward instead is lifted by long
//! utterances and then scores their end as silence.

/// The window is covered by this many sub-windows; the floor is the minimum over them, so
/// it forgets an old minimum one sub-window at a time instead of all at once.
const SUBWINDOWS: usize = 8;
/// Finished sub-windows kept beside the one being filled.
const PAST: usize = SUBWINDOWS - 1;

/// Time constant of the power smoothing in seconds: long enough to take the variance out of
/// a short frame's band energy (whose minimum would otherwise sit far below the mean), short
/// enough to follow the pauses between words.
const SMOOTHING_S: f64 = 0.06;

/// Minimum-statistics noise floor for `B` bands, in linear power.
#[derive(Debug, Clone)]
pub(crate) struct NoiseFloor<const B: usize> {
    alpha: f32,
    /// Frames averaged (plainly) before the minimum tracking starts; see `update`.
    warmup_frames: u32,
    frames_seen: u32,
    frames_per_subwindow: usize,
    smoothed: [f32; B],
    current_min: [f32; B],
    frames_in_current: usize,
    /// Minima of the last finished sub-windows (a ring; `filled` of them are valid).
    past_mins: [[f32; B]; PAST],
    next_past: usize,
    filled: usize,
}

impl<const B: usize> NoiseFloor<B> {
    /// A floor over a window of `window_frames` frames of `frame_s` seconds each.
    pub(crate) fn new(window_frames: usize, frame_s: f64) -> Self {
        Self {
            alpha: (-frame_s / SMOOTHING_S).exp() as f32,
            warmup_frames: (2.0 * SMOOTHING_S / frame_s).ceil() as u32,
            frames_seen: 0,
            frames_per_subwindow: window_frames.div_ceil(SUBWINDOWS).max(1),
            smoothed: [0.0; B],
            current_min: [f32::INFINITY; B],
            frames_in_current: 0,
            past_mins: [[f32::INFINITY; B]; PAST],
            next_past: 0,
            filled: 0,
        }
    }

    /// Forgets everything: the next frame starts the estimate afresh.
    pub(crate) fn reset(&mut self) {
        self.current_min = [f32::INFINITY; B];
        self.frames_in_current = 0;
        self.past_mins = [[f32::INFINITY; B]; PAST];
        self.next_past = 0;
        self.filled = 0;
        self.frames_seen = 0;
    }

    /// Takes one frame's band powers and returns the noise floor per band (linear power).
    ///
    /// Warm-up: the first frames are averaged plainly and that average is the floor, with
    /// no minimum tracking yet. A single frame's band power scatters widely (a band of a few
    /// FFT bins is close to exponentially distributed), so letting the first, unsmoothed
    /// frames into the minimum would pin the floor far below the noise for a whole window
    /// and make ordinary noise score as speech.
    pub(crate) fn update(&mut self, power: &[f32; B]) -> [f32; B] {
        if self.frames_seen < self.warmup_frames {
            self.frames_seen += 1;
            let weight = 1.0 / self.frames_seen as f32;
            for (s, &p) in self.smoothed.iter_mut().zip(power) {
                *s += (p - *s) * weight;
            }
            return self.smoothed;
        }
        for (s, &p) in self.smoothed.iter_mut().zip(power) {
            *s = self.alpha * *s + (1.0 - self.alpha) * p;
        }
        for (m, &s) in self.current_min.iter_mut().zip(&self.smoothed) {
            *m = m.min(s);
        }
        let mut floor = self.current_min;
        for past in &self.past_mins[..self.filled] {
            for (f, &m) in floor.iter_mut().zip(past) {
                *f = f.min(m);
            }
        }
        self.frames_in_current += 1;
        if self.frames_in_current == self.frames_per_subwindow {
            self.past_mins[self.next_past] = self.current_min;
            // Slots fill from 0 and then wrap, so the valid ones are always `..filled`.
            self.next_past = (self.next_past + 1) % PAST;
            self.filled = (self.filled + 1).min(PAST);
            self.current_min = [f32::INFINITY; B];
            self.frames_in_current = 0;
        }
        floor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_ignores_loud_bursts_and_follows_a_noise_rise_within_a_window() {
        // 80 frames window (10 per sub-window), 20 ms frames.
        let mut noise = NoiseFloor::<1>::new(80, 0.02);
        for _ in 0..100 {
            noise.update(&[1.0]);
        }
        // A 1 s burst 1000x louder does not lift the floor.
        for _ in 0..50 {
            assert!(noise.update(&[1000.0])[0] < 1.01);
        }
        // Noise 10x louder from now on: after about one window, the floor has followed it.
        let mut floor = 0.0;
        for _ in 0..90 {
            floor = noise.update(&[10.0])[0];
        }
        assert!((floor - 10.0).abs() < 0.1, "{floor}");
    }

    #[test]
    fn floor_falls_at_once_to_quieter_noise() {
        let mut noise = NoiseFloor::<2>::new(80, 0.02);
        noise.update(&[5.0, 5.0]);
        for _ in 0..20 {
            noise.update(&[0.5, 5.0]);
        }
        let floor = noise.update(&[0.5, 5.0]);
        assert!(floor[0] < 0.51 && (floor[1] - 5.0).abs() < 1e-3);
    }
}
