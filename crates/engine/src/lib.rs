//! The compute engine: everything that does tensor math.
//!
//! Synchronous by design (candle is), with no database, network or UI: the studio runs it on
//! its own thread and listens to its events.

pub mod config;
pub mod device;
pub mod dtype;
pub mod estimate;
pub mod generate;
pub mod kernels;
pub mod linear;
pub mod merge;
pub mod methods;
pub mod model;
pub mod ops;
pub mod optim;
pub mod params;
pub mod quant;
pub mod rope;
pub mod setting;
pub mod soup;
pub mod targets;
pub mod train;

pub use config::{MethodKind, ObjectiveKind, Schedule, TrainConfig};
pub use device::{detect_devices, DeviceInfo, DeviceKind};
pub use generate::{generate, generate_while, FinishReason, Generation, SamplingParams};
pub use model::{DecoderModel, KvCache};
pub use ops::Ops;
pub use train::{train, RunStatus, Summary, TrainData, TrainError, TrainEvent, TrainSpec};

use candle_core::{DType, Device};
use whetstone_formats::{FileError, ModelSource};

/// Open a model (HF folder or GGUF file) and build it on `device` in `dtype`.
pub fn load_model(
    path: &std::path::Path,
    device: &Device,
    dtype: DType,
) -> Result<(ModelSource, DecoderModel), FileError> {
    load_model_with(path, device, dtype, false)
}

/// [`load_model`]; with `nf4`, every decoder linear is stored as NF4 the moment it is read
/// (QLoRA), so the full-precision base never exists in memory at once.
pub fn load_model_with(
    path: &std::path::Path,
    device: &Device,
    dtype: DType,
    nf4: bool,
) -> Result<(ModelSource, DecoderModel), FileError> {
    let source = ModelSource::open(path)?;
    let mut quantized = model::Quantized::new();
    let mut hook = |name: &str, t: candle_core::Tensor| {
        if nf4 && name.starts_with("model.layers.") && name.ends_with("_proj.weight") {
            quantized.insert(name.to_string(), quant::Nf4Tensor::quantize(&t)?);
            Ok(None)
        } else {
            Ok(Some(t))
        }
    };
    let weights = source.load_weights_with(device, dtype, &mut hook)?;
    let model = DecoderModel::new_with(&source.config, weights, quantized, dtype, device)?;
    Ok((source, model))
}
pub use device::candle_device;
