//! The hub's records, in PostgreSQL (a database given by URL; the hub's tables are created when
//! missing, `hub_` before each name):
//! - `hub_version`: one row per version of a plugin the hub has seen, with what its sources said
//!   of it: the index it came from, its metadata, its entry points (the distribution's manifest),
//!   or the error that kept them from being read; `latest` marks the one version followed.
//! - `hub_run`: each pass, whether its discovery was complete and how many plugins it found.

use std::collections::BTreeMap;

use serde_json::Value;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
#[error("the hub's database failed: {0}")]
pub struct StoreError(#[from] postgres::Error);

/// What the store holds of one version.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionRecord {
    /// The plugin (its distribution name).
    pub plugin: String,
    /// The version.
    pub version: String,
    /// `pypi` or `crates.io`.
    pub index: String,
    /// Whether it is the version followed.
    pub latest: bool,
    /// Its metadata, when read.
    pub metadata: Option<Value>,
    /// Its entry points, when read.
    pub entry_points: Option<Value>,
    /// Why its metadata or entry points could not be read.
    pub error: Option<String>,
}

const SCHEMA: &str = "
    SELECT pg_advisory_xact_lock(4172635);
    CREATE TABLE IF NOT EXISTS hub_version (
        plugin text NOT NULL,
        version text NOT NULL,
        index_name text NOT NULL,
        latest boolean NOT NULL,
        discovered timestamptz NOT NULL DEFAULT now(),
        metadata jsonb,
        entry_points jsonb,
        error text,
        PRIMARY KEY (plugin, version)
    );
    CREATE TABLE IF NOT EXISTS hub_run (
        id serial PRIMARY KEY,
        finished timestamptz NOT NULL DEFAULT now(),
        complete boolean NOT NULL,
        discovered integer NOT NULL
    );";

/// A connection to the hub's database.
pub struct Store {
    client: postgres::Client,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Connects to the database at `url` (`postgresql://...`) and makes the hub's tables.
    pub fn connect(url: &str) -> Result<Store, StoreError> {
        let mut client = postgres::Client::connect(url, postgres::NoTls)?;
        client.batch_execute(&format!("BEGIN; {SCHEMA} COMMIT;"))?;
        Ok(Store { client })
    }

    /// Every (plugin, version) the store has, in one query.
    pub fn known(&mut self) -> Result<std::collections::BTreeSet<(String, String)>, StoreError> {
        let rows = self.client.query("SELECT plugin, version FROM hub_version", &[])?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    /// Records `record` as the latest version of its plugin: the plugin's other versions are
    /// latest no more (stale).
    pub fn record_latest(&mut self, record: &VersionRecord) -> Result<(), StoreError> {
        let mut tx = self.client.transaction()?;
        tx.execute(
            "UPDATE hub_version SET latest = false WHERE plugin = $1 AND version <> $2",
            &[&record.plugin, &record.version],
        )?;
        tx.execute(
            "INSERT INTO hub_version (plugin, version, index_name, latest, metadata, entry_points, error)
             VALUES ($1, $2, $3, true, $4, $5, $6)
             ON CONFLICT (plugin, version) DO UPDATE SET latest = true, index_name = EXCLUDED.index_name,
                 metadata = EXCLUDED.metadata, entry_points = EXCLUDED.entry_points, error = EXCLUDED.error",
            &[&record.plugin, &record.version, &record.index, &record.metadata, &record.entry_points, &record.error],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Marks `version` of `plugin` latest (again), the others stale.
    pub fn follow(&mut self, plugin: &str, version: &str) -> Result<(), StoreError> {
        self.client.execute(
            "UPDATE hub_version SET latest = (version = $2) WHERE plugin = $1 AND latest <> (version = $2)",
            &[&plugin, &version],
        )?;
        Ok(())
    }

    /// Marks every version of `plugin` stale (withdrawn); returns whether one was latest.
    pub fn withdraw(&mut self, plugin: &str) -> Result<bool, StoreError> {
        Ok(self.client.execute("UPDATE hub_version SET latest = false WHERE plugin = $1 AND latest", &[&plugin])? > 0)
    }

    /// The latest version of each plugin.
    pub fn latest(&mut self) -> Result<BTreeMap<String, VersionRecord>, StoreError> {
        let rows = self.client.query(
            "SELECT plugin, version, index_name, latest, metadata, entry_points, error FROM hub_version WHERE latest",
            &[],
        )?;
        Ok(rows.iter().map(version_record).map(|record| (record.plugin.clone(), record)).collect())
    }

    /// Every version of every plugin, by plugin, oldest discovered first: one query.
    pub fn all_versions(&mut self) -> Result<BTreeMap<String, Vec<VersionRecord>>, StoreError> {
        let rows = self.client.query(
            "SELECT plugin, version, index_name, latest, metadata, entry_points, error FROM hub_version
             ORDER BY plugin, discovered, version",
            &[],
        )?;
        let mut versions: BTreeMap<String, Vec<VersionRecord>> = BTreeMap::new();
        for record in rows.iter().map(version_record) {
            versions.entry(record.plugin.clone()).or_default().push(record);
        }
        Ok(versions)
    }

    /// Every version of `plugin`, oldest discovered first.
    pub fn versions(&mut self, plugin: &str) -> Result<Vec<VersionRecord>, StoreError> {
        let rows = self.client.query(
            "SELECT plugin, version, index_name, latest, metadata, entry_points, error FROM hub_version
             WHERE plugin = $1 ORDER BY discovered, version",
            &[&plugin],
        )?;
        Ok(rows.iter().map(version_record).collect())
    }

    /// Records a pass.
    pub fn record_run(&mut self, complete: bool, discovered: i32) -> Result<(), StoreError> {
        self.client.execute("INSERT INTO hub_run (complete, discovered) VALUES ($1, $2)", &[&complete, &discovered])?;
        Ok(())
    }
}

/// A row of `SELECT plugin, version, index_name, latest, metadata, entry_points, error`.
fn version_record(row: &postgres::Row) -> VersionRecord {
    VersionRecord {
        plugin: row.get(0),
        version: row.get(1),
        index: row.get(2),
        latest: row.get(3),
        metadata: row.get(4),
        entry_points: row.get(5),
        error: row.get(6),
    }
}
