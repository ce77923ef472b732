use crate::data::load::{found_labels, pair_sidecars, read_all, AnnotatedFile};
use crate::device::parse_device;
use crate::fsutil::write_json_atomic;
use crate::model::config::WindowConfig;
use crate::model::source::resolve_model_dir;
use crate::model::NewsTagger;
use crate::outputs::RunPaths;
use crate::train::checkpoint::Checkpoint;
use crate::train::{train, TrainOptions};
use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Base model: a local directory or a Hugging Face hub id (org/name).
    #[arg(long, required_unless_present = "resume")]
    base: Option<String>,
    /// Training file in any format newstag reads (repeat for several; see --format).
    #[arg(long = "train", required_unless_present = "resume")]
    train: Vec<PathBuf>,
    /// Topics sidecar for the CoNLL --train file in the same position.
    #[arg(long = "train-topics")]
    train_topics: Vec<PathBuf>,
    /// Dev file for evaluation after each epoch (repeatable).
    #[arg(long)]
    dev: Vec<PathBuf>,
    /// Topics sidecar for the CoNLL --dev file in the same position.
    #[arg(long = "dev-topics")]
    dev_topics: Vec<PathBuf>,
    /// Run directory: the best model, metrics.jsonl and checkpoints.
    #[arg(long, required_unless_present = "resume")]
    out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint (all other options come from it).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["base", "train", "out"])]
    resume: Option<PathBuf>,
    #[arg(long, default_value_t = 3, value_parser = super::at_least_one)]
    epochs: usize,
    /// Stop after this many optimiser steps.
    #[arg(long, value_parser = super::at_least_one)]
    max_steps: Option<usize>,
    /// Windows per batch.
    #[arg(long, default_value_t = 8, value_parser = super::at_least_one)]
    batch_size: usize,
    /// Peak learning rate (finite, above 0).
    #[arg(long, default_value_t = 1e-4, value_parser = super::positive)]
    lr: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Epochs without dev improvement before stopping.
    #[arg(long, default_value_t = 2)]
    patience: usize,
    /// Sub-tokens per window (with [CLS] and [SEP]; at least 8).
    #[arg(long, default_value_t = 256, value_parser = window_size)]
    window: usize,
    /// Sub-tokens shared by neighbouring windows.
    #[arg(long, default_value_t = 64)]
    overlap: usize,
    /// Weight of the topic loss (finite, 0 or more).
    #[arg(long, default_value_t = 1.0, value_parser = super::non_negative)]
    topic_weight: f64,
    /// Save a resumable checkpoint every N steps (and after each epoch; 0: only then).
    #[arg(long, default_value_t = 200)]
    checkpoint_every: usize,
    /// Train on the articles as given only: no joined pairs or moved paragraphs (see
    /// data/README.md, "Augmentation").
    #[arg(long)]
    no_augment: bool,
    /// cpu, cuda[:N] or metal.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Skip invalid records (counted) instead of stopping.
    #[arg(long)]
    skip_invalid: bool,
    #[command(flatten)]
    read: super::ReadFormatArgs,
}

/// Everything a run needs to be resumed, saved as `training_args.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunArgs {
    base: String,
    train: Vec<AnnotatedFile>,
    dev: Vec<AnnotatedFile>,
    window: WindowConfig,
    device: String,
    skip_invalid: bool,
    options: TrainOptions,
}

fn window_size(s: &str) -> Result<usize, String> {
    super::at_least_one(s).and_then(|n| {
        if n >= 8 {
            Ok(n)
        } else {
            Err("must be at least 8 (room for [CLS], [SEP] and some words)".into())
        }
    })
}

/// Refuses a run directory that would overwrite something the run reads, or that is not a
/// newstag run (a non-empty directory without `training_args.json`), or that already holds a run
/// with checkpoints (which `--resume` continues).
fn check_run_paths(out: &Path, base: &Path, run: &RunArgs) -> anyhow::Result<()> {
    let mut paths = RunPaths::new();
    paths.reads_model("--base", base)?;
    for (flag, files) in [("--train", &run.train), ("--dev", &run.dev)] {
        for f in files {
            paths.reads(flag, &f.path)?;
            if let Some(sidecar) = &f.topics {
                paths.reads(&format!("{flag}-topics"), sidecar)?;
            }
        }
    }
    paths.writes_run("--out", out)?;
    paths.check()?;
    if out.join("checkpoints/latest.json").exists() {
        anyhow::bail!("--out {}: already holds a run with checkpoints: resume it with --resume {0}, or choose another --out", out.display());
    }
    let non_empty = std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some());
    anyhow::ensure!(
        !non_empty || out.join("training_args.json").is_file(),
        "--out {}: a directory that is not a newstag run (no training_args.json) and not empty: newstag writes config.json, model.safetensors and more there; choose a new or empty directory",
        out.display()
    );
    Ok(())
}

