//! Fused output projection and cross-entropy: the logits of a block of rows are computed,
//! turned into the loss and its gradient, and projected back to the hidden size before the
//! next block, so the `[rows, vocab]` logits of a whole batch never exist (Liger's fused
//! linear cross-entropy makes the same trade).

use super::gemm::{matmul, Mat};
use rayon::prelude::*;

/// Rows per block: 256 × a 49k vocabulary is 50 MB of logits at a time. Each block packs
/// the whole output weight twice (forward and backward), so fewer, larger blocks are faster.
const BLOCK: usize = 256;

/// What one pass over the rows produced.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct XentSums {
    /// `Σ −log p(target)` over the rows.
    pub loss: f64,
    /// Rows whose most likely token is the target.
    pub hits: f64,
}

/// How much each row's loss weighs in the gradient.
#[derive(Debug, Clone, Copy)]
pub enum Scale<'a> {
    /// The same for every row (a mean over the step's targets).
    All(f32),
    /// One per row (a preference objective's `∂loss / ∂nll` of each target).
    Each(&'a [f32]),
}

impl Scale<'_> {
    fn at(&self, row: usize) -> f32 {
        match self {
            Scale::All(s) => *s,
            Scale::Each(v) => v[row],
        }
    }
}

/// For hidden rows `h` `[n, hidden]`, output weight `w` `[vocab, hidden]` and `targets`:
/// the summed loss and hits, and with `dh` the gradient of `Σ loss_row · scale_row` with
/// respect to `h` (overwritten), with `dw` the one with respect to `w` (added to a row-major
/// `[vocab, hidden]` buffer).
pub fn linear_cross_entropy(
    h: &[f32],
    w: Mat,
    targets: &[u32],
    scale: Scale,
    dh: Option<&mut [f32]>,
    dw: Option<&mut [f32]>,
) -> XentSums {
    pass(h, w, targets, scale, dh, dw, None)
}

/// Each row's `−log p(target)` and the count of rows whose most likely token is the target,
/// no gradient (evaluation, and the first pass of a preference objective, whose row scales
/// depend on these).
pub fn target_nll(h: &[f32], w: Mat, targets: &[u32]) -> (Vec<f64>, f64) {
    let mut out = vec![0.0; targets.len()];
    let sums = pass(h, w, targets, Scale::All(0.0), None, None, Some(&mut out));
    (out, sums.hits)
}

