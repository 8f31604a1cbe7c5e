//! The GGUF target: mutations that keep a file's structure (values of the right and wrong
//! types under known keys, tensor shapes and types, lengths poked at their offsets) as well
//! as byte-level ones, read by the model loader, the tokenizer builder and the layout check.

use super::*;

/// Offsets of the length, count, type and offset fields of a valid GGUF file (v2/v3), found
/// by walking it once: (offset, width in bytes).
fn gguf_landmarks(b: &[u8]) -> Vec<(usize, usize)> {
    let mut marks = vec![(8, 8), (16, 8)];
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .map(|s| u32::from_le_bytes(s.try_into().unwrap_or([0; 4])))
    };
    let u64_at = |o: usize| {
        b.get(o..o + 8)
            .map(|s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])) as usize)
    };
    let (Some(n_tensors), Some(n_kv)) = (u64_at(8), u64_at(16)) else {
        return marks;
    };
    let mut pos = 24;
    // returns the position after a value of type `t`, recording its length fields
    fn skip(
        b: &[u8],
        pos: usize,
        t: u32,
        marks: &mut Vec<(usize, usize)>,
        record: bool,
    ) -> Option<usize> {
        let u64_at = |o: usize| {
            b.get(o..o + 8)
                .map(|s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])) as usize)
        };
        Some(match t {
            0 | 1 | 7 => pos + 1,
            2 | 3 => pos + 2,
            4..=6 => pos + 4,
            10..=12 => pos + 8,
            8 => {
                if record {
                    marks.push((pos, 8));
                }
                pos + 8 + u64_at(pos)?
            }
            9 => {
                let et = u32::from_le_bytes(b.get(pos..pos + 4)?.try_into().ok()?);
                let n = u64_at(pos + 4)?;
                marks.push((pos, 4));
                marks.push((pos + 4, 8));
                let mut p = pos + 12;
                for k in 0..n {
                    p = skip(b, p, et, marks, k < 4)?;
                }
                p
            }
            _ => return None,
        })
    }
    for _ in 0..n_kv {
        marks.push((pos, 8));
        let Some(klen) = u64_at(pos) else {
            return marks;
        };
        pos += 8 + klen;
        marks.push((pos, 4));
        let Some(t) = u32_at(pos) else { return marks };
        match skip(b, pos + 4, t, &mut marks, true) {
            Some(p) => pos = p,
            None => return marks,
        }
    }
    for _ in 0..n_tensors {
        marks.push((pos, 8));
        let Some(nlen) = u64_at(pos) else {
            return marks;
        };
        pos += 8 + nlen;
        marks.push((pos, 4));
        let Some(ndims) = u32_at(pos) else {
            return marks;
        };
        pos += 4;
        for _ in 0..ndims {
            marks.push((pos, 8));
            pos += 8;
        }
        marks.push((pos, 4)); // ggml type
        marks.push((pos + 4, 8)); // offset
        pos += 12;
    }
    marks
}

fn odd_gguf_value(rng: &mut Rng) -> GValue {
    match rng.below(16) {
        0 => GValue::U32(0),
        1 => GValue::U32(u32::MAX),
        2 => GValue::U64(u64::MAX),
        3 => GValue::I32(-1),
        4 => GValue::I32(i32::MIN),
        5 => GValue::F32(f32::NAN),
        6 => GValue::F32(f32::INFINITY),
        7 => GValue::F64(-0.0),
        8 => GValue::Bool(true),
        9 => GValue::String(String::new()),
        10 => GValue::String("two\nlines `and` quotes".into()),
        11 => GValue::Array(vec![]),
        12 => GValue::Array(vec![GValue::U32(7); 3]),
        13 => GValue::U8(0),
        14 => GValue::U16(u16::MAX),
        _ => GValue::String(rng.pick(seeds::GGUF_KEYS).to_string()),
    }
}

