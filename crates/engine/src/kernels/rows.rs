//! Row-wise kernels of the decoder layer over `[rows, width]` f32 buffers, forward and
//! backward: RMSNorm, rotary embedding and SwiGLU. Each walks its rows in parallel chunks.

use rayon::prelude::*;

/// Rows per parallel task: enough work per task to hide the hand-off.
const ROWS: usize = 32;

/// `out = x / sqrt(mean(x²) + eps) · w` per row of width `w.len()`; `rstd` gets each row's
/// `1 / sqrt(mean(x²) + eps)` for the backward pass.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32], rstd: &mut [f32]) {
    let h = w.len();
    out.par_chunks_mut(ROWS * h)
        .zip(rstd.par_chunks_mut(ROWS))
        .zip(x.par_chunks(ROWS * h))
        .for_each(|((out, rstd), x)| {
            for ((o, r), x) in out.chunks_mut(h).zip(rstd.iter_mut()).zip(x.chunks(h)) {
                let ss: f32 = x.iter().map(|v| v * v).sum();
                *r = 1.0 / (ss / h as f32 + eps).sqrt();
                for ((o, x), w) in o.iter_mut().zip(x).zip(w) {
                    *o = x * *r * w;
                }
            }
        });
}

/// The input gradient of [`rms_norm`]: with `g = dy ∘ w`,
/// `dx (+)= rstd·g − x·rstd³·mean(g ∘ x)`.
pub fn rms_norm_backward(
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    rstd: &[f32],
    dx: &mut [f32],
    accumulate: bool,
) {
    let h = w.len();
    dx.par_chunks_mut(ROWS * h)
        .zip(dy.par_chunks(ROWS * h))
        .zip(x.par_chunks(ROWS * h))
        .zip(rstd.par_chunks(ROWS))
        .for_each(|(((dx, dy), x), rstd)| {
            for (((dx, dy), x), &r) in dx
                .chunks_mut(h)
                .zip(dy.chunks(h))
                .zip(x.chunks(h))
                .zip(rstd)
            {
                let m: f32 = dy
                    .iter()
                    .zip(w)
                    .zip(x)
                    .map(|((d, w), x)| d * w * x)
                    .sum::<f32>()
                    / h as f32;
                let k = r * r * r * m;
                for (((o, d), w), x) in dx.iter_mut().zip(dy).zip(w).zip(x) {
                    let v = r * d * w - x * k;
                    *o = if accumulate { *o + v } else { v };
                }
            }
        });
}

/// The weight gradient of [`rms_norm`]: `dw[j] += Σ_rows dy[r, j] · x[r, j] · rstd[r]`.
pub fn rms_norm_weight_grad(dy: &[f32], x: &[f32], rstd: &[f32], dw: &mut [f32]) {
    let h = dw.len();
    let parts: Vec<Vec<f32>> = dy
        .par_chunks(ROWS * h)
        .zip(x.par_chunks(ROWS * h))
        .zip(rstd.par_chunks(ROWS))
        .map(|((dy, x), rstd)| {
            let mut acc = vec![0f32; h];
            for ((dy, x), &r) in dy.chunks(h).zip(x.chunks(h)).zip(rstd) {
                for ((a, d), x) in acc.iter_mut().zip(dy).zip(x) {
                    *a += d * x * r;
                }
            }
            acc
        })
        .collect();
    for p in parts {
        dw.iter_mut().zip(&p).for_each(|(w, v)| *w += v);
    }
}

/// Column sums `db[j] += Σ_rows dy[r, j]` (a bias's gradient).
pub fn column_sums(dy: &[f32], db: &mut [f32]) {
    let h = db.len();
    for row in dy.chunks(h) {
        db.iter_mut().zip(row).for_each(|(b, d)| *b += d);
    }
}

