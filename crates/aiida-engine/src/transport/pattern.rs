//! Paths as aiida's transports read them, for every transport. Glob patterns as Python's
//! `glob.glob` and `fnmatch` read them (what aiida's transports use): `*`, `?` and `[...]` (`[!...]` negated, `a-z` ranges) within one path component, no escapes;
//! a `[` without its `]` is a plain character. A name starting with `.` matches only a pattern
//! component that starts with `.` too, and a pattern ending with `/` matches only folders.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Whether `path` names a folder's contents rather than the folder (`dir/` or `dir/.`): a tree is
/// then copied into the destination itself, as Python's `os.path.split(path)[1]` is empty.
pub fn names_contents(path: &Path) -> bool {
    let bytes = path.as_os_str().as_bytes();
    bytes.ends_with(b"/") || bytes.ends_with(b"/.")
}

/// `dir/<the last component of path>`, or `dir` itself when `path` names a folder's contents:
/// where a transfer of `path` into the folder `dir` puts it.
pub fn inside(dir: &Path, path: &Path) -> PathBuf {
    match path.file_name() {
        Some(name) if !names_contents(path) => dir.join(name),
        _ => dir.to_owned(),
    }
}

/// Whether `path` holds any of the glob characters `*`, `?` and `[` (Python's `glob.has_magic`).
pub fn has_magic(path: &Path) -> bool {
    has_magic_bytes(path.as_os_str().as_bytes())
}

fn has_magic_bytes(bytes: &[u8]) -> bool {
    bytes.iter().any(|b| matches!(b, b'*' | b'?' | b'['))
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// `*`: any run of characters.
    Star,
    /// `?`: any one character.
    Any,
    /// `[...]`: one character in (or, negated, not in) the ranges.
    Set { negated: bool, ranges: Vec<(char, char)> },
    /// Itself.
    Char(char),
}

/// One path component's pattern, compiled.
#[derive(Debug, Clone)]
pub struct Pattern {
    tokens: Vec<Token>,
    dot_first: bool,
}

impl Pattern {
    /// `pattern` (one path component), compiled.
    pub fn new(pattern: &str) -> Pattern {
        let chars: Vec<char> = pattern.chars().collect();
        let mut tokens = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '*' => {
                    if tokens.last() != Some(&Token::Star) {
                        tokens.push(Token::Star);
                    }
                    i += 1;
                }
                '?' => {
                    tokens.push(Token::Any);
                    i += 1;
                }
                '[' => match parse_set(&chars, i + 1) {
                    Some((token, next)) => {
                        tokens.push(token);
                        i = next;
                    }
                    None => {
                        tokens.push(Token::Char('['));
                        i += 1;
                    }
                },
                c => {
                    tokens.push(Token::Char(c));
                    i += 1;
                }
            }
        }
        Pattern { tokens, dot_first: pattern.starts_with('.') }
    }

    /// Whether `name` (one path component) matches, hidden names included.
    pub fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().collect();
        let tokens = &self.tokens;
        let (mut t, mut n) = (0, 0);
        // Where the last `*` was, and the first name position it has not yet swallowed.
        let mut backtrack: Option<(usize, usize)> = None;
        while n < name.len() {
            let step = match tokens.get(t) {
                Some(Token::Star) => {
                    backtrack = Some((t, n));
                    t += 1;
                    continue;
                }
                Some(Token::Any) => true,
                Some(Token::Char(c)) => *c == name[n],
                Some(Token::Set { negated, ranges }) => {
                    ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&name[n])) != *negated
                }
                None => false,
            };
            if step {
                t += 1;
                n += 1;
            } else if let Some((star, from)) = backtrack {
                t = star + 1;
                n = from + 1;
                backtrack = Some((star, from + 1));
            } else {
                return false;
            }
        }
        tokens[t..].iter().all(|token| *token == Token::Star)
    }

    /// Whether `name` matches as glob lists a folder: names starting with `.` only for a pattern
    /// that starts with `.`.
    pub fn matches_listed(&self, name: &str) -> bool {
        (self.dot_first || !name.starts_with('.')) && self.matches(name)
    }
}

/// The set starting after a `[` at `start`, and the index after its `]`; `None` when the `]` is
/// missing (the `[` is then a plain character).
fn parse_set(chars: &[char], start: usize) -> Option<(Token, usize)> {
    let mut i = start;
    let negated = chars.get(i) == Some(&'!');
    if negated {
        i += 1;
    }
    let first = i;
    let mut ranges = Vec::new();
    loop {
        let c = *chars.get(i)?;
        if c == ']' && i > first {
            return Some((Token::Set { negated, ranges }, i + 1));
        }
        match (chars.get(i + 1), chars.get(i + 2)) {
            (Some('-'), Some(&hi)) if hi != ']' => {
                ranges.push((c, hi));
                i += 3;
            }
            _ => {
                ranges.push((c, c));
                i += 1;
            }
        }
    }
}

