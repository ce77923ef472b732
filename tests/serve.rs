//! `newstag serve` end to end: the real binary on an ephemeral loopback port with a tiny random
//! model, spoken to over plain TCP. Every wait is bounded; all traffic goes to 127.0.0.1.

mod common;

use common::{corpus_jsonl, newstag, s};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Longest any single wait in these tests may take.
const PATIENCE: Duration = Duration::from_secs(30);

/// One random model for every test of this file.
fn model() -> &'static Path {
    static MODEL: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = MODEL.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = common::random_model(dir.path());
        (dir, path)
    });
    path
}

/// A running `newstag serve`, killed when dropped.
struct Server {
    child: Option<Child>,
    addr: SocketAddr,
    /// Standard error so far (a thread keeps reading it).
    log: Arc<Mutex<String>>,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        Self::start_with(args, true)
    }

    /// Starts the server; with `keep_stderr` false, its standard error is closed as soon as the
    /// address is read (a log reader that went away).
    fn start_with(args: &[&str], keep_stderr: bool) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_newstag"))
            .args(["serve", "--model", s(model()), "--port", "0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = channel::<String>();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stderr);
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 {
                    log.lock().unwrap().push_str(&line);
                    let listening = line.contains("listening on http://");
                    if listening {
                        let _ = tx.send(line.clone());
                        if !keep_stderr {
                            return; // drops the pipe's reading end
                        }
                    }
                    line.clear();
                }
            });
        }
        let line = match rx.recv_timeout(PATIENCE) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!("no address printed: {}", log.lock().unwrap());
            }
        };
        let addr: SocketAddr = line
            .trim()
            .rsplit("http://")
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(addr.ip().is_loopback(), "binds loopback by default: {addr}");
        let server = Server {
            child: Some(child),
            addr,
            log,
        };
        let started = Instant::now();
        while get(&server, "/ready").status != 200 {
            assert!(
                started.elapsed() < PATIENCE,
                "never ready: {}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Sends SIGTERM and waits (bounded) for the exit.
    fn terminate(&mut self) -> ExitStatus {
        // SAFETY: signals a child process this test started.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let mut child = self.child.take().unwrap();
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if started.elapsed() > PATIENCE {
                let _ = child.kill();
                panic!("did not stop on SIGTERM: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The value of a metric line (`name{labels}` as written), 0 when absent.
    fn metric(&self, name: &str) -> f64 {
        let text = get(self, "/metrics").text();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An HTTP answer.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {} {}", self.status, self.text()))
    }
}

/// Sends one request (`Connection: close`) and reads the whole answer.
fn request(addr: SocketAddr, head: &str, body: &[u8]) -> Response {
    let mut stream = TcpStream::connect_timeout(&addr, PATIENCE).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.set_write_timeout(Some(PATIENCE)).unwrap();
    let mut bytes = head.as_bytes().to_vec();
    bytes.extend_from_slice(body);
    // A server that answers early (413) may close before reading the whole body.
    let _ = stream.write_all(&bytes);
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end: {:?}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        let (mut out, mut rest) = (Vec::new(), &body[..]);
        loop {
            let end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..end]).unwrap(), 16).unwrap();
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[end + 2..end + 2 + size]);
            rest = &rest[end + 4 + size..];
        }
        body = out;
    }
    Response {
        status,
        headers,
        body,
    }
}

fn get(server: &Server, path: &str) -> Response {
    get_with(server, path, "")
}

fn get_with(server: &Server, path: &str, extra_headers: &str) -> Response {
    let head =
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra_headers}\r\n");
    request(server.addr, &head, b"")
}

fn post(addr: SocketAddr, path: &str, extra_headers: &str, body: &[u8]) -> Response {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra_headers}\r\n",
        body.len()
    );
    request(addr, &head, body)
}

fn tag(server: &Server, body: &str) -> Response {
    post(server.addr, "/v1/tag", "", body.as_bytes())
}

/// The corpus lines as request articles, and what `newstag tag` writes for them.
fn articles_and_tag_lines(n: usize) -> (Vec<String>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let jsonl = corpus_jsonl(n);
    std::fs::write(&input, &jsonl).unwrap();
    let out = newstag(&["tag", "--model", s(model()), s(&input)]);
    assert!(out.status.success(), "{}", common::stderr(&out));
    let lines = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    (jsonl.lines().map(String::from).collect(), lines)
}

