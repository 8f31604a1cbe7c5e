//! Model weights by their Hugging Face names, from safetensors files or a GGUF file.
//!
//! Whatever the source, the result is the HF layout: `model.layers.N.self_attn.q_proj.weight`
//! with PyTorch's `[out, in]` shapes, dequantized to the compute dtype. The model takes each
//! tensor it needs by name and shape; anything left over is an error, because a tensor the
//! model does not use means the file describes a different model than the one we built.

pub use crate::config::GgufRopeTensors;
use crate::config::{Family, ModelConfig};
use crate::error::{FileError, WithPath};
use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub struct Weights {
    /// Where the tensors came from (a folder or a `.gguf` file), for error messages.
    pub source: PathBuf,
    tensors: HashMap<String, Tensor>,
}

impl Weights {
    pub fn from_map(source: impl Into<PathBuf>, tensors: HashMap<String, Tensor>) -> Self {
        Self {
            source: source.into(),
            tensors,
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Remove and return a tensor, checking its shape.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<Tensor, FileError> {
        let t = self
            .tensors
            .remove(name)
            .ok_or_else(|| FileError::new(&self.source, format!("tensor `{name}` is missing")))?;
        if t.dims() != shape {
            return Err(FileError::new(
                &self.source,
                format!(
                    "tensor `{name}` has shape {:?}, the config implies {shape:?}",
                    t.dims()
                ),
            ));
        }
        Ok(t)
    }

    /// Fail if tensors remain that the model did not take.
    pub fn finish(self) -> Result<(), FileError> {
        let mut left: Vec<&String> = self
            .tensors
            .keys()
            // Older checkpoints store the rotary frequencies; they are recomputed from config.
            .filter(|k| !k.ends_with("rotary_emb.inv_freq"))
            .collect();
        if left.is_empty() {
            return Ok(());
        }
        left.sort();
        let shown: Vec<_> = left.iter().take(3).map(|s| format!("`{s}`")).collect();
        Err(FileError::new(
            &self.source,
            format!(
                "{} tensor(s) the architecture does not use, e.g. {} — the config does not describe these weights",
                left.len(),
                shown.join(", ")
            ),
        ))
    }
}

/// The `*.safetensors` files of an HF model folder: `model.safetensors.index.json`'s shards
/// when the index exists, else every `*.safetensors` file in the folder.
pub fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>, FileError> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index).at(&index)?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| FileError::new(&index, format!("not valid JSON: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| {
                FileError::new(&index, "field `weight_map`: missing or not an object")
            })?;
        let mut files: Vec<PathBuf> = map
            .values()
            .filter_map(|v| v.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .map(|f| dir.join(f))
            .collect();
        files.dedup();
        for f in &files {
            if !f.exists() {
                return Err(FileError::new(
                    f,
                    "shard listed in model.safetensors.index.json is missing",
                ));
            }
        }
        return Ok(files);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .at(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(FileError::new(
            dir,
            "no *.safetensors weights in this folder",
        ));
    }
    Ok(files)
}

/// Called with each tensor (HF name, converted to the compute dtype) as it is read: returns
/// the tensor to keep, or `None` when the caller took it (e.g. to store it quantized, so the
/// full-precision copy never outlives its own load).
pub type TensorHook<'a> = &'a mut dyn FnMut(&str, Tensor) -> candle_core::Result<Option<Tensor>>;

/// Keep every tensor as loaded.
pub fn keep_all(_: &str, t: Tensor) -> candle_core::Result<Option<Tensor>> {
    Ok(Some(t))
}

/// Load every tensor of an HF folder's safetensors files (f32, f16 or bf16 on disk).
pub fn load_safetensors(
    dir: &Path,
    device: &Device,
    dtype: DType,
    hook: TensorHook<'_>,
) -> Result<Weights, FileError> {
    let mut tensors = HashMap::new();
    for file in safetensors_files(dir)? {
        let corrupt = |e: candle_core::Error| {
            FileError::new(
                &file,
                format!("cannot read safetensors (truncated or corrupt?): {e}"),
            )
        };
        // SAFETY: the mapping is only read, and each tensor is copied out of it as it is
        // loaded (one at a time, so a hook can shrink it before the next is read).
        let st =
            unsafe { candle_core::safetensors::MmapedSafetensors::new(&file) }.map_err(corrupt)?;
        let mut names: Vec<String> = st.tensors().into_iter().map(|(n, _)| n).collect();
        names.sort();
        for name in names {
            let t = st.load(&name, device).map_err(corrupt)?;
            match t.dtype() {
                DType::F32 | DType::F16 | DType::BF16 | DType::F64 => {}
                other => {
                    return Err(FileError::new(
                        &file,
                        format!("tensor `{name}` has dtype {other:?}; only f32, f16 and bf16 weights are supported"),
                    ))
                }
            }
            let t = t.to_dtype(dtype).at(&file)?;
            if let Some(t) = hook(&name, t)
                .map_err(|e| FileError::new(&file, format!("tensor `{name}`: {e}")))?
            {
                tensors.insert(name, t);
            }
        }
    }
    Ok(Weights::from_map(dir, tensors))
}

/// Write tensors as safetensors with the `{"format": "pt"}` header metadata PyTorch-side
/// tools write (transformers refuses model files without it).
pub fn save_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), FileError> {
    let md = HashMap::from([("format".to_string(), "pt".to_string())]);
    let views: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    safetensors::serialize_to_file(views, Some(md), path)
        .map_err(|e| FileError::new(path, format!("cannot write: {e}")))
}

