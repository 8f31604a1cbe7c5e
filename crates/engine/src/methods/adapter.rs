//! Houlsby adapters: a bottleneck MLP after attention and after the FFN of every layer,
//! initialised near the identity.

use super::*;

/// Two bottleneck adapters per layer at `adapter.width(hidden)`.
pub(super) fn apply(model: &mut DecoderModel, cfg: &TrainConfig, wd: f64) -> Result<Vec<Param>> {
    let mut params = vec![];
    // down: U(±1/√hidden) like a fresh nn.Linear; up: zeros, so each adapter starts
    // as the identity and the model as the base model
    let bn = cfg.adapter.width(model.config.hidden_size);
    let mut rng = InitRng(cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 3);
    let (device, dtype) = (model.device.clone(), model.dtype);
    let h = model.config.hidden_size;
    for (l, layer) in model.layers.iter_mut().enumerate() {
        let mut make = |which: &str| -> Result<Bottleneck> {
            let bound = 1.0 / (h as f32).sqrt();
            let d: Vec<f32> = (0..bn * h).map(|_| rng.uniform(-bound, bound)).collect();
            let vars = [
                (
                    "down.weight",
                    Var::from_tensor(&Tensor::from_vec(d, (bn, h), &device)?.to_dtype(dtype)?)?,
                ),
                ("down.bias", Var::zeros(bn, dtype, &device)?),
                ("up.weight", Var::zeros((h, bn), dtype, &device)?),
                ("up.bias", Var::zeros(h, dtype, &device)?),
            ];
            for (n, v) in &vars {
                params.push(Param {
                    name: format!("model.layers.{l}.{which}.{n}"),
                    var: v.clone(),
                    lr_scale: 1.0,
                    weight_decay: if n.ends_with("weight") { wd } else { 0.0 },
                });
            }
            let t = |i: usize| vars[i].1.as_tensor().clone();
            Ok(Bottleneck {
                down: Linear::new(t(0), Some(t(1))),
                up: Linear::new(t(2), Some(t(3))),
            })
        };
        let attn = make("adapter_attn")?;
        let ffn = make("adapter_ffn")?;
        layer.adapters = Some((attn, ffn));
    }
    Ok(params)
}
