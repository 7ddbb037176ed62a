//! Streaming sample-rate conversion by an exact rational ratio.
//!
//! [`Resampler`] converts between any two integer rates from [`MIN_RATE`] to [`MAX_RATE`] Hz
//! whose ratio reduces to `L/M` with at most [`MAX_PHASES`] phases `L` (all pairs of 8000,
//! 11025, 16000, 22050, 24000, 32000, 44100 and 48000 Hz qualify: 48k->16k is 1/3,
//! 24k->48k is 2/1, 44.1k->48k is 160/147). It is a polyphase FIR: output sample `k` is a
//! Kaiser-windowed sinc centred on input time `(k - latency) * M / L`, evaluated at that
//! exact fractional position (see `resample/design.rs` for the filter and why its numbers,
//! `resample/dot.rs` for the inner loop). When upsampling, every L-th output falls exactly
//! on an input sample and is that sample, copied (the sinc vanishes at whole samples); so
//! equal rates reduce to a pure delay of 4 samples, the output being the input bit for bit.
//!
//! # Streaming contract
//!
//! The resampler is a pure function of the whole input stream: feeding a signal at once, in
//! 20 ms chunks or in chunks of random sizes (including 0 and 1 sample) gives bit-identical
//! output, because the state carried between calls is exactly the filter's history and the
//! position of the next output, and every output is computed the same way whatever chunk
//! it falls in.
//!
//! * After `n` input samples in total, exactly `ceil(n * L / M)` outputs have been produced
//!   (so 20 ms in gives 20 ms out whenever 20 ms is a whole number of samples at both
//!   rates; a pacer downstream sees a constant frame size).
//! * Output `k` represents input time `(k - latency) * M / L`: the first [`latency`]
//!   outputs are the filter's warm-up, and a caller aligning output with input drops them.
//!   The latency is the filter's look-ahead (half its length) in whole output samples, so
//!   each output can be computed as soon as it is due: 23 samples (1.4 ms) at 48k->16k, 48
//!   samples (1 ms) at 24k->48k.
//! * [`flush_into`] emits the last [`latency`] outputs (the input padded with zeros), then
//!   resets the stream. In total a stream of `n` samples gives `latency + ceil(n * L / M)`
//!   outputs, of which the last `ceil(n * L / M)` are the input, aligned.
//!
//! int16 samples are scaled by 1/32768 on the way in and rounded and saturated on the way
//! out, so a stream may mix int16 and float32 chunks.
//!
//! [`latency`]: Resampler::latency
//! [`flush_into`]: Resampler::flush_into

mod design;
mod dot;

pub use crate::error::ResampleError;
use design::PolyphaseFilter;
use dot::Kernel;

pub use design::{ATTENUATION_DB, PASSBAND};

/// The rates the issue names; every pair of them is supported.
pub const COMMON_RATES: [u32; 8] = [8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000];

/// Lowest accepted sample rate, in Hz.
pub const MIN_RATE: u32 = 1000;

/// Highest accepted sample rate, in Hz.
pub const MAX_RATE: u32 = 384_000;

/// Largest number of filter phases `L` (the reduced output/input ratio's numerator). The
/// common rates need at most 1280 (11025 -> 32000).
pub const MAX_PHASES: u32 = 2048;

/// Largest coefficient table (`L` phases times the taps per phase), in `f32`s: 16 MiB. Only
/// unusual pairs with a large `L` and a large downsampling factor come near it.
pub const MAX_COEFFICIENTS: usize = 1 << 22;

/// What [`ResampleError::UnsupportedRate`] lists as accepted.
pub const SUPPORTED_RATES: &str = "8000, 11025, 16000, 22050, 24000, 32000, 44100 or 48000 Hz \
     (any pair); other integer rates from 1000 to 384000 Hz work when their ratio to the \
     other rate reduces to L/M with L (output side) at most 2048 and a filter table of at \
     most 4Mi coefficients";

/// Input is converted to `f32` in blocks of this many samples, so that `process_into`
/// needs no allocation whatever the chunk size.
const BLOCK: usize = 4096;

