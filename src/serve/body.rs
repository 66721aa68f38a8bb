//! Error answers and request bodies: a body over the limit is refused from its `Content-Length` before any
//! of it is read, or as soon as the limit is passed while reading; a body that does not arrive within the
//! body timeout gets 408. Every refusal comes in its route's format (plain text on `/v1`, `{"error": …}` on
//! `/v2`), with client text escaped.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::error::Error;
use crate::names::escaped_text;

/// An error answer: status and a one-line reason (control characters escaped).
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub msg: String,
    pub retry_after: bool,
    /// Close the connection after the answer (the body was not read in full).
    pub close: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, msg: impl AsRef<str>) -> Self {
        ApiError {
            status,
            msg: escaped_text(msg.as_ref()),
            retry_after: false,
            close: false,
        }
    }

    pub fn bad_request(msg: impl AsRef<str>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, msg)
    }

    /// The library's errors as HTTP answers.
    pub fn from_error(e: &Error) -> Self {
        let status = match e {
            Error::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Input { .. } | Error::Shape(_) | Error::Mask(_) | Error::Usage(_) => StatusCode::BAD_REQUEST,
            Error::Cancelled => StatusCode::GATEWAY_TIMEOUT,
            // Memory ran out even after the retries with smaller tiles: the server is busy, not broken.
            Error::OutOfMemory { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::Exists { .. } => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }

    fn finish(&self, mut r: Response) -> Response {
        if self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.close {
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        r
    }

    /// The answer in the KServe v2 format: `{"error": "…"}`.
    pub fn v2(self) -> Response {
        let r = (self.status, Json(serde_json::json!({ "error": self.msg }))).into_response();
        self.finish(r)
    }

    /// The answer in `path`'s format.
    pub fn for_path(self, path: &str) -> Response {
        if path == "/v2" || path.starts_with("/v2/") {
            self.v2()
        } else {
            self.into_response()
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let r = (self.status, format!("{}\n", self.msg)).into_response();
        self.finish(r)
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError {
        close: true,
        ..ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over {limit} bytes (--max-body-bytes)"),
        )
    }
}

/// The declared `Content-Length` over `limit`: refused before the body is read.
pub fn check_declared(req: &Request, limit: usize) -> Result<(), ApiError> {
    let Some(v) = req.headers().get(header::CONTENT_LENGTH) else {
        return Ok(());
    };
    match v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()) {
        Some(n) if n > limit as u64 => Err(too_large(limit)),
        Some(_) => Ok(()),
        None => Err(ApiError {
            close: true,
            ..ApiError::bad_request("Content-Length is not a number")
        }),
    }
}

/// The whole body, at most `limit` bytes, within `timeout`.
pub async fn read(body: Body, limit: usize, timeout: Duration) -> Result<Bytes, ApiError> {
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(ApiError {
            close: true,
            ..ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {:.0} s (--body-timeout)",
                    timeout.as_secs_f64()
                ),
            )
        }),
        Ok(Err(e)) => {
            let inner = e.into_inner();
            if is_length_limit(inner.as_ref()) {
                Err(too_large(limit))
            } else {
                Err(ApiError {
                    close: true,
                    ..ApiError::bad_request(format!("cannot read the body: {inner}"))
                })
            }
        }
        Ok(Ok(bytes)) => Ok(bytes),
    }
}

/// Whether a body error (or one of its sources) is the length limit's.
fn is_length_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph_kind::GraphKind;

    /// Each kind of failure gets its own status, decided by the variant alone.
    #[test]
    fn statuses_come_from_the_error_variants() {
        let status = |e: Error| ApiError::from_error(&e).status;
        let oom = Error::OutOfMemory {
            graph: GraphKind::Backbone,
            msg: "CUDA failure 2: out of memory".into(),
        };
        assert_eq!(status(oom), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status(Error::Exists { path: "out.png".into() }), StatusCode::CONFLICT);
        assert_eq!(status(Error::Usage("tile 7".into())), StatusCode::BAD_REQUEST);
        assert_eq!(status(Error::input("request", "not an image")), StatusCode::BAD_REQUEST);
        assert_eq!(status(Error::Cancelled), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            status(Error::Backend("no provider".into())),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
