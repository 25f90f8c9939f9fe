//! [`UserIndex`]: the users of the configuration database by the hash of their
//! token, in memory, kept up to date from the store's change feed.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::RwLock;
use spectrum_replication::{ConfigStore, Record, StoreError};
use tokio::sync::broadcast::{Receiver, error::RecvError};
use tracing::{debug, warn};

use super::{Caller, TokenHash};
use crate::namespace::{Namespace, NamespaceValue, User};

/// How often the index re-reads every user even when the feed said nothing: a
/// safety net for records a store drops without feeding them (tombstones
/// collected while restoring a snapshot).
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(30);

/// What a token hash stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Lookup {
    /// A current user.
    Valid(Caller),
    /// A user whose token was revoked.
    Revoked,
    /// No user.
    Unknown,
}

#[derive(Debug, Default)]
struct Users {
    by_hash: HashMap<TokenHash, (Caller, bool)>,
    by_name: HashMap<String, TokenHash>,
}

impl Users {
    /// The users among `records`.
    fn of(records: &[Record]) -> Self {
        let mut users = Users::default();
        for record in records {
            if let Some(name) = record.key.strip_prefix(Namespace::Users.prefix()) {
                users.set(name, record.value.as_deref());
            }
        }
        users
    }

    fn lookup(&self, hash: &TokenHash) -> Lookup {
        match self.by_hash.get(hash) {
            Some((_, true)) => Lookup::Revoked,
            Some((caller, false)) => Lookup::Valid(caller.clone()),
            None => Lookup::Unknown,
        }
    }

    fn set(&mut self, name: &str, record: Option<&[u8]>) {
        if let Some(old) = self.by_name.remove(name) {
            self.by_hash.remove(&old);
        }
        let Some(bytes) = record else { return };
        match User::decode(bytes) {
            Ok(user) => {
                let caller = Caller { name: name.to_owned(), role: user.role };
                self.by_name.insert(name.to_owned(), user.token_hash);
                self.by_hash.insert(user.token_hash, (caller, user.revoked));
            }
            Err(error) => warn!(user = name, %error, "ignoring unreadable user record"),
        }
    }
}

/// Every user of this node's copy of the configuration database, by the hash of
/// their token: a lookup is one SHA-256 and one map read, with no I/O.
///
/// [`UserIndex::follow`] keeps it current: it reads every user once, then follows
/// the store's change feed ([`ConfigStore::subscribe`]), re-reading everything
/// when the feed lags and every [`RESCAN_INTERVAL`]. A user added or revoked on
/// any node reaches this node's store by replication (at the latest one sync
/// interval later) and this index as soon as it is stored.
#[derive(Debug, Default)]
pub struct UserIndex {
    users: RwLock<Users>,
    /// The store [`follow`](Self::follow) reads, for [`lookup_now`](Self::lookup_now)
    /// and [`is_empty_now`](Self::is_empty_now) (`None` for an index kept by hand).
    store: Option<Weak<dyn ConfigStore>>,
}

impl UserIndex {
    /// An empty index, updated only by [`apply`](Self::apply) and
    /// [`rebuild`](Self::rebuild).
    pub fn new() -> Self {
        Self::default()
    }

    /// An index of `store`'s users, kept up to date by a background task for as
    /// long as both the index and the store exist.
    ///
    /// # Errors
    ///
    /// The store's error when the first read of the users fails.
    pub async fn follow(store: &Arc<dyn ConfigStore>) -> Result<Arc<Self>, StoreError> {
        let index = Arc::new(Self { users: RwLock::default(), store: Some(Arc::downgrade(store)) });
        // Subscribe before reading, so nothing stored in between is missed.
        let feed = store.subscribe_prefix(Namespace::Users.prefix());
        index.rebuild(&store.scan(Namespace::Users.prefix()).await?);
        tokio::spawn(keep_up(Arc::downgrade(&index), Arc::downgrade(store), feed));
        Ok(index)
    }

    /// What the token with hash `hash` stands for.
    pub fn lookup(&self, hash: &TokenHash) -> Lookup {
        self.users.read().lookup(hash)
    }

    /// Whether no user was ever added (a revoked user still counts: revoking the
    /// last user does not open the cluster).
    pub fn is_empty(&self) -> bool {
        self.users.read().by_name.is_empty()
    }

    /// Takes one stored record into account; records outside `users/` are ignored.
    pub fn apply(&self, record: &Record) {
        if let Some(name) = record.key.strip_prefix(Namespace::Users.prefix()) {
            self.users.write().set(name, record.value.as_deref());
        }
    }

    /// What the token with hash `hash`, presented as user `name`'s, stands
    /// for in the store this index follows, read now (rather than as the
    /// change feed brings it): a check that must not run behind the store (a
    /// watch about to deliver an event the store applied after a revocation)
    /// asks this. The index itself is left to its feed (a read written into
    /// it could overwrite a newer record the feed just brought). The index's
    /// answer for an index kept by hand or once the store is gone.
    ///
    /// # Errors
    ///
    /// The store's, when the read fails.
    pub async fn lookup_now(&self, name: &str, hash: &TokenHash) -> Result<Lookup, StoreError> {
        let Some(store) = self.store.as_ref().and_then(Weak::upgrade) else { return Ok(self.lookup(hash)) };
        let record = store.get(&format!("{}{name}", Namespace::Users.prefix())).await?;
        let mut users = Users::default();
        users.set(name, record.as_ref().and_then(|r| r.value.as_deref()));
        Ok(users.lookup(hash))
    }

