//! GGUF files (llama.cpp's single-file model format).
//!
//! A GGUF file is a header (magic `GGUF`, version, tensor count, metadata count), a list of
//! typed metadata key/values (`general.architecture`, `llama.block_count`,
//! `tokenizer.ggml.tokens`, ...), a list of tensor infos (name, dims, ggml type, offset) and
//! the aligned tensor data. Parsing of the container is candle's `gguf_file`; this module
//! checks the layout first ([`check_layout`]) and turns the result into the facts the rest
//! of Whetstone asks about.

use candle_core::quantized::{gguf_file, GgmlDType};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: cannot open: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a readable GGUF file: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: metadata key `{key}` is missing or has the wrong type")]
    Metadata { path: PathBuf, key: String },
}

/// What a GGUF file says about itself, without loading any tensor data.
#[derive(Debug, Clone, Serialize)]
pub struct GgufSummary {
    pub architecture: String,
    pub name: Option<String>,
    pub tensor_count: usize,
    /// Number of tensors of each ggml type, e.g. `{"Q4_1": 210, "F32": 61, "Q8_0": 1}`.
    pub tensor_types: BTreeMap<String, usize>,
    /// Total number of weights (elements) over all tensors.
    pub parameter_count: u64,
    pub block_count: Option<u32>,
    pub embedding_length: Option<u32>,
    pub vocab_size: Option<usize>,
    pub has_chat_template: bool,
}

