//! Articles JSONL: one article per line,
//! `{"id": "...", "text": "...", "entities": [{"start": 0, "end": 10, "label": "PER"}], "topics": ["energy"]}`.
//! Offsets count characters (Unicode scalar values, as Python does), end exclusive. `entities` and
//! `topics` are optional; an article without them carries no annotation of that kind.

use super::{Article, CharOffsets, DataError, Entity, ReadOutcome, Schema};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Deserialize)]
struct RawArticle {
    id: Option<RawId>,
    text: Option<String>,
    entities: Option<Vec<RawEntity>>,
    topics: Option<Vec<String>>,
}

/// Ids may be strings or numbers.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawId {
    Text(String),
    Number(serde_json::Number),
}

/// A character-offset entity as written in JSONL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CharSpan {
    pub start: usize,
    pub end: usize,
    pub label: String,
}

/// An annotated article as written to JSONL.
#[derive(Debug, Serialize)]
pub struct ArticleRecord<'a> {
    pub id: &'a str,
    pub text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entities: Option<Vec<CharSpan>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topics: Option<&'a [String]>,
}

type RawEntity = CharSpan;

/// How strictly to read: with a schema, unknown entity types and topics are problems.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions<'a> {
    pub schema: Option<&'a Schema>,
    /// Is an article without `id` a problem? (When not, the id is `FILESTEM:LINE`.)
    pub require_id: bool,
}

/// Reads an articles JSONL file.
pub fn read_jsonl(path: &Path, opts: ReadOptions) -> anyhow::Result<ReadOutcome> {
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", path.display()))?;
    Ok(parse_jsonl(path, &bytes, opts))
}

/// Parses JSONL bytes; `path` only names the source in messages.
pub fn parse_jsonl(path: &Path, bytes: &[u8], opts: ReadOptions) -> ReadOutcome {
    let mut out = ReadOutcome::default();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut any_line = false;
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let lineno = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        any_line = true;
        let (id, parsed) = parse_line(path, lineno, raw, opts);
        if let Some(id) = id {
            if let Some(first) = seen.get(&id) {
                let msg = format!("duplicate id (first used on line {first})");
                out.problems
                    .push(DataError::new(path, lineno, msg).in_article(&id));
                continue;
            }
            seen.insert(id, lineno);
        }
        match parsed {
            Ok(article) => out.articles.push(article),
            Err(mut problems) => out.problems.append(&mut problems),
        }
    }
    if !any_line {
        out.problems
            .push(DataError::new(path, 0, "no articles (the file is empty)"));
    }
    out
}

/// Parses one JSONL line: the record's id (when it has one) and the article or its problems.
pub fn parse_line(
    path: &Path,
    lineno: usize,
    raw: &[u8],
    opts: ReadOptions,
) -> (Option<String>, Result<Article, Vec<DataError>>) {
    match std::str::from_utf8(raw) {
        Ok(line) => parse_record(path, lineno, line, opts),
        Err(e) => {
            let msg = format!("invalid UTF-8 at byte {} of the line", e.valid_up_to() + 1);
            (None, Err(vec![DataError::new(path, lineno, msg)]))
        }
    }
}

fn parse_record(
    path: &Path,
    lineno: usize,
    line: &str,
    opts: ReadOptions,
) -> (Option<String>, Result<Article, Vec<DataError>>) {
    let err = |msg: String| DataError::new(path, lineno, msg);
    let mut raw: RawArticle = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(e) => return (None, Err(vec![err(format!("malformed JSON: {e}"))])),
    };
    let id = match raw.id.take() {
        Some(RawId::Text(s)) => s,
        Some(RawId::Number(n)) => n.to_string(),
        None if opts.require_id => return (None, Err(vec![err("missing \"id\"".into())])),
        None => format!(
            "{}:{lineno}",
            path.file_stem()
                .map(|s| s.to_string_lossy())
                .unwrap_or_default()
        ),
    };
    (Some(id.clone()), parse_annotations(&err, id, raw, opts))
}

fn parse_annotations(
    err: &dyn Fn(String) -> DataError,
    id: String,
    raw: RawArticle,
    opts: ReadOptions,
) -> Result<Article, Vec<DataError>> {
    let Some(text) = raw.text else {
        return Err(vec![err("missing \"text\"".into()).in_article(&id)]);
    };
    if text.trim().is_empty() {
        return Err(vec![err("empty \"text\"".into()).in_article(&id)]);
    }
    let mut article = Article::from_text(id.clone(), text);
    let mut problems = Vec::new();
    if let Some(topics) = raw.topics {
        for t in &topics {
            if let Some(Err(msg)) = opts.schema.map(|s| s.check_topic(t)) {
                problems.push(err(msg).in_article(&id));
            }
        }
        article.topics = Some(topics);
    }
    if let Some(mut spans) = raw.entities {
        spans.sort_by_key(|s| (s.start, s.end));
        let chars = CharOffsets::new(&article.text);
        let mut entities = Vec::with_capacity(spans.len());
        let mut prev: Option<&CharSpan> = None;
        for s in &spans {
            let what = format!("entity {}..{} {}", s.start, s.end, s.label);
            if let Some(Err(msg)) = opts.schema.map(|sc| sc.check_type(&s.label)) {
                problems.push(err(format!("{what}: {msg}")).in_article(&id));
                continue;
            }
            if s.end <= s.start {
                let kind = if s.end == s.start {
                    "is empty"
                } else {
                    "ends before it starts"
                };
                problems.push(err(format!("{what} {kind}")).in_article(&id));
                continue;
            }
            let (Some(b0), Some(b1)) = (chars.to_byte(s.start), chars.to_byte(s.end)) else {
                problems.push(
                    err(format!(
                        "{what} lies outside the text ({} characters)",
                        chars.len()
                    ))
                    .in_article(&id),
                );
                continue;
            };
            if let Some(p) = prev.filter(|p| p.end > s.start) {
                problems.push(
                    err(format!(
                        "{what} overlaps entity {}..{} {}",
                        p.start, p.end, p.label
                    ))
                    .in_article(&id),
                );
                continue;
            }
            prev = Some(s);
            match article.words_of_bytes(b0..b1) {
                Ok(words) => entities.push(Entity {
                    words,
                    label: s.label.clone(),
                }),
                Err(msg) => problems.push(
                    err(format!("{what} ({:?}) {msg}", &article.text[b0..b1])).in_article(&id),
                ),
            }
        }
        article.entities = Some(entities);
    }
    if problems.is_empty() {
        Ok(article)
    } else {
        Err(problems)
    }
}

