//! The names of a run's databases, which are the whole state of its pool, and of the channel its
//! keeper listens on.
//!
//! Every database of a run is named `<prefix><kind>_<key hash>...`: `t_<h>` a finished template,
//! `b_<h>` a template being built, `p_<h>_<n>` a pooled clone, `c_<h>_<pid>_<n>` a clone claimed
//! by process `pid`. A claim renames a pooled clone, which only one process can win.

use crate::conn::{ident, literal};

/// The channel the keeper listens on.
pub(crate) const CHANNEL: &str = "testpg_keeper";

/// The comment that marks a template to be kept in the cache between runs.
pub(crate) const CACHED_COMMENT: &str = "testpg: cached between runs";

/// A database name's meaning.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Kind<'a> {
    Template(&'a str),
    Building(&'a str),
    Pooled(&'a str),
    Claimed { hash: &'a str, pid: u32 },
}

pub(crate) fn template_name(prefix: &str, hash: &str) -> String {
    format!("{prefix}t_{hash}")
}

pub(crate) fn pooled_name(prefix: &str, hash: &str) -> String {
    format!("{prefix}p_{hash}_{}", crate::os::random_hex(4))
}

pub(crate) fn claimed_name(prefix: &str, hash: &str) -> String {
    claimed_name_for(prefix, hash, std::process::id())
}

/// The name of a clone of template `hash` claimed by process `pid`.
pub(crate) fn claimed_name_for(prefix: &str, hash: &str, pid: u32) -> String {
    format!("{prefix}c_{hash}_{pid}_{}", crate::os::random_hex(4))
}

/// What `name` is, if it is one of ours.
pub(crate) fn kind<'a>(prefix: &str, name: &'a str) -> Option<Kind<'a>> {
    let rest = name.strip_prefix(prefix)?;
    let (tag, rest) = rest.split_once('_')?;
    let hash = rest.split('_').next()?;
    match tag {
        "t" => Some(Kind::Template(hash)),
        "b" => Some(Kind::Building(hash)),
        "p" => Some(Kind::Pooled(hash)),
        "c" => Some(Kind::Claimed { hash, pid: rest.split('_').nth(1)?.parse().ok()? }),
        _ => None,
    }
}

/// A `LIKE` pattern matching names that start with `start`.
pub(crate) fn like_prefix(start: &str) -> String {
    let escaped = start.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    literal(&format!("{escaped}%"))
}

/// `DROP DATABASE` of `name`, closing its sessions first where the server can (PostgreSQL 13+).
pub(crate) fn drop_sql(name: &str, version_num: u32) -> String {
    let force = if version_num >= 130000 { " WITH (FORCE)" } else { "" };
    format!("DROP DATABASE IF EXISTS {}{force}", ident(name))
}

/// `STRATEGY FILE_COPY` where the server has it (PostgreSQL 15+): much faster for small databases.
pub(crate) fn clone_sql(name: &str, template: &str, version_num: u32) -> String {
    let strategy = if version_num >= 150000 { " STRATEGY FILE_COPY" } else { "" };
    format!("CREATE DATABASE {} TEMPLATE {}{strategy}", ident(name), ident(template))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::Template;

    #[test]
    fn names_say_what_they_are() {
        let p = "testpg_";
        assert_eq!(kind(p, &template_name(p, "abc")), Some(Kind::Template("abc")));
        assert_eq!(kind(p, &pooled_name(p, "abc")), Some(Kind::Pooled("abc")));
        assert_eq!(kind(p, &claimed_name(p, "abc")), Some(Kind::Claimed { hash: "abc", pid: std::process::id() }));
        assert_eq!(kind(p, "testpg_b_abc"), Some(Kind::Building("abc")));
        assert_eq!(kind(p, "postgres"), None);
        assert_eq!(kind("testpg_1a2b3c_", "testpg_t_abc"), None);
        assert!(claimed_name("testpg_1a2b3c_", &Template::empty().hash()).len() <= 63);
    }

    #[test]
    fn like_patterns_escape_underscores() {
        assert_eq!(like_prefix("testpg_p_"), "'testpg\\_p\\_%'");
    }
}
