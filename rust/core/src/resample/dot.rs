//! The inner loop: a dot product of an input window with one phase of coefficients.
//!
//! Nearly all of the resampler's time is spent here (one call per output sample, 48-136
//! taps for the common rate pairs), so it has two versions:
//!
//! * [`dot_portable`]: plain Rust with 16 independent accumulators (two groups of 8 lanes).
//!   Lane-wise accumulation needs no float reassociation, so LLVM vectorises it with
//!   whatever the build target offers (SSE2 by default), and the two groups hide the add
//!   latency.
//! * [`dot_avx2_fma`]: 256-bit AVX2 with fused multiply-add and four accumulators,
//!   selected at run time when the CPU has both (the default x86-64 target only promises
//!   SSE2, so this cannot be a compile-time choice). FMA also rounds once per tap instead of
//!   twice.
//!
//! Both accumulate in `f32`: the tests check that the rounding error stays far below the
//! quality floor (>= 100 dB SNR), so the wider `f64` accumulators are not needed.

/// Which dot-product implementation this CPU runs; chosen once, at construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// Portable Rust, vectorised for the build target.
    Portable,
    /// AVX2 + FMA. Only [`Kernel::detect`] creates this variant, after checking the CPU.
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
}

impl Kernel {
    /// The fastest kernel the running CPU supports.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Kernel::Avx2Fma;
            }
        }
        Kernel::Portable
    }
}

const LANES: usize = 8;

/// Lane-wise partial sums of one dot product, reduced by [`reduce_portable`].
type Partial = [[f32; LANES]; 2];

/// Dot product of two equally long slices (extra elements of the longer one are ignored).
#[inline(always)]
pub(crate) fn dot_portable(window: &[f32], coeffs: &[f32]) -> f32 {
    let len = window.len().min(coeffs.len());
    let mut acc = [[0.0f32; LANES]; 2];
    for (w, c) in window[..len]
        .chunks_exact(2 * LANES)
        .zip(coeffs[..len].chunks_exact(2 * LANES))
    {
        accumulate_portable(&mut acc, w, c);
    }
    reduce_portable(&acc, window, coeffs, len)
}

/// Two dot products of one window with two coefficient sets, reading the window once.
/// Each result is bit-identical to [`dot_portable`]'s (same operations in the same order),
/// so whether an output is computed alone or in a pair cannot depend on chunking.
#[inline(always)]
pub(crate) fn dot2_portable(window: &[f32], first: &[f32], second: &[f32]) -> (f32, f32) {
    let len = window.len().min(first.len()).min(second.len());
    let (mut acc_first, mut acc_second) = ([[0.0f32; LANES]; 2], [[0.0f32; LANES]; 2]);
    for ((w, c0), c1) in window[..len]
        .chunks_exact(2 * LANES)
        .zip(first[..len].chunks_exact(2 * LANES))
        .zip(second[..len].chunks_exact(2 * LANES))
    {
        accumulate_portable(&mut acc_first, w, c0);
        accumulate_portable(&mut acc_second, w, c1);
    }
    (
        reduce_portable(&acc_first, window, first, len),
        reduce_portable(&acc_second, window, second, len),
    )
}

#[inline(always)]
fn accumulate_portable(acc: &mut Partial, window: &[f32], coeffs: &[f32]) {
    for lane in 0..LANES {
        acc[0][lane] += window[lane] * coeffs[lane];
        acc[1][lane] += window[LANES + lane] * coeffs[LANES + lane];
    }
}

/// Sums the lanes, then adds the taps past the last whole block of `2 * LANES`.
#[inline(always)]
fn reduce_portable(acc: &Partial, window: &[f32], coeffs: &[f32], len: usize) -> f32 {
    let mut sum = 0.0;
    for (first, second) in acc[0].iter().zip(&acc[1]) {
        sum += first + second;
    }
    let tail = len - len % (2 * LANES);
    for (w, c) in window[tail..len].iter().zip(&coeffs[tail..len]) {
        sum += w * c;
    }
    sum
}

/// Dot product with AVX2 + FMA (same contract as [`dot_portable`]).
///
/// # Safety
///
/// The CPU must support AVX2 and FMA (guaranteed when called through [`Kernel::Avx2Fma`],
/// which only [`Kernel::detect`] creates after checking).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(crate) unsafe fn dot_avx2_fma(window: &[f32], coeffs: &[f32]) -> f32 {
    use std::arch::x86_64::_mm256_setzero_ps;

    let len = window.len().min(coeffs.len());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= len {
        for (k, a) in acc.iter_mut().enumerate() {
            // SAFETY: `i + 8 * k + 8 <= i + 32 <= len`, within both slices; the caller
            // guarantees AVX2 and FMA.
            unsafe { fmadd_at(a, window, coeffs, i + 8 * k) };
        }
        i += 32;
    }
    // The last blocks of 8 go to different accumulators, keeping dependency chains short.
    let mut k = 0;
    while i + 8 <= len {
        // SAFETY: `i + 8 <= len`, within both slices; the caller guarantees AVX2 and FMA.
        unsafe { fmadd_at(&mut acc[k], window, coeffs, i) };
        i += 8;
        k += 1;
    }
    // SAFETY: the caller guarantees AVX2 and FMA.
    unsafe { reduce_avx2_fma(&acc, window, coeffs, i, len) }
}

