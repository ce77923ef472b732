//! The bounded request queue and the batching worker that owns the model.
//!
//! HTTP handlers push jobs (one request's articles) with [`Queue::try_push`], which never waits:
//! a full queue is the caller's 503. One worker, on the compute pool's thread, takes jobs and
//! gathers them into one model run until the batch holds `max_batch_tokens` sub-tokens, the
//! first job has waited `max_wait`, or the batch has as many jobs as the last one and no more are
//! queued. It then drops the jobs whose callers have gone (client disconnected or timed out),
//! runs one [`Predictor::predict_encoded`] over the rest (which sorts their windows by length into
//! batches of at most `--batch-size` windows), and sends each caller its own records in request
//! order. An article's output does not depend on its batch-mates, so each record is the line
//! `newstag tag` writes for the same article.

use super::metrics::Metrics;
use crate::data::input::InputItem;
use crate::data::Article;
use crate::encode::EncodedArticle;
use crate::infer::output::OutputRecord;
use crate::infer::Predictor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{
    sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// What the worker answers a job: the records, in request order, and the tagged articles (in the
/// order of the tagged records, for the HTML page); or an error of the model itself.
pub type Reply = Result<Done, String>;

/// A job's records and articles.
#[derive(Debug)]
pub struct Done {
    pub records: Vec<OutputRecord>,
    /// The articles of the `Tagged` records, in their order.
    pub articles: Vec<Article>,
}

/// One request's articles and where to send its answer.
#[derive(Debug)]
pub struct Job {
    items: Vec<InputItem>,
    reply: oneshot::Sender<Reply>,
    enqueued: Instant,
}

impl Job {
    /// A job for `items`, and the receiver its answer comes to (drop it to cancel the job).
    pub fn new(items: Vec<InputItem>) -> (Job, oneshot::Receiver<Reply>) {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            items,
            reply,
            enqueued: Instant::now(),
        };
        (job, rx)
    }
}

/// Why a job was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum PushError {
    /// The queue holds its capacity already.
    Full,
    /// The worker has stopped.
    Closed,
}

/// The sending side of the queue (shared by the handlers).
#[derive(Debug, Clone)]
pub struct Queue {
    tx: SyncSender<Job>,
    metrics: Arc<Metrics>,
}

/// The worker's side of the queue.
pub struct Jobs {
    rx: Receiver<Job>,
    metrics: Arc<Metrics>,
}

/// A queue of at most `capacity` waiting jobs.
pub fn queue(capacity: usize, metrics: Arc<Metrics>) -> (Queue, Jobs) {
    let (tx, rx) = sync_channel(capacity.max(1));
    (
        Queue {
            tx,
            metrics: metrics.clone(),
        },
        Jobs { rx, metrics },
    )
}

impl Queue {
    /// Queues a job without waiting.
    pub fn try_push(&self, job: Job) -> Result<(), PushError> {
        self.metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
                Err(match e {
                    TrySendError::Full(_) => PushError::Full,
                    TrySendError::Disconnected(_) => PushError::Closed,
                })
            }
        }
    }
}

/// How the worker forms batches.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// A batch closes once it holds this many sub-tokens (one larger job runs alone).
    pub max_tokens: usize,
    /// A batch closes once its first job has waited this long since it was queued.
    pub max_wait: Duration,
}

/// A job's article in request order: tagged by the model, or failed before it ran.
enum Slot {
    Tagged,
    Failed { id: String, error: String },
}

/// A job with its articles encoded.
struct Ready {
    reply: oneshot::Sender<Reply>,
    enqueued: Instant,
    slots: Vec<Slot>,
    articles: Vec<Article>,
    encoded: Vec<EncodedArticle>,
    tokens: usize,
}

