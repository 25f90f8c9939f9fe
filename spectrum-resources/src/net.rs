//! Small, strict parsers for the network parts of definitions: hosts, ports,
//! `host[:port]` authorities and `http(s)://` URLs. Each returns the reason a value is
//! rejected; callers add the field name.

use std::net::Ipv6Addr;

/// Longest host name accepted, in bytes (the DNS limit).
pub(crate) const MAX_HOST_LEN: usize = 253;

/// Query or property names that hold credentials: refused inside URLs so a secret
/// never travels outside a [`Secret`](crate::Secret) field.
const CREDENTIAL_NAMES: &[&str] =
    &["password", "passwd", "pwd", "secret", "token", "apikey", "api_key", "access_token"];

/// A parsed `host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Authority {
    /// The host name or IP address, IPv6 without brackets.
    pub(crate) host: String,
    /// The port, when one was given.
    pub(crate) port: Option<u16>,
}

/// A parsed `http://` or `https://` URL, reduced to what a resolver needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpUrl {
    /// The host, IPv6 without brackets.
    pub(crate) host: String,
    /// The port given or the scheme's default (80, 443).
    pub(crate) port: u16,
}

/// Checks a host name or IP address (IPv6 without brackets).
pub(crate) fn validate_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("host must not be empty".into());
    }
    if host.len() > MAX_HOST_LEN {
        return Err(format!("host is {} bytes long; at most {MAX_HOST_LEN} are allowed", host.len()));
    }
    if host.parse::<Ipv6Addr>().is_ok() {
        return Ok(());
    }
    for label in host.split('.') {
        if label.is_empty() {
            return Err(format!("host {host:?} has an empty label"));
        }
        if let Some(ch) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))) {
            return Err(format!(
                "host {host:?} holds {ch:?}; only ASCII letters, digits, '.', '-' and '_' are allowed"
            ));
        }
    }
    Ok(())
}

/// Checks that a port number is in `1..=65535`.
pub(crate) fn check_port(port: u64) -> Result<u16, String> {
    match u16::try_from(port) {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(format!("port {port} is out of range 1-65535")),
    }
}

/// Parses the decimal digits of a port.
pub(crate) fn parse_port(digits: &str) -> Result<u16, String> {
    if digits.is_empty() {
        return Err("port is empty".into());
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port {digits:?} is not a number"));
    }
    match digits.parse::<u64>() {
        Ok(n) => check_port(n),
        Err(_) => Err(format!("port {digits} is out of range 1-65535")),
    }
}

/// Parses `host[:port]`, with IPv6 hosts in brackets (`[::1]:5432`).
pub(crate) fn parse_authority(s: &str) -> Result<Authority, String> {
    if s.contains('@') {
        return Err("credentials must not be part of the URL; use the user and password fields".into());
    }
    if s.is_empty() {
        return Err("host is missing".into());
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (inside, after) = rest.split_once(']').ok_or("unclosed '[' in host")?;
        if inside.parse::<Ipv6Addr>().is_err() {
            return Err(format!("{inside:?} is not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or("unexpected text after ']'")?),
        };
        (inside, port)
    } else {
        match s.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (s, None),
        }
    };
    validate_host(host)?;
    let port = port.map(parse_port).transpose()?;
    Ok(Authority { host: host.to_owned(), port })
}

/// Whether a query or property name looks like it holds a credential.
pub(crate) fn is_credential_name(name: &str) -> bool {
    CREDENTIAL_NAMES.iter().any(|c| c.eq_ignore_ascii_case(name.trim()))
}

/// Rejects whitespace and control characters, which no URL here may hold.
pub(crate) fn check_url_chars(url: &str) -> Result<(), String> {
    match url.chars().find(|c| c.is_whitespace() || c.is_control()) {
        Some(ch) => Err(format!("URL holds {ch:?}; whitespace and control characters are not allowed")),
        None => Ok(()),
    }
}

/// Parses an `http://` or `https://` URL.
pub(crate) fn parse_http_url(url: &str) -> Result<HttpUrl, String> {
    check_url_chars(url)?;
    let (scheme, rest) = url.split_once("://").ok_or("expected http://host[:port]/path")?;
    let default_port = if scheme.eq_ignore_ascii_case("http") {
        80
    } else if scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        return Err(format!("scheme {scheme:?} is not supported; use http or https"));
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = parse_authority(authority)?;
    if let Some((_, query)) = tail.split_once('?') {
        let query = query.split('#').next().unwrap_or("");
        for pair in query.split('&') {
            let name = pair.split('=').next().unwrap_or("");
            if is_credential_name(name) {
                return Err(format!(
                    "query parameter {name:?} looks like a credential; put it in the password field"
                ));
            }
        }
    }
    Ok(HttpUrl { host: authority.host, port: authority.port.unwrap_or(default_port) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_parse_hosts_ports_and_bracketed_ipv6() {
        assert_eq!(
            parse_authority("db.example:5432").unwrap(),
            Authority { host: "db.example".into(), port: Some(5432) }
        );
        assert_eq!(parse_authority("db").unwrap(), Authority { host: "db".into(), port: None });
        assert_eq!(parse_authority("[::1]:80").unwrap(), Authority { host: "::1".into(), port: Some(80) });
        assert_eq!(parse_authority("[::1]").unwrap(), Authority { host: "::1".into(), port: None });
    }

    #[test]
    fn authorities_reject_bad_ports_hosts_and_credentials() {
        assert!(parse_authority("h:0").unwrap_err().contains("out of range"));
        assert!(parse_authority("h:65536").unwrap_err().contains("out of range"));
        assert!(parse_authority("h:99999999999999999999").unwrap_err().contains("out of range"));
        assert!(parse_authority("h:").unwrap_err().contains("empty"));
        assert!(parse_authority("h:x").unwrap_err().contains("not a number"));
        assert!(parse_authority("u:p@h").unwrap_err().contains("credentials"));
        assert!(parse_authority("a..b").is_err());
        assert!(parse_authority("[zz]").is_err());
        assert!(parse_authority("").is_err());
        assert!(parse_authority("h st").is_err());
    }

    #[test]
    fn http_urls_default_their_port_and_refuse_credentials_in_the_query() {
        assert_eq!(parse_http_url("http://a/x").unwrap(), HttpUrl { host: "a".into(), port: 80 });
        assert_eq!(parse_http_url("HTTPS://a:8443").unwrap(), HttpUrl { host: "a".into(), port: 8443 });
        assert!(parse_http_url("ftp://a").is_err());
        assert!(parse_http_url("http://a/x?token=1").unwrap_err().contains("credential"));
        assert!(parse_http_url("http://a/x y").is_err());
        assert!(parse_http_url("a/x").is_err());
    }
}
