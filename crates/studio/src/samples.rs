//! Sample datasets that ship inside the app, so a first run needs nothing but a model.
//!
//! Each is written into the data directory's `datasets/` folder (atomically, and again only
//! when its text changed) so runs can refer to a real file, as with any user dataset.

use crate::paths::{write_atomically, DataDir};
use serde::Serialize;

/// One shipped dataset, as the wizard lists it.
#[derive(Debug, Clone, Serialize, ts_rs::TS)]
#[ts(export)]
pub struct SampleDataset {
    pub name: String,
    /// The file in the data directory (what `datasets add` takes).
    pub path: String,
    pub description: String,
    pub records: usize,
}

/// Name / age / city extraction into JSON (alpaca format; see assets/samples/make_extract.py).
pub const EXTRACT: &str = include_str!("../../../assets/samples/extract.jsonl");
pub const EXTRACT_FILE: &str = "whetstone-demo-extract.jsonl";

const SAMPLES: &[(&str, &str, &str)] = &[(
    EXTRACT_FILE,
    EXTRACT,
    "Extract a person's name, age and city from a sentence as JSON (alpaca format, 300 records)",
)];

/// Write the samples into the data directory (where they differ) and list them.
pub fn install(dir: &DataDir) -> Result<Vec<SampleDataset>, String> {
    let mut out = vec![];
    for (file, text, description) in SAMPLES {
        let path = dir.datasets().join(file);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(*text) {
            write_atomically(&path, text.as_bytes())?;
        }
        out.push(SampleDataset {
            name: file.trim_end_matches(".jsonl").to_string(),
            path: path.display().to_string(),
            description: description.to_string(),
            records: text.lines().filter(|l| !l.trim().is_empty()).count(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_written_once_and_listed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::at(tmp.path());
        dir.ensure().unwrap();
        let list = install(&dir).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].records, 300);
        let written = std::fs::read_to_string(&list[0].path).unwrap();
        assert_eq!(written, EXTRACT);
        let modified = std::fs::metadata(&list[0].path)
            .unwrap()
            .modified()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        install(&dir).unwrap();
        let again = std::fs::metadata(&list[0].path)
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(modified, again, "an unchanged sample is not rewritten");
    }
}