#[test]
fn every_endpoint_answers() {
    let server = Server::start(&[]);
    let health = get(&server, "/health");
    assert_eq!(
        (health.status, health.json()["status"].as_str()),
        (200, Some("ok"))
    );
    assert_eq!(get(&server, "/ready").json()["status"], "ready");

    let model = get(&server, "/v1/model").json();
    assert_eq!(model["labels"], serde_json::json!(["PER", "ORG", "LOC"]));
    assert_eq!(model["topics"], serde_json::json!(["energy", "borders"]));
    assert_eq!(model["thresholds"].as_array().unwrap().len(), 2);
    assert_eq!(
        model["window"],
        serde_json::json!({"max_tokens": 16, "overlap": 4})
    );
    assert_eq!(model["base_model"]["model_type"], "bert");
    assert_eq!(model["serving"]["max_batch_tokens"], 4096);

    let (articles, lines) = articles_and_tag_lines(1);
    let one = tag(&server, &articles[0]);
    assert_eq!(one.status, 200, "{}", one.text());
    assert_eq!(one.header("content-type"), Some("application/json"));
    assert_eq!(one.text(), lines[0], "one article: its record");

    let page = post(
        server.addr,
        "/v1/tag?format=html",
        "",
        articles[0].as_bytes(),
    );
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(
        page.text().contains("<html") && page.text().contains("Monday"),
        "{}",
        page.text()
    );

    let metrics = get(&server, "/metrics");
    assert!(metrics
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = metrics.text();
    for name in [
        "newstag_requests_total{route=\"/v1/tag\",status=\"200\"} 2",
        "newstag_request_duration_seconds_bucket{le=\"+Inf\"} 2",
        "newstag_batch_articles_count 2",
        "newstag_batch_tokens_sum",
        "newstag_queue_depth 0",
        "newstag_tokens_total",
        "newstag_tokens_per_compute_second",
        "newstag_ready 1",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }

    // The committed description is what is served, and every path in it answers.
    let spec = get(&server, "/openapi.json");
    let committed =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json"))
            .unwrap();
    assert_eq!(spec.text(), committed);
    let spec = spec.json();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let r = match method.as_str() {
                "get" => get(&server, path),
                "post" => post(server.addr, path, "", articles[0].as_bytes()),
                m => panic!("unexpected method {m}"),
            };
            assert!(r.status < 400, "{method} {path}: {}", r.status);
        }
    }
    let missing = get(&server, "/v2/nothing");
    assert_eq!(missing.status, 404);
    assert!(missing.json()["error"]
        .as_str()
        .unwrap()
        .contains("no such route"));
    let wrong_method = get(&server, "/v1/tag");
    assert_eq!(wrong_method.status, 405);
    assert!(wrong_method.json()["error"].is_string());
    // No CORS unless asked for.
    let r = get_with(&server, "/health", "Origin: http://evil.example\r\n");
    assert_eq!(r.header("access-control-allow-origin"), None);
}

#[test]
fn records_match_tag_whether_batched_concurrent_or_sequential() {
    let n = 12;
    let (articles, lines) = articles_and_tag_lines(n);
    // A long wait gathers the concurrent requests into few model runs: they come first, to a
    // server without history (later, single requests would let each run close as soon as it
    // holds one).
    let server = Server::start(&["--max-wait-ms", "300", "--batch-size", "3"]);
    let addr = server.addr;
    let handles: Vec<_> = articles
        .iter()
        .cloned()
        .map(|a| std::thread::spawn(move || post(addr, "/v1/tag", "", a.as_bytes()).text()))
        .collect();
    let concurrent: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(concurrent, lines, "concurrent requests: the same records");
    let runs = server.metric("newstag_batch_articles_count");
    assert!(
        runs < n as f64,
        "{n} concurrent requests were batched into {runs} model runs"
    );

    let all = post(
        server.addr,
        "/v1/tag?format=jsonl",
        "",
        format!("{{\"articles\": [{}]}}", articles.join(",")).as_bytes(),
    );
    assert_eq!(all.status, 200, "{}", all.text());
    assert_eq!(all.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(
        all.text(),
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        "one request: byte-identical to tag"
    );
    let listed = tag(
        &server,
        &format!("{{\"articles\": [{}]}}", articles.join(",")),
    );
    let expected: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.json()["records"], serde_json::Value::Array(expected));

    let sequential: Vec<String> = articles.iter().map(|a| tag(&server, a).text()).collect();
    assert_eq!(sequential, lines);
}

