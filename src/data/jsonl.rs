//! Articles JSONL: one article per line,
//! `{"id": "...", "text": "...", "entities": [{"start": 0, "end": 10, "label": "PER"}], "topics": ["energy"]}`.
//! Offsets count characters (Unicode scalar values, as Python does), end exclusive. `entities` and
//! `topics` are optional; an article without them carries no annotation of that kind.

use super::span::RangeError;
use super::{
    blank_reason, check_entity_type, check_topics, Article, CharOffsets, CharSpan, DataError,
    Entity, ReadOutcome, Schema,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

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

/// The lines of JSONL bytes that hold something, with their line numbers (from 1): a byte-order
/// mark at the start, the `\r` of `\r\n` line ends and blank lines are dropped. Every JSONL reader
/// (articles, predictions) reads its lines through this.
pub fn content_lines(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, raw)| (i + 1, raw.strip_suffix(b"\r").unwrap_or(raw)))
        .filter(|(_, raw)| !raw.iter().all(u8::is_ascii_whitespace))
}

/// A line as text, or the problem that it is not UTF-8.
pub fn line_text<'a>(path: &Path, lineno: usize, raw: &'a [u8]) -> Result<&'a str, DataError> {
    std::str::from_utf8(raw).map_err(|e| {
        let msg = format!("invalid UTF-8 at byte {} of the line", e.valid_up_to() + 1);
        DataError::new(path, lineno, msg)
    })
}

/// Parses JSONL bytes; `path` only names the source in messages.
pub fn parse_jsonl(path: &Path, bytes: &[u8], opts: ReadOptions) -> ReadOutcome {
    let mut out = ReadOutcome::default();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut any_line = false;
    for (lineno, raw) in content_lines(bytes) {
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
            Ok(article) => match blank_reason(&article.text) {
                None => out.articles.push(article),
                Some(why) => out.problems.push(
                    DataError::new(path, lineno, format!("empty \"text\" ({why})"))
                        .in_article(&article.id),
                ),
            },
            Err(mut problems) => out.problems.append(&mut problems),
        }
    }
    if !any_line {
        out.problems
            .push(DataError::new(path, 0, "no articles (the file is empty)"));
    }
    out
}

/// Parses one JSONL line: the line's own `id` (when it has a readable one, even if another field
/// is bad) and the article or its problems. An article without an id is named `FILESTEM:LINE`.
/// Whether the text has content is left to the caller (see [`super::blank_reason`]).
pub fn parse_line(
    path: &Path,
    lineno: usize,
    raw: &[u8],
    opts: ReadOptions,
) -> (Option<String>, Result<Article, Vec<DataError>>) {
    match line_text(path, lineno, raw) {
        Ok(line) => parse_record(path, lineno, line, opts),
        Err(e) => (None, Err(vec![e])),
    }
}

fn parse_record(
    path: &Path,
    lineno: usize,
    line: &str,
    opts: ReadOptions,
) -> (Option<String>, Result<Article, Vec<DataError>>) {
    let err = |msg: String| DataError::new(path, lineno, msg);
    // Read as a plain JSON object first: the id is known (and kept in every message) even when
    // another field has the wrong shape.
    let mut record = match serde_json::from_str::<serde_json::Value>(line) {
        Ok(serde_json::Value::Object(map)) => map,
        Ok(other) => {
            let msg = format!(
                "expected a JSON object {{\"id\": ..., \"text\": ...}}, found {}",
                json_kind(&other)
            );
            return (None, Err(vec![err(msg)]));
        }
        Err(e) => return (None, Err(vec![err(format!("malformed JSON: {e}"))])),
    };
    // A map keeps the last of repeated keys: a line giving "text" twice is refused, not half read.
    if let Err(e) = serde_json::from_str::<KnownFields>(line) {
        return (None, Err(vec![err(format!("malformed JSON: {e}"))]));
    }
    let own_id = match record.remove("id") {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        None | Some(serde_json::Value::Null) if !opts.require_id => None,
        None | Some(serde_json::Value::Null) => {
            return (None, Err(vec![err("missing \"id\"".into())]))
        }
        Some(other) => {
            let msg = format!(
                "\"id\" must be a string or a number, not {}",
                json_kind(&other)
            );
            return (None, Err(vec![err(msg)]));
        }
    };
    let id = own_id.clone().unwrap_or_else(|| {
        format!(
            "{}:{lineno}",
            path.file_stem()
                .map(|s| s.to_string_lossy())
                .unwrap_or_default()
        )
    });
    let in_article = |msg: String| err(msg).in_article(&id);
    (own_id, parse_fields(&in_article, &id, record, opts))
}

