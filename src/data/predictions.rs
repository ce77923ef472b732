//! Predictions files (`eval --predictions`): another system's output, or `tag`'s, one JSON line
//! per article in the `tag` output format, read leniently and matched to the annotated articles by
//! id. Lines are read as every JSONL file is ([`super::jsonl::content_lines`]); spans are
//! [`CharSpan`]s that must be whole words of their article.

use super::jsonl::{content_lines, line_text};
use super::load::found_labels;
use super::span::RangeError;
use super::{Article, CharOffsets, CharSpan, DataError, Entity};
use anyhow::Context;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// One line of a predictions file: the `tag` output format, leniently. `topics` entries may be
/// `{"label", "score"}` objects or plain labels; `text` and `score` of entities are optional.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PredictionLine {
    id: PredictionId,
    #[serde(default)]
    entities: Option<Vec<PredictedSpan>>,
    #[serde(default)]
    topics: Option<Vec<PredictedTopic>>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PredictionId {
    Text(String),
    Number(serde_json::Number),
}

/// An entity of a predictions line: the span, and what `tag` adds to it when the file has it.
#[derive(Debug, Deserialize)]
struct PredictedSpan {
    #[serde(flatten)]
    span: CharSpan,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    score: Option<f32>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PredictedTopic {
    Scored {
        label: String,
        #[serde(default)]
        score: Option<f32>,
    },
    Label(String),
}

/// What a predictions file says about one article. A score the file does not give is NaN.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictedArticle {
    /// Entities as whole words of the article, with their scores.
    pub entities: Vec<(Entity, f32)>,
    /// The topics the system asserts, with their scores.
    pub topics: Vec<(String, f32)>,
}

/// A predictions file read against the annotated articles.
#[derive(Debug)]
pub struct Predictions {
    /// Per annotated article (in order), its prediction if one was read.
    pub articles: Vec<Option<PredictedArticle>>,
    /// Whether any line had a `topics` field.
    pub has_topics: bool,
    /// Invalid lines and spans (what `--skip-invalid` may skip).
    pub problems: Vec<DataError>,
    /// Annotated articles without a prediction (none, or an error record): never skipped.
    pub missing: Vec<DataError>,
}

/// Reads a predictions file and matches it to `gold` (see [`parse_predictions`]).
pub fn read_predictions(
    path: &Path,
    gold: &[Article],
    label_map: &HashMap<String, String>,
) -> anyhow::Result<Predictions> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    parse_predictions(path, &bytes, gold, label_map)
}

/// Parses predictions and matches them to `gold` by id; `path` only names the source in messages.
/// `label_map` renames predicted entity types (an empty name drops the type). Errors (rather than
/// problems) when the gold articles' ids are not unique, since nothing could then be matched.
pub fn parse_predictions(
    path: &Path,
    bytes: &[u8],
    gold: &[Article],
    label_map: &HashMap<String, String>,
) -> anyhow::Result<Predictions> {
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    for (i, a) in gold.iter().enumerate() {
        if let Some(first) = by_id.insert(&a.id, i) {
            anyhow::bail!(
                "the --data articles {first} and {i} share the id {:?}: predictions are matched by id, so ids must be unique",
                a.id
            );
        }
    }
    let mut articles: Vec<Option<PredictedArticle>> = vec![None; gold.len()];
    let mut seen_on: Vec<usize> = vec![0; gold.len()];
    let mut problems = Vec::new();
    let mut missing = Vec::new();
    let mut has_topics = false;
    for (lineno, raw) in content_lines(bytes) {
        let record = line_text(path, lineno, raw).and_then(|line| {
            serde_json::from_str::<PredictionLine>(line.trim())
                .map_err(|e| DataError::new(path, lineno, format!("not a prediction line: {e}")))
        });
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        let id = match record.id {
            PredictionId::Text(s) => s,
            PredictionId::Number(n) => n.to_string(),
        };
        let problem = |msg: String| DataError::new(path, lineno, msg).in_article(&id);
        let Some(&index) = by_id.get(id.as_str()) else {
            problems.push(problem("no --data article has this id".into()));
            continue;
        };
        if seen_on[index] > 0 {
            problems.push(problem(format!(
                "a second prediction for this article (the first is on line {})",
                seen_on[index]
            )));
            continue;
        }
        seen_on[index] = lineno;
        if let Some(error) = record.error {
            // Not skippable: the article would have no prediction.
            missing.push(problem(format!(
                "the prediction is an error record ({error:?}), not a tagging"
            )));
            continue;
        }
        let article = &gold[index];
        let chars = CharOffsets::new(&article.text);
        let mut entities = Vec::new();
        for predicted in record.entities.unwrap_or_default() {
            let span = &predicted.span;
            let label = match label_map.get(&span.label) {
                Some(to) if to.is_empty() => continue,
                Some(to) => to.clone(),
                None => span.label.clone(),
            };
            match span_words(article, &chars, &predicted) {
                Ok(words) => {
                    entities.push((Entity { words, label }, predicted.score.unwrap_or(f32::NAN)))
                }
                Err(msg) => problems.push(problem(format!(
                    "entity {}..{} {}: {msg}",
                    span.start, span.end, span.label
                ))),
            }
        }
        has_topics |= record.topics.is_some();
        let topics = record
            .topics
            .unwrap_or_default()
            .into_iter()
            .map(|t| match t {
                PredictedTopic::Scored { label, score } => (label, score.unwrap_or(f32::NAN)),
                PredictedTopic::Label(label) => (label, f32::NAN),
            })
            .collect();
        articles[index] = Some(PredictedArticle { entities, topics });
    }
    missing.extend(
        gold.iter()
            .zip(&seen_on)
            .filter(|(_, &line)| line == 0)
            .map(|(a, _)| {
                DataError::new(path, 0, "no prediction for this --data article").in_article(&a.id)
            }),
    );
    Ok(Predictions {
        articles,
        has_topics,
        problems,
        missing,
    })
}

