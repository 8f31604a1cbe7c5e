//! NF4 storage for frozen linear weights: the 4-bit base of QLoRA (Dettmers et al. 2023).
//!
//! A weight matrix is flattened row-major and cut into blocks of [`BLOCK`] = 64 values.
//! Each block keeps its absolute maximum `a_b`; each value `w` is stored as the index
//! (4 bits) of the NormalFloat level nearest to `w / a_b`. The 16 levels are the quantiles of
//! N(0, 1) rescaled to [-1, 1], with an exact zero, so normally distributed weights use
//! every code equally often.
//!
//! Double quantization stores the block maxima themselves in 8 bits: with `μ` the mean of
//! all `a_b`, each group of [`SCALE_BLOCK`] = 256 blocks keeps one f32 scale
//! `s_g = max |a_b − μ| / 127`, and each block the byte `round((a_b − μ) / s_g) + 128`.
//! Storage per parameter: 4 + 8/64 + 32/(64·256) ≈ 4.127 bits (bitsandbytes uses a dynamic
//! 8-bit code for the maxima; a linear one is used here, same size).
//!
//! Dequantization `ŵ = level[code] · â_b` happens inside forward and backward, never ahead.
//! On the CPU in f32 the gemm unpacks each panel of `W` it is about to multiply straight from
//! the codes ([`crate::kernels::nf4`]), so no f32 copy of the weight exists at all; elsewhere
//! (other dtypes, other devices) the frozen-weight matmul of [`crate::linear`] dequantizes
//! one layer's weight per call and drops it. On the CPU that is a table lookup over
//! threads; on other devices it is built from candle kernels
//! ([`Nf4Tensor::dequantize_generic`]), which the tests check against the CPU path.

use candle_core::{DType, Device, Result, Storage, Tensor};
use rayon::prelude::*;

use crate::kernels::nf4::Nf4Mat;
pub use crate::kernels::nf4::{BLOCK, NF4_LEVELS, SCALE_BLOCK};

/// A 2-D weight in NF4 with double-quantized block maxima.
#[derive(Debug)]
pub struct Nf4Tensor {
    /// `(out, in)` of the original matrix.
    shape: (usize, usize),
    /// Two codes per byte, the first value in the high nibble; padded to whole blocks.
    codes: Tensor,
    /// One byte per block (`q + 128`), padded to whole scale groups.
    absmax_q: Tensor,
    /// One f32 per group of [`SCALE_BLOCK`] blocks.
    absmax_scale: Tensor,
    absmax_mean: f32,
}

fn nearest_level(x: f32) -> u8 {
    // the levels are sorted: the answer is the last level below the midpoint to the next
    let mut code = 0u8;
    for i in 0..15 {
        if x > 0.5 * (NF4_LEVELS[i] + NF4_LEVELS[i + 1]) {
            code = i as u8 + 1;
        }
    }
    code
}

fn cpu_slice<T: candle_core::WithDType>(t: &Tensor) -> Result<Vec<T>> {
    t.flatten_all()?.to_vec1::<T>()
}

impl Nf4Tensor {
    /// Quantize a `[out, in]` weight (any float dtype, any device; stored on that device).
    pub fn quantize(w: &Tensor) -> Result<Self> {
        let (out, inp) = w.dims2()?;
        let n = out * inp;
        let values: Vec<f32> = cpu_slice(&w.to_dtype(DType::F32)?)?;
        let n_blocks = n.div_ceil(BLOCK);
        let n_groups = n_blocks.div_ceil(SCALE_BLOCK);
        let mut codes = vec![0u8; n_blocks * BLOCK / 2];
        let mut absmax = vec![0f32; n_blocks];
        codes
            .par_chunks_mut(BLOCK / 2)
            .zip(absmax.par_iter_mut())
            .enumerate()
            .for_each(|(b, (packed, amax))| {
                let block = &values[(b * BLOCK).min(n)..((b + 1) * BLOCK).min(n)];
                let a = block.iter().fold(0f32, |m, v| m.max(v.abs()));
                *amax = a;
                let inv = if a > 0.0 { 1.0 / a } else { 0.0 };
                for (j, byte) in packed.iter_mut().enumerate() {
                    let code = |k: usize| block.get(k).map_or(7, |v| nearest_level(v * inv));
                    *byte = (code(2 * j) << 4) | code(2 * j + 1);
                }
            });
        let mean = absmax.iter().map(|&a| a as f64).sum::<f64>() / n_blocks.max(1) as f64;
        let mean = mean as f32;
        let mut absmax_q = vec![128u8; n_groups * SCALE_BLOCK];
        let mut scales = vec![0f32; n_groups];
        for (g, scale) in scales.iter_mut().enumerate() {
            let group = &absmax[g * SCALE_BLOCK..((g + 1) * SCALE_BLOCK).min(n_blocks)];
            let m = group.iter().fold(0f32, |m, a| m.max((a - mean).abs()));
            *scale = if m > 0.0 { m / 127.0 } else { 1.0 };
            for (k, a) in group.iter().enumerate() {
                let q = ((a - mean) / *scale).round().clamp(-127.0, 127.0);
                absmax_q[g * SCALE_BLOCK + k] = (q as i32 + 128) as u8;
            }
        }
        let dev = w.device();
        Ok(Self {
            shape: (out, inp),
            codes: Tensor::from_vec(codes, n_blocks * BLOCK / 2, dev)?,
            absmax_q: Tensor::from_vec(absmax_q, n_groups * SCALE_BLOCK, dev)?,
            absmax_scale: Tensor::from_vec(scales, n_groups, dev)?,
            absmax_mean: mean,
        })
    }

