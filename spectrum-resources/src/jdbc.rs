//! [`JdbcUrl`]: a `jdbc:` connection URL parsed into its parts.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::net;

/// A `jdbc:` URL was rejected; the reason says which part and why.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{reason}")]
#[non_exhaustive]
pub struct InvalidUrl {
    /// Why the URL was rejected.
    pub reason: String,
}

impl InvalidUrl {
    fn new(reason: impl Into<String>) -> Self {
        Self { reason: reason.into() }
    }
}

impl From<String> for InvalidUrl {
    fn from(reason: String) -> Self {
        Self { reason }
    }
}

/// A JDBC connection URL parsed into its parts.
///
/// Accepted forms:
///
/// - `jdbc:<subprotocol>://host[:port]/database[?name=value&…]` (PostgreSQL, MySQL,
///   MariaDB, DB2, …), with IPv6 hosts in brackets;
/// - `jdbc:sqlserver://host[\instance][:port][;name=value…]` with the database in a
///   `databaseName` (or `database`) property;
/// - `jdbc:oracle:thin:@[//]host[:port]/service` and `jdbc:oracle:thin:@host:port:SID`.
///
/// Credentials never belong in the URL: `user:pass@` and properties such as
/// `password` are refused, so a secret only ever lives in a [`Secret`](crate::Secret).
///
/// ```
/// use spectrum_resources::JdbcUrl;
///
/// let url: JdbcUrl = "jdbc:postgresql://db.example:5433/geo?ssl=true".parse().unwrap();
/// assert_eq!(url.subprotocol, "postgresql");
/// assert_eq!(url.host, "db.example");
/// assert_eq!(url.port, Some(5433));
/// assert_eq!(url.database, "geo");
///
/// let url: JdbcUrl = "jdbc:sqlserver://sql1:1433;databaseName=postal".parse().unwrap();
/// assert_eq!((url.host.as_str(), url.database.as_str()), ("sql1", "postal"));
///
/// assert!("jdbc:postgresql://db:70000/geo".parse::<JdbcUrl>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct JdbcUrl {
    /// The subprotocol naming the driver family: `postgresql`, `mysql`, `sqlserver`,
    /// `oracle:thin`, ….
    pub subprotocol: String,
    /// The database host, IPv6 without brackets.
    pub host: String,
    /// The port, when the URL gives one (see [`JdbcUrl::effective_port`]).
    pub port: Option<u16>,
    /// The database (or Oracle service or SID) name.
    pub database: String,
    /// The remaining connection properties, by name (a SQL Server instance is the
    /// `instanceName` property).
    pub properties: BTreeMap<String, String>,
}

impl JdbcUrl {
    /// Parses a `jdbc:` URL.
    ///
    /// # Errors
    ///
    /// [`InvalidUrl`] naming the part that is missing or malformed.
    pub fn parse(url: &str) -> Result<Self, InvalidUrl> {
        net::check_url_chars(url)?;
        let rest = url.strip_prefix("jdbc:").ok_or_else(|| InvalidUrl::new("must start with \"jdbc:\""))?;
        if let Some(oracle) = rest.strip_prefix("oracle:thin:@") {
            return parse_oracle(oracle);
        }
        let (subprotocol, rest) = rest
            .split_once("://")
            .ok_or_else(|| InvalidUrl::new("expected jdbc:<subprotocol>://host[:port]/database"))?;
        check_subprotocol(subprotocol)?;

        let end = rest.find(['/', ';', '?']).unwrap_or(rest.len());
        let (authority, mut tail) = rest.split_at(end);
        let mut properties = BTreeMap::new();
        let authority = match authority.split_once('\\') {
            Some((host, after)) => {
                let (instance, port) = match after.split_once(':') {
                    Some((instance, port)) => (instance, Some(port)),
                    None => (after, None),
                };
                if instance.is_empty() || !instance.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(InvalidUrl::new(format!("instance name {instance:?} is not valid")));
                }
                properties.insert("instanceName".to_owned(), instance.to_owned());
                match port {
                    Some(port) => format!("{host}:{port}"),
                    None => host.to_owned(),
                }
            }
            None => authority.to_owned(),
        };
        let authority = net::parse_authority(&authority)?;

