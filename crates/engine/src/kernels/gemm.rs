//! f32 matrix multiply for the CPU, `C (+)= A·B`, in the classic blocked layout (Goto / BLIS):
//! panels of `B` are packed into cache-sized buffers and a register-blocked micro-kernel runs
//! over them, broadcasting `A` from where it lies (only its edge tiles are packed). The kernel is picked once at run time: AVX-512 (12 × 32 tiles),
//! AVX2 + FMA (6 × 16), or the `gemm` crate candle uses everywhere else.
//!
//! Why our own: at the shapes of a small model's training step (1024 tokens × 576 features)
//! the `gemm` crate reaches about a third of this CPU's AVX-512 peak where PyTorch's MKL
//! reaches 95 % (`bench/matmul_torch.py` and `examples/bench_matmul.rs`), and it offers no
//! in-place accumulation into a strided output, which the explicit training path needs for
//! gradients. Operands are strided views, so transposes cost nothing; `accumulate` adds into
//! `C` instead of overwriting it (`beta = 1`).

use std::cell::RefCell;
use std::sync::OnceLock;

use super::nf4::Nf4Mat;

/// A read-only strided matrix: element `(i, j)` is `data[i·rs + j·cs]`.
#[derive(Debug, Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major `[rows, cols]` matrix.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    fn check(&self, what: &str) {
        if self.rows > 0 && self.cols > 0 {
            let last = (self.rows - 1) * self.rs + (self.cols - 1) * self.cs;
            assert!(
                last < self.data.len(),
                "gemm: {what} view [{}, {}] (strides {}, {}) overruns its {} elements",
                self.rows,
                self.cols,
                self.rs,
                self.cs,
                self.data.len()
            );
        }
    }
}

/// The right operand of a product: read only through packing, so it may be stored in any
/// format a panel can be unpacked from.
#[derive(Debug, Clone, Copy)]
pub enum Operand<'a> {
    Dense(Mat<'a>),
    /// NF4 codes, dequantized one packed panel at a time (QLoRA's frozen weights).
    Nf4(Nf4Mat<'a>),
}

impl<'a> Operand<'a> {
    /// `(rows, cols)`.
    pub fn dims(&self) -> (usize, usize) {
        match self {
            Operand::Dense(m) => (m.rows, m.cols),
            Operand::Nf4(q) => q.dims(),
        }
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        match self {
            Operand::Dense(m) => Operand::Dense(m.t()),
            Operand::Nf4(q) => Operand::Nf4(q.t()),
        }
    }

    fn check(&self) {
        match self {
            Operand::Dense(m) => m.check("B"),
            Operand::Nf4(q) => q.check(),
        }
    }
}

impl<'a> From<Nf4Mat<'a>> for Operand<'a> {
    fn from(q: Nf4Mat<'a>) -> Self {
        Operand::Nf4(q)
    }
}

impl<'a> From<Mat<'a>> for Operand<'a> {
    fn from(m: Mat<'a>) -> Self {
        Operand::Dense(m)
    }
}

/// The kernel this CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    Avx512,
    Avx2,
    /// The `gemm` crate (NEON, or x86 without AVX2).
    Portable,
}

/// The kernel picked for this CPU (`WHETSTONE_GEMM_KERNEL=portable|avx2` forces a lesser one,
/// for tests and benchmarks).
pub fn kernel() -> Kernel {
    static K: OnceLock<Kernel> = OnceLock::new();
    *K.get_or_init(|| {
        let forced = std::env::var("WHETSTONE_GEMM_KERNEL").ok();
        let best = detect();
        match forced.as_deref() {
            Some("portable") => Kernel::Portable,
            Some("avx2") if best != Kernel::Portable => Kernel::Avx2,
            _ => best,
        }
    })
}

fn detect() -> Kernel {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Kernel::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Kernel::Avx2;
        }
    }
    Kernel::Portable
}

/// `C = A·B`, or `C += A·B` with `accumulate`. `C` is row-major `[a.rows, b.cols]` with row
/// stride `ldc` (≥ `b.cols`). Large products are split over the rayon pool's threads.
pub fn matmul<'b>(c: &mut [f32], ldc: usize, a: Mat, b: impl Into<Operand<'b>>, accumulate: bool) {
    matmul_threads(
        c,
        ldc,
        a,
        b.into(),
        accumulate,
        rayon::current_num_threads(),
    );
}

