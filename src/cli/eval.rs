use crate::data::load::{pair_sidecars, read_all};
use crate::data::Schema;
use crate::device::parse_device;
use crate::eval::evaluate;
use crate::fsutil::write_json_atomic;
use crate::model::source::resolve_model_dir;
use crate::model::NewsTagger;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Trained model: a directory or a hub id.
    #[arg(long)]
    model: String,
    /// Annotated data, CoNLL or articles JSONL (repeatable).
    #[arg(long, required = true)]
    data: Vec<PathBuf>,
    /// Topics sidecar for the CoNLL --data file in the same position.
    #[arg(long)]
    topics: Vec<PathBuf>,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Windows per batch.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// cpu, cuda[:N] or metal.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Skip invalid records (counted) instead of stopping.
    #[arg(long)]
    skip_invalid: bool,
}

pub fn run(a: EvalArgs) -> anyhow::Result<ExitCode> {
    let device = parse_device(&a.device)?;
    let model = NewsTagger::load(&resolve_model_dir(&a.model, None)?, &device)?;
    let schema = Schema {
        entity_types: model.tags.types(),
        topics: model.topics().to_vec(),
    };
    let articles = read_all(
        &pair_sidecars(&a.data, &a.topics)?,
        Some(&schema),
        a.skip_invalid,
    )?;
    let evaluation = evaluate(&model, &articles, a.batch_size, false)?;
    print!("{}", evaluation.report.table());
    if let Some(path) = &a.json {
        write_json_atomic(path, &evaluation.report)?;
    }
    Ok(ExitCode::SUCCESS)
}