/// The fields newstag reads, only to notice one given twice.
#[derive(Deserialize)]
struct KnownFields {
    #[serde(rename = "id")]
    _id: Option<serde::de::IgnoredAny>,
    #[serde(rename = "text")]
    _text: Option<serde::de::IgnoredAny>,
    #[serde(rename = "entities")]
    _entities: Option<serde::de::IgnoredAny>,
    #[serde(rename = "topics")]
    _topics: Option<serde::de::IgnoredAny>,
}

/// "an object", "true", "a list"...: what a JSON value is, for messages.
fn json_kind(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "null".into(),
        serde_json::Value::Bool(b) => b.to_string(),
        serde_json::Value::Number(_) => "a number".into(),
        serde_json::Value::String(_) => "a string".into(),
        serde_json::Value::Array(_) => "a list".into(),
        serde_json::Value::Object(_) => "an object".into(),
    }
}

/// Reads one optional field of a record; `Err` names the field and what it should hold.
fn field<T: serde::de::DeserializeOwned>(
    record: &mut serde_json::Map<String, serde_json::Value>,
    name: &str,
    shape: &str,
) -> Result<Option<T>, String> {
    match record.remove(name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v)
            .map(Some)
            .map_err(|e| format!("{name:?} must be {shape}: {e}")),
    }
}

