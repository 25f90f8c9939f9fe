//! Bodies over `h2` streams, in both directions of the proxy: [`Pipe`] writes a
//! body to a stream as its peer's window allows, and [`RecvBody`] reads one,
//! giving each frame's window back as the frame is taken. The balancer's HTTP/2
//! client ([`crate::h2_client`]) writes request bodies to nodes and reads their
//! responses with them; its HTTP/2 server ([`crate::h2_server`]) reads client
//! requests and writes the answers.
//!
//! Flow control stays end to end this way (RFC 9113 §5.2): a body is read from
//! one side only while the other side's stream has window for it, and window is
//! given back to the sender only as the receiving side takes the data, so a
//! peer that stops reading stops its own stream only.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures::task::AtomicWaker;
use h2::{Reason, RecvStream, SendStream};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tracing::{debug, trace};

use crate::error::BoxError;

/// Tells a [`Pipe`] that nobody waits for its exchange any more.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cancel(Arc<CancelState>);

#[derive(Debug, Default)]
struct CancelState {
    cancelled: AtomicBool,
    waker: AtomicWaker,
}

impl Cancel {
    /// Whether the exchange was given up, registering `cx` to hear of it.
    fn poll_cancelled(&self, cx: &mut Context<'_>) -> bool {
        if self.0.cancelled.load(Ordering::Acquire) {
            return true;
        }
        self.0.waker.register(cx.waker());
        self.0.cancelled.load(Ordering::Acquire)
    }
}

/// Cancels its [`Cancel`] when dropped.
#[derive(Debug)]
pub(crate) struct CancelOnDrop(pub(crate) Cancel);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.0.cancelled.store(true, Ordering::Release);
        self.0.0.waker.wake();
    }
}

/// Writes a body to its stream, as the peer's window allows: a frame is read
/// from the body, then held until the stream has window for some of it, and
/// `h2` holds the rest of that frame until the peer opens its window further;
/// only then is the next frame read. Only one byte of window is asked for
/// ahead of each frame, as hyper does (its issue #4003): a claim for the whole
/// frame would hold connection window that other streams could use while this
/// one waits; `h2` raises the claim to what it buffers. The end of the body and trailers take no
/// window and go at once. Ends when the body is written, the stream is reset or
/// closed, the body fails (the stream is reset with the reason the body's
/// `h2` error gives, else `INTERNAL_ERROR`), or the exchange is given up
/// ([`Cancel`]; the stream is reset with `CANCEL`).
pub(crate) struct Pipe<B> {
    body: B,
    stream: SendStream<Bytes>,
    /// A data frame read and not handed to `h2` yet, and whether it ends the body.
    held: Option<(Bytes, bool)>,
    /// Set when the pipe runs as a task of its own.
    cancel: Option<Cancel>,
}

/// Whether the pipe goes on.
enum Step {
    Continue,
    Done,
}

