//! The etcd edges of the master against a real one-member etcd: the `StateStore` contract
//! (the same suite memory and redb pass in their unit tests), unfenced and fenced; the fence
//! refusing every write once the leader key is gone; and the etcd `Election` (a second
//! candidate waits, the next leader has a higher epoch, a resigned leader writes nothing).

use std::time::Duration;

use aloha_e2e::etcd::EtcdCluster;
use aloha_master::election::etcd::EtcdElection;
use aloha_master::election::{Election, LeaderInfo};
use aloha_master::store::etcd::EtcdStore;
use aloha_master::store::{contract, Compare, StoreError, Txn};

struct Etcd {
    endpoints: Vec<String>,
    _etcd: EtcdCluster,
    _dir: tempfile::TempDir,
}

fn etcd() -> Etcd {
    let dir = tempfile::Builder::new()
        .prefix("aloha-store-etcd-")
        .tempdir()
        .unwrap();
    let etcd = EtcdCluster::start(1, dir.path());
    Etcd {
        endpoints: etcd.endpoints().split(',').map(str::to_string).collect(),
        _etcd: etcd,
        _dir: dir,
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn me(n: u16) -> LeaderInfo {
    LeaderInfo {
        http: format!("http://127.0.0.1:{n}"),
        rpc: format!("http://127.0.0.1:{}", n + 1),
        epoch: 0,
        lease: 0,
        generation: 0,
    }
}

fn put(key: &str) -> Txn {
    let mut t = Txn::default();
    t.put(key, b"x".to_vec());
    t
}

const TTL: Duration = Duration::from_secs(5);

#[test]
fn the_etcd_store_meets_the_store_contract() {
    let e = etcd();
    block_on(async {
        let store = EtcdStore::connect(&e.endpoints, "contract").await.unwrap();
        contract::check(&store).await;
    });
}

#[test]
fn a_fenced_etcd_store_meets_the_contract_and_writes_nothing_once_the_leader_key_is_gone() {
    let e = etcd();
    block_on(async {
        let election =
            EtcdElection::connect(&e.endpoints, "fenced", me(1000), TTL, Default::default())
                .await
                .unwrap();
        let mut candidacy = election.candidacy().await.unwrap();
        let leadership = candidacy.campaign().await.unwrap();
        let fenced = leadership.store.clone();
        contract::check(fenced.as_ref()).await;

        // A failed compare of the caller's is `Ok(false)` while the fence holds, not `Fenced`.
        let t = Txn {
            compares: vec![Compare::Value {
                key: "a/2".into(),
                value: None,
            }],
            ops: put("nope").ops,
        };
        assert!(!fenced.txn(t).await.unwrap());

        // The leader key disappears (an operator deleted it, or etcd expired its lease).
        let reader = election.store();
        let leader_keys = reader.scan_prefix("election/").await.unwrap();
        assert_eq!(leader_keys.len(), 1, "{leader_keys:?}");
        let mut t = Txn::default();
        t.delete(leader_keys[0].0.clone());
        assert!(reader.txn(t).await.unwrap());

        // The local lease deadline has not passed: the refusal comes from etcd's compare.
        assert!(leadership.guard.valid());
        assert!(matches!(
            fenced.txn(put("late")).await,
            Err(StoreError::Fenced)
        ));
        assert_eq!(reader.get("late").await.unwrap(), None);
        // Reads still work.
        assert!(fenced.get("a/2").await.unwrap().is_some());
        candidacy.resign().await;
    });
}

#[test]
fn the_etcd_election_makes_a_second_candidate_wait_and_fences_a_resigned_leader() {
    let e = etcd();
    block_on(async {
        let a = EtcdElection::connect(&e.endpoints, "election", me(1000), TTL, Default::default())
            .await
            .unwrap();
        let b = EtcdElection::connect(&e.endpoints, "election", me(2000), TTL, Default::default())
            .await
            .unwrap();
        assert_eq!(b.leader().await.ok().flatten(), None);
        let mut ca = a.candidacy().await.unwrap();
        let la = ca.campaign().await.unwrap();
        let leader = b.leader().await.unwrap().unwrap();
        assert_eq!(leader.http, me(1000).http);
        assert_eq!(leader.epoch, la.epoch);

        let mut cb = b.candidacy().await.unwrap();
        assert_eq!(
            a.members().await.unwrap(),
            [me(1000).http.clone(), me(2000).http.clone()]
        );
        let mut b_campaign = tokio::spawn(async move {
            let l = cb.campaign().await;
            (cb, l)
        });
        assert!(
            tokio::time::timeout(Duration::from_millis(500), &mut b_campaign)
                .await
                .is_err(),
            "b was elected while a leads"
        );
        assert!(la.store.txn(put("by-a")).await.unwrap());

        // a resigns: b is elected at once, with a higher epoch; a's late write is refused by
        // etcd (its local deadline has not passed) and writes nothing.
        ca.resign().await;
        let (cb, lb) = tokio::time::timeout(Duration::from_secs(3), b_campaign)
            .await
            .expect("b elected at once")
            .unwrap();
        let lb = lb.unwrap();
        assert!(lb.epoch > la.epoch);
        assert!(la.guard.valid());
        assert!(matches!(
            la.store.txn(put("late")).await,
            Err(StoreError::Fenced)
        ));
        let reader = a.store();
        assert_eq!(reader.get("late").await.unwrap(), None);
        assert!(lb.store.txn(put("by-b")).await.unwrap());
        assert_eq!(a.leader().await.unwrap().unwrap().epoch, lb.epoch);
        assert_eq!(a.members().await.unwrap(), [me(2000).http.clone()]);
        cb.resign().await;
    });
}