/// [`matmul`] on the calling thread alone (for work that is already split over threads).
pub fn matmul_serial<'b>(
    c: &mut [f32],
    ldc: usize,
    a: Mat,
    b: impl Into<Operand<'b>>,
    accumulate: bool,
) {
    matmul_threads(c, ldc, a, b.into(), accumulate, 1);
}

fn matmul_threads(c: &mut [f32], ldc: usize, a: Mat, b: Operand, accumulate: bool, threads: usize) {
    let (m, k) = (a.rows, a.cols);
    let (bk, n) = b.dims();
    assert_eq!(bk, k, "gemm: A is [{m}, {k}], B is [{bk}, {n}]");
    assert!(ldc >= n, "gemm: output row stride {ldc} < {n} columns");
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        c.len() >= (m - 1) * ldc + n,
        "gemm: output of {} elements is too small for [{m}, {n}] with row stride {ldc}",
        c.len()
    );
    a.check("A");
    b.check();
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                c[i * ldc..i * ldc + n].fill(0.0);
            }
        }
        return;
    }
    let out = Out {
        ptr: c.as_mut_ptr(),
        ldc,
    };
    let threads = threads.max(1);
    let flops = m * n * k;
    let kern = kernel();
    if kern == Kernel::Portable {
        let dense;
        let b = match b {
            Operand::Dense(b) => b,
            Operand::Nf4(q) => {
                // Dequantized in storage order and viewed like the dense weight it stands
                // for, so both give the gemm crate the same strides (and the same sums).
                dense = q.to_dense();
                let m = Mat::new(&dense, q.rows, q.cols);
                if q.transposed {
                    m.t()
                } else {
                    m
                }
            }
        };
        // SAFETY: the views and the output were bounds-checked above.
        unsafe { portable(out, a, b, accumulate, threads) };
        return;
    }
    if threads == 1 || flops < 1 << 20 {
        // SAFETY: as above; one caller owns the whole output.
        unsafe { blocked(kern, out, a, b, 0..m, 0..n, accumulate) };
        return;
    }
    // Split the output into one block of columns per thread (each packs only its part of
    // B and reads all of A in place, which costs no copy), or of rows when there are too
    // few columns to share.
    let (mr, nr) = tile(kern);
    let by_rows = n < threads * 2 * nr;
    let (len, unit) = if by_rows { (m, mr) } else { (n, nr) };
    let chunk = len.div_ceil(threads).div_ceil(unit) * unit;
    rayon::scope(|s| {
        for start in (0..len).step_by(chunk) {
            let end = (start + chunk).min(len);
            s.spawn(move |_| {
                let (rows, cols) = if by_rows {
                    (start..end, 0..n)
                } else {
                    (0..m, start..end)
                };
                // SAFETY: blocks write disjoint parts of the checked output.
                unsafe { blocked(kern, out, a, b, rows, cols, accumulate) };
            });
        }
    });
}

/// The output pointer, shared by the threads that write disjoint blocks of it.
#[derive(Clone, Copy)]
struct Out {
    ptr: *mut f32,
    ldc: usize,
}
// SAFETY: every thread writes only its own rows/columns.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

const KC: usize = 256;
const MC: usize = 144;
const NC: usize = 1024;

fn tile(k: Kernel) -> (usize, usize) {
    match k {
        Kernel::Avx512 => (12, 32),
        _ => (6, 16),
    }
}

/// A 64-byte aligned scratch buffer per thread, reused across calls.
struct Scratch {
    buf: Vec<f32>,
}

impl Scratch {
    fn slice(&mut self, len: usize) -> &mut [f32] {
        if self.buf.len() < len + 16 {
            self.buf = vec![0.0; len + 16];
        }
        let off = self.buf.as_ptr().align_offset(64).min(15);
        &mut self.buf[off..off + len]
    }
}

thread_local! {
    static PACK_A: RefCell<Scratch> = const { RefCell::new(Scratch { buf: Vec::new() }) };
    static PACK_B: RefCell<Scratch> = const { RefCell::new(Scratch { buf: Vec::new() }) };
}

