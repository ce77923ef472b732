//! `newstag tag`: tag articles with a trained model; the run itself is [`crate::infer::run`].

use crate::data::input::Shard;
use crate::device::parse_device;
use crate::fsutil::partial_path;
use crate::infer::run::{tag, TagFormat, TagOptions};
use crate::infer::Predictor;
use crate::model::source::resolve_model_dir;
use crate::model::NewsTagger;
use crate::outputs::RunPaths;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct TagArgs {
    /// Trained model: a directory or a hub id.
    #[arg(long)]
    model: String,
    /// .txt files (one article each), JSONL files with id and text, directories of those, or - for stdin.
    #[arg(default_value = "-")]
    inputs: Vec<PathBuf>,
    /// Write here instead of stdout (for brat: a new or empty directory). The output goes to
    /// OUT.partial first, which becomes OUT when every article is done: an interrupted run leaves
    /// OUT as it was.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Output format: jsonl (default), html (the --html page), conll (IOB2 tags), brat (a
    /// directory of .txt/.ann pairs, given by --out; scores as annotator notes), label-studio
    /// (tasks with predictions, importable as pre-annotations) or csv (one row per entity).
    #[arg(long, value_enum, default_value_t = TagFormat::Jsonl)]
    format: TagFormat,
    /// Continue an interrupted run: keep the complete lines of OUT.partial (or of OUT), cut off a
    /// torn last line, skip their articles and append the rest. Without either file, starts afresh.
    #[arg(long, requires = "out", conflicts_with = "html")]
    resume: bool,
    /// Tag only shard K of N (0-based: 0/4 .. 3/4), chosen by a stable hash of each article id.
    #[arg(long, value_name = "K/N")]
    shard: Option<Shard>,
    /// Also write a self-contained HTML page of the tagged articles here.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Keep only entities whose score (the probability of that exact span and type) is at least S.
    #[arg(long, value_name = "S", value_parser = probability)]
    min_score: Option<f32>,
    /// Keep only these entity types (comma-separated: PER,ORG).
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// Topic thresholds instead of the model's: P for every topic, or TOPIC=P (repeatable).
    #[arg(long, value_name = "[TOPIC=]P")]
    topic_threshold: Vec<String>,
    #[command(flatten)]
    run: super::InferenceArgs,
}

pub fn run(a: TagArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        !a.resume || a.format == TagFormat::Jsonl,
        "--resume continues JSONL output only (--format jsonl)"
    );
    anyhow::ensure!(
        a.format != TagFormat::Brat || a.out.is_some(),
        "--format brat writes a directory of .txt/.ann pairs: give it with --out DIR"
    );
    let device = parse_device(&a.run.device)?;
    let model_dir = resolve_model_dir(&a.model, None)?;
    let mut paths = RunPaths::new();
    for input in &a.inputs {
        paths.reads("the input", input)?;
    }
    paths.reads_model("--model", &model_dir)?;
    match &a.out {
        Some(out) if a.format == TagFormat::Brat => {
            paths.writes_run("--out", out)?;
            paths.writes_run("--out's partial directory", &partial_path(out))?;
        }
        Some(out) => {
            paths.writes("--out", out)?;
            paths.writes("--out's partial file", &partial_path(out))?;
        }
        None => {}
    }
    if let Some(html) = &a.html {
        paths.writes("--html", html)?;
    }
    paths.check()?;
    let model = NewsTagger::load(&model_dir, &device)?;
    let thresholds = topic_thresholds(&a.topic_threshold, model.topics(), model.thresholds())?;
    let types = model.tags.types();
    if let Some(unknown) = a.labels.iter().find(|l| !types.contains(l)) {
        anyhow::bail!(
            "--labels {unknown}: the model has no such entity type (it predicts {})",
            types.join(", ")
        );
    }
    let predictor = Predictor::with_precision(&model, a.run.batch_size, a.run.precision(&model))?;
    let options = TagOptions {
        format: a.format,
        out: a.out,
        resume: a.resume,
        shard: a.shard,
        html: a.html,
        min_score: a.min_score,
        labels: a.labels,
        thresholds,
        model_version: format!("newstag {}: {}", env!("CARGO_PKG_VERSION"), a.model),
        batch_size: a.run.batch_size,
    };
    let summary = tag(&predictor, &a.inputs, &options)?;
    eprintln!("{summary}");
    // The exit code speaks for the whole output file, including lines kept by --resume.
    Ok(if summary.any_failed() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// A probability, 0 to 1.
fn probability(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        Ok(_) => Err("must be a probability, from 0 to 1".into()),
        Err(_) => Err(format!("{s:?} is not a number")),
    }
}

/// The model's thresholds with `--topic-threshold` overrides applied: `P` for every topic, then
/// `TOPIC=P` for one.
fn topic_thresholds(
    overrides: &[String],
    topics: &[String],
    model: &[f32],
) -> anyhow::Result<Vec<f32>> {
    let mut out = model.to_vec();
    for o in overrides {
        let (name, value) = match o.split_once('=') {
            Some((n, v)) => (Some(n), v),
            None => (None, o.as_str()),
        };
        let p = probability(value).map_err(|e| anyhow::anyhow!("--topic-threshold {o:?}: {e}"))?;
        match name {
            None => out.iter_mut().for_each(|t| *t = p),
            Some(n) => {
                let i = topics.iter().position(|t| t == n).ok_or_else(|| {
                    anyhow::anyhow!(
                        "--topic-threshold {o:?}: the model has no topic {n:?} (its topics: {})",
                        topics.join(", ")
                    )
                })?;
                out[i] = p;
            }
        }
    }
    Ok(out)
}
