//! Prompt tuning: learned virtual-token embeddings before the input.

use super::*;

/// `n_virtual_tokens` embeddings, initialised from random vocabulary rows.
pub(super) fn apply(model: &mut DecoderModel, cfg: &TrainConfig, wd: f64) -> Result<Vec<Param>> {
    let mut params = vec![];
    // init from the embeddings of random vocabulary rows (seeded)
    let n = cfg.prompt.n_virtual_tokens;
    let vocab = model.embed_tokens.dim(0)? as u64;
    let mut s = cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let rows: Vec<u32> = (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % vocab) as u32
        })
        .collect();
    let idx = Tensor::from_vec(rows, n, &model.device)?;
    let var = Var::from_tensor(&model.embed_tokens.detach().index_select(&idx, 0)?)?;
    model.prompt = Some(var.as_tensor().clone());
    params.push(Param {
        name: "prompt_embeddings".into(),
        var,
        lr_scale: 1.0,
        weight_decay: wd,
    });
    Ok(params)
}
