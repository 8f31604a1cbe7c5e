//! A seeded mutator: generic byte mutations plus structure-aware ones for JSON documents,
//! length fields at known offsets (GGUF, safetensors) and text with a dictionary.
//!
//! Every choice comes from one [`Rng`] (SplitMix64), so a seed and a case number reproduce
//! the same input.

use serde_json::Value;

/// SplitMix64: small, fast and good enough to drive mutations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// True one time in `n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Integers that break length and count fields: empty, one, off by one, sign bits, all ones.
pub fn boundary_u64(rng: &mut Rng, len: usize) -> u64 {
    let len = len as u64;
    *rng.pick(&[
        0,
        1,
        2,
        0x7f,
        0x80,
        0xff,
        0xffff,
        0x7fff_ffff,
        0x8000_0000,
        u32::MAX as u64,
        u32::MAX as u64 + 1,
        i64::MAX as u64,
        i64::MIN as u64,
        u64::MAX,
        u64::MAX - 1,
        len,
        len + 1,
        len.wrapping_sub(1),
        len * 2,
        1 << 40,
    ])
}

/// Bytes that are never valid UTF-8 (or only as a broken sequence).
const BAD_UTF8: [&[u8]; 6] = [
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80",
    b"\xe2\x82",
    b"\xc0\xaf",
];

/// Apply 1 to 4 generic byte-level mutations. `dict` holds tokens worth inserting;
/// `others` are the other seeds of the target, for splicing.
pub fn mutate_bytes(rng: &mut Rng, data: &mut Vec<u8>, dict: &[&[u8]], others: &[&[u8]]) {
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        mutate_once(rng, data, dict, others);
    }
}

