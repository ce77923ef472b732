//! Label Studio's JSON export: a list of tasks, each `{"id", "data": {"text"}, "annotations":
//! [{"completed_by", "result": [...]}], "predictions": [...]}`. A `labels` result is an entity
//! (`value.start`, `value.end`, `value.labels`, `value.text`); a `choices` result gives topics.
//!
//! Offsets count UTF-16 code units: Label Studio computes them in the browser, where JavaScript
//! counts a character outside the Basic Multilingual Plane (an emoji) as two. Where a result's
//! `value.text` matches the code-point reading and not the UTF-16 one (exports that counted code
//! points), the code-point reading is used and counted in a warning.
//!
//! Cancelled annotations (`was_cancelled`) and `predictions` are not read (counted in warnings);
//! results of other types (relations, text areas, ratings) are skipped, counted. A task annotated
//! by several people needs `--annotator ID` (a user id or e-mail): newstag does not merge.

use super::spans::{SpanCollector, TextIndex, Unit};
use super::{located, stem, topic_problems, Losses, ReadOptions};
use crate::data::{blank_reason, Article, DataError, ReadOutcome};
use crate::infer::output::OutputRecord;
use serde_json::{json, Map, Value};
use std::path::Path;

/// Reads a Label Studio JSON export.
pub fn read(path: &Path, opts: ReadOptions) -> anyhow::Result<ReadOutcome> {
    let bytes =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", path.display()))?;
    Ok(parse(path, &bytes, opts))
}

/// Counts of what was read past, for the warnings.
#[derive(Default)]
struct Skipped {
    cancelled: usize,
    predictions: usize,
    unannotated: usize,
    other_results: usize,
    code_points: usize,
    snapped: usize,
}

/// Parses an export; `path` only names the source in messages.
pub fn parse(path: &Path, bytes: &[u8], opts: ReadOptions) -> ReadOutcome {
    let mut out = ReadOutcome::default();
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let tasks = match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Array(tasks)) => tasks,
        Ok(Value::Object(task)) => vec![Value::Object(task)],
        Ok(_) => {
            let msg = "expected a list of Label Studio tasks [{\"data\": {\"text\": ...}, \"annotations\": [...]}]";
            out.problems.push(DataError::new(path, 0, msg));
            return out;
        }
        Err(e) => {
            let msg = format!("malformed JSON: {e}");
            out.problems.push(DataError::new(path, e.line(), msg));
            return out;
        }
    };
    if tasks.is_empty() {
        out.problems
            .push(DataError::new(path, 0, "no tasks (the list is empty)"));
    }
    let mut skipped = Skipped::default();
    for (i, task) in tasks.iter().enumerate() {
        match task_article(path, i, task, opts, &mut skipped, &mut out.warnings) {
            Ok(a) => out.articles.push(a),
            Err(mut p) => out.problems.append(&mut p),
        }
    }
    let p = path.display();
    for (n, what) in [
        (skipped.cancelled, "cancelled annotation(s) not read"),
        (skipped.predictions, "task(s) with predictions: predictions are not read, only annotations"),
        (skipped.unannotated, "task(s) without an annotation to read: read as unannotated articles"),
        (skipped.other_results, "result(s) other than labels and choices skipped (relations, text areas, ...)"),
        (skipped.code_points, "span(s) whose offsets count code points, not UTF-16 code units (their value.text says so): read as code points"),
        (skipped.snapped, "span(s) snapped to whole words (--snap)"),
    ] {
        if n > 0 {
            out.warnings.push(format!("{p}: {n} {what}"));
        }
    }
    out
}

