//! A synchronous PostgreSQL connection over tokio-postgres.
//!
//! The async driver runs on one private runtime; callers wait on a plain channel, so every call
//! works from a plain thread and from inside someone else's Tokio runtime alike.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row, Statement};

use super::StorageError;
use crate::config::PsqlDosConfig;

/// Owned query parameters (they travel to the driver's runtime).
pub(crate) type Params = Vec<Box<dyn ToSql + Send + Sync>>;

/// Builds [`Params`] from expressions.
macro_rules! params {
    ($($p:expr),* $(,)?) => { vec![$(Box::new($p) as Box<dyn tokio_postgres::types::ToSql + Send + Sync>),*] };
}
pub(crate) use params;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("aiida-db")
            .enable_all()
            .build()
            .expect("aiida: cannot start the database runtime")
    })
}

fn block<F>(f: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime().spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv().expect("aiida: a database task panicked")
}

/// How many prepared statements a connection keeps (queries are built from a few shapes).
const STATEMENTS_KEPT: usize = 256;

/// One connection. Statements are serialised: a transaction holds the connection until it ends.
/// Statements are prepared once per connection, so a repeated query is one round trip.
pub(crate) struct Db {
    client: Arc<tokio_postgres::Client>,
    busy: Mutex<()>,
    statements: Mutex<HashMap<String, Statement>>,
    target: String,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("target", &self.target).finish_non_exhaustive()
    }
}

impl Db {
    pub(crate) fn connect(config: &PsqlDosConfig) -> Result<Db, StorageError> {
        let target = format!(
            "database `{}` at {}:{} as `{}`",
            config.database_name, config.database_hostname, config.database_port, config.database_username
        );
        let mut pg = tokio_postgres::Config::new();
        pg.host(&config.database_hostname)
            .port(config.database_port)
            .user(&config.database_username)
            .password(&config.database_password)
            .dbname(&config.database_name)
            .connect_timeout(std::time::Duration::from_secs(10));
        let client = block(async move {
            let (client, connection) = pg.connect(NoTls).await?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok::<_, tokio_postgres::Error>(client)
        })
        .map_err(|source| StorageError::Connect { target: target.clone(), source })?;
        Ok(Db { client: Arc::new(client), busy: Mutex::new(()), statements: Mutex::new(HashMap::new()), target })
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.busy.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs a statement; returns its rows.
    pub(crate) fn query(&self, sql: &str, params: Params) -> Result<Vec<Row>, StorageError> {
        let _busy = self.lock();
        self.query_unlocked(sql, params)
    }

    fn query_unlocked(&self, sql: &str, params: Params) -> Result<Vec<Row>, StorageError> {
        let cached = self.statements.lock().unwrap_or_else(|e| e.into_inner()).get(sql).cloned();
        let (client, owned) = (self.client.clone(), sql.to_owned());
        let (rows, prepared) = block(async move {
            let statement = match cached {
                Some(statement) => statement,
                None => client.prepare(&owned).await?,
            };
            let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
            let rows = client.query(&statement, &refs).await?;
            Ok((rows, statement))
        })
        .map_err(|source| {
            // A statement that failed is prepared again next time (its plan may be stale).
            self.statements.lock().unwrap_or_else(|e| e.into_inner()).remove(sql);
            StorageError::Query { sql: abbreviate(sql), source }
        })?;
        let mut statements = self.statements.lock().unwrap_or_else(|e| e.into_inner());
        if !statements.contains_key(sql) {
            if statements.len() >= STATEMENTS_KEPT {
                statements.clear();
            }
            statements.insert(sql.to_owned(), prepared);
        }
        Ok(rows)
    }

    /// Runs one or more statements without parameters.
    pub(crate) fn batch(&self, sql: &str) -> Result<(), StorageError> {
        let _busy = self.lock();
        self.batch_unlocked(sql)
    }

    fn batch_unlocked(&self, sql: &str) -> Result<(), StorageError> {
        let (client, owned) = (self.client.clone(), sql.to_owned());
        block(async move { client.batch_execute(&owned).await })
            .map_err(|source| StorageError::Query { sql: abbreviate(sql), source })
    }

    /// Runs one or more statements without parameters, as one transaction (PostgreSQL's simple
    /// query protocol: one round trip); returns the rows of every statement that returns any, as
    /// text.
    pub(crate) fn simple(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, StorageError> {
        let _busy = self.lock();
        let (client, owned) = (self.client.clone(), sql.to_owned());
        let messages = block(async move { client.simple_query(&owned).await })
            .map_err(|source| StorageError::Query { sql: abbreviate(sql), source })?;
        Ok(messages
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => {
                    Some((0..row.len()).map(|i| row.get(i).map(str::to_owned)).collect())
                }
                _ => None,
            })
            .collect())
    }

    /// Like [`Db::simple`]; the first column of the last row any statement returned.
    pub(crate) fn simple_last(&self, sql: &str) -> Result<Option<String>, StorageError> {
        Ok(self.simple(sql)?.pop().and_then(|row| row.into_iter().next().flatten()))
    }

    /// Runs `f` in a transaction: committed when it returns `Ok`, rolled back otherwise (also
    /// when it panics, so the shared connection is never left inside a transaction).
    pub(crate) fn transaction<R, E: From<StorageError>>(
        &self,
        f: impl FnOnce(&Tx<'_>) -> Result<R, E>,
    ) -> Result<R, E> {
        let _busy = self.lock();
        self.batch_unlocked("BEGIN")?;
        let mut tx = Tx { db: self, open: true };
        let value = f(&tx)?;
        tx.open = false;
        self.batch_unlocked("COMMIT")?;
        Ok(value)
    }

    pub(crate) fn target(&self) -> &str {
        &self.target
    }
}

/// A transaction in progress (see [`Db::transaction`]); rolled back if dropped while open.
pub(crate) struct Tx<'a> {
    db: &'a Db,
    open: bool,
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.open {
            let _ = self.db.batch_unlocked("ROLLBACK");
        }
    }
}

impl Tx<'_> {
    pub(crate) fn query(&self, sql: &str, params: Params) -> Result<Vec<Row>, StorageError> {
        self.db.query_unlocked(sql, params)
    }

    pub(crate) fn batch(&self, sql: &str) -> Result<(), StorageError> {
        self.db.batch_unlocked(sql)
    }
}

/// `text` as an SQL string literal (PostgreSQL's `quote_literal`: quotes doubled, and an `E''`
/// string with doubled backslashes when there are any, whatever `standard_conforming_strings` is).
pub(crate) fn literal(text: &str) -> String {
    let quoted = text.replace('\'', "''");
    if quoted.contains('\\') { format!("E'{}'", quoted.replace('\\', "\\\\")) } else { format!("'{quoted}'") }
}

pub(crate) fn abbreviate(sql: &str) -> String {
    let one_line = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 120 {
        format!("{}...", one_line.chars().take(117).collect::<String>())
    } else {
        one_line
    }
}

#[cfg(test)]
mod tests {
    use super::literal;

    #[test]
    fn literals_quote_quotes_and_backslashes() {
        assert_eq!(literal("a@b"), "'a@b'");
        assert_eq!(literal("o'hara"), "'o''hara'");
        assert_eq!(literal(r"back\'slash"), r"E'back\\''slash'");
    }
}
