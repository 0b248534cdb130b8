//! A worker id belongs to one live process, and what workers and clients send is checked at
//! the edge: malformed registrations get INVALID_ARGUMENT, names with control or bidi
//! characters a 400.

use std::time::Duration;

use aloha_e2e::{app_pid, process_exists, start_worker, wait_for, Cluster};
use aloha_proto::master_service_client::MasterServiceClient;
use aloha_proto::{HeartbeatRequest, RegisterWorkerRequest};
use serde_json::json;

const T: Duration = Duration::from_secs(30);

#[test]
fn a_second_process_cannot_take_over_a_live_workers_id() {
    let mut c = Cluster::start("3s", &[("dup", 2)]);
    let api = c.api().clone();
    let id = api.submit_cmd("single", &["sleep", "120"], json!({"max_retries": 1}));
    api.wait_state(&id, "RUNNING", T);
    let pgid = app_pid(&c.app_dir("dup", &id, 1));
    let first_address = api.workers()[0]["address"].clone();

    // Another process with the same id and its own work dir (and log dir).
    let mut opts = c.worker_opts("dup", 2);
    opts.work_dir = c.dir.path().join("dup-second");
    let logs = c.dir.path().join("second");
    std::fs::create_dir_all(&logs).unwrap();
    c.workers
        .push(start_worker(&[c.master.rpc_url()], &opts, &logs));
    let second = c.workers.len() - 1;
    // Longer than the worker timeout: the first keeps its id, its app and attempt 1; nothing
    // runs twice.
    std::thread::sleep(Duration::from_secs(5));
    let app = api.app(&id);
    assert_eq!(
        (app["state"].as_str(), app["attempt"].as_u64()),
        (Some("RUNNING"), Some(1)),
        "{app}"
    );
    assert!(process_exists(-pgid));
    assert!(
        !opts.work_dir.join(&id).exists(),
        "the second worker launched the app"
    );
    wait_for("the second worker to be refused", T, || {
        let log = c.workers[second].log_text();
        log.contains("in use by another live worker process")
            .then_some(())
    });
    let workers = api.workers();
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0]["state"], "ALIVE");
    assert_eq!(workers[0]["address"], first_address);

    // The first process really goes: once it is declared DEAD, the second takes the id and
    // the app is relaunched there (attempt 2), as after any worker loss.
    c.workers[0].kill9();
    wait_for("the first worker's app to die", T, || {
        (!process_exists(-pgid)).then_some(())
    });
    let app = wait_for("attempt 2 running on the second worker", T, || {
        let a = api.app(&id);
        (a["attempt"] == 2 && a["state"] == "RUNNING").then_some(a)
    });
    assert_eq!(app["worker_id"], "dup");
    assert!(opts.work_dir.join(&id).join("2").exists());
    let workers = api.workers();
    assert_eq!(workers[0]["state"], "ALIVE");
    assert_ne!(workers[0]["address"], first_address);
}

fn valid(id: &str) -> RegisterWorkerRequest {
    RegisterWorkerRequest {
        worker_id: id.into(),
        address: "127.0.0.1:1".into(),
        cores: 2,
        memory_mb: 1024,
        kinds: vec!["process".into()],
        instance: "0123456789abcdef0123456789abcdef".into(),
        ..Default::default()
    }
}

