//! Durable state behind one small trait, so the master's logic is the same over redb (single
//! node), etcd (HA) and memory (unit tests).
//!
//! The contract is etcd's: point reads, prefix scans, and an atomic transaction that applies its
//! writes only if all its compares hold. Writers that need fencing put the fence in the store
//! itself (the etcd store adds the leader-key compare to every transaction), so callers cannot
//! forget it.

pub mod etcd;
mod memory;
mod redb;

pub use self::memory::{FencedMemoryStore, Holds, MemoryStore};
pub use self::redb::RedbStore;

/// The embedded store's default page cache, MiB.
pub fn redb_default_cache_mb() -> u64 {
    self::redb::DEFAULT_CACHE_MB
}

use async_trait::async_trait;

/// One write in a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set `key` to `value`.
    Put {
        /// Key.
        key: String,
        /// Value.
        value: Vec<u8>,
    },
    /// Remove `key` (absent keys are fine).
    Delete {
        /// Key.
        key: String,
    },
}

/// A precondition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// `key` holds exactly `value`; `None` means the key is absent.
    Value {
        /// Key.
        key: String,
        /// Expected value.
        value: Option<Vec<u8>>,
    },
}

/// Compares and writes applied atomically: all writes or none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// Preconditions.
    pub compares: Vec<Compare>,
    /// Writes, applied in order.
    pub ops: Vec<Op>,
}

impl Txn {
    /// Adds a put.
    pub fn put(&mut self, key: impl Into<String>, value: Vec<u8>) -> &mut Self {
        self.ops.push(Op::Put {
            key: key.into(),
            value,
        });
        self
    }

    /// Adds a delete.
    pub fn delete(&mut self, key: impl Into<String>) -> &mut Self {
        self.ops.push(Op::Delete { key: key.into() });
        self
    }

    /// Whether the transaction writes nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backend is unreachable or overloaded; the operation may be retried and may or may
    /// not have been applied (callers re-read before retrying a non-idempotent write).
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// This master lost leadership: its write was refused by the fence.
    #[error("not the leader any more: write refused by the leadership fence")]
    Fenced,
    /// The backend failed for good (disk error, corrupt data).
    #[error("state store failed: {0}")]
    Backend(String),
}

/// Durable key/value state with atomic compare-and-write transactions.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// Reads one key.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Reads every key starting with `prefix`, in key order.
    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Reads keys that start with `prefix` and sort at or after `from`, in key order, at most
    /// `limit` of them.
    async fn scan_from(
        &self,
        prefix: &str,
        from: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Applies `txn` atomically. `Ok(false)`: a compare failed and nothing was written. Returns
    /// only once the writes are durable.
    async fn txn(&self, txn: Txn) -> Result<bool, StoreError>;
    /// A short name for logs and the cluster API (`embedded`, `etcd`, `memory`).
    fn kind(&self) -> &'static str;
    /// Most compares and writes one transaction may hold (`None`: no limit).
    fn max_txn_ops(&self) -> Option<usize> {
        None
    }
    /// Whether a failed `txn` may still have been applied (a timeout against a remote store):
    /// then the writer can no longer know what the store holds.
    fn ambiguous_failures(&self) -> bool {
        false
    }
}

/// Reads a number kept under `key` (the sequence numbers and the epoch): 0 when absent, an
/// error when it is not a number.
pub async fn read_u64(store: &dyn StateStore, key: &str) -> Result<u64, StoreError> {
    match store.get(key).await? {
        None => Ok(0),
        Some(v) => std::str::from_utf8(&v)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| StoreError::Backend(format!("corrupt value under {key}"))),
    }
}

/// Key layout, in one place.
pub mod keys {
    use aloha_core::{AppId, WorkerId};

    /// Prefix of app records.
    pub const APPS: &str = "apps/";
    /// Prefix of worker records.
    pub const WORKERS: &str = "workers/";
    /// The last app sequence number handed out.
    pub const APP_SEQ: &str = "meta/app_seq";
    /// The last epoch a master started with (single-node mode).
    pub const EPOCH: &str = "meta/epoch";
    /// HA: the epoch generation, raised when an operator accepts a restored store
    /// ([`crate::election::history`]).
    pub const EPOCH_GENERATION: &str = "meta/epoch_generation";
    /// Prefix of event records (`events/<seq, 20 digits>`).
    pub const EVENTS: &str = "events/";
    /// The last event sequence number written.
    pub const EVENT_SEQ: &str = "meta/event_seq";
    /// Prefix of listener cursors (`listeners/<name>/cursor`).
    pub const LISTENERS: &str = "listeners/";
    /// Prefix of schedule records.
    pub const SCHEDULES: &str = "schedules/";
    /// Prefix of namespace records.
    pub const NAMESPACES: &str = "namespaces/";

