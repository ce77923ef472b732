//! `newstag serve`: an HTTP service that tags articles, with dynamic batching.
//!
//! - [`routes`]: the HTTP API (axum on a tokio runtime of one thread, apart from the model).
//! - [`request`]: reading and checking request bodies.
//! - [`queue`]: the bounded queue and the batching worker that owns the model.
//! - [`metrics`]: the Prometheus counters.
//! - [`error`]: the JSON error answers.
//!
//! [`run`] binds the address, starts the HTTP thread, loads the model (the service answers
//! `/health` at once and `/ready` once the model is loaded), and runs the batching worker on the
//! calling thread, which should be a thread of the compute pool
//! ([`crate::runtime::on_compute_threads`]; the CLI's main thread is one). SIGTERM or Ctrl-C stops
//! accepting connections, lets the requests in flight finish (up to the drain timeout), and
//! returns `Ok`.
//!
//! SIGPIPE: the CLI resets it to its default (a closed pipe ends `tag` as it ends `cat`); `serve`
//! ignores it again. Its sockets never raise it (Rust's standard library, under tokio's, sends
//! with `MSG_NOSIGNAL` on Linux and sets `SO_NOSIGPIPE` on macOS), but a log line written to a
//! standard error whose reader has gone would otherwise kill the server; log lines are written
//! with their errors ignored.

pub mod error;
pub mod metrics;
pub mod queue;
pub mod request;
pub mod routes;

use crate::infer::Predictor;
use crate::model::{NewsTagger, Precision, PrecisionChoice};
use anyhow::Context;
use candle_core::Device;
use metrics::Metrics;
use queue::BatchLimits;
use routes::{AppState, RequestLimits};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Everything `serve` is told.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The model directory.
    pub model_dir: PathBuf,
    /// How the model was named (a directory or a hub id), for `/v1/model`.
    pub model_name: String,
    /// Address to listen on (`127.0.0.1` unless told otherwise) and port (0: any free port).
    pub host: String,
    pub port: u16,
    pub device: Device,
    /// Windows per model batch (`--batch-size`).
    pub batch_windows: usize,
    /// Resolved for the loaded model (`auto` says its choice in the log).
    pub precision: PrecisionChoice,
    pub batch: BatchLimits,
    /// Requests that may wait for the model before the service answers 503.
    pub queue: usize,
    pub limits: RequestLimits,
    pub api_key: Option<Vec<u8>>,
    pub cors_origins: Vec<String>,
    /// How long a stop waits for the requests in flight.
    pub drain_timeout: Duration,
}

/// State shared by the HTTP side and the worker.
pub struct Shared {
    pub metrics: Arc<Metrics>,
    /// `/v1/model`'s answer, set once the model is loaded.
    pub model: OnceLock<serde_json::Value>,
    /// Set when a stop was asked for: `/ready` answers 503 and new requests are refused.
    pub draining: AtomicBool,
}

/// Writes a log line to standard error; a closed standard error is not an error for a server.
pub fn log(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Runs the service until SIGTERM or Ctrl-C (see the module docs).
pub fn run(config: ServeConfig) -> anyhow::Result<()> {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to SIG_IGN is async-signal-safe and process-wide.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    let listener = std::net::TcpListener::bind((config.host.as_str(), config.port))
        .with_context(|| format!("cannot listen on {}:{}", config.host, config.port))?;
    listener.set_nonblocking(true)?;
    let address = listener.local_addr()?;
    let metrics = Arc::new(Metrics::new(config.queue));
    let shared = Arc::new(Shared {
        metrics: metrics.clone(),
        model: OnceLock::new(),
        draining: AtomicBool::new(false),
    });
    let (queue, jobs) = queue::queue(config.queue, metrics);
    let state = Arc::new(AppState {
        shared: shared.clone(),
        queue,
        limits: config.limits,
        api_key: config.api_key.clone(),
        cors_origins: config.cors_origins.clone(),
    });
    let (stop, _) = watch::channel(false);
    let stop = Arc::new(stop);
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let http = {
        let (stop, shared, drain) = (stop.clone(), shared.clone(), config.drain_timeout);
        std::thread::Builder::new()
            .name("newstag-http".into())
            .spawn(move || serve_http(listener, state, shared, stop, drain, started_tx))?
    };
    // The HTTP thread owns the only queue sender from here on: when it ends, the worker ends.
    match started_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let _ = http.join();
            return Err(e);
        }
        Err(_) => anyhow::bail!("the HTTP thread failed to start"),
    }
    log(&format!("listening on http://{address}"));

    let loaded = Instant::now();
    let model = match NewsTagger::load(&config.model_dir, &config.device) {
        Ok(m) => m,
        Err(e) => {
            stop.send_replace(true);
            let _ = http.join();
            return Err(e);
        }
    };
    let (precision, line) = config.precision.resolve(&config.device, model.family());
    if let Some(line) = line {
        log(&line);
    }
    let predictor = match Predictor::with_precision(&model, config.batch_windows, precision) {
        Ok(p) => p,
        Err(e) => {
            stop.send_replace(true);
            let _ = http.join();
            return Err(e);
        }
    };
    let _ = shared.model.set(model_info(&model, &config, precision));
    log(&format!(
        "ready: model {} loaded in {:.1}s",
        config.model_name,
        loaded.elapsed().as_secs_f64()
    ));
    let work = || jobs.run(&predictor, config.batch);
    if rayon::current_thread_index().is_some() {
        work();
    } else {
        crate::runtime::on_compute_threads(work);
    }
    let result = http
        .join()
        .map_err(|_| anyhow::anyhow!("the HTTP thread panicked"))?;
    log("stopped");
    result
}

