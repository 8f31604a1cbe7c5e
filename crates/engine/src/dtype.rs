//! Which dtype a computation runs in: the half-precision storage types and the wider type
//! their sums, norms and optimizer state are kept in.

use candle_core::DType;

/// bf16 and f16: the dtypes that get an f32 master copy and f32 gradients.
pub fn is_half(dtype: DType) -> bool {
    matches!(dtype, DType::BF16 | DType::F16)
}

/// The dtype sums and norms are taken in: f32 for bf16 / f16, the dtype itself otherwise
/// (f64 stays f64 for the gradient checks).
pub fn wide_dtype(dtype: DType) -> DType {
    if is_half(dtype) {
        DType::F32
    } else {
        dtype
    }
}
