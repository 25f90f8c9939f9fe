//! One multiplexed HTTP/2 connection per backend, opened lazily and reopened when
//! it closes.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tracing::{debug, trace};

use crate::replay::AttemptBody;

/// Why no connection to a backend could be had. The request was not sent.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    #[error("connect failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("HTTP/2 handshake failed: {0}")]
    Handshake(#[from] hyper::Error),
}

/// The connection to one backend.
#[derive(Debug)]
pub(crate) struct Upstream {
    addr: SocketAddr,
    authority: http::uri::Authority,
    connect_timeout: Duration,
    sender: parking_lot::Mutex<Option<SendRequest<AttemptBody>>>,
    /// Held while connecting, so that concurrent requests share one new connection.
    connecting: tokio::sync::Mutex<()>,
}

impl Upstream {
    pub(crate) fn new(addr: SocketAddr, connect_timeout: Duration) -> Self {
        let authority = http::uri::Authority::try_from(addr.to_string())
            .unwrap_or_else(|_| http::uri::Authority::from_static("localhost"));
        Self {
            addr,
            authority,
            connect_timeout,
            sender: parking_lot::Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    /// The backend's `host:port`, for request URIs.
    pub(crate) fn authority(&self) -> &http::uri::Authority {
        &self.authority
    }

    fn cached(&self) -> Option<SendRequest<AttemptBody>> {
        let mut slot = self.sender.lock();
        match &*slot {
            Some(s) if !s.is_closed() => Some(s.clone()),
            Some(_) => {
                *slot = None;
                None
            }
            None => None,
        }
    }

    /// Forgets the cached connection (after it failed to take a request).
    pub(crate) fn invalidate(&self) {
        *self.sender.lock() = None;
    }

    /// A handle to send one request on, connecting first if needed.
    pub(crate) async fn sender(&self) -> Result<SendRequest<AttemptBody>, ConnectError> {
        if let Some(s) = self.cached() {
            return Ok(s);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(s) = self.cached() {
            return Ok(s);
        }
        let sender = tokio::time::timeout(self.connect_timeout, self.connect())
            .await
            .map_err(|_| ConnectError::Timeout(self.connect_timeout))??;
        *self.sender.lock() = Some(sender.clone());
        Ok(sender)
    }

    async fn connect(&self) -> Result<SendRequest<AttemptBody>, ConnectError> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .adaptive_window(true)
            .handshake(TokioIo::new(tcp))
            .await?;
        let addr = self.addr;
        tokio::spawn(async move {
            match conn.await {
                Ok(()) => trace!(backend = %addr, "upstream connection closed"),
                Err(error) => debug!(backend = %addr, ?error, "upstream connection ended with an error"),
            }
        });
        debug!(backend = %addr, "upstream connection open");
        Ok(sender)
    }
}
