//! The `file_server` kind: [`FileServerSpec`] and its [`FileProtocol`].

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Endpoint;
use super::check::{check_credentials, check_path, check_text};
use crate::decode::Object;
use crate::error::DefinitionError;
use crate::net;
use crate::secret::Secret;

/// How a file server is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FileProtocol {
    /// A directory on each node (no host, no port).
    Local,
    /// FTP.
    Ftp,
    /// SFTP (SSH).
    Sftp,
    /// SMB (Windows file sharing).
    Smb,
    /// HTTP.
    Http,
    /// HTTPS.
    Https,
}

impl FileProtocol {
    /// The protocol's usual port (`None` for [`FileProtocol::Local`]).
    pub fn default_port(self) -> Option<u16> {
        match self {
            Self::Local => None,
            Self::Ftp => Some(21),
            Self::Sftp => Some(22),
            Self::Smb => Some(445),
            Self::Http => Some(80),
            Self::Https => Some(443),
        }
    }

    /// The protocol's name as encoded.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Ftp => "ftp",
            Self::Sftp => "sftp",
            Self::Smb => "smb",
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

impl fmt::Display for FileProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A file server.
///
/// A [`FileProtocol::Local`] server has no host or port and an absolute `root` path
/// on each node; the others need a host, and use the protocol's usual port unless one
/// is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Value")]
pub struct FileServerSpec {
    /// How the server is reached.
    pub protocol: FileProtocol,
    /// The server's host (empty for a local server).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub host: String,
    /// The server's port, when not the protocol's usual one: 1 to 65535.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The root directory (or share) on the server; an absolute path for a local one.
    pub root: String,
    /// The user to connect as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
}

impl FileServerSpec {
    /// A local file server rooted at an absolute path on each node.
    pub fn local(root: impl Into<String>) -> Self {
        Self {
            protocol: FileProtocol::Local,
            host: String::new(),
            port: None,
            root: root.into(),
            user: None,
            password: None,
        }
    }

    /// A remote file server on the protocol's usual port, without credentials.
    pub fn remote(protocol: FileProtocol, host: impl Into<String>, root: impl Into<String>) -> Self {
        Self { protocol, host: host.into(), port: None, root: root.into(), user: None, password: None }
    }

    /// The host and port to connect to (`None` for a local server).
    pub fn endpoint(&self) -> Option<Endpoint> {
        let port = self.port.or(self.protocol.default_port())?;
        Some(Endpoint { host: self.host.clone(), port })
    }

    /// Checks every field; errors name fields relative to the spec.
    ///
    /// # Errors
    ///
    /// The first [`DefinitionError`] found.
    pub fn validate(&self) -> Result<(), DefinitionError> {
        if self.protocol == FileProtocol::Local {
            if !self.host.is_empty() {
                return Err(DefinitionError::invalid("host", "a local file server has no host"));
            }
            if self.port.is_some() {
                return Err(DefinitionError::invalid("port", "a local file server has no port"));
            }
            check_path("root", Path::new(&self.root))?;
        } else {
            check_text("host", &self.host, false)?;
            net::validate_host(&self.host).map_err(|r| DefinitionError::invalid("host", r))?;
            if self.port == Some(0) {
                return Err(DefinitionError::invalid("port", "port 0 is out of range 1-65535"));
            }
            check_text("root", &self.root, false)?;
        }
        check_credentials(self.user.as_deref(), self.password.as_ref())
    }

    /// Takes this kind's fields from its object (the `kind` tag already taken); the
    /// caller validates.
    pub(super) fn decode(obj: &mut Object) -> Result<Self, DefinitionError> {
        let port = obj
            .optional::<u64>("port")?
            .map(|p| net::check_port(p).map_err(|r| DefinitionError::invalid("port", r)))
            .transpose()?;
        Ok(Self {
            protocol: obj.required("protocol")?,
            host: obj.optional("host")?.unwrap_or_default(),
            port,
            root: obj.required("root")?,
            user: obj.optional("user")?,
            password: obj.optional_secret("password")?,
        })
    }
}
decode_via_value!(FileServerSpec);
