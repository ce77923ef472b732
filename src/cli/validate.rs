use crate::data::load::{pair_sidecars, read_annotated};
use crate::data::{check_entity_type, check_topic_name, Schema};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Annotated files: articles JSONL, CoNLL, Label Studio, doccano, Prodigy or brat.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Topics sidecar for the CoNLL file in the same position.
    #[arg(long)]
    topics: Vec<PathBuf>,
    /// Extra entity types to accept besides PER, ORG, LOC, MISC.
    #[arg(long = "entity-type", value_parser = entity_type)]
    entity_types: Vec<String>,
    /// Extra topics to accept besides energy, borders, defense, trade.
    #[arg(long = "topic", value_parser = topic_name)]
    extra_topics: Vec<String>,
    #[command(flatten)]
    read: super::ReadFormatArgs,
}

/// A type the readers could ever accept (a usage error otherwise, before any file is read).
fn entity_type(s: &str) -> Result<String, String> {
    check_entity_type(s).map(|_| s.to_string())
}

fn topic_name(s: &str) -> Result<String, String> {
    check_topic_name(s).map(|_| s.to_string())
}

pub fn run(a: ValidateArgs) -> anyhow::Result<ExitCode> {
    let mut schema = Schema::default();
    schema.entity_types.extend(a.entity_types);
    schema.topics.extend(a.extra_topics);
    let mut problems = 0;
    for file in pair_sidecars(&a.files, &a.topics, &a.read.choice())? {
        let outcome = read_annotated(&file, Some(&schema))?;
        for w in &outcome.warnings {
            println!("warning: {w}");
        }
        for p in &outcome.problems {
            println!("{p}");
        }
        problems += outcome.problems.len();
        let mentions: usize = outcome
            .articles
            .iter()
            .map(|a| a.entities.as_ref().map_or(0, Vec::len))
            .sum();
        eprintln!(
            "{}: {} valid articles, {mentions} entity mentions, {} problem(s)",
            file.path.display(),
            outcome.articles.len(),
            outcome.problems.len()
        );
    }
    Ok(if problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
