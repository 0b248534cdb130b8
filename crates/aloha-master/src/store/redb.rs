//! The single-node store: an embedded redb database under `--state-dir`.

// redb::Error is large (160 bytes) but only travels on the rare failure path of a blocking task.
#![allow(clippy::result_large_err)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableTable, TableDefinition};

use super::{Compare, Op, StateStore, StoreError, Txn};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");

/// The file name of the database inside the state dir.
pub const DB_FILE: &str = "state.redb";

/// An embedded, crash-safe store. redb commits are durable (fsync) before `txn` returns, and
/// redb holds an exclusive file lock, so two masters cannot share a state dir.
pub struct RedbStore {
    db: Arc<Database>,
    path: PathBuf,
}

/// Why the embedded store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process holds the database.
    #[error("state dir {dir} is already in use by another aloha-master (database {file} is locked); stop that master or use another --state-dir")]
    InUse {
        /// The state dir.
        dir: String,
        /// The database file.
        file: String,
    },
    /// Anything else.
    #[error("cannot open state database {file}: {source}")]
    Other {
        /// The database file.
        file: String,
        /// Cause.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The default size of redb's page cache (redb's own default is 1 GiB).
pub const DEFAULT_CACHE_MB: u64 = 64;

impl RedbStore {
    /// Opens (creating if needed) the database in `state_dir`, with the default cache.
    pub fn open(state_dir: &Path) -> Result<Self, OpenError> {
        Self::open_with_cache(state_dir, DEFAULT_CACHE_MB)
    }

    /// Opens (creating if needed) the database in `state_dir` with a page cache of
    /// `cache_mb` MiB. The master keeps its whole state in memory and only writes here (reads
    /// happen at start-up), so a small cache costs nothing and keeps the process small.
    pub fn open_with_cache(state_dir: &Path, cache_mb: u64) -> Result<Self, OpenError> {
        let path = state_dir.join(DB_FILE);
        let other = |e: Box<dyn std::error::Error + Send + Sync>| OpenError::Other {
            file: path.display().to_string(),
            source: e,
        };
        std::fs::create_dir_all(state_dir).map_err(|e| other(Box::new(e)))?;
        let cache = usize::try_from(cache_mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX);
        let db = match Database::builder().set_cache_size(cache).create(&path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(OpenError::InUse {
                    dir: state_dir.display().to_string(),
                    file: path.display().to_string(),
                })
            }
            Err(e) => return Err(other(Box::new(e))),
        };
        // Create the table up front so readers never see "table does not exist".
        let init = || -> Result<(), redb::Error> {
            let w = db.begin_write()?;
            w.open_table(KV)?;
            w.commit()?;
            Ok(())
        };
        init().map_err(|e| other(Box::new(e)))?;
        Ok(RedbStore {
            db: Arc::new(db),
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, redb::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
            .map_err(|e| StoreError::Backend(e.to_string()))
    }
}

#[async_trait]
impl StateStore for RedbStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_string();
        self.blocking(move |db| {
            let r = db.begin_read()?;
            let t = r.open_table(KV)?;
            Ok(t.get(key.as_str())?.map(|v| v.value().to_vec()))
        })
        .await
    }

    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let prefix = prefix.to_string();
        self.blocking(move |db| {
            let r = db.begin_read()?;
            let t = r.open_table(KV)?;
            let mut out = Vec::new();
            for item in t.range(prefix.as_str()..)? {
                let (k, v) = item?;
                if !k.value().starts_with(prefix.as_str()) {
                    break;
                }
                out.push((k.value().to_string(), v.value().to_vec()));
            }
            Ok(out)
        })
        .await
    }

    async fn scan_from(
        &self,
        prefix: &str,
        from: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let (prefix, from) = (prefix.to_string(), from.to_string());
        self.blocking(move |db| {
            let r = db.begin_read()?;
            let t = r.open_table(KV)?;
            let mut out = Vec::new();
            for item in t.range(from.as_str()..)? {
                let (k, v) = item?;
                if !k.value().starts_with(prefix.as_str()) || out.len() >= limit {
                    break;
                }
                out.push((k.value().to_string(), v.value().to_vec()));
            }
            Ok(out)
        })
        .await
    }

    async fn txn(&self, txn: Txn) -> Result<bool, StoreError> {
        self.blocking(move |db| {
            let w = db.begin_write()?;
            {
                let mut t = w.open_table(KV)?;
                for c in &txn.compares {
                    let Compare::Value { key, value } = c;
                    let current = t.get(key.as_str())?.map(|v| v.value().to_vec());
                    if current.as_ref() != value.as_ref() {
                        drop(t);
                        w.abort()?;
                        return Ok(false);
                    }
                }
                for op in &txn.ops {
                    match op {
                        Op::Put { key, value } => {
                            t.insert(key.as_str(), value.as_slice())?;
                        }
                        Op::Delete { key } => {
                            t.remove(key.as_str())?;
                        }
                    }
                }
            }
            w.commit()?;
            Ok(true)
        })
        .await
    }

    fn kind(&self) -> &'static str {
        "embedded"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn meets_the_store_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(dir.path()).unwrap();
        super::super::contract::check(&store).await;
    }

    #[tokio::test]
    async fn data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = RedbStore::open(dir.path()).unwrap();
            let mut t = Txn::default();
            t.put("k", b"v".to_vec());
            assert!(store.txn(t).await.unwrap());
        }
        let store = RedbStore::open(dir.path()).unwrap();
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    }

    #[tokio::test]
    async fn a_second_opener_gets_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let _first = RedbStore::open(dir.path()).unwrap();
        let err = RedbStore::open(dir.path())
            .err()
            .expect("second open must fail");
        assert!(matches!(err, OpenError::InUse { .. }), "{err}");
        assert!(err.to_string().contains("already in use"));
    }
}
