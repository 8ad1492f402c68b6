//! Requests to the run's keeper over its Unix socket (`<run folder>/keeper.sock`): claim a
//! database of the warm pool, hand one back. Both halves of the protocol are here, so that they
//! cannot drift apart.
//!
//! A test process that asks the keeper needs no connection of its own to the server's maintenance
//! database: under `cargo nextest`, which runs every test in a new process, that connection (a new
//! server backend) was a good part of what a test paid. The protocol is one line per request and
//! one line per reply:
//!
//! | request | reply |
//! |---|---|
//! | `claim <template hash> <pid>` | `ok <database>`, or `none` when the template does not exist yet |
//! | `drop <database>` | `ok`: the keeper drops it once its connections are gone |
//! | `recycle <database>` | `ok`: handed out again as it is (the caller emptied it and closed its connections) |
//!
//! Anything unexpected is answered `error <message>`; a client then falls back to doing the work
//! itself over SQL, so the socket is a shortcut, never a requirement.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::client::Client;
use crate::conn::literal;
use crate::error::chain;
use crate::naming::{Kind, claimed_name_for, kind, template_name};
use crate::os::ProcessId;
use crate::pool::claim;

/// The socket's name in the run folder.
pub(crate) const SOCKET: &str = "keeper.sock";

/// How long a client waits for a reply (a claim may clone a database on the spot).
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// A test process's end of the link; connects on first use and again after a failure.
#[derive(Debug)]
pub(crate) struct KeeperLink {
    path: PathBuf,
    stream: Mutex<Option<BufReader<UnixStream>>>,
}

impl KeeperLink {
    pub(crate) fn new(run_dir: &Path) -> KeeperLink {
        KeeperLink { path: run_dir.join(SOCKET), stream: Mutex::new(None) }
    }

    /// Sends `request`; the reply, or `None` when the keeper could not be asked.
    fn request(&self, request: &str) -> Option<String> {
        let mut slot = self.stream.lock().unwrap_or_else(|e| e.into_inner());
        // A kept stream may have broken (the keeper restarted its listener, or ended): one retry
        // on a new one.
        for _ in 0..2 {
            if slot.is_none() {
                let stream = UnixStream::connect(&self.path).ok()?;
                stream.set_read_timeout(Some(REPLY_TIMEOUT)).ok()?;
                *slot = Some(BufReader::new(stream));
            }
            let reader = slot.as_mut()?;
            if writeln!(reader.get_mut(), "{request}").is_err() {
                *slot = None;
                continue;
            }
            // Sent: never sent again (the keeper may have acted on it), whatever the reply.
            let mut reply = String::new();
            return match reader.read_line(&mut reply) {
                Ok(n) if n > 0 => Some(reply.trim_end().to_owned()),
                _ => {
                    *slot = None;
                    None
                }
            };
        }
        None
    }

    /// A pooled clone of template `hash`, claimed for this process; `None` when the template
    /// does not exist yet or the keeper could not be asked.
    pub(crate) fn claim(&self, hash: &str) -> Option<String> {
        let reply = self.request(&format!("claim {hash} {}", std::process::id()))?;
        match reply.strip_prefix("ok ") {
            Some(name) => Some(name.to_owned()),
            None => {
                if let Some(e) = reply.strip_prefix("error ") {
                    tracing::debug!("the keeper could not hand out a database: {e}");
                }
                None
            }
        }
    }

    /// Hands database `name` back, to be dropped or (`recycle`: the caller emptied it) pooled
    /// again; whether the keeper took it.
    pub(crate) fn hand_back(&self, name: &str, recycle: bool) -> bool {
        let verb = if recycle { "recycle" } else { "drop" };
        self.request(&format!("{verb} {name}")).as_deref() == Some("ok")
    }
}

/// Recycled databases: handed out again under the name they have, so reusing one costs no SQL.
///
/// A claimed database's name holds the pid of the process that claimed it, so that the keeper
/// drops it when that process dies. A recycled database keeps its name; who holds it now is
/// remembered here (the keeper's memory is enough: the server ends with the keeper).
#[derive(Debug, Default)]
pub(crate) struct Reuse {
    /// Per template hash, databases ready to be handed out again.
    free: std::collections::HashMap<String, Vec<String>>,
    /// Recycled databases handed out again, and the pid holding each.
    holders: std::collections::HashMap<String, u32>,
}

impl Reuse {
    /// Who holds the claimed database `name` (whose name says `pid`): `None` while it waits
    /// to be handed out again.
    pub(crate) fn holder(&self, name: &str, pid: u32) -> Option<u32> {
        if self.free.values().any(|names| names.iter().any(|n| n == name)) {
            return None;
        }
        Some(self.holders.get(name).copied().unwrap_or(pid))
    }

