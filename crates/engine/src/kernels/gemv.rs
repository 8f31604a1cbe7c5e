//! `x Wᵀ` for a few rows of `x` against a row-major `[n, k]` weight, as one dot product per
//! output, split over threads by weight rows.
//!
//! A decoding step multiplies one row by every weight of the model: the work is reading the
//! weights once, and a blocked gemm's packing and tiling only add to it. Here each weight row
//! is streamed once and dotted with every input row, in 16 lanes (AVX-512 or AVX2 + FMA
//! where the CPU has them, chosen once as the blocked gemm chooses).

use super::gemm::{kernel, Kernel};
use candle_core::{Device, Result, Tensor};
use rayon::prelude::*;

/// Inputs with more rows than this go to the blocked gemm.
pub const MAX_ROWS: usize = 7;
const LANES: usize = 16;

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    let mut acc = [0f32; LANES];
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] = x[l].mul_add(y[l], acc[l]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `out[j * m + i] = x_i · w_j` for the weight rows of `w` (a whole number of `k`-rows).
#[inline(always)]
fn block(out: &mut [f32], x: &[f32], m: usize, k: usize, w: &[f32]) {
    for (j, row) in w.chunks_exact(k).enumerate() {
        for i in 0..m {
            out[j * m + i] = dot(&x[i * k..(i + 1) * k], row);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn block_avx512(out: &mut [f32], x: &[f32], m: usize, k: usize, w: &[f32]) {
    block(out, x, m, k, w)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2(out: &mut [f32], x: &[f32], m: usize, k: usize, w: &[f32]) {
    block(out, x, m, k, w)
}

fn block_portable(out: &mut [f32], x: &[f32], m: usize, k: usize, w: &[f32]) {
    // without FMA, mul_add is a library call: plain multiply-adds instead
    for (j, row) in w.chunks_exact(k).enumerate() {
        for i in 0..m {
            let xi = &x[i * k..(i + 1) * k];
            out[j * m + i] = xi.iter().zip(row).map(|(a, b)| a * b).sum();
        }
    }
}

/// `[m, k] · [n, k]ᵀ → [m, n]`, row-major, for `m ≤ MAX_ROWS`.
pub fn rows_times_t(x: &[f32], m: usize, k: usize, w: &[f32], n: usize) -> Vec<f32> {
    assert!(
        x.len() == m * k && w.len() == n * k,
        "gemv: [{m}, {k}] · [{n}, {k}]ᵀ"
    );
    let mut t = vec![0f32; n * m];
    if k == 0 || n == 0 {
        return vec![0f32; m * n];
    }
    let threads = rayon::current_num_threads().max(1);
    let per = n.div_ceil(threads * 4).max(16);
    let kind = kernel();
    t.par_chunks_mut(per * m)
        .zip(w.par_chunks(per * k))
        .for_each(|(o, wc)| match kind {
            // SAFETY: the CPU has these features (checked once by `kernel`).
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe { block_avx512(o, x, m, k, wc) },
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { block_avx2(o, x, m, k, wc) },
            _ => block_portable(o, x, m, k, wc),
        });
    if m == 1 {
        return t;
    }
    let mut out = vec![0f32; m * n];
    for j in 0..n {
        for i in 0..m {
            out[i * n + j] = t[j * m + i];
        }
    }
    out
}

/// `x Wᵀ` through [`rows_times_t`] when it applies — f32 on the CPU, a contiguous `[n, k]`
/// weight, at most [`MAX_ROWS`] rows of `x` — else `None`. Records no gradient.
pub fn linear(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    let k = x.dims().last().copied().unwrap_or(0);
    let m = x.elem_count() / k.max(1);
    let cpu_f32 =
        |t: &Tensor| matches!(t.device(), Device::Cpu) && t.dtype() == candle_core::DType::F32;
    if m == 0 || m > MAX_ROWS || !cpu_f32(x) || !cpu_f32(w) || !w.is_contiguous() || w.rank() != 2 {
        return Ok(None);
    }
    let (n, wk) = w.dims2()?;
    if wk != k {
        candle_core::bail!("linear: input has {k} features, the weight {wk}");
    }
    let x = x.contiguous()?;
    let y = super::with_f32(&x, |xd, xl| {
        let (s, e) = xl
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("gemv: input not contiguous".into()))?;
        super::with_f32(w, |wd, wl| {
            let (ws, we) = wl
                .contiguous_offsets()
                .ok_or_else(|| candle_core::Error::Msg("gemv: weight not contiguous".into()))?;
            Ok(rows_times_t(&xd[s..e], m, k, &wd[ws..we], n))
        })
    })?;
    let mut dims = x.dims().to_vec();
    *dims.last_mut().unwrap_or(&mut 0) = n;
    Tensor::from_vec(y, dims, x.device()).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equals_a_plain_product_for_one_to_seven_rows() {
        let (k, n) = (37, 53); // not multiples of the lanes or the thread split
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7 % 23) as f32 - 11.0) * 0.01)
            .collect();
        for m in 1..=MAX_ROWS {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 5 % 17) as f32 - 8.0) * 0.1)
                .collect();
            let got = rows_times_t(&x, m, k, &w, n);
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k)
                        .map(|c| x[i * k + c] as f64 * w[j * k + c] as f64)
                        .sum();
                    assert!(
                        (got[i * n + j] as f64 - want).abs() < 1e-4,
                        "m {m} [{i}, {j}]"
                    );
                }
            }
        }
    }

    #[test]
    fn a_tensor_product_matches_candle_and_bigger_inputs_are_left_alone() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (1, 3, 64), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (40, 64), &dev).unwrap();
        let got = linear(&x, &w).unwrap().unwrap();
        let want = x.broadcast_matmul(&w.t().unwrap()).unwrap();
        let d = (got - want).unwrap().abs().unwrap().max_all().unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-4);
        let big = Tensor::randn(0f32, 1.0, (8, 64), &dev).unwrap();
        assert!(linear(&big, &w).unwrap().is_none());
        assert!(
            linear(&x, &w.t().unwrap()).unwrap().is_none(),
            "a transposed weight is not [n, k]"
        );
    }
}