fn parse_fields(
    err: &dyn Fn(String) -> DataError,
    id: &str,
    mut record: serde_json::Map<String, serde_json::Value>,
    opts: ReadOptions,
) -> Result<Article, Vec<DataError>> {
    let text = field::<String>(&mut record, "text", "a string");
    let topics = field::<Vec<String>>(&mut record, "topics", "a list of topic names");
    let spans = field::<Vec<CharSpan>>(
        &mut record,
        "entities",
        "a list of {\"start\": N, \"end\": N, \"label\": \"TYPE\"}",
    );
    let mut problems: Vec<DataError> = [
        &text.as_ref().err(),
        &topics.as_ref().err(),
        &spans.as_ref().err(),
    ]
    .into_iter()
    .flatten()
    .map(|msg| err(msg.to_string()))
    .collect();
    let (Ok(text), Ok(topics), Ok(spans)) = (text, topics, spans) else {
        return Err(problems);
    };
    let Some(text) = text else {
        return Err(vec![err("missing \"text\"".into())]);
    };
    let mut article = Article::from_text(id, text);
    if let Some(topics) = topics {
        problems.extend(check_topics(&topics).into_iter().map(err));
        for t in &topics {
            if let Some(Err(msg)) = opts.schema.map(|s| s.check_topic(t)) {
                problems.push(err(msg));
            }
        }
        article.topics = Some(topics);
    }
    if let Some(mut spans) = spans {
        spans.sort_by_key(|s| (s.start, s.end));
        let chars = CharOffsets::new(&article.text);
        let mut entities = Vec::with_capacity(spans.len());
        let mut prev: Option<&CharSpan> = None;
        for s in &spans {
            if let Err(msg) = check_entity_type(&s.label) {
                problems.push(err(format!("entity {}..{}: {msg}", s.start, s.end)));
                continue;
            }
            // The label is well-formed from here on: messages show it as it is.
            let what = format!("entity {}..{} {}", s.start, s.end, s.label);
            if let Some(Err(msg)) = opts.schema.map(|sc| sc.check_type(&s.label)) {
                problems.push(err(format!("{what}: {msg}")));
                continue;
            }
            let bytes = match chars.byte_range(s.start, s.end) {
                Ok(bytes) => bytes,
                Err(why) => {
                    let why = match why {
                        RangeError::Empty => "is empty".to_string(),
                        RangeError::Reversed => "ends before it starts".to_string(),
                        RangeError::OutsideText(n) => {
                            format!("lies outside the text ({n} characters)")
                        }
                    };
                    problems.push(err(format!("{what} {why}")));
                    continue;
                }
            };
            if let Some(p) = prev.filter(|p| p.end > s.start) {
                problems.push(err(format!(
                    "{what} overlaps entity {}..{} {}",
                    p.start, p.end, p.label
                )));
                continue;
            }
            prev = Some(s);
            match article.words_of_bytes(bytes.clone()) {
                Ok(words) => entities.push(Entity {
                    words,
                    label: s.label.clone(),
                }),
                Err(msg) => {
                    problems.push(err(format!("{what} ({:?}) {msg}", &article.text[bytes])))
                }
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

/// The JSONL line (without newline) of an annotated article.
pub fn to_json_line(article: &Article) -> String {
    let record = ArticleRecord {
        id: &article.id,
        text: &article.text,
        entities: article.entities.as_ref().map(|entities| {
            let chars = CharOffsets::new(&article.text);
            entities
                .iter()
                .map(|e| article.char_span(&chars, e))
                .collect()
        }),
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

    /// Problems of lines read without a schema (as `train` reads).
    fn problems_without_schema(s: &str) -> Vec<String> {
        parse_jsonl(Path::new("a.jsonl"), s.as_bytes(), ReadOptions::default())
            .problems
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    #[test]
    fn labels_and_topics_are_checked_without_a_schema() {
        let line = |label: &str, topics: &str| {
            format!(
                r#"{{"id": "a", "text": "Paris", "entities": [{{"start": 0, "end": 5, "label": {}}}], "topics": {topics}}}"#,
                serde_json::to_string(label).unwrap()
            )
        };
        for (label, expect) in [
            ("per", "a.jsonl:1: article \"a\": entity 0..5: entity type \"per\" is not upper case (types look like PER, ORG, WORK_OF_ART)"),
            ("O", "a.jsonl:1: article \"a\": entity 0..5: \"O\" is not an entity type"),
            ("B-X", "a.jsonl:1: article \"a\": entity 0..5: entity type \"B-X\" has a BIO prefix"),
            ("PER SON", "a.jsonl:1: article \"a\": entity 0..5: entity type \"PER SON\" contains white space"),
            ("", "a.jsonl:1: article \"a\": entity 0..5: entity type is empty"),
            ("P\u{1b}R", "a.jsonl:1: article \"a\": entity 0..5: entity type \"P\\u{1b}R\" contains a control character (U+001B)"),
        ] {
            let msgs = problems_without_schema(&line(label, "[]"));
            assert_eq!(msgs.len(), 1, "{msgs:?}");
            assert!(msgs[0].starts_with(expect), "{label:?}: {}", msgs[0]);
        }
        // A well-formed new type is fine without a schema (train learns it).
        assert!(problems_without_schema(&line("WORK_OF_ART", r#"["energy", "sport"]"#)).is_empty());
        assert_eq!(
            problems_without_schema(&line("PER", r#"["energy", "energy", "", "a b"]"#)),
            [
                "a.jsonl:1: article \"a\": topic \"energy\" is listed twice",
                "a.jsonl:1: article \"a\": topic name is empty",
                "a.jsonl:1: article \"a\": topic \"a b\" contains white space (U+0020): topic names are single words such as \"energy\"",
            ]
        );
    }

    #[test]
    fn ids_are_kept_and_wrong_shapes_named_plainly() {
        let msgs = problems_without_schema(concat!(
            "{\"id\": true, \"text\": \"x\"}\n",
            "{\"id\": {\"a\": 1}, \"text\": \"x\"}\n",
            "{\"id\": \"k\", \"text\": 5}\n",
            "{\"id\": 7, \"text\": \"x\", \"topics\": \"energy\", \"entities\": {}}\n",
            "[1, 2]\n",
            "{\"id\": \"d\", \"text\": \"x\", \"text\": \"y\"}\n",
        ));
        assert_eq!(
            msgs[0],
            "a.jsonl:1: \"id\" must be a string or a number, not true"
        );
        assert_eq!(
            msgs[1],
            "a.jsonl:2: \"id\" must be a string or a number, not an object"
        );
        assert_eq!(
            msgs[2],
            "a.jsonl:3: article \"k\": \"text\" must be a string: invalid type: integer `5`, expected a string"
        );
        assert!(
            msgs[3]
                .starts_with("a.jsonl:4: article \"7\": \"topics\" must be a list of topic names"),
            "{}",
            msgs[3]
        );
        assert!(
            msgs[4].starts_with("a.jsonl:4: article \"7\": \"entities\" must be a list of"),
            "{}",
            msgs[4]
        );
        assert_eq!(
            msgs[5],
            "a.jsonl:5: expected a JSON object {\"id\": ..., \"text\": ...}, found a list"
        );
        assert!(
            msgs[6].starts_with("a.jsonl:6: malformed JSON: duplicate field `text`"),
            "{}",
            msgs[6]
        );
        assert!(msgs
            .iter()
            .all(|m| !m.contains("RawId") && !m.contains("enum")));
    }

    #[test]
    fn invisible_text_is_empty() {
        let msgs = problems_without_schema(
            "{\"id\": \"z\", \"text\": \"\\u0000\\u200b\\ufeff\\u00ad \"}\n{\"id\": \"w\", \"text\": \" \\n \"}\n",
        );
        assert_eq!(
            msgs,
            [
                "a.jsonl:1: article \"z\": empty \"text\" (only white space and invisible characters: U+0000, U+200B, U+FEFF, U+00AD)",
                "a.jsonl:2: article \"w\": empty \"text\" (only white space)",
            ]
        );
    }

    #[test]
    fn empty_file_is_a_problem() {
        assert_eq!(
            parse("\n\n").problems[0].to_string(),
            "a.jsonl: no articles (the file is empty)"
        );
    }
}
