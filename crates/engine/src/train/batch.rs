//! Examples into micro-batches: right-padded rows, the positions that are trained and
//! their targets; and TRL-style packing of examples into full-length rows.

use candle_core::{Device, Tensor};
use whetstone_data::Tokenized;

/// One micro-batch on the device.
pub struct Batch {
    /// `[b, t]` input ids.
    pub input: Tensor,
    /// Flat `b * t` positions whose next token is a target.
    pub rows: Tensor,
    /// The target ids of those positions.
    pub targets: Tensor,
    pub n_targets: usize,
    /// Real (unpadded) input tokens.
    pub tokens: usize,
    /// Preference objectives: which targets belong to which sequence, and the references.
    pub pref: Option<super::preference::PrefBatch>,
}

/// Build a right-padded micro-batch: position `i` predicts token `i + 1` where that token is
/// trained. Padding is never a target and, with causal attention, never seen by real tokens.
pub fn make_batch(rows: &[&Tokenized], device: &Device) -> candle_core::Result<Batch> {
    let t = rows.iter().map(|r| r.ids.len()).max().unwrap_or(1).max(2) - 1;
    let mut input = vec![0u32; rows.len() * t];
    let mut flat = vec![];
    let mut targets = vec![];
    let mut tokens = 0;
    for (b, r) in rows.iter().enumerate() {
        let n = r.ids.len().saturating_sub(1);
        tokens += n;
        for i in 0..n {
            input[b * t + i] = r.ids[i];
            if r.trained[i + 1] {
                flat.push((b * t + i) as u32);
                targets.push(r.ids[i + 1]);
            }
        }
    }
    let n_targets = targets.len();
    Ok(Batch {
        input: Tensor::from_vec(input, (rows.len(), t), device)?,
        rows: Tensor::from_vec(flat, n_targets, device)?,
        targets: Tensor::from_vec(targets, n_targets, device)?,
        n_targets,
        tokens,
        pref: None,
    })
}

/// Concatenate examples (in order) into rows of exactly `seq_len + 1` tokens; the last,
/// shorter row is kept. Attention crosses example boundaries, as in TRL's packing.
pub fn pack(examples: &[Tokenized], seq_len: usize) -> Vec<Tokenized> {
    let mut out = vec![];
    let mut cur = Tokenized::default();
    for e in examples {
        for (&id, &tr) in e.ids.iter().zip(&e.trained) {
            cur.ids.push(id);
            cur.trained.push(tr);
            if cur.ids.len() == seq_len + 1 {
                out.push(std::mem::take(&mut cur));
            }
        }
    }
    if cur.ids.len() > 1 {
        out.push(cur);
    }
    out
}