#[test]
fn a_lone_client_is_not_held_for_batch_mates() {
    let server = Server::start(&["--max-wait-ms", "2000"]);
    let (articles, lines) = articles_and_tag_lines(4);
    // The first run has no history and waits its two seconds for batch-mates; each later
    // request comes alone, like the one before, and runs as soon as it is in.
    assert_eq!(tag(&server, &articles[0]).text(), lines[0]);
    for (a, line) in articles.iter().zip(&lines).skip(1) {
        let started = Instant::now();
        assert_eq!(tag(&server, a).text(), *line);
        assert!(
            started.elapsed() < Duration::from_millis(1000),
            "a lone request waited {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn a_full_queue_answers_503_with_retry_after() {
    // Slow runs (one window per model batch, long articles, one request per run) and a queue
    // of one: most of 24 simultaneous requests find it full.
    let server = Server::start(&[
        "--queue",
        "1",
        "--batch-size",
        "1",
        "--max-batch-tokens",
        "1",
    ]);
    let text = vec!["Tokayev met Mirziyoyev in Tashkent on Monday ."; 150].join(" ");
    let body = format!("{{\"text\": \"{text}\"}}");
    let addr = server.addr;
    let barrier = Arc::new(std::sync::Barrier::new(24));
    let handles: Vec<_> = (0..24)
        .map(|_| {
            let (body, barrier) = (body.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                post(addr, "/v1/tag", "", body.as_bytes())
            })
        })
        .collect();
    let answers: Vec<Response> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let full: Vec<&Response> = answers.iter().filter(|r| r.status == 503).collect();
    assert!(
        answers.iter().all(|r| r.status == 200 || r.status == 503),
        "{:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(answers.iter().any(|r| r.status == 200));
    assert!(!full.is_empty(), "no 503 among {} answers", answers.len());
    assert_eq!(full[0].header("retry-after"), Some("1"));
    assert!(full[0].json()["error"]
        .as_str()
        .unwrap()
        .contains("queue is full"));
    assert!(server.metric("newstag_requests_total{route=\"/v1/tag\",status=\"503\"}") >= 1.0);
    assert_eq!(get(&server, "/health").status, 200, "still alive");
}

#[test]
fn bodies_and_articles_over_their_limits_answer_413() {
    let server = Server::start(&["--max-body-bytes", "1000", "--max-article-chars", "50"]);
    let big = format!("{{\"text\": \"{}\"}}", "a ".repeat(1000));
    let r = tag(&server, &big);
    assert_eq!(r.status, 413);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("--max-body-bytes"),
        "{}",
        r.text()
    );
    // Without Content-Length (chunked), the limit holds as the body streams in.
    let head = "POST /v1/tag HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n";
    let chunked = format!("{:x}\r\n{big}\r\n0\r\n\r\n", big.len());
    let r = request(server.addr, head, chunked.as_bytes());
    assert_eq!(r.status, 413, "{}", r.text());
    let r = tag(
        &server,
        &format!(
            "{{\"articles\": [{{\"text\": \"ok\"}}, {{\"id\": \"long\", \"text\": \"{}\"}}]}}",
            "b".repeat(51)
        ),
    );
    assert_eq!(r.status, 413);
    let e = r.json();
    assert_eq!(
        (e["article"].as_u64(), e["id"].as_str(), e["field"].as_str()),
        (Some(1), Some("long"), Some("text"))
    );
    assert!(
        e["error"].as_str().unwrap().contains("51 characters"),
        "{e}"
    );
    assert_eq!(tag(&server, r#"{"text": "short enough"}"#).status, 200);
}

#[test]
fn a_bearer_token_guards_the_api_but_not_the_probes() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "s3cret-token\n").unwrap();
    let server = Server::start(&["--api-key-file", s(&key)]);
    let body = r#"{"text": "Tokayev met Mirziyoyev."}"#;
    let none = tag(&server, body);
    assert_eq!(none.status, 401);
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    assert!(none.json()["error"]
        .as_str()
        .unwrap()
        .contains("bearer token"));
    assert_eq!(
        post(
            server.addr,
            "/v1/tag",
            "Authorization: Bearer wrong\r\n",
            body.as_bytes()
        )
        .status,
        401
    );
    assert_eq!(
        post(
            server.addr,
            "/v1/tag",
            "Authorization: Bearer s3cret-token-and-more\r\n",
            body.as_bytes()
        )
        .status,
        401
    );
    assert_eq!(
        post(
            server.addr,
            "/v1/tag",
            "Authorization: s3cret-token\r\n",
            body.as_bytes()
        )
        .status,
        401
    );
    let ok = post(
        server.addr,
        "/v1/tag",
        "Authorization: Bearer s3cret-token\r\n",
        body.as_bytes(),
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(get(&server, "/metrics").status, 401);
    assert_eq!(get(&server, "/v1/model").status, 401);
    assert_eq!(
        get_with(
            &server,
            "/metrics",
            "Authorization: Bearer s3cret-token\r\n"
        )
        .status,
        200
    );
    for open in ["/health", "/ready", "/openapi.json"] {
        assert_eq!(get(&server, open).status, 200, "{open}");
    }
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let out = newstag(&[
        "serve",
        "--model",
        s(model()),
        "--port",
        "0",
        "--api-key-file",
        s(&empty),
    ]);
    assert!(!out.status.success());
    assert!(
        common::stderr(&out).contains("the file is empty"),
        "{}",
        common::stderr(&out)
    );
}

/// A bad body, a part of its message, and the article and field it names.
type BadCase<'a> = (&'a [u8], &'a str, Option<u64>, Option<&'a str>);

#[test]
fn bad_input_answers_400_naming_the_article_and_field() {
    let server = Server::start(&[]);
    let cases: &[BadCase] = &[
        (b"{\"articles\": [{\"text\": \"ok\"}, {\"text\": \"x\",}]}", "malformed JSON", Some(1), Some("articles")),
        (b"{\"articles\": [{\"id\": \"a\", \"text\": 5}]}", "\"text\" must be a string, not a number", Some(0), Some("text")),
        (b"{\"articles\": [{\"id\": \"a\", \"text\": \"x\"}, {\"id\": \"b\"}]}", "missing \"text\"", Some(1), Some("text")),
        (b"{\"articles\": [{\"id\": {}, \"text\": \"x\"}]}", "\"id\" must be a string or a number", Some(0), Some("id")),
        (b"{\"articles\": [{\"id\": \"a\", \"text\": \"ok\"}, {\"id\": \"b\", \"text\": \"caf\xe9\"}]}", "invalid UTF-8", Some(1), Some("text")),
        (b"{\"articles\": 3}", "must be a list", None, Some("articles")),
        (b"{\"articles\": []}", "is empty", None, Some("articles")),
        (b"[\"text\"]", "must be a JSON object", None, None),
        (b"", "malformed JSON", None, None),
        (b"\xff\xfe", "invalid UTF-8", None, None),
    ];
    for (body, message, article, field) in cases {
        let r = post(server.addr, "/v1/tag", "", body);
        let e = r.json();
        let what = String::from_utf8_lossy(body);
        assert_eq!(r.status, 400, "{what}: {e}");
        assert!(
            e["error"].as_str().unwrap().contains(message),
            "{what}: {e}"
        );
        assert_eq!(e["article"].as_u64(), *article, "{what}: {e}");
        assert_eq!(e["field"].as_str(), *field, "{what}: {e}");
    }
    let e = post(
        server.addr,
        "/v1/tag",
        "",
        b"{\"articles\": [{\"id\": \"b\"}]}",
    )
    .json();
    assert_eq!(e["id"], "b");
    let r = post(server.addr, "/v1/tag?format=xml", "", br#"{"text": "x"}"#);
    assert_eq!(
        (r.status, r.json()["field"].as_str()),
        (400, Some("format"))
    );
    // An empty text is the error record tag writes, not a failed request.
    let r = tag(
        &server,
        r#"{"articles": [{"id": "e", "text": "  "}, {"id": "f", "text": "Oil"}]}"#,
    );
    let records = r.json()["records"].clone();
    assert_eq!(
        records[0],
        serde_json::json!({"id": "e", "error": "empty article"})
    );
    assert!(records[1]["entities"].is_array());
    assert_eq!(
        server.metric("newstag_requests_total{route=\"/v1/tag\",status=\"500\"}"),
        0.0
    );
    assert_eq!(get(&server, "/health").status, 200);
}

#[test]
fn a_slow_answer_times_out_with_504_and_its_work_is_dropped() {
    // The worker waits 1.5 s for batch-mates; the request gives up after 300 ms.
    let server = Server::start(&["--timeout-ms", "300", "--max-wait-ms", "1500"]);
    let started = Instant::now();
    let r = tag(&server, r#"{"text": "Tokayev met Mirziyoyev."}"#);
    assert_eq!(r.status, 504, "{}", r.text());
    assert!(started.elapsed() < Duration::from_millis(1400));
    assert!(r.json()["error"].as_str().unwrap().contains("--timeout-ms"));
    wait_for(
        &server,
        "newstag_requests_dropped_total{reason=\"gone\"}",
        1.0,
    );
    assert_eq!(
        server.metric("newstag_batch_articles_count"),
        0.0,
        "nothing was run for it"
    );
}

#[test]
fn a_client_that_disconnects_is_dropped_before_it_is_run() {
    let server = Server::start(&["--max-wait-ms", "1500"]);
    let body = br#"{"text": "Tokayev met Mirziyoyev."}"#;
    let mut stream = TcpStream::connect(server.addr).unwrap();
    let head = format!(
        "POST /v1/tag HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(stream);
    wait_for(
        &server,
        "newstag_requests_dropped_total{reason=\"gone\"}",
        1.0,
    );
    assert_eq!(server.metric("newstag_batch_articles_count"), 0.0);
}

/// Waits (bounded) until a metric reaches `value`.
fn wait_for(server: &Server, metric: &str, value: f64) {
    let started = Instant::now();
    while server.metric(metric) < value {
        assert!(
            started.elapsed() < PATIENCE,
            "{metric} never reached {value}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_answers_the_request_in_flight_then_exits_0() {
    let mut server = Server::start(&["--max-wait-ms", "1000"]);
    let (articles, lines) = articles_and_tag_lines(1);
    let addr = server.addr;
    let body = articles[0].clone();
    let in_flight = std::thread::spawn(move || post(addr, "/v1/tag", "", body.as_bytes()));
    // The request is waiting for batch-mates when the signal comes.
    std::thread::sleep(Duration::from_millis(300));
    let status = server.terminate();
    assert!(status.success(), "{status:?}: {}", server.log());
    let answer = in_flight.join().unwrap();
    assert_eq!((answer.status, answer.text()), (200, lines[0].clone()));
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "no longer listening"
    );
    let log = server.log();
    assert!(
        log.contains("SIGTERM: stopping") && log.contains("stopped"),
        "{log}"
    );
}

#[test]
fn a_closed_log_pipe_does_not_kill_the_server() {
    let mut server = Server::start_with(&[], false);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(tag(&server, r#"{"text": "Oil exports rose."}"#).status, 200);
    // Stopping writes to the closed standard error: SIGPIPE must not end the process.
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn cors_only_for_the_origins_given() {
    let server = Server::start(&["--cors-origin", "https://newsroom.example"]);
    let preflight = "OPTIONS /v1/tag HTTP/1.1\r\nHost: x\r\nConnection: close\r\nOrigin: https://newsroom.example\r\nAccess-Control-Request-Method: POST\r\n\r\n";
    let r = request(server.addr, preflight, b"");
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://newsroom.example")
    );
    assert!(r
        .header("access-control-allow-headers")
        .unwrap()
        .contains("authorization"));
    let r = get_with(&server, "/health", "Origin: https://newsroom.example\r\n");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://newsroom.example")
    );
    let r = get_with(&server, "/health", "Origin: https://elsewhere.example\r\n");
    assert_eq!(r.header("access-control-allow-origin"), None);
}

#[test]
fn a_missing_model_or_a_taken_port_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = newstag(&["serve", "--model", s(dir.path()), "--port", "0"]);
    assert!(!out.status.success());
    let err = common::stderr(&out);
    assert!(err.contains("not a model directory"), "{err}");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = newstag(&["serve", "--model", s(model()), "--port", &port]);
    assert!(!out.status.success());
    assert!(
        common::stderr(&out).contains("cannot listen on 127.0.0.1"),
        "{}",
        common::stderr(&out)
    );
}
