//! `newstag serve`: the arguments; the service is [`crate::serve`].

use crate::device::parse_device;
use crate::model::source::resolve_model_dir;
use crate::serve::queue::BatchLimits;
use crate::serve::routes::RequestLimits;
use crate::serve::ServeConfig;
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Trained model: a directory or a hub id.
    #[arg(long)]
    model: String,
    /// Address to listen on. The default takes connections from this machine only; 0.0.0.0
    /// takes them from anywhere (then consider --api-key-file).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port; the address is printed on stderr).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// A model run closes once its requests hold this many sub-tokens (one larger request runs
    /// alone).
    #[arg(long, default_value_t = 4096, value_parser = super::at_least_one)]
    max_batch_tokens: usize,
    /// A model run closes once its first request has waited this long (milliseconds), or sooner
    /// once it has as many requests as the last run and none more are queued.
    #[arg(long, default_value_t = 5)]
    max_wait_ms: u64,
    /// Requests that may wait for the model; beyond them the answer is 503 with Retry-After.
    #[arg(long, default_value_t = 128, value_parser = super::at_least_one)]
    queue: usize,
    /// Time from a request's arrival to its answer (milliseconds); after it, 504.
    #[arg(long, default_value_t = 30_000, value_parser = super::at_least_one)]
    timeout_ms: usize,
    /// Largest request body, in bytes (413 above).
    #[arg(long, default_value_t = 1 << 20, value_parser = super::at_least_one)]
    max_body_bytes: usize,
    /// Longest article text, in characters (413 above).
    #[arg(long, default_value_t = 100_000, value_parser = super::at_least_one)]
    max_article_chars: usize,
    /// A file holding the bearer token that /v1/* and /metrics then require
    /// (`Authorization: Bearer TOKEN`; /health, /ready and /openapi.json stay open).
    #[arg(long)]
    api_key_file: Option<PathBuf>,
    /// Allow browser calls from this origin (repeatable; * for any). Without it: no CORS headers.
    #[arg(long)]
    cors_origin: Vec<String>,
    /// On SIGTERM or Ctrl-C, how long to wait for the requests in flight (milliseconds).
    #[arg(long, default_value_t = 30_000)]
    drain_timeout_ms: u64,
    #[command(flatten)]
    run: super::InferenceArgs,
}

pub fn run(a: ServeArgs) -> anyhow::Result<ExitCode> {
    let device = parse_device(&a.run.device)?;
    let model_dir = resolve_model_dir(&a.model, None)?;
    let api_key = match &a.api_key_file {
        None => None,
        Some(path) => Some(read_api_key(path)?),
    };
    crate::serve::run(ServeConfig {
        model_dir,
        model_name: a.model,
        host: a.host,
        port: a.port,
        device,
        batch_windows: a.run.batch_size,
        precision: a.run.precision,
        batch: BatchLimits {
            max_tokens: a.max_batch_tokens,
            max_wait: Duration::from_millis(a.max_wait_ms),
        },
        queue: a.queue,
        limits: RequestLimits {
            max_body_bytes: a.max_body_bytes,
            max_article_chars: a.max_article_chars,
            timeout: Duration::from_millis(a.timeout_ms as u64),
        },
        api_key,
        cors_origins: a.cors_origin,
        drain_timeout: Duration::from_millis(a.drain_timeout_ms),
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The token in `--api-key-file`: its content less surrounding whitespace, which must leave
/// something that can travel in a header.
fn read_api_key(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--api-key-file {}: cannot read", path.display()))?;
    let key = text.trim();
    anyhow::ensure!(
        !key.is_empty(),
        "--api-key-file {}: the file is empty",
        path.display()
    );
    anyhow::ensure!(
        key.bytes().all(|b| b.is_ascii_graphic()),
        "--api-key-file {}: the token must be printable ASCII without spaces",
        path.display()
    );
    Ok(key.as_bytes().to_vec())
}
