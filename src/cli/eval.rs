//! `newstag eval`: score a model, or another system's predictions (`--predictions`), on annotated
//! data; print the table, and optionally write the report as JSON and as an HTML page. The work is
//! [`crate::eval::run`].

use crate::data::load::{pair_sidecars, read_all, AnnotatedFile};
use crate::data::predictions::read_predictions;
use crate::device::parse_device;
use crate::eval::html::write_eval_page;
use crate::eval::run::{read_for_model, score_model, score_predictions, warn_unannotated};
use crate::fsutil::write_json_atomic;
use crate::infer::Predictor;
use crate::model::source::resolve_model_dir;
use crate::model::NewsTagger;
use crate::outputs::RunPaths;
use clap::Args;
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
    /// Also write the report as JSON here: the scores, the calibration, and under "errors" the
    /// error analysis the --html page shows (confusion matrix, boundary errors, worst articles).
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
    let articles;
    let (scored, system) = if let Some(path) = &a.predictions {
        articles = read_all(&files, None, a.skip_invalid)?;
        let map = parse_label_map(&a.map_label)?;
        let predictions = read_predictions(path, &articles, &map)?;
        let scored = score_predictions(path, &articles, predictions, a.skip_invalid)?;
        (scored, format!("predictions: {}", path.display()))
    } else {
        let (Some(spec), Some(dir)) = (a.model.as_deref(), model_dir) else {
            anyhow::bail!("give --model or --predictions");
        };
        let device = parse_device(&a.run.device)?;
        let model = NewsTagger::load(&dir, &device)?;
        articles = read_for_model(&model, &files, a.skip_invalid)?;
        let predictor =
            Predictor::with_precision(&model, a.run.batch_size, a.run.precision(&model))?;
        (
            score_model(&predictor, &articles)?,
            format!("model: {spec}"),
        )
    };
    warn_unannotated(&articles);
    print!("{}", scored.report.table());
    if let Some(path) = &a.json {
        write_json_atomic(path, &scored.report)?;
    }
    if let Some(path) = &a.html {
        write_eval_page(path, &scored, &[system, data_line])?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses outputs that would overwrite the data, the predictions, the model or each other.
fn check_paths(
    a: &EvalArgs,
    files: &[AnnotatedFile],
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_maps_are_from_to_pairs() {
        assert!(parse_label_map(&["PERSON".into()]).is_err());
        assert!(parse_label_map(&["=PER".into()]).is_err());
        assert_eq!(
            parse_label_map(&["A=B".into(), "C=".into()]).unwrap()["C"],
            ""
        );
    }
}