/// Who made an annotation: `completed_by` (a user id, or an object with `id` and `email`).
fn annotator(annotation: &Value) -> (String, Option<String>) {
    match annotation.get("completed_by") {
        Some(Value::Object(user)) => (
            user.get("id").map(value_text).unwrap_or_default(),
            user.get("email").and_then(Value::as_str).map(String::from),
        ),
        Some(v) => (value_text(v), None),
        None => (String::new(), None),
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn task_article(
    path: &Path,
    i: usize,
    task: &Value,
    opts: ReadOptions,
    skipped: &mut Skipped,
    warnings: &mut Vec<String>,
) -> Result<Article, Vec<DataError>> {
    let err = |at: String, msg: &str| vec![DataError::new(path, 0, format!("{at}: {msg}"))];
    let Some(task) = task.as_object() else {
        return Err(err(format!("[{i}]"), "a task must be an object"));
    };
    let data = task.get("data").and_then(Value::as_object);
    let text = data.and_then(|d| d.get("text")).and_then(Value::as_str);
    let id = data
        .and_then(|d| d.get("id"))
        .or_else(|| task.get("id"))
        .filter(|v| v.is_string() || v.is_number())
        .map(value_text)
        .unwrap_or_else(|| format!("{}[{i}]", stem(path)));
    let Some(text) = text else {
        let msg = "missing \"text\": Label Studio text tasks keep it in data.text";
        return Err(err(format!("[{i}].data.text"), msg)
            .into_iter()
            .map(|e| e.in_article(&id))
            .collect());
    };
    if let Some(why) = blank_reason(text) {
        let msg = format!("empty \"text\" ({why})");
        return Err(vec![DataError::new(
            path,
            0,
            format!("[{i}].data.text: {msg}"),
        )
        .in_article(&id)]);
    }
    let mut article = Article::from_text(&id, text);
    if task
        .get("predictions")
        .and_then(Value::as_array)
        .is_some_and(|p| !p.is_empty())
    {
        skipped.predictions += 1;
    }
    let key = if task.contains_key("annotations") {
        "annotations"
    } else {
        "completions"
    };
    let annotations: Vec<(usize, &Value)> = task
        .get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().enumerate().collect())
        .unwrap_or_default();
    let live: Vec<(usize, &Value)> = annotations
        .iter()
        .copied()
        .filter(|(_, a)| a.get("was_cancelled") != Some(&Value::Bool(true)))
        .collect();
    skipped.cancelled += annotations.len() - live.len();
    let chosen: Vec<(usize, &Value)> = match opts.annotator {
        Some(who) => live
            .iter()
            .copied()
            .filter(|(_, a)| {
                let (uid, email) = annotator(a);
                uid == who || email.as_deref() == Some(who)
            })
            .collect(),
        None => live.clone(),
    };
    let (j, annotation) = match chosen.as_slice() {
        [] => {
            skipped.unannotated += 1;
            return Ok(article);
        }
        [one] => *one,
        several => {
            let names: Vec<String> = several
                .iter()
                .map(|(j, a)| match annotator(a) {
                    (uid, Some(email)) => format!("annotations[{j}] by {uid} ({email})"),
                    (uid, None) if !uid.is_empty() => format!("annotations[{j}] by {uid}"),
                    _ => format!("annotations[{j}] by an unnamed annotator"),
                })
                .collect();
            let msg = match opts.annotator {
                Some(who) => format!("{} annotations by {who:?}: {}; newstag reads one", several.len(), names.join(", ")),
                None => format!(
                    "{} annotations ({}): choose whose to read with --annotator ID (a user id or e-mail); newstag does not merge annotators",
                    several.len(),
                    names.join(", ")
                ),
            };
            return Err(vec![
                DataError::new(path, 0, format!("[{i}]: {msg}")).in_article(&id)
            ]);
        }
    };
    let results = annotation
        .get("result")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut collector = SpanCollector::new(&article, opts.schema, opts.snap);
    let mut topics: Option<Vec<String>> = None;
    let mut problems: Vec<(String, String)> = Vec::new();
    for (k, r) in results.iter().enumerate() {
        let at = format!("[{i}].{key}[{j}].result[{k}]");
        let value = r.get("value").and_then(Value::as_object);
        let kind = r.get("type").and_then(Value::as_str).unwrap_or("");
        match (kind, value) {
            ("labels", Some(v)) | ("", Some(v)) if v.contains_key("labels") => {
                match span_fields(v) {
                    Ok((start, end, label, expect)) => {
                        let unit =
                            choose_unit(collector.index(), &article.text, start, end, expect);
                        if unit == Unit::CodePoints {
                            skipped.code_points += 1;
                        }
                        collector.add(&at, start, end, &label, unit, expect);
                    }
                    Err(msg) => problems.push((at, msg)),
                }
            }
            ("choices", Some(v)) | ("", Some(v)) if v.contains_key("choices") => {
                match serde_json::from_value::<Vec<String>>(v["choices"].clone()) {
                    Ok(c) => topics.get_or_insert_with(Vec::new).extend(c),
                    Err(e) => problems.push((
                        format!("{at}.value.choices"),
                        format!("must be a list of topic names: {e}"),
                    )),
                }
            }
            _ => skipped.other_results += 1,
        }
    }
    let (entities, mut span_problems, notes) = collector.finish();
    skipped.snapped += notes.len();
    for (at, note) in notes {
        warnings.push(format!("{}: article {id:?}: {at}: {note}", path.display()));
    }
    problems.append(&mut span_problems);
    if let Some(t) = &topics {
        let at = format!("[{i}].{key}[{j}]");
        problems.extend(
            topic_problems(t, opts.schema)
                .into_iter()
                .map(|m| (at.clone(), m)),
        );
    }
    if !problems.is_empty() {
        return Err(located(path, 0, &id, problems));
    }
    article.entities = Some(entities);
    article.topics = topics;
    Ok(article)
}

/// `value.start`, `value.end`, the one label, and `value.text` when given.
fn span_fields(v: &Map<String, Value>) -> Result<(usize, usize, String, Option<&str>), String> {
    let offset = |k: &str| {
        v.get(k)
            .and_then(Value::as_u64)
            .map(|n| n as usize)
            .ok_or_else(|| format!("value.{k} must be a whole number of UTF-16 code units"))
    };
    let (start, end) = (offset("start")?, offset("end")?);
    let labels: Vec<String> = serde_json::from_value(v["labels"].clone())
        .map_err(|e| format!("value.labels must be a list of one type: {e}"))?;
    let label = match labels.as_slice() {
        [one] => one.clone(),
        [] => return Err("value.labels is empty: a span needs one entity type".into()),
        many => {
            return Err(format!(
                "value.labels has {} types ({}): newstag gives a span one type",
                many.len(),
                many.join(", ")
            ))
        }
    };
    Ok((start, end, label, v.get("text").and_then(Value::as_str)))
}

/// UTF-16, unless the recorded text matches the code-point reading only.
fn choose_unit(
    index: &TextIndex,
    text: &str,
    start: usize,
    end: usize,
    expect: Option<&str>,
) -> Unit {
    let at = |unit| -> Option<&str> {
        Some(&text[index.to_byte(unit, start).ok()?..index.to_byte(unit, end).ok()?])
    };
    match expect {
        Some(e) if at(Unit::Utf16) != Some(e) && at(Unit::CodePoints) == Some(e) => {
            Unit::CodePoints
        }
        _ => Unit::Utf16,
    }
}

/// A `labels` result over `start..end` (UTF-16 offsets).
fn label_result(k: usize, start: usize, end: usize, text: &str, label: &str) -> Value {
    json!({
        "id": format!("e{k}"),
        "from_name": "label",
        "to_name": "text",
        "type": "labels",
        "value": {"start": start, "end": end, "text": text, "labels": [label]},
    })
}

fn choices_result(topics: &[String]) -> Value {
    json!({"id": "topics", "from_name": "topics", "to_name": "text", "type": "choices", "value": {"choices": topics}})
}

fn task_data(article: &Article) -> Value {
    json!({"id": article.id, "text": article.text})
}

/// A Label Studio export of `articles` (one annotation each), and what it cannot hold.
pub fn write(articles: &[Article]) -> (Vec<u8>, Losses) {
    let mut losses = Losses::default();
    let tasks: Vec<Value> = articles
        .iter()
        .enumerate()
        .map(|(n, a)| {
            let mut result: Vec<Value> = Vec::new();
            if let Some(entities) = &a.entities {
                let spans = super::spans::spans_in(a, entities, Unit::Utf16);
                for (k, ((s, e, text), ent)) in spans.iter().zip(entities).enumerate() {
                    result.push(label_result(k, *s, *e, text, &ent.label));
                }
            }
            if let Some(t) = &a.topics {
                result.push(choices_result(t));
            }
            let annotations = if a.entities.is_none() && a.topics.is_none() {
                json!([])
            } else {
                if a.entities.is_none() {
                    losses.add("article(s) with topics but no entity annotation (read back with an empty entity list)", 1);
                }
                json!([{"id": n + 1, "result": result, "was_cancelled": false, "ground_truth": false}])
            };
            json!({"id": n + 1, "data": task_data(a), "annotations": annotations, "predictions": []})
        })
        .collect();
    let mut bytes = serde_json::to_vec_pretty(&tasks).expect("plain data serialises");
    bytes.push(b'\n');
    (bytes, losses)
}

/// A task holding `tag`'s output as a Label Studio prediction (importable as pre-annotations):
/// every span with its score, the topics shown as one `choices` result, and the task's `score`
/// the lowest of them (Label Studio shows the least confident tasks first).
pub fn prediction_task(article: &Article, record: &OutputRecord, model_version: &str) -> Value {
    let OutputRecord::Tagged {
        entities, topics, ..
    } = record
    else {
        return json!({"data": task_data(article)});
    };
    let index = TextIndex::new(&article.text);
    let utf16 = |n: usize| {
        index
            .to_byte(Unit::CodePoints, n)
            .map(|b| index.from_byte(Unit::Utf16, b))
            .unwrap_or(n)
    };
    let mut result: Vec<Value> = Vec::new();
    let mut lowest: Option<f32> = None;
    for (k, e) in entities.iter().enumerate() {
        let mut r = label_result(k, utf16(e.start), utf16(e.end), &e.text, &e.label);
        r["score"] = json!(e.score);
        result.push(r);
        lowest = Some(lowest.map_or(e.score, |l: f32| l.min(e.score)));
    }
    if !topics.is_empty() {
        let names: Vec<String> = topics.iter().map(|t| t.label.clone()).collect();
        let low = topics.iter().map(|t| t.score).fold(f32::INFINITY, f32::min);
        let mut r = choices_result(&names);
        r["score"] = json!(low);
        result.push(r);
        lowest = Some(lowest.map_or(low, |l| l.min(low)));
    }
    let mut prediction = json!({"model_version": model_version, "result": result});
    if let Some(s) = lowest {
        prediction["score"] = json!(s);
    }
    json!({"data": task_data(article), "predictions": [prediction]})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(out: &ReadOutcome) -> Vec<String> {
        out.problems.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn utf16_offsets_after_an_emoji_and_code_point_exports() {
        // "🚀 " is 3 UTF-16 code units, 2 code points.
        let json = r#"[{"id": 7, "data": {"text": "🚀 Tokayev met Japarov"}, "annotations": [{"completed_by": 1, "result": [
            {"type": "labels", "from_name": "label", "to_name": "text", "value": {"start": 3, "end": 10, "text": "Tokayev", "labels": ["PER"]}},
            {"type": "labels", "from_name": "label", "to_name": "text", "value": {"start": 15, "end": 22, "text": "Japarov", "labels": ["PER"]}}
        ]}]}]"#;
        let out = parse(
            Path::new("ls.json"),
            json.as_bytes(),
            ReadOptions::default(),
        );
        assert!(out.problems.is_empty(), "{:?}", msgs(&out));
        assert!(out.warnings.is_empty(), "{:?}", out.warnings);
        let a = &out.articles[0];
        assert_eq!(a.id, "7");
        let names: Vec<&str> = a
            .entities
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| &a.text[a.entity_bytes(e)])
            .collect();
        assert_eq!(names, ["Tokayev", "Japarov"]);
        // The same spans counted in code points, as value.text shows.
        let cp = json.replace("\"start\": 3, \"end\": 10", "\"start\": 2, \"end\": 9");
        let out = parse(Path::new("ls.json"), cp.as_bytes(), ReadOptions::default());
        assert!(out.problems.is_empty(), "{:?}", msgs(&out));
        assert!(
            out.warnings[0].contains("1 span(s) whose offsets count code points"),
            "{:?}",
            out.warnings
        );
    }

    #[test]
    fn several_annotators_need_a_choice() {
        let json = r#"[{"id": 1, "data": {"text": "Tokayev met Japarov"}, "annotations": [
            {"completed_by": {"id": 3, "email": "ann@x.org"}, "result": [{"type": "labels", "value": {"start": 0, "end": 7, "labels": ["PER"]}}]},
            {"completed_by": 5, "result": []},
            {"completed_by": 9, "was_cancelled": true, "result": []}
        ]}]"#;
        let out = parse(
            Path::new("ls.json"),
            json.as_bytes(),
            ReadOptions::default(),
        );
        assert_eq!(
            msgs(&out),
            ["ls.json: article \"1\": [0]: 2 annotations (annotations[0] by 3 (ann@x.org), annotations[1] by 5): choose whose to read with --annotator ID (a user id or e-mail); newstag does not merge annotators"]
        );
        let opts = ReadOptions {
            annotator: Some("ann@x.org"),
            ..Default::default()
        };
        let out = parse(Path::new("ls.json"), json.as_bytes(), opts);
        assert_eq!(out.articles[0].entities.as_ref().unwrap().len(), 1);
        let out = parse(
            Path::new("ls.json"),
            json.as_bytes(),
            ReadOptions {
                annotator: Some("5"),
                ..opts
            },
        );
        assert_eq!(out.articles[0].entities.as_deref(), Some(&[][..]));
        assert!(
            out.warnings
                .iter()
                .any(|w| w.contains("1 cancelled annotation(s)")),
            "{:?}",
            out.warnings
        );
    }
}