/// A sample type the resampler reads and writes.
pub trait Sample: Copy + sealed::Sealed {
    /// The sample as a float of nominal range [-1, 1].
    fn to_f32(self) -> f32;
    /// A float of nominal range [-1, 1] as this type (int16: rounded, saturated).
    fn from_f32(value: f32) -> Self;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for i16 {}
}

impl Sample for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(value: f32) -> Self {
        value
    }
}

impl Sample for i16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f32::from(self) * (1.0 / 32768.0)
    }
    #[inline(always)]
    fn from_f32(value: f32) -> Self {
        // `as` saturates out-of-range values (and maps NaN to 0).
        (value * 32768.0).round() as i16
    }
}

/// A streaming resampler from `in_rate` to `out_rate` Hz (mono).
///
/// All memory is allocated in [`Resampler::new`]; [`process_into`](Self::process_into) and
/// [`flush_into`](Self::flush_into) allocate nothing.
#[derive(Debug, Clone)]
pub struct Resampler {
    in_rate: u32,
    out_rate: u32,
    /// L: output samples per `down` input samples.
    up: usize,
    /// M.
    down: usize,
    filter: PolyphaseFilter,
    latency: usize,
    kernel: Kernel,
    /// Input history as f32: `buffer[..buffered]` holds consecutive input samples (zeros
    /// before the stream's start), `window_start` indexes the first sample of the next
    /// output's window. Capacity is fixed at construction.
    buffer: Vec<f32>,
    buffered: usize,
    window_start: usize,
    /// Phase (0..L) of the next output.
    phase: usize,
    /// `inputs * L - outputs * M`: the next output is due while this is positive.
    credit: i64,
}

impl Resampler {
    /// A resampler from `in_rate` to `out_rate` Hz.
    ///
    /// Fails with [`ResampleError::UnsupportedRate`] for a rate outside
    /// [`MIN_RATE`]..=[`MAX_RATE`], or [`ResampleError::RatioTooComplex`] for a pair whose
    /// reduced ratio needs more than [`MAX_PHASES`] phases or [`MAX_COEFFICIENTS`]
    /// coefficients.
    pub fn new(in_rate: u32, out_rate: u32) -> Result<Self, ResampleError> {
        for rate in [in_rate, out_rate] {
            if !(MIN_RATE..=MAX_RATE).contains(&rate) {
                return Err(ResampleError::UnsupportedRate { rate });
            }
        }
        let common = gcd(in_rate, out_rate);
        let (up, down) = (out_rate / common, in_rate / common);
        let table_len = up as usize * 2 * design::half_length(in_rate, out_rate);
        if up > MAX_PHASES || table_len > MAX_COEFFICIENTS {
            return Err(ResampleError::RatioTooComplex {
                in_rate,
                out_rate,
                phases: up,
                coefficients: table_len,
            });
        }
        let (up, down) = (up as usize, down as usize);
        let filter = PolyphaseFilter::design(in_rate, out_rate, up);
        // Output k reads inputs up to floor((k - latency) * M / L) + half; it is due once
        // input floor(k * M / L) has arrived. latency * M >= half * L makes the first
        // bound never exceed the second.
        let latency = (filter.half * up).div_ceil(down);
        // Oldest sample kept: the next output's window start; newest: the last input.
        // Between them lie fewer than latency * M / L + half + 1 samples (see `reset`).
        let history = (latency * down).div_ceil(up) + filter.half + 1;
        let mut resampler = Self {
            in_rate,
            out_rate,
            up,
            down,
            latency,
            kernel: Kernel::detect(),
            buffer: vec![0.0; history.max(filter.taps) + BLOCK],
            filter,
            buffered: 0,
            window_start: 0,
            phase: 0,
            credit: 0,
        };
        resampler.reset();
        Ok(resampler)
    }

    /// Input rate in Hz.
    pub fn in_rate(&self) -> u32 {
        self.in_rate
    }

