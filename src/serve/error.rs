//! The service's error answers: a status and a JSON body
//! `{"error": "...", "article": 2, "id": "a3", "field": "text"}` (the last three when known).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answer. Every failure the service reports to a client is one of these: bad input is
/// a 4xx naming what was wrong, never a panic or a 500.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiError {
    /// The HTTP status (not serialised: it is the answer's status line).
    #[serde(skip)]
    pub status: StatusCode,
    /// What went wrong, in words.
    pub error: String,
    /// The 0-based index of the article in the request, when the error is about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub article: Option<usize>,
    /// That article's id, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The field at fault (`text`, `id`, `articles`), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Seconds to wait before retrying (503 answers): sent as `Retry-After`.
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with a status and a message, about no article in particular.
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        ApiError {
            status,
            error: error.into(),
            article: None,
            id: None,
            field: None,
            retry_after: None,
        }
    }

    /// 400 Bad Request.
    pub fn bad_request(error: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error)
    }

    /// Names the article (its index in the request and its id, when known).
    pub fn at_article(mut self, index: usize, id: Option<&str>) -> Self {
        self.article = Some(index);
        self.id = id.map(str::to_string);
        self
    }

    /// Names the field at fault.
    pub fn in_field(mut self, field: &str) -> Self {
        self.field = Some(field.to_string());
        self
    }

    /// Asks the client to come back after `seconds` (`Retry-After`).
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status.as_u16(), self.error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self).unwrap_or_else(|_| b"{\"error\":\"error\"}".to_vec());
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(s) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_only_what_is_known() {
        let e = ApiError::bad_request("missing \"text\"")
            .at_article(2, Some("a3"))
            .in_field("text");
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"error":"missing \"text\"","article":2,"id":"a3","field":"text"}"#
        );
        let e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "full").retry_after(1);
        assert_eq!(serde_json::to_string(&e).unwrap(), r#"{"error":"full"}"#);
        let r = e.into_response();
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }
}
