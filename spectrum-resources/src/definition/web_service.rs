//! The `web_service` kind: [`WebServiceSpec`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Endpoint;
use super::check::{check_credentials, check_text};
use crate::decode::Object;
use crate::error::DefinitionError;
use crate::net;
use crate::secret::Secret;

/// The web service timeout used when a definition gives none, in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// The longest web service timeout accepted, in milliseconds (one hour).
pub const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// A web service reached over HTTP or HTTPS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Value")]
pub struct WebServiceSpec {
    /// The service's `http://` or `https://` URL; it must not hold credentials.
    pub url: String,
    /// How long a call may take, in milliseconds: 1 to [`MAX_TIMEOUT_MS`]
    /// ([`DEFAULT_TIMEOUT_MS`] when not given).
    pub timeout_ms: u64,
    /// The user to authenticate as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The password (or key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
}

impl WebServiceSpec {
    /// A web service with the default timeout, without credentials.
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), timeout_ms: DEFAULT_TIMEOUT_MS, user: None, password: None }
    }

    /// The host and port to connect to: the URL's port or the scheme's usual one.
    ///
    /// # Errors
    ///
    /// [`DefinitionError`] for field `url` when it is malformed.
    pub fn endpoint(&self) -> Result<Endpoint, DefinitionError> {
        let url = net::parse_http_url(&self.url).map_err(|r| DefinitionError::invalid("url", r))?;
        Ok(Endpoint { host: url.host, port: url.port })
    }

    /// Checks every field; errors name fields relative to the spec.
    ///
    /// # Errors
    ///
    /// The first [`DefinitionError`] found.
    pub fn validate(&self) -> Result<(), DefinitionError> {
        check_text("url", &self.url, false)?;
        self.endpoint()?;
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            return Err(DefinitionError::invalid(
                "timeout_ms",
                format!("{} is out of range 1-{MAX_TIMEOUT_MS}", self.timeout_ms),
            ));
        }
        check_credentials(self.user.as_deref(), self.password.as_ref())
    }

    /// Takes this kind's fields from its object (the `kind` tag already taken); the
    /// caller validates.
    pub(super) fn decode(obj: &mut Object) -> Result<Self, DefinitionError> {
        Ok(Self {
            url: obj.required("url")?,
            timeout_ms: obj.optional("timeout_ms")?.unwrap_or(DEFAULT_TIMEOUT_MS),
            user: obj.optional("user")?,
            password: obj.optional_secret("password")?,
        })
    }
}
decode_via_value!(WebServiceSpec);
