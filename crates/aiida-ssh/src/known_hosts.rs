//! OpenSSH's `known_hosts` files, matched as `ssh` matches them: host patterns with `*`, `?` and
//! `!` negation, hashed names (`|1|salt|hash`), `[host]:port` for other ports than 22 (with
//! OpenSSH's fall-back to the port-less entries when a port has none), `@revoked` keys, and any
//! whitespace between fields. `@cert-authority` lines are skipped: host certificates are not
//! taken.

use std::path::{Path, PathBuf};

use hmac::{Hmac, KeyInit, Mac};
use russh::keys::PublicKey;

/// What the known_hosts files say of a host's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A line lists this key for the host.
    Known,
    /// Lines list the host with another key of the same type (and none with this key): the first.
    Changed {
        /// The file.
        file: PathBuf,
        /// The line (from 1).
        line: usize,
    },
    /// The key is revoked (`@revoked`).
    Revoked {
        /// The file.
        file: PathBuf,
        /// The line (from 1).
        line: usize,
    },
    /// No line lists the host with a key of this type.
    Unknown,
}

/// The name a host is listed under: `host`, or `[host]:port` for another port than 22.
pub(crate) fn listed_name(host: &str, port: u16) -> String {
    if port == 22 { host.to_owned() } else { format!("[{host}]:{port}") }
}

/// What `files` (missing ones are empty) say of `key` for `host` on `port`.
pub(crate) fn check(files: &[PathBuf], host: &str, port: u16, key: &PublicKey) -> Verdict {
    let lines: Vec<(PathBuf, usize, String)> = files
        .iter()
        .flat_map(|file| {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            text.lines().enumerate().map(|(i, line)| (file.clone(), i + 1, line.to_owned())).collect::<Vec<_>>()
        })
        .collect();
    let with_port = check_name(&lines, &listed_name(host, port), key);
    match with_port {
        // No entry at all for `[host]:port`: ssh then takes the host's own entries.
        (Verdict::Unknown, false) if port != 22 => check_name(&lines, host, key).0,
        (verdict, _) => verdict,
    }
}

/// The verdict for `name`, and whether any line lists `name` (with a key of any type).
fn check_name(lines: &[(PathBuf, usize, String)], name: &str, key: &PublicKey) -> (Verdict, bool) {
    let (mut known, mut changed, mut listed) = (false, None, false);
    for (file, number, line) in lines {
        let Some(entry) = Entry::parse(line) else { continue };
        if entry.marker == Some("@revoked") {
            if entry.key.key_data() == key.key_data() {
                return (Verdict::Revoked { file: file.clone(), line: *number }, true);
            }
            continue;
        }
        if entry.marker.is_some() || !hosts_match(entry.hosts, name) {
            continue;
        }
        listed = true;
        if entry.key.key_data() == key.key_data() {
            known = true;
        } else if entry.key.algorithm() == key.algorithm() && changed.is_none() {
            changed = Some((file.clone(), *number));
        }
    }
    let verdict = match (known, changed) {
        (true, _) => Verdict::Known,
        (false, Some((file, line))) => Verdict::Changed { file, line },
        (false, None) => Verdict::Unknown,
    };
    (verdict, listed)
}

/// One line: `[@marker] hosts key-type base64 [comment]`.
struct Entry<'a> {
    marker: Option<&'a str>,
    hosts: &'a str,
    key: PublicKey,
}

