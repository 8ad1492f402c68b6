//! Connections to a profile's PostgreSQL: a pool of tokio-postgres clients (deadpool-postgres),
//! driven on the crate's runtime, with each connection's prepared statements cached.
//!
//! Everything here is async; the synchronous surface is [`crate::runtime::block_on`] over it.

use deadpool_postgres::{ClientWrapper, Manager, ManagerConfig, Object, Pool, PoolError};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};

use super::StorageError;
use crate::config::PsqlDosConfig;
use crate::runtime;

/// Owned query parameters, for statements built at run time (see [`crate::orm::QueryBuilder`]).
pub(crate) type Params = Vec<Box<dyn ToSql + Send + Sync>>;

/// Borrowed query parameters, as tokio-postgres takes them.
pub(crate) type Args<'a> = &'a [&'a (dyn ToSql + Sync)];

/// The parameters of `params` as tokio-postgres takes them.
pub(crate) fn args(params: &Params) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect()
}

/// How many prepared statements a connection keeps (queries are built from a few shapes).
const STATEMENTS_KEPT: usize = 256;

/// How many connections one storage opens at most: enough for the processes a daemon worker runs
/// at once to share, few enough for hundreds of test profiles on one server.
const MAX_CONNECTIONS: usize = 10;

/// A pool of connections to one database. Cloning it is cheap and shares the pool.
#[derive(Clone)]
pub(crate) struct Db {
    pool: Pool,
    target: std::sync::Arc<str>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("target", &self.target).finish_non_exhaustive()
    }
}

/// Makes each connection on the crate's runtime, so that it outlives the executor that asked.
struct OnRuntime;

impl deadpool_postgres::Connect for OnRuntime {
    fn connect(
        &self,
        config: &tokio_postgres::Config,
    ) -> std::pin::Pin<
        Box<
            dyn Future<Output = Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>>
                + Send
                + '_,
        >,
    > {
        let config = config.clone();
        Box::pin(runtime::on_runtime(async move {
            let (client, connection) = config.connect(NoTls).await?;
            let driver = tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok((client, driver))
        }))
    }
}

impl Db {
    /// A pool for the database of `config`, with one connection made (so that bad settings fail
    /// here, not at the first query).
    pub(crate) async fn connect(config: &PsqlDosConfig) -> Result<Db, StorageError> {
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
            .application_name(application_name())
            .connect_timeout(std::time::Duration::from_secs(10));
        let manager = Manager::from_connect(pg, OnRuntime, ManagerConfig::default());
        let pool = Pool::builder(manager).max_size(MAX_CONNECTIONS).build().expect("a pool without timeouts builds");
        let db = Db { pool, target: target.into() };
        drop(db.connection().await?);
        tracing::debug!(target = %db.target, "connected");
        Ok(db)
    }

    async fn connection(&self) -> Result<Object, StorageError> {
        self.pool.get().await.map_err(|error| match error {
            PoolError::Backend(source) => StorageError::Connect { target: self.target.to_string(), source },
            other => StorageError::Pool(other.to_string()),
        })
    }

    /// Runs a statement; returns its rows.
    pub(crate) async fn query(&self, sql: &str, args: Args<'_>) -> Result<Vec<Row>, StorageError> {
        query(&*self.connection().await?, sql, args).await
    }

    /// Runs one or more statements without parameters.
    pub(crate) async fn batch(&self, sql: &str) -> Result<(), StorageError> {
        batch(&*self.connection().await?, sql).await
    }

    /// Runs one or more statements without parameters, as one transaction (PostgreSQL's simple
    /// query protocol: one round trip); returns the rows of every statement that returns any, as
    /// text.
    pub(crate) async fn simple(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, StorageError> {
        let messages = self
            .connection()
            .await?
            .simple_query(sql)
            .await
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
    pub(crate) async fn simple_last(&self, sql: &str) -> Result<Option<String>, StorageError> {
        Ok(self.simple(sql).await?.pop().and_then(|row| row.into_iter().next().flatten()))
    }

    /// Begins a transaction on a connection of its own; see [`Tx`].
    pub(crate) async fn begin(&self) -> Result<Tx, StorageError> {
        let connection = self.connection().await?;
        batch(&connection, "BEGIN").await?;
        Ok(Tx { connection: Some(connection) })
    }

    pub(crate) fn target(&self) -> &str {
        &self.target
    }
}

/// A name for this pool's sessions in `pg_stat_activity`, unique in this machine's processes, so a
/// storage can tell its own sessions from others'.
fn application_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("aiida-rs-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

async fn query(client: &ClientWrapper, sql: &str, args: Args<'_>) -> Result<Vec<Row>, StorageError> {
    let result = async {
        let statement = client.prepare_cached(sql).await?;
        client.query(&statement, args).await
    }
    .await;
    result
        .map_err(|source| {
            // A statement that failed is prepared again next time (its plan may be stale).
            client.statement_cache.remove(sql, &[]);
            StorageError::Query { sql: abbreviate(sql), source }
        })
        .inspect(|_| {
            if client.statement_cache.size() > STATEMENTS_KEPT {
                client.statement_cache.clear();
            }
        })
}

async fn batch(client: &ClientWrapper, sql: &str) -> Result<(), StorageError> {
    client.batch_execute(sql).await.map_err(|source| StorageError::Query { sql: abbreviate(sql), source })
}

/// A transaction in progress, on a connection of its own until it ends: [`Tx::commit`] commits it;
/// dropped before that (an error, a panic, a cancelled future), it is rolled back before its
/// connection serves anyone else.
pub(crate) struct Tx {
    connection: Option<Object>,
}

impl Tx {
    fn client(&self) -> &ClientWrapper {
        self.connection.as_ref().expect("a transaction has its connection until it ends")
    }

    pub(crate) async fn query(&self, sql: &str, args: Args<'_>) -> Result<Vec<Row>, StorageError> {
        query(self.client(), sql, args).await
    }

    pub(crate) async fn batch(&self, sql: &str) -> Result<(), StorageError> {
        batch(self.client(), sql).await
    }

    pub(crate) async fn commit(mut self) -> Result<(), StorageError> {
        let connection = self.connection.take().expect("a transaction has its connection until it ends");
        batch(&connection, "COMMIT").await
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            // The connection goes back to the pool only once the rollback is done.
            runtime::handle().spawn(async move {
                if connection.batch_execute("ROLLBACK").await.is_err() {
                    let _ = Object::take(connection);
                }
            });
        }
    }
}

/// `text` as an SQL string literal (PostgreSQL's `quote_literal`: quotes doubled, and an `E''`
/// string with doubled backslashes when there are any, whatever `standard_conforming_strings` is).
pub fn literal(text: &str) -> String {
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
