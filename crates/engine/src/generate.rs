//! Text generation with a KV cache: greedy or sampled, streamed token by token.
//!
//! Logits processing follows transformers' order: repetition penalty, temperature, top-k,
//! top-p. Temperature 0 means greedy (argmax), which is what the oracle tests compare.

use crate::model::{DecoderModel, KvCache};
use candle_core::{DType, Result, Tensor};
use std::time::Instant;
use whetstone_formats::ModelTokenizer;

#[derive(Debug, Clone)]
pub struct SamplingParams {
    pub max_tokens: usize,
    /// 0 = greedy.
    pub temperature: f64,
    pub top_k: Option<usize>,
    pub top_p: Option<f64>,
    /// 1.0 = off; > 1 discourages tokens already in the context.
    pub repetition_penalty: f32,
    pub seed: u64,
    /// Generation ends when the decoded text contains one of these (it is cut before it).
    pub stop_strings: Vec<String>,
}

impl SamplingParams {
    /// Greedy decoding of up to `max_tokens`, no penalty, no stop strings: the same text
    /// every time (training samples, the demo's before/after answers).
    pub fn greedy(max_tokens: usize) -> Self {
        Self {
            max_tokens,
            temperature: 0.0,
            top_k: None,
            top_p: None,
            repetition_penalty: 1.0,
            seed: 0,
            stop_strings: vec![],
        }
    }
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            temperature: 0.7,
            top_k: Some(50),
            top_p: Some(0.9),
            repetition_penalty: 1.1,
            seed: 42,
            stop_strings: vec![],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Eos,
    StopString,
    Length,
    /// The caller stopped it (a client that went away).
    Cancelled,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Generation {
    pub prompt_tokens: usize,
    pub token_ids: Vec<u32>,
    pub text: String,
    pub finish_reason: FinishReason,
    /// Time to process the prompt (prefill), seconds.
    pub prefill_s: f64,
    /// Time spent producing the generated tokens, seconds.
    pub decode_s: f64,
    pub tokens_per_s: f64,
}

/// A small, fast, seedable generator (xorshift64*), so sampling is reproducible everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (v >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Pick the next token from one row of logits.
pub fn sample(logits: &[f32], context: &[u32], p: &SamplingParams, rng: &mut Rng) -> u32 {
    let mut l = logits.to_vec();
    if p.repetition_penalty != 1.0 {
        let mut seen = std::collections::HashSet::new();
        for &t in context {
            if seen.insert(t) {
                if let Some(x) = l.get_mut(t as usize) {
                    *x = if *x < 0.0 {
                        *x * p.repetition_penalty
                    } else {
                        *x / p.repetition_penalty
                    };
                }
            }
        }
    }
    if p.temperature <= 0.0 {
        return argmax(&l);
    }
    let t = p.temperature as f32;
    let mut idx: Vec<usize> = (0..l.len()).collect();
    idx.sort_unstable_by(|&a, &b| l[b].total_cmp(&l[a]));
    if let Some(k) = p.top_k.filter(|&k| k > 0) {
        idx.truncate(k);
    }
    let max = l[idx[0]] / t;
    let mut probs: Vec<f64> = idx
        .iter()
        .map(|&i| ((l[i] / t - max) as f64).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|x| *x /= total);
    if let Some(top_p) = p.top_p.filter(|&q| q < 1.0) {
        // keep the smallest prefix whose mass reaches top_p (at least one token)
        let mut acc = 0.0;
        let mut keep = probs.len();
        for (n, q) in probs.iter().enumerate() {
            acc += q;
            if acc >= top_p {
                keep = n + 1;
                break;
            }
        }
        idx.truncate(keep);
        probs.truncate(keep);
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= total);
    }
    let mut u = rng.next_f64();
    for (i, q) in idx.iter().zip(&probs) {
        if u < *q {
            return *i as u32;
        }
        u -= q;
    }
    *idx.last().unwrap_or(&0) as u32
}

fn argmax(l: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in l.iter().enumerate() {
        if *v > l[best] {
            best = i;
        }
    }
    best as u32
}

/// Generate from `prompt_ids`, calling `on_text` with each new piece of decoded text.
pub fn generate(
    model: &DecoderModel,
    tokenizer: &ModelTokenizer,
    prompt_ids: &[u32],
    params: &SamplingParams,
    mut on_text: impl FnMut(&str),
) -> Result<Generation> {
    generate_while(model, tokenizer, prompt_ids, params, |t| {
        on_text(t);
        true
    })
}

