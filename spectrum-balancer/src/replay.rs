//! The client's request body as sent to backends: enforces the size limit and keeps
//! a copy of small bodies so that a failed request can be sent again.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use parking_lot::Mutex;

use crate::error::BoxError;

/// Why a request body stream ended with an error.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestBodyError {
    #[error("request body larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("request body superseded by a newer attempt")]
    Superseded,
}

#[derive(Debug, Clone)]
enum Recorded {
    Data(Bytes),
    Trailers(HeaderMap),
}

impl Recorded {
    fn to_frame(&self) -> Frame<Bytes> {
        match self {
            Recorded::Data(data) => Frame::data(data.clone()),
            Recorded::Trailers(trailers) => Frame::trailers(trailers.clone()),
        }
    }
}

type Inner = Pin<Box<dyn Body<Data = Bytes, Error = BoxError> + Send>>;

#[derive(Debug, Default)]
struct Limits {
    /// Largest body accepted, if any.
    max_body: Option<u64>,
    /// Largest body kept for replay.
    keep_up_to: usize,
}

struct Shared {
    inner: Inner,
    limits: Limits,
    /// Frames read so far, while the body may still be replayed.
    recorded: Vec<Recorded>,
    recorded_bytes: usize,
    replayable: bool,
    ended: bool,
    total_bytes: u64,
    too_large: bool,
    /// The client's own stream failed (it reset it, say).
    client_failed: bool,
    /// The attempt allowed to read; older attempts' bodies answer an error.
    generation: u64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("recorded_bytes", &self.recorded_bytes)
            .field("replayable", &self.replayable)
            .field("ended", &self.ended)
            .field("total_bytes", &self.total_bytes)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

/// The source of every attempt's request body.
#[derive(Debug, Clone)]
pub(crate) struct RequestBody {
    shared: Arc<Mutex<Shared>>,
}

impl RequestBody {
    /// Wraps the client's body. `keep_up_to` is the largest body kept for replay
    /// (`0` for a request that is never replayed after being sent).
    pub(crate) fn new<B>(inner: B, max_body: Option<u64>, keep_up_to: usize) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        use http_body_util::BodyExt;
        let ended = inner.is_end_stream();
        let shared = Shared {
            inner: Box::pin(inner.map_err(Into::into)),
            limits: Limits { max_body, keep_up_to },
            recorded: Vec::new(),
            recorded_bytes: 0,
            replayable: keep_up_to > 0 || ended,
            ended,
            total_bytes: 0,
            too_large: false,
            client_failed: false,
            generation: 0,
        };
        Self { shared: Arc::new(Mutex::new(shared)) }
    }

    /// The body for the next attempt: what was read so far, then the rest of the
    /// client's body. Earlier attempts' bodies stop yielding frames.
    pub(crate) fn attempt(&self) -> AttemptBody {
        let mut shared = self.shared.lock();
        shared.generation += 1;
        AttemptBody { shared: self.shared.clone(), generation: shared.generation, cursor: 0 }
    }

    /// Whether a new attempt would send the whole body again.
    pub(crate) fn can_replay(&self) -> bool {
        let shared = self.shared.lock();
        shared.replayable && !shared.too_large
    }

    /// Whether the body went over the size limit.
    pub(crate) fn too_large(&self) -> bool {
        self.shared.lock().too_large
    }

    /// Whether the body failed through the client's fault: over the size limit,
    /// or the client's own stream broke. An exchange that fails for this says
    /// nothing about the backend.
    pub(crate) fn client_fault(&self) -> bool {
        let shared = self.shared.lock();
        shared.too_large || shared.client_failed
    }
}

/// One attempt's view of the request body.
#[derive(Debug)]
pub(crate) struct AttemptBody {
    shared: Arc<Mutex<Shared>>,
    generation: u64,
    cursor: usize,
}

