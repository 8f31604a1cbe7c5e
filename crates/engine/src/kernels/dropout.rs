//! Dropout masks from a counter-based generator: element `i` of the mask with seed `s` is a
//! hash of `(s, i)` alone, so a mask is drawn in parallel, vectorised chunks, never stored,
//! and redrawn exactly in the backward pass. Both training paths draw through here (the
//! autograd path as a tensor, the explicit path fused into the product it scales).

use rayon::prelude::*;

const CHUNK: usize = 1 << 15;

/// One mask's key and threshold.
#[derive(Clone, Copy)]
struct Key {
    lo: u32,
    hi: u32,
    /// An element is dropped when its 24-bit uniform falls below this.
    cut: u32,
    keep: f32,
}

impl Key {
    fn new(seed: u64, p: f32) -> Self {
        // splitmix64 of the counter: one key per mask
        let s = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = (s ^ (s >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Self {
            lo: z as u32,
            hi: (z >> 32) as u32,
            cut: (p as f64 * (1u64 << 24) as f64) as u32,
            keep: 1.0 / (1.0 - p),
        }
    }

    /// The mask value of element `i`: 0, or `1 / (1 − p)`.
    #[inline(always)]
    fn at(self, i: u32) -> f32 {
        // lowbias32 (Wellons) of the key-mixed index, then the key's high half
        let mut x = i.wrapping_mul(0x9E37_79B9) ^ self.lo;
        x ^= x >> 16;
        x = x.wrapping_mul(0x7FEB_352D);
        x ^= x >> 16;
        x = x.wrapping_mul(0x846C_A68B);
        x ^= x >> 15;
        x = (x ^ self.hi).wrapping_mul(0x846C_A68B);
        x ^= x >> 16;
        if (x >> 8) < self.cut {
            0.0
        } else {
            self.keep
        }
    }
}

/// What a pass does with each element's mask value `m`.
#[derive(Clone, Copy)]
enum Op {
    /// `out = m`
    Fill,
    /// `out = x · m`
    Scale,
    /// `out += x · m`
    AddScaled,
}

#[inline(always)]
fn body(key: Key, base: u32, op: Op, x: &[f32], out: &mut [f32]) {
    match op {
        Op::Fill => {
            for (j, o) in out.iter_mut().enumerate() {
                *o = key.at(base.wrapping_add(j as u32));
            }
        }
        Op::Scale => {
            for (j, (o, x)) in out.iter_mut().zip(x).enumerate() {
                *o = x * key.at(base.wrapping_add(j as u32));
            }
        }
        Op::AddScaled => {
            for (j, (o, x)) in out.iter_mut().zip(x).enumerate() {
                *o += x * key.at(base.wrapping_add(j as u32));
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn body_avx512(key: Key, base: u32, op: Op, x: &[f32], out: &mut [f32]) {
    body(key, base, op, x, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn body_avx2(key: Key, base: u32, op: Op, x: &[f32], out: &mut [f32]) {
    body(key, base, op, x, out)
}

fn run(seed: u64, p: f32, op: Op, x: &[f32], out: &mut [f32]) {
    let key = Key::new(seed, p);
    let kernel = super::gemm::kernel();
    let work = |(c, (o, x)): (usize, (&mut [f32], &[f32]))| {
        let base = (c * CHUNK) as u32;
        #[cfg(target_arch = "x86_64")]
        match kernel {
            // SAFETY: the CPU has these features (checked once by `kernel`).
            super::gemm::Kernel::Avx512 => return unsafe { body_avx512(key, base, op, x, o) },
            super::gemm::Kernel::Avx2 => return unsafe { body_avx2(key, base, op, x, o) },
            _ => {}
        }
        let _ = kernel;
        body(key, base, op, x, o)
    };
    match op {
        Op::Fill => out
            .par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(c, o)| work((c, (o, &[][..])))),
        _ => out
            .par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .enumerate()
            .for_each(work),
    }
}

/// The `n` values of the mask with `seed`: 0 with probability `p`, else `1 / (1 − p)`.
pub fn mask(seed: u64, n: usize, p: f32) -> Vec<f32> {
    let mut out = vec![0f32; n];
    run(seed, p, Op::Fill, &[], &mut out);
    out
}

/// `out = x ∘ mask(seed)`.
pub fn apply(seed: u64, p: f32, x: &[f32], out: &mut [f32]) {
    assert_eq!(
        x.len(),
        out.len(),
        "dropout: input and output lengths differ"
    );
    run(seed, p, Op::Scale, x, out);
}

/// `out += x ∘ mask(seed)`.
pub fn add_masked(seed: u64, p: f32, x: &[f32], out: &mut [f32]) {
    assert_eq!(
        x.len(),
        out.len(),
        "dropout: input and output lengths differ"
    );
    run(seed, p, Op::AddScaled, x, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_passes_use_the_same_mask_and_the_rate_is_p() {
        let n = 100_003;
        let m = mask(42, n, 0.1);
        let dropped = m.iter().filter(|&&v| v == 0.0).count() as f64 / n as f64;
        assert!((dropped - 0.1).abs() < 0.005, "dropped {dropped}");
        assert!(m.iter().all(|&v| v == 0.0 || v == 1.0 / 0.9));
        let x: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let mut y = vec![0f32; n];
        apply(42, 0.1, &x, &mut y);
        let mut z = vec![1f32; n];
        add_masked(42, 0.1, &x, &mut z);
        for i in 0..n {
            assert_eq!(y[i], x[i] * m[i]);
            assert_eq!(z[i], 1.0 + x[i] * m[i]);
        }
        assert_ne!(
            mask(43, 64, 0.5),
            mask(42, 64, 0.5),
            "another seed, another mask"
        );
    }
}