impl<B> Pipe<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    /// A pipe writing `body` to `stream`.
    pub(crate) fn new(body: B, stream: SendStream<Bytes>) -> Self {
        Self { body, stream, held: None, cancel: None }
    }

    /// Has the pipe stop, resetting its stream, once `cancel` is cancelled.
    pub(crate) fn cancelled_by(&mut self, cancel: Cancel) {
        self.cancel = Some(cancel);
    }

    /// Hands the held frame to `h2` once the stream has window for part of it.
    fn poll_write_held(&mut self, cx: &mut Context<'_>) -> Poll<Result<Step, h2::Error>> {
        if self.held.is_none() {
            return Poll::Ready(Ok(Step::Continue));
        }
        while self.stream.capacity() == 0 {
            match ready!(self.stream.poll_capacity(cx)) {
                Some(Ok(_)) => {}
                Some(Err(error)) => return Poll::Ready(Err(error)),
                None => return Poll::Ready(Err(h2::Error::from(Reason::CANCEL))),
            }
        }
        let Some((data, end)) = self.held.take() else { return Poll::Ready(Ok(Step::Continue)) };
        self.stream.send_data(data, end)?;
        Poll::Ready(Ok(if end { Step::Done } else { Step::Continue }))
    }

    /// Reads the next frame from the body and, when it takes no window, sends it.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<Result<Step, h2::Error>> {
        let frame = match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
            None => {
                self.stream.reserve_capacity(0);
                self.stream.send_data(Bytes::new(), true)?;
                return Poll::Ready(Ok(Step::Done));
            }
            Some(Err(error)) => {
                let reason = reset_reason(&*error);
                debug!(%error, ?reason, "body failed; resetting its stream");
                self.stream.send_reset(reason);
                return Poll::Ready(Ok(Step::Done));
            }
            Some(Ok(frame)) => frame,
        };
        match frame.into_data() {
            Ok(data) => {
                let end = self.body.is_end_stream();
                if data.is_empty() {
                    // Takes no window: sent at once (an end of the body, say).
                    self.stream.send_data(data, end)?;
                    return Poll::Ready(Ok(if end { Step::Done } else { Step::Continue }));
                }
                self.stream.reserve_capacity(1);
                self.held = Some((data, end));
                Poll::Ready(Ok(Step::Continue))
            }
            Err(frame) => match frame.into_trailers() {
                Ok(mut trailers) => {
                    // An HTTP/1.1 peer's trailers may name fields HTTP/2 forbids.
                    strip_connection_fields(&mut trailers);
                    self.stream.reserve_capacity(0);
                    self.stream.send_trailers(trailers)?;
                    Poll::Ready(Ok(Step::Done))
                }
                // A frame kind HTTP/2 cannot carry: skipped.
                Err(_) => Poll::Ready(Ok(Step::Continue)),
            },
        }
    }
}

