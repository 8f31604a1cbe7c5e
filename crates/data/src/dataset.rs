//! Dataset import: detect the format, validate every record, and turn records into
//! conversations (or plain documents) the trainer can render.
//!
//! Formats: alpaca (`instruction`, `input`, `output`, optional `system` / `history`) as JSON
//! or JSONL; chat (`messages` with `role` / `content`) JSONL; ShareGPT (`conversations` with
//! `from` / `value`); plain text (one document per line, or JSONL with `text`); CSV / TSV
//! with a column mapping. Every problem names the file, the line (or CSV row, or record
//! number in a JSON array) and the field.

pub use crate::record::Example;
use crate::record::{as_object, bad, kind_of, message_list, string_field, Check};
use crate::template::{one_line, ChatMessage};
use serde::Serialize;
use serde_json::Value;
use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DatasetFormat {
    Alpaca,
    Chat,
    Sharegpt,
    Text,
    Csv,
    /// Preference pairs: `prompt` / `chosen` / `rejected` (strings or message lists), or
    /// `chosen` / `rejected` conversations sharing their prompt turns.
    Preference,
    /// KTO: `prompt` / `completion` / `label` (true = desirable).
    Kto,
}

impl DatasetFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetFormat::Alpaca => "alpaca",
            DatasetFormat::Chat => "chat",
            DatasetFormat::Sharegpt => "sharegpt",
            DatasetFormat::Text => "text",
            DatasetFormat::Csv => "csv",
            DatasetFormat::Preference => "preference",
            DatasetFormat::Kto => "kto",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "alpaca" => Self::Alpaca,
            "chat" | "messages" => Self::Chat,
            "sharegpt" => Self::Sharegpt,
            "text" => Self::Text,
            "csv" | "tsv" => Self::Csv,
            "preference" | "pairs" | "dpo" => Self::Preference,
            "kto" | "rated" => Self::Kto,
            _ => return None,
        })
    }
}

/// Where a record came from: a line of a JSONL / text file, a CSV row, or the n-th element
/// of a JSON array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "unit", content = "n", rename_all = "snake_case")]
pub enum Location {
    Line(usize),
    Row(usize),
    Record(usize),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line(n) => write!(f, "line {n}"),
            Location::Row(n) => write!(f, "row {n}"),
            Location::Record(n) => write!(f, "record {n}"),
        }
    }
}

/// A record that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    pub at: Location,
    pub field: Option<String>,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The file as a whole is unusable (unreadable, malformed syntax, empty, unknown format).
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    /// Records are invalid and the caller did not ask to drop them.
    #[error("{}: {} — {} of {} records are invalid{}", path.display(), describe(first), count, total,
            if *count > 1 { " (fix them, or add them with --drop-invalid to skip and report them)" } else { "" })]
    Invalid {
        path: PathBuf,
        first: Problem,
        count: usize,
        total: usize,
    },
}

fn describe(p: &Problem) -> String {
    match &p.field {
        Some(f) => format!("{}: field `{f}`: {}", p.at, p.message),
        None => format!("{}: {}", p.at, p.message),
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&describe(self))
    }
}

/// Which CSV columns hold what. Either `text`, or `prompt` + `response` (+ optional `system`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct CsvColumns {
    pub prompt: Option<String>,
    pub response: Option<String>,
    pub system: Option<String>,
    pub text: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Dataset {
    pub path: PathBuf,
    pub format: DatasetFormat,
    /// True when the format was detected rather than given.
    pub detected: bool,
    pub examples: Vec<(Location, Example)>,
    pub dropped: Vec<Problem>,
}

impl Dataset {
    pub fn total_records(&self) -> usize {
        self.examples.len() + self.dropped.len()
    }
}

fn file_err(path: &Path, message: impl Into<String>) -> DatasetError {
    DatasetError::File {
        path: path.to_path_buf(),
        message: one_line(&message.into()),
    }
}

/// Raw records before validation: JSON values (JSON / JSONL) or CSV rows.
enum Raw {
    Json(Vec<(Location, Value)>),
    Lines(Vec<(Location, String)>),
    Csv {
        header: Vec<String>,
        rows: Vec<(Location, Vec<String>)>,
    },
}