/// Whole-model tensors: (GGUF name, HF name).
const GLOBAL_NAMES: [(&str, &str); 3] = [
    ("token_embd.weight", "model.embed_tokens.weight"),
    ("output_norm.weight", "model.norm.weight"),
    ("output.weight", "lm_head.weight"),
];

/// Per-layer modules: (llama.cpp's `blk.N.<name>`, HF's `model.layers.N.<name>`).
pub const LAYER_NAMES: [(&str, &str); 11] = [
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
    ("attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
    ("attn_q_norm", "self_attn.q_norm"),
    ("attn_k_norm", "self_attn.k_norm"),
];

/// Gemma's sandwich norms, which take the place of `ffn_norm` in llama.cpp's naming.
const GEMMA_LAYER_NAMES: [(&str, &str); 3] = [
    ("post_attention_norm", "post_attention_layernorm"),
    ("ffn_norm", "pre_feedforward_layernorm"),
    ("post_ffw_norm", "post_feedforward_layernorm"),
];

/// Phi-3's fused modules: llama.cpp's `attn_qkv` and its `ffn_up`, which holds gate and up
/// (gate rows first, as HF's `gate_up_proj`).
const PHI3_LAYER_NAMES: [(&str, &str); 2] = [
    ("attn_qkv", "self_attn.qkv_proj"),
    ("ffn_up", "mlp.gate_up_proj"),
];

/// Translate a tensor name between the two namings; `to_hf` picks the direction.
fn translate(name: &str, family: Family, to_hf: bool) -> Option<String> {
    let from = |p: &(&'static str, &'static str)| if to_hf { p.0 } else { p.1 };
    let to = |p: &(&'static str, &'static str)| if to_hf { p.1 } else { p.0 };
    if let Some(g) = GLOBAL_NAMES.iter().find(|p| from(p) == name) {
        return Some(to(g).to_string());
    }
    let (prefix, out_prefix) = if to_hf {
        ("blk.", "model.layers.")
    } else {
        ("model.layers.", "blk.")
    };
    let (layer, rest) = name.strip_prefix(prefix)?.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = rest.rsplit_once('.')?;
    let own: &[(&str, &str)] = match family {
        Family::Gemma2 | Family::Gemma3 => &GEMMA_LAYER_NAMES,
        Family::Phi3 => &PHI3_LAYER_NAMES,
        _ => &[],
    };
    let m = own
        .iter()
        .chain(LAYER_NAMES.iter())
        .find(|p| from(p) == module)?;
    Some(format!("{out_prefix}{layer}.{}.{kind}", to(m)))
}

/// The HF name of a GGUF tensor of `family` (llama.cpp's naming), or None when it has no HF
/// counterpart.
pub fn hf_name(gguf_name: &str, family: Family) -> Option<String> {
    translate(gguf_name, family, true)
}

/// The GGUF name of an HF tensor of `family`, or None when llama.cpp has no counterpart.
pub fn gguf_name(hf_name: &str, family: Family) -> Option<String> {
    translate(hf_name, family, false)
}

/// llama.cpp stores Gemma's RMSNorm weights as `1 + w` (its norm multiplies by the weight);
/// HF stores `w`. The shift to add when writing a GGUF (and subtract when reading one).
pub fn gguf_norm_shift(hf_name: &str, family: Family) -> Option<f64> {
    (family.is_gemma() && hf_name.ends_with("norm.weight")).then_some(1.0)
}

/// Undo llama.cpp's interleaving of the rotary halves in Q and K rows
/// (`convert_hf_to_gguf.py` permutes them so its rope can rotate adjacent pairs).
pub fn unpermute_qk(w: &Tensor, n_head: usize) -> candle_core::Result<Tensor> {
    let dims = w.dims().to_vec();
    let rows = dims[0];
    let rest: usize = dims[1..].iter().product();
    let half = rows / n_head / 2;
    w.reshape((n_head, half, 2, rest))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)
}