#[test]
fn malformed_registrations_and_names_are_refused_at_the_edge() {
    let c = Cluster::start("10s", &[]);
    let api = c.api().clone();
    let url = c.master.rpc_url();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut client = MasterServiceClient::connect(url).await.unwrap();
        let bad: Vec<(&str, RegisterWorkerRequest, &str)> = vec![
            (
                "no cores",
                RegisterWorkerRequest {
                    cores: 0,
                    ..valid("w")
                },
                "cores must be 1..=65536 (got 0)",
            ),
            (
                "absurd capacity",
                RegisterWorkerRequest {
                    cores: u32::MAX,
                    memory_mb: u64::MAX,
                    ..valid("w")
                },
                "cores must be 1..=65536",
            ),
            (
                "absurd memory",
                RegisterWorkerRequest {
                    memory_mb: u64::MAX,
                    ..valid("w")
                },
                "memory_mb must be at most",
            ),
            (
                "not an address",
                RegisterWorkerRequest {
                    address: "not an address".into(),
                    ..valid("w")
                },
                "address \"not an address\" is not host:port",
            ),
            (
                "bad port",
                RegisterWorkerRequest {
                    address: "host:0".into(),
                    ..valid("w")
                },
                "is not host:port",
            ),
            ("empty id", valid(""), "worker_id is required"),
            (
                "1 MB id",
                valid(&"x".repeat(1 << 20)),
                "worker_id is 1048576 bytes long; at most 128",
            ),
            (
                "NUL in id",
                valid("w\0x"),
                "worker_id \"w\\0x\" contains '\\0'",
            ),
            ("bidi in id", valid("w\u{202E}x"), "contains '\\u{202e}'"),
            (
                "5000 kinds",
                RegisterWorkerRequest {
                    kinds: (0..5000).map(|i| format!("k{i}")).collect(),
                    ..valid("w")
                },
                "5000 kinds; at most 64",
            ),
            (
                "bad kind",
                RegisterWorkerRequest {
                    kinds: vec!["Bad Kind".into()],
                    ..valid("w")
                },
                "kind \"Bad Kind\" must be",
            ),
            (
                "bad instance",
                RegisterWorkerRequest {
                    instance: "a b".into(),
                    ..valid("w")
                },
                "instance",
            ),
        ];
        for (what, req, expected) in bad {
            let status = client.register_worker(req).await.expect_err(what);
            assert_eq!(
                status.code(),
                tonic::Code::InvalidArgument,
                "{what}: {status:?}"
            );
            assert!(
                status.message().contains(expected),
                "{what}: {}",
                status.message()
            );
        }
        let status = client
            .heartbeat(HeartbeatRequest {
                worker_id: "w\0".into(),
            })
            .await
            .expect_err("heartbeat");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);

        // A valid one is accepted; another process with its id is refused while it is alive.
        let ok = client
            .register_worker(valid("w-1.a_b:c"))
            .await
            .unwrap()
            .into_inner();
        assert!(ok.accepted, "{ok:?}");
        let again = client
            .register_worker(valid("w-1.a_b:c"))
            .await
            .unwrap()
            .into_inner();
        assert!(again.accepted, "the same instance re-registers: {again:?}");
        let other = RegisterWorkerRequest {
            instance: "ffff".into(),
            ..valid("w-1.a_b:c")
        };
        let status = client.register_worker(other).await.expect_err("takeover");
        assert_eq!(status.code(), tonic::Code::AlreadyExists);
        assert!(
            status.message().starts_with(
                "worker id w-1.a_b:c is in use by another live worker process (registered at "
            ),
            "{}",
            status.message()
        );
    });
    // Nothing malformed was registered, and none of the 5000 kinds became valid.
    let workers = api.workers();
    assert_eq!(workers.len(), 1, "{workers:?}");
    let r = api.post(
        "/api/v1/apps",
        &json!({"name": "x", "kind": "k4999", "spec": {}}),
    );
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert!(r.body["error"]
        .as_str()
        .unwrap()
        .starts_with("unknown kind"));

    // REST: control and bidi characters in names and labels are refused, naming the field.
    let base = json!({"kind": "process", "spec": {"command": ["true"]}});
    for (body, field) in [
        (json!({"name": "a\u{0}b"}), "name"),
        (json!({"name": "invoice\u{202E}fdp.exe"}), "name"),
        (
            json!({"name": "ok", "labels": {"team\u{2066}": "x"}}),
            "label key",
        ),
        (
            json!({"name": "ok", "labels": {"team": "a\u{0}"}}),
            "label value",
        ),
    ] {
        let mut b = base.clone();
        for (k, v) in body.as_object().unwrap() {
            b[k] = v.clone();
        }
        let r = api.post("/api/v1/apps", &b);
        assert_eq!(r.status, 400, "{b}: {:?}", r.body);
        let msg = r.body["error"].as_str().unwrap_or_default();
        assert!(
            msg.starts_with(field) && msg.contains("control or bidi characters"),
            "{b}: {msg}"
        );
    }
}