    /// Key of a namespace record.
    pub fn namespace(name: &str) -> String {
        format!("{NAMESPACES}{name}")
    }
    /// Prefix of REST API token records ([`crate::auth`]): `tokens/<id>`.
    pub const TOKENS: &str = "tokens/";

    /// Key of a token record.
    pub fn token(id: &str) -> String {
        format!("{TOKENS}{id}")
    }
    /// The last schedule sequence number handed out.
    pub const SCHEDULE_SEQ: &str = "meta/schedule_seq";

    /// Key of a schedule record.
    pub fn schedule(id: &aloha_core::schedules::ScheduleId) -> String {
        format!("{SCHEDULES}{id}")
    }

    /// Key of event `seq` (zero-padded, so key order is sequence order).
    pub fn event(seq: u64) -> String {
        format!("{EVENTS}{seq:020}")
    }

    /// Key of a listener's cursor.
    pub fn listener_cursor(name: &str) -> String {
        format!("{LISTENERS}{name}/cursor")
    }

    /// Key of an app record.
    pub fn app(id: &AppId) -> String {
        format!("{APPS}{id}")
    }

    /// Key of a worker record.
    pub fn worker(id: &WorkerId) -> String {
        format!("{WORKERS}{id}")
    }
}

pub mod contract {
    //! The behaviour every store must have, as a test suite run against each implementation:
    //! memory and redb in their unit tests, etcd (unfenced and fenced) in the end-to-end test
    //! `tests/store_etcd.rs`. Public for that test; not for production use.
    use super::*;

    /// Checks `store` against the contract; panics at the first violation. `store` must be
    /// empty (for etcd: a cluster name no one else uses).
    pub async fn check(store: &dyn StateStore) {
        assert_eq!(store.get("a/1").await.unwrap(), None);
        let mut t = Txn::default();
        t.put("a/1", b"one".to_vec())
            .put("a/2", b"two".to_vec())
            .put("b/1", b"x".to_vec());
        assert!(store.txn(t).await.unwrap());
        assert_eq!(
            store.get("a/1").await.unwrap().as_deref(),
            Some(&b"one"[..])
        );
        let scan = store.scan_prefix("a/").await.unwrap();
        assert_eq!(
            scan,
            vec![
                ("a/1".to_string(), b"one".to_vec()),
                ("a/2".to_string(), b"two".to_vec())
            ]
        );

        // A failed compare writes nothing, not even the ops before a passing compare.
        let t = Txn {
            compares: vec![
                Compare::Value {
                    key: "a/1".into(),
                    value: Some(b"one".to_vec()),
                },
                Compare::Value {
                    key: "a/2".into(),
                    value: None,
                },
            ],
            ops: vec![Op::Put {
                key: "a/3".into(),
                value: b"3".to_vec(),
            }],
        };
        assert!(!store.txn(t).await.unwrap());
        assert_eq!(store.get("a/3").await.unwrap(), None);

        // Passing compares (including "absent") apply every op, deletes included.
        let t = Txn {
            compares: vec![
                Compare::Value {
                    key: "a/1".into(),
                    value: Some(b"one".to_vec()),
                },
                Compare::Value {
                    key: "zz".into(),
                    value: None,
                },
            ],
            ops: vec![
                Op::Delete { key: "a/1".into() },
                Op::Put {
                    key: "a/3".into(),
                    value: b"3".to_vec(),
                },
            ],
        };
        assert!(store.txn(t).await.unwrap());
        assert_eq!(store.get("a/1").await.unwrap(), None);
        let keys: Vec<String> = store
            .scan_prefix("a/")
            .await
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["a/2", "a/3"]);
        assert_eq!(store.scan_prefix("nothing/").await.unwrap(), vec![]);

        // Range reads start at a key, stay in the prefix and stop at the limit.
        let mut t = Txn::default();
        for i in 0..5 {
            t.put(format!("e/{i:03}"), vec![i]);
        }
        t.put("f/000", vec![9]);
        assert!(store.txn(t).await.unwrap());
        let keys = |v: Vec<(String, Vec<u8>)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(
            keys(store.scan_from("e/", "e/002", 2).await.unwrap()),
            ["e/002", "e/003"]
        );
        assert_eq!(
            keys(store.scan_from("e/", "e/003", 10).await.unwrap()),
            ["e/003", "e/004"]
        );
        assert!(store.scan_from("e/", "e/9", 10).await.unwrap().is_empty());
    }
}