fn mutate_gguf_parts(rng: &mut Rng, seed: &GgufSeed) -> GgufSeed {
    let mut metadata = seed.metadata.clone();
    let mut tensors: Vec<_> = seed
        .tensors
        .iter()
        .map(|(n, t)| (n.clone(), t))
        .collect::<Vec<_>>();
    let rounds = 1 + rng.below(3);
    for _ in 0..rounds {
        let n = metadata.len();
        match rng.below(8) {
            0 | 1 if n > 0 => {
                let i = rng.below(n);
                metadata[i].1 = odd_gguf_value(rng);
            }
            2 if n > 0 => {
                metadata.remove(rng.below(n));
            }
            3 => {
                let k = rng.pick(seeds::GGUF_KEYS).to_string();
                let v = odd_gguf_value(rng);
                metadata.push((k, v));
            }
            4 if n > 0 => {
                // a duplicated key with another value
                let k = metadata[rng.below(n)].0.clone();
                let v = odd_gguf_value(rng);
                metadata.push((k, v));
            }
            5 if n > 0 => {
                // shorten, grow or corrupt an array (tokens, types, scores, merges)
                let i = rng.below(n);
                if let GValue::Array(a) = &mut metadata[i].1 {
                    match rng.below(4) {
                        0 => a.truncate(rng.below(a.len() + 1)),
                        1 => {
                            if let Some(x) = a.first().cloned() {
                                a.extend(std::iter::repeat_n(x, 1 + rng.below(50)));
                            }
                        }
                        2 if !a.is_empty() => {
                            let j = rng.below(a.len());
                            a[j] = match &a[j] {
                                GValue::String(_) => GValue::String(
                                    rng.pick(&[
                                        "", " ", "\n", "<0xZZ>", "<0x100>", "a b c", "\u{fffd}",
                                    ])
                                    .to_string(),
                                ),
                                GValue::I32(_) => {
                                    GValue::I32(*rng.pick(&[-1, 0, 2, 3, 4, 6, i32::MAX]))
                                }
                                GValue::F32(_) => {
                                    GValue::F32(*rng.pick(&[f32::NAN, f32::NEG_INFINITY, 1e38]))
                                }
                                other => other.clone(),
                            };
                        }
                        _ => a.reverse(),
                    }
                }
            }
            6 if !tensors.is_empty() => {
                let i = rng.below(tensors.len());
                tensors[i].0 = rng.pick(seeds::GGUF_TENSOR_NAMES).to_string();
            }
            _ if !tensors.is_empty() => {
                tensors.remove(rng.below(tensors.len()));
            }
            _ => {}
        }
    }
    GgufSeed {
        metadata,
        tensors: tensors
            .into_iter()
            .map(|(n, t)| (n, requantized(t)))
            .collect(),
    }
}

/// QTensor is not Clone: copy one through its dequantized values.
fn requantized(t: &candle_core::quantized::QTensor) -> candle_core::quantized::QTensor {
    t.dequantize(&Device::Cpu)
        .and_then(|d| whetstone_formats::gguf_out::to_qtensor(&d, t.dtype()))
        .expect("a seed tensor round-trips")
}

pub struct GgufTarget {
    seeds: Vec<GgufSeed>,
    inputs: Vec<Input>,
    landmarks: Vec<Vec<(usize, usize)>>,
}

impl GgufTarget {
    pub fn new() -> Self {
        let seeds = seeds::gguf_models();
        let inputs: Vec<Input> = seeds
            .iter()
            .filter_map(|s| s.to_bytes())
            .map(|bytes| Input {
                file: "model.gguf".into(),
                bytes,
            })
            .collect();
        let landmarks = inputs.iter().map(|i| gguf_landmarks(&i.bytes)).collect();
        Self {
            seeds,
            inputs,
            landmarks,
        }
    }
}

impl Target for GgufTarget {
    fn name(&self) -> &'static str {
        "gguf"
    }

    fn inputs(&self) -> &[Input] {
        &self.inputs
    }

    fn mutate(&self, rng: &mut Rng, i: usize) -> Vec<u8> {
        let keys = dict(seeds::GGUF_KEYS);
        let others = others(&self.inputs, i);
        match rng.below(3) {
            0 => {
                let parts = mutate_gguf_parts(rng, &self.seeds[i]);
                let mut bytes = parts
                    .to_bytes()
                    .unwrap_or_else(|| self.inputs[i].bytes.clone());
                if rng.one_in(3) {
                    mutate_bytes(rng, &mut bytes, &keys, &others);
                }
                bytes
            }
            1 => {
                let mut bytes = self.inputs[i].bytes.clone();
                let marks = &self.landmarks[i];
                for _ in 0..1 + rng.below(2) {
                    let (o, w) = *rng.pick(marks);
                    poke_length(rng, &mut bytes, o, w);
                }
                if rng.one_in(4) {
                    mutate_bytes(rng, &mut bytes, &keys, &others);
                }
                bytes
            }
            _ => {
                let mut bytes = self.inputs[i].bytes.clone();
                mutate_bytes(rng, &mut bytes, &keys, &others);
                bytes
            }
        }
    }

    fn run(&self, path: &Path) -> Vec<Rejection> {
        let mut out = vec![];
        if let Err(e) = gguf::summarize(path) {
            out.push(Rejection::new("gguf::summarize", e, true));
        }
        match weights::read_gguf(path) {
            Err(e) => out.push(Rejection::new("read_gguf", e, true)),
            Ok(content) => {
                match weights::gguf_rope_factors(path, &content)
                    .and_then(|f| ModelConfig::from_gguf(path, &content, f))
                {
                    Ok(_) => {}
                    Err(e) => out.push(Rejection::new("ModelConfig::from_gguf", e, true)),
                }
                match tokenizer::tokenizer_from_gguf(path, &content) {
                    Ok(tok) => exercise_tokenizer(&tok, path, &mut out),
                    Err(e) => out.push(Rejection::new("tokenizer_from_gguf", e, true)),
                }
            }
        }
        match ModelSource::open(path) {
            Err(e) => out.push(Rejection::new("ModelSource::open", e, true)),
            Ok(src) => {
                if let Err(e) = src.load_weights(&Device::Cpu, DType::F32) {
                    out.push(Rejection::new("load_weights (gguf)", e, true));
                }
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// safetensors
