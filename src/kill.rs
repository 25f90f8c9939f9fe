//! Connections that can be cut all at once, as a crashed process's are.
//!
//! tonic serves each accepted connection on a task of its own, so stopping the
//! accept loop leaves open connections answering. [`Node::kill`](crate::Node::kill)
//! must behave like `kill -9`: every connection is wrapped in a [`Killable`]
//! sharing one [`CancellationToken`], and once it is cancelled every read and
//! write fails with `ConnectionAborted`, waking whatever waits on them, so each
//! connection task ends and its peer sees the connection drop.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::Connected;

/// An accepted connection that fails every read and write once its token is
/// cancelled.
pub(crate) struct Killable<S> {
    inner: S,
    killed: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<S> Killable<S> {
    pub(crate) fn new(inner: S, token: &CancellationToken) -> Self {
        Self { inner, killed: Box::pin(token.clone().cancelled_owned()) }
    }

    /// `Err` once killed; otherwise registers the task to be woken on kill.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.killed.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(io::ErrorKind::ConnectionAborted, "node killed")),
            Poll::Pending => Ok(()),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Killable<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Killable<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check(cx)?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: Connected> Connected for Killable<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn a_read_waiting_on_an_idle_connection_fails_once_killed() {
        let (a, mut b) = tokio::io::duplex(64);
        let token = CancellationToken::new();
        let mut conn = Killable::new(a, &token);
        b.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2];
        conn.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hi", "a live connection passes bytes through");

        let waiting = tokio::spawn(async move {
            let mut one = [0u8; 1];
            conn.read(&mut one).await
        });
        tokio::task::yield_now().await;
        token.cancel();
        let e = waiting.await.unwrap().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted);
    }
}
