//! Causal self-attention over `[b·t, heads·d]` rows, forward and backward, in the manner of
//! flash attention: queries go in blocks of [`BLOCK`] rows that only ever score the keys up
//! to their own last position (the masked upper half is skipped, not computed and thrown
//! away), the probabilities live in a per-thread scratch block and are never kept, and the
//! backward pass recomputes them from each row's saved log-sum-exp. Grouped-query heads read
//! their shared key/value head in place: nothing is repeated.

use super::exp::exp_shifted;
use super::gemm::{matmul_serial, Mat};
use rayon::prelude::*;

/// Query rows per block.
const BLOCK: usize = 64;

/// The shapes of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct Dims {
    pub batch: usize,
    pub seq: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// The factor on `q·k` (`1/√d` unless the family says otherwise).
    pub scale: f32,
}

impl Dims {
    fn q_width(&self) -> usize {
        self.heads * self.head_dim
    }
    fn kv_width(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}

/// A raw pointer that tasks writing disjoint elements share.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: every task writes only the rows of its own sequence and the columns of its own
// heads; no two tasks write one element.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// Copy the `rows × cols` block `src` (row stride `cols`) to `self` at `(r0, c0)` with row
    /// stride `ld`.
    ///
    /// # Safety
    /// The block must lie in the buffer and belong to the calling task alone.
    unsafe fn put(self, src: &[f32], rows: usize, cols: usize, r0: usize, c0: usize, ld: usize) {
        for r in 0..rows {
            let dst = self.0.add((r0 + r) * ld + c0);
            std::ptr::copy_nonoverlapping(src.as_ptr().add(r * cols), dst, cols);
        }
    }
}

fn sub<'a>(
    data: &'a [f32],
    row0: usize,
    col0: usize,
    rows: usize,
    cols: usize,
    ld: usize,
) -> Mat<'a> {
    Mat {
        data: &data[row0 * ld + col0..],
        rows,
        cols,
        rs: ld,
        cs: 1,
    }
}

/// Scores of one query block against keys `0..keys`, turned into probabilities in place:
/// scaled, causally masked (query `i0 + r` sees keys `..= i0 + r`), then
/// `exp(s − lse)`. With `lse_out`, each row's log-sum-exp is computed and stored; without,
/// `lse_in` supplies it (the backward recomputation).
fn probabilities(
    s: &mut [f32],
    rows: usize,
    keys: usize,
    i0: usize,
    scale: f32,
    lse_out: Option<&mut [f32]>,
    lse_in: &[f32],
) {
    let mut lse_out = lse_out;
    for r in 0..rows {
        let row = &mut s[r * keys..(r + 1) * keys];
        let seen = i0 + r + 1;
        for v in row[..seen].iter_mut() {
            *v *= scale;
        }
        match lse_out.as_deref_mut() {
            Some(out) => {
                let max = row[..seen]
                    .iter()
                    .copied()
                    .fold(f32::NEG_INFINITY, f32::max);
                let sum = exp_shifted(&mut row[..seen], max);
                out[r] = max + sum.ln();
                let k = 1.0 / sum;
                row[..seen].iter_mut().for_each(|v| *v *= k);
            }
            None => {
                exp_shifted(&mut row[..seen], lse_in[r]);
            }
        }
        row[seen..].fill(0.0);
    }
}

/// `out = softmax(q·kᵀ·scale + causal mask)·v` per head; `lse` `[batch, heads, seq]` gets
/// each row's log-sum-exp of the scaled scores.
pub fn forward(q: &[f32], k: &[f32], v: &[f32], dims: Dims, out: &mut [f32], lse: &mut [f32]) {
    let Dims {
        batch: _,
        seq,
        heads,
        kv_heads,
        head_dim: d,
        scale,
    } = dims;
    let (qw, kw) = (dims.q_width(), dims.kv_width());
    let rep = heads / kv_heads;
    let out_ptr = Shared(out.as_mut_ptr());
    // lse is [batch, heads, seq]: each (sequence, head) owns one contiguous run
    lse.par_chunks_mut(seq).enumerate().for_each(|(bh, lse)| {
        let (b, h) = (bh / heads, bh % heads);
        let g = h / rep;
        let mut s = vec![0f32; BLOCK * seq];
        let mut o = vec![0f32; BLOCK * d];
        for i0 in (0..seq).step_by(BLOCK) {
            let rows = BLOCK.min(seq - i0);
            let keys = i0 + rows;
            let qb = sub(q, b * seq + i0, h * d, rows, d, qw);
            let kb = sub(k, b * seq, g * d, keys, d, kw);
            let vb = sub(v, b * seq, g * d, keys, d, kw);
            matmul_serial(&mut s, keys, qb, kb.t(), false);
            probabilities(
                &mut s,
                rows,
                keys,
                i0,
                scale,
                Some(&mut lse[i0..i0 + rows]),
                &[],
            );
            matmul_serial(&mut o, d, Mat::new(&s, rows, keys), vb, false);
            // SAFETY: rows of sequence b, columns of head h: this task's alone.
            unsafe { out_ptr.put(&o, rows, d, b * seq + i0, h * d, qw) };
        }
    });
}

