//! doccano JSONL: one example per line, `{"id", "text", "label": [[start, end, "PER"]], "cats":
//! ["energy"]}`. Sequence-labelling exports name the spans `label` (older ones `labels`),
//! intent-and-slot exports `entities`; a span may also be an object `{"start_offset",
//! "end_offset", "label"}`. A `label` list of plain strings (a text-classification export) and
//! `cats` give topics. Offsets count characters (code points: doccano's server is Python).
//! Nothing an article holds is lost writing it.

use super::spans::{SpanCollector, Unit};
use super::{located, stem, topic_problems, Losses, ReadOptions};
use crate::data::{blank_reason, Article, DataError, ReadOutcome};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::Path;

/// Reads a doccano JSONL file.
pub fn read(path: &Path, opts: ReadOptions) -> anyhow::Result<ReadOutcome> {
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", path.display()))?;
    Ok(parse(path, &bytes, opts))
}

/// Parses doccano JSONL; `path` only names the source in messages.
pub fn parse(path: &Path, bytes: &[u8], opts: ReadOptions) -> ReadOutcome {
    json_lines(path, bytes, |lineno, record, out| {
        line_article(path, lineno, record, opts, out)
    })
}

/// Runs `each` on every JSON object line of `bytes` (shared with the Prodigy reader): malformed
/// lines, duplicate ids and an empty file are problems.
pub(crate) fn json_lines(
    path: &Path,
    bytes: &[u8],
    mut each: impl FnMut(usize, Map<String, Value>, &mut ReadOutcome) -> Option<Article>,
) -> ReadOutcome {
    let mut out = ReadOutcome::default();
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut any = false;
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let lineno = i + 1;
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        any = true;
        let record = match serde_json::from_slice::<Value>(raw) {
            Ok(Value::Object(m)) => m,
            Ok(_) => {
                out.problems
                    .push(DataError::new(path, lineno, "expected a JSON object"));
                continue;
            }
            Err(e) => {
                let msg = format!("malformed JSON: {e}");
                out.problems.push(DataError::new(path, lineno, msg));
                continue;
            }
        };
        if let Some(a) = each(lineno, record, &mut out) {
            if let Some(first) = seen.get(&a.id) {
                let msg = format!("duplicate id (first used on line {first})");
                out.problems
                    .push(DataError::new(path, lineno, msg).in_article(&a.id));
                continue;
            }
            seen.insert(a.id.clone(), lineno);
            out.articles.push(a);
        }
    }
    if !any {
        out.problems
            .push(DataError::new(path, 0, "no articles (the file is empty)"));
    }
    out
}

/// The id of a record (`id`, else `meta.id`), or `STEM:LINE`.
pub(crate) fn record_id(path: &Path, lineno: usize, record: &Map<String, Value>) -> String {
    let id = record
        .get("id")
        .or_else(|| record.get("meta").and_then(|m| m.get("id")));
    match id {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => format!("{}:{lineno}", stem(path)),
    }
}

/// The record as an unannotated article (its id and text), or the problem (already located).
pub(crate) fn record_article(
    path: &Path,
    lineno: usize,
    record: &Map<String, Value>,
) -> Result<Article, DataError> {
    let id = record_id(path, lineno, record);
    let err = |m: String| DataError::new(path, lineno, m).in_article(&id);
    match record.get("text") {
        Some(Value::String(t)) => match blank_reason(t) {
            None => Ok(Article::from_text(&id, t.clone())),
            Some(why) => Err(err(format!("empty \"text\" ({why})"))),
        },
        None => Err(err("missing \"text\"".into())),
        Some(_) => Err(err("\"text\" must be a string".into())),
    }
}

