//! Hand-written CPU kernels for the training step, over plain `f32` slices: the blocked
//! matrix multiply every large product goes through, and the glue that runs it on candle
//! tensors.

pub mod attention;
pub mod dropout;
pub mod exp;
pub mod gemm;
pub mod gemv;
pub mod nf4;
pub mod pool;
pub mod rows;
pub mod xent;

use candle_core::{CpuStorage, Layout, Result, Shape, Storage, Tensor};
use gemm::{Mat, Operand};

/// Run `f` on the `f32` values of a CPU tensor and its layout.
pub fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32], &Layout) -> Result<R>) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(CpuStorage::F32(v)) => f(v, layout),
        _ => candle_core::bail!("kernel: expected an f32 CPU tensor, got {:?}", t.dtype()),
    }
}

/// A 2-D layout as a strided view into its storage.
pub fn view<'a>(data: &'a [f32], l: &Layout) -> Result<Mat<'a>> {
    let (rows, cols) = l.shape().dims2()?;
    let st = l.stride();
    Ok(Mat {
        data: &data[l.start_offset()..],
        rows,
        cols,
        rs: st[0],
        cs: st[1],
    })
}

/// `x · B` for a contiguous `x` `[.., k]` held as `data`/`xl` and a `[k, n]` operand `b`
/// (a strided view or NF4 codes): every leading dimension of `x` becomes one row.
pub fn matmul_rows(data: &[f32], xl: &Layout, b: Operand) -> Result<(CpuStorage, Shape)> {
    let dims = xl.shape().dims();
    let k = *dims.last().unwrap_or(&0);
    let (start, end) = xl
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("kernel matmul: input not contiguous".into()))?;
    let m = (end - start) / k.max(1);
    let x = Mat::new(&data[start..end], m, k);
    let (bk, n) = b.dims();
    if bk != k {
        candle_core::bail!("kernel matmul: input has {k} features, the weight {bk}");
    }
    let mut out = vec![0f32; m * n];
    gemm::matmul(&mut out, n, x, b, false);
    let mut shape = dims.to_vec();
    *shape.last_mut().unwrap_or(&mut 0) = n;
    Ok((CpuStorage::F32(out), Shape::from(shape)))
}

/// [`matmul_rows`] on a tensor `x` (f32 on the CPU). Records no gradient.
pub fn matmul_tensor(x: &Tensor, b: Operand) -> Result<Tensor> {
    let x = x.contiguous()?;
    let (storage, shape) = with_f32(&x, |d, l| matmul_rows(d, l, b))?;
    let CpuStorage::F32(v) = storage else {
        unreachable!("matmul_rows returns f32")
    };
    Tensor::from_vec(v, shape, x.device())
}