        let mut database = None;
        if let Some(path) = tail.strip_prefix('/') {
            let end = path.find([';', '?']).unwrap_or(path.len());
            let (db, after) = path.split_at(end);
            if !db.is_empty() {
                database = Some(db.to_owned());
            }
            tail = after;
        }
        if let Some(query) = tail.strip_prefix('?') {
            parse_properties(query, '&', &mut properties)?;
        } else if let Some(props) = tail.strip_prefix(';') {
            parse_properties(props, ';', &mut properties)?;
        }
        let database = match database {
            Some(db) => db,
            None => take_database_property(&mut properties).ok_or_else(|| {
                InvalidUrl::new("database is missing: expected /database or a databaseName property")
            })?,
        };
        check_database(&database)?;
        Ok(Self {
            subprotocol: subprotocol.to_owned(),
            host: authority.host,
            port: authority.port,
            database,
            properties,
        })
    }

    /// The usual port of a subprotocol's server, for the common ones.
    pub fn default_port(subprotocol: &str) -> Option<u16> {
        match subprotocol {
            "postgresql" => Some(5432),
            "mysql" | "mariadb" => Some(3306),
            "sqlserver" => Some(1433),
            "oracle:thin" => Some(1521),
            "db2" => Some(50000),
            "redshift" => Some(5439),
            _ => None,
        }
    }

    /// The port given in the URL, else the subprotocol's usual one.
    pub fn effective_port(&self) -> Option<u16> {
        self.port.or_else(|| Self::default_port(&self.subprotocol))
    }
}

impl FromStr for JdbcUrl {
    type Err = InvalidUrl;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn check_subprotocol(sub: &str) -> Result<(), InvalidUrl> {
    if sub.is_empty() {
        return Err(InvalidUrl::new("subprotocol is missing: expected jdbc:<subprotocol>://…"));
    }
    if let Some(ch) =
        sub.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, ':' | '-' | '.')))
    {
        return Err(InvalidUrl::new(format!("subprotocol {sub:?} holds {ch:?}")));
    }
    Ok(())
}

fn check_database(db: &str) -> Result<(), InvalidUrl> {
    if let Some(ch) = db.chars().find(|c| matches!(c, '/' | '\\' | ';' | '?' | '&' | '=')) {
        return Err(InvalidUrl::new(format!("database name {db:?} holds {ch:?}")));
    }
    Ok(())
}

fn parse_properties(text: &str, sep: char, into: &mut BTreeMap<String, String>) -> Result<(), InvalidUrl> {
    for pair in text.split(sep).filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name.is_empty() {
            return Err(InvalidUrl::new(format!("property {pair:?} has no name")));
        }
        if net::is_credential_name(name) {
            return Err(InvalidUrl::new(format!(
                "property {name:?} holds a credential; put it in the password field"
            )));
        }
        into.insert(name.to_owned(), value.to_owned());
    }
    Ok(())
}

fn take_database_property(props: &mut BTreeMap<String, String>) -> Option<String> {
    let key = props
        .keys()
        .find(|k| k.eq_ignore_ascii_case("databaseName") || k.eq_ignore_ascii_case("database"))?
        .clone();
    props.remove(&key).filter(|v| !v.is_empty())
}

