//! Connection settings, independent of any client library.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Everything a client needs to connect to one database.
///
/// `host` is either a host name / address or, when it starts with `/`, the folder holding the
/// server's Unix socket (as libpq, psycopg and tokio-postgres understand it).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionInfo {
    /// Host name, address, or Unix socket folder.
    pub host: String,
    /// TCP port (for a socket folder: the number in the socket's file name).
    pub port: u16,
    /// Role to connect as.
    pub user: String,
    /// Password, when the server asks for one.
    pub password: Option<String>,
    /// Database name.
    pub dbname: String,
}

impl ConnectionInfo {
    /// The same server and role, another database.
    pub fn with_dbname(&self, dbname: impl Into<String>) -> ConnectionInfo {
        ConnectionInfo { dbname: dbname.into(), ..self.clone() }
    }

    /// Whether `host` is a Unix socket folder.
    pub fn is_socket(&self) -> bool {
        self.host.starts_with('/')
    }

    /// A `postgresql://` URL; a socket folder is percent-encoded into the host part, as libpq
    /// and tokio-postgres accept it.
    pub fn url(&self) -> String {
        let auth = match &self.password {
            Some(pw) => format!("{}:{}", encode(&self.user), encode(pw)),
            None => encode(&self.user),
        };
        format!("postgresql://{auth}@{}:{}/{}", encode(&self.host), self.port, encode(&self.dbname))
    }

    /// libpq's `key=value` form, e.g. for `psql "<this>"`.
    pub fn key_value(&self) -> String {
        let quote = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
        let mut s = format!(
            "host={} port={} user={} dbname={}",
            quote(&self.host),
            self.port,
            quote(&self.user),
            quote(&self.dbname)
        );
        if let Some(pw) = &self.password {
            s.push_str(&format!(" password={}", quote(pw)));
        }
        s
    }

    /// Parses `postgresql://user[:password]@host[:port][/dbname]` (also `postgres://`). The
    /// database defaults to `postgres`, the port to 5432.
    pub fn parse_url(url: &str) -> Result<ConnectionInfo> {
        let bad = |reason: &str| Error::BadUrl { url: mask_password(url), reason: reason.to_owned() };
        let rest = url
            .strip_prefix("postgresql://")
            .or_else(|| url.strip_prefix("postgres://"))
            .ok_or_else(|| bad("it must start with postgresql://"))?;
        let rest = rest.split('?').next().unwrap_or_default();
        let (authority, dbname) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = authority.rsplit_once('@').ok_or_else(|| bad("it names no user (user@host)"))?;
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (u, Some(decode(p).map_err(&bad)?)),
            None => (userinfo, None),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => {
                (h, p.parse::<u16>().map_err(|_| bad("the port is not a number"))?)
            }
            _ => (hostport, 5432),
        };
        let host = decode(host.trim_start_matches('[').trim_end_matches(']')).map_err(&bad)?;
        if host.is_empty() || user.is_empty() {
            return Err(bad("host and user are required"));
        }
        let dbname = if dbname.is_empty() { "postgres".to_owned() } else { decode(dbname).map_err(&bad)? };
        Ok(ConnectionInfo { host, port, user: decode(user).map_err(&bad)?, password, dbname })
    }

    pub(crate) fn to_config(&self) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.host).port(self.port).user(&self.user).dbname(&self.dbname);
        if let Some(pw) = &self.password {
            c.password(pw);
        }
        c.connect_timeout(std::time::Duration::from_secs(10));
        c
    }
}

impl std::fmt::Debug for ConnectionInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionInfo")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("dbname", &self.dbname)
            .finish()
    }
}

impl std::fmt::Display for ConnectionInfo {
    /// The URL with the password masked.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&mask_password(&self.url()))
    }
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode(s: &str) -> std::result::Result<String, &'static str> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or("a % escape is cut short")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| "a % escape is not hexadecimal")?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "a % escape is not UTF-8")
}

/// `url` with the password replaced by `***`, for messages.
pub(crate) fn mask_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..].find('/').map_or(url.len(), |i| scheme_end + i);
    match url[scheme_end..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &url[scheme_end..scheme_end + at];
            match userinfo.find(':') {
                Some(colon) => format!("{}:***{}", &url[..scheme_end + colon], &url[scheme_end + at..]),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

/// `ident` quoted as an SQL identifier.
pub(crate) fn ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// `value` quoted as an SQL string literal.
pub(crate) fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_urls_round_trip() {
        let info = ConnectionInfo {
            host: "/dev/shm/testpg-0/runs/x/socket".into(),
            port: 5432,
            user: "postgres".into(),
            password: Some("p@ss:/word".into()),
            dbname: "db_1".into(),
        };
        assert_eq!(ConnectionInfo::parse_url(&info.url()).unwrap(), info);
        assert!(!info.to_string().contains("p@ss"), "{info}");
        assert!(!format!("{info:?}").contains("p@ss"));
    }

    #[test]
    fn urls_default_port_and_database() {
        let info = ConnectionInfo::parse_url("postgres://aiida@localhost").unwrap();
        assert_eq!((info.host.as_str(), info.port, info.dbname.as_str()), ("localhost", 5432, "postgres"));
        assert_eq!(info.password, None);
    }

    #[test]
    fn bad_urls_are_explained_without_the_password() {
        let err = ConnectionInfo::parse_url("mysql://u:secret@h/db").unwrap_err().to_string();
        assert!(err.contains("must start with postgresql://") && !err.contains("secret"), "{err}");
        let err = ConnectionInfo::parse_url("postgresql://u:secret@h:port/db").unwrap_err().to_string();
        assert!(err.contains("port is not a number") && err.contains("u:***@h"), "{err}");
        assert!(ConnectionInfo::parse_url("postgresql://localhost/db").is_err());
    }

    #[test]
    fn quoting() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("it's"), "'it''s'");
    }
}
