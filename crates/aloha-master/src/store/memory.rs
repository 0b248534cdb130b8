//! An in-memory store for unit tests, and a fenced view of one for in-memory leaderships.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{Compare, Op, StateStore, StoreError, Txn};

/// Keeps everything in a `BTreeMap`; loses it all on drop.
#[derive(Debug, Default)]
pub struct MemoryStore {
    data: Mutex<BTreeMap<String, Vec<u8>>>,
    /// Refuse transactions with more operations, as etcd does (`--max-txn-ops`).
    max_ops: Option<usize>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store that refuses transactions of more than `max_ops` compares and writes,
    /// like etcd's `--max-txn-ops`.
    pub fn with_max_ops(max_ops: usize) -> Self {
        MemoryStore {
            max_ops: Some(max_ops),
            ..Self::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        // A panic while holding this lock can only come from a bug in this file's few lines;
        // the data is still consistent (every write below is a single map operation).
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().get(key).cloned())
    }

    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(self
            .lock()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    async fn scan_from(
        &self,
        prefix: &str,
        from: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(self
            .lock()
            .range(from.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    async fn txn(&self, txn: Txn) -> Result<bool, StoreError> {
        self.apply(txn, || true)
    }

    fn kind(&self) -> &'static str {
        "memory"
    }

    fn max_txn_ops(&self) -> Option<usize> {
        self.max_ops
    }
}

impl MemoryStore {
    /// Applies `txn` if `holds()` is true when checked under the data lock (so no write can
    /// slip in after the fence is gone); `Err(Fenced)` and nothing written otherwise.
    fn apply(&self, txn: Txn, holds: impl FnOnce() -> bool) -> Result<bool, StoreError> {
        let ops = txn.ops.len() + txn.compares.len();
        if self.max_ops.is_some_and(|max| ops > max) {
            return Err(StoreError::Backend(format!(
                "too many operations in txn request ({ops})"
            )));
        }
        let mut data = self.lock();
        if !holds() {
            return Err(StoreError::Fenced);
        }
        for c in &txn.compares {
            let Compare::Value { key, value } = c;
            if data.get(key) != value.as_ref() {
                return Ok(false);
            }
        }
        for op in txn.ops {
            match op {
                Op::Put { key, value } => {
                    data.insert(key, value);
                }
                Op::Delete { key } => {
                    data.remove(&key);
                }
            }
        }
        Ok(true)
    }
}

/// Whether a leadership still holds; checked under the store's lock before every write.
pub type Holds = Arc<dyn Fn() -> bool + Send + Sync>;

/// A [`MemoryStore`] as one leadership sees it: reads pass through; a transaction is refused
/// with [`StoreError::Fenced`], writing nothing, once `holds` says the leadership is gone. The
/// in-memory twin of the fenced etcd store.
pub struct FencedMemoryStore {
    inner: Arc<MemoryStore>,
    holds: Holds,
}

impl FencedMemoryStore {
    /// `inner`, written only while `holds()` is true.
    pub fn new(inner: Arc<MemoryStore>, holds: Holds) -> Self {
        FencedMemoryStore { inner, holds }
    }
}

#[async_trait]
impl StateStore for FencedMemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key).await
    }

    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.inner.scan_prefix(prefix).await
    }

    async fn scan_from(
        &self,
        prefix: &str,
        from: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.inner.scan_from(prefix, from, limit).await
    }

    async fn txn(&self, txn: Txn) -> Result<bool, StoreError> {
        self.inner.apply(txn, || (self.holds)())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }

    fn max_txn_ops(&self) -> Option<usize> {
        self.inner.max_ops
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn meets_the_store_contract() {
        super::super::contract::check(&MemoryStore::new()).await;
    }

    #[tokio::test]
    async fn a_fenced_view_meets_the_contract_and_writes_nothing_once_fenced() {
        let inner = Arc::new(MemoryStore::new());
        let holding = Arc::new(AtomicBool::new(true));
        let h = holding.clone();
        let fenced =
            FencedMemoryStore::new(inner.clone(), Arc::new(move || h.load(Ordering::SeqCst)));
        super::super::contract::check(&fenced).await;

        holding.store(false, Ordering::SeqCst);
        let mut t = Txn::default();
        t.put("late", b"x".to_vec());
        assert!(matches!(fenced.txn(t).await, Err(StoreError::Fenced)));
        assert_eq!(inner.get("late").await.unwrap(), None);
        // Reads still work: a deposed leader may look, not touch.
        assert!(fenced.get("a/2").await.unwrap().is_some());
    }
}
