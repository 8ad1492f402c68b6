//! A small synchronous PostgreSQL client over tokio-postgres.
//!
//! All async work runs on one process-wide runtime of ours; callers wait on a plain channel, so the
//! synchronous API works from plain threads and from inside someone else's Tokio runtime alike
//! (no "runtime within a runtime" panic).

use std::future::Future;
use std::sync::{Arc, OnceLock};

use tokio_postgres::{NoTls, SimpleQueryMessage};

use crate::conn::ConnectionInfo;
use crate::error::{Error, Result};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("testpg")
            .enable_all()
            .build()
            .expect("testpg: cannot start its Tokio runtime")
    })
}

/// Runs `f` on our runtime and waits for its output.
pub(crate) fn block<F>(f: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime().spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv().expect("testpg: a task on its runtime panicked")
}

/// A connection; cheap to clone, usable from several threads at once.
#[derive(Clone)]
pub(crate) struct Client {
    inner: Arc<tokio_postgres::Client>,
    target: Arc<str>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("target", &self.target).finish_non_exhaustive()
    }
}

impl Client {
    /// Connects (synchronously).
    pub(crate) fn connect(info: &ConnectionInfo) -> Result<Client> {
        let info = info.clone();
        block(async move { Client::connect_async(&info).await })
    }

    /// Connects; must run on our runtime (the connection task is spawned there).
    pub(crate) async fn connect_async(info: &ConnectionInfo) -> Result<Client> {
        let target: Arc<str> = info.to_string().into();
        let (client, connection) = info.to_config().connect(NoTls).await.map_err(Error::pg(&*target))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Client { inner: Arc::new(client), target })
    }

    /// Wraps a client whose connection task the caller drives (e.g. to receive notifications).
    pub(crate) fn from_parts(client: tokio_postgres::Client, info: &ConnectionInfo) -> Client {
        Client { inner: Arc::new(client), target: info.to_string().into() }
    }

    /// Runs `sql` (one or more statements) with the simple-query protocol; returns the text rows.
    pub(crate) fn query(&self, sql: impl Into<String>) -> Result<Vec<Vec<Option<String>>>> {
        let this = self.clone();
        let sql = sql.into();
        block(async move { this.query_async(&sql).await })
    }

    pub(crate) async fn query_async(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        self.query_raw(sql).await.map_err(Error::pg(&*self.target))
    }

    /// Like [`Client::query_async`], with the driver's error (to look at its SQLSTATE).
    pub(crate) async fn query_raw(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, tokio_postgres::Error> {
        let messages = self.inner.simple_query(sql).await?;
        Ok(messages
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(row) => Some((0..row.len()).map(|i| row.get(i).map(str::to_owned)).collect()),
                _ => None,
            })
            .collect())
    }

    /// The first column of every row.
    pub(crate) async fn column_async(&self, sql: &str) -> Result<Vec<String>> {
        Ok(self.query_async(sql).await?.into_iter().filter_map(|mut r| r.swap_remove(0)).collect())
    }

    /// `server_version_num`, e.g. 150018 (0 if the server does not say).
    pub(crate) async fn version_num_async(&self) -> Result<u32> {
        Ok(self.column_async("SHOW server_version_num").await?.first().and_then(|v| v.parse().ok()).unwrap_or(0))
    }

    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }
}
