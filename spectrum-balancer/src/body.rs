//! Body types: a client's request body, the boxed body the proxy answers with,
//! the balancer's own canned answers, and the [`Verdict`] a response's status
//! gives about the exchange.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};

use crate::error::BoxError;
use crate::h2_body::RecvBody;

/// A client's request body, as the server that read its request delivers it:
/// hyper's body on an HTTP/1.1 connection (and on the admin listener),
/// [`RecvBody`] on an HTTP/2 connection (served on `h2` directly).
#[derive(Debug)]
pub(crate) enum ClientBody {
    /// Read by hyper.
    Hyper(hyper::body::Incoming),
    /// Read from an HTTP/2 stream by [`crate::h2_server`].
    H2(RecvBody),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ClientBody::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            ClientBody::H2(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Hyper(body) => body.is_end_stream(),
            ClientBody::H2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Hyper(body) => body.size_hint(),
            ClientBody::H2(body) => body.size_hint(),
        }
    }
}

/// The body type of requests sent upstream and of every response.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// gRPC status code `DEADLINE_EXCEEDED`.
pub(crate) const GRPC_DEADLINE_EXCEEDED: u32 = 4;
/// gRPC status code `UNAVAILABLE`.
pub(crate) const GRPC_UNAVAILABLE: u32 = 14;
/// gRPC status code `RESOURCE_EXHAUSTED`.
pub(crate) const GRPC_RESOURCE_EXHAUSTED: u32 = 8;

pub(crate) fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

fn full(text: &str) -> ProxyBody {
    Full::new(Bytes::copy_from_slice(text.as_bytes())).map_err(|never| match never {}).boxed()
}

/// An answer made by the balancer itself: a trailers-only gRPC status for gRPC
/// clients, otherwise `http_status` with a short text body. `message` is
/// visible ASCII and spaces (it goes in `grpc-message` as it is).
pub(crate) fn local_answer(
    grpc: bool,
    http_status: StatusCode,
    grpc_status: u32,
    message: &str,
) -> Response<ProxyBody> {
    let mut resp = if grpc {
        let mut resp = Response::new(empty());
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        h.insert("grpc-status", HeaderValue::from(grpc_status));
        if let Ok(message) = HeaderValue::from_str(message) {
            h.insert("grpc-message", message);
        }
        resp
    } else {
        let mut resp = Response::new(full(message));
        *resp.status_mut() = http_status;
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        resp
    };
    resp.headers_mut().insert("x-spectrum-balancer", HeaderValue::from_static("local"));
    resp
}

/// Whether a gRPC status (in headers of a trailers-only answer, or in trailers)
/// says the backend failed rather than the call.
pub(crate) fn grpc_failure(headers: &HeaderMap) -> bool {
    // Compared as bytes: this runs on every response, and formatting the code
    // would allocate each time.
    const UNAVAILABLE: &[u8] = b"14";
    const _: () = assert!(GRPC_UNAVAILABLE == 14);
    // A constant name: a `&str` would be parsed into one on each call.
    const GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
    headers.get(GRPC_STATUS).is_some_and(|v| v.as_bytes() == UNAVAILABLE)
}

/// How a response's status says the exchange went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Nothing wrong so far.
    Fine,
    /// A server error that says nothing about the backend's health (HTTP 500, …).
    Failed,
    /// The backend could not serve: gRPC `UNAVAILABLE`, HTTP 502, 503 or 504, or the
    /// exchange broke.
    Unavailable,
    /// The connection closed before the request was sent.
    NotSent,
}

impl Verdict {
    /// The verdict of response headers (or trailers) with this HTTP status.
    pub(crate) fn of(status: Option<StatusCode>, headers: &HeaderMap) -> Verdict {
        if grpc_failure(headers)
            || status.is_some_and(|s| {
                matches!(
                    s,
                    StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
                )
            })
        {
            Verdict::Unavailable
        } else if status.is_some_and(|s| s.is_server_error()) {
            Verdict::Failed
        } else {
            Verdict::Fine
        }
    }

    /// The worse of two verdicts (headers, then trailers, of one exchange).
    pub(crate) fn worst(self, other: Verdict) -> Verdict {
        match (self, other) {
            (Verdict::Unavailable, _) | (_, Verdict::Unavailable) => Verdict::Unavailable,
            (Verdict::Failed, _) | (_, Verdict::Failed) => Verdict::Failed,
            (Verdict::NotSent, _) | (_, Verdict::NotSent) => Verdict::NotSent,
            _ => Verdict::Fine,
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body::Body as _;

    use super::*;

    #[test]
    fn grpc_clients_get_a_trailers_only_unavailable_status() {
        let resp =
            local_answer(true, StatusCode::SERVICE_UNAVAILABLE, GRPC_UNAVAILABLE, "no backend available");
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["grpc-status"], "14");
        assert_eq!(resp.headers()["content-type"], "application/grpc");
        assert!(resp.body().is_end_stream());
    }

    #[test]
    fn http_clients_get_the_status_and_a_text_body() {
        let resp =
            local_answer(false, StatusCode::SERVICE_UNAVAILABLE, GRPC_UNAVAILABLE, "no backend available");
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(resp.headers().get("grpc-status").is_none());
    }

    #[test]
    fn verdicts_tell_unavailable_backends_from_failed_calls() {
        let none = HeaderMap::new();
        assert_eq!(Verdict::of(Some(StatusCode::OK), &none), Verdict::Fine);
        assert_eq!(Verdict::of(Some(StatusCode::INTERNAL_SERVER_ERROR), &none), Verdict::Failed);
        assert_eq!(Verdict::of(Some(StatusCode::SERVICE_UNAVAILABLE), &none), Verdict::Unavailable);
        let mut grpc = HeaderMap::new();
        grpc.insert("grpc-status", HeaderValue::from_static("14"));
        assert_eq!(Verdict::of(Some(StatusCode::OK), &grpc), Verdict::Unavailable);
        assert_eq!(Verdict::Failed.worst(Verdict::Unavailable), Verdict::Unavailable);
    }

    #[test]
    fn only_unavailable_counts_as_a_backend_failure() {
        let mut h = HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static("14"));
        assert!(grpc_failure(&h));
        h.insert("grpc-status", HeaderValue::from_static("5"));
        assert!(!grpc_failure(&h));
    }
}