/// The gradients of [`forward`] for `dout`: `dq` `[b·t, heads·d]`, `dk` and `dv`
/// `[b·t, kv_heads·d]` (overwritten).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    lse: &[f32],
    dout: &[f32],
    dims: Dims,
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
) {
    let Dims {
        batch,
        seq,
        heads,
        kv_heads,
        head_dim: d,
        scale,
    } = dims;
    let (qw, kw) = (dims.q_width(), dims.kv_width());
    let rep = heads / kv_heads;
    let (dq_ptr, dk_ptr, dv_ptr) = (
        Shared(dq.as_mut_ptr()),
        Shared(dk.as_mut_ptr()),
        Shared(dv.as_mut_ptr()),
    );
    // one task per (sequence, key/value head): the heads sharing it add into one dk, dv
    (0..batch * kv_heads).into_par_iter().for_each(|bg| {
        let (b, g) = (bg / kv_heads, bg % kv_heads);
        let mut p = vec![0f32; BLOCK * seq];
        let mut dp = vec![0f32; BLOCK * seq];
        let mut dqb = vec![0f32; BLOCK * d];
        let mut dkg = vec![0f32; seq * d];
        let mut dvg = vec![0f32; seq * d];
        for h in g * rep..(g + 1) * rep {
            let lse = &lse[(b * heads + h) * seq..(b * heads + h + 1) * seq];
            for i0 in (0..seq).step_by(BLOCK) {
                let rows = BLOCK.min(seq - i0);
                let keys = i0 + rows;
                let qb = sub(q, b * seq + i0, h * d, rows, d, qw);
                let kb = sub(k, b * seq, g * d, keys, d, kw);
                let vb = sub(v, b * seq, g * d, keys, d, kw);
                let dob = sub(dout, b * seq + i0, h * d, rows, d, qw);
                matmul_serial(&mut p, keys, qb, kb.t(), false);
                probabilities(&mut p, rows, keys, i0, scale, None, &lse[i0..i0 + rows]);
                // dv += pᵀ·do
                matmul_serial(&mut dvg, d, Mat::new(&p, rows, keys).t(), dob, true);
                // dp = do·vᵀ, then ds = p ∘ (dp − rowsum(p ∘ dp)) · scale, over dp
                matmul_serial(&mut dp, keys, dob, vb.t(), false);
                for r in 0..rows {
                    let pr = &p[r * keys..(r + 1) * keys];
                    let dr = &mut dp[r * keys..(r + 1) * keys];
                    let dot: f32 = pr.iter().zip(dr.iter()).map(|(a, b)| a * b).sum();
                    for (dv, pv) in dr.iter_mut().zip(pr) {
                        *dv = pv * (*dv - dot) * scale;
                    }
                }
                let ds = Mat::new(&dp, rows, keys);
                // dq = ds·k, dk += dsᵀ·q
                matmul_serial(&mut dqb, d, ds, kb, false);
                matmul_serial(&mut dkg, d, ds.t(), qb, true);
                // SAFETY: rows of sequence b, columns of head h: this task's alone.
                unsafe { dq_ptr.put(&dqb, rows, d, b * seq + i0, h * d, qw) };
            }
        }
        // SAFETY: rows of sequence b, columns of key/value head g: this task's alone.
        unsafe {
            dk_ptr.put(&dkg, seq, d, b * seq, g * d, kw);
            dv_ptr.put(&dvg, seq, d, b * seq, g * d, kw);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain attention in f64 with the full mask, for reference.
    fn reference(q: &[f32], k: &[f32], v: &[f32], dm: Dims) -> Vec<f64> {
        let (qw, kw, d) = (dm.q_width(), dm.kv_width(), dm.head_dim);
        let mut out = vec![0f64; dm.batch * dm.seq * qw];
        for b in 0..dm.batch {
            for h in 0..dm.heads {
                let g = h / (dm.heads / dm.kv_heads);
                for i in 0..dm.seq {
                    let qi = &q[(b * dm.seq + i) * qw + h * d..][..d];
                    let s: Vec<f64> = (0..=i)
                        .map(|j| {
                            let kj = &k[(b * dm.seq + j) * kw + g * d..][..d];
                            qi.iter().zip(kj).map(|(a, b)| (a * b) as f64).sum::<f64>()
                                * dm.scale as f64
                        })
                        .collect();
                    let m = s.iter().copied().fold(f64::MIN, f64::max);
                    let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                    for (j, sj) in s.iter().enumerate() {
                        let p = (sj - m).exp() / z;
                        for e in 0..d {
                            out[(b * dm.seq + i) * qw + h * d + e] +=
                                p * v[(b * dm.seq + j) * kw + g * d + e] as f64;
                        }
                    }
                }
            }
        }
        out
    }

    fn data(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 37 + seed * 11) % 97) as f32 / 48.0 - 1.0) * 0.7)
            .collect()
    }

    fn dims() -> Dims {
        // a sequence longer than one block, and grouped heads
        Dims {
            batch: 2,
            seq: 70,
            heads: 4,
            kv_heads: 2,
            head_dim: 8,
            scale: 0.35,
        }
    }

    #[test]
    fn forward_matches_plain_attention() {
        let dm = dims();
        let n = dm.batch * dm.seq;
        let (q, k, v) = (data(n * 32, 1), data(n * 16, 2), data(n * 16, 3));
        let mut out = vec![0f32; n * 32];
        let mut lse = vec![0f32; dm.batch * dm.heads * dm.seq];
        forward(&q, &k, &v, dm, &mut out, &mut lse);
        for (a, b) in out.iter().zip(reference(&q, &k, &v, dm)) {
            assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    /// The loss `Σ out ∘ w` differentiated numerically in f64 through the reference.
    #[test]
    fn backward_matches_differences() {
        let dm = Dims { seq: 67, ..dims() };
        let n = dm.batch * dm.seq;
        let (q, k, v) = (data(n * 32, 4), data(n * 16, 5), data(n * 16, 6));
        let w = data(n * 32, 7);
        let loss = |q: &[f32], k: &[f32], v: &[f32]| -> f64 {
            reference(q, k, v, dm)
                .iter()
                .zip(&w)
                .map(|(a, b)| a * *b as f64)
                .sum()
        };
        let mut out = vec![0f32; n * 32];
        let mut lse = vec![0f32; dm.batch * dm.heads * dm.seq];
        forward(&q, &k, &v, dm, &mut out, &mut lse);
        let (mut dq, mut dk, mut dv) = (vec![0f32; n * 32], vec![0f32; n * 16], vec![0f32; n * 16]);
        backward(&q, &k, &v, &lse, &w, dm, &mut dq, &mut dk, &mut dv);
        let h = 1e-2f32;
        // a spread of entries of each input
        for (which, grad) in [(0, &dq), (1, &dk), (2, &dv)] {
            for i in (0..grad.len()).step_by(97) {
                let (mut a, mut b, mut c) = (q.clone(), k.clone(), v.clone());
                let x = match which {
                    0 => &mut a,
                    1 => &mut b,
                    _ => &mut c,
                };
                x[i] += h;
                let up = loss(&a, &b, &c);
                let x = match which {
                    0 => &mut a,
                    1 => &mut b,
                    _ => &mut c,
                };
                x[i] -= 2.0 * h;
                let down = loss(&a, &b, &c);
                let want = (up - down) / (2.0 * h as f64);
                assert!(
                    (grad[i] as f64 - want).abs() < 2e-3 * (1.0 + want.abs()),
                    "input {which} [{i}]: {} vs {want}",
                    grad[i]
                );
            }
        }
    }
}