impl Jobs {
    fn recv(&self, deadline: Option<Instant>) -> Result<Job, bool> {
        let got = match deadline {
            None => self.rx.recv().map_err(|_| true),
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => self
                    .rx
                    .recv_timeout(left)
                    .map_err(|e| e == RecvTimeoutError::Disconnected),
                _ => self
                    .rx
                    .try_recv()
                    .map_err(|e| e == TryRecvError::Disconnected),
            },
        };
        if got.is_ok() {
            self.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
        }
        got
    }

    /// Runs jobs until every [`Queue`] is dropped and the queue is empty. Call it on the compute
    /// pool's thread ([`crate::runtime::on_compute_threads`]).
    pub fn run(self, predictor: &Predictor, limits: BatchLimits) {
        let mut held: Option<Ready> = None;
        let mut closed = false;
        // Jobs in the last batch: once a batch has as many and nothing more is queued, it closes
        // without waiting out `max_wait`. Under a steady load the callers the last batch answered
        // are back by then, and waiting would only leave the model idle (a lone client's request
        // runs at once; 64 clients' requests run as one batch as soon as all 64 are in). After
        // a quiet spell longer than `max_wait` the history no longer says anything: the first
        // batch of what comes next waits again, so a burst is gathered.
        let mut last_jobs = usize::MAX;
        loop {
            let first = match held.take() {
                Some(r) => r,
                None if closed => break,
                None => {
                    let idle = Instant::now();
                    match self.recv(None) {
                        Ok(job) => {
                            if idle.elapsed() > limits.max_wait {
                                last_jobs = usize::MAX;
                            }
                            match self.prepare(predictor, job) {
                                Some(r) => r,
                                None => continue,
                            }
                        }
                        Err(_) => break,
                    }
                }
            };
            let deadline = first.enqueued + limits.max_wait;
            let mut tokens = first.tokens;
            let mut batch = vec![first];
            while tokens < limits.max_tokens && !closed {
                let until = if batch.len() >= last_jobs {
                    Instant::now()
                } else {
                    deadline
                };
                match self.recv(Some(until)) {
                    Ok(job) => {
                        let Some(r) = self.prepare(predictor, job) else {
                            continue;
                        };
                        if tokens + r.tokens > limits.max_tokens {
                            held = Some(r);
                            break;
                        }
                        tokens += r.tokens;
                        batch.push(r);
                    }
                    Err(disconnected) => {
                        closed = disconnected;
                        break;
                    }
                }
            }
            last_jobs = batch.len();
            self.run_batch(predictor, batch);
        }
    }

    /// Encodes a job's articles, or drops it when its caller has gone. An article the tokenizer
    /// cannot encode gets an error record (the others go on).
    fn prepare(&self, predictor: &Predictor, job: Job) -> Option<Ready> {
        if job.reply.is_closed() {
            self.metrics.dropped("gone");
            return None;
        }
        let mut r = Ready {
            reply: job.reply,
            enqueued: job.enqueued,
            slots: Vec::with_capacity(job.items.len()),
            articles: Vec::new(),
            encoded: Vec::new(),
            tokens: 0,
        };
        for item in job.items {
            let article = match item {
                InputItem::Article(a) => a,
                InputItem::Failed { id, error } => {
                    r.slots.push(Slot::Failed { id, error });
                    continue;
                }
            };
            let error = match catch_unwind(AssertUnwindSafe(|| predictor.encode(&article))) {
                Ok(Ok(e)) => {
                    r.tokens += e.ids.len();
                    r.encoded.push(e);
                    r.articles.push(article);
                    r.slots.push(Slot::Tagged);
                    continue;
                }
                Ok(Err(e)) => format!("cannot encode: {e:#}"),
                Err(_) => "cannot encode: the tokenizer failed".to_string(),
            };
            r.slots.push(Slot::Failed {
                id: article.id,
                error,
            });
        }
        Some(r)
    }

    /// Runs one batch and answers its jobs.
    fn run_batch(&self, predictor: &Predictor, batch: Vec<Ready>) {
        let (live, gone): (Vec<Ready>, Vec<Ready>) =
            batch.into_iter().partition(|r| !r.reply.is_closed());
        for _ in &gone {
            self.metrics.dropped("gone");
        }
        if live.is_empty() {
            return;
        }
        let mut articles = Vec::new();
        let mut encoded = Vec::new();
        let mut parts = Vec::with_capacity(live.len());
        let mut tokens = 0;
        for mut r in live {
            parts.push((r.reply, r.slots, r.articles.len()));
            articles.append(&mut r.articles);
            encoded.append(&mut r.encoded);
            tokens += r.tokens;
        }
        let started = Instant::now();
        let predicted = catch_unwind(AssertUnwindSafe(|| {
            predictor.predict_encoded(&articles, &encoded)
        }));
        let predictions = match predicted {
            Ok(Ok(p)) if p.len() == articles.len() => p,
            Ok(Ok(_)) => return fail(parts, "the model gave fewer predictions than articles"),
            Ok(Err(e)) => return fail(parts, &format!("{e:#}")),
            Err(_) => return fail(parts, "the model failed on this batch (it panicked)"),
        };
        self.metrics
            .batch(articles.len(), tokens, started.elapsed());
        let model = predictor.model();
        let mut articles = articles.into_iter();
        let mut predictions = predictions.into_iter();
        for (reply, slots, n) in parts {
            let mine: Vec<Article> = articles.by_ref().take(n).collect();
            let mut tagged = mine.iter().zip(predictions.by_ref().take(n));
            let records = slots
                .into_iter()
                .filter_map(|slot| match slot {
                    Slot::Failed { id, error } => Some(OutputRecord::Failed { id, error }),
                    Slot::Tagged => tagged.next().map(|(a, p)| {
                        OutputRecord::tagged(a, &p, model.topics(), model.thresholds())
                    }),
                })
                .collect();
            // A caller that left in the meantime is simply not answered.
            let _ = reply.send(Ok(Done {
                records,
                articles: mine,
            }));
        }
    }
}

/// Answers every job of a failed batch with the error.
fn fail(parts: Vec<(oneshot::Sender<Reply>, Vec<Slot>, usize)>, error: &str) {
    for (reply, _, _) in parts {
        let _ = reply.send(Err(error.to_string()));
    }
}
