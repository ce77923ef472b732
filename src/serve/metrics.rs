//! The service's counters, written in the Prometheus text format (`GET /metrics`).
//!
//! Hand-written rather than from a crate: a handful of counters, two gauges and three histograms
//! are a few dozen lines of text formatting, while the `prometheus` crate brings protobuf and the
//! `metrics` exporters bring an HTTP stack of their own.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the request latency histogram.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Upper bounds of the batch size histograms (articles, sub-tokens).
const ARTICLE_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
const TOKEN_BUCKETS: [f64; 10] = [
    16.0, 64.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, 8192.0, 16384.0, 65536.0,
];

/// A cumulative histogram over fixed buckets.
#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| v <= b) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c;
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

#[derive(Debug, Clone)]
struct Inner {
    /// Requests answered, by route and status.
    requests: BTreeMap<(&'static str, u16), u64>,
    latency: Histogram,
    batch_articles: Histogram,
    batch_tokens: Histogram,
    articles: u64,
    tokens: u64,
    compute_seconds: f64,
    /// Requests dropped before they ran, by reason (`gone`: the client left or timed out).
    dropped: BTreeMap<&'static str, u64>,
}

/// Counters shared by the HTTP side and the batching worker.
#[derive(Debug)]
pub struct Metrics {
    inner: Mutex<Inner>,
    /// Requests waiting in the queue (set by the queue itself).
    pub queue_depth: AtomicUsize,
    queue_capacity: usize,
}

impl Metrics {
    /// Empty counters for a queue of `queue_capacity` requests.
    pub fn new(queue_capacity: usize) -> Self {
        Metrics {
            inner: Mutex::new(Inner {
                requests: BTreeMap::new(),
                latency: Histogram::new(&LATENCY_BUCKETS),
                batch_articles: Histogram::new(&ARTICLE_BUCKETS),
                batch_tokens: Histogram::new(&TOKEN_BUCKETS),
                articles: 0,
                tokens: 0,
                compute_seconds: 0.0,
                dropped: BTreeMap::new(),
            }),
            queue_depth: AtomicUsize::new(0),
            queue_capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves plain counters: still fine to read.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One request answered on `route` (a fixed route name, so the label set stays small).
    pub fn request(&self, route: &'static str, status: u16, took: Duration) {
        let mut m = self.lock();
        *m.requests.entry((route, status)).or_default() += 1;
        if route == "/v1/tag" {
            m.latency.observe(took.as_secs_f64());
        }
    }

    /// One batch run: its articles, sub-tokens and compute time.
    pub fn batch(&self, articles: usize, tokens: usize, took: Duration) {
        let mut m = self.lock();
        m.batch_articles.observe(articles as f64);
        m.batch_tokens.observe(tokens as f64);
        m.articles += articles as u64;
        m.tokens += tokens as u64;
        m.compute_seconds += took.as_secs_f64();
    }

    /// A request dropped before it ran.
    pub fn dropped(&self, reason: &'static str) {
        *self.lock().dropped.entry(reason).or_default() += 1;
    }

    /// Requests answered on `route` with `status` so far.
    pub fn requests(&self, route: &'static str, status: u16) -> u64 {
        self.lock()
            .requests
            .get(&(route, status))
            .copied()
            .unwrap_or(0)
    }

    /// Everything, in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self, ready: bool) -> String {
        let m = self.lock().clone();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP newstag_requests_total Requests answered, by route and status.\n# TYPE newstag_requests_total counter"
        );
        for ((route, status), n) in &m.requests {
            let _ = writeln!(
                out,
                "newstag_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        m.latency.write(
            &mut out,
            "newstag_request_duration_seconds",
            "Time from request to answer on /v1/tag (queue wait included).",
        );
        m.batch_articles.write(
            &mut out,
            "newstag_batch_articles",
            "Articles per model run (dynamic batches).",
        );
        m.batch_tokens.write(
            &mut out,
            "newstag_batch_tokens",
            "Sub-tokens per model run (dynamic batches).",
        );
        let gauge = |out: &mut String, name: &str, help: &str, kind: &str, v: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        gauge(
            &mut out,
            "newstag_queue_depth",
            "Requests waiting for the model.",
            "gauge",
            self.queue_depth.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            &mut out,
            "newstag_queue_capacity",
            "Requests the queue holds before answering 503.",
            "gauge",
            self.queue_capacity.to_string(),
        );
        gauge(
            &mut out,
            "newstag_articles_total",
            "Articles tagged.",
            "counter",
            m.articles.to_string(),
        );
        gauge(
            &mut out,
            "newstag_tokens_total",
            "Sub-tokens tagged (rate() of it is tokens/s).",
            "counter",
            m.tokens.to_string(),
        );
        gauge(
            &mut out,
            "newstag_compute_seconds_total",
            "Time spent running the model.",
            "counter",
            m.compute_seconds.to_string(),
        );
        let per_second = if m.compute_seconds > 0.0 {
            m.tokens as f64 / m.compute_seconds
        } else {
            0.0
        };
        gauge(
            &mut out,
            "newstag_tokens_per_compute_second",
            "Sub-tokens per second of model time since start.",
            "gauge",
            format!("{per_second:.1}"),
        );
        let _ = writeln!(
            out,
            "# HELP newstag_requests_dropped_total Requests dropped before the model ran them (gone: the client left or timed out).\n# TYPE newstag_requests_dropped_total counter"
        );
        let gone = m.dropped.get("gone").copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "newstag_requests_dropped_total{{reason=\"gone\"}} {gone}"
        );
        gauge(
            &mut out,
            "newstag_ready",
            "1 once the model is loaded and the service takes requests.",
            "gauge",
            u8::from(ready).to_string(),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new(8);
        m.request("/v1/tag", 200, Duration::from_millis(3));
        m.request("/v1/tag", 200, Duration::from_millis(300));
        m.request("/health", 200, Duration::ZERO);
        m.batch(3, 100, Duration::from_millis(10));
        let text = m.render(true);
        assert!(text.contains("newstag_requests_total{route=\"/v1/tag\",status=\"200\"} 2\n"));
        assert!(text.contains("newstag_request_duration_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("newstag_request_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("newstag_batch_articles_bucket{le=\"4\"} 1\n"));
        assert!(text.contains("newstag_tokens_total 100\n"));
        assert!(text.contains("newstag_queue_capacity 8\n"));
        assert!(text.contains("newstag_tokens_per_compute_second 10000.0\n"));
        assert_eq!(m.requests("/v1/tag", 200), 2);
        // Every sample line is NAME{labels} VALUE or NAME VALUE, after its HELP and TYPE.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(name.starts_with("newstag_"), "{line}");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