    /// Whether no user was ever added (as [`is_empty`](Self::is_empty)), read
    /// now from the store this index follows; the index's answer for an index
    /// kept by hand or once the store is gone. The index is left to its feed.
    ///
    /// # Errors
    ///
    /// The store's, when the read fails.
    pub async fn is_empty_now(&self) -> Result<bool, StoreError> {
        let Some(store) = self.store.as_ref().and_then(Weak::upgrade) else { return Ok(self.is_empty()) };
        Ok(Users::of(&store.scan(Namespace::Users.prefix()).await?).by_name.is_empty())
    }

    /// Replaces the whole index with the users among `records`.
    pub fn rebuild(&self, records: &[Record]) {
        *self.users.write() = Users::of(records);
    }
}

/// Follows `feed` into `index` until the index or the store is gone.
async fn keep_up(index: Weak<UserIndex>, store: Weak<dyn ConfigStore>, mut feed: Receiver<Record>) {
    let mut rescan = tokio::time::interval(RESCAN_INTERVAL);
    rescan.tick().await;
    loop {
        let stale = tokio::select! {
            received = feed.recv() => match received {
                Ok(record) => {
                    let Some(index) = index.upgrade() else { return };
                    index.apply(&record);
                    false
                }
                Err(RecvError::Lagged(missed)) => {
                    debug!(missed, "user index fell behind the change feed; re-reading every user");
                    true
                }
                Err(RecvError::Closed) => return,
            },
            _ = rescan.tick() => true,
        };
        if stale {
            let (Some(index), Some(store)) = (index.upgrade(), store.upgrade()) else { return };
            match store.scan(Namespace::Users.prefix()).await {
                Ok(records) => index.rebuild(&records),
                Err(error) => warn!(%error, "could not re-read the users; keeping the index as it is"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use spectrum_core::Hlc;
    use spectrum_replication::{MemoryStore, WriteBatch};

    use super::*;
    use crate::auth::{Role, Token};

    fn user(name: &str, role: Role, token: &Token, revoked: bool) -> String {
        let user = User { name: name.into(), role, token_hash: TokenHash::of(token), created_ms: 1, revoked };
        String::from_utf8(user.encode()).unwrap()
    }

    #[test]
    fn the_index_finds_users_by_token_hash_and_follows_revocation_and_rotation() {
        let index = UserIndex::new();
        assert!(index.is_empty());
        let store = MemoryStore::new("n1".parse().unwrap(), Arc::new(Hlc::system()));
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (old, new) = (Token::generate().unwrap(), Token::generate().unwrap());
        let apply = |value: Option<String>| {
            let batch = match value {
                Some(v) => WriteBatch::new().put("users/alice", v),
                None => WriteBatch::new().delete("users/alice"),
            };
            for r in rt.block_on(store.apply(batch)).unwrap() {
                index.apply(&r);
            }
        };
        apply(Some(user("alice", Role::Operator, &old, false)));
        let alice = Caller { name: "alice".into(), role: Role::Operator };
        assert_eq!(index.lookup(&TokenHash::of(&old)), Lookup::Valid(alice));
        assert_eq!(index.lookup(&TokenHash::of(&new)), Lookup::Unknown);
        apply(Some(user("alice", Role::Operator, &new, false)));
        assert_eq!(index.lookup(&TokenHash::of(&old)), Lookup::Unknown, "a rotated token is gone");
        assert!(matches!(index.lookup(&TokenHash::of(&new)), Lookup::Valid(_)));
        apply(Some(user("alice", Role::Operator, &new, true)));
        assert_eq!(index.lookup(&TokenHash::of(&new)), Lookup::Revoked);
        assert!(!index.is_empty(), "a revoked user keeps the cluster closed");
        apply(None);
        assert_eq!(index.lookup(&TokenHash::of(&new)), Lookup::Unknown);
        assert!(index.is_empty());
    }

    #[tokio::test]
    async fn a_following_index_sees_users_written_after_it_started_and_stops_with_the_store() {
        let store: Arc<dyn ConfigStore> =
            Arc::new(MemoryStore::new("n1".parse().unwrap(), Arc::new(Hlc::system())));
        let token = Token::generate().unwrap();
        store
            .apply(WriteBatch::new().put("users/early", user("early", Role::Viewer, &token, false)))
            .await
            .unwrap();
        let index = UserIndex::follow(&store).await.unwrap();
        assert!(matches!(index.lookup(&TokenHash::of(&token)), Lookup::Valid(c) if c.name == "early"));
        let late = Token::generate().unwrap();
        store
            .apply(WriteBatch::new().put("users/late", user("late", Role::Admin, &late, false)))
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while index.lookup(&TokenHash::of(&late)) == Lookup::Unknown {
            assert!(tokio::time::Instant::now() < deadline, "the feed never reached the index");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let weak = Arc::downgrade(&store);
        drop(store);
        assert!(weak.upgrade().is_none(), "the index does not keep the store alive");
    }
}
