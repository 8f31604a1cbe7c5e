//! Folding a trained adapter into the base weights, for merged-model exports.
//!
//! Each method that only reshapes what a linear computes can be folded into that linear:
//! - LoRA (and LoRA+, QLoRA): `W' = W + s·B·A`.
//! - DoRA: `W' = m ⊙ (W + s·B·A) / ‖W + s·B·A‖`, the norm taken per output row, so the
//!   merged row has length `m` and the direction the adapter learned.
//! - (IA)3 on attention outputs (k, v): `y = l ⊙ (W·x + b)`, so `W' = diag(l)·W`, `b' = l ⊙ b`.
//! - (IA)3 on feed-forward inputs (down): `y = W·(l ⊙ x) + b`, so `W' = W·diag(l)`.
//! - Full, Freeze and BitFit already replaced the tensors they trained.
//!
//! Houlsby adapters (a non-linear bottleneck), prompt tuning and prefix tuning (extra
//! positions) change what the network computes in ways no weight of the base can hold: they
//! are refused with a message that says so.

use crate::linear::Linear;
use crate::methods::linears_mut;
use crate::model::DecoderModel;
use candle_core::{DType, Result, Tensor};

/// Why a model with its adapter cannot become a plain model of the base architecture, if
/// it cannot.
pub fn unmergeable(model: &DecoderModel) -> Option<&'static str> {
    if model.prompt.is_some() {
        Some("prompt tuning adds virtual tokens before the input; no base weight can hold them")
    } else if model.prefix.is_some() {
        Some("prefix tuning adds key/value positions to every layer; no base weight can hold them")
    } else if model.layers.iter().any(|l| l.adapters.is_some()) {
        Some(
            "Houlsby adapters add non-linear bottleneck layers the base architecture does not have",
        )
    } else {
        None
    }
}

/// The dense weight a linear computes with, adapter folded in; its bias likewise.
/// `dtype` is the model's (an NF4 weight dequantizes to f32).
pub fn merged_linear(lin: &Linear, dtype: DType) -> Result<(Tensor, Option<Tensor>)> {
    let w = lin.weight.dense()?.to_dtype(dtype)?;
    let bias = lin.bias.as_ref().map(Tensor::detach);
    match &lin.adapter {
        Some(a) => a.fold(w, bias),
        None => Ok((w, bias)),
    }
}

/// Fold every adapter into the base in place: afterwards the model has dense weights and
/// computes what it computed with the adapter. Refuses methods that cannot be folded.
pub fn merge_in_place(model: &mut DecoderModel) -> std::result::Result<(), String> {
    if let Some(why) = unmergeable(model) {
        return Err(why.to_string());
    }
    let dtype = model.dtype;
    for layer in &mut model.layers {
        for (_, lin) in linears_mut(layer) {
            let (w, b) = merged_linear(lin, dtype).map_err(|e| e.to_string())?;
            *lin = Linear::new(w, b);
        }
    }
    Ok(())
}

/// The model's tensors by their Hugging Face names, in file order (a merged model).
pub fn hf_tensors(model: &mut DecoderModel) -> Result<Vec<(String, Tensor)>> {
    let mut out = vec![];
    crate::methods::visit_mut(model, |name, t| {
        out.push((name.to_string(), t.detach()));
        Ok(())
    })?;
    Ok(out)
}

/// Whether any linear of the model carries a bias where the architecture has none
/// (BitFit with `add_biases`): which of q/k/v, o and the MLP do.
pub fn bias_layout(model: &DecoderModel) -> (bool, bool, bool) {
    let mut qkv = false;
    let mut o = false;
    let mut mlp = false;
    for layer in &model.layers {
        let a = &layer.self_attn;
        qkv |= [Some(&a.q_proj), a.k_proj.as_ref(), a.v_proj.as_ref()]
            .iter()
            .flatten()
            .any(|l| l.bias.is_some());
        o |= a.o_proj.bias.is_some();
        let m = &layer.mlp;
        mlp |= [Some(&m.gate_proj), m.up_proj.as_ref(), Some(&m.down_proj)]
            .iter()
            .flatten()
            .any(|l| l.bias.is_some());
    }
    (qkv, o, mlp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MethodKind, TrainConfig};
    use crate::methods::apply;
    use crate::train::tests::tiny_model;
    use crate::Ops;

    /// Give every trainable tensor a random value, so the adapter is not the identity.
    fn randomise(params: &[crate::params::Param]) {
        for p in params {
            let t = p.var.as_tensor();
            let noise = Tensor::randn(0f32, 1f32, t.shape(), t.device())
                .unwrap()
                .to_dtype(t.dtype())
                .unwrap();
            let value = if p.name.contains("magnitude") || p.name.ends_with("ia3_l") {
                // around the initial value, not around zero
                (t + (noise * 0.2).unwrap()).unwrap()
            } else {
                (noise * 0.1).unwrap()
            };
            p.var.set(&value).unwrap();
        }
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    }

    #[test]
    fn merged_models_compute_what_the_adapter_computed() {
        let ids: Vec<u32> = (0..24).map(|i| (i * 7 % 40) as u32).collect();
        for (method, tweak) in [
            (MethodKind::Lora, None),
            (MethodKind::Lora, Some("rslora")),
            (MethodKind::Dora, None),
            (MethodKind::Ia3, None),
            (MethodKind::Qlora, None),
            (MethodKind::Bitfit, Some("add_biases")),
            (MethodKind::Full, None),
        ] {
            let mut model = tiny_model(DType::F64, 3);
            let plain = model.token_nll(&ids, Ops::Differentiable).unwrap();
            let mut cfg = TrainConfig::for_method(method);
            cfg.methods.lora.targets = crate::config::LORA_TARGETS.map(String::from).to_vec();
            cfg.methods.lora.rslora = tweak == Some("rslora");
            cfg.methods.bitfit.add_biases = tweak == Some("add_biases");
            cfg.methods.ia3.targets = vec!["k_proj".into(), "v_proj".into(), "down_proj".into()];
            let params = apply(&mut model, &cfg.method_args()).unwrap();
            randomise(&params);
            let before = model.token_nll(&ids, Ops::Differentiable).unwrap();
            let moved = max_abs_diff(&plain, &before);
            assert!(moved > 1e-3, "{method:?}: the adapter changed nothing");
            merge_in_place(&mut model).unwrap();
            for layer in &mut model.layers {
                for (_, lin) in linears_mut(layer) {
                    assert!(lin.adapter.is_none());
                    assert!(matches!(lin.weight, crate::linear::BaseWeight::Dense(_)));
                }
            }
            let after = model.token_nll(&ids, Ops::Differentiable).unwrap();
            let worst = max_abs_diff(&before, &after);
            assert!(
                worst < 1e-5,
                "{method:?} {tweak:?}: merged differs by {worst}"
            );
        }
    }

    #[test]
    fn methods_that_add_structure_are_refused() {
        for method in [
            MethodKind::Adapter,
            MethodKind::PromptTuning,
            MethodKind::PrefixTuning,
            MethodKind::PTuningV2,
        ] {
            let mut model = tiny_model(DType::F32, 3);
            apply(&mut model, &TrainConfig::for_method(method).method_args()).unwrap();
            let e = merge_in_place(&mut model).unwrap_err();
            assert!(
                e.contains("no base weight") || e.contains("non-linear"),
                "{e}"
            );
        }
    }
}