    /// Output rate in Hz.
    pub fn out_rate(&self) -> u32 {
        self.out_rate
    }

    /// The reduced ratio `(L, M)`: L output samples for every M input samples.
    pub fn ratio(&self) -> (usize, usize) {
        (self.up, self.down)
    }

    /// Filter taps per output sample (the cost of one output, in multiply-adds).
    pub fn taps_per_output(&self) -> usize {
        self.filter.taps
    }

    /// Delay of the output behind the input, in output samples: output `k` represents input
    /// time `(k - latency) * M / L`. Also the number of samples [`flush_into`] emits.
    ///
    /// [`flush_into`]: Self::flush_into
    pub fn latency(&self) -> usize {
        self.latency
    }

    /// Exactly how many samples [`process_into`](Self::process_into) produces for
    /// `input_len` more input samples, in the current state.
    pub fn output_len(&self, input_len: usize) -> usize {
        let credit = i128::from(self.credit) + input_len as i128 * self.up as i128;
        if credit <= 0 {
            0
        } else {
            // Saturates only for inputs no machine could hold.
            usize::try_from((credit + self.down as i128 - 1) / self.down as i128)
                .unwrap_or(usize::MAX)
        }
    }

    /// Resamples `input`, writing the outputs now due to the front of `output`; returns how
    /// many were written ([`output_len`](Self::output_len) of `input.len()`).
    ///
    /// Fails with [`ResampleError::OutputTooShort`], consuming nothing, if `output` is
    /// shorter than that.
    pub fn process_into<S: Sample>(
        &mut self,
        input: &[S],
        output: &mut [S],
    ) -> Result<usize, ResampleError> {
        let needed = self.output_len(input.len());
        if output.len() < needed {
            return Err(ResampleError::OutputTooShort {
                len: output.len(),
                needed,
            });
        }
        Ok(self.run(input, output))
    }

    /// Resamples `input` into a new vector (allocates; real-time code uses
    /// [`process_into`](Self::process_into)).
    pub fn process<S: Sample>(&mut self, input: &[S]) -> Vec<S> {
        let mut output = vec![S::from_f32(0.0); self.output_len(input.len())];
        self.run(input, &mut output);
        output
    }

    /// Ends the stream: writes the last [`latency`](Self::latency) outputs (the input padded
    /// with zeros) to the front of `output`, returns how many, and resets the resampler for
    /// a new stream.
    ///
    /// Fails with [`ResampleError::OutputTooShort`], changing nothing, if `output` is
    /// shorter than the latency.
    pub fn flush_into<S: Sample>(&mut self, output: &mut [S]) -> Result<usize, ResampleError> {
        if output.len() < self.latency {
            return Err(ResampleError::OutputTooShort {
                len: output.len(),
                needed: self.latency,
            });
        }
        self.finish(&mut output[..self.latency]);
        Ok(self.latency)
    }

    /// Ends the stream into a new vector (allocates; see [`flush_into`](Self::flush_into)).
    pub fn flush<S: Sample>(&mut self) -> Vec<S> {
        let mut output = vec![S::from_f32(0.0); self.latency];
        self.finish(&mut output);
        output
    }

    /// Forgets the stream (history and position) without emitting anything: the next input
    /// is the start of a new stream, exactly as after [`Resampler::new`].
    pub fn reset(&mut self) {
        // Output 0 sits at input time -latency * M / L, i.e. base input index
        // floor(-latency * M / L) and phase (-latency * M) mod L; its window starts `half - 1`
        // samples before the base. Everything before input 0 is zero.
        let lead = self.latency * self.down;
        let base_before_start = lead.div_ceil(self.up);
        self.phase = (base_before_start * self.up - lead) % self.up;
        self.buffered = base_before_start + self.filter.half - 1;
        self.buffer[..self.buffered].fill(0.0);
        self.window_start = 0;
        self.credit = 0;
    }