    pub fn dims(&self) -> (usize, usize) {
        self.shape
    }

    pub fn elem_count(&self) -> usize {
        self.shape.0 * self.shape.1
    }

    pub fn device(&self) -> &Device {
        self.codes.device()
    }

    /// Bytes held (codes, block maxima, scales, the mean).
    pub fn storage_bytes(&self) -> usize {
        self.codes.elem_count()
            + self.absmax_q.elem_count()
            + 4 * self.absmax_scale.elem_count()
            + 4
    }

    /// The f32 weight `[out, in]` on the storage's device.
    pub fn dequantize(&self) -> Result<Tensor> {
        match self.device() {
            Device::Cpu => self.dequantize_cpu(),
            _ => self.dequantize_generic(),
        }
    }

    fn dequantize_cpu(&self) -> Result<Tensor> {
        let out = self.with_mat(|q| {
            let mut out = vec![0f32; q.rows * q.cols];
            out.par_chunks_mut(BLOCK * 16)
                .enumerate()
                .for_each(|(i, o)| q.dequantize_run(i * BLOCK * 16, o));
            out
        })?;
        Tensor::from_vec(out, self.shape, &Device::Cpu)
    }

    /// Run `f` on the raw storage of a CPU weight, seen as the `[out, in]` matrix it holds.
    pub fn with_mat<R>(&self, f: impl FnOnce(Nf4Mat) -> R) -> Result<R> {
        let codes = self.codes.storage_and_layout();
        let absq = self.absmax_q.storage_and_layout();
        let scales = self.absmax_scale.storage_and_layout();
        let (Storage::Cpu(codes), Storage::Cpu(absq), Storage::Cpu(scales)) =
            (&*codes.0, &*absq.0, &*scales.0)
        else {
            candle_core::bail!("nf4: storage is not on the CPU");
        };
        let q = Nf4Mat {
            codes: codes.as_slice::<u8>()?,
            absmax_q: absq.as_slice::<u8>()?,
            scales: scales.as_slice::<f32>()?,
            mean: self.absmax_mean,
            rows: self.shape.0,
            cols: self.shape.1,
            transposed: false,
        };
        q.check();
        Ok(f(q))
    }

    /// Dequantization from candle kernels only (any device): split the bytes into nibbles
    /// arithmetically, look the levels up with `index_select`, scale per block.
    pub fn dequantize_generic(&self) -> Result<Tensor> {
        let dev = self.device();
        let bytes = self.codes.to_dtype(DType::F32)?;
        let hi = (&bytes / 16.0)?.floor()?;
        let lo = (&bytes - (&hi * 16.0)?)?;
        let idx = Tensor::stack(&[&hi, &lo], 1)?
            .flatten_all()?
            .to_dtype(DType::U32)?;
        let levels = Tensor::new(&NF4_LEVELS, dev)?;
        let vals = levels.index_select(&idx, 0)?;
        let groups = self.absmax_scale.dim(0)?;
        let absmax = (self.absmax_q.to_dtype(DType::F32)? - 128.0)?
            .reshape((groups, SCALE_BLOCK))?
            .broadcast_mul(&self.absmax_scale.reshape((groups, 1))?)?
            .flatten_all()?;
        let absmax = (absmax + self.absmax_mean as f64)?;
        let n_blocks = self.codes.dim(0)? * 2 / BLOCK;
        let w = vals
            .reshape((n_blocks, BLOCK))?
            .broadcast_mul(&absmax.narrow(0, 0, n_blocks)?.unsqueeze(1)?)?
            .flatten_all()?;
        w.narrow(0, 0, self.elem_count())?.reshape(self.shape)
    }
}