impl<B> Future for Pipe<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        loop {
            if this.cancel.as_ref().is_some_and(|c| c.poll_cancelled(cx)) {
                trace!("exchange given up; resetting its stream");
                this.stream.send_reset(Reason::CANCEL);
                return Poll::Ready(());
            }
            let step = if this.held.is_some() { this.poll_write_held(cx) } else { this.poll_read(cx) };
            match step {
                Poll::Ready(Ok(Step::Continue)) => {}
                Poll::Ready(Ok(Step::Done)) => return Poll::Ready(()),
                Poll::Ready(Err(error)) => {
                    trace!(%error, "stream failed while its body was written; resetting it");
                    this.stream.send_reset(Reason::INTERNAL_ERROR);
                    return Poll::Ready(());
                }
                Poll::Pending => {
                    // Waiting for the body or for window: notice meanwhile if
                    // the peer reset the stream (it answered early, say).
                    if let Poll::Ready(reason) = this.stream.poll_reset(cx) {
                        trace!(?reason, "peer reset the stream");
                        return Poll::Ready(());
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// The reason a stream is reset with when its body fails: the reason of the
/// first `h2` error in the failure's chain of sources (a stream the other side
/// reset with `CANCEL` is passed on as `CANCEL`), else `INTERNAL_ERROR`. The
/// same rule as hyper's.
pub(crate) fn reset_reason(error: &(dyn StdError + 'static)) -> Reason {
    let mut source = Some(error);
    while let Some(error) = source {
        if let Some(h2) = error.downcast_ref::<h2::Error>() {
            return h2.reason().unwrap_or(Reason::INTERNAL_ERROR);
        }
        source = error.source();
    }
    Reason::INTERNAL_ERROR
}

/// Removes the fields RFC 9113 §8.2.2 forbids in HTTP/2 (and `h2` refuses).
///
/// This runs on every response head and every trailer section, which almost
/// never hold such a field (an HTTP/2 node may not send one, and `h2` refuses a
/// header block that has one): one pass over the names present, compared
/// without hashing, decides whether any removal is needed, where removing each
/// forbidden name parsed and hashed it and probed the map (six lookups, about 2 %
/// of the balancer's CPU at gRPC 8×8 in a profile).
pub(crate) fn strip_connection_fields(fields: &mut HeaderMap) {
    if !fields.keys().any(is_connection_specific) {
        return;
    }
    for name in CONNECTION_SPECIFIC {
        fields.remove(name);
    }
    fields.remove(http::header::TE);
}

/// Whether `name` is one [`strip_connection_fields`] removes: a
/// connection-specific field, or `te`.
pub(crate) fn is_connection_specific(name: &http::HeaderName) -> bool {
    name == http::header::TE || CONNECTION_SPECIFIC.contains(&name.as_str())
}

/// The connection-specific fields HTTP/2 forbids (RFC 9113 §8.2.2), besides
/// `te` other than `trailers`; HTTP/1.1 calls them hop-by-hop.
pub(crate) const CONNECTION_SPECIFIC: [&str; 5] =
    ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"];

/// What a message's `content-length` says its body holds, if it gives one
/// that parses (`h2` itself refuses a stream whose data disagrees with it).
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(http::header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// A body received on an HTTP/2 stream (a node's response, or a client's
/// request): its data frames, then its trailers. Each data frame's window goes
/// back to the sender when the frame is taken.
#[derive(Debug)]
pub(crate) struct RecvBody {
    recv: RecvStream,
    data_done: bool,
    /// What the message's `content-length` says is left, if it gave one.
    remaining: Option<u64>,
    /// Ends a request body's pipe, if it still runs, when the body is dropped.
    _cancel: Option<CancelOnDrop>,
}

impl RecvBody {
    /// The body of a message received on `recv`, whose headers said its
    /// length is `content_length`; `cancel` is dropped with the body.
    pub(crate) fn new(recv: RecvStream, content_length: Option<u64>, cancel: Option<CancelOnDrop>) -> Self {
        Self { recv, data_done: false, remaining: content_length, _cancel: cancel }
    }
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Fails only when the stream is gone, which the next poll reports.
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    if let Some(left) = &mut this.remaining {
                        *left = left.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None => this.data_done = true,
            }
        }
        match ready!(this.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(error) => Poll::Ready(Some(Err(error))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.remaining.map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reset_reason_comes_from_the_first_h2_error_in_the_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("wrapped")]
        struct Wrapped(#[source] h2::Error);

        let cancel: BoxError = Box::new(Wrapped(h2::Error::from(Reason::CANCEL)));
        assert_eq!(reset_reason(&*cancel), Reason::CANCEL);
        let plain: BoxError = "no h2 error here".into();
        assert_eq!(reset_reason(&*plain), Reason::INTERNAL_ERROR);
    }

    #[test]
    fn connection_specific_fields_go_and_the_others_stay() {
        let mut fields = HeaderMap::new();
        fields.insert("grpc-status", "0".parse().unwrap());
        fields.insert("x-keep-alive-hint", "1".parse().unwrap());
        let untouched = fields.clone();
        strip_connection_fields(&mut fields);
        assert_eq!(fields, untouched, "nothing to strip");
        for name in CONNECTION_SPECIFIC.into_iter().chain(["te"]) {
            let mut with = untouched.clone();
            with.append(name, "x".parse().unwrap());
            with.append(name, "y".parse().unwrap());
            strip_connection_fields(&mut with);
            assert_eq!(with, untouched, "{name}");
        }
    }

    #[test]
    fn content_length_is_read_when_it_parses() {
        let mut headers = HeaderMap::new();
        assert_eq!(content_length(&headers), None);
        headers.insert(http::header::CONTENT_LENGTH, "42".parse().unwrap());
        assert_eq!(content_length(&headers), Some(42));
        headers.insert(http::header::CONTENT_LENGTH, "x".parse().unwrap());
        assert_eq!(content_length(&headers), None);
    }
}
