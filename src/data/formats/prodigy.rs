//! spaCy/Prodigy JSONL (what `prodigy db-out` writes): one task per line, `{"text", "tokens":
//! [{"text", "start", "end", "id", "ws"}], "spans": [{"start", "end", "token_start", "token_end",
//! "label"}], "accept": ["energy"], "answer": "accept", "meta": {"id"}}`. Offsets count characters
//! (code points: Prodigy is Python); `token_end` is inclusive, and where tokens are given a span
//! must start and end on the tokens it names.
//!
//! `answer`: `accept` is read; `reject` (the annotator said the task is wrong: its spans are not
//! gold) and `ignore` (skipped in the app) are not read, counted in a warning; a task without an
//! answer (a task file not yet annotated) is read as given, counted. `accept` labels (a choice
//! interface) are topics. Multi-user sessions: `--annotator ID` keeps the tasks whose
//! `_annotator_id` or `_session_id` is ID; without it, one text answered by two annotators is
//! refused, naming both.

use super::doccano::{json_lines, record_article, record_id};
use super::spans::{SpanCollector, Unit};
use super::{located, topic_problems, ReadOptions};
use crate::data::{Article, DataError, ReadOutcome};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::Path;

/// Reads a Prodigy/spaCy JSONL file.
pub fn read(path: &Path, opts: ReadOptions) -> anyhow::Result<ReadOutcome> {
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", path.display()))?;
    Ok(parse(path, &bytes, opts))
}

/// Parses Prodigy JSONL; `path` only names the source in messages.
pub fn parse(path: &Path, bytes: &[u8], opts: ReadOptions) -> ReadOutcome {
    let mut counts: HashMap<&'static str, usize> = HashMap::new();
    // _input_hash → (line, annotator) of the first task read for that text.
    let mut inputs: HashMap<String, (usize, String)> = HashMap::new();
    let mut out = json_lines(path, bytes, |lineno, record, out| {
        let who = ["_annotator_id", "_session_id"]
            .iter()
            .find_map(|k| record.get(*k).and_then(Value::as_str))
            .unwrap_or("")
            .to_string();
        if let Some(want) = opts.annotator {
            let session = record.get("_session_id").and_then(Value::as_str);
            if who != want && session != Some(want) {
                *counts
                    .entry("task(s) by other annotators (--annotator) not read")
                    .or_default() += 1;
                return None;
            }
        }
        match record.get("answer").and_then(Value::as_str) {
            Some("accept") => {}
            Some("reject") => {
                *counts
                    .entry("rejected task(s) not read (their spans are not gold)")
                    .or_default() += 1;
                return None;
            }
            Some("ignore") => {
                *counts.entry("ignored task(s) not read").or_default() += 1;
                return None;
            }
            None => {
                *counts
                    .entry("task(s) without an answer read as given")
                    .or_default() += 1
            }
            Some(other) => {
                let msg = format!("\"answer\" {other:?} is not accept, reject or ignore");
                out.problems.push(DataError::new(path, lineno, msg));
                return None;
            }
        }
        if let Some(hash) = record.get("_input_hash").map(|h| h.to_string()) {
            if let Some((first, by)) = inputs.get(&hash) {
                if opts.annotator.is_none() && *by != who {
                    let id = record_id(path, lineno, &record);
                    let msg = format!(
                        "the same text was answered by {by:?} on line {first} and by {who:?} here: choose whose to read with --annotator ID; newstag does not merge annotators"
                    );
                    out.problems
                        .push(DataError::new(path, lineno, msg).in_article(&id));
                    return None;
                }
            } else {
                inputs.insert(hash, (lineno, who.clone()));
            }
        }
        task_article(path, lineno, record, opts, out)
    });
    let mut notes: Vec<(&str, usize)> = counts.into_iter().collect();
    notes.sort();
    for (what, n) in notes {
        out.warnings.push(format!("{}: {n} {what}", path.display()));
    }
    out
}