/// The paths matching the absolute pattern `pattern`, sorted (Python's `glob.glob`, not
/// recursive: `**` is `*`). A pattern without glob characters gives itself when it exists.
/// Folders that cannot be listed give nothing.
pub fn glob(pattern: &Path) -> Vec<PathBuf> {
    let bytes = pattern.as_os_str().as_bytes();
    let dirs_only = bytes.ends_with(b"/");
    let components: Vec<&[u8]> = bytes.split(|b| *b == b'/').filter(|c| !c.is_empty()).collect();
    let mut found = vec![if bytes.starts_with(b"/") { PathBuf::from("/") } else { PathBuf::new() }];
    for (index, component) in components.iter().enumerate() {
        let last = index + 1 == components.len();
        let need_dir = !last || dirs_only;
        let mut next = Vec::new();
        if has_magic_bytes(component) {
            let pattern = Pattern::new(&String::from_utf8_lossy(component));
            for dir in &found {
                let listed = if dir.as_os_str().is_empty() { Path::new(".") } else { dir.as_path() };
                let Ok(entries) = std::fs::read_dir(listed) else { continue };
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    if !pattern.matches_listed(&name.to_string_lossy()) {
                        continue;
                    }
                    let path = dir.join(&name);
                    if !need_dir || path.is_dir() {
                        next.push(path);
                    }
                }
            }
        } else {
            let component = OsStr::from_bytes(component);
            for dir in &found {
                let path = dir.join(component);
                // Literal folders on the way are checked when listed (or at the end).
                if !last || (std::fs::symlink_metadata(&path).is_ok() && (!need_dir || path.is_dir())) {
                    next.push(path);
                }
            }
        }
        found = next;
        if found.is_empty() {
            break;
        }
    }
    if components.is_empty() {
        // `/` itself.
        return found;
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, name: &str) -> bool {
        Pattern::new(pattern).matches(name)
    }

    #[test]
    fn patterns_match_as_fnmatch() {
        assert!(m("*", ""));
        assert!(m("*.txt", "a.txt"));
        assert!(!m("*.txt", "a.txt.gz"));
        assert!(m("a*b*c", "axxbyyc"));
        assert!(m("a*b*c", "abcbc"));
        assert!(!m("a*b*c", "abcb"));
        assert!(m("?", "é"));
        assert!(!m("?", ""));
        assert!(!m("??", "a"));
        assert!(m("[abc]x", "bx"));
        assert!(!m("[abc]x", "dx"));
        assert!(m("[!abc]x", "dx"));
        assert!(!m("[!abc]x", "ax"));
        assert!(m("[a-c]", "b"));
        assert!(!m("[c-a]", "b"), "a reversed range matches nothing");
        assert!(m("[]]", "]"), "a `]` first in a set is a member");
        assert!(m("[!]]", "a"));
        assert!(m("[a-]", "-"), "a `-` last in a set is a member");
        assert!(m("[^a]", "^"), "`^` does not negate");
        assert!(m("[x", "[x"), "an unclosed `[` is itself");
        assert!(m("a\\b", "a\\b"), "no escapes");
        assert!(m("**", "anything"));
    }

    #[test]
    fn hidden_names_need_a_leading_dot() {
        assert!(!Pattern::new("*").matches_listed(".aiida"));
        assert!(Pattern::new(".*").matches_listed(".aiida"));
        assert!(Pattern::new("*").matches_listed("aiida.in"));
    }

    #[test]
    fn glob_walks_components() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for path in ["a/x.txt", "a/y.txt", "a/.hidden.txt", "b/x.txt", "b/z.dat", "c.txt"] {
            std::fs::create_dir_all(root.join(path).parent().unwrap()).unwrap();
            std::fs::write(root.join(path), path).unwrap();
        }
        let names = |pattern: &str| -> Vec<String> {
            glob(&root.join(pattern))
                .into_iter()
                .map(|p| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(names("*/x.txt"), ["a/x.txt", "b/x.txt"]);
        assert_eq!(names("a/*.txt"), ["a/x.txt", "a/y.txt"]);
        assert_eq!(names("a/.*"), ["a/.hidden.txt"]);
        assert_eq!(names("*"), ["a", "b", "c.txt"]);
        assert_eq!(names("*/"), ["a", "b"], "a trailing `/` keeps folders only");
        assert_eq!(names("[ab]/[!x]*"), ["a/y.txt", "b/z.dat"]);
        assert_eq!(names("c.txt"), ["c.txt"]);
        assert!(names("missing").is_empty());
        assert!(names("missing/*").is_empty());
        assert!(names("c.txt/*").is_empty());
        assert_eq!(glob(Path::new("/")), [PathBuf::from("/")]);
    }
}
