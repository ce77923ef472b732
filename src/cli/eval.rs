//! `newstag eval`: score a model, or another system's predictions (`--predictions`), on annotated
//! data; print the table, and optionally write the report as JSON and as an HTML page.

use crate::data::load::{found_labels, pair_sidecars, read_all};
use crate::data::{problems_error, Article, CharOffsets, DataError, Entity, Schema};
use crate::device::parse_device;
use crate::eval::html::{render_eval_page, score_compared, Compared, EvalPage};
use crate::eval::{evaluate, Report};
use crate::fsutil::{write_atomic, write_json_atomic};
use crate::infer::{Predictor, ScoredEntity};
use crate::model::source::resolve_model_dir;
use crate::model::NewsTagger;
use crate::outputs::RunPaths;
use anyhow::Context;
use clap::Args;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Trained model: a directory or a hub id.
    #[arg(
        long,
        required_unless_present = "predictions",
        conflicts_with = "predictions"
    )]
    model: Option<String>,
    /// Score these predictions instead of a model's: JSONL in the `tag` output format
    /// ({"id", "entities": [{"start", "end", "label"}], "topics": [{"label", "score"}]}), matched
    /// to the --data articles by id. Offsets count characters; spans must be whole words.
    #[arg(long, value_name = "FILE")]
    predictions: Option<PathBuf>,
    /// With --predictions: rename a predicted entity type before scoring (FROM=TO, repeatable,
    /// e.g. PERSON=PER); an empty TO drops the type (DATE=).
    #[arg(long = "map-label", value_name = "FROM=TO", requires = "predictions")]
    map_label: Vec<String>,
    /// Annotated data in any format newstag reads (repeatable; see --format).
    #[arg(long, required = true)]
    data: Vec<PathBuf>,
    /// Topics sidecar for the CoNLL --data file in the same position.
    #[arg(long)]
    topics: Vec<PathBuf>,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also write a self-contained HTML page here: the scores, an entity-type confusion matrix,
    /// boundary errors, and the worst articles with gold and predicted entities side by side.
    #[arg(long)]
    html: Option<PathBuf>,
    #[command(flatten)]
    run: super::InferenceArgs,
    #[command(flatten)]
    read: super::ReadFormatArgs,
    /// Skip invalid records (counted) instead of stopping; with --predictions, also predicted
    /// spans that are not whole words and predictions for unknown articles.
    #[arg(long)]
    skip_invalid: bool,
}

