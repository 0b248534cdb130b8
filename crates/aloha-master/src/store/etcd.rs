//! The HA store: etcd, under the key prefix `/aloha/<cluster>/`.
//!
//! A store handed to a leader carries a [`Fence`]: every transaction it runs also compares the
//! leader key's create revision with the one the leader won with, so a deposed leader's write
//! is refused by etcd itself, however late it arrives. A local check of the lease deadline
//! runs first, so a leader that may have lost its lease (a paused process, a slow etcd) does
//! not even try.
//!
//! Transient errors (`Unavailable`, deadlines, broken connections) are retried with backoff for
//! a bounded time and then reported as [`StoreError::Unavailable`]; never as success. Retrying a
//! transaction is safe because every write the master makes is an idempotent put of a whole
//! record under the fence.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use etcd_client::{
    Client, Compare as ECompare, CompareOp, GetOptions, Txn as ETxn, TxnOp, TxnOpResponse,
};

use super::{Compare, Op, StateStore, StoreError, Txn};
use crate::lease::LeaseGuard;

/// How many keys one range request reads when scanning.
const SCAN_PAGE: i64 = 500;

/// The largest etcd answer read: a page of [`SCAN_PAGE`] records of up to etcd's largest
/// request (1.5 MiB by default) each would be more, but records are far smaller.
pub const MAX_ANSWER_BYTES: usize = 256 << 20;

/// Proof of leadership attached to every write.
#[derive(Clone)]
pub struct Fence {
    /// The full etcd key the leader created when elected.
    pub leader_key: Vec<u8>,
    /// Its create revision: the leader's epoch.
    pub revision: i64,
    /// The local lease deadline.
    pub guard: Arc<LeaseGuard>,
}

/// The etcd store; cheap to clone.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    /// Reads: a KV client that accepts answers up to [`MAX_ANSWER_BYTES`] (the gRPC default
    /// is 4 MiB, which a page of large records can pass).
    kv: etcd_client::KvClient,
    prefix: String,
    fence: Option<Fence>,
    retry_for: Duration,
}

/// Maps an etcd client error: transport trouble is transient, the rest is not.
pub fn classify(e: etcd_client::Error) -> StoreError {
    use etcd_client::Error as E;
    match &e {
        E::GRpcStatus(s)
            if matches!(
                s.code(),
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::Unknown
                    | tonic::Code::Cancelled
                    | tonic::Code::ResourceExhausted
                    | tonic::Code::Aborted
            ) =>
        {
            StoreError::Unavailable(format!("etcd: {}", s.message()))
        }
        E::TransportError(_) | E::IoError(_) => StoreError::Unavailable(format!("etcd: {e}")),
        _ => StoreError::Backend(format!("etcd: {e}")),
    }
}

impl EtcdStore {
    /// A store over `client` for cluster `cluster` (keys under `/aloha/<cluster>/`), unfenced:
    /// for reads and for tests.
    pub fn new(client: Client, cluster: &str) -> Self {
        EtcdStore {
            kv: client
                .kv_client()
                .max_decoding_message_size(MAX_ANSWER_BYTES),
            client,
            prefix: cluster_prefix(cluster),
            fence: None,
            retry_for: Duration::from_secs(3),
        }
    }