fn read_raw(path: &Path, text: &str) -> Result<Raw, DatasetError> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if ext == "csv" || ext == "tsv" {
        return read_csv(path, text, if ext == "tsv" { b'\t' } else { b',' });
    }
    if ext == "txt" || ext == "md" {
        let lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| (Location::Line(i + 1), l.to_string()))
            .collect();
        return Ok(Raw::Lines(lines));
    }
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let v: Value = serde_json::from_str(text).map_err(|e| {
            file_err(
                path,
                format!(
                    "line {}, column {}: invalid JSON: {e}",
                    e.line(),
                    e.column()
                ),
            )
        })?;
        let items = match v {
            Value::Array(a) => a,
            _ => unreachable!("starts with ["),
        };
        return Ok(Raw::Json(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| (Location::Record(i + 1), v))
                .collect(),
        ));
    }
    let mut out = vec![];
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line).map_err(|e| {
            file_err(
                path,
                format!("line {}, column {}: invalid JSON: {e}", i + 1, e.column()),
            )
        })?;
        out.push((Location::Line(i + 1), v));
    }
    Ok(Raw::Json(out))
}

/// A small RFC 4180 reader: quoted fields with doubled quotes and embedded newlines.
fn read_csv(path: &Path, text: &str, sep: u8) -> Result<Raw, DatasetError> {
    let mut rows: Vec<(usize, Vec<String>)> = vec![];
    let bytes = text.as_bytes();
    let (mut i, mut line) = (0usize, 1usize);
    while i < bytes.len() {
        let start_line = line;
        let mut fields = vec![];
        let mut field = Vec::new();
        let mut quoted = false;
        let mut at_field_start = true;
        loop {
            if i >= bytes.len() {
                if quoted {
                    return Err(file_err(
                        path,
                        format!("row starting at line {start_line}: unterminated quoted field"),
                    ));
                }
                fields.push(String::from_utf8_lossy(&field).into_owned());
                break;
            }
            let c = bytes[i];
            if quoted {
                if c == b'"' {
                    if bytes.get(i + 1) == Some(&b'"') {
                        field.push(b'"');
                        i += 2;
                        continue;
                    }
                    quoted = false;
                    i += 1;
                    continue;
                }
                if c == b'\n' {
                    line += 1;
                }
                field.push(c);
                i += 1;
                continue;
            }
            if c == b'"' && at_field_start {
                quoted = true;
                at_field_start = false;
                i += 1;
                continue;
            }
            if c == sep {
                fields.push(String::from_utf8_lossy(&field).into_owned());
                field.clear();
                at_field_start = true;
                i += 1;
                continue;
            }
            if c == b'\n' || c == b'\r' {
                if c == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                i += 1;
                line += 1;
                fields.push(String::from_utf8_lossy(&field).into_owned());
                break;
            }
            at_field_start = false;
            field.push(c);
            i += 1;
        }
        if !(fields.len() == 1 && fields[0].trim().is_empty()) {
            rows.push((start_line, fields));
        }
    }
    let mut rows = rows.into_iter();
    let header: Vec<String> = match rows.next() {
        Some((_, h)) => h.into_iter().map(|s| s.trim().to_string()).collect(),
        None => return Err(file_err(path, "the file is empty")),
    };
    let mut out = vec![];
    for (n, (start_line, r)) in rows.enumerate() {
        if r.len() != header.len() {
            return Err(file_err(
                path,
                format!(
                    "row {} (line {start_line}): {} fields, the header has {}",
                    n + 1,
                    r.len(),
                    header.len()
                ),
            ));
        }
        out.push((Location::Row(n + 1), r));
    }
    Ok(Raw::Csv { header, rows: out })
}

