//! The live feed of the stores in this crate: every record as it is stored,
//! to [`subscribe`](crate::ConfigStore::subscribe)rs of the whole feed and,
//! filtered by key prefix, to
//! [`subscribe_prefix`](crate::ConfigStore::subscribe_prefix)rs.
//!
//! A node's own followers each care about one corner of the keys (the users
//! for the token index, its own membership record for readiness). On the
//! whole feed each of them was woken, and handed a copy of the record, for
//! every write anywhere: under 16 writers, those two took about 4 µs of the
//! three nodes' CPU per put (about 1 %) to drop records. (A watch stays on the
//! whole feed: it counts the writes elsewhere, see `watch::feed`.)

use parking_lot::Mutex;
use tokio::sync::broadcast;

use crate::record::Record;
use crate::store::FEED_CAPACITY;

/// The feeds of one store.
#[derive(Debug)]
pub(crate) struct Feeds {
    /// Every record.
    all: broadcast::Sender<Record>,
    /// One channel per prefix subscribed to (a second subscriber of a prefix
    /// shares it); dropped once its last receiver is.
    by_prefix: Mutex<Vec<(String, broadcast::Sender<Record>)>>,
}

impl Default for Feeds {
    fn default() -> Self {
        Self { all: broadcast::channel(FEED_CAPACITY).0, by_prefix: Mutex::new(Vec::new()) }
    }
}

impl Feeds {
    /// A receiver of every record.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Record> {
        self.all.subscribe()
    }

    /// A receiver of the records whose key starts with `prefix`.
    pub(crate) fn subscribe_prefix(&self, prefix: &str) -> broadcast::Receiver<Record> {
        let mut by_prefix = self.by_prefix.lock();
        if let Some((_, tx)) = by_prefix.iter().find(|(p, _)| p == prefix) {
            return tx.subscribe();
        }
        let (tx, rx) = broadcast::channel(FEED_CAPACITY);
        by_prefix.push((prefix.to_owned(), tx));
        rx
    }

    /// Sends `records`, in order, to every receiver that wants them. A record
    /// is copied only for a channel with a receiver.
    pub(crate) fn publish<'a>(&self, records: impl Iterator<Item = &'a Record> + Clone) {
        if self.all.receiver_count() > 0 {
            for r in records.clone() {
                let _ = self.all.send(r.clone());
            }
        }
        let mut by_prefix = self.by_prefix.lock();
        by_prefix.retain(|(_, tx)| tx.receiver_count() > 0);
        for (prefix, tx) in by_prefix.iter() {
            for r in records.clone().filter(|r| r.key.starts_with(prefix.as_str())) {
                let _ = tx.send(r.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::origin::Origin;

    fn rec(key: &str) -> Record {
        Record {
            key: key.into(),
            value: Some(bytes::Bytes::from_static(b"v")),
            stamp: spectrum_core::Timestamp::new(1, 0),
            origin: Origin::legacy("n1".parse().unwrap()),
            seq: 1,
            lineage: Default::default(),
        }
    }

    fn keys(rx: &mut broadcast::Receiver<Record>) -> Vec<String> {
        std::iter::from_fn(|| rx.try_recv().ok()).map(|r| r.key).collect()
    }

    #[test]
    fn each_receiver_gets_the_records_under_its_prefix_in_order() {
        let feeds = Feeds::default();
        let mut all = feeds.subscribe();
        let mut users = feeds.subscribe_prefix("users/");
        let mut users_too = feeds.subscribe_prefix("users/");
        let mut ada = feeds.subscribe_prefix("users/ada");
        let batch = [rec("users/bob"), rec("settings/x"), rec("users/ada"), rec("usersx")];
        feeds.publish(batch.iter());
        assert_eq!(keys(&mut all), ["users/bob", "settings/x", "users/ada", "usersx"]);
        assert_eq!(keys(&mut users), ["users/bob", "users/ada"]);
        assert_eq!(keys(&mut users_too), ["users/bob", "users/ada"], "a shared channel");
        assert_eq!(keys(&mut ada), ["users/ada"]);
    }

    #[test]
    fn a_prefix_nobody_receives_any_more_is_dropped() {
        let feeds = Feeds::default();
        let gone = feeds.subscribe_prefix("a/");
        let mut kept = feeds.subscribe_prefix("b/");
        drop(gone);
        feeds.publish([rec("a/1"), rec("b/1")].iter());
        assert_eq!(feeds.by_prefix.lock().len(), 1);
        assert_eq!(keys(&mut kept), ["b/1"]);
        // Subscribing again starts a new channel, from now.
        let mut again = feeds.subscribe_prefix("a/");
        feeds.publish([rec("a/2")].iter());
        assert_eq!(keys(&mut again), ["a/2"]);
    }
}
