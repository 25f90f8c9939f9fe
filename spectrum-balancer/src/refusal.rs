//! How a node says it refused a request *before doing any of its work*, so that
//! the balancer may send it to another node whatever the request is.
//!
//! A node that is not ready (catching up with the cluster, its clock fenced, its
//! store unable to write) refuses calls up front. Such a refusal is safe to send
//! elsewhere even for a request that is not idempotent: nothing ran. But from the
//! outside a refusal looks like any failure (gRPC `UNAVAILABLE`, HTTP 503), which
//! may come after work was done, so the node marks it: the response header (gRPC
//! metadata) [`REFUSED_HEADER`] with the value [`NOT_READY`]. A marked refusal is
//! retried on another healthy node, up to one attempt per node (it costs the
//! cluster nothing, so it takes nothing from the retry budget), as long as the
//! balancer still holds the request's whole body (up to
//! [`BalancerConfig::retry_buffer`](crate::BalancerConfig::retry_buffer)). When no
//! other node is left, the last refusal is passed on to the client as it came.
//!
//! The marker counts only on a failed answer (an HTTP status of 400 or more, or a
//! gRPC status other than `OK`): a node that marks a success is not believed.
//!
//! ```
//! use http::{HeaderMap, StatusCode};
//! use spectrum_balancer::refusal;
//!
//! // What a node does when it refuses a call because it is not ready.
//! let mut headers = HeaderMap::new();
//! headers.insert("grpc-status", "14".parse()?);
//! refusal::mark_not_ready(&mut headers);
//! assert!(refusal::is_not_ready(StatusCode::OK, &headers));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// The response header (gRPC metadata key) that marks a refusal: `spectrum-refused`.
pub const REFUSED_HEADER: &str = "spectrum-refused";

/// The value of [`REFUSED_HEADER`] for "this node is not ready and did nothing":
/// `not-ready`.
pub const NOT_READY: &str = "not-ready";

const HEADER: HeaderName = HeaderName::from_static(REFUSED_HEADER);

/// Marks a response (its headers, or a trailers-only gRPC answer's) as a
/// not-ready refusal.
pub fn mark_not_ready(headers: &mut HeaderMap) {
    headers.insert(HEADER, HeaderValue::from_static(NOT_READY));
}

/// Whether a response with this HTTP `status` and `headers` is a node's not-ready
/// refusal: marked, and a failure (HTTP status 400 or more, or a `grpc-status`
/// other than `0` in the headers of a trailers-only answer).
pub fn is_not_ready(status: StatusCode, headers: &HeaderMap) -> bool {
    // One lookup on every response: most have no marker and stop here.
    let Some(marker) = headers.get(HEADER) else {
        return false;
    };
    marker.as_bytes() == NOT_READY.as_bytes()
        && (status.is_client_error()
            || status.is_server_error()
            || headers.get("grpc-status").is_some_and(|code| code.as_bytes() != b"0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marked() -> HeaderMap {
        let mut headers = HeaderMap::new();
        mark_not_ready(&mut headers);
        headers
    }

    #[test]
    fn a_marked_http_error_is_a_not_ready_refusal() {
        assert!(is_not_ready(StatusCode::SERVICE_UNAVAILABLE, &marked()));
        assert!(is_not_ready(StatusCode::CONFLICT, &marked()), "a fenced clock's refusal");
        assert!(!is_not_ready(StatusCode::SERVICE_UNAVAILABLE, &HeaderMap::new()), "no marker");
    }

    #[test]
    fn a_marked_grpc_failure_is_a_not_ready_refusal_whatever_its_code() {
        for code in ["14", "9"] {
            let mut headers = marked();
            headers.insert("grpc-status", code.parse().unwrap());
            assert!(is_not_ready(StatusCode::OK, &headers), "{code}");
        }
    }

    #[test]
    fn a_marked_success_or_another_marker_value_is_not_believed() {
        assert!(!is_not_ready(StatusCode::OK, &marked()));
        let mut ok = marked();
        ok.insert("grpc-status", "0".parse().unwrap());
        assert!(!is_not_ready(StatusCode::OK, &ok));
        let mut other = HeaderMap::new();
        other.insert(REFUSED_HEADER, "overloaded".parse().unwrap());
        assert!(!is_not_ready(StatusCode::SERVICE_UNAVAILABLE, &other));
    }
}