/// [`generate`] whose `on_text` answers whether to go on: `false` ends the generation with
/// [`FinishReason::Cancelled`] before another token is computed.
pub fn generate_while(
    model: &DecoderModel,
    tokenizer: &ModelTokenizer,
    prompt_ids: &[u32],
    params: &SamplingParams,
    mut on_text: impl FnMut(&str) -> bool,
) -> Result<Generation> {
    if prompt_ids.is_empty() {
        candle_core::bail!("the prompt is empty");
    }
    let mut rng = Rng::new(params.seed);
    let mut cache = KvCache::new(model.config.num_layers);
    let mut context: Vec<u32> = prompt_ids.to_vec();
    let mut out: Vec<u32> = vec![];
    let mut emitted = 0usize; // bytes of `text` already streamed
    let mut text = String::new();
    let started = Instant::now();
    let input = Tensor::new(prompt_ids, &model.device)?.unsqueeze(0)?;
    let mut logits = model.forward_last(&input, 0, Some(&mut cache))?;
    let prefill_s = started.elapsed().as_secs_f64();
    let decode_start = Instant::now();
    let mut finish = FinishReason::Length;
    let longest_stop = params
        .stop_strings
        .iter()
        .map(|s| s.len())
        .max()
        .unwrap_or(0);
    while out.len() < params.max_tokens {
        let row = logits.squeeze(0)?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let next = sample(&row, &context, params, &mut rng);
        if tokenizer.eos_ids.contains(&next) {
            finish = FinishReason::Eos;
            break;
        }
        out.push(next);
        context.push(next);
        text = tokenizer
            .decode(&out, true)
            .map_err(candle_core::Error::msg)?;
        if let Some(cut) = params
            .stop_strings
            .iter()
            .filter_map(|s| text.find(s.as_str()))
            .min()
        {
            text.truncate(cut);
            finish = FinishReason::StopString;
            break;
        }
        // Stream what is settled: not a half-decoded character, not a possible stop-string prefix.
        let mut settled = if text.ends_with('\u{FFFD}') {
            emitted
        } else {
            text.len()
        };
        settled = settled
            .saturating_sub(longest_stop.saturating_sub(1))
            .max(emitted);
        while !text.is_char_boundary(settled) {
            settled -= 1;
        }
        if settled > emitted {
            let go_on = on_text(&text[emitted..settled]);
            emitted = settled;
            if !go_on {
                finish = FinishReason::Cancelled;
                break;
            }
        }
        if out.len() == params.max_tokens {
            break;
        }
        if model.long_rope_context() == Some(context.len() - 1) {
            // LongRoPE switches to its long factors past the original context: the cached
            // keys were rotated with the short ones, so the whole context is run again (as
            // transformers' Phi-3 does)
            cache = KvCache::new(model.config.num_layers);
            let all = Tensor::new(context.as_slice(), &model.device)?.unsqueeze(0)?;
            logits = model.forward_last(&all, 0, Some(&mut cache))?;
        } else {
            let step = Tensor::new(&[next], &model.device)?.unsqueeze(0)?;
            logits = model.forward_last(&step, context.len() - 1, Some(&mut cache))?;
        }
    }
    if text.len() > emitted && finish != FinishReason::Cancelled {
        on_text(&text[emitted..]);
    }
    let decode_s = decode_start.elapsed().as_secs_f64();
    Ok(Generation {
        prompt_tokens: prompt_ids.len(),
        tokens_per_s: if decode_s > 0.0 {
            out.len() as f64 / decode_s
        } else {
            0.0
        },
        token_ids: out,
        text,
        finish_reason: finish,
        prefill_s,
        decode_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_argmax_and_penalty_applies_like_transformers() {
        let p = SamplingParams {
            temperature: 0.0,
            repetition_penalty: 2.0,
            ..Default::default()
        };
        let mut rng = Rng::new(1);
        assert_eq!(sample(&[0.1, 3.0, 2.0], &[], &p, &mut rng), 1);
        // token 1 seen: 3.0 / 2 = 1.5 < 2.0
        assert_eq!(sample(&[0.1, 3.0, 2.0], &[1], &p, &mut rng), 2);
        // negative logits are multiplied: -1 * 2 = -2 < -1.5
        assert_eq!(sample(&[-1.5, -1.0, -3.0], &[1], &p, &mut rng), 0);
    }

    #[test]
    fn top_k_one_is_greedy_and_top_p_keeps_the_head() {
        let mut rng = Rng::new(7);
        let k1 = SamplingParams {
            temperature: 1.0,
            top_k: Some(1),
            top_p: None,
            repetition_penalty: 1.0,
            ..Default::default()
        };
        for _ in 0..50 {
            assert_eq!(sample(&[0.0, 1.0, 0.5], &[], &k1, &mut rng), 1);
        }
        // p(token 2) ≈ 0.97: top_p = 0.5 keeps only it.
        let p = SamplingParams {
            temperature: 1.0,
            top_k: None,
            top_p: Some(0.5),
            repetition_penalty: 1.0,
            ..Default::default()
        };
        for _ in 0..50 {
            assert_eq!(sample(&[0.0, 0.0, 4.0], &[], &p, &mut rng), 2);
        }
    }

    #[test]
    fn sampling_follows_the_distribution() {
        let mut rng = Rng::new(3);
        let p = SamplingParams {
            temperature: 1.0,
            top_k: None,
            top_p: None,
            repetition_penalty: 1.0,
            ..Default::default()
        };
        let logits = [0.0f32, (3.0f32).ln()]; // p = 0.25, 0.75
        let n = 20_000;
        let ones = (0..n)
            .filter(|_| sample(&logits, &[], &p, &mut rng) == 1)
            .count();
        let frac = ones as f64 / n as f64;
        assert!((frac - 0.75).abs() < 0.02, "{frac}");
    }
}
