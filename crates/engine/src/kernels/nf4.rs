//! NF4 weights read a run of values at a time: the frozen 4-bit base of QLoRA dequantized
//! straight into the gemm's packed panels ([`super::gemm::Operand::Nf4`]), so a training
//! step never holds a whole f32 copy of a quantized weight. The storage format (levels,
//! block maxima, double quantization) is described in [`crate::quant`], which owns it.

/// Values per absmax block.
pub const BLOCK: usize = 64;
/// Block maxima per f32 scale (double quantization).
pub const SCALE_BLOCK: usize = 256;

/// The 16 NormalFloat-4 levels (QLoRA appendix E; the values bitsandbytes uses).
pub const NF4_LEVELS: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// A row-major `[rows, cols]` NF4 matrix over its raw storage, seen as is or transposed.
#[derive(Debug, Clone, Copy)]
pub struct Nf4Mat<'a> {
    /// Two codes per byte, the first value in the high nibble.
    pub codes: &'a [u8],
    /// One byte per block (`q + 128`).
    pub absmax_q: &'a [u8],
    /// One f32 per group of [`SCALE_BLOCK`] blocks.
    pub scales: &'a [f32],
    pub mean: f32,
    /// The stored matrix's shape.
    pub rows: usize,
    pub cols: usize,
    /// Whether the view is the transpose of the stored matrix.
    pub transposed: bool,
}

impl<'a> Nf4Mat<'a> {
    /// The transpose (no copy).
    pub fn t(self) -> Self {
        Self {
            transposed: !self.transposed,
            ..self
        }
    }

    /// `(rows, cols)` of the view.
    pub fn dims(&self) -> (usize, usize) {
        if self.transposed {
            (self.cols, self.rows)
        } else {
            (self.rows, self.cols)
        }
    }

    /// Panics unless the storage holds every value of the stored matrix.
    pub fn check(&self) {
        let n = self.rows * self.cols;
        let blocks = n.div_ceil(BLOCK);
        assert!(
            self.codes.len() * 2 >= n
                && self.absmax_q.len() >= blocks
                && self.scales.len() >= blocks.div_ceil(SCALE_BLOCK),
            "nf4: storage of {} codes, {} maxima, {} scales is too small for [{}, {}]",
            self.codes.len() * 2,
            self.absmax_q.len(),
            self.scales.len(),
            self.rows,
            self.cols
        );
    }

    /// The dequantized maximum of block `b`.
    fn absmax(&self, b: usize) -> f32 {
        (self.absmax_q[b] as f32 - 128.0) * self.scales[b / SCALE_BLOCK] + self.mean
    }

    /// Stored values `start .. start + out.len()` (row-major flat indices), dequantized.
    pub fn dequantize_run(&self, start: usize, out: &mut [f32]) {
        let mut i = 0;
        while i < out.len() {
            let b = (start + i) / BLOCK;
            let a = self.absmax(b);
            let end = ((b + 1) * BLOCK - start).min(out.len());
            for (j, o) in out[i..end].iter_mut().enumerate() {
                let f = start + i + j;
                let byte = self.codes[f / 2];
                let code = if f.is_multiple_of(2) {
                    byte >> 4
                } else {
                    byte & 15
                };
                *o = NF4_LEVELS[code as usize] * a;
            }
            i = end;
        }
    }

    /// Pack view rows `p0 .. p0 + kb`, columns `j0 .. j0 + nb` into `nr`-column panels, each
    /// `kb × nr` (k-major), zero-padded: the layout [`super::gemm`]'s micro-kernels read.
    pub fn pack(&self, p0: usize, j0: usize, kb: usize, nb: usize, nr: usize, out: &mut [f32]) {
        let mut run = [0f32; 1024];
        for p in 0..nb.div_ceil(nr) {
            let panel = &mut out[p * kb * nr..(p + 1) * kb * nr];
            let c0 = j0 + p * nr;
            let w = nr.min(nb - p * nr);
            if self.transposed {
                // view column c is stored row c: one run of kb values per column
                for chunk in (0..kb).step_by(run.len()) {
                    let len = run.len().min(kb - chunk);
                    for j in 0..nr {
                        if j >= w {
                            for k in chunk..chunk + len {
                                panel[k * nr + j] = 0.0;
                            }
                            continue;
                        }
                        let start = (c0 + j) * self.cols + p0 + chunk;
                        self.dequantize_run(start, &mut run[..len]);
                        for (k, v) in run[..len].iter().enumerate() {
                            panel[(chunk + k) * nr + j] = *v;
                        }
                    }
                }
            } else {
                // view row k is stored row k: one run of w values per k
                for k in 0..kb {
                    let row = &mut panel[k * nr..(k + 1) * nr];
                    self.dequantize_run((p0 + k) * self.cols + c0, &mut row[..w]);
                    row[w..].fill(0.0);
                }
            }
        }
    }