    /// The body of `process_into`: `output` holds at least `output_len(input.len())`.
    fn run<S: Sample>(&mut self, input: &[S], output: &mut [S]) -> usize {
        let mut written = 0;
        for block in input.chunks(BLOCK) {
            self.compact();
            let start = self.buffered;
            for (slot, &sample) in self.buffer[start..start + block.len()]
                .iter_mut()
                .zip(block)
            {
                *slot = sample.to_f32();
            }
            self.buffered += block.len();
            self.credit += (block.len() * self.up) as i64;
            let due = self.output_len(0);
            written += self.emit(&mut output[written..written + due]);
            self.credit -= (due * self.down) as i64;
        }
        written
    }

    /// The body of `flush_into`: fills `output` (the last outputs, over zero padding), then
    /// resets.
    fn finish<S: Sample>(&mut self, output: &mut [S]) {
        for slot in output {
            self.compact();
            // Pad with zeros up to the end of this output's window.
            let window_end = self.window_start + self.filter.taps;
            if self.buffered < window_end {
                self.buffer[self.buffered..window_end].fill(0.0);
                self.buffered = window_end;
            }
            self.emit(std::slice::from_mut(slot));
        }
        self.reset();
    }

    /// Drops the history no future output reads, so the next block fits.
    fn compact(&mut self) {
        if self.window_start > 0 {
            self.buffer.copy_within(self.window_start..self.buffered, 0);
            self.buffered -= self.window_start;
            self.window_start = 0;
        }
    }

