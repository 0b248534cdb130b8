//! An in-memory store for unit tests.

use std::collections::BTreeMap;
use std::sync::Mutex;

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
        let ops = txn.ops.len() + txn.compares.len();
        if self.max_ops.is_some_and(|max| ops > max) {
            return Err(StoreError::Backend(format!(
                "too many operations in txn request ({ops})"
            )));
        }
        let mut data = self.lock();
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

    fn kind(&self) -> &'static str {
        "memory"
    }

    fn max_txn_ops(&self) -> Option<usize> {
        self.max_ops
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn meets_the_store_contract() {
        super::super::contract::check(&super::MemoryStore::new()).await;
    }
}