/// Pack `A[i0.., p0..]` (`mb × kb`) into `MR`-row panels, each `kb × MR` (k-major), zero-padded.
///
/// # Safety
/// The block must lie inside `a` (checked once by [`matmul`]) and `out` must hold
/// `mb.div_ceil(mr) · kb · mr` values.
unsafe fn pack_a(a: &Mat, i0: usize, p0: usize, mb: usize, kb: usize, mr: usize, out: &mut [f32]) {
    let src = a.data.as_ptr();
    let dst = out.as_mut_ptr();
    for p in 0..mb.div_ceil(mr) {
        let panel = dst.add(p * kb * mr);
        let h = mr.min(mb - p * mr);
        if a.rs == 1 {
            // a transposed operand: each k's column of the panel is contiguous in A
            for k in 0..kb {
                let from = src.add((i0 + p * mr) + (p0 + k) * a.cs);
                let to = panel.add(k * mr);
                std::ptr::copy_nonoverlapping(from, to, h);
                for i in h..mr {
                    *to.add(i) = 0.0;
                }
            }
            continue;
        }
        for i in 0..mr {
            if i >= h {
                for k in 0..kb {
                    *panel.add(k * mr + i) = 0.0;
                }
                continue;
            }
            let row = src.add((i0 + p * mr + i) * a.rs + p0 * a.cs);
            for k in 0..kb {
                *panel.add(k * mr + i) = *row.add(k * a.cs);
            }
        }
    }
}

/// Pack `B[p0.., j0..]` (`kb × nb`) into `NR`-column panels, each `kb × NR`, zero-padded.
///
/// # Safety
/// As [`pack_a`], with `nb.div_ceil(nr) · kb · nr` values in `out`.
unsafe fn pack_b(
    b: &Operand,
    p0: usize,
    j0: usize,
    kb: usize,
    nb: usize,
    nr: usize,
    out: &mut [f32],
) {
    let b = match b {
        Operand::Dense(b) => b,
        Operand::Nf4(q) => return q.pack(p0, j0, kb, nb, nr, out),
    };
    let src = b.data.as_ptr();
    let dst = out.as_mut_ptr();
    for p in 0..nb.div_ceil(nr) {
        let panel = dst.add(p * kb * nr);
        let c0 = p * nr;
        let w = nr.min(nb - c0);
        if b.cs == 1 {
            for k in 0..kb {
                let from = src.add((p0 + k) * b.rs + j0 + c0);
                let to = panel.add(k * nr);
                std::ptr::copy_nonoverlapping(from, to, w);
                for j in w..nr {
                    *to.add(j) = 0.0;
                }
            }
        } else {
            for j in 0..nr {
                if j >= w {
                    for k in 0..kb {
                        *panel.add(k * nr + j) = 0.0;
                    }
                    continue;
                }
                let col = src.add(p0 * b.rs + (j0 + c0 + j) * b.cs);
                for k in 0..kb {
                    *panel.add(k * nr + j) = *col.add(k * b.rs);
                }
            }
        }
    }
}

/// `(kc, A, A's row and k strides, packed B, C, ldc, accumulate)`.
type MicroKernel = unsafe fn(usize, *const f32, (usize, usize), *const f32, *mut f32, usize, bool);