fn task_article(
    path: &Path,
    lineno: usize,
    record: Map<String, Value>,
    opts: ReadOptions,
    out: &mut ReadOutcome,
) -> Option<Article> {
    let mut article = record_article(path, lineno, &record)
        .map_err(|e| out.problems.push(e))
        .ok()?;
    let id = article.id.clone();
    let mut problems: Vec<(String, String)> = Vec::new();
    // Token character offsets, to check (or supply) the spans' offsets.
    let tokens: Vec<(Option<u64>, Option<u64>)> = record
        .get("tokens")
        .and_then(Value::as_array)
        .map(|t| {
            t.iter()
                .map(|t| (t["start"].as_u64(), t["end"].as_u64()))
                .collect()
        })
        .unwrap_or_default();
    let mut collector = SpanCollector::new(&article, opts.schema, opts.snap);
    let spans = record.get("spans");
    if let Some(items) = spans {
        let items = match items.as_array() {
            Some(i) => i.clone(),
            None => {
                problems.push((
                    "spans".into(),
                    "must be a list of {\"start\", \"end\", \"label\"}".into(),
                ));
                Vec::new()
            }
        };
        for (k, s) in items.iter().enumerate() {
            let at = format!("spans[{k}]");
            let Some(label) = s.get("label").and_then(Value::as_str) else {
                problems.push((at, "missing \"label\"".into()));
                continue;
            };
            let by_tokens = match (s["token_start"].as_u64(), s["token_end"].as_u64()) {
                (Some(ts), Some(te)) if !tokens.is_empty() => {
                    match (tokens.get(ts as usize), tokens.get(te as usize)) {
                        (Some((Some(a), _)), Some((_, Some(b)))) => {
                            Some((*a as usize, *b as usize))
                        }
                        _ => {
                            let msg = format!("token_start {ts} / token_end {te} name no token (the task has {} tokens)", tokens.len());
                            problems.push((at, msg));
                            continue;
                        }
                    }
                }
                _ => None,
            };
            let (start, end) = match (s["start"].as_u64(), s["end"].as_u64(), by_tokens) {
                (Some(a), Some(b), Some((ta, tb))) if (a as usize, b as usize) != (ta, tb) => {
                    let msg = format!("start..end {a}..{b} is not the span of its tokens ({ta}..{tb}; token_end is inclusive)");
                    problems.push((at, msg));
                    continue;
                }
                (Some(a), Some(b), _) => (a as usize, b as usize),
                (_, _, Some(t)) => t,
                _ => {
                    problems.push((at, "needs \"start\" and \"end\" (character offsets)".into()));
                    continue;
                }
            };
            collector.add(&at, start, end, label, Unit::CodePoints, None);
        }
    }
    let topics = match record.get("accept") {
        None => None,
        Some(v) => match serde_json::from_value::<Vec<Value>>(v.clone()) {
            Ok(list) => Some(
                list.iter()
                    .map(|x| match x {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect::<Vec<String>>(),
            ),
            Err(e) => {
                problems.push((
                    "accept".into(),
                    format!("must be a list of option ids: {e}"),
                ));
                None
            }
        },
    };
    let (entities, mut span_problems, notes) = collector.finish();
    for (at, note) in notes {
        out.warnings.push(format!(
            "{}:{lineno}: article {id:?}: {at}: {note}",
            path.display()
        ));
    }
    problems.append(&mut span_problems);
    if let Some(t) = &topics {
        problems.extend(
            topic_problems(t, opts.schema)
                .into_iter()
                .map(|m| ("accept".to_string(), m)),
        );
    }
    if !problems.is_empty() {
        out.problems.extend(located(path, lineno, &id, problems));
        return None;
    }
    article.entities = spans.is_some().then_some(entities);
    article.topics = topics;
    Some(article)
}

/// Prodigy JSONL of `articles`: tokens are newstag's words, every task accepted.
pub fn write(articles: &[Article]) -> Vec<u8> {
    let mut out = String::new();
    for a in articles {
        let index = super::spans::TextIndex::new(&a.text);
        let cp = |b: usize| index.from_byte(Unit::CodePoints, b);
        let tokens: Vec<Value> = a
            .words()
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let ws = a.text[w.end..].starts_with(char::is_whitespace);
                json!({"text": &a.text[w.clone()], "start": cp(w.start), "end": cp(w.end), "id": i, "ws": ws})
            })
            .collect();
        let mut r = json!({"text": a.text, "meta": {"id": a.id}, "tokens": tokens});
        if let Some(entities) = &a.entities {
            let spans: Vec<Value> = entities
                .iter()
                .map(|e| {
                    let b = a.entity_bytes(e);
                    json!({"start": cp(b.start), "end": cp(b.end), "token_start": e.words.start, "token_end": e.words.end - 1, "label": e.label})
                })
                .collect();
            r["spans"] = json!(spans);
        }
        if let Some(t) = &a.topics {
            r["accept"] = json!(t);
        }
        r["answer"] = json!("accept");
        out.push_str(&format!("{r}\n"));
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_tokens_and_annotators() {
        let data = concat!(
            r#"{"text": "🚀 Rosatom builds", "tokens": [{"text": "🚀", "start": 0, "end": 1, "id": 0, "ws": true}, {"text": "Rosatom", "start": 2, "end": 9, "id": 1, "ws": true}, {"text": "builds", "start": 10, "end": 16, "id": 2, "ws": false}], "spans": [{"start": 2, "end": 9, "token_start": 1, "token_end": 1, "label": "ORG"}], "accept": ["energy"], "answer": "accept", "_input_hash": 1, "_annotator_id": "news-ann"}"#,
            "\n",
            r#"{"text": "Rosatom builds", "spans": [{"start": 0, "end": 7, "label": "ORG"}], "answer": "reject"}"#,
            "\n",
            r#"{"text": "x y", "tokens": [{"start": 0, "end": 1}, {"start": 2, "end": 3}], "spans": [{"start": 0, "end": 1, "token_start": 0, "token_end": 1, "label": "ORG"}], "answer": "accept"}"#,
            "\n",
            r#"{"text": "🚀 Rosatom builds", "spans": [], "answer": "accept", "_input_hash": 1, "_annotator_id": "news-bob"}"#,
            "\n"
        );
        let out = parse(
            Path::new("p.jsonl"),
            data.as_bytes(),
            ReadOptions::default(),
        );
        let a = &out.articles[0];
        assert_eq!(a.id, "p:1");
        assert_eq!(
            &a.text[a.entity_bytes(&a.entities.as_ref().unwrap()[0])],
            "Rosatom"
        );
        assert_eq!(a.topics.as_deref(), Some(&["energy".to_string()][..]));
        let msgs: Vec<String> = out.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(msgs[0], "p.jsonl:3: article \"p:3\": spans[0]: start..end 0..1 is not the span of its tokens (0..3; token_end is inclusive)");
        assert!(msgs[1].starts_with("p.jsonl:4: article \"p:4\": the same text was answered by \"news-ann\" on line 1 and by \"news-bob\" here"), "{msgs:?}");
        assert_eq!(
            out.warnings,
            ["p.jsonl: 1 rejected task(s) not read (their spans are not gold)"]
        );
        let opts = ReadOptions {
            annotator: Some("news-bob"),
            ..Default::default()
        };
        let out = parse(Path::new("p.jsonl"), data.as_bytes(), opts);
        assert_eq!(out.articles.len(), 1);
        assert_eq!(out.articles[0].entities.as_deref(), Some(&[][..]));
    }
}