/// Two dot products of one window with two coefficient sets, reading the window once.
/// Each result is bit-identical to [`dot_avx2_fma`]'s (same operations in the same order),
/// so whether an output is computed alone or in a pair cannot depend on chunking.
///
/// # Safety
///
/// As [`dot_avx2_fma`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(crate) unsafe fn dot2_avx2_fma(window: &[f32], first: &[f32], second: &[f32]) -> (f32, f32) {
    use std::arch::x86_64::_mm256_setzero_ps;

    let len = window.len().min(first.len()).min(second.len());
    let mut acc_first = [_mm256_setzero_ps(); 4];
    let mut acc_second = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= len {
        for k in 0..4 {
            // SAFETY: `i + 8 * k + 8 <= i + 32 <= len`, within all three slices; the caller
            // guarantees AVX2 and FMA.
            unsafe {
                fmadd_at(&mut acc_first[k], window, first, i + 8 * k);
                fmadd_at(&mut acc_second[k], window, second, i + 8 * k);
            }
        }
        i += 32;
    }
    let mut k = 0;
    while i + 8 <= len {
        // SAFETY: `i + 8 <= len`, within all three slices; the caller guarantees AVX2, FMA.
        unsafe {
            fmadd_at(&mut acc_first[k], window, first, i);
            fmadd_at(&mut acc_second[k], window, second, i);
        }
        i += 8;
        k += 1;
    }
    // SAFETY: the caller guarantees AVX2 and FMA.
    unsafe {
        (
            reduce_avx2_fma(&acc_first, window, first, i, len),
            reduce_avx2_fma(&acc_second, window, second, i, len),
        )
    }
}

/// `acc += window[at..at + 8] * coeffs[at..at + 8]`, fused.
///
/// # Safety
///
/// `at + 8` must not exceed either slice's length, and the CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn fmadd_at(acc: &mut std::arch::x86_64::__m256, window: &[f32], coeffs: &[f32], at: usize) {
    use std::arch::x86_64::{_mm256_fmadd_ps, _mm256_loadu_ps};

    debug_assert!(at + 8 <= window.len() && at + 8 <= coeffs.len());
    // SAFETY: the caller guarantees 8 floats from `at` in both slices; `loadu` needs no
    // alignment.
    unsafe {
        *acc = _mm256_fmadd_ps(
            _mm256_loadu_ps(window.as_ptr().add(at)),
            _mm256_loadu_ps(coeffs.as_ptr().add(at)),
            *acc,
        );
    }
}

/// Sums the four accumulators' lanes, then adds the scalar taps `tail..len`.
///
/// # Safety
///
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn reduce_avx2_fma(
    acc: &[std::arch::x86_64::__m256; 4],
    window: &[f32],
    coeffs: &[f32],
    tail: usize,
    len: usize,
) -> f32 {
    use std::arch::x86_64::*;

    let sum8 = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let sum4 = _mm_add_ps(_mm256_castps256_ps128(sum8), _mm256_extractf128_ps(sum8, 1));
    let sum2 = _mm_add_ps(sum4, _mm_movehl_ps(sum4, sum4));
    let sum1 = _mm_add_ss(sum2, _mm_shuffle_ps(sum2, sum2, 0b01));
    let mut sum = _mm_cvtss_f32(sum1);
    for (w, c) in window[tail..len].iter().zip(&coeffs[tail..len]) {
        sum += w * c;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    fn reference(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(&x, &y)| f64::from(x) * f64::from(y))
            .sum()
    }

    #[test]
    fn kernels_agree_with_an_f64_reference_for_every_length() {
        let kernel = Kernel::detect();
        for len in 0..200 {
            let a = pseudo_random(len, 1);
            let b = pseudo_random(len, 2);
            let expected = reference(&a, &b);
            let portable = dot_portable(&a, &b);
            assert!((f64::from(portable) - expected).abs() < 1e-5, "len {len}");
            #[cfg(target_arch = "x86_64")]
            if kernel == Kernel::Avx2Fma {
                // SAFETY: `detect` returned Avx2Fma, so the CPU has AVX2 and FMA.
                let avx = unsafe { dot_avx2_fma(&a, &b) };
                assert!((f64::from(avx) - expected).abs() < 1e-5, "len {len}");
            }
        }
    }

    #[test]
    fn paired_dot_products_are_bit_identical_to_single_ones() {
        let kernel = Kernel::detect();
        for len in [0, 7, 8, 16, 40, 48, 136, 199] {
            let window = pseudo_random(len, 3);
            let (first, second) = (pseudo_random(len, 4), pseudo_random(len, 5));
            let single = (
                dot_portable(&window, &first),
                dot_portable(&window, &second),
            );
            assert_eq!(dot2_portable(&window, &first, &second), single, "len {len}");
            #[cfg(target_arch = "x86_64")]
            if kernel == Kernel::Avx2Fma {
                // SAFETY: `detect` returned Avx2Fma, so the CPU has AVX2 and FMA.
                unsafe {
                    let single = (
                        dot_avx2_fma(&window, &first),
                        dot_avx2_fma(&window, &second),
                    );
                    assert_eq!(dot2_avx2_fma(&window, &first, &second), single);
                }
            }
        }
    }

    #[test]
    fn unequal_lengths_use_the_shorter() {
        let a = [1.0f32; 20];
        let b = [2.0f32; 17];
        assert_eq!(dot_portable(&a, &b), 34.0);
    }
}