fn pass(
    h: &[f32],
    w: Mat,
    targets: &[u32],
    scale: Scale,
    mut dh: Option<&mut [f32]>,
    mut dw: Option<&mut [f32]>,
    mut nll_out: Option<&mut [f64]>,
) -> XentSums {
    let (vocab, hidden) = (w.rows, w.cols);
    let n = targets.len();
    let mut logits = vec![0f32; BLOCK.min(n) * vocab];
    let mut sums = XentSums::default();
    for r0 in (0..n).step_by(BLOCK) {
        let rows = BLOCK.min(n - r0);
        let hb = Mat::new(&h[r0 * hidden..(r0 + rows) * hidden], rows, hidden);
        let lg = &mut logits[..rows * vocab];
        matmul(lg, vocab, hb, w.t(), false);
        let tg = &targets[r0..r0 + rows];
        let grads = dh.is_some() || dw.is_some();
        let per_row: Vec<(f64, bool)> = lg
            .par_chunks_mut(vocab)
            .zip(tg)
            .enumerate()
            .map(|(i, (row, &t))| {
                let t = t as usize;
                let (mut max, mut arg) = (f32::NEG_INFINITY, 0);
                for (j, &v) in row.iter().enumerate() {
                    if v > max {
                        max = v;
                        arg = j;
                    }
                }
                let target = row[t];
                // the exponentials stay in the row: one exp per logit
                let sum = super::exp::exp_shifted(row, max);
                let lse = max + sum.ln();
                let nll = (lse - target) as f64;
                // hits count the first maximum, as argmax does
                let hit = arg == t;
                if grads {
                    let s = scale.at(r0 + i);
                    let k = s / sum;
                    for v in row.iter_mut() {
                        *v *= k;
                    }
                    row[t] -= s;
                }
                (nll, hit)
            })
            .collect();
        for (i, (nll, hit)) in per_row.into_iter().enumerate() {
            sums.loss += nll;
            sums.hits += hit as u8 as f64;
            if let Some(out) = nll_out.as_deref_mut() {
                out[r0 + i] = nll;
            }
        }
        if let Some(dh) = dh.as_deref_mut() {
            let out = &mut dh[r0 * hidden..(r0 + rows) * hidden];
            matmul(out, hidden, Mat::new(lg, rows, vocab), w, false);
        }
        if let Some(dw) = dw.as_deref_mut() {
            matmul(dw, hidden, Mat::new(lg, rows, vocab).t(), hb, true);
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_and_gradient_match_the_plain_formula() {
        let (n, hidden, vocab) = (300, 6, 11);
        let h: Vec<f32> = (0..n * hidden)
            .map(|i| ((i * 13 % 17) as f32 - 8.0) / 9.0)
            .collect();
        let w: Vec<f32> = (0..vocab * hidden)
            .map(|i| ((i * 7 % 5) as f32 - 2.0) / 3.0)
            .collect();
        let targets: Vec<u32> = (0..n).map(|i| (i * 3 % vocab) as u32).collect();
        let mut dh = vec![0f32; n * hidden];
        let mut dw = vec![0f32; vocab * hidden];
        // a scale per row, as a preference objective gives them
        let scales: Vec<f32> = (0..n).map(|i| 0.5 + 0.01 * (i % 7) as f32).collect();
        let got = linear_cross_entropy(
            &h,
            Mat::new(&w, vocab, hidden),
            &targets,
            Scale::Each(&scales),
            Some(&mut dh),
            Some(&mut dw),
        );
        let (nll, nll_hits) = target_nll(&h, Mat::new(&w, vocab, hidden), &targets);
        let mut want_dw = vec![0f64; vocab * hidden];
        let (mut loss, mut hits) = (0f64, 0f64);
        for i in 0..n {
            let z: Vec<f64> = (0..vocab)
                .map(|v| {
                    (0..hidden)
                        .map(|e| (h[i * hidden + e] * w[v * hidden + e]) as f64)
                        .sum()
                })
                .collect();
            let m = z.iter().copied().fold(f64::MIN, f64::max);
            let lse = m + z.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
            let t = targets[i] as usize;
            loss += lse - z[t];
            assert!((nll[i] - (lse - z[t])).abs() < 1e-4, "nll[{i}]");
            let s = scales[i] as f64;
            let arg = z.iter().position(|&x| x == m).unwrap();
            for v in 0..vocab {
                let g = ((z[v] - lse).exp() - (v == t) as u8 as f64) * s;
                for e in 0..hidden {
                    want_dw[v * hidden + e] += g * h[i * hidden + e] as f64;
                }
            }
            hits += (arg == t) as u8 as f64;
            for e in 0..hidden {
                let g: f64 = (0..vocab)
                    .map(|v| {
                        ((z[v] - lse).exp() - (v == t) as u8 as f64) * w[v * hidden + e] as f64
                    })
                    .sum::<f64>()
                    * s;
                assert!((dh[i * hidden + e] as f64 - g).abs() < 1e-5, "dh[{i},{e}]");
            }
        }
        assert!(
            (got.loss - loss).abs() < 1e-3 * loss,
            "{} vs {loss}",
            got.loss
        );
        assert_eq!((got.hits, nll_hits), (hits, hits));
        for (g, w) in dw.iter().zip(&want_dw) {
            assert!((*g as f64 - w).abs() < 1e-4, "dw {g} vs {w}");
        }
    }
}
