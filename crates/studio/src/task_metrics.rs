//! Task metrics: how well a generated answer matches the reference answer of a held-out
//! record, each a number in [0, 1] per example (a corpus figure is their mean).
//!
//! - `exact_match`: the texts equal after trimming.
//! - `normalized_match`: equal after SQuAD's normalisation (lowercase, punctuation and the
//!   articles a / an / the removed, whitespace collapsed).
//! - `contains`: the normalised reference occurs in the normalised answer.
//! - `regex`: the answer matches a pattern the user gives.
//! - `json_valid`: the answer (a Markdown code fence around it allowed) parses as JSON.
//! - `json_fields`: the share of the reference object's top-level fields the answer's
//!   object has with equal values (a non-object reference: the values equal).
//! - `rouge_l`: ROUGE-L F1 on the tokens rouge-score's default tokenizer makes (lowercased
//!   runs of ASCII letters and digits).
//! - `chrf`: chrF (character 1- to 6-grams without whitespace, β = 2, precision and recall
//!   averaged over the orders both texts have), as sacrebleu defines it, on a 0–1 scale.

use serde::Serialize;
use std::collections::HashMap;

/// A metric by name, as the CLI and the window pick them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ts_rs::TS)]
#[serde(rename_all = "snake_case")]
#[ts(export)]
pub enum TaskMetric {
    ExactMatch,
    NormalizedMatch,
    Contains,
    Regex,
    JsonValid,
    JsonFields,
    RougeL,
    Chrf,
}

impl TaskMetric {
    pub const ALL: [TaskMetric; 8] = [
        Self::ExactMatch,
        Self::NormalizedMatch,
        Self::Contains,
        Self::Regex,
        Self::JsonValid,
        Self::JsonFields,
        Self::RougeL,
        Self::Chrf,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::ExactMatch => "exact_match",
            Self::NormalizedMatch => "normalized_match",
            Self::Contains => "contains",
            Self::Regex => "regex",
            Self::JsonValid => "json_valid",
            Self::JsonFields => "json_fields",
            Self::RougeL => "rouge_l",
            Self::Chrf => "chrf",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<_> = Self::ALL.iter().map(|m| m.as_str()).collect();
                format!("unknown metric `{s}` (one of {})", known.join(", "))
            })
    }

    /// The metrics that suit these references: JSON objects get the JSON metrics, short
    /// answers (a few words) the match metrics, free text ROUGE-L and chrF.
    pub fn pick(references: &[&str]) -> Vec<TaskMetric> {
        if references.is_empty() {
            return vec![];
        }
        let json = references
            .iter()
            .all(|r| matches!(parse_json(r), Some(serde_json::Value::Object(_))));
        if json {
            return vec![Self::JsonValid, Self::JsonFields, Self::ExactMatch];
        }
        let short = references.iter().all(|r| r.split_whitespace().count() <= 5);
        if short {
            vec![Self::ExactMatch, Self::NormalizedMatch, Self::Contains]
        } else {
            vec![Self::RougeL, Self::Chrf]
        }
    }

    /// The score of one answer; `pattern` is the `regex` metric's (required for it).
    pub fn score(
        &self,
        answer: &str,
        reference: &str,
        pattern: Option<&regex::Regex>,
    ) -> Result<f64, String> {
        Ok(match self {
            Self::ExactMatch => flag(answer.trim() == reference.trim()),
            Self::NormalizedMatch => flag(normalize(answer) == normalize(reference)),
            Self::Contains => flag(normalize(answer).contains(&normalize(reference))),
            Self::Regex => {
                let p = pattern.ok_or("the regex metric needs a pattern (--pattern)")?;
                flag(p.is_match(answer.trim()))
            }
            Self::JsonValid => flag(parse_json(answer).is_some()),
            Self::JsonFields => json_fields(answer, reference),
            Self::RougeL => rouge_l(answer, reference),
            Self::Chrf => chrf(answer, reference),
        })
    }
}