pub fn run(a: EvalArgs) -> anyhow::Result<ExitCode> {
    let files = pair_sidecars(&a.data, &a.topics, &a.read.choice())?;
    let model_dir = match &a.model {
        Some(spec) => Some(resolve_model_dir(spec, None)?),
        None => None,
    };
    check_paths(&a, &files, model_dir.as_deref())?;
    let data_line = format!(
        "data: {}",
        a.data
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let articles: Vec<Article>;
    let (report, compared, topic_labels, about) = if let Some(path) = &a.predictions {
        articles = read_all(&files, None, a.skip_invalid)?;
        let map = parse_label_map(&a.map_label)?;
        let bytes =
            std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
        let parsed = parse_predictions(path, &bytes, &articles, &map)?;
        let mut problems = parsed.problems;
        if !problems.is_empty() && a.skip_invalid {
            eprintln!(
                "warning: skipped {} invalid prediction(s) (--skip-invalid); first: {}",
                problems.len(),
                problems[0]
            );
            problems.clear();
        }
        problems.extend(parsed.missing);
        if !problems.is_empty() {
            return Err(problems_error(&problems)).with_context(|| {
                format!(
                    "{}: the predictions do not match the --data articles",
                    path.display()
                )
            });
        }
        let topic_labels = parsed
            .has_topics
            .then(|| topic_labels(&articles, &parsed.items));
        if topic_labels.is_none() {
            eprintln!("note: the predictions carry no \"topics\": topics are not scored");
        }
        let compared: Vec<Compared> = articles
            .iter()
            .zip(parsed.items)
            .map(|(article, p)| {
                let (entities, topics) = p.expect("every article has a prediction by now");
                Compared {
                    article,
                    entities,
                    topics,
                }
            })
            .collect();
        let report = score_compared(&compared, topic_labels.as_deref());
        let about = vec![format!("predictions: {}", path.display()), data_line];
        (report, compared, topic_labels, about)
    } else {
        let (Some(spec), Some(dir)) = (a.model.as_deref(), model_dir) else {
            anyhow::bail!("give --model or --predictions");
        };
        let device = parse_device(&a.run.device)?;
        let model = NewsTagger::load(&dir, &device)?;
        articles = read_for_model(&model, &files, a.skip_invalid)?;
        let predictor = Predictor::with_precision(&model, a.run.batch_size, a.run.precision)?;
        let evaluation = evaluate(&predictor, &articles, false)?;
        let topics = model.topics();
        let compared = articles
            .iter()
            .zip(&evaluation.predictions)
            .map(|(article, p)| Compared {
                article,
                entities: p.entities.clone(),
                topics: p
                    .topics_above(topics, model.thresholds())
                    .into_iter()
                    .map(|(t, s)| (t.to_string(), s))
                    .collect(),
            })
            .collect();
        let topic_labels = (!topics.is_empty()).then(|| topics.to_vec());
        let about = vec![format!("model: {spec}"), data_line];
        (evaluation.report, compared, topic_labels, about)
    };
    let unannotated = articles.iter().filter(|a| a.entities.is_none()).count();
    if unannotated > 0 {
        eprintln!(
            "warning: {unannotated} of {} --data article(s) carry no \"entities\": their entities are not scored{}",
            articles.len(),
            if unannotated == articles.len() {
                " (the report has no entity scores)"
            } else {
                ""
            }
        );
    }
    print!("{}", report.table());
    if let Some(path) = &a.json {
        write_json_atomic(path, &report)?;
    }
    if let Some(path) = &a.html {
        write_page(path, &report, &compared, topic_labels.as_deref(), &about)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses outputs that would overwrite the data, the predictions, the model or each other.
fn check_paths(
    a: &EvalArgs,
    files: &[crate::data::load::AnnotatedFile],
    model_dir: Option<&Path>,
) -> anyhow::Result<()> {
    let mut paths = RunPaths::new();
    for f in files {
        paths.reads("--data", &f.path)?;
        if let Some(sidecar) = &f.topics {
            paths.reads("--topics", sidecar)?;
        }
    }
    if let Some(p) = &a.predictions {
        paths.reads("--predictions", p)?;
    }
    if let Some(dir) = model_dir {
        paths.reads_model("--model", dir)?;
    }
    if let Some(p) = &a.json {
        paths.writes("--json", p)?;
    }
    if let Some(p) = &a.html {
        paths.writes("--html", p)?;
    }
    paths.check()
}

fn write_page(
    path: &Path,
    report: &Report,
    compared: &[Compared],
    topic_labels: Option<&[String]>,
    about: &[String],
) -> anyhow::Result<()> {
    let page = render_eval_page(&EvalPage {
        title: "newstag: evaluation",
        about,
        report,
        items: compared,
        topic_labels,
    });
    write_atomic(path, page.as_bytes())
}

/// Reads the data for a model: entity types and topics outside the model's are problems. A model
/// without topics (a plain token classifier, such as one saved by transformers) predicts none, so
/// the data's topic annotations are set aside instead.
fn read_for_model(
    model: &NewsTagger,
    files: &[crate::data::load::AnnotatedFile],
    skip_invalid: bool,
) -> anyhow::Result<Vec<Article>> {
    let types = model.tags.types();
    if !model.topics().is_empty() {
        let schema = Schema {
            entity_types: types,
            topics: model.topics().to_vec(),
        };
        return read_all(files, Some(&schema), skip_invalid);
    }
    let mut articles = read_all(files, None, skip_invalid)?;
    let (found, _) = found_labels(&articles);
    let unknown: Vec<&String> = found.iter().filter(|t| !types.contains(t)).collect();
    anyhow::ensure!(
        unknown.is_empty(),
        "the data has entity type(s) {} that the model does not predict (it knows: {})",
        unknown
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        types.join(", ")
    );
    if articles.iter().any(|a| a.topics.is_some()) {
        eprintln!("note: the model predicts no topics: the data's topics are not scored");
        for a in &mut articles {
            a.topics = None;
        }
    }
    Ok(articles)
}

/// `FROM=TO` pairs; `TO` may be empty (drop the type).
fn parse_label_map(pairs: &[String]) -> anyhow::Result<HashMap<String, String>> {
    pairs
        .iter()
        .map(|p| {
            let (from, to) = p
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--map-label {p:?}: expected FROM=TO"))?;
            anyhow::ensure!(!from.is_empty(), "--map-label {p:?}: FROM is empty");
            Ok((from.to_string(), to.to_string()))
        })
        .collect()
}

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

#[derive(Debug, Deserialize)]
struct PredictedSpan {
    start: usize,
    end: usize,
    label: String,
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

/// What one article's prediction says: entities and topics.
type Predicted = (Vec<ScoredEntity>, Vec<(String, f32)>);

/// A predictions file read against the gold articles.
#[derive(Debug)]
struct ParsedPredictions {
    /// Per gold article (in order), its prediction if one was read.
    items: Vec<Option<Predicted>>,
    /// Whether any line had a `topics` field.
    has_topics: bool,
    /// Invalid lines and spans.
    problems: Vec<DataError>,
    /// Gold articles without a prediction (none, or an error record): never skipped.
    missing: Vec<DataError>,
}

/// Reads predictions and matches them to `gold` by id. Errors (rather than problems) when the
/// gold articles' ids are not unique, since nothing could then be matched.
fn parse_predictions(
    path: &Path,
    bytes: &[u8],
    gold: &[Article],
    map: &HashMap<String, String>,
) -> anyhow::Result<ParsedPredictions> {
    let mut by_id: HashMap<&str, usize> = HashMap::new();
    for (i, a) in gold.iter().enumerate() {
        if let Some(first) = by_id.insert(&a.id, i) {
            anyhow::bail!(
                "the --data articles {first} and {i} share the id {:?}: predictions are matched by id, so ids must be unique",
                a.id
            );
        }
    }
    let mut items: Vec<Option<Predicted>> = vec![None; gold.len()];
    let mut seen_on: Vec<usize> = vec![0; gold.len()];
    let mut problems = Vec::new();
    let mut missing = Vec::new();
    let mut has_topics = false;
    let text = String::from_utf8_lossy(bytes);
    for (n, line) in text.lines().enumerate() {
        let lineno = n + 1;
        if line.trim().is_empty() {
            continue;
        }
        let record: PredictionLine = match serde_json::from_str(line.trim()) {
            Ok(r) => r,
            Err(e) => {
                problems.push(DataError::new(
                    path,
                    lineno,
                    format!("not a prediction line: {e}"),
                ));
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
        for span in record.entities.unwrap_or_default() {
            let label = match map.get(&span.label) {
                Some(to) if to.is_empty() => continue,
                Some(to) => to.clone(),
                None => span.label.clone(),
            };
            match span_words(article, &chars, &span) {
                Ok(words) => entities.push(ScoredEntity {
                    entity: Entity { words, label },
                    score: span.score.unwrap_or(f32::NAN),
                }),
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
        items[index] = Some((entities, topics));
    }
    missing.extend(
        gold.iter()
            .zip(&seen_on)
            .filter(|(_, &line)| line == 0)
            .map(|(a, _)| {
                DataError::new(path, 0, "no prediction for this --data article").in_article(&a.id)
            }),
    );
    Ok(ParsedPredictions {
        items,
        has_topics,
        problems,
        missing,
    })
}

/// The words a predicted character span covers, or why it does not cover whole words.
fn span_words(
    article: &Article,
    chars: &CharOffsets,
    span: &PredictedSpan,
) -> Result<std::ops::Range<usize>, String> {
    if span.start >= span.end {
        return Err("empty or reversed span".into());
    }
    let (Some(start), Some(end)) = (chars.to_byte(span.start), chars.to_byte(span.end)) else {
        return Err(format!(
            "runs past the end of the article ({} characters)",
            chars.len()
        ));
    };
    let found = &article.text[start..end];
    if let Some(text) = &span.text {
        if text != found {
            return Err(format!(
                "its text is {text:?} but the article has {found:?} there (offsets count characters, end exclusive)"
            ));
        }
    }
    article
        .words_of_bytes(start..end)
        .map_err(|e| format!("{found:?} is not whole words: {e}"))
}

/// The topic labels to score predictions on: the gold data's topics, then any other predicted.
fn topic_labels(gold: &[Article], items: &[Option<Predicted>]) -> Vec<String> {
    let (_, mut labels) = found_labels(gold);
    let mut extra: Vec<String> = items
        .iter()
        .flatten()
        .flat_map(|(_, t)| t.iter().map(|(l, _)| l.clone()))
        .filter(|l| !labels.contains(l))
        .collect();
    extra.sort();
    extra.dedup();
    labels.extend(extra);
    labels
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

    fn parse(lines: &str, map: &[(&str, &str)]) -> ParsedPredictions {
        let map = map
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        parse_predictions(Path::new("p.jsonl"), lines.as_bytes(), &gold(), &map).unwrap()
    }

    fn messages(p: &ParsedPredictions) -> Vec<String> {
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
        let (entities, topics) = p.items[0].as_ref().unwrap();
        let spans: Vec<_> = entities
            .iter()
            .map(|e| (e.entity.words.clone(), e.entity.label.as_str()))
            .collect();
        // Words: Zoë(0) met(1) Anna(2) Berg(3) in(4) Kazakhstan(5) '(6) s(7) ...
        assert_eq!(spans, [(0..1, "PER"), (5..6, "GPE")]);
        assert_eq!(entities[0].score, 0.9);
        assert!(entities[1].score.is_nan());
        assert_eq!(topics[0], ("energy".to_string(), 0.8));
        assert_eq!(topics[1].0, "trade");
        assert_eq!(topic_labels(&gold(), &p.items), ["energy", "trade"]);
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
    fn duplicate_gold_ids_and_bad_label_maps_are_errors() {
        let mut g = gold();
        g[1].id = "a".into();
        let err = parse_predictions(Path::new("p"), b"", &g, &HashMap::new()).unwrap_err();
        assert!(err.to_string().contains("share the id \"a\""), "{err}");
        assert!(parse_label_map(&["PERSON".into()]).is_err());
        assert_eq!(
            parse_label_map(&["A=B".into(), "C=".into()]).unwrap()["C"],
            ""
        );
    }
}