fn load_run_args(dir: &Path) -> anyhow::Result<RunArgs> {
    let path = dir.join("training_args.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{}: cannot read (is this a newstag run directory?)",
            path.display()
        )
    })?;
    serde_json::from_str(&text)
        .with_context(|| format!("{}: invalid training arguments", path.display()))
}

/// `explicit` names the options given on the command line (`--epochs`).
pub fn run(a: TrainArgs, explicit: &[String]) -> anyhow::Result<ExitCode> {
    let (out, run_args) = match &a.resume {
        Some(dir) => {
            let ignored: Vec<&str> = explicit
                .iter()
                .map(String::as_str)
                .filter(|flag| *flag != "--resume")
                .collect();
            if !ignored.is_empty() {
                eprintln!(
                    "warning: --resume continues the run with the options in {}; ignoring {}",
                    dir.join("training_args.json").display(),
                    ignored.join(", ")
                );
            }
            (dir.clone(), load_run_args(dir)?)
        }
        None => {
            let out = a.out.clone().expect("clap requires --out");
            let run_args = RunArgs {
                base: a.base.clone().expect("clap requires --base"),
                train: pair_sidecars(&a.train, &a.train_topics, &a.read.choice())?,
                dev: pair_sidecars(&a.dev, &a.dev_topics, &a.read.choice())?,
                window: WindowConfig {
                    max_tokens: a.window,
                    overlap: a.overlap,
                },
                device: a.device.clone(),
                skip_invalid: a.skip_invalid,
                options: TrainOptions {
                    epochs: a.epochs,
                    max_steps: a.max_steps,
                    batch_windows: a.batch_size,
                    lr: a.lr,
                    patience: a.patience,
                    seed: a.seed,
                    topic_weight: a.topic_weight,
                    checkpoint_every: a.checkpoint_every,
                    augment: !a.no_augment,
                    ..TrainOptions::default()
                },
            };
            (out, run_args)
        }
    };
    let device = parse_device(&run_args.device)?;
    // The base is resolved (and the run directory checked) before anything is read or written.
    let base = match &a.resume {
        Some(_) => None,
        None => {
            let base = resolve_model_dir(&run_args.base, None)?;
            check_run_paths(&out, &base, &run_args)?;
            Some(base)
        }
    };
    let train_articles = read_all(&run_args.train, None, run_args.skip_invalid)?;
    let dev_articles = read_all(&run_args.dev, None, run_args.skip_invalid)?;
    let (types, topics) = found_labels(&train_articles);
    anyhow::ensure!(
        !types.is_empty() || !topics.is_empty(),
        "the training data has neither entity nor topic annotations"
    );
    eprintln!(
        "training on {} articles ({} entity types: {}; topics: {}), dev {} articles",
        train_articles.len(),
        types.len(),
        types.join(" "),
        if topics.is_empty() {
            "none".into()
        } else {
            topics.join(" ")
        },
        dev_articles.len()
    );

    let resume = match &a.resume {
        Some(dir) => Checkpoint::latest(dir)?,
        None => None,
    };
    let (mut model, state) = match resume {
        Some((state, ckpt_dir)) => {
            eprintln!("resuming from {} (step {})", ckpt_dir.display(), state.step);
            (NewsTagger::load(&ckpt_dir, &device)?, Some(state))
        }
        None => {
            // A resumed run that stopped before its first checkpoint starts from its base again.
            let base = match base {
                Some(base) => base,
                None => resolve_model_dir(&run_args.base, None)?,
            };
            let model = NewsTagger::from_base(
                &base,
                &types,
                &topics,
                run_args.window,
                run_args.options.seed,
                &device,
            )?;
            eprintln!(
                "{}: encoder loaded; new heads initialised: {}",
                base.display(),
                model.initialised_heads().join(", ")
            );
            let dropped = model.dropped_base_heads();
            if !dropped.is_empty() {
                eprintln!(
                    "{}: the base's own heads are not reused: {}",
                    base.display(),
                    dropped.join(", ")
                );
            }
            std::fs::create_dir_all(&out)
                .with_context(|| format!("{}: cannot create", out.display()))?;
            write_json_atomic(&out.join("training_args.json"), &run_args)?;
            (model, None)
        }
    };
    let summary = train(
        &mut model,
        &train_articles,
        &dev_articles,
        &run_args.options,
        &out,
        state,
    )?;
    eprintln!(
        "done: {} steps in {:.0}s, {:.0} tokens/s{}; model in {}",
        summary.steps,
        summary.elapsed_s,
        summary.tokens_per_s,
        summary
            .best_score
            .map_or(String::new(), |s| format!(", best dev score {s:.4}")),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}