impl<'a> Entry<'a> {
    fn parse(line: &'a str) -> Option<Entry<'a>> {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let mut fields = line.split_whitespace();
        let first = fields.next()?;
        let (marker, hosts) = if first.starts_with('@') { (Some(first), fields.next()?) } else { (None, first) };
        let (kind, data) = (fields.next()?, fields.next()?);
        let key = PublicKey::from_openssh(&format!("{kind} {data}")).ok()?;
        Some(Entry { marker, hosts, key })
    }
}

/// Whether the comma-separated `patterns` of a line take `name`: one positive pattern matches and
/// no negated one does.
fn hosts_match(patterns: &str, name: &str) -> bool {
    let mut matched = false;
    for pattern in patterns.split(',') {
        if let Some(hashed) = pattern.strip_prefix("|1|") {
            matched |= hashed_match(hashed, name);
        } else if let Some(negated) = pattern.strip_prefix('!') {
            if wildcard_match(&negated.to_lowercase(), &name.to_lowercase()) {
                return false;
            }
        } else {
            matched |= wildcard_match(&pattern.to_lowercase(), &name.to_lowercase());
        }
    }
    matched
}

/// `salt|hash` (base64) against `name`: HMAC-SHA1 keyed with the salt.
fn hashed_match(hashed: &str, name: &str) -> bool {
    let Some((salt, hash)) = hashed.split_once('|') else { return false };
    let (Ok(salt), Ok(hash)) =
        (data_encoding::BASE64.decode(salt.as_bytes()), data_encoding::BASE64.decode(hash.as_bytes()))
    else {
        return false;
    };
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(&salt) else { return false };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// OpenSSH's `match_pattern`: `*` any run, `?` any one character, everything else itself.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let (pattern, name): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut p, mut n, mut star) = (0, 0, None);
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == '?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

/// The known_hosts files `ssh` reads for a user whose home is `home`, unless its configuration
/// names others: `~/.ssh/known_hosts`, `~/.ssh/known_hosts2`, `/etc/ssh/ssh_known_hosts`,
/// `/etc/ssh/ssh_known_hosts2`.
pub(crate) fn default_files(home: &Path) -> Vec<PathBuf> {
    vec![
        home.join(".ssh/known_hosts"),
        home.join(".ssh/known_hosts2"),
        PathBuf::from("/etc/ssh/ssh_known_hosts"),
        PathBuf::from("/etc/ssh/ssh_known_hosts2"),
    ]
}

#[cfg(test)]
#[allow(non_snake_case)]
mod tests {
    use super::*;

    /// Two ed25519 public keys, as OpenSSH lines.
    static KEYS: std::sync::LazyLock<[String; 2]> = std::sync::LazyLock::new(|| {
        let key = || {
            let key = russh::keys::PrivateKey::random(&mut rand::rng(), russh::keys::Algorithm::Ed25519).unwrap();
            key.public_key().to_openssh().unwrap()
        };
        [key(), key()]
    });

    fn key(line: &str) -> PublicKey {
        PublicKey::from_openssh(line).unwrap()
    }

    fn verdict(content: &str, host: &str, port: u16, line: &str) -> Verdict {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        std::fs::write(&file, content).unwrap();
        match check(std::slice::from_ref(&file), host, port, &key(line)) {
            Verdict::Changed { line, .. } => Verdict::Changed { file: PathBuf::new(), line },
            Verdict::Revoked { line, .. } => Verdict::Revoked { file: PathBuf::new(), line },
            other => other,
        }
    }

    fn changed(line: usize) -> Verdict {
        Verdict::Changed { file: PathBuf::new(), line }
    }

    #[test]
    fn hosts_and_ports_match_as_openssh_reads_them() {
        let [ED1, ED2] = [KEYS[0].as_str(), KEYS[1].as_str()];
        assert_eq!(verdict(&format!("[127.0.0.1]:2222 {ED1}\n"), "127.0.0.1", 2222, ED1), Verdict::Known);
        assert_eq!(verdict(&format!("[127.0.0.1]:2222 {ED2}\n"), "127.0.0.1", 2222, ED1), changed(1));
        assert_eq!(verdict(&format!("127.0.0.1\t{ED1} a comment\n"), "127.0.0.1", 2222, ED1), Verdict::Known);
        assert_eq!(
            verdict(&format!("127.0.0.1 {ED1}\n[127.0.0.1]:2222 {ED2}\n"), "127.0.0.1", 2222, ED1),
            changed(2),
            "the port's own entry wins over the port-less one"
        );
        assert_eq!(verdict(&format!("# c\n\nhost.example.org {ED1}\n"), "other.org", 22, ED1), Verdict::Unknown);
        assert_eq!(
            verdict(&format!("*.example.org,!bad.example.org {ED1}\n"), "a.EXAMPLE.org", 22, ED1),
            Verdict::Known
        );
        assert_eq!(
            verdict(&format!("*.example.org,!bad.example.org {ED1}\n"), "bad.example.org", 22, ED1),
            Verdict::Unknown
        );
        assert_eq!(verdict(&format!("node?? {ED1}\n"), "node01", 22, ED1), Verdict::Known);
        assert_eq!(verdict(&format!("a,b,c {ED2}\nb {ED1}\n"), "b", 22, ED1), Verdict::Known, "any line with the key");
        assert_eq!(verdict("", "b", 22, ED1), Verdict::Unknown);
        assert_eq!(
            verdict(&format!("b ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ\nb {ED1}\n"), "b", 22, ED1),
            Verdict::Known,
            "a line that does not parse is skipped"
        );
    }

    #[test]
    fn hashed_names_revoked_keys_and_authorities() {
        let ED1 = KEYS[0].as_str();
        // `ssh-keygen -H` of `[127.0.0.1]:2222`, salt and hash as it prints them.
        let salt = data_encoding::BASE64.encode(b"0123456789abcdefghij");
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(b"0123456789abcdefghij").unwrap();
        mac.update(b"[127.0.0.1]:2222");
        let hash = data_encoding::BASE64.encode(&mac.finalize().into_bytes());
        let hashed = format!("|1|{salt}|{hash} {ED1}\n");
        assert_eq!(verdict(&hashed, "127.0.0.1", 2222, ED1), Verdict::Known);
        assert_eq!(verdict(&hashed, "127.0.0.1", 2223, ED1), Verdict::Unknown);
        assert_eq!(
            verdict(&format!("host {ED1}\n@revoked * {ED1}\n"), "host", 22, ED1),
            Verdict::Revoked { file: PathBuf::new(), line: 2 }
        );
        assert_eq!(verdict(&format!("@cert-authority * {ED1}\n"), "host", 22, ED1), Verdict::Unknown);
    }

    #[test]
    fn wildcards_are_openssh_s() {
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("a*c", "abbbc"));
        assert!(!wildcard_match("a*c", "abcd"));
        assert!(wildcard_match("[h]:2?", "[h]:22"), "brackets are themselves");
        assert!(!wildcard_match("?", ""));
    }
}