fn detect(path: &Path, raw: &Raw) -> Result<DatasetFormat, DatasetError> {
    match raw {
        Raw::Lines(_) => Ok(DatasetFormat::Text),
        Raw::Csv { .. } => Ok(DatasetFormat::Csv),
        Raw::Json(items) if items.is_empty() => Err(file_err(path, "the dataset has no records")),
        Raw::Json(items) => {
            let first = items
                .iter()
                .find_map(|(_, v)| v.as_object())
                .ok_or_else(|| file_err(path, "no JSON object records found"))?;
            if first.contains_key("chosen") && first.contains_key("rejected") {
                Ok(DatasetFormat::Preference)
            } else if first.contains_key("completion") && first.contains_key("label") {
                Ok(DatasetFormat::Kto)
            } else if first.contains_key("messages") {
                Ok(DatasetFormat::Chat)
            } else if first.contains_key("conversations") {
                Ok(DatasetFormat::Sharegpt)
            } else if first.contains_key("instruction") || first.contains_key("output") {
                Ok(DatasetFormat::Alpaca)
            } else if first.contains_key("text") {
                Ok(DatasetFormat::Text)
            } else {
                let keys: Vec<&str> = first.keys().map(String::as_str).take(6).collect();
                Err(file_err(
                    path,
                    format!(
                        "cannot tell the format from the fields {keys:?}: expected `messages` (chat), `conversations` (ShareGPT), `instruction`/`output` (alpaca), `text`, `chosen`/`rejected` (preference pairs) or `completion`/`label` (KTO)"
                    ),
                ))
            }
        }
    }
}

fn alpaca(v: &Value) -> Check<Example> {
    let o = as_object(v)?;
    let instruction = string_field(o, "instruction", true)?.unwrap_or_default();
    let input = string_field(o, "input", false)?.unwrap_or_default();
    let output = string_field(o, "output", true)?.unwrap_or_default();
    let mut messages = vec![];
    if let Some(system) = string_field(o, "system", false)?.filter(|s| !s.is_empty()) {
        messages.push(ChatMessage::new("system", system));
    }
    match o.get("history") {
        None | Some(Value::Null) => {}
        Some(Value::Array(turns)) => {
            for (i, t) in turns.iter().enumerate() {
                match t.as_array().map(|a| a.as_slice()) {
                    Some([Value::String(u), Value::String(a)]) => {
                        messages.push(ChatMessage::new("user", u.clone()));
                        messages.push(ChatMessage::new("assistant", a.clone()));
                    }
                    _ => {
                        return bad(
                            &format!("history[{i}]"),
                            "expected [user, assistant] strings",
                        )
                    }
                }
            }
        }
        Some(v) => {
            return bad(
                "history",
                format!(
                    "expected an array of [user, assistant] pairs, got {}",
                    kind_of(v)
                ),
            )
        }
    }
    let prompt = if input.trim().is_empty() {
        instruction
    } else {
        format!("{instruction}\n\n{input}")
    };
    messages.push(ChatMessage::new("user", prompt));
    messages.push(ChatMessage::new("assistant", output));
    Ok(Example::Chat { messages })
}

fn conversation(messages: Vec<ChatMessage>, field: &str) -> Check<Example> {
    if messages.is_empty() {
        return bad(field, "is empty");
    }
    for (i, m) in messages.iter().enumerate() {
        if m.role == "system" && i > 0 {
            return bad(
                &format!("{field}[{i}]"),
                "a system message may only come first",
            );
        }
    }
    if !messages.iter().any(|m| m.role == "assistant") {
        return bad(
            field,
            "has no assistant message, so there is nothing to learn",
        );
    }
    Ok(Example::Chat { messages })
}

fn chat(v: &Value) -> Check<Example> {
    let o = as_object(v)?;
    let messages = match o.get("messages") {
        Some(v) => message_list(v, "messages")?,
        None => return bad("messages", "missing"),
    };
    conversation(messages, "messages")
}