/// Read the GGUF header and metadata, after checking the file's layout (every length and
/// tensor extent against the file's size, so a truncated download is reported as such).
pub fn read_gguf(path: &Path) -> Result<gguf_file::Content, FileError> {
    crate::gguf::check_layout(path)
        .map_err(|e| FileError::new(path, format!("not a readable GGUF file: {e}")))?;
    let mut file =
        std::fs::File::open(path).map_err(|e| FileError::new(path, format!("cannot open: {e}")))?;
    gguf_file::Content::read(&mut file)
        .map_err(|e| FileError::new(path, format!("not a readable GGUF file: {e}")))
}

/// Names of the rope tensors, which have no HF counterpart (folded into the config).
pub const GGUF_ROPE_TENSORS: [&str; 3] = [
    "rope_freqs.weight",
    "rope_factors_short.weight",
    "rope_factors_long.weight",
];

/// Read the rope tensors a GGUF file has.
pub fn gguf_rope_factors(
    path: &Path,
    content: &gguf_file::Content,
) -> Result<GgufRopeTensors, FileError> {
    let read = |name: &str| -> Result<Option<Vec<f32>>, FileError> {
        if !content.tensor_infos.contains_key(name) {
            return Ok(None);
        }
        let mut file = std::fs::File::open(path).at(path)?;
        content
            .tensor(&mut file, name, &Device::Cpu)
            .and_then(|q| q.dequantize(&Device::Cpu))
            .and_then(|t| t.flatten_all()?.to_vec1::<f32>())
            .map(Some)
            .map_err(|e| FileError::new(path, format!("tensor `{name}`: {e}")))
    };
    Ok(GgufRopeTensors {
        freqs: read(GGUF_ROPE_TENSORS[0])?,
        short: read(GGUF_ROPE_TENSORS[1])?,
        long: read(GGUF_ROPE_TENSORS[2])?,
    })
}

/// Load and dequantize every tensor of a GGUF model into the HF layout.
pub fn load_gguf(
    path: &Path,
    content: &gguf_file::Content,
    cfg: &ModelConfig,
    device: &Device,
    dtype: DType,
    hook: TensorHook<'_>,
) -> Result<Weights, FileError> {
    let mut file = std::fs::File::open(path).at(path)?;
    let mut tensors = HashMap::new();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        if GGUF_ROPE_TENSORS.contains(&name.as_str()) {
            continue; // folded into the config's rope scaling
        }
        let hf = hf_name(name, cfg.family).ok_or_else(|| {
            FileError::new(
                path,
                format!(
                    "tensor `{name}` is not part of a {} model",
                    cfg.family.as_str()
                ),
            )
        })?;
        let q = content
            .tensor(&mut file, name, device)
            .map_err(|e| FileError::new(path, format!("tensor `{name}`: {e}")))?;
        let shift = gguf_norm_shift(&hf, cfg.family);
        let mut t = q
            .dequantize(device)
            .and_then(|t| match shift {
                Some(s) => t - s,
                None => Ok(t),
            })
            .and_then(|t| t.to_dtype(dtype))
            .map_err(|e| FileError::new(path, format!("tensor `{name}` ({:?}): {e}", q.dtype())))?;
        if crate::config::permutes_qk(cfg.family) {
            let heads = if name.contains(".attn_q.") {
                Some(cfg.num_heads)
            } else if name.contains(".attn_k.") {
                Some(cfg.num_kv_heads)
            } else {
                None
            };
            if let Some(h) = heads {
                t = unpermute_qk(&t, h)
                    .map_err(|e| FileError::new(path, format!("tensor `{name}`: {e}")))?;
            }
        }
        if let Some(t) =
            hook(&hf, t).map_err(|e| FileError::new(path, format!("tensor `{name}`: {e}")))?
        {
            tensors.insert(hf, t);
        }
    }
    Ok(Weights::from_map(path, tensors))
}

