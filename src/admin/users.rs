//! Users of the management API: add, list, revoke, rotate.

use bytes::Bytes;
use spectrum_replication::{AckLevel, Record, VersionToken, WriteBatch};
use tracing::info;

use super::{Admin, AdminError, now_ms};
use crate::auth::{Caller, Role, Token, TokenHash};
use crate::model::{ReadAfter, UserInfo, UserRevoked, UserToken, Users};
use crate::namespace::{self, Namespace, NamespaceValue, User};

impl Admin {
    /// Adds the user `name` with `role` and a new random token, which the answer
    /// carries in clear: the only time it is ever shown. The store keeps its hash.
    ///
    /// # Errors
    ///
    /// [`AdminError::Key`] for a bad name; [`AdminError::InvalidArgument`] for a
    /// reserved one (`bootstrap`, `anonymous`); [`AdminError::UserExists`] when
    /// the name is taken, even by a revoked user; the write's own errors.
    pub async fn add_user(&self, name: &str, role: Role, ack: AckLevel) -> Result<UserToken, AdminError> {
        namespace::validate_name(Namespace::Users, name)?;
        if Caller::is_reserved(name) {
            return Err(AdminError::InvalidArgument(format!("the user name {name:?} is reserved")));
        }
        if let Some(record) = self.live(&Namespace::Users.key(name)).await? {
            let revoked = decode(&record).is_ok_and(|user: User| user.revoked);
            return Err(AdminError::UserExists { name: name.to_owned(), revoked });
        }
        let token = new_token()?;
        let user = User {
            name: name.to_owned(),
            role,
            token_hash: TokenHash::of(&token),
            created_ms: now_ms(),
            revoked: false,
        };
        let write = self.write(store(&user), ack).await?;
        info!(user = name, %role, version = %write.version, "user added");
        Ok(UserToken { user: info(&user, write.version.clone()), token, write })
    }

    /// Every user (revoked ones included), once this node holds `after`.
    ///
    /// # Errors
    ///
    /// [`AdminError::NotCaughtUp`]; [`AdminError::StoredInvalid`] for a record that
    /// no longer decodes.
    pub async fn users(&self, after: &ReadAfter) -> Result<Users, AdminError> {
        self.wait_for(after).await?;
        let records = self.ctx.store.scan(Namespace::Users.prefix()).await?;
        let users = records
            .iter()
            .filter(|r| !r.is_tombstone())
            .map(|r| decode(r).map(|user| info(&user, r.token())))
            .collect::<Result<_, _>>()?;
        Ok(Users(users))
    }

    /// Revokes the token of user `name`: every node refuses it once the write
    /// reaches it (at the latest one sync interval later). The user stays listed
    /// as revoked, and the name is not given out again.
    ///
    /// # Errors
    ///
    /// [`AdminError::NotFound`]; the write's own errors.
    pub async fn revoke_user(&self, name: &str, ack: AckLevel) -> Result<UserRevoked, AdminError> {
        let mut user = self.user(name).await?;
        user.revoked = true;
        let write = self.write(store(&user), ack).await?;
        info!(user = name, version = %write.version, "user revoked");
        Ok(UserRevoked { user: info(&user, write.version.clone()), write })
    }

    /// Gives user `name` a new token and retires the old one; the answer carries
    /// the new token in clear, once.
    ///
    /// # Errors
    ///
    /// [`AdminError::NotFound`]; [`AdminError::UserRevoked`] for a revoked user;
    /// the write's own errors.
    pub async fn rotate_user(&self, name: &str, ack: AckLevel) -> Result<UserToken, AdminError> {
        let mut user = self.user(name).await?;
        if user.revoked {
            return Err(AdminError::UserRevoked { name: name.to_owned() });
        }
        let token = new_token()?;
        user.token_hash = TokenHash::of(&token);
        let write = self.write(store(&user), ack).await?;
        info!(user = name, version = %write.version, "user token rotated");
        Ok(UserToken { user: info(&user, write.version.clone()), token, write })
    }

    /// The stored user `name`.
    async fn user(&self, name: &str) -> Result<User, AdminError> {
        namespace::validate_name(Namespace::Users, name)?;
        let record = self
            .live(&Namespace::Users.key(name))
            .await?
            .ok_or_else(|| AdminError::not_found(format!("no user {name:?}")))?;
        decode(&record)
    }
}

fn new_token() -> Result<Token, AdminError> {
    Token::generate().map_err(|e| AdminError::Internal { reason: e.to_string() })
}

fn store(user: &User) -> WriteBatch {
    WriteBatch::new().put(Namespace::Users.key(&user.name), Bytes::from(user.encode()))
}

fn decode(record: &Record) -> Result<User, AdminError> {
    User::decode(record.value.as_deref().unwrap_or_default())
        .map_err(|e| AdminError::StoredInvalid { what: format!("record {}", record.key), reason: e.reason })
}

fn info(user: &User, version: VersionToken) -> UserInfo {
    UserInfo {
        name: user.name.clone(),
        role: user.role,
        created_ms: user.created_ms,
        revoked: user.revoked,
        version,
    }
}