fn mutate_once(rng: &mut Rng, data: &mut Vec<u8>, dict: &[&[u8]], others: &[&[u8]]) {
    let len = data.len();
    let at = |rng: &mut Rng| rng.below(len + 1);
    match rng.below(13) {
        0 if len > 0 => {
            let i = rng.below(len);
            data[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = rng.below(len);
            data[i] = *rng.pick(&[0u8, 1, 0x7f, 0x80, 0xff, b'"', b'\n', b'{', b'[', b'\\']);
        }
        2 if len >= 8 => {
            // an integer boundary at a random (often aligned) offset
            let width = *rng.pick(&[2usize, 4, 8]);
            let mut i = rng.below(len - width + 1);
            if rng.one_in(2) {
                i -= i % width;
            }
            let v = boundary_u64(rng, len).to_le_bytes();
            data[i..i + width].copy_from_slice(&v[..width]);
        }
        3 => {
            let cut = at(rng);
            data.truncate(cut);
        }
        4 if len > 0 => {
            let a = rng.below(len);
            let b = (a + 1 + rng.below(64.min(len - a))).min(len);
            data.drain(a..b);
        }
        5 if len > 0 => {
            // duplicate a chunk in place
            let a = rng.below(len);
            let b = (a + 1 + rng.below(256.min(len - a))).min(len);
            let chunk = data[a..b].to_vec();
            let i = at(rng);
            data.splice(i..i, chunk);
        }
        6 => {
            let n = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            let i = at(rng);
            data.splice(i..i, bytes);
        }
        7 if !others.is_empty() => {
            // splice: our head, another seed's tail
            let other = *rng.pick(others);
            let cut = at(rng);
            let from = rng.below(other.len() + 1);
            data.truncate(cut);
            data.extend_from_slice(&other[from..]);
        }
        8 | 9 if !dict.is_empty() => {
            let token = *rng.pick(dict);
            let i = at(rng);
            if rng.one_in(3) && i < len {
                let end = (i + token.len()).min(len);
                data.splice(i..end, token.iter().copied());
            } else {
                data.splice(i..i, token.iter().copied());
            }
        }
        10 => {
            let bad = *rng.pick(&BAD_UTF8);
            let i = at(rng);
            data.splice(i..i, bad.iter().copied());
        }
        11 if len > 0 => {
            // swap two bytes far apart (reorders fields in text formats)
            let (a, b) = (rng.below(len), rng.below(len));
            data.swap(a, b);
        }
        _ => {
            if len > 0 {
                let i = rng.below(len);
                data[i] = rng.next_u64() as u8;
            }
        }
    }
}

/// Overwrite the little-endian integer of `width` bytes at `offset` with a boundary value.
pub fn poke_length(rng: &mut Rng, data: &mut [u8], offset: usize, width: usize) {
    if offset + width <= data.len() {
        let v = boundary_u64(rng, data.len()).to_le_bytes();
        data[offset..offset + width].copy_from_slice(&v[..width]);
    }
}

/// JSON values that arrive where another type was expected.
fn odd_value(rng: &mut Rng, keys: &[&str]) -> Value {
    match rng.below(16) {
        0 => Value::Null,
        1 => Value::Bool(rng.one_in(2)),
        2 => serde_json::json!(0),
        3 => serde_json::json!(-1),
        4 => serde_json::json!(u64::MAX),
        5 => serde_json::json!(i64::MIN),
        6 => serde_json::json!(1e308),
        7 => serde_json::json!(-0.0),
        8 => serde_json::json!(0.5),
        9 => Value::String(String::new()),
        10 => Value::String("x".repeat(1 + rng.below(300))),
        11 => Value::String((*rng.pick(keys)).to_string()),
        12 => serde_json::json!([]),
        13 => serde_json::json!({}),
        14 => serde_json::json!(u32::MAX as u64 + 1),
        _ => Value::String("line one\nline two\r\n\t\u{0}\u{2028}".into()),
    }
}

/// What a mutated string ends with: a NUL, a lone backslash, template syntax, a line break.
const STRING_TAILS: [&str; 7] = ["\u{0}", "\\", "\u{fffd}", "{{", "{%", "\n", "<|im_end|>"];

/// Every JSON pointer in `v` (the root is "").
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                pointers(c, p, out);
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                pointers(c, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

/// Mutate a JSON document in its own terms: wrong types, removed, added and duplicated keys,
/// deep nesting, huge numbers, repeated elements. `keys` are names the reader looks for.
/// Returns the bytes (some mutations only exist as text, e.g. duplicated keys).
pub fn mutate_json(rng: &mut Rng, doc: &Value, keys: &[&str]) -> Vec<u8> {
    let mut v = doc.clone();
    let rounds = 1 + rng.below(3);
    for _ in 0..rounds {
        let mut ps = vec![];
        pointers(&v, String::new(), &mut ps);
        let p = rng.pick(&ps).clone();
        let choice = rng.below(9);
        let Some(node) = v.pointer_mut(&p) else {
            continue;
        };
        match choice {
            0 | 1 => *node = odd_value(rng, keys),
            2 => {
                // remove a key or an element
                if let Value::Object(m) = node {
                    if !m.is_empty() {
                        let k = m.keys().nth(rng.below(m.len())).cloned();
                        if let Some(k) = k {
                            m.remove(&k);
                        }
                    }
                } else if let Value::Array(a) = node {
                    if !a.is_empty() {
                        let i = rng.below(a.len());
                        a.remove(i);
                    }
                }
            }
            3 => {
                if let Value::Object(m) = node {
                    let k = (*rng.pick(keys)).to_string();
                    let val = odd_value(rng, keys);
                    m.insert(k, val);
                }
            }
            4 => {
                // nest the node deeply (serde_json refuses 128 levels; try around it)
                let depth = *rng.pick(&[2usize, 50, 120, 127, 129, 300]);
                let mut inner = node.take();
                for d in 0..depth {
                    inner = if d % 2 == 0 {
                        Value::Array(vec![inner])
                    } else {
                        serde_json::json!({ "k": inner })
                    };
                }
                *node = inner;
            }
            5 => {
                // many copies of an element
                if let Value::Array(a) = node {
                    if let Some(first) = a.first().cloned() {
                        let n = *rng.pick(&[2usize, 100, 500]);
                        a.extend(std::iter::repeat_n(first, n));
                    }
                }
            }
            6 => {
                if let Value::String(s) = node {
                    let cut = rng.below(s.len() + 1);
                    if s.is_char_boundary(cut) {
                        s.truncate(cut);
                    }
                    let tail = STRING_TAILS[rng.below(STRING_TAILS.len())];
                    s.push_str(tail);
                }
            }
            7 => {
                if let Value::Number(_) = node {
                    *node = odd_value(rng, keys);
                }
            }
            _ => {
                if let Value::Object(m) = node {
                    // move a value under another key of the reader's
                    if let Some(k) = m.keys().next().cloned() {
                        if let Some(val) = m.remove(&k) {
                            m.insert((*rng.pick(keys)).to_string(), val);
                        }
                    }
                }
            }
        }
    }
    let mut text = if rng.one_in(2) {
        serde_json::to_vec(&v)
    } else {
        serde_json::to_vec_pretty(&v)
    }
    .unwrap_or_default();
    match rng.below(8) {
        0 => {
            // a duplicated key right after an opening brace
            if let Some(i) = text.iter().position(|&b| b == b'{') {
                let k = rng.pick(keys);
                let dup = format!("\"{k}\": {}, ", odd_value(rng, keys));
                text.splice(i + 1..i + 1, dup.into_bytes());
            }
        }
        1 => {
            // a number JSON can spell but no machine type holds
            if let Some(i) = text.iter().position(|b| b.is_ascii_digit()) {
                let huge = *rng.pick(&[
                    "1e400",
                    "-1e400",
                    "123456789012345678901234567890",
                    "18446744073709551616",
                    "-0",
                    "1.7976931348623157e309",
                ]);
                text.splice(i..i, huge.bytes());
            }
        }
        2 => mutate_bytes(rng, &mut text, &[], &[]),
        _ => {}
    }
    text
}