/// Character-offset spans of an article's entities.
pub fn char_spans(article: &Article, entities: &[Entity]) -> Vec<CharSpan> {
    let chars = CharOffsets::new(&article.text);
    entities
        .iter()
        .map(|e| {
            let b = article.entity_bytes(e);
            CharSpan {
                start: chars.to_char(b.start),
                end: chars.to_char(b.end),
                label: e.label.clone(),
            }
        })
        .collect()
}

/// The JSONL line (without newline) of an annotated article.
pub fn to_json_line(article: &Article) -> String {
    let record = ArticleRecord {
        id: &article.id,
        text: &article.text,
        entities: article.entities.as_ref().map(|e| char_spans(article, e)),
        topics: article.topics.as_deref(),
    };
    serde_json::to_string(&record).expect("serialising plain data cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> ReadOutcome {
        parse_jsonl(
            Path::new("a.jsonl"),
            s.as_bytes(),
            ReadOptions {
                schema: Some(&Schema::default()),
                require_id: false,
            },
        )
    }

    #[test]
    fn reads_char_offsets_through_multibyte_text() {
        let line = r#"{"id": "x", "text": "«Gazprom» и Zürich 🚀 Tokayev", "entities": [{"start": 1, "end": 8, "label": "ORG"}, {"start": 12, "end": 18, "label": "LOC"}, {"start": 21, "end": 28, "label": "PER"}], "topics": ["energy"]}"#;
        let out = parse(line);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
        let a = &out.articles[0];
        let texts: Vec<&str> = a
            .entities
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| &a.text[a.entity_bytes(e)])
            .collect();
        assert_eq!(texts, ["Gazprom", "Zürich", "Tokayev"]);
        let back: serde_json::Value = serde_json::from_str(&to_json_line(a)).unwrap();
        let orig: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(back, orig);
    }

    #[test]
    fn reports_every_kind_of_bad_span() {
        let out = parse(concat!(
            r#"{"id": "a", "text": "Kazakhstan and Uzbekistan", "entities": [{"start": 0, "end": 6, "label": "LOC"}, {"start": 5, "end": 3, "label": "LOC"}, {"start": 15, "end": 15, "label": "LOC"}, {"start": 15, "end": 99, "label": "LOC"}, {"start": 15, "end": 25, "label": "XYZ"}]}"#,
            "\n",
            r#"{"id": "b", "text": "Rome and Paris", "entities": [{"start": 0, "end": 8, "label": "LOC"}, {"start": 5, "end": 14, "label": "LOC"}], "topics": ["sport"]}"#,
            "\n{\"id\": \"a\", \"text\": \"dup\"}\n{\"id\": \"c\"}\nnot json\n"
        ));
        let msgs: Vec<String> = out.problems.iter().map(|p| p.to_string()).collect();
        let expect = [
            "a.jsonl:1: article \"a\": entity 15..25 XYZ: unknown entity type \"XYZ\" (known: PER, ORG, LOC, MISC)",
            "a.jsonl:1: article \"a\": entity 0..6 LOC (\"Kazakh\") ends inside the word \"Kazakhstan\" (split as \"Kazakh\" + \"stan\")",
            "a.jsonl:1: article \"a\": entity 5..3 LOC ends before it starts",
            "a.jsonl:1: article \"a\": entity 15..15 LOC is empty",
            "a.jsonl:1: article \"a\": entity 15..99 LOC lies outside the text (25 characters)",
            "a.jsonl:2: article \"b\": unknown topic \"sport\" (known: energy, borders, defense, trade)",
            "a.jsonl:2: article \"b\": entity 5..14 LOC overlaps entity 0..8 LOC",
            "a.jsonl:3: article \"a\": duplicate id (first used on line 1)",
            "a.jsonl:4: article \"c\": missing \"text\"",
        ];
        for e in expect {
            assert!(msgs.iter().any(|m| m == e), "missing {e:?} in {msgs:#?}");
        }
        assert!(msgs
            .last()
            .unwrap()
            .starts_with("a.jsonl:5: malformed JSON"));
    }

    #[test]
    fn empty_file_is_a_problem() {
        assert_eq!(
            parse("\n\n").problems[0].to_string(),
            "a.jsonl: no articles (the file is empty)"
        );
    }
}
