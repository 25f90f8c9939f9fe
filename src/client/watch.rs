//! [`AdminClient::watch`]: a stream of changes that resumes by itself.

use std::pin::Pin;
use std::time::{Duration, Instant};

use futures::Stream;
use tonic::Code;
use tracing::debug;

use super::{AdminClient, ClientError};
use crate::model::ReadAfter;
use crate::pb::proto;
use crate::watch::{EventKind, WatchEvent, WatchPosition};

/// How [`AdminClient::watch_with`] behaves.
///
/// ```
/// use std::time::Duration;
/// use spectrum::client::WatchOptions;
///
/// let options = WatchOptions::default().reconnect_for(Duration::from_secs(5)).progress(true);
/// assert_eq!(options, WatchOptions { reconnect_for: Duration::from_secs(5), progress: true });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchOptions {
    /// How long the stream keeps trying to reconnect after it lost its node or
    /// balancer, counted from the failure (default 60 s); then it ends with the
    /// last error.
    pub reconnect_for: Duration,
    /// Whether progress events (no change, only a newer position) are yielded
    /// too (default: no; the stream keeps their positions for resuming).
    pub progress: bool,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self { reconnect_for: Duration::from_secs(60), progress: false }
    }
}

impl WatchOptions {
    /// Sets [`reconnect_for`](Self::reconnect_for).
    #[must_use]
    pub fn reconnect_for(mut self, window: Duration) -> Self {
        self.reconnect_for = window;
        self
    }

    /// Sets [`progress`](Self::progress).
    #[must_use]
    pub fn progress(mut self, yes: bool) -> Self {
        self.progress = yes;
        self
    }
}

/// The stream [`AdminClient::watch`] returns.
pub type WatchEvents = Pin<Box<dyn Stream<Item = Result<WatchEvent, ClientError>> + Send>>;

/// Whether a failed watch is worth resuming: the connection, the node or the
/// balancer went away, or the node gave up on a slow reader. A refusal (bad
/// position, compacted, role too low) is not.
fn resumable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::Aborted
            | Code::Internal
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
    )
}

/// A watch in progress on the client side.
struct Resuming {
    client: AdminClient,
    prefix: String,
    position: Option<WatchPosition>,
    options: WatchOptions,
    stream: Option<tonic::Streaming<proto::WatchEvent>>,
    failing_since: Option<Instant>,
    backoff: Duration,
    done: bool,
}

impl Resuming {
    /// Notes a failure: `Ok` to try again after a pause, `Err` to give up with it.
    async fn failed(&mut self, status: tonic::Status) -> Result<(), ClientError> {
        self.stream = None;
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        // A node that is not ready (catching up, clock fenced) marks its refusal
        // (`spectrum_balancer::refusal`): another try, here or on another node, may succeed.
        let not_ready = status
            .metadata()
            .get(spectrum_balancer::refusal::REFUSED_HEADER)
            .is_some_and(|v| v.as_bytes() == spectrum_balancer::refusal::NOT_READY.as_bytes());
        if !(resumable(status.code()) || not_ready) || since.elapsed() >= self.options.reconnect_for {
            self.done = true;
            return Err(status.into());
        }
        debug!(code = ?status.code(), message = status.message(), "watch interrupted; resuming");
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(Duration::from_secs(2));
        Ok(())
    }

    async fn open(&mut self) -> Result<tonic::Streaming<proto::WatchEvent>, tonic::Status> {
        let request = proto::WatchRequest {
            prefix: self.prefix.clone(),
            from: self.position.as_ref().map(ToString::to_string).unwrap_or_default(),
            read: self.client.read_options(&ReadAfter::Anything),
        };
        Ok(self.client.call().watch(request).await?.into_inner())
    }

    /// The next event to yield, reconnecting as needed.
    async fn next(&mut self) -> Option<Result<WatchEvent, ClientError>> {
        while !self.done {
            if self.stream.is_none() {
                match self.open().await {
                    Ok(stream) => self.stream = Some(stream),
                    Err(status) => match self.failed(status).await {
                        Ok(()) => continue,
                        Err(e) => return Some(Err(e)),
                    },
                }
            }
            let stream = self.stream.as_mut()?;
            let status = match stream.message().await {
                Ok(Some(wire)) => {
                    let event = match WatchEvent::try_from(wire) {
                        Ok(event) => event,
                        Err(e) => {
                            self.done = true;
                            return Some(Err(e.into()));
                        }
                    };
                    self.position = Some(event.position.clone());
                    (self.failing_since, self.backoff) = (None, Duration::from_millis(50));
                    if event.kind == EventKind::Progress && !self.options.progress {
                        continue;
                    }
                    return Some(Ok(event));
                }
                Ok(None) => tonic::Status::unavailable("the node ended the watch"),
                Err(status) => status,
            };
            if let Err(e) = self.failed(status).await {
                return Some(Err(e));
            }
        }
        None
    }
}

impl AdminClient {
    /// Follows every change under `prefix`, from `from` (a position from an
    /// earlier event; from now when `None`), as a stream of events in the
    /// answering node's apply order (see [`watch`](crate::watch)). When the
    /// connection, the node or the balancer goes away, the stream reconnects by
    /// itself and resumes from the last position it received, on whichever node
    /// answers; it sends the session this client keeps, if any. Values are
    /// redacted as reads redact them.
    ///
    /// ```no_run
    /// # async fn run(admin: spectrum::client::AdminClient) -> Result<(), Box<dyn std::error::Error>> {
    /// use futures::StreamExt;
    ///
    /// let mut changes = admin.watch("settings/", None);
    /// while let Some(event) = changes.next().await {
    ///     let event = event?;
    ///     println!("{} {} at {}", event.kind, event.key, event.position);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The stream ends with an error it cannot resume from (`OUT_OF_RANGE` for a
    /// compacted position, `INVALID_ARGUMENT`, `PERMISSION_DENIED`), or with the
    /// last failure once it has tried to reconnect for
    /// [`WatchOptions::reconnect_for`].
    pub fn watch(&self, prefix: &str, from: Option<WatchPosition>) -> WatchEvents {
        self.watch_with(prefix, from, WatchOptions::default())
    }

    /// [`watch`](Self::watch) with `options`.
    pub fn watch_with(
        &self,
        prefix: &str,
        from: Option<WatchPosition>,
        options: WatchOptions,
    ) -> WatchEvents {
        let state = Resuming {
            client: self.clone(),
            prefix: prefix.to_owned(),
            position: from,
            options,
            stream: None,
            failing_since: None,
            backoff: Duration::from_millis(50),
            done: false,
        };
        Box::pin(futures::stream::unfold(state, |mut state| async move {
            let next = state.next().await?;
            Some((next, state))
        }))
    }
}