/// Rotary embedding in place, HF's rotate-half layout, on rows `[n, heads · d]` whose row
/// `i` sits at position `i % seq`; `cos`, `sin` are `[seq, d / 2]`. `inverse` rotates by
/// `−θ`: the backward pass (a rotation's transpose is its inverse).
#[allow(clippy::too_many_arguments)]
pub fn rope(
    x: &mut [f32],
    heads: usize,
    d: usize,
    seq: usize,
    cos: &[f32],
    sin: &[f32],
    inverse: bool,
) {
    let half = d / 2;
    let width = heads * d;
    let sign = if inverse { -1.0 } else { 1.0 };
    x.par_chunks_mut(ROWS * width)
        .enumerate()
        .for_each(|(c, rows)| {
            for (r, row) in rows.chunks_mut(width).enumerate() {
                let t = (c * ROWS + r) % seq;
                let (cs, sn) = (
                    &cos[t * half..(t + 1) * half],
                    &sin[t * half..(t + 1) * half],
                );
                for head in row.chunks_mut(d) {
                    let (x1, x2) = head.split_at_mut(half);
                    for i in 0..half {
                        let (a, b) = (x1[i], x2[i]);
                        let s = sign * sn[i];
                        x1[i] = a * cs[i] - b * s;
                        x2[i] = b * cs[i] + a * s;
                    }
                }
            }
        });
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// `out = silu(gate) · up`.
pub fn swiglu(gate: &[f32], up: &[f32], out: &mut [f32]) {
    const CHUNK: usize = 1 << 14;
    out.par_chunks_mut(CHUNK)
        .zip(gate.par_chunks(CHUNK))
        .zip(up.par_chunks(CHUNK))
        .for_each(|((o, g), u)| {
            for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
                *o = g * sigmoid(g) * u;
            }
        });
}

