//! A trainable parameter: its stable name, its variable and its optimizer group; and loading
//! saved values back into a set of them.

use candle_core::{Result, Tensor, Var};
use std::collections::HashMap;

#[derive(Debug, Clone)]
pub struct Param {
    /// Stable name (HF / PEFT naming), the key in checkpoints.
    pub name: String,
    pub var: Var,
    /// Learning-rate multiplier of its group.
    pub lr_scale: f64,
    pub weight_decay: f64,
}

/// Overwrite trainable parameters from named tensors (a checkpoint or an existing adapter).
pub fn load_params(params: &[Param], tensors: &HashMap<String, Tensor>) -> Result<()> {
    for p in params {
        let t = tensors.get(&p.name).ok_or_else(|| {
            candle_core::Error::Msg(format!("the checkpoint has no tensor `{}`", p.name))
        })?;
        if t.dims() != p.var.dims() {
            candle_core::bail!(
                "`{}` has shape {:?}, the model needs {:?}",
                p.name,
                t.dims(),
                p.var.dims()
            );
        }
        p.var
            .set(&t.to_device(p.var.device())?.to_dtype(p.var.dtype())?)?;
    }
    Ok(())
}