fn sharegpt(v: &Value) -> Check<Example> {
    let o = as_object(v)?;
    let list = match o.get("conversations") {
        Some(Value::Array(a)) => a,
        Some(v) => {
            return bad(
                "conversations",
                format!("expected an array, got {}", kind_of(v)),
            )
        }
        None => return bad("conversations", "missing"),
    };
    let mut messages = vec![];
    if let Some(system) = string_field(o, "system", false)?.filter(|s| !s.is_empty()) {
        messages.push(ChatMessage::new("system", system));
    }
    for (i, m) in list.iter().enumerate() {
        let field = format!("conversations[{i}]");
        let Some(m) = m.as_object() else {
            return bad(&field, "expected an object with `from` and `value`");
        };
        let from = m.get("from").and_then(Value::as_str).unwrap_or("");
        let role = match from {
            "system" => "system",
            "human" | "user" => "user",
            "gpt" | "assistant" | "chatgpt" | "bing" | "bard" => "assistant",
            other => {
                return bad(
                    &format!("{field}.from"),
                    format!("\"{other}\" is not one of system, human, gpt"),
                )
            }
        };
        let value = match m.get("value") {
            Some(Value::String(s)) => s.clone(),
            Some(v) => {
                return bad(
                    &format!("{field}.value"),
                    format!("expected a string, got {}", kind_of(v)),
                )
            }
            None => return bad(&format!("{field}.value"), "missing"),
        };
        messages.push(ChatMessage::new(role, value));
    }
    conversation(messages, "conversations")
}

fn text_record(v: &Value) -> Check<Example> {
    let o = as_object(v)?;
    Ok(Example::Text {
        text: string_field(o, "text", true)?.unwrap_or_default(),
    })
}

fn csv_record(header: &[String], row: &[String], cols: &CsvColumns) -> Check<Example> {
    let get = |name: &str| -> Check<String> {
        let i = header.iter().position(|h| h == name).ok_or_else(|| {
            (
                Some(name.to_string()),
                format!("no such column (columns: {})", header.join(", ")),
            )
        })?;
        Ok(row[i].clone())
    };
    if let Some(t) = &cols.text {
        let text = get(t)?;
        if text.trim().is_empty() {
            return bad(t, "is empty");
        }
        return Ok(Example::Text { text });
    }
    let (p, r) = match (&cols.prompt, &cols.response) {
        (Some(p), Some(r)) => (p.clone(), r.clone()),
        _ => {
            return bad(
                "columns",
                "map `prompt` and `response` (or `text`) to columns",
            )
        }
    };
    let prompt = get(&p)?;
    let response = get(&r)?;
    if prompt.trim().is_empty() {
        return bad(&p, "is empty");
    }
    if response.trim().is_empty() {
        return bad(&r, "is empty");
    }
    let mut messages = vec![];
    if let Some(s) = &cols.system {
        let system = get(s)?;
        if !system.trim().is_empty() {
            messages.push(ChatMessage::new("system", system));
        }
    }
    messages.push(ChatMessage::new("user", prompt));
    messages.push(ChatMessage::new("assistant", response));
    Ok(Example::Chat { messages })
}

/// Columns to use when none were given: the first of the usual names that exist.
fn default_columns(header: &[String]) -> CsvColumns {
    let find = |names: &[&str]| {
        names
            .iter()
            .find(|n| header.iter().any(|h| h == *n))
            .map(|s| s.to_string())
    };
    let prompt = find(&["prompt", "instruction", "question", "input"]);
    let response = find(&["response", "output", "answer", "completion"]);
    if prompt.is_some() && response.is_some() {
        CsvColumns {
            prompt,
            response,
            system: find(&["system"]),
            text: None,
        }
    } else {
        CsvColumns {
            text: find(&["text", "content"]),
            ..Default::default()
        }
    }
}

/// How a JSON record of `format` is checked and converted.
fn json_check(format: DatasetFormat) -> fn(&Value) -> Check<Example> {
    match format {
        DatasetFormat::Alpaca => alpaca,
        DatasetFormat::Chat => chat,
        DatasetFormat::Sharegpt => sharegpt,
        DatasetFormat::Preference => crate::preference::pair,
        DatasetFormat::Kto => crate::preference::rated,
        DatasetFormat::Text | DatasetFormat::Csv => text_record,
    }
}

/// Check one JSON record as a file of `format` would be read (for records written one at a
/// time, such as preferences collected in the Playground): the example, or the problem
/// naming its field.
pub fn check_record(format: DatasetFormat, v: &Value) -> Result<Example, String> {
    json_check(format)(v).map_err(|(field, message)| match field {
        Some(f) => format!("field `{f}`: {message}"),
        None => message,
    })
}

