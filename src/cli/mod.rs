//! The `newstag` command line: `train`, `tag`, `eval` and `validate`.

mod eval;
mod tag;
mod train;
mod validate;

use crate::model::Precision;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Tag news articles with named entities and topics.
#[derive(Parser, Debug)]
#[command(name = "newstag", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Fine-tune a BERT encoder for entities and topics.
    Train(train::TrainArgs),
    /// Tag articles with a trained model (JSONL out).
    Tag(tag::TagArgs),
    /// Score a model on annotated data.
    Eval(eval::EvalArgs),
    /// Check annotated files and list every problem.
    Validate(validate::ValidateArgs),
}

/// Options shared by the verbs that run a trained model.
#[derive(clap::Args, Debug)]
struct InferenceArgs {
    /// Windows per batch.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// cpu, cuda[:N] or metal.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Number format of the matrix products: f32, or bf16 (CPUs with AVX512-BF16: faster, with
    /// scores a little less exact).
    #[arg(long, default_value = "f32")]
    precision: Precision,
}

/// Runs the command line; errors are printed with their causes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => train::run(a),
        Command::Tag(a) => tag::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Validate(a) => validate::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