/// Measure what NF4 storage really occupies: quantize one `[rows, cols]` matrix `count`
/// times, keeping every result, and return `(resident bytes added, parameters stored)` from
/// the process's RSS before and after (Linux; 0 bytes elsewhere).
pub fn measure_resident(rows: usize, cols: usize, count: usize) -> Result<(u64, u64)> {
    let v: Vec<f32> = (0..rows * cols)
        .map(|k| ((k * 7919 % 1000) as f32 / 500.0 - 1.0) * 0.02)
        .collect();
    let w = Tensor::from_vec(v, (rows, cols), &Device::Cpu)?;
    // one quantization first, so its transient buffers are already in the allocator
    let warm = Nf4Tensor::quantize(&w)?;
    let before = crate::device::rss_bytes();
    let kept = (0..count)
        .map(|_| Nf4Tensor::quantize(&w))
        .collect::<Result<Vec<_>>>()?;
    let after = crate::device::rss_bytes();
    drop((warm, kept));
    Ok((after.saturating_sub(before), (rows * cols * count) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::tests::max_diff;
    use candle_core::Var;
    use std::sync::Arc;

    fn normal(n: usize, seed: u64) -> Vec<f32> {
        // Box–Muller over a xorshift stream: weights shaped like a trained matrix
        let mut s = seed | 1;
        let mut u = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 + 0.5) / (1u64 << 24) as f32
        };
        (0..n)
            .map(|_| (-2.0 * u().ln()).sqrt() * (2.0 * std::f32::consts::PI * u()).cos() * 0.02)
            .collect()
    }

    #[test]
    fn round_trip_error_is_that_of_4_bits_and_storage_is_4_13_bits() {
        let (out, inp) = (96, 200); // 19200 values: a ragged last block and scale group
        let w = Tensor::from_vec(normal(out * inp, 5), (out, inp), &Device::Cpu).unwrap();
        let q = Nf4Tensor::quantize(&w).unwrap();
        let back = q.dequantize().unwrap();
        assert_eq!(back.dims(), &[out, inp]);
        let (a, b) = (
            w.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            back.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        // every value lands on a level times its block's (8-bit) absmax: the error is at most
        // half the widest level gap (0.152) of the block max plus the absmax error
        for (blk, (xa, xb)) in a.chunks(BLOCK).zip(b.chunks(BLOCK)).enumerate() {
            let amax = xa.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (x, y) in xa.iter().zip(xb) {
                assert!(
                    (x - y).abs() <= 0.16 * amax + 1e-4,
                    "block {blk}: {x} vs {y}"
                );
            }
        }
        let rms = |v: &[f32]| (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
        let err: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
        let rel = rms(&err) / rms(&a);
        assert!(rel < 0.12, "relative RMS error {rel}");
        // zero stays zero, signs are kept
        assert!(a.iter().zip(&b).all(|(x, y)| x * y >= 0.0));
        // storage: SmolLM2's q_proj shape (ragged matrices pad to whole groups of blocks)
        let w = Tensor::from_vec(normal(576 * 576, 6), (576, 576), &Device::Cpu).unwrap();
        let q = Nf4Tensor::quantize(&w).unwrap();
        let bits = 8.0 * q.storage_bytes() as f64 / (576 * 576) as f64;
        assert!((4.127..4.135).contains(&bits), "{bits} bits per parameter");
    }

    #[test]
    fn the_generic_kernels_match_the_cpu_table() {
        let w = Tensor::from_vec(normal(130 * 70, 9), (130, 70), &Device::Cpu).unwrap();
        let q = Nf4Tensor::quantize(&w).unwrap();
        let a = q.dequantize_cpu().unwrap();
        let b = q.dequantize_generic().unwrap();
        let d = max_diff(&a, &b);
        assert!(d < 1e-7, "{d}");
    }

    #[test]
    fn exact_levels_survive_and_an_all_zero_block_is_zero() {
        let mut v: Vec<f32> = NF4_LEVELS.iter().map(|l| l * 0.5).collect();
        v.resize(64, 0.0);
        v.extend(std::iter::repeat_n(0.0, 64));
        let w = Tensor::from_vec(v.clone(), (2, 64), &Device::Cpu).unwrap();
        let back = Nf4Tensor::quantize(&w)
            .unwrap()
            .dequantize()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (x, y) in v.iter().zip(&back) {
            assert!((x - y).abs() < 3e-3, "{x} vs {y}");
        }
        assert!(back[64..].iter().all(|&y| y == 0.0));
    }

    #[test]
    fn the_nf4_linear_is_the_dequantized_matmul_with_the_input_gradient() {
        let w = Tensor::from_vec(normal(24 * 40, 3), (24, 40), &Device::Cpu).unwrap();
        let q = Arc::new(Nf4Tensor::quantize(&w).unwrap());
        let dense = q.dequantize().unwrap();
        let x = Var::from_tensor(
            &Tensor::from_vec(normal(3 * 5 * 40, 4), (3, 5, 40), &Device::Cpu).unwrap(),
        )
        .unwrap();
        let y = crate::linear::frozen_weight_linear(
            x.as_tensor(),
            &crate::linear::BaseWeight::Nf4(q.clone()),
        )
        .unwrap();
        let want = x.as_tensor().broadcast_matmul(&dense.t().unwrap()).unwrap();
        crate::ops::tests::assert_same_f32_product(&y, &want, x.as_tensor(), &dense.t().unwrap());
        let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let x2 = Var::from_tensor(x.as_tensor()).unwrap();
        let g2 = x2
            .as_tensor()
            .broadcast_matmul(&dense.t().unwrap())
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(
            max_diff(
                g.get(x.as_tensor()).unwrap(),
                g2.get(x2.as_tensor()).unwrap()
            ) < 1e-5
        );
    }
}