/// Read and validate a dataset file. With `drop_invalid`, invalid records are skipped and
/// listed in `dropped`; without it, the first one is an error (with the count of the rest).
pub fn load(
    path: &Path,
    format: Option<DatasetFormat>,
    columns: Option<CsvColumns>,
    drop_invalid: bool,
) -> Result<Dataset, DatasetError> {
    let bytes = std::fs::read(path).map_err(|e| file_err(path, format!("cannot read: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let upto = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = upto.iter().filter(|&&b| b == b'\n').count() + 1;
        file_err(path, format!("line {line}: not valid UTF-8"))
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let raw = read_raw(path, text)?;
    let detected = format.is_none();
    let format = match format {
        Some(f) => f,
        None => detect(path, &raw)?,
    };
    let mut examples = vec![];
    let mut dropped = vec![];
    let mut push = |at: Location, r: Check<Example>| match r {
        Ok(e) => examples.push((at, e)),
        Err((field, message)) => dropped.push(Problem {
            at,
            field: field.as_deref().map(one_line),
            message: one_line(&message),
        }),
    };
    match (&raw, format) {
        (Raw::Lines(lines), DatasetFormat::Text) => {
            for (at, l) in lines {
                push(*at, Ok(Example::Text { text: l.clone() }));
            }
        }
        (Raw::Csv { header, rows }, DatasetFormat::Csv) => {
            let cols = columns.unwrap_or_else(|| default_columns(header));
            for (at, r) in rows {
                push(*at, csv_record(header, r, &cols));
            }
        }
        (Raw::Json(items), f) if f != DatasetFormat::Csv => {
            let check = json_check(f);
            for (at, v) in items {
                push(*at, check(v));
            }
        }
        (_, f) => {
            return Err(file_err(
                path,
                format!("the file's layout does not fit the format `{}`", f.as_str()),
            ));
        }
    }
    let total = examples.len() + dropped.len();
    if total == 0 {
        return Err(file_err(path, "the dataset has no records"));
    }
    if !dropped.is_empty() && (!drop_invalid || examples.is_empty()) {
        return Err(DatasetError::Invalid {
            path: path.to_path_buf(),
            first: dropped[0].clone(),
            count: dropped.len(),
            total,
        });
    }
    Ok(Dataset {
        path: path.to_path_buf(),
        format,
        detected,
        examples,
        dropped,
    })
}

/// A seeded permutation of `0..n` (Fisher–Yates over xorshift64): the same on every
/// platform, so splits and epoch orders are reproducible.
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in (1..n).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        idx.swap(i, (s % (i as u64 + 1)) as usize);
    }
    idx
}

/// Deterministic train/eval split: a seeded shuffle of the indices, the last
/// `eval_fraction` (at least one record when the fraction is positive and n > 1) to eval.
pub fn split(n: usize, eval_fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx = permutation(n, seed);
    let mut n_eval = (n as f64 * eval_fraction).round() as usize;
    if eval_fraction > 0.0 && n > 1 {
        n_eval = n_eval.clamp(1, n - 1);
    }
    let eval = idx.split_off(n - n_eval);
    (idx, eval)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn detects_and_converts_each_format() {
        let d = tempfile::tempdir().unwrap();
        let cases = [
            ("a.jsonl", "{\"instruction\":\"Add\",\"input\":\"1+1\",\"output\":\"2\"}\n", DatasetFormat::Alpaca),
            ("c.jsonl", "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"yo\"}]}\n", DatasetFormat::Chat),
            ("s.json", "[{\"conversations\":[{\"from\":\"human\",\"value\":\"hi\"},{\"from\":\"gpt\",\"value\":\"yo\"}]}]", DatasetFormat::Sharegpt),
            ("t.txt", "first document\n\nsecond document\n", DatasetFormat::Text),
            ("x.csv", "question,answer\n\"Say \"\"hi\"\"\",\"hi,\nthere\"\n", DatasetFormat::Csv),
        ];
        for (name, text, want) in cases {
            let ds = load(&write(d.path(), name, text), None, None, false).unwrap();
            assert_eq!(ds.format, want, "{name}");
            assert!(ds.detected && ds.dropped.is_empty());
        }
        let a = load(&d.path().join("a.jsonl"), None, None, false).unwrap();
        let Example::Chat { messages } = &a.examples[0].1 else {
            panic!()
        };
        assert_eq!(messages[0].content, "Add\n\n1+1");
        assert_eq!(messages[1].role, "assistant");
        let t = load(&d.path().join("t.txt"), None, None, false).unwrap();
        assert_eq!(t.examples.len(), 2);
        assert_eq!(t.examples[1].0, Location::Line(3));
        let x = load(&d.path().join("x.csv"), None, None, false).unwrap();
        let Example::Chat { messages } = &x.examples[0].1 else {
            panic!()
        };
        assert_eq!(messages[0].content, "Say \"hi\"");
        assert_eq!(messages[1].content, "hi,\nthere");
    }

    #[test]
    fn invalid_records_name_line_and_field() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "bad.jsonl",
            "{\"instruction\":\"ok\",\"output\":\"fine\"}\n{\"instruction\":\"no output\"}\n{\"instruction\":\"x\",\"output\":3}\n",
        );
        let e = load(&p, None, None, false).unwrap_err().to_string();
        assert!(
            e.contains("bad.jsonl: line 2: field `output`: missing — 2 of 3 records are invalid"),
            "{e}"
        );
        let ds = load(&p, None, None, true).unwrap();
        assert_eq!(ds.examples.len(), 1);
        assert_eq!(
            ds.dropped[1].to_string(),
            "line 3: field `output`: expected a string, got a number"
        );
    }

    #[test]
    fn malformed_files_are_errors_with_positions() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "m.jsonl", "{\"text\":\"a\"}\n{\"text\": \n");
        let e = load(&p, None, None, true).unwrap_err().to_string();
        assert!(e.contains("m.jsonl: line 2, column"), "{e}");
        let p = write(d.path(), "e.jsonl", "\n\n");
        assert!(load(&p, None, None, true)
            .unwrap_err()
            .to_string()
            .contains("no records"));
        let p = write(d.path(), "r.csv", "prompt,response\na,b,c\n");
        assert!(load(&p, None, None, true)
            .unwrap_err()
            .to_string()
            .contains("row 1 (line 2): 3 fields"));
        let p = write(d.path(), "u.jsonl", "{\"foo\": 1}\n");
        assert!(load(&p, None, None, true)
            .unwrap_err()
            .to_string()
            .contains("cannot tell the format"));
        let p = write(
            d.path(),
            "n.jsonl",
            "{\"messages\":[{\"role\":\"user\",\"content\":\"only a question\"}]}\n",
        );
        assert!(load(&p, None, None, false)
            .unwrap_err()
            .to_string()
            .contains("no assistant message"));
    }

    // Found by whetstone-fuzz: values from the file (a role, a column name) put line
    // breaks into the one-line error.
    #[test]
    fn errors_quoting_the_file_stay_on_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "c.jsonl",
            "{\"messages\": [{\"role\": \"us\\ner\", \"content\": \"x\"}]}\n",
        );
        let e = load(&p, None, None, false).unwrap_err().to_string();
        assert!(
            e.contains("field `messages[0].role`: \"us\\ner\"") && !e.contains('\n'),
            "{e}"
        );
        let p = write(dir.path(), "d.csv", "\"pro\nmpt\",response\na,b\n");
        let e = load(&p, None, None, false).unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn split_is_deterministic_and_disjoint() {
        let (a, b) = split(100, 0.1, 7);
        assert_eq!((a.len(), b.len()), (90, 10));
        assert_eq!(split(100, 0.1, 7), (a.clone(), b.clone()));
        assert_ne!(split(100, 0.1, 8).1, b);
        let mut all: Vec<usize> = a.into_iter().chain(b).collect();
        all.sort();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_eq!(split(5, 0.01, 1).1.len(), 1);
    }
}