    /// Computes `output.len()` consecutive outputs from the buffered input (the caller made
    /// sure their windows are buffered) and advances the position; returns the count.
    fn emit<S: Sample>(&mut self, output: &mut [S]) -> usize {
        match self.kernel {
            Kernel::Portable => emit_with(self, output, dot::dot_portable, dot::dot2_portable),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Kernel::Avx2Fma` is only created by `Kernel::detect` after checking
            // that the CPU supports AVX2 and FMA.
            Kernel::Avx2Fma => unsafe { emit_avx2_fma(self, output) },
        }
    }
}

/// [`emit_with`] compiled for AVX2 + FMA, so the dot products inline into the loop.
///
/// # Safety
///
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn emit_avx2_fma<S: Sample>(resampler: &mut Resampler, output: &mut [S]) -> usize {
    emit_with(
        resampler,
        output,
        |window, coeffs| {
            // SAFETY: this closure only runs inside `emit_avx2_fma`, whose caller guarantees
            // AVX2 and FMA.
            unsafe { dot::dot_avx2_fma(window, coeffs) }
        },
        |window, first, second| {
            // SAFETY: as above.
            unsafe { dot::dot2_avx2_fma(window, first, second) }
        },
    )
}

/// The output loop, generic over the dot products so each kernel gets its own copy.
///
/// Two shortcuts for upsampling, neither of which can make the output depend on chunking:
/// * phase 0 of an upsampler is a unit impulse (see `PolyphaseFilter::impulse_phase0`), so
///   its outputs are input samples, copied: half of all outputs at 24k->48k;
/// * consecutive outputs that read the same input window with different phases (e.g. two
///   of every three at 16k->48k) are computed together, loading the window once; `dot2`
///   gives bit-identical results to two `dot` calls, so whether a pair is split by the end
///   of a chunk does not matter.
#[inline(always)]
fn emit_with<S: Sample>(
    resampler: &mut Resampler,
    output: &mut [S],
    dot: impl Fn(&[f32], &[f32]) -> f32,
    dot2: impl Fn(&[f32], &[f32], &[f32]) -> (f32, f32),
) -> usize {
    let filter = &resampler.filter;
    let (taps, centre, impulse_phase0) = (filter.taps, filter.half - 1, filter.impulse_phase0);
    let up = resampler.up;
    let (step_whole, step_fraction) = (resampler.down / up, resampler.down % up);
    // The next output is M/L input samples later.
    let advance = |start: usize, phase: usize| {
        let phase = phase + step_fraction;
        if phase >= up {
            (start + step_whole + 1, phase - up)
        } else {
            (start + step_whole, phase)
        }
    };
    let buffer = &resampler.buffer;
    let (mut start, mut phase) = (resampler.window_start, resampler.phase);
    let mut i = 0;
    while i < output.len() {
        let window = &buffer[start..start + taps];
        let next = advance(start, phase);
        if impulse_phase0 && phase == 0 {
            output[i] = S::from_f32(window[centre]);
            (start, phase) = next;
            i += 1;
        } else if next.0 == start && i + 1 < output.len() {
            // `next` is not an impulse phase: reaching phase 0 always moves the window on.
            let (first, second) = dot2(window, filter.phase(phase), filter.phase(next.1));
            output[i] = S::from_f32(first);
            output[i + 1] = S::from_f32(second);
            (start, phase) = advance(next.0, next.1);
            i += 2;
        } else {
            output[i] = S::from_f32(dot(window, filter.phase(phase)));
            (start, phase) = next;
            i += 1;
        }
    }
    resampler.window_start = start;
    resampler.phase = phase;
    output.len()
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (no `rand` dependency for the core).
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            self.0 >> 33
        }
    }

    fn sine(rate: u32, hz: f64, seconds: f64, amplitude: f64) -> Vec<f32> {
        let n = (f64::from(rate) * seconds) as usize;
        (0..n)
            .map(|i| {
                let t = i as f64 / f64::from(rate);
                (amplitude * (2.0 * std::f64::consts::PI * hz * t).sin()) as f32
            })
            .collect()
    }

    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = Lcg(seed);
        (0..n)
            .map(|_| (rng.next() % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }

    /// The whole stream (process + flush) with the given chunk sizes, cycled.
    fn stream<S: Sample>(resampler: &mut Resampler, input: &[S], chunks: &[usize]) -> Vec<S> {
        let mut output = Vec::new();
        let mut rest = input;
        for &size in chunks.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at(size.min(rest.len()));
            let mut out = vec![S::from_f32(0.0); resampler.output_len(chunk.len())];
            let written = resampler.process_into(chunk, &mut out).unwrap();
            assert_eq!(written, out.len());
            output.extend_from_slice(&out);
            rest = tail;
        }
        output.extend(resampler.flush::<S>());
        output
    }

    /// SNR in dB of a resampled sine against the analytic sine, skipping `margin_s` at both
    /// ends (the stream starts and stops abruptly, which rings).
    fn sine_snr_db(in_rate: u32, out_rate: u32, hz: f64) -> f64 {
        let mut resampler = Resampler::new(in_rate, out_rate).unwrap();
        let input = sine(in_rate, hz, 1.0, 0.5);
        let output = resampler.process(&input);
        let latency = resampler.latency();
        let margin = out_rate as usize / 20;
        let (mut signal, mut error) = (0.0, 0.0);
        for (k, &y) in output.iter().enumerate().skip(latency + margin) {
            if k + margin >= output.len() {
                break;
            }
            let t = (k - latency) as f64 / f64::from(out_rate);
            let expected = 0.5 * (2.0 * std::f64::consts::PI * hz * t).sin();
            signal += expected * expected;
            error += (f64::from(y) - expected).powi(2);
        }
        10.0 * (signal / error).log10()
    }

    /// Attenuation in dB of a tone: input RMS over output RMS, after the warm-up.
    fn attenuation_db(in_rate: u32, out_rate: u32, hz: f64) -> f64 {
        let mut resampler = Resampler::new(in_rate, out_rate).unwrap();
        let input = sine(in_rate, hz, 1.0, 0.5);
        let output = resampler.process(&input);
        let steady = &output[2 * resampler.latency()..];
        let rms = |s: &[f32]| {
            (s.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / s.len() as f64).sqrt()
        };
        20.0 * (rms(&input) / rms(steady)).log10()
    }

    #[test]
    fn one_khz_sine_keeps_100_db_snr() {
        for (from, to) in [
            (48_000, 16_000),
            (24_000, 48_000),
            (44_100, 48_000),
            (16_000, 48_000),
        ] {
            let snr = sine_snr_db(from, to, 1000.0);
            assert!(snr >= 100.0, "{from}->{to}: SNR {snr:.1} dB");
        }
    }

    #[test]
    fn ten_khz_tone_is_removed_when_downsampling_to_16k() {
        let attenuation = attenuation_db(48_000, 16_000, 10_000.0);
        assert!(attenuation >= 90.0, "attenuation {attenuation:.1} dB");
    }

    #[test]
    fn output_does_not_depend_on_chunking() {
        let mut rng = Lcg(7);
        let random_chunks: Vec<usize> = (0..500)
            .map(|i| match i % 10 {
                0 => 0,
                1 => 1,
                _ => (rng.next() % 1500) as usize,
            })
            .collect();
        for (from, to) in [
            (48_000, 16_000),
            (24_000, 48_000),
            (44_100, 48_000),
            (8000, 11_025),
        ] {
            let input = noise(from as usize / 2 + 123, 3);
            let mut resampler = Resampler::new(from, to).unwrap();
            let at_once = stream(&mut resampler, &input, &[input.len()]);
            let frame_20ms = stream(&mut resampler, &input, &[from as usize / 50]);
            let random = stream(&mut resampler, &input, &random_chunks);
            assert_eq!(at_once, frame_20ms, "{from}->{to} 20 ms chunks");
            assert_eq!(at_once, random, "{from}->{to} random chunks");

            let pcm: Vec<i16> = input.iter().map(|&x| i16::from_f32(x * 0.9)).collect();
            let at_once = stream(&mut resampler, &pcm, &[pcm.len()]);
            let random = stream(&mut resampler, &pcm, &random_chunks);
            assert_eq!(at_once, random, "{from}->{to} int16 random chunks");
        }
    }

    #[test]
    fn stream_length_is_latency_plus_ceil_of_the_scaled_input() {
        for (from, to) in [
            (48_000, 16_000),
            (24_000, 48_000),
            (44_100, 48_000),
            (48_000, 44_100),
        ] {
            let mut resampler = Resampler::new(from, to).unwrap();
            let (up, down) = resampler.ratio();
            for n in [0usize, 1, 2, 3, 146, 147, 148, 959, 960, 10_007] {
                let input = vec![0.25f32; n];
                assert_eq!(resampler.output_len(n), (n * up).div_ceil(down));
                let processed = resampler.process(&input).len();
                assert_eq!(processed, (n * up).div_ceil(down), "{from}->{to}, n = {n}");
                assert_eq!(resampler.flush::<f32>().len(), resampler.latency());
            }
        }
    }

    #[test]
    fn twenty_ms_in_gives_twenty_ms_out() {
        let mut resampler = Resampler::new(48_000, 16_000).unwrap();
        for _ in 0..10 {
            assert_eq!(resampler.process(&[0.0f32; 960]).len(), 320);
        }
        let mut resampler = Resampler::new(24_000, 48_000).unwrap();
        for _ in 0..10 {
            assert_eq!(resampler.process(&[0i16; 480]).len(), 960);
        }
    }

    #[test]
    fn constant_input_comes_out_constant_and_aligned() {
        let mut resampler = Resampler::new(44_100, 48_000).unwrap();
        let output = resampler.process(&vec![0.5f32; 44_100]);
        let latency = resampler.latency();
        // Well after the warm-up, DC passes at unit gain.
        for &y in &output[3 * latency..] {
            assert!((y - 0.5).abs() < 1e-6, "{y}");
        }
    }

    #[test]
    fn flush_and_reset_start_a_fresh_stream() {
        let input = noise(5000, 11);
        let mut resampler = Resampler::new(48_000, 16_000).unwrap();
        let first = stream(&mut resampler, &input, &[960]);
        let second = stream(&mut resampler, &input, &[960]);
        assert_eq!(first, second);

        resampler.process(&noise(777, 12));
        resampler.reset();
        let after_reset = stream(&mut resampler, &input, &[960]);
        assert_eq!(first, after_reset);
    }

    #[test]
    fn every_common_pair_constructs_and_preserves_a_tone() {
        for from in COMMON_RATES {
            for to in COMMON_RATES {
                let mut resampler = Resampler::new(from, to).unwrap();
                let input = sine(from, 440.0, 0.25, 0.5);
                let output = resampler.process(&input);
                let steady = &output[2 * resampler.latency()..];
                let peak = steady.iter().fold(0.0f32, |m, &x| m.max(x.abs()));
                assert!((peak - 0.5).abs() < 1e-3, "{from}->{to}: peak {peak}");
            }
        }
    }

    #[test]
    fn int16_output_is_rounded_and_saturated() {
        // A full-scale square wave overshoots (Gibbs); the overshoot must clip, not wrap.
        let square: Vec<i16> = (0..4800)
            .map(|i| {
                if (i / 24) % 2 == 0 {
                    i16::MAX
                } else {
                    i16::MIN
                }
            })
            .collect();
        let mut resampler = Resampler::new(48_000, 16_000).unwrap();
        let output = resampler.process(&square);
        assert!(output.contains(&i16::MAX) && output.contains(&i16::MIN));
        let floats: Vec<f32> = square.iter().map(|&s| s.to_f32()).collect();
        let reference = Resampler::new(48_000, 16_000).unwrap().process(&floats);
        for (&pcm, &float) in output.iter().zip(&reference) {
            let expected = (float * 32768.0).round().clamp(-32768.0, 32767.0);
            assert_eq!(f32::from(pcm), expected);
        }
    }

    #[test]
    fn equal_rates_are_a_pure_delay() {
        let input = noise(1000, 9);
        let mut resampler = Resampler::new(16_000, 16_000).unwrap();
        let output = stream(&mut resampler, &input, &[160]);
        assert_eq!(resampler.latency(), 4);
        assert_eq!(&output[4..], &input[..]);
    }

    #[test]
    fn portable_and_simd_kernels_agree() {
        let input = noise(20_000, 5);
        for (from, to) in [(48_000, 16_000), (24_000, 48_000), (44_100, 48_000)] {
            let mut detected = Resampler::new(from, to).unwrap();
            let mut portable = detected.clone();
            portable.kernel = Kernel::Portable;
            let a = detected.process(&input);
            let b = portable.process(&input);
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() < 1e-6, "{from}->{to}: {x} vs {y}");
            }
        }
    }

    #[test]
    fn bad_rates_are_refused_with_the_accepted_rates() {
        for (from, to, bad) in [
            (0, 16_000, 0),
            (999, 16_000, 999),
            (48_000, 384_001, 384_001),
        ] {
            let error = Resampler::new(from, to).unwrap_err();
            assert_eq!(error, ResampleError::UnsupportedRate { rate: bad });
            assert!(error.to_string().contains("44100"));
        }
        // In range, but too many phases (or coefficients) for the pair.
        for (from, to) in [(1000, 383_999), (383_999, 1024)] {
            let error = Resampler::new(from, to).unwrap_err();
            assert!(
                matches!(
                    error,
                    ResampleError::RatioTooComplex { in_rate, out_rate, .. }
                        if (in_rate, out_rate) == (from, to)
                ),
                "{error}"
            );
            assert!(error.to_string().contains("44100"));
        }
        assert!(Resampler::new(1000, 384_000).is_ok());
        let error = Resampler::new(383_999, 1024).unwrap_err();
        assert!(error.to_string().contains("L/M"), "{error}");
    }

    #[test]
    fn short_output_buffers_are_refused_without_consuming_input() {
        let mut resampler = Resampler::new(24_000, 48_000).unwrap();
        let mut short = [0.0f32; 10];
        let error = resampler
            .process_into(&[0.1f32; 480], &mut short)
            .unwrap_err();
        assert_eq!(
            error,
            ResampleError::OutputTooShort {
                len: 10,
                needed: 960
            }
        );
        assert!(resampler.flush_into(&mut short).is_err());
        assert_eq!(resampler.output_len(480), 960);
    }
}
