//! `exp` over slices, vectorised: the softmaxes of attention and of the output vocabulary
//! take one exponential per score, and the C library's scalar `expf` was 5 % of a step.
//!
//! Cody–Waite range reduction `x = n·ln2 + r` (|r| ≤ ln2/2) and a degree-6 polynomial for
//! `e^r`, then `2^n` through the exponent bits: within 2 ulp of `f32::exp` over the range
//! softmax uses (inputs ≤ 0 after subtracting the row maximum; large negatives give 0).
//! Written as a plain loop that the compiler vectorises, compiled once more for AVX-512
//! and picked at run time.

/// `e^x` for one value (the loop body).
#[inline(always)]
fn exp1(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * std::f32::consts::LOG2_E).round();
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // Taylor coefficients of e^r to r⁶/6!
    let p = 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    f32::from_bits(p.to_bits().wrapping_add(((n as i32) << 23) as u32))
}

#[inline(always)]
fn run(xs: &mut [f32], shift: f32) -> f32 {
    for v in xs.iter_mut() {
        *v = exp1(*v - shift);
    }
    // sixteen running sums, one per lane: a single one would be a serial chain the
    // compiler may not reorder
    let mut lanes = [0f32; 16];
    let chunks = xs.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (l, v) in lanes.iter_mut().zip(c) {
            *l += v;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn run_avx512(xs: &mut [f32], shift: f32) -> f32 {
    run(xs, shift)
}

/// `xs[i] = e^(xs[i] − shift)` in place; returns their sum.
pub fn exp_shifted(xs: &mut [f32], shift: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if super::gemm::kernel() == super::gemm::Kernel::Avx512 {
        // SAFETY: the CPU has AVX-512 (checked once by `kernel`).
        return unsafe { run_avx512(xs, shift) };
    }
    run(xs, shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_to_the_library_exp() {
        let mut xs: Vec<f32> = (0..20_000).map(|i| -100.0 + i as f32 * 0.0051).collect();
        let want: Vec<f32> = xs.iter().map(|x| x.exp()).collect();
        let sum = exp_shifted(&mut xs, 0.0);
        for (g, w) in xs.iter().zip(&want) {
            let tol = 4.0 * f32::EPSILON * w.abs() + 1e-37;
            assert!((g - w).abs() <= tol, "{g} vs {w}");
        }
        let total: f32 = want.iter().sum();
        assert!((sum - total).abs() <= 1e-4 * total);
    }
}