/// One thread's product for output rows `rows` and columns `cols`.
///
/// # Safety
/// `out` must hold the checked `[a.rows, b.cols]` output, and no other thread may write the
/// block `rows × cols` meanwhile; `kern` must be supported by this CPU.
unsafe fn blocked(
    kern: Kernel,
    out: Out,
    a: Mat,
    b: Operand,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    accumulate: bool,
) {
    let (mr, nr) = tile(kern);
    let (packed, in_place): (MicroKernel, MicroKernel) = match kern {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => (x86::kernel_12x32::<true>, x86::kernel_12x32::<false>),
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => (x86::kernel_6x16::<true>, x86::kernel_6x16::<false>),
        _ => unreachable!("the portable path does not block"),
    };
    let k = a.cols;
    // A is read where it lies (its rows, or for a transposed A its columns, stream through
    // L1 as the kernel broadcasts them), which measured faster here than packing it: only
    // an edge tile of fewer than MR rows is packed, so the kernel never reads past A
    PACK_B.with_borrow_mut(|pb| {
        PACK_A.with_borrow_mut(|pa| {
            let bp = pb.slice(KC * NC.div_ceil(nr) * nr);
            let ap = pa.slice(KC * MC.div_ceil(mr) * mr);
            let mut edge = [0f32; 12 * 32];
            for jc in cols.clone().step_by(NC) {
                let nb = NC.min(cols.end - jc);
                for pc in (0..k).step_by(KC) {
                    let kb = KC.min(k - pc);
                    pack_b(&b, pc, jc, kb, nb, nr, bp);
                    let acc = accumulate || pc > 0;
                    for ic in rows.clone().step_by(MC) {
                        let mb = MC.min(rows.end - ic);
                        for ir in 0..mb.div_ceil(mr) {
                            let h = mr.min(mb - ir * mr);
                            let (micro, apan, strides) = if h < mr {
                                pack_a(&a, ic + ir * mr, pc, h, kb, mr, ap);
                                (packed, ap.as_ptr(), (1, mr))
                            } else {
                                let at = a.data.as_ptr().add((ic + ir * mr) * a.rs + pc * a.cs);
                                (in_place, at, (a.rs, a.cs))
                            };
                            for jr in 0..nb.div_ceil(nr) {
                                let w = nr.min(nb - jr * nr);
                                let bpan = bp.as_ptr().add(jr * kb * nr);
                                let c = out.ptr.add((ic + ir * mr) * out.ldc + jc + jr * nr);
                                if h == mr && w == nr {
                                    micro(kb, apan, strides, bpan, c, out.ldc, acc);
                                } else {
                                    micro(kb, apan, strides, bpan, edge.as_mut_ptr(), nr, false);
                                    for i in 0..h {
                                        let row = c.add(i * out.ldc);
                                        for j in 0..w {
                                            let v = edge[i * nr + j];
                                            *row.add(j) = if acc { *row.add(j) + v } else { v };
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        })
    })
}

/// The `gemm` crate, for CPUs without AVX2.
///
/// # Safety
/// As [`blocked`], for the whole output.
unsafe fn portable(out: Out, a: Mat, b: Mat, accumulate: bool, threads: usize) {
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    gemm::gemm(
        a.rows,
        b.cols,
        a.cols,
        out.ptr,
        1,
        out.ldc as isize,
        accumulate,
        a.data.as_ptr(),
        a.cs as isize,
        a.rs as isize,
        b.data.as_ptr(),
        b.cs as isize,
        b.rs as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        par,
    )
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    // The kernels read through `wrapping_add` + `read_unaligned` so that no debug-build
    // pointer check sits in the inner loop (they would spill the accumulators).

    /// `C[12 × 32] (+)= A · Bp` over `kc` steps; `A[i, k]` is at `i·rs + k·ks` (packed:
    /// `PACKED`, strides 1 and 12), `Bp` is `kc × 32`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn kernel_12x32<const PACKED: bool>(
        kc: usize,
        ap: *const f32,
        (rs, ks): (usize, usize),
        bp: *const f32,
        c: *mut f32,
        ldc: usize,
        acc: bool,
    ) {
        let z = _mm512_setzero_ps();
        let mut r: [__m512; 24] = [z; 24];
        let (rs, ks) = if PACKED { (1, 12) } else { (rs, ks) };
        for k in 0..kc {
            let a = ap.wrapping_add(k * ks);
            let b = bp.wrapping_add(k * 32);
            let b0 = _mm512_loadu_ps(b);
            let b1 = _mm512_loadu_ps(b.wrapping_add(16));
            macro_rules! row {
                ($($i:literal)*) => {$(
                    let ai = _mm512_set1_ps(a.wrapping_add($i * rs).read_unaligned());
                    r[2 * $i] = _mm512_fmadd_ps(ai, b0, r[2 * $i]);
                    r[2 * $i + 1] = _mm512_fmadd_ps(ai, b1, r[2 * $i + 1]);
                )*};
            }
            row!(0 1 2 3 4 5 6 7 8 9 10 11);
        }
        macro_rules! store {
            ($($i:literal)*) => {$(
                let row = c.wrapping_add($i * ldc);
                let (mut v0, mut v1) = (r[2 * $i], r[2 * $i + 1]);
                if acc {
                    v0 = _mm512_add_ps(v0, _mm512_loadu_ps(row));
                    v1 = _mm512_add_ps(v1, _mm512_loadu_ps(row.wrapping_add(16)));
                }
                _mm512_storeu_ps(row, v0);
                _mm512_storeu_ps(row.wrapping_add(16), v1);
            )*};
        }
        store!(0 1 2 3 4 5 6 7 8 9 10 11);
    }

    /// `C[6 × 16] (+)= A · Bp` over `kc` steps, A strided as in [`kernel_12x32`].
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn kernel_6x16<const PACKED: bool>(
        kc: usize,
        ap: *const f32,
        (rs, ks): (usize, usize),
        bp: *const f32,
        c: *mut f32,
        ldc: usize,
        acc: bool,
    ) {
        let z = _mm256_setzero_ps();
        let mut r: [__m256; 12] = [z; 12];
        let (rs, ks) = if PACKED { (1, 6) } else { (rs, ks) };
        for k in 0..kc {
            let a = ap.wrapping_add(k * ks);
            let b = bp.wrapping_add(k * 16);
            let b0 = _mm256_loadu_ps(b);
            let b1 = _mm256_loadu_ps(b.wrapping_add(8));
            macro_rules! row {
                ($($i:literal)*) => {$(
                    let ai = _mm256_set1_ps(a.wrapping_add($i * rs).read_unaligned());
                    r[2 * $i] = _mm256_fmadd_ps(ai, b0, r[2 * $i]);
                    r[2 * $i + 1] = _mm256_fmadd_ps(ai, b1, r[2 * $i + 1]);
                )*};
            }
            row!(0 1 2 3 4 5);
        }
        macro_rules! store {
            ($($i:literal)*) => {$(
                let row = c.wrapping_add($i * ldc);
                let (mut v0, mut v1) = (r[2 * $i], r[2 * $i + 1]);
                if acc {
                    v0 = _mm256_add_ps(v0, _mm256_loadu_ps(row));
                    v1 = _mm256_add_ps(v1, _mm256_loadu_ps(row.wrapping_add(8)));
                }
                _mm256_storeu_ps(row, v0);
                _mm256_storeu_ps(row.wrapping_add(8), v1);
            )*};
        }
        store!(0 1 2 3 4 5);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &Mat, b: &Mat) -> Vec<f64> {
        let mut c = vec![0f64; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                for k in 0..a.cols {
                    c[i * b.cols + j] +=
                        a.data[i * a.rs + k * a.cs] as f64 * b.data[k * b.rs + j * b.cs] as f64;
                }
            }
        }
        c
    }

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// Every shape class (tiles, edges, several k blocks, thread splits), with plain and
    /// transposed operands, overwriting and accumulating, against an f64 triple loop.
    #[test]
    fn matches_naive_product() {
        let shapes = [
            (1, 1, 1),
            (5, 7, 3),
            (12, 32, 256),
            (13, 33, 257),
            (100, 70, 600),
            (300, 1030, 40),
            (7, 2000, 9),
            (160, 150, 513),
        ];
        for (m, n, k) in shapes {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let ad = data(m * k, (m + k) as u32);
                let bd = data(k * n, (n * 3 + k) as u32);
                let a = if ta {
                    Mat::new(&ad, k, m).t()
                } else {
                    Mat::new(&ad, m, k)
                };
                let b = if tb {
                    Mat::new(&bd, n, k).t()
                } else {
                    Mat::new(&bd, k, n)
                };
                let want = naive(&a, &b);
                let ldc = n + 3;
                let mut c = vec![7f32; m * ldc];
                matmul(&mut c, ldc, a, b, false);
                let mut c2 = vec![0.5f32; m * ldc];
                matmul(&mut c2, ldc, a, b, true);
                for i in 0..m {
                    for j in 0..n {
                        let w = want[i * n + j];
                        let tol = 1e-5 * (k as f64).sqrt() * 4.0 + 1e-6;
                        let got = c[i * ldc + j] as f64;
                        assert!(
                            (got - w).abs() <= tol,
                            "{m}x{n}x{k} {ta}{tb} ({i},{j}): {got} vs {w}"
                        );
                        let got = c2[i * ldc + j] as f64 - 0.5;
                        assert!((got - w).abs() <= tol, "accumulate {m}x{n}x{k} ({i},{j})");
                    }
                    for j in n..ldc {
                        assert_eq!(c[i * ldc + j], 7.0, "padding column written");
                    }
                }
            }
        }
    }

    #[test]
    fn empty_inner_dimension_zeroes_or_keeps() {
        let mut c = vec![3f32; 6];
        matmul(&mut c, 3, Mat::new(&[], 2, 0), Mat::new(&[], 0, 3), true);
        assert_eq!(c, vec![3.0; 6]);
        matmul(&mut c, 3, Mat::new(&[], 2, 0), Mat::new(&[], 0, 3), false);
        assert_eq!(c, vec![0.0; 6]);
    }

    #[test]
    #[should_panic(expected = "overruns")]
    fn short_view_is_refused() {
        let d = vec![0f32; 5];
        let mut c = vec![0f32; 4];
        matmul(&mut c, 2, Mat::new(&d, 2, 3), Mat::new(&d, 3, 2), false);
    }
}