fn flag(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// SQuAD's answer normalisation: lowercase, punctuation removed, the English articles
/// removed, whitespace collapsed.
pub fn normalize(s: &str) -> String {
    let lower = s.to_lowercase();
    let no_punct: String = lower
        .chars()
        .filter(|c| !(c.is_ascii_punctuation() || (!c.is_ascii() && is_unicode_punct(*c))))
        .collect();
    no_punct
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// General punctuation beyond ASCII (quotes, dashes, CJK marks).
fn is_unicode_punct(c: char) -> bool {
    matches!(c as u32, 0x2010..=0x2027 | 0x2030..=0x205E | 0x3000..=0x303F | 0xFF01..=0xFF0F | 0xFF1A..=0xFF20)
        || matches!(c, '«' | '»' | '¿' | '¡' | '·')
}

/// The JSON an answer holds: the whole trimmed text, or the inside of one Markdown code
/// fence (```json ... ```).
pub fn parse_json(s: &str) -> Option<serde_json::Value> {
    let t = s.trim();
    let inner = t
        .strip_prefix("```")
        .and_then(|rest| rest.strip_suffix("```"))
        .map(|body| body.trim_start_matches("json").trim())
        .unwrap_or(t);
    serde_json::from_str(inner).ok()
}

fn json_fields(answer: &str, reference: &str) -> f64 {
    let (Some(a), Some(r)) = (parse_json(answer), parse_json(reference)) else {
        return 0.0;
    };
    match (&a, &r) {
        (serde_json::Value::Object(ao), serde_json::Value::Object(ro)) if !ro.is_empty() => {
            let equal = ro.iter().filter(|(k, v)| ao.get(*k) == Some(v)).count();
            equal as f64 / ro.len() as f64
        }
        _ => flag(a == r),
    }
}

/// rouge-score's default tokens: lowercase, every run of characters other than ASCII
/// letters and digits a separator.
fn rouge_tokens(s: &str) -> Vec<String> {
    s.to_lowercase()
        .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
        .filter(|w| !w.is_empty())
        .map(String::from)
        .collect()
}

fn lcs(a: &[String], b: &[String]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    for x in a {
        let mut cur = vec![0usize; b.len() + 1];
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y {
                prev[j] + 1
            } else {
                cur[j].max(prev[j + 1])
            };
        }
        prev = cur;
    }
    prev[b.len()]
}

/// ROUGE-L F1 (β = 1).
pub fn rouge_l(answer: &str, reference: &str) -> f64 {
    let (a, r) = (rouge_tokens(answer), rouge_tokens(reference));
    if a.is_empty() || r.is_empty() {
        return 0.0;
    }
    let l = lcs(&a, &r) as f64;
    let (p, rec) = (l / a.len() as f64, l / r.len() as f64);
    if p + rec == 0.0 {
        0.0
    } else {
        2.0 * p * rec / (p + rec)
    }
}

fn char_ngrams(chars: &[char], n: usize) -> HashMap<&[char], usize> {
    let mut m = HashMap::new();
    if chars.len() >= n {
        for w in chars.windows(n) {
            *m.entry(w).or_insert(0) += 1;
        }
    }
    m
}

/// chrF with character 1- to 6-grams and β = 2, in [0, 1].
pub fn chrf(answer: &str, reference: &str) -> f64 {
    let strip = |s: &str| {
        s.chars()
            .filter(|c| !c.is_whitespace())
            .collect::<Vec<char>>()
    };
    let (a, r) = (strip(answer), strip(reference));
    let (mut prec, mut rec, mut orders) = (0.0, 0.0, 0usize);
    for n in 1..=6 {
        let (ha, hr) = (char_ngrams(&a, n), char_ngrams(&r, n));
        let (na, nr): (usize, usize) = (ha.values().sum(), hr.values().sum());
        if na == 0 || nr == 0 {
            continue;
        }
        let common: usize = ha
            .iter()
            .map(|(g, c)| (*c).min(hr.get(g).copied().unwrap_or(0)))
            .sum();
        prec += common as f64 / na as f64;
        rec += common as f64 / nr as f64;
        orders += 1;
    }
    if orders == 0 {
        return 0.0;
    }
    let (p, r) = (prec / orders as f64, rec / orders as f64);
    let b2 = 4.0;
    if p + r == 0.0 {
        0.0
    } else {
        (1.0 + b2) * p * r / (b2 * p + r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(m: TaskMetric, a: &str, r: &str) -> f64 {
        m.score(a, r, None).unwrap()
    }

    #[test]
    fn match_metrics() {
        use TaskMetric::*;
        assert_eq!(s(ExactMatch, " Paris\n", "Paris"), 1.0);
        assert_eq!(s(ExactMatch, "paris", "Paris"), 0.0);
        assert_eq!(s(NormalizedMatch, "The Paris!", "paris"), 1.0);
        assert_eq!(s(NormalizedMatch, "“Paris”", "paris"), 1.0);
        assert_eq!(s(NormalizedMatch, "Paris, France", "paris"), 0.0);
        assert_eq!(s(Contains, "It is Paris, France.", "paris france"), 1.0);
        assert_eq!(s(Contains, "Lyon", "Paris"), 0.0);
        let p = regex::Regex::new(r"^\d{4}-\d{2}-\d{2}$").unwrap();
        assert_eq!(Regex.score("2024-05-01", "", Some(&p)).unwrap(), 1.0);
        assert_eq!(Regex.score("May 1", "", Some(&p)).unwrap(), 0.0);
        assert!(Regex.score("x", "", None).unwrap_err().contains("pattern"));
    }

    #[test]
    fn json_metrics() {
        use TaskMetric::*;
        let r = r#"{"name": "Ana", "age": 34, "city": "Porto"}"#;
        assert_eq!(s(JsonValid, "```json\n{\"a\": 1}\n```", r), 1.0);
        assert_eq!(s(JsonValid, "{\"a\": 1", r), 0.0);
        assert_eq!(s(JsonFields, r, r), 1.0);
        let two = r#"{"name": "Ana", "age": 34, "city": "Lisbon", "x": 1}"#;
        assert!((s(JsonFields, two, r) - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(s(JsonFields, "not json", r), 0.0);
        // an age written as a string is a different value
        assert!(
            (s(
                JsonFields,
                r#"{"name": "Ana", "age": "34", "city": "Porto"}"#,
                r
            ) - 2.0 / 3.0)
                .abs()
                < 1e-12
        );
    }

    #[test]
    fn rouge_l_is_lcs_f1_on_rouge_tokens() {
        // LCS of "the cat sat on the mat" and "the cat lay on the mat" is 5 of 6 each way
        assert!(
            (rouge_l("The cat sat on the mat.", "the cat lay on the mat") - 5.0 / 6.0).abs()
                < 1e-12
        );
        // P = 2/2, R = 2/4 -> F1 = 2/3
        assert!((rouge_l("police killed", "police killed the gunman") - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(rouge_l("", "x"), 0.0);
        assert_eq!(rouge_l("a b", "a b"), 1.0);
    }

    #[test]
    fn chrf_by_hand() {
        assert_eq!(chrf("abc", "abc"), 1.0);
        assert_eq!(chrf("abc", "xyz"), 0.0);
        // "ab" vs "abc": 1-grams P 2/2 R 2/3; 2-grams P 1/1 R 1/2; the 3-gram order is
        // skipped (the answer has none) -> P 1, R 7/12, F2 = 5PR / (4P + R)
        let (p, r) = (1.0, (2.0 / 3.0 + 0.5) / 2.0);
        let want = 5.0 * p * r / (4.0 * p + r);
        assert!((chrf("a b", "abc") - want).abs() < 1e-12);
    }

    /// sacrebleu 2.5.1's `CHRF().sentence_score(a, [r]).score / 100` and rouge-score 0.1.2's
    /// `RougeScorer(["rougeL"]).score(r, a)["rougeL"].fmeasure` on the same pairs.
    #[test]
    fn chrf_and_rouge_l_agree_with_sacrebleu_and_rouge_score() {
        let cases = [
            ("a b", "abc", 0.6363636363636362, 0.0),
            (
                "The cat sat on the mat.",
                "the cat lay on the mat",
                0.5434807872002498,
                0.8333333333333334,
            ),
            (
                r#"{"name": "Ana", "age": 34}"#,
                r#"{"name": "Ana", "age": 35, "city": "Porto"}"#,
                0.5728771127987654,
                0.6,
            ),
            (
                "Paris",
                "Paris, France",
                0.3331054883150861,
                0.6666666666666666,
            ),
            ("xyz", "abc", 0.0, 0.0),
            ("", "abc", 0.0, 0.0),
        ];
        for (a, r, want_chrf, want_rouge) in cases {
            assert!(
                (chrf(a, r) - want_chrf).abs() < 1e-12,
                "chrF {a:?} {r:?}: {}",
                chrf(a, r)
            );
            assert!(
                (rouge_l(a, r) - want_rouge).abs() < 1e-12,
                "ROUGE-L {a:?} {r:?}: {}",
                rouge_l(a, r)
            );
        }
    }

    #[test]
    fn picks_metrics_from_the_references() {
        use TaskMetric::*;
        assert_eq!(
            TaskMetric::pick(&[r#"{"a": 1}"#]),
            [JsonValid, JsonFields, ExactMatch]
        );
        assert_eq!(
            TaskMetric::pick(&["Paris", "42"]),
            [ExactMatch, NormalizedMatch, Contains]
        );
        assert_eq!(
            TaskMetric::pick(&["a long free text answer with many words in it"]),
            [RougeL, Chrf]
        );
        assert!(TaskMetric::parse("bleu")
            .unwrap_err()
            .contains("exact_match"));
        assert_eq!(TaskMetric::parse("rouge_l").unwrap(), RougeL);
    }
}