/// One span: `[start, end, "LABEL"]` or `{"start_offset", "end_offset", "label"}`.
fn span(v: &Value) -> Option<(usize, usize, String)> {
    match v {
        Value::Array(t) if t.len() == 3 => Some((
            t[0].as_u64()? as usize,
            t[1].as_u64()? as usize,
            t[2].as_str()?.to_string(),
        )),
        Value::Object(o) => Some((
            o.get("start_offset")?.as_u64()? as usize,
            o.get("end_offset")?.as_u64()? as usize,
            o.get("label")?.as_str()?.to_string(),
        )),
        _ => None,
    }
}

fn line_article(
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
    let mut topics: Option<Vec<String>> = None;
    let mut collector = SpanCollector::new(&article, opts.schema, opts.snap);
    let mut has_spans = false;
    for key in ["label", "labels", "entities"] {
        let Some(v) = record.get(key) else { continue };
        let Some(items) = v.as_array() else {
            problems.push((
                key.into(),
                "must be a list of [start, end, \"TYPE\"]".into(),
            ));
            continue;
        };
        if items.iter().all(Value::is_string) && !items.is_empty() && key == "label" {
            let names = items.iter().filter_map(Value::as_str).map(String::from);
            topics.get_or_insert_with(Vec::new).extend(names);
            continue;
        }
        has_spans = true;
        for (k, item) in items.iter().enumerate() {
            let at = format!("{key}[{k}]");
            match span(item) {
                Some((s, e, l)) => collector.add(&at, s, e, &l, Unit::CodePoints, None),
                None => {
                    problems.push((at, format!("expected [start, end, \"TYPE\"], found {item}")))
                }
            }
        }
    }
    if let Some(v) = record.get("cats") {
        match serde_json::from_value::<Vec<String>>(v.clone()) {
            Ok(c) => topics.get_or_insert_with(Vec::new).extend(c),
            Err(e) => problems.push(("cats".into(), format!("must be a list of topic names: {e}"))),
        }
    }
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
                .map(|m| (String::new(), m)),
        );
    }
    if !problems.is_empty() {
        out.problems.extend(located(path, lineno, &id, problems));
        return None;
    }
    article.entities = has_spans.then_some(entities);
    article.topics = topics;
    Some(article)
}

/// doccano JSONL of `articles` (`label` triples, `cats` topics).
pub fn write(articles: &[Article]) -> (Vec<u8>, Losses) {
    let mut out = String::new();
    for a in articles {
        let mut r = json!({"id": a.id, "text": a.text});
        if let Some(entities) = &a.entities {
            let spans = super::spans::spans_in(a, entities, Unit::CodePoints);
            let triples: Vec<Value> = spans
                .iter()
                .zip(entities)
                .map(|((s, e, _), ent)| json!([s, e, ent.label]))
                .collect();
            r["label"] = json!(triples);
        }
        if let Some(t) = &a.topics {
            r["cats"] = json!(t);
        }
        out.push_str(&format!("{r}\n"));
    }
    (out.into_bytes(), Losses::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_triples_objects_and_cats_and_names_bad_lines() {
        let data = concat!(
            r#"{"id": 1, "text": "𝔸 Tokayev met Japarov", "label": [[2, 9, "PER"], {"start_offset": 14, "end_offset": 21, "label": "PER"}], "cats": ["borders"]}"#,
            "\n",
            r#"{"id": 2, "text": "Kazakhstan oil", "label": [[0, 6, "LOC"], [0, 1]]}"#,
            "\n"
        );
        let out = parse(
            Path::new("d.jsonl"),
            data.as_bytes(),
            ReadOptions::default(),
        );
        let a = &out.articles[0];
        assert_eq!(a.entities.as_ref().unwrap().len(), 2);
        assert_eq!(a.topics.as_deref(), Some(&["borders".to_string()][..]));
        let msgs: Vec<String> = out.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            msgs,
            [
                "d.jsonl:2: article \"2\": label[1]: expected [start, end, \"TYPE\"], found [0,1]",
                "d.jsonl:2: article \"2\": label[0]: entity 0..6 LOC (\"Kazakh\") ends inside the word \"Kazakhstan\" (split as \"Kazakh\" + \"stan\")",
            ]
        );
    }
}