/// Count tensors per ggml type, e.g. `{"Q4_1": 210, "F32": 61}` (for listings).
pub fn gguf_type_counts(content: &gguf_file::Content) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for info in content.tensor_infos.values() {
        *m.entry(format!("{:?}", info.ggml_dtype).to_uppercase())
            .or_insert(0) += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_names_map_to_hf() {
        assert_eq!(
            hf_name("blk.3.attn_q.weight", Family::Llama).unwrap(),
            "model.layers.3.self_attn.q_proj.weight"
        );
        assert_eq!(
            hf_name("blk.0.attn_q.bias", Family::Llama).unwrap(),
            "model.layers.0.self_attn.q_proj.bias"
        );
        assert_eq!(
            hf_name("blk.12.ffn_norm.weight", Family::Llama).unwrap(),
            "model.layers.12.post_attention_layernorm.weight"
        );
        assert_eq!(
            hf_name("output.weight", Family::Llama).unwrap(),
            "lm_head.weight"
        );
        assert!(hf_name("blk.0.attn_qkv.weight", Family::Llama).is_none());
    }

    #[test]
    fn gemma_sandwich_norms_have_their_own_gguf_names_and_a_unit_shift() {
        let g = Family::Gemma3;
        for (gguf, hf) in [
            (
                "blk.1.ffn_norm.weight",
                "model.layers.1.pre_feedforward_layernorm.weight",
            ),
            (
                "blk.1.post_attention_norm.weight",
                "model.layers.1.post_attention_layernorm.weight",
            ),
            (
                "blk.1.post_ffw_norm.weight",
                "model.layers.1.post_feedforward_layernorm.weight",
            ),
            (
                "blk.1.attn_q_norm.weight",
                "model.layers.1.self_attn.q_norm.weight",
            ),
            (
                "blk.1.attn_q.weight",
                "model.layers.1.self_attn.q_proj.weight",
            ),
        ] {
            assert_eq!(hf_name(gguf, g).as_deref(), Some(hf));
            assert_eq!(gguf_name(hf, g).as_deref(), Some(gguf));
        }
        // the same GGUF name is the MLP input norm of a Llama
        assert_eq!(
            hf_name("blk.1.ffn_norm.weight", Family::Llama).unwrap(),
            "model.layers.1.post_attention_layernorm.weight"
        );
        assert_eq!(gguf_norm_shift("model.norm.weight", g), Some(1.0));
        assert_eq!(
            gguf_norm_shift("model.layers.0.self_attn.k_norm.weight", g),
            Some(1.0)
        );
        assert_eq!(
            gguf_norm_shift("model.layers.0.self_attn.q_proj.weight", g),
            None
        );
        assert_eq!(gguf_norm_shift("model.norm.weight", Family::Llama), None);
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() -> candle_core::Result<()> {
        // llama.cpp: w.reshape(n_head, 2, rows/n_head/2, cols).swapaxes(1, 2).reshape(rows, cols)
        let (n_head, rows, cols) = (2usize, 8usize, 3usize);
        let w = Tensor::arange(0f32, (rows * cols) as f32, &Device::Cpu)?.reshape((rows, cols))?;
        let permuted = w
            .reshape((n_head, 2, rows / n_head / 2, cols))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((rows, cols))?;
        let back = unpermute_qk(&permuted, n_head)?;
        assert_eq!(back.to_vec2::<f32>()?, w.to_vec2::<f32>()?);
        Ok(())
    }

    #[test]
    fn leftover_tensors_are_an_error() {
        let mut m = HashMap::new();
        m.insert(
            "extra.weight".to_string(),
            Tensor::zeros(2, DType::F32, &Device::Cpu).unwrap(),
        );
        let mut w = Weights::from_map("m", m);
        assert!(w
            .take("missing", &[2])
            .unwrap_err()
            .to_string()
            .contains("`missing` is missing"));
        let e = w.finish().unwrap_err().to_string();
        assert!(e.contains("`extra.weight`"), "{e}");
    }
}