impl Body for AttemptBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let mut guard = this.shared.lock();
        let shared = &mut *guard;
        if shared.generation != this.generation {
            return Poll::Ready(Some(Err(RequestBodyError::Superseded.into())));
        }
        if shared.replayable && this.cursor < shared.recorded.len() {
            let frame = shared.recorded[this.cursor].to_frame();
            this.cursor += 1;
            return Poll::Ready(Some(Ok(frame)));
        }
        if shared.ended {
            return Poll::Ready(None);
        }
        if shared.too_large {
            let limit = shared.limits.max_body.unwrap_or_default();
            return Poll::Ready(Some(Err(RequestBodyError::TooLarge { limit }.into())));
        }
        // Empty data frames carry nothing, and backends count them as abuse
        // (h2 answers a flood of them with `ENHANCE_YOUR_CALM`): skip them.
        let polled = loop {
            match shared.inner.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) if frame.data_ref().is_some_and(Bytes::is_empty) => continue,
                polled => break polled,
            }
        };
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                let recorded = if let Some(data) = frame.data_ref() {
                    shared.total_bytes += data.len() as u64;
                    if let Some(limit) = shared.limits.max_body.filter(|&l| shared.total_bytes > l) {
                        shared.too_large = true;
                        shared.replayable = false;
                        shared.recorded.clear();
                        return Poll::Ready(Some(Err(RequestBodyError::TooLarge { limit }.into())));
                    }
                    shared.recorded_bytes += data.len();
                    Recorded::Data(data.clone())
                } else if let Some(trailers) = frame.trailers_ref() {
                    Recorded::Trailers(trailers.clone())
                } else {
                    // An unknown frame kind cannot be replayed faithfully.
                    shared.replayable = false;
                    shared.recorded.clear();
                    return Poll::Ready(Some(Ok(frame)));
                };
                if shared.replayable {
                    if shared.recorded_bytes > shared.limits.keep_up_to {
                        shared.replayable = false;
                        shared.recorded.clear();
                    } else {
                        shared.recorded.push(recorded);
                        this.cursor = shared.recorded.len();
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                shared.ended = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(error))) => {
                // The client's own stream broke: nothing can be replayed.
                shared.client_failed = true;
                shared.replayable = false;
                shared.recorded.clear();
                Poll::Ready(Some(Err(error)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        let shared = self.shared.lock();
        shared.generation == self.generation
            && shared.ended
            && (!shared.replayable || self.cursor >= shared.recorded.len())
    }

    fn size_hint(&self) -> SizeHint {
        let shared = self.shared.lock();
        if shared.ended && shared.replayable {
            let rest: usize = shared.recorded[self.cursor.min(shared.recorded.len())..]
                .iter()
                .map(|r| match r {
                    Recorded::Data(d) => d.len(),
                    Recorded::Trailers(_) => 0,
                })
                .sum();
            SizeHint::with_exact(rest as u64)
        } else if self.cursor >= shared.recorded.len() || !shared.replayable {
            shared.inner.size_hint()
        } else {
            SizeHint::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Full, StreamBody};

    use super::*;

    fn chunks(parts: &[&'static str]) -> impl Body<Data = Bytes, Error = BoxError> + Send + 'static {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> =
            parts.iter().map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes())))).collect();
        StreamBody::new(futures::stream::iter(frames))
    }

    #[tokio::test]
    async fn a_small_body_is_replayed_in_full_on_the_next_attempt() {
        let body = RequestBody::new(chunks(&["ab", "cd"]), None, 16);
        let mut first = body.attempt();
        let frame = first.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "ab");
        // The first attempt fails after reading half the body.
        assert!(body.can_replay());
        let second = body.attempt();
        assert_eq!(second.collect().await.unwrap().to_bytes(), "abcd");
        assert!(first.frame().await.unwrap().is_err(), "the old attempt is superseded");
        let third = body.attempt();
        assert_eq!(third.collect().await.unwrap().to_bytes(), "abcd");
    }

    #[tokio::test]
    async fn a_body_over_the_replay_buffer_is_not_replayable() {
        let body = RequestBody::new(chunks(&["abcdef", "ghijkl"]), None, 8);
        assert_eq!(body.attempt().collect().await.unwrap().to_bytes(), "abcdefghijkl");
        assert!(!body.can_replay());
    }

    #[tokio::test]
    async fn a_body_over_the_limit_fails_with_too_large() {
        let body = RequestBody::new(chunks(&["abcdef", "ghijkl"]), Some(10), 64);
        let err = body.attempt().collect().await.unwrap_err();
        assert!(err.to_string().contains("larger than 10 bytes"), "{err}");
        assert!(body.too_large());
        assert!(!body.can_replay());
    }

    #[tokio::test]
    async fn an_empty_body_is_always_replayable() {
        let body = RequestBody::new(Full::new(Bytes::new()), None, 0);
        assert!(body.can_replay());
        assert!(body.attempt().is_end_stream());
    }
}
