//! The client shapes, the same for every system: sequential puts, concurrent
//! writers, sequential compare-and-set.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Barrier;

use spectrum::client::{AckLevel, AdminClient, PutCondition};
use tonic::Code;

use crate::etcd::EtcdClient;
use crate::processes::BoxError;

/// Bytes in every value written.
const VALUE_BYTES: usize = 64;
/// Distinct keys each client cycles through.
const KEYS: usize = 100;
/// Operations before each measurement that are not counted.
const WARM_UP: usize = 20;

/// One member's client, of either system.
#[derive(Clone)]
pub(crate) enum Client {
    /// An etcd member (gRPC KV API).
    Etcd(EtcdClient),
    /// A Spectrum node (management API), writing at `ack`.
    Spectrum { client: Box<AdminClient>, ack: AckLevel },
}

/// What a write left behind, for a compare-and-set against it: etcd's mod
/// revision of the key, Spectrum's version token.
#[derive(Debug, Clone)]
pub(crate) enum Version {
    Etcd(i64),
    /// Spectrum's version token, as text.
    Spectrum(String),
}

/// Why a compare-and-set was not measured.
#[derive(Debug)]
pub(crate) enum CasError {
    /// The system refused it (Spectrum in last-writer-wins mode: FAILED_PRECONDITION).
    Refused(String),
    /// It failed.
    Failed(BoxError),
}

impl Client {
    /// Writes `value` at `key`; the version it made.
    pub(crate) async fn put(&self, key: &str, value: &[u8]) -> Result<Version, BoxError> {
        match self {
            Client::Etcd(c) => Ok(Version::Etcd(c.put(key.as_bytes(), value).await?)),
            Client::Spectrum { client, ack } => {
                let written = client.put(key, value.to_vec(), *ack).await?;
                Ok(Version::Spectrum(written.write.version.to_string()))
            }
        }
    }

    /// Writes `value` at `key` if the key is still at `version`: the new version,
    /// or `None` when it was not.
    pub(crate) async fn compare_and_set(
        &self,
        key: &str,
        version: &Version,
        value: &[u8],
    ) -> Result<Option<Version>, CasError> {
        match (self, version) {
            (Client::Etcd(c), Version::Etcd(revision)) => c
                .compare_and_set(key.as_bytes(), *revision, value)
                .await
                .map(|new| new.map(Version::Etcd))
                .map_err(CasError::Failed),
            (Client::Spectrum { client, .. }, Version::Spectrum(version)) => {
                let version =
                    version.parse().map_err(|e| CasError::Failed(format!("{version}: {e}").into()))?;
                match client.put_if(key, value.to_vec(), PutCondition::Version(version)).await {
                    Ok(written) => Ok(Some(Version::Spectrum(written.write.version.to_string()))),
                    // Last-writer-wins mode refuses every compare-and-set, naming Raft mode.
                    Err(e)
                        if e.code() == Some(Code::FailedPrecondition)
                            && e.to_string().contains("Raft mode") =>
                    {
                        Err(CasError::Refused(e.to_string()))
                    }
                    Err(e) if e.code() == Some(Code::FailedPrecondition) => Ok(None),
                    Err(e) => Err(CasError::Failed(e.into())),
                }
            }
            (Client::Spectrum { .. }, Version::Etcd(_)) => {
                Err(CasError::Failed("an etcd revision given to Spectrum".into()))
            }
            (Client::Etcd(_), Version::Spectrum(_)) => {
                Err(CasError::Failed("a Spectrum version given to etcd".into()))
            }
        }
    }
}

/// The figures of one shape at one system in one round.
#[derive(Debug, Default)]
pub(crate) struct Round {
    /// Latency of every counted operation, in nanoseconds.
    pub(crate) latencies: Vec<u64>,
    pub(crate) elapsed: Duration,
    pub(crate) errors: u64,
    pub(crate) first_error: Option<String>,
    /// Why nothing was measured, when nothing was.
    pub(crate) not_measured: Option<String>,
    /// The concurrent shape's latencies by the member written through (in
    /// nanoseconds; empty for the sequential shapes).
    pub(crate) by_member: Vec<Vec<u64>>,
    /// The concurrent shape's longest time, within its window, in which no
    /// writer's put came back (`None` for the sequential shapes): a stall
    /// of the whole cluster, which percentiles of single puts blur.
    pub(crate) longest_pause: Option<Duration>,
    /// CPU time each member's process used during the round (user and
    /// system, from `/proc`; `None` where it could not be read), in member order.
    pub(crate) cpu: Vec<Option<Duration>>,
    /// CPU time this benchmark's own process (the clients) used during the
    /// round, from `/proc` (`None` where it could not be read).
    pub(crate) client_cpu: Option<Duration>,
}