    /// Whether the recycled database `name` waits to be handed out again, or was, to a process
    /// that still runs: then a drop asked for earlier is out of date.
    pub(crate) fn in_use_again(&self, name: &str) -> bool {
        self.free.values().any(|names| names.iter().any(|n| n == name))
            || self.holders.get(name).is_some_and(|&pid| ProcessId::of(pid).is_some())
    }

    /// Forgets a database that is gone.
    pub(crate) fn forget(&mut self, name: &str) {
        self.holders.remove(name);
        for names in self.free.values_mut() {
            names.retain(|n| n != name);
        }
    }
}

/// What the keeper's side of the link works with.
pub(crate) struct LinkService {
    pub client: Client,
    pub prefix: String,
    pub version: u32,
    /// Databases to drop go to the pool's maintenance as notes (`drop:<name>`).
    pub notes: mpsc::UnboundedSender<String>,
    /// Templates known to exist (they stay for the run).
    pub templates: Mutex<HashSet<String>>,
    pub reuse: Arc<Mutex<Reuse>>,
    /// How many recycled databases per template are kept for reuse; more are dropped.
    pub keep: usize,
}

/// Accepts connections on `listener` and answers their requests, until the keeper ends or this
/// task is aborted (which ends the connections' tasks too).
pub(crate) async fn serve(listener: tokio::net::UnixListener, service: Arc<LinkService>) {
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((stream, _)) = listener.accept().await {
        while connections.try_join_next().is_some() {}
        let service = service.clone();
        connections.spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = tokio::io::BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let reply = service.answer(&line).await;
                if write.write_all(format!("{reply}\n").as_bytes()).await.is_err() {
                    break;
                }
            }
        });
    }
}

impl LinkService {
    async fn answer(&self, request: &str) -> String {
        let words: Vec<&str> = request.split(' ').collect();
        let ours = |name: &str| name.starts_with(&self.prefix) && !name.contains(char::is_whitespace);
        match words.as_slice() {
            ["claim", hash, pid] if hash.chars().all(|c| c.is_ascii_hexdigit()) => {
                let Ok(pid) = pid.parse::<u32>() else { return "error bad pid".to_owned() };
                if let Some(name) = self.reuse(hash, pid) {
                    return format!("ok {name}");
                }
                match self.template_exists(hash).await {
                    Ok(false) => return "none".to_owned(),
                    Ok(true) => {}
                    Err(e) => return format!("error {}", chain(&e).replace('\n', " ")),
                }
                let name = claimed_name_for(&self.prefix, hash, pid);
                match claim(&self.client, &self.prefix, hash, &name, self.version).await {
                    Ok(()) => format!("ok {name}"),
                    Err(e) => format!("error {}", chain(&e).replace('\n', " ")),
                }
            }
            ["recycle", name] if ours(name) && self.keep_for_reuse(name) => "ok".to_owned(),
            ["drop" | "recycle", name] if ours(name) => {
                self.reuse.lock().unwrap_or_else(|e| e.into_inner()).holders.remove(*name);
                let _ = self.notes.send(format!("drop:{name}"));
                "ok".to_owned()
            }
            _ => "error unknown request".to_owned(),
        }
    }

    /// A recycled database of template `hash`, now held by `pid`.
    fn reuse(&self, hash: &str, pid: u32) -> Option<String> {
        let mut reuse = self.reuse.lock().unwrap_or_else(|e| e.into_inner());
        let name = reuse.free.get_mut(hash)?.pop()?;
        reuse.holders.insert(name.clone(), pid);
        Some(name)
    }

    /// Keeps the recycled database `name` for the next claim of its template, unless enough
    /// are kept already.
    fn keep_for_reuse(&self, name: &str) -> bool {
        let Some(Kind::Claimed { hash, pid }) = kind(&self.prefix, name) else { return false };
        let mut reuse = self.reuse.lock().unwrap_or_else(|e| e.into_inner());
        // From a holder that died since it asked: the pool's sweep may be dropping it already.
        if reuse.holder(name, pid).is_none_or(|holder| ProcessId::of(holder).is_none()) {
            return reuse.free.get(hash).is_some_and(|free| free.iter().any(|n| n == name));
        }
        let free = reuse.free.entry(hash.to_owned()).or_default();
        if free.len() >= self.keep {
            return false;
        }
        free.push(name.to_owned());
        reuse.holders.remove(name);
        true
    }

    async fn template_exists(&self, hash: &str) -> crate::Result<bool> {
        if self.templates.lock().unwrap_or_else(|e| e.into_inner()).contains(hash) {
            return Ok(true);
        }
        let name = template_name(&self.prefix, hash);
        let sql = format!("SELECT 1 FROM pg_database WHERE datname = {}", literal(&name));
        let exists = !self.client.query_async(&sql).await?.is_empty();
        if exists {
            self.templates.lock().unwrap_or_else(|e| e.into_inner()).insert(hash.to_owned());
        }
        Ok(exists)
    }
}