fn parse_oracle(s: &str) -> Result<JdbcUrl, InvalidUrl> {
    let s = s.strip_prefix("//").unwrap_or(s);
    if s.starts_with('(') {
        return Err(InvalidUrl::new("TNS descriptors are not supported; use @//host:port/service"));
    }
    let (s, query) = match s.split_once('?') {
        Some((s, q)) => (s, Some(q)),
        None => (s, None),
    };
    // host[:port](/service | :SID), the host possibly a bracketed IPv6 address.
    let host_end = if s.starts_with('[') {
        s.find(']').map(|i| i + 1).ok_or_else(|| InvalidUrl::new("unclosed '[' in host"))?
    } else {
        s.find([':', '/']).unwrap_or(s.len())
    };
    let (host, mut rest) = s.split_at(host_end);
    let mut authority = host.to_owned();
    if let Some(after) = rest.strip_prefix(':') {
        let end = after.find([':', '/']).unwrap_or(after.len());
        authority.push(':');
        authority.push_str(&after[..end]);
        rest = &after[end..];
    }
    let authority = net::parse_authority(&authority)?;
    let database = rest
        .strip_prefix('/')
        .or_else(|| rest.strip_prefix(':'))
        .filter(|db| !db.is_empty())
        .ok_or_else(|| InvalidUrl::new("service or SID is missing: expected @//host:port/service"))?;
    check_database(database)?;
    let mut properties = BTreeMap::new();
    if let Some(query) = query {
        parse_properties(query, '&', &mut properties)?;
    }
    Ok(JdbcUrl {
        subprotocol: "oracle:thin".to_owned(),
        host: authority.host,
        port: authority.port,
        database: database.to_owned(),
        properties,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> JdbcUrl {
        JdbcUrl::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn the_common_form_yields_subprotocol_host_port_database_and_properties() {
        let url = parse("jdbc:mysql://10.0.0.5:3307/addresses?useSSL=true&x=1");
        assert_eq!(url.subprotocol, "mysql");
        assert_eq!(url.host, "10.0.0.5");
        assert_eq!(url.port, Some(3307));
        assert_eq!(url.database, "addresses");
        assert_eq!(url.properties.get("useSSL").map(String::as_str), Some("true"));
        assert_eq!(url.properties.len(), 2);
    }

    #[test]
    fn a_missing_port_falls_back_to_the_subprotocols_usual_one() {
        let url = parse("jdbc:postgresql://db/geo");
        assert_eq!(url.port, None);
        assert_eq!(url.effective_port(), Some(5432));
        assert_eq!(parse("jdbc:acme://db/x").effective_port(), None);
    }

    #[test]
    fn sql_server_urls_carry_the_database_and_instance_as_properties() {
        let url = parse("jdbc:sqlserver://sql1\\POSTAL:1434;databaseName=us;encrypt=true");
        assert_eq!(url.host, "sql1");
        assert_eq!(url.port, Some(1434));
        assert_eq!(url.database, "us");
        assert_eq!(url.properties.get("instanceName").map(String::as_str), Some("POSTAL"));
        assert!(!url.properties.contains_key("databaseName"));
        assert_eq!(parse("jdbc:sqlserver://sql1;database=x").effective_port(), Some(1433));
    }

    #[test]
    fn ipv6_hosts_are_bracketed_in_the_url_and_bare_in_the_parts() {
        let url = parse("jdbc:postgresql://[::1]:6543/db");
        assert_eq!((url.host.as_str(), url.port), ("::1", Some(6543)));
    }

    #[test]
    fn oracle_thin_urls_accept_service_and_sid_forms() {
        let url = parse("jdbc:oracle:thin:@//ora.example:1522/POSTAL");
        assert_eq!(
            (url.subprotocol.as_str(), url.host.as_str(), url.port, url.database.as_str()),
            ("oracle:thin", "ora.example", Some(1522), "POSTAL")
        );
        let url = parse("jdbc:oracle:thin:@ora:1521:ORCL");
        assert_eq!((url.port, url.database.as_str()), (Some(1521), "ORCL"));
        assert!(JdbcUrl::parse("jdbc:oracle:thin:@(DESCRIPTION=(x))").is_err());
        assert!(JdbcUrl::parse("jdbc:oracle:thin:@ora:1521").is_err());
    }

    #[test]
    fn malformed_urls_are_rejected_with_a_reason() {
        let cases = [
            ("postgresql://db/x", "jdbc:"),
            ("jdbc:postgresql:db", "expected"),
            ("jdbc:://db/x", "subprotocol"),
            ("jdbc:Post gres://db/x", "whitespace"),
            ("jdbc:postgresql://db:0/x", "out of range"),
            ("jdbc:postgresql://db:65536/x", "out of range"),
            ("jdbc:postgresql:///x", "host"),
            ("jdbc:postgresql://db", "database is missing"),
            ("jdbc:postgresql://db/", "database is missing"),
            ("jdbc:postgresql://u:p@db/x", "credentials"),
            ("jdbc:postgresql://db/x?password=p", "credential"),
            ("jdbc:sqlserver://db;Password=p;databaseName=x", "credential"),
            ("jdbc:mysql://a,b/x", "holds"),
        ];
        for (url, expected) in cases {
            let err = JdbcUrl::parse(url).expect_err(url);
            assert!(err.reason.contains(expected), "{url}: {err}");
        }
    }
}