    /// The stored matrix, dequantized, row-major `[rows, cols]` whatever the view's
    /// orientation (for the portable gemm path, which views it as [`Self::dims`] says).
    pub fn to_dense(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        self.dequantize_run(0, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::gemm::{matmul, Mat};
    use super::*;

    /// Arbitrary storage for a `[rows, cols]` matrix (every code and maximum byte occurs).
    fn storage(rows: usize, cols: usize) -> (Vec<u8>, Vec<u8>, Vec<f32>) {
        let blocks = (rows * cols).div_ceil(BLOCK);
        let codes = (0..(rows * cols).div_ceil(2))
            .map(|i| (i * 37 % 251) as u8)
            .collect();
        let absq = (0..blocks).map(|b| (b * 53 % 256) as u8).collect();
        let scales = (0..blocks.div_ceil(SCALE_BLOCK))
            .map(|g| 1e-4 * (g + 1) as f32)
            .collect();
        (codes, absq, scales)
    }

    /// Every value is its level times its block's maximum; packing equals dense packing, so
    /// a product over NF4 codes is bit for bit the product over the dequantized matrix, in
    /// both orientations, across block, panel and thread-split edges.
    #[test]
    fn products_over_codes_equal_products_over_the_dequantized_matrix() {
        for (rows, cols, m) in [(3, 5, 2), (70, 100, 13), (1536, 97, 40), (33, 600, 300)] {
            let (codes, absq, scales) = storage(rows, cols);
            let q = Nf4Mat {
                codes: &codes,
                absmax_q: &absq,
                scales: &scales,
                mean: 0.01,
                rows,
                cols,
                transposed: false,
            };
            let dense = q.to_dense();
            for (f, v) in dense.iter().enumerate() {
                let byte = codes[f / 2];
                let code = if f % 2 == 0 { byte >> 4 } else { byte & 15 };
                let b = f / BLOCK;
                let a = (absq[b] as f32 - 128.0) * scales[b / SCALE_BLOCK] + 0.01;
                assert_eq!(*v, NF4_LEVELS[code as usize] * a, "value {f}");
            }
            assert_eq!(q.t().to_dense(), dense, "storage order in either view");
            // x·Wᵀ (the forward) and dy·W (the input gradient)
            let x: Vec<f32> = (0..m * cols).map(|i| (i % 7) as f32 - 3.0).collect();
            let (mut want, mut got) = (vec![0f32; m * rows], vec![1f32; m * rows]);
            matmul(
                &mut want,
                rows,
                Mat::new(&x, m, cols),
                Mat::new(&dense, rows, cols).t(),
                false,
            );
            matmul(&mut got, rows, Mat::new(&x, m, cols), q.t(), false);
            assert_eq!(got, want, "x·Wᵀ for [{rows}, {cols}]");
            let dy: Vec<f32> = (0..m * rows).map(|i| (i % 5) as f32 - 2.0).collect();
            let (mut want, mut got) = (vec![0.5f32; m * cols], vec![0.5f32; m * cols]);
            matmul(
                &mut want,
                cols,
                Mat::new(&dy, m, rows),
                Mat::new(&dense, rows, cols),
                true,
            );
            matmul(&mut got, cols, Mat::new(&dy, m, rows), q, true);
            assert_eq!(got, want, "dy·W for [{rows}, {cols}]");
        }
    }

    #[test]
    #[should_panic(expected = "too small")]
    fn short_storage_is_refused() {
        let (codes, absq, scales) = storage(4, 64);
        let q = Nf4Mat {
            codes: &codes,
            absmax_q: &absq,
            scales: &scales,
            mean: 0.0,
            rows: 5,
            cols: 64,
            transposed: false,
        };
        let mut c = vec![0f32; 5];
        matmul(&mut c, 5, Mat::new(&[0.0; 64], 1, 64), q.t(), false);
    }
}
