//! The compute engine: everything that does tensor math.
//!
//! Synchronous by design (candle is), with no database, network or UI: the studio runs it on
//! its own thread and listens to its events.

pub mod config;
pub mod device;
pub mod generate;
pub mod methods;
pub mod model;
pub mod ops;
pub mod optim;
pub mod trainer;

pub use config::{MethodKind, Schedule, TrainConfig};
pub use device::{detect_devices, DeviceInfo, DeviceKind};
pub use generate::{generate, FinishReason, Generation, SamplingParams};
pub use model::{DecoderModel, KvCache};
pub use ops::Ops;
pub use trainer::{train, RunStatus, Summary, TrainData, TrainError, TrainEvent, TrainSpec};

use candle_core::{DType, Device};
use whetstone_formats::{FileError, ModelSource};

/// Open a model (HF folder or GGUF file) and build it on `device` in `dtype`.
pub fn load_model(
    path: &std::path::Path,
    device: &Device,
    dtype: DType,
) -> Result<(ModelSource, DecoderModel), FileError> {
    let source = ModelSource::open(path)?;
    let weights = source.load_weights(device, dtype)?;
    let model = DecoderModel::new(&source.config, weights, dtype, device)?;
    Ok((source, model))
}
pub use device::candle_device;
