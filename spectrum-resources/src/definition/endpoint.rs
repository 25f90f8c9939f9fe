//! [`Endpoint`]: the host and port a networked resource is reached at.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A host and port to connect to, without credentials.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    /// The host name or IP address (IPv6 without brackets).
    pub host: String,
    /// The port.
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::{FileProtocol, FileServerSpec, WebServiceSpec};

    #[test]
    fn endpoints_use_the_given_port_or_the_usual_one() {
        let ftp = FileServerSpec::remote(FileProtocol::Ftp, "files", "/pub");
        assert_eq!(ftp.endpoint(), Some(Endpoint { host: "files".into(), port: 21 }));
        assert_eq!(FileServerSpec::local("/srv").endpoint(), None);
        let web = WebServiceSpec::new("https://[::1]/api");
        assert_eq!(web.endpoint().unwrap().to_string(), "[::1]:443");
    }
}
