//! `newstag convert IN OUT`: reads annotated data in one format and writes it in another, saying
//! on stderr what the output format cannot hold.

use crate::data::formats::{self, Format, Output};
use crate::data::problems_error;
use crate::fsutil::{write_atomic, PartialDir};
use crate::outputs::RunPaths;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// Annotated input: a file, or a directory of brat .txt/.ann pairs.
    input: PathBuf,
    /// Output: a file, or for brat a new (or empty) directory.
    output: PathBuf,
    /// Input format (default: from the input's name; a plain .jsonl is looked into).
    #[arg(long, value_enum)]
    from: Option<Format>,
    /// Output format (default: from the output's name; no extension means a brat directory).
    #[arg(long, value_enum)]
    to: Option<Format>,
    /// Topics sidecar of a CoNLL input.
    #[arg(long)]
    topics: Option<PathBuf>,
    /// Write the topics of a CoNLL output to this sidecar.
    #[arg(long)]
    topics_out: Option<PathBuf>,
    /// Label Studio and Prodigy: whose annotations to read where a text has several.
    #[arg(long, value_name = "ID")]
    annotator: Option<String>,
    /// Widen a span that cuts a word to the whole words it touches (said for each span).
    #[arg(long)]
    snap: bool,
}

pub fn run(a: ConvertArgs) -> anyhow::Result<ExitCode> {
    let from = a.from.unwrap_or_else(|| Format::detect(&a.input));
    let to = a.to.unwrap_or_else(|| Format::for_output(&a.output));
    let mut paths = RunPaths::new();
    paths.reads("the input", &a.input)?;
    if let Some(t) = &a.topics {
        paths.reads("--topics", t)?;
    }
    if to == Format::Brat {
        paths.writes_run("OUT", &a.output)?;
        paths.writes_run(
            "OUT's partial directory",
            &crate::fsutil::partial_path(&a.output),
        )?;
    } else {
        paths.writes("OUT", &a.output)?;
    }
    if let Some(t) = &a.topics_out {
        paths.writes("--topics-out", t)?;
    }
    paths.check()?;
    let opts = formats::ReadOptions {
        schema: None,
        annotator: a.annotator.as_deref(),
        snap: a.snap,
        topics: a.topics.as_deref(),
    };
    let outcome = formats::read(from, &a.input, opts)?;
    for w in &outcome.warnings {
        eprintln!("warning: {w}");
    }
    if !outcome.problems.is_empty() {
        return Err(problems_error(&outcome.problems));
    }
    let articles = outcome.articles;
    let encoded = formats::write(to, &articles, a.topics_out.is_some());
    match encoded.output {
        Output::File(bytes) => write_atomic(&a.output, &bytes)?,
        Output::Dir(files) => {
            let dir = PartialDir::open(&a.output)?;
            for (name, bytes) in &files {
                if let Err(e) = dir.write(name, bytes) {
                    dir.discard();
                    return Err(e);
                }
            }
            dir.finish()?;
        }
    }
    if let (Some(path), Some(bytes)) = (&a.topics_out, &encoded.sidecar) {
        write_atomic(path, bytes)?;
    }
    for line in encoded.losses.lines() {
        eprintln!("note: {to} cannot hold: {line}");
    }
    let entities: usize = articles
        .iter()
        .map(|x| x.entities.as_ref().map_or(0, Vec::len))
        .sum();
    eprintln!(
        "converted {} article(s), {entities} entities, {} with topics: {} ({from}) -> {} ({to})",
        articles.len(),
        articles.iter().filter(|x| x.topics.is_some()).count(),
        a.input.display(),
        a.output.display()
    );
    Ok(ExitCode::SUCCESS)
}