/// The gradients of [`swiglu`]: `dgate = dy·up·σ(g)(1 + g(1 − σ(g)))`, `dup = dy·silu(g)`,
/// written over `gate` and `up` (which are not needed after).
pub fn swiglu_backward(dy: &[f32], gate: &mut [f32], up: &mut [f32]) {
    const CHUNK: usize = 1 << 14;
    gate.par_chunks_mut(CHUNK)
        .zip(up.par_chunks_mut(CHUNK))
        .zip(dy.par_chunks(CHUNK))
        .for_each(|((g, u), dy)| {
            for ((g, u), &d) in g.iter_mut().zip(u.iter_mut()).zip(dy) {
                let s = sigmoid(*g);
                let silu = *g * s;
                let dg = d * *u * s * (1.0 + *g * (1.0 - s));
                *u = d * silu;
                *g = dg;
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Central differences of a scalar function of one buffer.
    fn numeric(f: &dyn Fn(&[f32]) -> f64, x: &[f32]) -> Vec<f64> {
        let mut x = x.to_vec();
        (0..x.len())
            .map(|i| {
                let keep = x[i];
                let h = 1e-2;
                x[i] = keep + h;
                let up = f(&x);
                x[i] = keep - h;
                let down = f(&x);
                x[i] = keep;
                (up - down) / (2.0 * h as f64)
            })
            .collect()
    }

    fn close(a: &[f32], b: &[f64], tol: f64) {
        for (i, (a, b)) in a.iter().zip(b).enumerate() {
            assert!(
                (*a as f64 - b).abs() <= tol * (1.0 + b.abs()),
                "[{i}] {a} vs {b}"
            );
        }
    }

    /// Rows `x`, a weight `w` and an output gradient `dy` for the norm tests.
    fn norm_fixture(n: usize, h: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let x = (0..n * h)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) / 4.0)
            .collect();
        let w = (0..h).map(|i| 0.5 + i as f32 / 8.0).collect();
        let dy = (0..n * h)
            .map(|i| ((i * 5 % 7) as f32 - 3.0) / 3.0)
            .collect();
        (x, w, dy)
    }

    #[test]
    fn rms_norm_backward_matches_differences() {
        let (n, h) = (3, 8);
        let (x, w, dy) = norm_fixture(n, h);
        let loss = |x: &[f32]| {
            let (mut out, mut r) = (vec![0.0; n * h], vec![0.0; n]);
            rms_norm(x, &w, 1e-5, &mut out, &mut r);
            out.iter().zip(&dy).map(|(a, b)| (a * b) as f64).sum()
        };
        let (mut out, mut r) = (vec![0.0; n * h], vec![0.0; n]);
        rms_norm(&x, &w, 1e-5, &mut out, &mut r);
        let mut dx = vec![1.0; n * h];
        rms_norm_backward(&dy, &x, &w, &r, &mut dx, false);
        close(&dx, &numeric(&loss, &x), 2e-3);
    }

    #[test]
    fn rms_norm_weight_grad_matches_differences() {
        let (n, h) = (40, 8);
        let (x, w, dy) = norm_fixture(n, h);
        let loss = |w: &[f32]| {
            let (mut out, mut r) = (vec![0.0; n * h], vec![0.0; n]);
            rms_norm(&x, w, 1e-5, &mut out, &mut r);
            out.iter().zip(&dy).map(|(a, b)| (a * b) as f64).sum()
        };
        let (mut out, mut r) = (vec![0.0; n * h], vec![0.0; n]);
        rms_norm(&x, &w, 1e-5, &mut out, &mut r);
        let mut dw = vec![0.0; h];
        rms_norm_weight_grad(&dy, &x, &r, &mut dw);
        close(&dw, &numeric(&loss, &w), 2e-3);
    }

    #[test]
    fn rope_inverse_undoes_it_and_matches_rotate_half() {
        let (heads, d, seq) = (2, 4, 3);
        let n = 2 * seq;
        let cos: Vec<f32> = (0..seq * 2).map(|i| (i as f32 * 0.3).cos()).collect();
        let sin: Vec<f32> = (0..seq * 2).map(|i| (i as f32 * 0.3).sin()).collect();
        let x: Vec<f32> = (0..n * heads * d).map(|i| i as f32 / 10.0 - 1.0).collect();
        let mut y = x.clone();
        rope(&mut y, heads, d, seq, &cos, &sin, false);
        // row 4 is position 1: its first head's dims 0 and 2 rotate by angle index 2
        let (a, b) = (x[4 * 8], x[4 * 8 + 2]);
        assert!((y[4 * 8] - (a * cos[2] - b * sin[2])).abs() < 1e-6);
        assert!((y[4 * 8 + 2] - (b * cos[2] + a * sin[2])).abs() < 1e-6);
        rope(&mut y, heads, d, seq, &cos, &sin, true);
        close(&y, &x.iter().map(|&v| v as f64).collect::<Vec<_>>(), 1e-5);
    }

    #[test]
    fn swiglu_backward_matches_differences() {
        let g: Vec<f32> = (0..10).map(|i| i as f32 / 3.0 - 1.5).collect();
        let u: Vec<f32> = (0..10).map(|i| 1.0 - i as f32 / 7.0).collect();
        let dy: Vec<f32> = (0..10).map(|i| (i % 3) as f32 - 1.0).collect();
        let loss_g = |g: &[f32]| {
            let mut o = vec![0.0; 10];
            swiglu(g, &u, &mut o);
            o.iter().zip(&dy).map(|(a, b)| (a * b) as f64).sum()
        };
        let loss_u = |u: &[f32]| {
            let mut o = vec![0.0; 10];
            swiglu(&g, u, &mut o);
            o.iter().zip(&dy).map(|(a, b)| (a * b) as f64).sum()
        };
        let (mut dg, mut du) = (g.clone(), u.clone());
        swiglu_backward(&dy, &mut dg, &mut du);
        close(&dg, &numeric(&loss_g, &g), 2e-3);
        close(&du, &numeric(&loss_u, &u), 2e-3);
    }
}
