//! Reading a `POST /v1/tag` body: `{"articles": [{"id": ..., "text": ...}, ...]}` or one article
//! `{"id": ..., "text": ...}`, into the articles `newstag tag` would read from the same JSONL.
//!
//! Every fault is a 400 (413 for an article over the size limit) that names the article (its index
//! in the request and its id) and the field: malformed JSON, wrong types, a missing `text`,
//! invalid UTF-8.

use super::error::ApiError;
use crate::data::input::InputItem;
use crate::data::Article;
use axum::http::StatusCode;
use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::cell::Cell;
use std::fmt;

/// A request's articles, in request order.
#[derive(Debug)]
pub struct TagRequest {
    /// Each article, or the record-level error `tag` would give it (an empty text).
    pub items: Vec<InputItem>,
    /// Was the body one article rather than `{"articles": [...]}`? (Then one record is answered.)
    pub single: bool,
}

/// Marks an invalid UTF-8 sequence while locating it: a noncharacter, never in real text.
const MARK: char = '\u{FDD0}';

/// Parses a request body; `max_article_chars` bounds each article's text (413 above it).
pub fn parse_body(body: &[u8], max_article_chars: usize) -> Result<TagRequest, ApiError> {
    let text = match std::str::from_utf8(body) {
        Ok(t) => t,
        Err(e) => return Err(utf8_error(body, e)),
    };
    let at = Cell::new(None);
    let mut de = serde_json::Deserializer::from_str(text);
    let top = Top { at: &at }
        .deserialize(&mut de)
        .and_then(|top| de.end().map(|_| top));
    let top = match top {
        Ok(t) => t,
        Err(e) => {
            let what = if e.is_data() {
                "the body must be a JSON object: {\"articles\": [{\"id\": ..., \"text\": ...}]} or one {\"id\": ..., \"text\": ...}".to_string()
            } else {
                format!("malformed JSON: {e}")
            };
            let err = ApiError::bad_request(what);
            return Err(match at.get() {
                Some(i) => err.at_article(i, None).in_field("articles"),
                None => err,
            });
        }
    };
    let (values, single) = match top {
        Parsed::Articles(values) => (values, false),
        Parsed::One(map) => (vec![Value::Object(map)], true),
        Parsed::Both => {
            return Err(ApiError::bad_request(
                "the body has both \"articles\" and \"text\": send either a list of articles or one article",
            )
            .in_field("articles"))
        }
        Parsed::ArticlesNotList(kind) => {
            return Err(ApiError::bad_request(format!(
                "\"articles\" must be a list of articles, not {kind}"
            ))
            .in_field("articles"))
        }
    };
    if values.is_empty() {
        return Err(
            ApiError::bad_request("\"articles\" is empty: send at least one article")
                .in_field("articles"),
        );
    }
    let items = values
        .into_iter()
        .enumerate()
        .map(|(i, v)| article(i, v, max_article_chars))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TagRequest { items, single })
}

/// One article object into an [`InputItem`], as `tag` reads a JSONL line (unknown fields ignored).
fn article(index: usize, value: Value, max_chars: usize) -> Result<InputItem, ApiError> {
    let Value::Object(mut map) = value else {
        return Err(ApiError::bad_request(format!(
            "an article must be an object with \"text\" (and optionally \"id\"), not {}",
            kind(&value)
        ))
        .at_article(index, None));
    };
    let id = match map.remove("id") {
        None | Some(Value::Null) => index.to_string(),
        Some(Value::String(s)) => s,
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "\"id\" must be a string or a number, not {}",
                kind(&other)
            ))
            .at_article(index, None)
            .in_field("id"))
        }
    };
    let fault = |msg: String| {
        ApiError::bad_request(msg)
            .at_article(index, Some(&id))
            .in_field("text")
    };
    let text = match map.remove("text") {
        Some(Value::String(s)) => s,
        None => return Err(fault("missing \"text\"".into())),
        Some(other) => {
            return Err(fault(format!(
                "\"text\" must be a string, not {}",
                kind(&other)
            )))
        }
    };
    let chars = text.chars().count();
    if chars > max_chars {
        let mut e = fault(format!(
            "the article has {chars} characters, over the limit of {max_chars} (--max-article-chars)"
        ));
        e.status = StatusCode::PAYLOAD_TOO_LARGE;
        return Err(e);
    }
    Ok(if text.trim().is_empty() {
        InputItem::Failed {
            id,
            error: "empty article".into(),
        }
    } else {
        InputItem::Article(Article::from_text(id, text))
    })
}

/// A JSON value's kind, for messages ("a number").
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Names where invalid UTF-8 lies: the byte, and, when the rest of the body is sound JSON, the
/// article and the field that hold it.
fn utf8_error(body: &[u8], e: std::str::Utf8Error) -> ApiError {
    let err = ApiError::bad_request(format!(
        "invalid UTF-8 at byte {} of the body",
        e.valid_up_to()
    ));
    let marked =
        String::from_utf8_lossy(body).replace(char::REPLACEMENT_CHARACTER, &MARK.to_string());
    if body.windows(3).any(|w| w == "\u{FDD0}".as_bytes()) {
        return err;
    }
    let Ok(value) = serde_json::from_str::<Value>(&marked) else {
        return err;
    };
    let found = |v: &Value| matches!(v, Value::String(s) if s.contains(MARK));
    let articles: Vec<&Value> = match value.get("articles") {
        Some(Value::Array(list)) => list.iter().collect(),
        _ => vec![&value],
    };
    for (i, a) in articles.into_iter().enumerate() {
        let Value::Object(map) = a else { continue };
        if let Some((field, _)) = map.iter().find(|(k, v)| found(v) || k.contains(MARK)) {
            let id = match map.get("id") {
                Some(Value::String(s)) if !s.contains(MARK) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            };
            let field = field.replace(MARK, "\u{FFFD}");
            return err.at_article(i, id.as_deref()).in_field(&field);
        }
    }
    err
}

