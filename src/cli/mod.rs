//! The `newstag` command line: `train`, `tag`, `eval`, `validate`, `convert` and `serve`.

mod convert;
mod eval;
mod serve;
mod tag;
mod train;
mod validate;

use crate::model::{Precision, PrecisionChoice};
use crate::runtime::Workload;
use clap::{parser::ValueSource, ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
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
    /// Tag articles with a trained model (JSONL, HTML, CoNLL, brat, Label Studio or CSV out).
    Tag(tag::TagArgs),
    /// Score a model on annotated data.
    Eval(eval::EvalArgs),
    /// Check annotated files and list every problem.
    Validate(validate::ValidateArgs),
    /// Convert annotated data between formats (JSONL, CoNLL, Label Studio, doccano, Prodigy, brat).
    Convert(convert::ConvertArgs),
    /// Serve tagging over HTTP, with dynamic batching.
    Serve(serve::ServeArgs),
}

/// How annotated files are read (train, eval, validate).
#[derive(clap::Args, Debug, Clone)]
struct ReadFormatArgs {
    /// Format of the annotated files: jsonl, conll, label-studio, doccano, prodigy (spacy) or
    /// brat. Default: from each file's name (.jsonl, .conll, .json, .doccano.jsonl,
    /// .prodigy.jsonl, .ann or a directory), a plain .jsonl looked into.
    #[arg(long, value_enum)]
    format: Option<crate::data::formats::Format>,
    /// Label Studio and Prodigy: whose annotations to read where a text has several (a user id
    /// or e-mail; Prodigy: an _annotator_id or _session_id).
    #[arg(long, value_name = "ID")]
    annotator: Option<String>,
    /// Widen a span that cuts a word to the whole words it touches (said for each span) instead
    /// of refusing it (Label Studio, doccano, Prodigy, brat).
    #[arg(long)]
    snap: bool,
}

impl ReadFormatArgs {
    fn choice(&self) -> crate::data::load::FormatChoice {
        crate::data::load::FormatChoice {
            format: self.format,
            annotator: self.annotator.clone(),
            snap: self.snap,
        }
    }
}

/// Options shared by the verbs that run a trained model.
#[derive(clap::Args, Debug)]
struct InferenceArgs {
    /// Most windows per batch (windows of similar lengths are batched together; a few short
    /// ones among long ones get a smaller batch of their own rather than padding; on the CPU a
    /// batch also holds at most 2,048 padded sub-tokens).
    #[arg(long, default_value_t = 32, value_parser = at_least_one)]
    batch_size: usize,
    /// cpu, cuda[:N] or metal.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Number format of the matrix products: auto (the fastest this CPU has that keeps
    /// accuracy: int8 with AMX, VNNI or AVX2, else bf16 with AVX512-BF16, else f32; said on
    /// stderr); f32; bf16 (CPUs with AVX512-BF16: faster, with scores a little less exact); or
    /// int8 (CPU only, fast with AVX2 and faster with VNNI or AMX: weights per channel and
    /// activations per row quantised to 8 bits).
    #[arg(long, default_value = "auto")]
    precision: PrecisionChoice,
}

impl InferenceArgs {
    /// The precision to run `model` at; `auto` says on stderr what it chose.
    fn precision(&self, model: &crate::model::NewsTagger) -> Precision {
        let (precision, line) = self.precision.resolve(model.device(), model.family());
        if let Some(line) = line {
            eprintln!("{line}");
        }
        precision
    }
}

/// The long flags (`--epochs`) of the subcommand's options that were given on the command line,
/// not left at their defaults.
fn given_options(matches: &ArgMatches) -> Vec<String> {
    let Some((name, sub)) = matches.subcommand() else {
        return Vec::new();
    };
    let command = Cli::command();
    let Some(sub_command) = command.find_subcommand(name) else {
        return Vec::new();
    };
    sub_command
        .get_arguments()
        .filter(|arg| sub.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine))
        .filter_map(|arg| arg.get_long().map(|l| format!("--{l}")))
        .collect()
}

/// A count that must be at least 1 (batch sizes, epochs, steps).
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a whole number")),
    }
}

fn finite(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err("must be a finite number".into()),
        Err(_) => Err(format!("{s:?} is not a number")),
    }
}

/// A finite number above zero (a learning rate).
fn positive(s: &str) -> Result<f64, String> {
    finite(s).and_then(|v| {
        if v > 0.0 {
            Ok(v)
        } else {
            Err("must be above 0".into())
        }
    })
}

/// A finite number, zero or above (a loss weight).
fn non_negative(s: &str) -> Result<f64, String> {
    finite(s).and_then(|v| {
        if v >= 0.0 {
            Ok(v)
        } else {
            Err("must be 0 or more".into())
        }
    })
}

/// Sets the process up as a Unix command-line tool should behave, before it runs a command.
///
/// - A reader that goes away (`newstag tag ... | head -1`, or stderr piped into one) ends the run
///   as it ends `cat`: by SIGPIPE, with the output written so far intact. Rust starts programs
///   with SIGPIPE ignored, and the next `eprintln!` would then panic (exit 101).
/// - A user error prints its message, not a backtrace: with `RUST_BACKTRACE=1` in the
///   environment, candle attaches a backtrace to every error it makes and prints it with the
///   message. `RUST_LIB_BACKTRACE=0` stops that and keeps backtraces for panics.
/// - The compute threads are counted once and the allocator set to reuse large buffers as the
///   command's work needs ([`crate::runtime::set_up`]).
///
/// # Safety
/// Sets environment variables and a signal disposition: call it before any other thread starts.
pub unsafe fn set_up_process(cli: &Cli) {
    // SAFETY: the caller guarantees that no other thread runs yet.
    unsafe {
        #[cfg(unix)]
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
            std::env::set_var("RUST_LIB_BACKTRACE", "0");
        }
        crate::runtime::set_up(match cli.command {
            Command::Train(_) => Workload::Training,
            _ => Workload::Inference,
        });
    }
}

/// The parsed command line with clap's matches (which options were given, for `train`'s
/// resumption check). Exits with clap's message on a usage error.
pub fn parse() -> (Cli, ArgMatches) {
    let matches = Cli::command().get_matches();
    match Cli::from_arg_matches(&matches) {
        Ok(cli) => (cli, matches),
        Err(e) => e.exit(),
    }
}

/// Runs a parsed command line ([`parse`]); errors are printed with their causes.
pub fn run((cli, matches): (Cli, ArgMatches)) -> ExitCode {
    let result = match cli.command {
        Command::Train(a) => train::run(a, &given_options(&matches)),
        Command::Tag(a) => tag::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Validate(a) => validate::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Serve(a) => serve::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