/// Runs the HTTP side on a one-thread tokio runtime until a stop (a signal, or `stop` set) and
/// the drain.
fn serve_http(
    listener: std::net::TcpListener,
    state: Arc<AppState>,
    shared: Arc<Shared>,
    stop: Arc<watch::Sender<bool>>,
    drain: Duration,
    started: std::sync::mpsc::Sender<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            let _ = started.send(Err(anyhow::anyhow!("cannot start the HTTP runtime: {e}")));
            return Ok(());
        }
    };
    runtime.block_on(async move {
        let setup =
            tokio::net::TcpListener::from_std(listener).and_then(|l| Ok((l, stop_signals()?)));
        let (listener, signals) = match setup {
            Ok(s) => s,
            Err(e) => {
                let _ = started.send(Err(
                    anyhow::Error::from(e).context("cannot start the HTTP server")
                ));
                return Ok(());
            }
        };
        {
            let stop = stop.clone();
            let mut stopped = stop.subscribe();
            tokio::spawn(async move {
                tokio::select! {
                    name = signals => log(&format!("{name}: stopping")),
                    _ = stopped.wait_for(|s| *s) => {}
                }
                stop.send_replace(true);
            });
        }
        let _ = started.send(Ok(()));
        let app = routes::router(state);
        let mut graceful = stop.subscribe();
        let mut deadline = stop.subscribe();
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = graceful.wait_for(|s| *s).await;
            shared.draining.store(true, Ordering::SeqCst);
            log("no longer accepting connections; answering the requests in flight");
        });
        tokio::select! {
            r = serve => r.context("the HTTP server failed")?,
            _ = async {
                let _ = deadline.wait_for(|s| *s).await;
                tokio::time::sleep(drain).await;
            } => log(&format!(
                "warning: requests still open after the drain timeout ({} ms): closing them",
                drain.as_millis()
            )),
        }
        Ok(())
    })
}

/// Registers SIGTERM and Ctrl-C (SIGINT) now; the future ends with the name of the first to come.
#[cfg(unix)]
fn stop_signals() -> std::io::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = interrupt.recv() => "interrupted",
        }
    })
}

/// Registers Ctrl-C now; the future ends when it comes.
#[cfg(not(unix))]
fn stop_signals() -> std::io::Result<impl std::future::Future<Output = &'static str>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        "interrupted"
    })
}

/// What `/v1/model` tells: labels, topics, thresholds, window, base model, batching.
fn model_info(model: &NewsTagger, c: &ServeConfig, precision: Precision) -> serde_json::Value {
    let b = &model.config.bert;
    serde_json::json!({
        "model": c.model_name,
        "labels": model.tags.types(),
        "tags": model.tags.tags().iter().map(|t| t.to_string()).collect::<Vec<_>>(),
        "topics": model.topics(),
        "thresholds": model.thresholds(),
        "window": model.window(),
        "base_model": {
            "model_type": model.config.model_type,
            "architectures": model.config.architectures,
            "hidden_size": b.hidden_size,
            "num_hidden_layers": b.num_hidden_layers,
            "num_attention_heads": b.num_attention_heads,
            "vocab_size": b.vocab_size,
            "max_position_embeddings": b.max_position_embeddings,
        },
        "serving": {
            "version": env!("CARGO_PKG_VERSION"),
            "precision": precision.name(),
            "batch_size": c.batch_windows,
            "max_batch_tokens": c.batch.max_tokens,
            "max_wait_ms": c.batch.max_wait.as_millis() as u64,
            "queue": c.queue,
            "max_body_bytes": c.limits.max_body_bytes,
            "max_article_chars": c.limits.max_article_chars,
            "timeout_ms": c.limits.timeout.as_millis() as u64,
        },
    })
}
