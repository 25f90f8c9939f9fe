//! The `jdbc` kind: [`JdbcSpec`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Endpoint;
use super::check::{check_credentials, check_text};
use crate::decode::Object;
use crate::error::DefinitionError;
use crate::jdbc::{InvalidUrl, JdbcUrl};
use crate::secret::Secret;

/// A JDBC connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Value")]
pub struct JdbcSpec {
    /// The `jdbc:` URL (see [`JdbcUrl`] for the accepted forms); it must not hold
    /// credentials.
    pub url: String,
    /// The driver's Java class name (`org.postgresql.Driver`).
    pub driver: String,
    /// The user to connect as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
}

impl JdbcSpec {
    /// A connection without credentials.
    pub fn new(url: impl Into<String>, driver: impl Into<String>) -> Self {
        Self { url: url.into(), driver: driver.into(), user: None, password: None }
    }

    /// The URL parsed into its parts.
    ///
    /// # Errors
    ///
    /// [`InvalidUrl`] when the URL is malformed.
    pub fn parsed_url(&self) -> Result<JdbcUrl, InvalidUrl> {
        JdbcUrl::parse(&self.url)
    }

    /// The host and port to connect to: the URL's port or the subprotocol's usual one.
    ///
    /// # Errors
    ///
    /// [`DefinitionError`] for field `url` when it is malformed or names no port for a
    /// subprotocol without a known usual one.
    pub fn endpoint(&self) -> Result<Endpoint, DefinitionError> {
        let url = self.parsed_url().map_err(|e| DefinitionError::invalid("url", e.reason))?;
        let port = url.effective_port().ok_or_else(|| {
            DefinitionError::invalid(
                "url",
                format!("no port given, and subprotocol {:?} has no known usual port", url.subprotocol),
            )
        })?;
        Ok(Endpoint { host: url.host, port })
    }

    /// Checks every field; errors name fields relative to the spec.
    ///
    /// # Errors
    ///
    /// The first [`DefinitionError`] found.
    pub fn validate(&self) -> Result<(), DefinitionError> {
        check_text("url", &self.url, false)?;
        self.endpoint()?;
        check_text("driver", &self.driver, false)?;
        if let Some(ch) =
            self.driver.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '$')))
        {
            return Err(DefinitionError::invalid(
                "driver",
                format!("holds {ch:?}; expected a Java class name such as org.postgresql.Driver"),
            ));
        }
        check_credentials(self.user.as_deref(), self.password.as_ref())
    }

    /// Takes this kind's fields from its object (the `kind` tag already taken); the
    /// caller validates.
    pub(super) fn decode(obj: &mut Object) -> Result<Self, DefinitionError> {
        Ok(Self {
            url: obj.required("url")?,
            driver: obj.required("driver")?,
            user: obj.optional("user")?,
            password: obj.optional_secret("password")?,
        })
    }
}
decode_via_value!(JdbcSpec);