/// The top level of a body, read with serde so that a fault inside `articles` is known by index.
enum Parsed {
    Articles(Vec<Value>),
    One(Map<String, Value>),
    Both,
    ArticlesNotList(&'static str),
}

struct Top<'a> {
    /// The index of the article being read (`None` outside the list).
    at: &'a Cell<Option<usize>>,
}

impl<'de> DeserializeSeed<'de> for Top<'_> {
    type Value = Parsed;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Parsed, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = Parsed;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parsed, A::Error> {
        let mut articles: Option<Result<Vec<Value>, &'static str>> = None;
        let mut rest = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == "articles" && articles.is_none() {
                articles = Some(map.next_value_seed(List { at: self.at })?);
            } else {
                let v: Value = map.next_value()?;
                rest.insert(key, v);
            }
        }
        Ok(match articles {
            Some(_) if rest.contains_key("text") => Parsed::Both,
            Some(Ok(list)) => Parsed::Articles(list),
            Some(Err(kind)) => Parsed::ArticlesNotList(kind),
            None => Parsed::One(rest),
        })
    }
}

/// The `articles` value: a list read element by element (recording the index), or the kind of
/// whatever else it is.
struct List<'a> {
    at: &'a Cell<Option<usize>>,
}

impl<'de> DeserializeSeed<'de> for List<'_> {
    type Value = Result<Vec<Value>, &'static str>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for List<'_> {
    type Value = Result<Vec<Value>, &'static str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of articles")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        loop {
            self.at.set(Some(out.len()));
            match seq.next_element::<Value>()? {
                Some(v) => out.push(v),
                None => break,
            }
        }
        self.at.set(None);
        Ok(Ok(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map
            .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
            .is_some()
        {}
        Ok(Err("an object"))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Err("a string"))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err("a boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Err("a number"))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Err("a number"))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Err("a number"))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Err("null"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &[u8]) -> ApiError {
        parse_body(body, 1000).unwrap_err()
    }

    fn ids(body: &str) -> Vec<String> {
        parse_body(body.as_bytes(), 1000)
            .unwrap()
            .items
            .iter()
            .map(|i| i.id().to_string())
            .collect()
    }

    #[test]
    fn reads_lists_and_single_articles() {
        assert_eq!(
            ids(
                r#"{"articles": [{"id": "a", "text": "x"}, {"id": 7, "text": "y"}, {"text": "z"}]}"#
            ),
            ["a", "7", "2"]
        );
        let one = parse_body(br#"{"id": "a", "text": "Oil", "topics": []}"#, 10).unwrap();
        assert!(one.single);
        assert!(matches!(&one.items[0], InputItem::Article(a) if a.text == "Oil"));
        let empty = parse_body(br#"{"text": "  "}"#, 10).unwrap();
        assert!(
            matches!(&empty.items[0], InputItem::Failed { error, .. } if error == "empty article")
        );
    }

    #[test]
    fn names_the_article_and_the_field() {
        let e = err(br#"{"articles": [{"id": "a", "text": "x"}, {"id": "b"}]}"#);
        assert_eq!(
            (e.article, e.id.as_deref(), e.field.as_deref()),
            (Some(1), Some("b"), Some("text"))
        );
        assert!(e.error.contains("missing \"text\""));
        let e = err(br#"{"articles": [{"id": "a", "text": 3}]}"#);
        assert!(
            e.error.contains("must be a string, not a number"),
            "{}",
            e.error
        );
        let e = err(br#"{"articles": [{"id": [1], "text": "x"}]}"#);
        assert_eq!((e.article, e.field.as_deref()), (Some(0), Some("id")));
        let e = err(br#"{"articles": [{"text": "x"}, {"text": "y",}]}"#);
        assert_eq!(e.article, Some(1));
        assert!(e.error.starts_with("malformed JSON"), "{}", e.error);
        let e = err(br#"{"articles": "x"}"#);
        assert_eq!(e.field.as_deref(), Some("articles"));
        assert!(err(br#"{"articles": []}"#).error.contains("empty"));
        assert!(err(b"[1]").error.contains("must be a JSON object"));
        assert!(err(b"").error.starts_with("malformed JSON"));
        assert!(err(br#"{"text": "x"} {}"#)
            .error
            .starts_with("malformed JSON"));
        assert!(err(br#"{"articles": [1]}"#).error.contains("not a number"));
        let e = parse_body(br#"{"text": "abcdef"}"#, 5).unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[test]
    fn invalid_utf8_is_located() {
        let e =
            err(b"{\"articles\": [{\"text\": \"ok\"}, {\"id\": \"b\", \"text\": \"bad \xff\"}]}");
        assert!(e.error.contains("invalid UTF-8 at byte"), "{}", e.error);
        assert_eq!(
            (e.article, e.id.as_deref(), e.field.as_deref()),
            (Some(1), Some("b"), Some("text"))
        );
        let e = err(b"{\"id\": \"\xc3\", \"text\": \"x\"}");
        assert_eq!((e.article, e.field.as_deref()), (Some(0), Some("id")));
        assert_eq!(err(b"\xff").article, None);
    }
}
