//! Answers and request bodies: the JSON replies, the one mapping of a state error to its
//! status, body reading within the budget, and [`ApiError`] for handlers that use `?`.

use std::collections::HashMap;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use tracing::warn;

use crate::state::StateError;
use c2c_api::types::ErrorBody;

/// An HTTP answer.
pub(crate) type Reply = Response<Full<Bytes>>;

/// An answer that ends a handler early: a refusal, a bad body, a state error (boxed: a
/// `Result` stays small on the success path).
pub(crate) struct ApiError(pub(crate) Box<Reply>);

impl From<StateError> for ApiError {
    fn from(e: StateError) -> Self {
        ApiError(Box::new(state_error(e)))
    }
}

impl From<Reply> for ApiError {
    fn from(r: Reply) -> Self {
        ApiError(Box::new(r))
    }
}

impl From<Box<Reply>> for ApiError {
    fn from(r: Box<Reply>) -> Self {
        ApiError(r)
    }
}

/// The answer a handler's result stands for.
pub(crate) fn settle(a: Answer) -> Reply {
    match a {
        Ok(r) => r,
        Err(ApiError(r)) => *r,
    }
}

/// What a handler returns.
pub(crate) type Answer = Result<Reply, ApiError>;

/// Largest request body accepted.
const MAX_BODY: usize = 4 << 20;

/// How long a client may take to send a request's body.
const BODY_READ: Duration = Duration::from_secs(10);

pub(crate) fn reply(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

/// An answer with a typed body.
pub(crate) fn typed<T: serde::Serialize>(status: StatusCode, body: &T) -> Response<Full<Bytes>> {
    match serde_json::to_value(body) {
        Ok(v) => reply(status, v),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the answer: {e}"),
        ),
    }
}

pub(crate) fn error(status: StatusCode, msg: impl std::fmt::Display) -> Response<Full<Bytes>> {
    typed(
        status,
        &ErrorBody {
            error: msg.to_string(),
        },
    )
}

pub(crate) fn state_error(e: StateError) -> Response<Full<Bytes>> {
    match e {
        StateError::UnknownApp(_) | StateError::UnknownInstance(_) => {
            error(StatusCode::NOT_FOUND, e)
        }
        StateError::AppExists(_) | StateError::Conflict(_) => error(StatusCode::CONFLICT, e),
        StateError::Invalid(_) => error(StatusCode::BAD_REQUEST, e),
        StateError::NoLease(_) | StateError::NotFound(_) => error(StatusCode::NOT_FOUND, e),
        StateError::Forbidden(_) => error(StatusCode::FORBIDDEN, e),
        StateError::TagsExhausted | StateError::NoSubnet(_) => error(StatusCode::CONFLICT, e),
        StateError::Db(_) | StateError::Pg(_) | StateError::Internal(_) | StateError::NoRows => {
            warn!(error = %e, "state store failure");
            error(StatusCode::INTERNAL_SERVER_ERROR, "state store failure")
        }
    }
}

/// A request body the API can read: hyper's `Incoming` on the wire, `Full<Bytes>` in tests.
pub trait ReqBody: hyper::body::Body<Data = Bytes, Error = Self::E> + Send + 'static {
    /// The body's error.
    type E: Into<Box<dyn std::error::Error + Send + Sync>>;
}

impl<B> ReqBody for B
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type E = B::Error;
}

pub(crate) fn query<B>(req: &Request<B>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        // Values are percent-decoded: the cf CLI sends `id=a%2Cb`.
        .map(|(k, v)| (c2c_api::decode_segment(k), c2c_api::decode_segment(v)))
        .collect()
}

pub(crate) async fn body<B: ReqBody>(req: Request<B>) -> Result<Bytes, Response<Full<Bytes>>> {
    body_within(req, BODY_READ).await
}

/// The request body, at most [`MAX_BODY`] bytes, read within `limit` (a client trickling a body
/// cannot hold a connection and its task forever).
async fn body_within<B: ReqBody>(
    req: Request<B>,
    limit: Duration,
) -> Result<Bytes, Response<Full<Bytes>>> {
    match tokio::time::timeout(limit, Limited::new(req.into_body(), MAX_BODY).collect()).await {
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) => Err(error(
            StatusCode::BAD_REQUEST,
            format!("reading request body: {e}"),
        )),
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request body did not arrive within {limit:?}"),
        )),
    }
}

/// Parses a JSON body into `T`, or answers 400 naming the expected shape.
pub(crate) async fn json_body<T: serde::de::DeserializeOwned, B: ReqBody>(
    req: Request<B>,
    shape: &str,
) -> Result<T, Response<Full<Bytes>>> {
    let b = body(req).await?;
    serde_json::from_slice(&b).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("body must be {shape}: {e}"),
        )
    })
}