impl Round {
    fn failed(&mut self, e: impl std::fmt::Display) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| e.to_string());
    }

    /// Operations per second.
    pub(crate) fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn value(i: usize) -> Vec<u8> {
    let mut v = format!("{i:08}").into_bytes();
    v.resize(VALUE_BYTES, b'x');
    v
}

/// `ops` puts one after another through `client`, after a warm-up.
pub(crate) async fn sequential_puts(client: &Client, prefix: &str, ops: usize) -> Round {
    let mut round = Round::default();
    for i in 0..WARM_UP {
        let _ = client.put(&format!("{prefix}seq/k{}", i % KEYS), &value(i)).await;
    }
    let start = Instant::now();
    for i in 0..ops {
        let t = Instant::now();
        match client.put(&format!("{prefix}seq/k{}", i % KEYS), &value(i)).await {
            Ok(_) => round.latencies.push(t.elapsed().as_nanos() as u64),
            Err(e) => round.failed(e),
        }
    }
    round.elapsed = start.elapsed();
    round
}

/// `writers` clients putting as fast as they can for `window`, writer `w`
/// through `clients[w % clients.len()]`, each to keys of its own. Every writer
/// warms up first; the window opens when all have.
pub(crate) async fn concurrent_puts(
    clients: &[Client],
    prefix: &str,
    writers: usize,
    window: Duration,
) -> Round {
    let ready = Arc::new(Barrier::new(writers + 1));
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let member = w % clients.len();
            let client = clients[member].clone();
            let prefix: Arc<str> = Arc::from(format!("{prefix}w{w}/"));
            let ready = ready.clone();
            tokio::spawn(async move {
                let mut round = Round::default();
                for i in 0..WARM_UP {
                    let _ = client.put(&format!("{prefix}k{}", i % KEYS), &value(i)).await;
                }
                ready.wait().await;
                let deadline = Instant::now() + window;
                let mut i = 0;
                let mut completed = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match client.put(&format!("{prefix}k{}", i % KEYS), &value(i)).await {
                        Ok(_) => {
                            let done = Instant::now();
                            round.latencies.push((done - t).as_nanos() as u64);
                            completed.push(done);
                        }
                        Err(e) => round.failed(e),
                    }
                    i += 1;
                }
                (member, round, completed)
            })
        })
        .collect();
    ready.wait().await;
    let start = Instant::now();
    let mut total = Round { by_member: vec![Vec::new(); clients.len()], ..Round::default() };
    let mut completed = Vec::new();
    for task in tasks {
        match task.await {
            Ok((member, r, done)) => {
                completed.extend(done);
                total.by_member[member].extend(&r.latencies);
                total.latencies.extend(r.latencies);
                total.errors += r.errors;
                total.first_error = total.first_error.or(r.first_error);
            }
            Err(e) => total.failed(e),
        }
    }
    // Until the last writer's last put came back.
    total.elapsed = start.elapsed();
    total.longest_pause = Some(longest_pause(start, completed));
    total
}

/// The longest time after `start` between two of the instants `completed`
/// (the first counted from `start`).
fn longest_pause(start: Instant, mut completed: Vec<Instant>) -> Duration {
    completed.sort_unstable();
    let mut last = start;
    let mut longest = Duration::ZERO;
    for done in completed {
        longest = longest.max(done.saturating_duration_since(last));
        last = last.max(done);
    }
    longest
}

/// `ops` compare-and-sets one after another on one key, each against the
/// version the previous one made (so each should succeed: a refusal is an error).
pub(crate) async fn sequential_cas(client: &Client, prefix: &str, ops: usize) -> Round {
    let mut round = Round::default();
    let key = format!("{prefix}cas");
    let mut version = match client.put(&key, &value(0)).await {
        Ok(v) => v,
        Err(e) => {
            round.failed(e);
            return round;
        }
    };
    let mut start = Instant::now();
    for i in 0..WARM_UP + ops {
        if i == WARM_UP {
            round.latencies.clear();
            start = Instant::now();
        }
        let t = Instant::now();
        match client.compare_and_set(&key, &version, &value(i + 1)).await {
            Ok(Some(next)) => {
                round.latencies.push(t.elapsed().as_nanos() as u64);
                version = next;
            }
            Ok(None) => round.failed("the key changed under a single client's compare-and-set"),
            Err(CasError::Failed(e)) => round.failed(e),
            Err(CasError::Refused(why)) => {
                round.not_measured = Some(format!("refused (needs Raft): {why}"));
                return round;
            }
        }
    }
    round.elapsed = start.elapsed();
    round
}
