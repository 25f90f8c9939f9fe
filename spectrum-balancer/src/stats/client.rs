//! [`StatsClient`]: reads a balancer's figures over its own gRPC service.

use std::fmt;

use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::error::BalancerError;
use crate::stats::BalancerStats;
use crate::stats::proto::StatsRequest;
use crate::stats::proto::balancer_client::BalancerClient;

/// A typed client of a balancer's own service (`spectrum.balancer.v1.Balancer`):
/// its figures as [`BalancerStats`], with no protobuf type in sight.
///
/// On a balancer's public port, `Stats` needs the balancer's token
/// ([`with_token`](Self::with_token)); on its admin listener it needs none.
/// Cloning is cheap and shares the connection.
///
/// ```no_run
/// use spectrum_balancer::BalancerError;
/// use spectrum_balancer::stats::StatsClient;
///
/// # async fn run() -> Result<(), BalancerError> {
/// let mut client = StatsClient::connect("http://127.0.0.1:7100").await?;
/// match client.stats().await {
///     Ok(stats) => println!("{stats}"),
///     Err(BalancerError::StatsCall { code: tonic::Code::Unimplemented, .. }) => {
///         println!("a node, not a balancer")
///     }
///     Err(error) => return Err(error),
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct StatsClient {
    inner: BalancerClient<InterceptedService<Channel, Bearer>>,
    channel: Channel,
}

/// Adds `authorization: Bearer <token>` to every call, when there is a token.
#[derive(Clone, Default)]
struct Bearer(Option<AsciiMetadataValue>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

impl fmt::Debug for Bearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "Bearer(***)" } else { "Bearer(none)" })
    }
}

impl StatsClient {
    /// Connects to the balancer at `url` (`http://HOST:PORT`, its main port).
    ///
    /// # Errors
    ///
    /// [`BalancerError::Connect`] when `url` is not a valid URI or the balancer
    /// cannot be reached.
    pub async fn connect(url: impl Into<String>) -> Result<Self, BalancerError> {
        let url = url.into();
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|source| BalancerError::Connect { endpoint: url.clone(), source: source.into() })?;
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| BalancerError::Connect { endpoint: url, source: source.into() })?;
        Ok(Self::new(channel))
    }

    /// A client on a channel the caller already has, for example the one a CLI
    /// opened to an endpoint that may be a node or a balancer.
    pub fn new(channel: Channel) -> Self {
        Self { inner: BalancerClient::with_interceptor(channel.clone(), Bearer::default()), channel }
    }

    /// Sends `authorization: Bearer <token>` with every call: the balancer's
    /// [`stats_token`](crate::BalancerConfig::stats_token), which `Stats` on its
    /// public port requires.
    ///
    /// # Errors
    ///
    /// [`BalancerError::InvalidConfig`] when the token holds characters a header
    /// value cannot (it is not echoed).
    pub fn with_token(self, token: &str) -> Result<Self, BalancerError> {
        let mut value = AsciiMetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
            BalancerError::InvalidConfig { field: "token", reason: "not a valid header value" }
        })?;
        value.set_sensitive(true);
        Ok(Self {
            inner: BalancerClient::with_interceptor(self.channel.clone(), Bearer(Some(value))),
            ..self
        })
    }

    /// The balancer's figures: every backend's, in configuration order, and the
    /// totals.
    ///
    /// # Errors
    ///
    /// [`BalancerError::StatsCall`] when the call fails; its code is
    /// [`Unimplemented`](tonic::Code::Unimplemented) when the endpoint is a node
    /// rather than a balancer. [`BalancerError::InvalidStatsAnswer`] when the
    /// answer holds an id or address that cannot be read.
    pub async fn stats(&mut self) -> Result<BalancerStats, BalancerError> {
        let answer = self.inner.stats(StatsRequest {}).await.map_err(|status| BalancerError::StatsCall {
            code: status.code(),
            message: status.message().to_owned(),
        })?;
        BalancerStats::try_from(answer.into_inner())
    }
}
