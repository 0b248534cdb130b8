//! The engine's client-visible contract on the real binaries: idempotent submissions across a
//! SIGKILL restart and an HA failover on a real etcd, paging with a cursor, and the retention
//! of finished apps.

use std::collections::HashSet;
use std::time::Duration;

use aloha_e2e::etcd::EtcdCluster;
use aloha_e2e::{
    free_port, ha_masters, leader_of, wait_for, Api, Cluster, MasterOpts, MasterProc, Resp,
};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(40);

fn body(name: &str, cores: u32) -> Value {
    json!({"name": name, "kind": "process", "spec": {"command": ["true"]}, "cores": cores})
}

fn submit_keyed(api: &Api, key: &str, body: &Value) -> Resp {
    api.try_post_with("/api/v1/apps", body, &[("Idempotency-Key", key)])
        .unwrap_or_else(|e| panic!("POST with key {key}: {e}"))
}

#[test]
fn an_idempotent_submission_is_answered_with_the_first_app_after_a_sigkill_restart() {
    let mut c = Cluster::start("2s", &[]);
    let api = c.api().clone();
    let first = submit_keyed(&api, "order-17", &body("pay", 64));
    assert_eq!(first.status, 201, "{:?}", first.body);
    let id = first.body["id"].as_str().unwrap().to_string();
    assert_eq!(first.body["idempotency_key"], "order-17");
    let again = submit_keyed(&api, "order-17", &body("pay", 64));
    assert_eq!(
        (again.status, again.body["id"].as_str()),
        (200, Some(id.as_str()))
    );

    let log_dir = c.dir.path().to_path_buf();
    c.master.restart_hard(&log_dir);
    let after = submit_keyed(&api, "order-17", &body("pay", 64));
    assert_eq!(after.status, 200, "{:?}", after.body);
    assert_eq!(
        after.body["id"],
        id.as_str(),
        "the same app, not a second one"
    );
    let other = submit_keyed(&api, "order-17", &body("pay", 2));
    assert_eq!(other.status, 409, "{:?}", other.body);
    assert!(other.body["error"].as_str().unwrap().contains("order-17"));
    let bad = submit_keyed(&api, "has space", &body("pay", 1));
    assert_eq!(bad.status, 400, "{:?}", bad.body);
    let listed = api.get("/api/v1/apps").body["apps"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(listed, 1, "one app for all those requests");
}

#[test]
fn an_idempotent_submission_is_answered_with_the_first_app_after_an_ha_failover() {
    let dir = tempfile::Builder::new()
        .prefix("aloha-idem-ha-")
        .tempdir()
        .unwrap();
    let etcd = EtcdCluster::start(1, dir.path());
    let mut masters = ha_masters(&etcd, dir.path());
    let leader = leader_of(&masters, T);
    let first = submit_keyed(
        &masters[leader].api,
        "nightly-2026-12-03",
        &body("rollup", 64),
    );
    assert_eq!(first.status, 201, "{:?}", first.body);
    let id = first.body["id"].as_str().unwrap().to_string();

    masters[leader].proc.kill9();
    let other = 1 - leader;
    let api = masters[other].api.clone();
    let again = wait_for("the standby to take over and answer", T, || {
        let r = api
            .try_post_with(
                "/api/v1/apps",
                &body("rollup", 64),
                &[("Idempotency-Key", "nightly-2026-12-03")],
            )
            .ok()?;
        (r.status != 503).then_some(r)
    });
    assert_eq!(again.status, 200, "{:?}", again.body);
    assert_eq!(again.body["id"], id.as_str());
    let conflict = submit_keyed(&api, "nightly-2026-12-03", &body("rollup", 1));
    assert_eq!(conflict.status, 409, "{:?}", conflict.body);
    drop(masters);
    drop(etcd);
}

#[test]
fn apps_page_newest_first_with_a_cursor() {
    let c = Cluster::start("2s", &[]);
    let api = c.api();
    let ids: Vec<String> = (0..7)
        .map(|i| {
            api.submit(body(&format!("a{i}"), 64))["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &after {
            Some(a) => format!("/api/v1/apps?limit=3&after={a}"),
            None => "/api/v1/apps?limit=3".to_string(),
        };
        let r = api.get(&path);
        assert_eq!(r.status, 200, "{:?}", r.body);
        pages += 1;
        let apps = r.body["apps"].as_array().unwrap();
        assert!(apps.len() <= 3);
        seen.extend(apps.iter().map(|a| a["id"].as_str().unwrap().to_string()));
        assert!(
            r.body.as_object().unwrap().contains_key("next"),
            "next is always there"
        );
        match r.body["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let mut expected = ids.clone();
    expected.reverse();
    assert_eq!(seen, expected, "newest first, each app once");
    // The default page is 100; a larger limit is served as 1000.
    assert_eq!(
        api.get("/api/v1/apps").body["apps"]
            .as_array()
            .unwrap()
            .len(),
        7
    );
    let r = api.get("/api/v1/apps?limit=5000");
    assert_eq!(r.status, 200);
    let r = api.get("/api/v1/apps?after=not-an-id");
    assert_eq!(r.status, 400, "{:?}", r.body);
    // A waiting app says why, computed when read.
    let app = api.app(&ids[0]);
    assert!(
        app["message"]
            .as_str()
            .unwrap()
            .contains("waiting for an ALIVE worker"),
        "{app}"
    );
}

#[test]
fn finished_apps_beyond_the_retention_expire_and_answer_404() {
    let c = Cluster::start_with("2s", &[("w1", 2)], |_| {
        vec!["--retain-finished".into(), "2".into()]
    });
    let api = c.api();
    // One after the other: an older app may expire as soon as two newer ones have finished.
    let ids: Vec<String> = (0..5)
        .map(|i| {
            let id = api.submit_cmd(&format!("t{i}"), &["true"], json!({}));
            api.wait_state(&id, "FINISHED", T);
            id
        })
        .collect();
    // The retention runs with the engine's timers (at most every second).
    let gone = wait_for("three apps to expire", T, || {
        let gone: Vec<&String> = ids
            .iter()
            .filter(|id| api.get(&format!("/api/v1/apps/{id}")).status == 404)
            .collect();
        (gone.len() == 3).then(|| gone.into_iter().cloned().collect::<HashSet<String>>())
    });
    let oldest: HashSet<String> = ids[..3].iter().cloned().collect();
    assert_eq!(gone, oldest, "the oldest are removed first");
    let r = api.get(&format!("/api/v1/apps/{}", ids[0]));
    assert_eq!(r.body["error"], format!("app {} expired", ids[0]));
    let r = api.get("/api/v1/apps/app-20991231000000-999999");
    assert_eq!(r.body["error"], "app app-20991231000000-999999 not found");
    let events = api.get("/api/v1/events?after=0&follow=false&type=app.expired");
    assert_eq!(events.status, 200);
    let listed: Vec<String> = api.get("/api/v1/apps").body["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, [ids[4].clone(), ids[3].clone()]);
}

#[test]
fn a_standby_serves_reads_from_its_replica_also_without_an_etcd_quorum() {
    let dir = tempfile::Builder::new()
        .prefix("aloha-replica-")
        .tempdir()
        .unwrap();
    let mut etcd = EtcdCluster::start(3, dir.path());
    let masters = ha_masters(&etcd, dir.path());
    let leader = leader_of(&masters, T);
    let (lead, standby) = (&masters[leader].api, &masters[1 - leader].api);
    let ids: Vec<String> = (0..20)
        .map(|i| {
            lead.submit(body(&format!("r{i}"), 64))["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    // The standby follows the leader's writes: the newest app and a kill show up there.
    wait_for("the standby to list every app", T, || {
        let r = standby.try_get("/api/v1/apps?limit=1000").ok()?;
        (r.body["apps"].as_array()?.len() == ids.len()).then_some(())
    });
    assert_eq!(
        lead.post(&format!("/api/v1/apps/{}/kill", ids[3]), &json!({}))
            .status,
        202
    );
    wait_for("the standby to see the kill", T, || {
        let r = standby.try_get(&format!("/api/v1/apps/{}", ids[3])).ok()?;
        (r.body["state"] == "KILLED").then_some(())
    });
    let page = standby.get("/api/v1/apps?limit=5");
    assert_eq!(page.body["apps"][0]["id"], ids[19].as_str());
    assert_eq!(page.body["next"], ids[15].as_str());
    // Two of three etcd members gone: no quorum. The standby still answers at once, from the
    // state it last saw (a read of etcd would hang).
    etcd.kill_member(1);
    etcd.kill_member(2);
    for id in [&ids[0], &ids[3]] {
        let t0 = std::time::Instant::now();
        let r = standby
            .try_get(&format!("/api/v1/apps/{id}"))
            .expect("the standby answers");
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "took {:?}",
            t0.elapsed()
        );
    }
    let r = standby.get("/api/v1/workers");
    assert_eq!(r.status, 200);
    drop(masters);
    drop(etcd);
}

#[test]
fn readyz_is_200_only_on_the_alive_leader_whose_store_answers() {
    let c = Cluster::start("2s", &[]);
    let r = c.api().get("/readyz");
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["role"], "ALIVE");

    let dir = tempfile::Builder::new()
        .prefix("aloha-readyz-")
        .tempdir()
        .unwrap();
    let mut etcd = EtcdCluster::start(1, dir.path());
    let masters = ha_masters(&etcd, dir.path());
    let leader = leader_of(&masters, T);
    let standby = &masters[1 - leader];
    wait_for("the leader ready", T, || {
        (masters[leader].api.get("/readyz").status == 200).then_some(())
    });
    let r = standby.api.get("/readyz");
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert!(
        r.body["error"].as_str().unwrap().contains("STANDBY"),
        "{:?}",
        r.body
    );
    assert_eq!(standby.api.get("/healthz").status, 200, "the process is up");
    // Without its store the leader is not ready (and soon not the leader).
    etcd.kill_member(0);
    wait_for("the leader not ready", T, || {
        let r = masters[leader].api.try_get("/readyz").ok()?;
        (r.status == 503).then_some(())
    });
    drop(masters);
}

#[test]
fn a_master_without_its_store_answers_reads_503_within_seconds() {
    let dir = tempfile::Builder::new()
        .prefix("aloha-noquorum-")
        .tempdir()
        .unwrap();
    let mut etcd = EtcdCluster::start(3, dir.path());
    etcd.kill_member(1);
    etcd.kill_member(2);
    // A master that starts while etcd has no quorum can neither lead nor load a replica: its
    // reads go to the store, which does not answer.
    let opts = MasterOpts {
        http_port: free_port(),
        rpc_port: free_port(),
        state_dir: dir.path().join("m0"),
        worker_timeout: "3s".into(),
        etcd: Some((etcd.endpoints(), "2s".into())),
    };
    let m = MasterProc::start("m0", opts, dir.path());
    for path in [
        "/api/v1/apps",
        "/api/v1/apps/app-20200101000000-0001",
        "/api/v1/workers",
    ] {
        let started = std::time::Instant::now();
        let r = m
            .api
            .try_get(path)
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let took = started.elapsed();
        assert_eq!(r.status, 503, "{path}: {:?}", r.body);
        assert!(
            took < Duration::from_secs(8),
            "{path} took {took:?}: reads must be bounded"
        );
        assert!(
            r.body["error"].as_str().unwrap().contains("store"),
            "{path}: {:?}",
            r.body
        );
    }
    let raw = reqwest::blocking::get(format!("{}/api/v1/apps", m.api.base)).unwrap();
    assert_eq!(raw.headers()["retry-after"], "1");
    drop(m);
    drop(etcd);
}
