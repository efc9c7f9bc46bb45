//! Extractors that turn every malformed request into an [`ApiError`] with the usual JSON body,
//! never axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// A JSON body: unknown fields and wrong types are 422 with the field's path, broken JSON 400.
pub struct ApiJson<T>(pub T);

/// Like [`ApiJson`], but an empty body means `T::default()`.
pub struct OptionalJson<T>(pub T);

fn check_content_type(req: &Request) -> Result<(), ApiError> {
    let Some(ct) = req.headers().get(header::CONTENT_TYPE) else {
        return Ok(()); // curl without -H; the body still has to be JSON
    };
    let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence == "application/json" || essence.ends_with("+json") {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

/// Parses a JSON object, naming the field path of a type error. Every body of the API is an
/// object: serde would also read a struct from an array (`[]` as a run request with every
/// field left out), which no client means.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let object = bytes.trim_ascii_start().first() == Some(&b'{');
    if !object && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() {
        return Err(ApiError::InvalidBody { field: "body".into(), message: "must be a JSON object".into() });
    }
    let value = parse_typed(bytes)?;
    refuse_nul(bytes)?;
    Ok(value)
}

/// Postgres text cannot hold U+0000 (SQLite can): refused here, for every field of every body
/// on both backends alike, rather than failing as a 500 on one of them. In JSON the character
/// can only be written as the escape `\u0000`, so only bodies holding that text are walked.
fn refuse_nul(bytes: &[u8]) -> Result<(), ApiError> {
    if memchr::memmem::find(bytes, b"\\u0000").is_none() {
        return Ok(());
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else { return Ok(()) };
    match nul_at(&value, String::new()) {
        Some(field) => Err(ApiError::InvalidBody {
            field: if field.is_empty() { "body".into() } else { field },
            message: "must not contain NUL characters (\\u0000)".into(),
        }),
        None => Ok(()),
    }
}

/// The path (`aws.endpoint_url`, `log_groups[2]`) of the first string holding U+0000.
fn nul_at(value: &serde_json::Value, path: String) -> Option<String> {
    match value {
        serde_json::Value::String(s) => s.contains('\0').then_some(path),
        serde_json::Value::Array(items) => {
            items.iter().enumerate().find_map(|(i, v)| nul_at(v, format!("{path}[{i}]")))
        }
        serde_json::Value::Object(map) => map.iter().find_map(|(k, v)| {
            let here = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
            if k.contains('\0') { Some(here) } else { nul_at(v, here) }
        }),
        _ => None,
    }
}

fn parse_typed<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize(de) {
        Ok(v) => Ok(v),
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            match inner.classify() {
                serde_json::error::Category::Data => Err(ApiError::InvalidBody {
                    field: if path == "." { "body".into() } else { path },
                    message: strip_position(&inner.to_string()),
                }),
                _ => Err(ApiError::MalformedJson(format!("malformed JSON: {inner}"))),
            }
        }
    }
}

/// serde_json appends " at line 1 column 20" to data errors; the field path says more.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

async fn body_bytes(req: Request) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, &()).await.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        // A body cut off or otherwise unreadable is no JSON either.
        _ => ApiError::MalformedJson(e.body_text()),
    })
}

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        check_content_type(&req)?;
        let bytes = body_bytes(req).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        check_content_type(&req)?;
        let bytes = body_bytes(req).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        parse_json(&bytes).map(OptionalJson)
    }
}

/// Query parameters; a bad one is 400 naming it.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let parsed = Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e| ApiError::BadRequest(e.body_text()))?;
        // `%00` decodes to U+0000, which Postgres text cannot hold: see [`refuse_nul`].
        let pairs: Vec<(String, String)> =
            serde_urlencoded::from_str(parts.uri.query().unwrap_or("")).unwrap_or_default();
        if let Some((name, _)) = pairs.iter().find(|(k, v)| k.contains('\0') || v.contains('\0')) {
            return Err(ApiError::BadRequest(format!(
                "query parameter `{}` must not contain NUL characters (%00)",
                name.replace('\0', "%00")
            )));
        }
        Ok(parsed)
    }
}

/// A path parameter; an id that does not parse cannot name anything, so it is a 404.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|_| ApiError::NotFound("no such resource (malformed id)".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, Default)]
    #[serde(default)]
    struct AllOptional {
        #[allow(dead_code)]
        name: Option<String>,
        #[allow(dead_code)]
        tags: Vec<String>,
    }

    fn field_of(e: ApiError) -> String {
        match e {
            ApiError::InvalidBody { field, .. } => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bodies_are_objects_without_nul() {
        assert!(parse_json::<AllOptional>(br#" {"name": "a\\u0000b"} "#).is_ok(), "an escaped backslash is no NUL");
        for (body, field) in [
            (&b"[]"[..], "body"),
            (b" [\"x\"]", "body"),
            (b"null", "body"),
            (br#"{"name": "a\u0000"}"#, "name"),
            (br#"{"tags": ["ok", "\u0000"]}"#, "tags[1]"),
        ] {
            let e = parse_json::<AllOptional>(body).unwrap_err();
            assert_eq!(field_of(e), field, "{}", String::from_utf8_lossy(body));
        }
        assert!(matches!(parse_json::<AllOptional>(b"{"), Err(ApiError::MalformedJson(_))));
    }
}
