//! Request extractors that answer bad input precisely: which line and column of
//! the JSON is malformed, which field is unknown, missing or of the wrong type.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::ApiError;

/// A JSON body decoded strictly (`deny_unknown_fields` on the types), whatever the
/// `Content-Type` (curl's `-d` sends form encoding by default). An empty body
/// decodes as `{}` so that types with only optional fields accept it.
pub struct StrictJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for StrictJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge("request body is larger than 1 MiB".into())
            } else {
                ApiError::BadRequest { code: "malformed_body", field: None, message: rejection.body_text() }
            }
        })?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &bytes };
        decode_json(text).map(StrictJson)
    }
}

/// Decodes `bytes` into `T`, turning serde's error into the precise 400 the API promises.
pub fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        let path = err.path().to_string();
        json_error(path, err.into_inner())
    })?;
    de.end().map_err(|err| json_error(".".into(), err))?;
    Ok(value)
}

fn json_error(path: String, err: serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let at = format!("line {} column {}", err.line(), err.column());
    match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => ApiError::BadRequest {
            code: "malformed_json",
            field: None,
            message: format!("malformed JSON at {at}: {}", strip_position(&err.to_string())),
        },
        Category::Data => {
            let inner = strip_position(&err.to_string());
            let parent = if path == "." { String::new() } else { format!("{path}.") };
            if backticked_after(&inner, "unknown field `").is_some() {
                // The path already ends with the unknown field's name.
                let field = path.clone();
                ApiError::bad_field("unknown_field", field.clone(), format!("unknown field `{field}`: {inner}"))
            } else if let Some(name) = backticked_after(&inner, "missing field `") {
                let field = format!("{parent}{name}");
                ApiError::bad_field("missing_field", field.clone(), format!("missing required field `{field}`"))
            } else if inner.starts_with("invalid type") {
                ApiError::bad_field("invalid_type", path.clone(), format!("field `{path}` has the wrong type: {inner}"))
            } else {
                ApiError::bad_field("invalid_value", path.clone(), format!("field `{path}` is invalid: {inner}"))
            }
        }
    }
}

/// serde_json appends " at line L column C"; the API states the position itself.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

fn backticked_after<'a>(msg: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = msg.strip_prefix(prefix)?;
    rest.split('`').next()
}

/// Query parameters decoded strictly: an unknown or malformed parameter is a 400 naming it.
pub struct StrictQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for StrictQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let pairs: Vec<(String, String)> = form_pairs(query);
        // Re-encode as a JSON object of strings so one strict decoder serves both.
        let mut map = serde_json::Map::new();
        for (k, v) in pairs {
            if map.insert(k.clone(), serde_json::Value::String(v)).is_some() {
                return Err(ApiError::bad_field("invalid_value", k.clone(), format!("query parameter `{k}` given twice")));
            }
        }
        let bytes = serde_json::to_vec(&map).map_err(ApiError::internal)?;
        decode_json(&bytes).map(StrictQuery).map_err(|e| match e {
            ApiError::BadRequest { code, field, message } => ApiError::BadRequest {
                code,
                field,
                message: message.replace("field", "query parameter"),
            },
            other => other,
        })
    }
}

fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Req {
        name: String,
        count: Option<u32>,
    }

    fn field_of(e: ApiError) -> (String, Option<String>) {
        match e {
            ApiError::BadRequest { code, field, .. } => (code.to_string(), field),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn names_the_unknown_missing_and_mistyped_field() {
        assert_eq!(field_of(decode_json::<Req>(br#"{"name":"a","bogus":1}"#).unwrap_err()), ("unknown_field".into(), Some("bogus".into())));
        assert_eq!(field_of(decode_json::<Req>(br#"{"count":1}"#).unwrap_err()), ("missing_field".into(), Some("name".into())));
        assert_eq!(field_of(decode_json::<Req>(br#"{"name":5}"#).unwrap_err()), ("invalid_type".into(), Some("name".into())));
        assert_eq!(field_of(decode_json::<Req>(br#"{"name":"x""#).unwrap_err()).0, "malformed_json");
        assert_eq!(field_of(decode_json::<Req>(br#"{"name":"x"} trailing"#).unwrap_err()).0, "malformed_json");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%4"), "%4");
    }
}