    /// Connects to etcd at `endpoints` (with the master's timeouts) for cluster `cluster`,
    /// unfenced: for tools and tests; the master gets its stores from its election.
    pub async fn connect(endpoints: &[String], cluster: &str) -> Result<Self, StoreError> {
        let opts = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5));
        let client = Client::connect(endpoints, Some(opts))
            .await
            .map_err(classify)?;
        Ok(Self::new(client, cluster))
    }

    /// The same store with every write fenced by `fence`.
    pub fn fenced(&self, fence: Fence) -> Self {
        EtcdStore {
            fence: Some(fence),
            ..self.clone()
        }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_millis(500))
            .with_total_delay(Some(self.retry_for))
            .without_max_times()
    }

    async fn txn_once(&self, txn: &Txn) -> Result<bool, StoreError> {
        if let Some(f) = &self.fence {
            if !f.guard.valid() {
                return Err(StoreError::Fenced);
            }
        }
        let mut compares: Vec<ECompare> = txn
            .compares
            .iter()
            .map(|c| {
                let Compare::Value { key, value } = c;
                match value {
                    Some(v) => ECompare::value(self.full(key), CompareOp::Equal, v.clone()),
                    // Absent: a key that was never created has version 0.
                    None => ECompare::version(self.full(key), CompareOp::Equal, 0),
                }
            })
            .collect();
        let mut on_failure = Vec::new();
        if let Some(f) = &self.fence {
            compares.push(ECompare::create_revision(
                f.leader_key.clone(),
                CompareOp::Equal,
                f.revision,
            ));
            on_failure.push(TxnOp::get(f.leader_key.clone(), None));
        }
        let ops: Vec<TxnOp> = txn
            .ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value } => TxnOp::put(self.full(key), value.clone(), None),
                Op::Delete { key } => TxnOp::delete(self.full(key), None),
            })
            .collect();
        let etxn = ETxn::new().when(compares).and_then(ops).or_else(on_failure);
        let resp = self.client.clone().txn(etxn).await.map_err(classify)?;
        if resp.succeeded() {
            return Ok(true);
        }
        if let Some(f) = &self.fence {
            // Tell a lost fence from a failed caller compare.
            let still_ours = resp.op_responses().into_iter().any(|r| match r {
                TxnOpResponse::Get(g) => g.kvs().iter().any(|kv| {
                    kv.key() == f.leader_key.as_slice() && kv.create_revision() == f.revision
                }),
                _ => false,
            });
            if !still_ours {
                return Err(StoreError::Fenced);
            }
        }
        Ok(false)
    }
}

/// `/aloha/<cluster>/`.
pub fn cluster_prefix(cluster: &str) -> String {
    format!("/aloha/{cluster}/")
}

fn retryable(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable(_))
}

#[async_trait]
impl StateStore for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let full = self.full(key);
        (|| async {
            let resp = self
                .client
                .clone()
                .get(full.clone(), None)
                .await
                .map_err(classify)?;
            Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
        })
        .retry(self.backoff())
        .when(retryable)
        .await
    }

    async fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let full = self.full(prefix);
        let end = prefix_end(full.as_bytes());
        let mut out = Vec::new();
        let mut from = full.clone().into_bytes();
        loop {
            let start = from.clone();
            let end = end.clone();
            let page = (|| async {
                let opts = GetOptions::new()
                    .with_range(end.clone())
                    .with_limit(SCAN_PAGE);
                self.kv
                    .clone()
                    .get(start.clone(), Some(opts))
                    .await
                    .map_err(classify)
            })
            .retry(self.backoff())
            .when(retryable)
            .await?;
            let kvs = page.kvs();
            for kv in kvs {
                let key = String::from_utf8_lossy(kv.key());
                let rel = key.strip_prefix(&self.prefix).unwrap_or(&key).to_string();
                out.push((rel, kv.value().to_vec()));
            }
            if !page.more() || kvs.is_empty() {
                break;
            }
            // Continue right after the last key of this page.
            let mut next = kvs[kvs.len() - 1].key().to_vec();
            next.push(0);
            from = next;
        }
        Ok(out)
    }

    async fn scan_from(
        &self,
        prefix: &str,
        from: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let start = self.full(from);
        let end = prefix_end(self.full(prefix).as_bytes());
        let resp = (|| async {
            let opts = GetOptions::new()
                .with_range(end.clone())
                .with_limit(limit.min(i64::MAX as usize) as i64);
            self.kv
                .clone()
                .get(start.clone(), Some(opts))
                .await
                .map_err(classify)
        })
        .retry(self.backoff())
        .when(retryable)
        .await?;
        Ok(resp
            .kvs()
            .iter()
            .map(|kv| {
                let key = String::from_utf8_lossy(kv.key());
                let rel = key.strip_prefix(&self.prefix).unwrap_or(&key).to_string();
                (rel, kv.value().to_vec())
            })
            .collect())
    }

    async fn txn(&self, txn: Txn) -> Result<bool, StoreError> {
        (|| async { self.txn_once(&txn).await })
            .retry(self.backoff())
            .when(retryable)
            .await
    }

    fn kind(&self) -> &'static str {
        "etcd"
    }

    fn max_txn_ops(&self) -> Option<usize> {
        // etcd's default --max-txn-ops.
        Some(128)
    }

    fn ambiguous_failures(&self) -> bool {
        true
    }
}

/// The smallest key greater than every key starting with `prefix` (etcd's range end).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_are_the_next_key() {
        assert_eq!(prefix_end(b"/aloha/x/"), b"/aloha/x0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
    }
}
