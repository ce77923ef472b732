//! The HTTP routes: the router, its handlers, and the middleware for bearer tokens, CORS and
//! request metrics.

use super::error::ApiError;
use super::queue::{Job, PushError, Queue};
use super::request::parse_body;
use super::Shared;
use crate::infer::html::{render_page, PageArticle};
use axum::body::Body;
use axum::extract::{RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// Every route the service answers, as (method, path): the OpenAPI description lists exactly
/// these (a test holds them together).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/v1/model"),
    ("POST", "/v1/tag"),
];

/// The OpenAPI description served at `/openapi.json` (the committed `docs/openapi.json`).
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

/// Limits on what one request may ask.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Largest body, in bytes (413 above).
    pub max_body_bytes: usize,
    /// Longest article text, in characters (413 above).
    pub max_article_chars: usize,
    /// Time from a request's arrival to its answer (504 after).
    pub timeout: Duration,
}

/// What the handlers share.
pub struct AppState {
    pub shared: Arc<Shared>,
    pub queue: Queue,
    pub limits: RequestLimits,
    /// The bearer token `/v1/*` and `/metrics` require, when one was given.
    pub api_key: Option<Vec<u8>>,
    /// Origins allowed to call from a browser (`*` for any); none: no CORS headers at all.
    pub cors_origins: Vec<String>,
}

/// The service's router.
pub fn router(state: Arc<AppState>) -> Router {
    let protected = Router::new()
        .route("/v1/tag", post(tag))
        .route("/v1/model", get(model))
        .route("/metrics", get(metrics))
        .route_layer(from_fn_with_state(state.clone(), auth));
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/openapi.json", get(openapi))
        .merge(protected)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(state.clone(), cors))
        .layer(from_fn_with_state(state.clone(), track))
        .with_state(state)
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn health() -> Response {
    json(StatusCode::OK, r#"{"status":"ok"}"#.into())
}

async fn ready(State(s): State<Arc<AppState>>) -> Response {
    if s.shared.draining.load(Ordering::SeqCst) {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"status":"draining"}"#.into(),
        )
    } else if s.shared.model.get().is_some() {
        json(StatusCode::OK, r#"{"status":"ready"}"#.into())
    } else {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"status":"loading"}"#.into(),
        )
    }
}

async fn openapi() -> Response {
    json(StatusCode::OK, OPENAPI.into())
}

async fn metrics(State(s): State<Arc<AppState>>) -> Response {
    let ready = s.shared.model.get().is_some() && !s.shared.draining.load(Ordering::SeqCst);
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.shared.metrics.render(ready),
    )
        .into_response()
}

async fn model(State(s): State<Arc<AppState>>) -> Response {
    match s.shared.model.get() {
        Some(info) => json(StatusCode::OK, info.to_string()),
        None => loading(),
    }
}

fn loading() -> Response {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the model is still loading",
    )
    .retry_after(1)
    .into_response()
}

async fn not_found() -> Response {
    ApiError::new(StatusCode::NOT_FOUND, "no such route (see /openapi.json)").into_response()
}

async fn method_not_allowed() -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route (see /openapi.json)",
    )
    .into_response()
}

/// How `/v1/tag` answers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Format {
    /// `{"records": [...]}`, or the one record for a one-article body.
    Json,
    /// The records as `newstag tag` writes them: one JSON line each.
    Jsonl,
    /// The self-contained page `newstag tag --html` writes.
    Html,
}

fn format(query: Option<&str>) -> Result<Format, ApiError> {
    let mut format = Format::Json;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != "format" {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter {key:?} (only format=json|jsonl|html)"
            ))
            .in_field(key));
        }
        format = match value {
            "json" => Format::Json,
            "jsonl" => Format::Jsonl,
            "html" => Format::Html,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "format={value:?}: expected json, jsonl or html"
                ))
                .in_field("format"))
            }
        };
    }
    Ok(format)
}