/// The words a predicted span covers, or why it does not cover whole words.
fn span_words(
    article: &Article,
    chars: &CharOffsets,
    predicted: &PredictedSpan,
) -> Result<std::ops::Range<usize>, String> {
    let span = &predicted.span;
    let bytes = chars
        .byte_range(span.start, span.end)
        .map_err(|e| match e {
            RangeError::Empty | RangeError::Reversed => "empty or reversed span".to_string(),
            RangeError::OutsideText(n) => {
                format!("runs past the end of the article ({n} characters)")
            }
        })?;
    let found = &article.text[bytes.clone()];
    if let Some(text) = &predicted.text {
        if text != found {
            return Err(format!(
                "its text is {text:?} but the article has {found:?} there (offsets count characters, end exclusive)"
            ));
        }
    }
    article
        .words_of_bytes(bytes)
        .map_err(|e| format!("{found:?} is not whole words: {e}"))
}

impl Predictions {
    /// The topic labels to score these predictions on: the gold data's topics, then any other
    /// predicted.
    pub fn topic_labels(&self, gold: &[Article]) -> Vec<String> {
        let (_, mut labels) = found_labels(gold);
        let mut extra: Vec<String> = self
            .articles
            .iter()
            .flatten()
            .flat_map(|p| p.topics.iter().map(|(l, _)| l.clone()))
            .filter(|l| !labels.contains(l))
            .collect();
        extra.sort();
        extra.dedup();
        labels.extend(extra);
        labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gold() -> Vec<Article> {
        let mut a = Article::from_text("a", "Zoë met Anna Berg in Kazakhstan's capital.");
        a.entities = Some(vec![Entity {
            words: 0..1,
            label: "PER".into(),
        }]);
        a.topics = Some(vec!["energy".into()]);
        let b = Article::from_text("7", "Gazprom said.");
        vec![a, b]
    }

    fn parse(lines: &str, map: &[(&str, &str)]) -> Predictions {
        let map = map
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        parse_predictions(Path::new("p.jsonl"), lines.as_bytes(), &gold(), &map).unwrap()
    }

    fn messages(p: &Predictions) -> Vec<String> {
        p.problems
            .iter()
            .chain(&p.missing)
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn predictions_are_matched_by_id_and_offsets_count_characters() {
        let p = parse(
            concat!(
                r#"{"id": "a", "entities": [{"start": 0, "end": 3, "label": "PERSON", "text": "Zoë", "score": 0.9},"#,
                r#" {"start": 21, "end": 31, "label": "GPE"}, {"start": 8, "end": 12, "label": "DATE"}],"#,
                r#" "topics": [{"label": "energy", "score": 0.8}, "trade"]}"#,
                "\n\n",
                r#"{"id": 7, "entities": []}"#,
                "\n"
            ),
            &[("PERSON", "PER"), ("DATE", "")],
        );
        assert!(messages(&p).is_empty(), "{:?}", messages(&p));
        assert!(p.has_topics);
        let PredictedArticle { entities, topics } = p.articles[0].as_ref().unwrap();
        let spans: Vec<_> = entities
            .iter()
            .map(|(e, _)| (e.words.clone(), e.label.as_str()))
            .collect();
        // Words: Zoë(0) met(1) Anna(2) Berg(3) in(4) Kazakhstan(5) '(6) s(7) ...
        assert_eq!(spans, [(0..1, "PER"), (5..6, "GPE")]);
        assert_eq!(entities[0].1, 0.9);
        assert!(entities[1].1.is_nan());
        assert_eq!(topics[0], ("energy".to_string(), 0.8));
        assert_eq!(topics[1].0, "trade");
        assert_eq!(p.topic_labels(&gold()), ["energy", "trade"]);
    }

    #[test]
    fn every_mismatch_is_reported_with_line_and_id() {
        let p = parse(
            concat!(
                r#"{"id": "zz", "entities": []}"#,
                "\n",
                r#"{"id": "a", "entities": [{"start": 21, "end": 27, "label": "LOC"},"#,
                r#" {"start": 40, "end": 50, "label": "LOC"}, {"start": 3, "end": 3, "label": "LOC"},"#,
                r#" {"start": 0, "end": 3, "label": "PER", "text": "Zo"}, {"start": 3, "end": 8, "label": "PER"}]}"#,
                "\n",
                r#"{"id": "a", "entities": []}"#,
                "\n{oops\n",
                r#"{"id": "7", "error": "empty article"}"#,
                "\n"
            ),
            &[],
        );
        let m = messages(&p);
        let expect = [
            "p.jsonl:1: article \"zz\": no --data article has this id",
            "p.jsonl:2: article \"a\": entity 21..27 LOC: \"Kazakh\" is not whole words: ends inside the word \"Kazakhstan\"",
            "p.jsonl:2: article \"a\": entity 40..50 LOC: runs past the end of the article (42 characters)",
            "p.jsonl:2: article \"a\": entity 3..3 LOC: empty or reversed span",
            "p.jsonl:2: article \"a\": entity 0..3 PER: its text is \"Zo\" but the article has \"Zoë\" there",
            "p.jsonl:2: article \"a\": entity 3..8 PER: \" met \" is not whole words: starts or ends with white space",
            "p.jsonl:3: article \"a\": a second prediction for this article (the first is on line 2)",
            "p.jsonl:4: not a prediction line",
            "p.jsonl:5: article \"7\": the prediction is an error record (\"empty article\"), not a tagging",
        ];
        assert_eq!(m.len(), expect.len(), "{m:#?}");
        for (got, want) in m.iter().zip(expect) {
            assert!(got.starts_with(want), "{got}\n  should start with\n{want}");
        }
        assert!(!p.has_topics);
    }

    #[test]
    fn lines_are_read_as_every_jsonl_file_is() {
        // A byte-order mark, CRLF line ends, blank lines; a line that is not UTF-8 keeps its number.
        let p = parse_predictions(
            Path::new("p.jsonl"),
            b"\xEF\xBB\xBF{\"id\": \"a\", \"entities\": []}\r\n \r\n{\"id\": \"7\xFF\"}\r\n",
            &gold(),
            &HashMap::new(),
        )
        .unwrap();
        assert!(p.articles[0].is_some());
        let m = messages(&p);
        assert_eq!(
            m[0], "p.jsonl:3: invalid UTF-8 at byte 10 of the line",
            "{m:?}"
        );
        assert_eq!(
            m[1],
            "p.jsonl: article \"7\": no prediction for this --data article"
        );
    }

    #[test]
    fn duplicate_gold_ids_are_an_error() {
        let mut g = gold();
        g[1].id = "a".into();
        let err = parse_predictions(Path::new("p"), b"", &g, &HashMap::new()).unwrap_err();
        assert!(err.to_string().contains("share the id \"a\""), "{err}");
    }
}
