//! Who may call the management API, on both sides of a call.
//!
//! - [`Token`]: a validated bearer token that never prints;
//!   [`Token::generate`] makes a user token, and [`TokenHash`] is all the
//!   configuration database keeps of it (`token.rs`, `hash.rs`).
//! - [`Role`] and [`Caller`]: what a caller may do, and who it is (`role.rs`).
//! - [`UserIndex`]: the `users/` namespace in memory, by token hash, following the
//!   store's change feed (`index.rs`).
//! - [`BearerAuth`]: the node's check of every call, which resolves the bearer
//!   token to a [`Caller`] (`bearer.rs`); [`TokenInterceptor`]: the client's
//!   insertion of the header (`token.rs`).
//!
//! A missing, unknown or revoked token is `UNAUTHENTICATED`; a role too low for
//! the call is `PERMISSION_DENIED` naming the role needed (decided by the
//! [`management`](crate::management) service, which knows its calls).

mod bearer;
mod hash;
mod index;
mod role;
mod token;

pub use bearer::{BearerAuth, Credential};
pub(crate) use bearer::{bearer_token, until_invalid};
pub use hash::{InvalidTokenHash, TokenHash};
pub use index::{Lookup, RESCAN_INTERVAL, UserIndex};
pub use role::{Caller, Role, UnknownRole};
pub use token::{InvalidToken, MAX_TOKEN_LEN, NoRandomness, Token, TokenInterceptor, USER_TOKEN_PREFIX};