/// `POST /v1/tag`: the records for the body's articles, in request order.
async fn tag(
    State(s): State<Arc<AppState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let deadline = tokio::time::Instant::now() + s.limits.timeout;
    let format = format(query.as_deref())?;
    if s.shared.draining.load(Ordering::SeqCst) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the service is shutting down",
        )
        .retry_after(1));
    }
    if s.shared.model.get().is_none() {
        return Ok(loading());
    }
    let max = s.limits.max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over the limit of {max} bytes (--max-body-bytes)"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let timed_out = || {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "no answer within {} ms (--timeout-ms)",
                s.limits.timeout.as_millis()
            ),
        )
    };
    let bytes = match tokio::time::timeout_at(deadline, axum::body::to_bytes(body, max)).await {
        Err(_) => return Err(timed_out()),
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            let inner = e.into_inner();
            if inner
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return Err(too_large());
            }
            return Err(ApiError::bad_request(format!(
                "cannot read the body: {inner}"
            )));
        }
    };
    let request = parse_body(&bytes, s.limits.max_article_chars)?;
    drop(bytes);
    let (job, answer) = Job::new(request.items);
    match s.queue.try_push(job) {
        Ok(()) => {}
        Err(PushError::Full) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the queue is full: retry shortly",
            )
            .retry_after(1))
        }
        Err(PushError::Closed) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the service is shutting down",
            )
            .retry_after(1))
        }
    }
    // Dropping `answer` (timeout here, or the client going away, which drops this future)
    // tells the worker to skip the job.
    let done = match tokio::time::timeout_at(deadline, answer).await {
        Err(_) => return Err(timed_out()),
        Ok(Err(_)) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the service stopped before tagging the articles",
            ))
        }
        Ok(Ok(Err(e))) => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the model failed: {e}"),
            ))
        }
        Ok(Ok(Ok(done))) => done,
    };
    Ok(match format {
        Format::Jsonl => {
            let mut out = String::new();
            for r in &done.records {
                out.push_str(&r.to_line());
                out.push('\n');
            }
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/x-ndjson")],
                out,
            )
                .into_response()
        }
        Format::Json if request.single => {
            let line = done
                .records
                .first()
                .map(|r| r.to_line())
                .unwrap_or_default();
            json(StatusCode::OK, line)
        }
        Format::Json => {
            let lines: Vec<String> = done.records.iter().map(|r| r.to_line()).collect();
            json(
                StatusCode::OK,
                format!("{{\"records\":[{}]}}", lines.join(",")),
            )
        }
        Format::Html => {
            let mut texts = done.articles.iter();
            let pages: Vec<PageArticle> = done
                .records
                .iter()
                .map(|record| PageArticle {
                    text: match record {
                        crate::infer::output::OutputRecord::Tagged { .. } => {
                            texts.next().map_or("", |a| a.text.as_str())
                        }
                        crate::infer::output::OutputRecord::Failed { .. } => "",
                    },
                    record,
                })
                .collect();
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                render_page("newstag: tagged articles", &pages),
            )
                .into_response()
        }
    })
}

/// Requires `Authorization: Bearer TOKEN` when the service has a token (compared in constant
/// time; only its length can be learnt from timing).
async fn auth(State(s): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if let Some(key) = &s.api_key {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .unwrap_or(b"");
        if !bool::from(given.ct_eq(key)) {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token (Authorization: Bearer TOKEN)",
            )
            .into_response();
        }
    }
    next.run(request).await
}

/// Answers CORS only for the origins given with `--cors-origin`: preflights get 204, other
/// requests their `Access-Control-Allow-Origin`. Without origins it does nothing.
async fn cors(State(s): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if s.cors_origins.is_empty() {
        return next.run(request).await;
    }
    let origin = request.headers().get(header::ORIGIN).cloned();
    let allowed = origin.as_ref().and_then(|o| {
        let o = o.to_str().ok()?;
        s.cors_origins
            .iter()
            .any(|a| a == "*" || a == o)
            .then(|| HeaderValue::from_str(o).ok())
            .flatten()
    });
    let preflight = request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut response = if preflight && allowed.is_some() {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        r
    } else {
        next.run(request).await
    };
    if let Some(origin) = allowed {
        let h = response.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}

/// Counts every answer by route and status, and times `/v1/tag`.
async fn track(State(s): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let path = request.uri().path();
    let route = ROUTES
        .iter()
        .find(|(_, p)| *p == path)
        .map_or("other", |(_, p)| p);
    let response = next.run(request).await;
    s.shared
        .metrics
        .request(route, response.status().as_u16(), started.elapsed());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_description_lists_exactly_the_routes() {
        let spec: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
        let mut listed: Vec<(String, String)> = Vec::new();
        for (path, item) in spec["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                listed.push((method.to_uppercase(), path.clone()));
            }
        }
        listed.sort();
        let mut routes: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        routes.sort();
        assert_eq!(listed, routes);
    }

    #[test]
    fn formats() {
        assert_eq!(format(None).unwrap(), Format::Json);
        assert_eq!(format(Some("format=html")).unwrap(), Format::Html);
        assert_eq!(format(Some("format=jsonl")).unwrap(), Format::Jsonl);
        assert_eq!(
            format(Some("format=xml")).unwrap_err().field.as_deref(),
            Some("format")
        );
        assert!(format(Some("x=1")).is_err());
    }
}