/// Read the header, metadata and tensor infos of a GGUF file.
pub fn read_content(path: &Path) -> Result<gguf_file::Content, GgufError> {
    check_layout(path).map_err(|message| GgufError::Parse {
        path: path.to_path_buf(),
        message: crate::error::one_line(&message),
    })?;
    let mut file = std::fs::File::open(path).map_err(|source| GgufError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    gguf_file::Content::read(&mut file).map_err(|e| GgufError::Parse {
        path: path.to_path_buf(),
        message: crate::error::one_line(&e.to_string()),
    })
}

/// Summarise a GGUF file's metadata and tensor table.
pub fn summarize(path: &Path) -> Result<GgufSummary, GgufError> {
    let content = read_content(path)?;
    let md = &content.metadata;
    let architecture = md
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .ok_or_else(|| GgufError::Metadata {
            path: path.to_path_buf(),
            key: "general.architecture".into(),
        })?;
    let arch_u32 = |suffix: &str| {
        md.get(&format!("{architecture}.{suffix}"))
            .and_then(|v| v.to_u32().ok())
    };
    let mut tensor_types = BTreeMap::new();
    let mut parameter_count = 0u64;
    for info in content.tensor_infos.values() {
        *tensor_types
            .entry(format!("{:?}", info.ggml_dtype).to_uppercase())
            .or_insert(0) += 1;
        parameter_count = parameter_count.saturating_add(info.shape.elem_count() as u64);
    }
    let vocab_size = md
        .get("tokenizer.ggml.tokens")
        .and_then(|v| v.to_vec().ok())
        .map(|v| v.len());
    Ok(GgufSummary {
        name: md
            .get("general.name")
            .and_then(|v| v.to_string().ok())
            .cloned(),
        tensor_count: content.tensor_infos.len(),
        tensor_types,
        parameter_count,
        block_count: arch_u32("block_count"),
        embedding_length: arch_u32("embedding_length"),
        vocab_size,
        has_chat_template: md.contains_key("tokenizer.chat_template"),
        architecture,
    })
}

/// ggml's type ids, as GGUF stores them, for the types candle reads.
fn ggml_type(id: u32) -> Option<GgmlDType> {
    use GgmlDType::*;
    Some(match id {
        0 => F32,
        1 => F16,
        2 => Q4_0,
        3 => Q4_1,
        6 => Q5_0,
        7 => Q5_1,
        8 => Q8_0,
        9 => Q8_1,
        10 => Q2K,
        11 => Q3K,
        12 => Q4K,
        13 => Q5K,
        14 => Q6K,
        15 => Q8K,
        30 => BF16,
        _ => return None,
    })
}

/// A reader that knows how much of the file is left, so no length read from the file is
/// trusted before it is compared with that.
struct Bounded {
    reader: BufReader<std::fs::File>,
    pos: u64,
    size: u64,
    /// GGUF v1 stores lengths and counts as u32, later versions as u64.
    wide: bool,
}

impl Bounded {
    fn need(&self, n: u64, what: &dyn Fn() -> String) -> Result<(), String> {
        let left = self.size - self.pos;
        if n > left {
            return Err(format!(
                "{}: needs {n} bytes at offset {} but only {left} remain (truncated or corrupt?)",
                what(),
                self.pos
            ));
        }
        Ok(())
    }

    fn bytes(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<Vec<u8>, String> {
        self.need(n, what)?;
        let mut buf = vec![0u8; n as usize];
        self.reader
            .read_exact(&mut buf)
            .map_err(|e| format!("{}: {e}", what()))?;
        self.pos += n;
        Ok(buf)
    }

    fn skip(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<(), String> {
        self.need(n, what)?;
        self.reader
            .seek_relative(n as i64)
            .map_err(|e| format!("{}: {e}", what()))?;
        self.pos += n;
        Ok(())
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, String> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, String> {
        let b = self.bytes(8, what)?;
        Ok(u64::from_le_bytes([
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
        ]))
    }

    /// A length or count (u32 in v1, u64 after).
    fn len(&mut self, what: &dyn Fn() -> String) -> Result<u64, String> {
        if self.wide {
            self.u64(what)
        } else {
            self.u32(what).map(u64::from)
        }
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, String> {
        let n = self.len(what)?;
        let b = self.bytes(n, what)?;
        Ok(String::from_utf8_lossy(&b).into_owned())
    }

    /// The fewest bytes a value of GGUF type `t` takes, or None for an unknown type.
    fn min_size(&self, t: u32) -> Option<u64> {
        let len = if self.wide { 8 } else { 4 };
        Some(match t {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            8 => len,
            9 => 4 + len,
            _ => return None,
        })
    }

    /// Skip one metadata value of type `t`, checking every length inside it; returns the
    /// value when it is an integer (for `general.alignment`).
    fn value(&mut self, t: u32, depth: usize, key: &str) -> Result<Option<u64>, String> {
        let what = || format!("metadata key `{key}`");
        let Some(size) = self.min_size(t) else {
            return Err(format!("metadata key `{key}`: value type {t} is unknown"));
        };
        Ok(match t {
            0 => Some(self.bytes(1, &what)?[0] as u64),
            7 => match self.bytes(1, &what)?[0] {
                b @ (0 | 1) => Some(b as u64),
                b => {
                    return Err(format!(
                        "metadata key `{key}`: bool value {b} is not 0 or 1"
                    ))
                }
            },
            4 => Some(self.u32(&what)? as u64),
            2 => {
                let b = self.bytes(2, &what)?;
                Some(u16::from_le_bytes([b[0], b[1]]) as u64)
            }
            8 => {
                let n = self.len(&what)?;
                self.skip(n, &what)?;
                None
            }
            9 => {
                if depth >= 64 {
                    return Err(format!(
                        "metadata key `{key}`: arrays nested deeper than 64"
                    ));
                }
                let et = self.u32(&what)?;
                let n = self.len(&what)?;
                let Some(each) = self.min_size(et) else {
                    return Err(format!(
                        "metadata key `{key}`: array element type {et} is unknown"
                    ));
                };
                self.need(n.saturating_mul(each), &|| {
                    format!("metadata key `{key}`: array of {n} elements")
                })?;
                for _ in 0..n {
                    self.value(et, depth + 1, key)?;
                }
                None
            }
            _ => {
                self.skip(size, &what)?;
                None
            }
        })
    }
}

/// Walk the header, metadata and tensor table of a GGUF file and check every length, count,
/// type, dimension and data extent against the file's size, so nothing read from the file
/// sizes an allocation or an index before it has been checked. candle's reader bounds most
/// lengths but divides by `general.alignment` (0 panics), multiplies dimensions without
/// overflow checks and reads zero-element tensors through a misaligned pointer; all of those
/// are refused here, each naming the field.
pub fn check_layout(path: &Path) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let size = file
        .metadata()
        .map_err(|e| format!("cannot open: {e}"))?
        .len();
    let mut r = Bounded {
        reader: BufReader::new(file),
        pos: 0,
        size,
        wide: true,
    };
    let magic = r.bytes(4, &|| "field `magic`".to_string())?;
    if magic != b"GGUF" {
        return Err(format!(
            "field `magic` is {:?}, not \"GGUF\": this is not a GGUF file",
            magic.escape_ascii().to_string()
        ));
    }
    let version = r.u32(&|| "field `version`".to_string())?;
    if !(1..=3).contains(&version) {
        return Err(format!(
            "field `version` = {version}: only GGUF versions 1 to 3 can be read"
        ));
    }
    r.wide = version >= 2;
    let tensor_count = r.len(&|| "field `tensor_count`".to_string())?;
    let kv_count = r.len(&|| "field `metadata_kv_count`".to_string())?;
    // each entry takes at least a length prefix, a type and one byte; each tensor info a
    // length prefix, a dimension count, a type and an offset
    let prefix = if r.wide { 8 } else { 4 };
    r.need(kv_count.saturating_mul(prefix + 5), &|| {
        format!("field `metadata_kv_count` = {kv_count}")
    })?;
    r.need(tensor_count.saturating_mul(prefix + 16), &|| {
        format!("field `tensor_count` = {tensor_count}")
    })?;
    let mut alignment = 32u64;
    for i in 0..kv_count {
        let key = r.string(&|| format!("metadata entry {i}, field `key`"))?;
        let t = r.u32(&|| format!("metadata key `{key}`, field `type`"))?;
        let v = r.value(t, 0, &key)?;
        if key == "general.alignment" {
            // candle reads unsigned and non-negative signed integers of up to 32 bits
            if let (Some(a), 0 | 2 | 4) = (v, t) {
                if a == 0 || !a.is_power_of_two() {
                    return Err(format!(
                        "metadata key `general.alignment` = {a}: must be a power of two"
                    ));
                }
                alignment = a;
            }
        }
    }
    let mut tensors = Vec::new();
    let mut names = HashSet::new();
    for i in 0..tensor_count {
        let name = r.string(&|| format!("tensor info {i}, field `name`"))?;
        let what = || format!("tensor `{name}`");
        let n_dims = r.u32(&what)?;
        if !(1..=4).contains(&n_dims) {
            return Err(format!(
                "tensor `{name}` has {n_dims} dimensions (GGUF tensors have 1 to 4)"
            ));
        }
        let mut dims = Vec::new();
        for _ in 0..n_dims {
            dims.push(r.len(&what)?);
        }
        let elems = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n > 0 && n <= usize::MAX as u64)
            .ok_or_else(|| {
                format!("tensor `{name}` has dimensions {dims:?}: not a positive, countable size")
            })?;
        let id = r.u32(&what)?;
        let dtype = ggml_type(id)
            .ok_or_else(|| format!("tensor `{name}` has ggml type {id}, which is unknown"))?;
        let block = dtype.block_size() as u64;
        if elems % block != 0 {
            return Err(format!(
                "tensor `{name}` has {elems} elements, not a whole number of {dtype:?} blocks of {block}"
            ));
        }
        let offset = r.u64(&what)?;
        let bytes = (elems / block).checked_mul(dtype.type_size() as u64);
        if !names.insert(name.clone()) {
            return Err(format!("tensor `{name}` is listed twice"));
        }
        tensors.push((name, offset, bytes));
    }
    let data_start = r.pos.div_ceil(alignment).saturating_mul(alignment);
    for (name, offset, bytes) in tensors {
        match bytes.and_then(|b| data_start.checked_add(offset)?.checked_add(b)) {
            Some(end) if end <= size => {}
            Some(end) => {
                return Err(format!(
                    "file is truncated: tensor `{name}` needs bytes up to {end} but the file has {size}"
                ))
            }
            None => {
                return Err(format!(
                    "tensor `{name}`: offset {offset} puts its data past the end of any file"
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_gguf_with_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("model.gguf");
        std::fs::write(&p, b"not a gguf file at all").unwrap();
        let e = summarize(&p).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("model.gguf") && msg.contains("not a readable GGUF"),
            "{msg}"
        );
    }

    /// A GGUF v3 file with no metadata but `kv` and one tensor info `t` of `dims` and
    /// `ggml_type` at `offset`, followed by 64 bytes of data.
    fn gguf_bytes(kv: &[u8], n_kv: u64, dims: &[u64], ggml_type: u32, offset: u64) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        b.extend(n_kv.to_le_bytes());
        b.extend(kv);
        b.extend(1u64.to_le_bytes());
        b.push(b't');
        b.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            b.extend(d.to_le_bytes());
        }
        b.extend(ggml_type.to_le_bytes());
        b.extend(offset.to_le_bytes());
        b.resize(b.len().div_ceil(32) * 32 + 64, 0);
        b
    }

    fn refusal(bytes: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.gguf");
        std::fs::write(&p, bytes).unwrap();
        let e = summarize(&p).unwrap_err().to_string();
        let w = crate::weights::read_gguf(&p).unwrap_err().to_string();
        assert!(e.contains("m.gguf") && !e.contains('\n'), "{e}");
        assert_eq!(w.split_once(": ").unwrap().1, e.split_once(": ").unwrap().1);
        e
    }

    #[test]
    fn a_valid_layout_passes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.gguf");
        std::fs::write(&p, gguf_bytes(&[], 0, &[4, 2], 0, 0)).unwrap();
        check_layout(&p).unwrap();
        let e = summarize(&p).unwrap_err().to_string();
        assert!(e.contains("general.architecture"), "{e}");
    }

    // Found by whetstone-fuzz: each of these panicked (or was undefined behaviour) in
    // candle's reader or in our extent check before the layout was checked first.
    #[test]
    fn zero_alignment_is_refused_not_a_division_by_zero() {
        let mut kv = 17u64.to_le_bytes().to_vec();
        kv.extend(b"general.alignment");
        kv.extend(4u32.to_le_bytes()); // u32
        kv.extend(0u32.to_le_bytes());
        let e = refusal(&gguf_bytes(&kv, 1, &[4], 0, 0));
        assert!(e.contains("`general.alignment` = 0"), "{e}");
    }

    #[test]
    fn overflowing_dimensions_are_refused() {
        let e = refusal(&gguf_bytes(&[], 0, &[u64::MAX, 3], 0, 0));
        assert!(e.contains("tensor `t` has dimensions"), "{e}");
    }

    #[test]
    fn empty_and_dimensionless_tensors_are_refused() {
        let e = refusal(&gguf_bytes(&[], 0, &[4, 0], 0, 0));
        assert!(e.contains("tensor `t` has dimensions [4, 0]"), "{e}");
        let e = refusal(&gguf_bytes(&[], 0, &[], 0, 0));
        assert!(e.contains("tensor `t` has 0 dimensions"), "{e}");
    }

    #[test]
    fn an_offset_past_any_file_is_refused_not_an_overflow() {
        let e = refusal(&gguf_bytes(&[], 0, &[4], 0, u64::MAX));
        assert!(e.contains("tensor `t`: offset"), "{e}");
        let e = refusal(&gguf_bytes(&[], 0, &[1 << 20], 0, 0));
        assert!(
            e.contains("file is truncated: tensor `t` needs bytes up to"),
            "{e}"
        );
    }

    #[test]
    fn a_bool_that_is_not_0_or_1_names_its_key() {
        let mut kv = 1u64.to_le_bytes().to_vec();
        kv.extend(b"b");
        kv.extend(7u32.to_le_bytes());
        kv.push(189);
        let e = refusal(&gguf_bytes(&kv, 1, &[4], 0, 0));
        assert!(e.contains("metadata key `b`: bool value 189"), "{e}");
    }

    #[test]
    fn lengths_beyond_the_file_name_the_field() {
        let mut kv = u64::MAX.to_le_bytes().to_vec();
        kv.extend(b"x");
        let e = refusal(&gguf_bytes(&kv, 1, &[4], 0, 0));
        assert!(e.contains("metadata entry 0, field `key`"), "{e}");
        let e = refusal(&gguf_bytes(&[], 1 << 40, &[4], 0, 0));
        assert!(e.contains("field `metadata_kv_count`"), "{e}");
    }

    #[test]
    fn truncated_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.gguf");
        // Valid magic and version 3, then the file ends.
        std::fs::write(&p, [b'G', b'G', b'U', b'F', 3, 0, 0, 0]).unwrap();
        assert!(matches!(summarize(&p), Err(GgufError::Parse { .. })));
    }
}
