//! High availability over a real etcd: three masters, failover by SIGKILL, SIGSTOP and
//! SIGTERM, etcd member and quorum loss. Nothing acknowledged is lost, no app runs twice, and a
//! deposed leader writes nothing.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aloha_e2e::etcd::EtcdCluster;
use aloha_e2e::{
    app_pid, free_port, process_exists, start_worker, wait_for, Api, MasterOpts, MasterProc, Proc,
    WorkerOpts,
};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(40);

struct Ha {
    masters: Vec<MasterProc>,
    workers: Vec<Proc>,
    etcd: EtcdCluster,
    dir: tempfile::TempDir,
}

impl Drop for Ha {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let procs = self
                .masters
                .iter()
                .map(|m| &m.proc)
                .chain(self.workers.iter());
            for p in procs {
                let text = p.log_text();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(40)..];
                eprintln!("----- last lines of {} -----\n{}", p.name, tail.join("\n"));
            }
        }
    }
}

impl Ha {
    fn start(etcd_members: usize, masters: usize, lease_ttl: &str, workers: &[(&str, u32)]) -> Ha {
        let dir = tempfile::Builder::new()
            .prefix("aloha-ha-")
            .tempdir()
            .unwrap();
        let etcd = EtcdCluster::start(etcd_members, dir.path());
        let endpoints = etcd.endpoints();
        let masters: Vec<MasterProc> = (0..masters)
            .map(|i| {
                let opts = MasterOpts {
                    http_port: free_port(),
                    rpc_port: free_port(),
                    state_dir: dir.path().join(format!("m{i}")),
                    worker_timeout: "3s".into(),
                    etcd: Some((endpoints.clone(), lease_ttl.into())),
                };
                MasterProc::start(&format!("m{i}"), opts, dir.path())
            })
            .collect();
        let mut ha = Ha {
            masters,
            workers: Vec::new(),
            etcd,
            dir,
        };
        ha.wait_leader(None);
        for (id, cores) in workers {
            ha.add_worker(id, *cores);
        }
        let l = ha.wait_leader(None);
        ha.masters[l].api.wait_alive_workers(workers.len(), T);
        ha
    }

    fn add_worker(&mut self, id: &str, cores: u32) {
        let rpcs: Vec<String> = self.masters.iter().map(|m| m.rpc_url()).collect();
        let opts = WorkerOpts {
            id: id.into(),
            cores,
            memory_mb: 4096,
            work_dir: self.dir.path().join(id),
            kill_grace_ms: 2000,
        };
        self.workers
            .push(start_worker(&rpcs, &opts, self.dir.path()));
    }

    fn role(&self, i: usize) -> Option<String> {
        let r = self.masters[i].api.try_get("/api/v1/cluster").ok()?;
        r.body["role"].as_str().map(str::to_string)
    }

    /// Waits for a master other than `not` to be ALIVE; returns its index.
    fn wait_leader(&self, not: Option<usize>) -> usize {
        wait_for("an ALIVE master", T, || {
            (0..self.masters.len())
                .filter(|&i| Some(i) != not)
                .find(|&i| self.role(i).as_deref() == Some("ALIVE"))
        })
    }

    fn apis(&self) -> Vec<Api> {
        self.masters.iter().map(|m| m.api.clone()).collect()
    }

    fn app_dir(&self, worker: &str, app: &str, attempt: u32) -> std::path::PathBuf {
        self.dir
            .path()
            .join(worker)
            .join(app)
            .join(attempt.to_string())
    }
}

/// Submits through whichever master accepts; `None` when none does right now.
fn submit_any(apis: &[Api], body: &Value) -> Option<String> {
    for api in apis {
        if let Ok(r) = api.try_post("/api/v1/apps", body) {
            if r.status == 201 {
                return r.body["id"].as_str().map(str::to_string);
            }
        }
    }
    None
}

fn long(name: &str) -> Value {
    json!({"name": name, "kind": "process", "spec": {"command": ["sleep", "600"]}, "max_retries": 1})
}

/// Which workers hold a directory for any attempt of `app`.
fn attempt_dirs(root: &Path, workers: &[&str], app: &str) -> Vec<String> {
    let mut out = Vec::new();
    for w in workers {
        if let Ok(rd) = std::fs::read_dir(root.join(w).join(app)) {
            for e in rd.flatten() {
                out.push(format!("{w}/{}", e.file_name().to_string_lossy()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn sigkill_of_the_leader_during_submissions_loses_nothing_and_relaunches_nothing() {
    let mut ha = Ha::start(1, 3, "2s", &[("w1", 8), ("w2", 8)]);
    let leader = ha.wait_leader(None);
    let roles: Vec<Option<String>> = (0..3).map(|i| ha.role(i)).collect();
    assert_eq!(
        roles
            .iter()
            .filter(|r| r.as_deref() == Some("STANDBY"))
            .count(),
        2,
        "{roles:?}"
    );
    wait_for("all three masters listed as members", T, || {
        let cluster = ha.masters[leader].api.get("/api/v1/cluster").body;
        (cluster["members"].as_array()?.len() == 3).then_some(())
    });

    let apis = ha.apis();
    let running: Vec<String> = (0..4)
        .map(|i| submit_any(&apis, &long(&format!("long{i}"))).unwrap())
        .collect();
    for id in &running {
        ha.masters[leader].api.wait_state(id, "RUNNING", T);
    }
    let before: Vec<(String, Value)> = running
        .iter()
        .map(|id| (id.clone(), ha.masters[leader].api.app(id)))
        .collect();

    // Submit continuously from another thread while the leader is killed.
    let acked = Arc::new(Mutex::new(Vec::<(String, Instant)>::new()));
    let done = Arc::new(AtomicBool::new(false));
    let submitter = {
        let (apis, acked, done) = (apis.clone(), acked.clone(), done.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !done.load(Ordering::SeqCst) {
                let body = json!({"name": format!("burst{n}"), "kind": "process", "spec": {"command": ["true"]}});
                if let Some(id) = submit_any(&apis, &body) {
                    acked.lock().unwrap().push((id, Instant::now()));
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(700));
    let killed_at = Instant::now();
    ha.masters[leader].proc.kill9();
    let new_leader = ha.wait_leader(Some(leader));
    std::thread::sleep(Duration::from_millis(1500));
    done.store(true, Ordering::SeqCst);
    submitter.join().unwrap();

    let api = ha.masters[new_leader].api.clone();
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.iter().any(|(_, t)| *t > killed_at),
        "the new leader accepted submissions"
    );
    let listed: HashSet<String> = api.get("/api/v1/apps?limit=100000").body["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    for (id, _) in &acked {
        assert!(
            listed.contains(id),
            "acknowledged app {id} was lost in the failover"
        );
    }
    // Every acknowledged burst app runs to the end on the new leader.
    for (id, _) in &acked {
        api.wait_state(id, "FINISHED", T);
    }
    // Running apps were never relaunched: same worker, same attempt, one directory each.
    for (id, old) in &before {
        let app = api.wait_state(id, "RUNNING", T);
        assert_eq!(app["attempt"], 1, "{app}");
        assert_eq!(app["worker_id"], old["worker_id"]);
        assert_eq!(attempt_dirs(ha.dir.path(), &["w1", "w2"], id).len(), 1);
    }
}

#[test]
fn a_paused_leader_is_fenced_writes_nothing_and_steps_down() {
    let ha = Ha::start(1, 2, "2s", &[("w1", 4)]);
    let old = ha.wait_leader(None);
    let apis = ha.apis();
    let first = submit_any(&apis, &long("first")).unwrap();
    ha.masters[old].api.wait_state(&first, "RUNNING", T);
    let pgid = app_pid(&ha.app_dir("w1", &first, 1));

    ha.masters[old].proc.signal(libc::SIGSTOP);
    let new = ha.wait_leader(Some(old));
    let api = ha.masters[new].api.clone();
    let second = submit_any(std::slice::from_ref(&api), &long("second")).unwrap();
    api.wait_state(&second, "RUNNING", T);
    api.wait_state(&first, "RUNNING", T);
    // Let the new leader settle, then remember the newest write to the cluster's state.
    std::thread::sleep(Duration::from_millis(500));
    let state_prefix = "/aloha/aloha/";
    let rev_before = ha
        .etcd
        .max_mod_revision(&format!("{state_prefix}apps/"))
        .max(ha.etcd.max_mod_revision(&format!("{state_prefix}workers/")));

    // The old leader wakes up believing it leads, with every worker "silent" for seconds.
    ha.masters[old].proc.signal(libc::SIGCONT);
    wait_for("the old leader to step down", T, || {
        (ha.role(old).as_deref() == Some("STANDBY")).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let rev_after = ha
        .etcd
        .max_mod_revision(&format!("{state_prefix}apps/"))
        .max(ha.etcd.max_mod_revision(&format!("{state_prefix}workers/")));
    assert_eq!(
        rev_before, rev_after,
        "the deposed leader wrote to the cluster state"
    );
    assert_eq!(ha.role(new).as_deref(), Some("ALIVE"));
    let log = ha.masters[old].proc.log_text();
    assert!(log.contains("stepping down"), "{log}");

    // Nothing ran twice, nothing was relaunched.
    for id in [&first, &second] {
        let app = api.app(id);
        assert_eq!(
            (app["state"].as_str(), app["attempt"].as_u64()),
            (Some("RUNNING"), Some(1)),
            "{app}"
        );
        assert_eq!(
            attempt_dirs(ha.dir.path(), &["w1"], id),
            ["w1/1".to_string()]
        );
    }
    assert!(process_exists(-pgid));
    // A standby refuses mutations and points at the leader.
    let r = ha.masters[old].api.post("/api/v1/apps", &long("x"));
    assert_eq!(r.status, 503);
    assert_eq!(r.body["error"], "not leader");
    assert_eq!(r.body["leader"], api.base.as_str());
    // Reads work on the standby.
    assert_eq!(ha.masters[old].api.app(&first)["state"], "RUNNING");
}

#[test]
fn sigterm_hands_leadership_over_in_well_under_a_second() {
    let mut ha = Ha::start(1, 2, "5s", &[("w1", 2)]);
    let old = ha.wait_leader(None);
    let apis = ha.apis();
    let id = submit_any(&apis, &long("keeps-running")).unwrap();
    ha.masters[old].api.wait_state(&id, "RUNNING", T);
    let start = Instant::now();
    ha.masters[old].proc.signal(libc::SIGTERM);
    let new = ha.wait_leader(Some(old));
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "failover after SIGTERM took {took:?}"
    );
    let api = ha.masters[new].api.clone();
    assert!(ha.masters[old]
        .proc
        .wait_exit(T)
        .is_some_and(|s| s.success()));
    // The worker follows the new leader by itself; the app is untouched.
    api.wait_alive_workers(1, T);
    let app = api.wait_state(&id, "RUNNING", T);
    assert_eq!(app["attempt"], 1);
    let after = submit_any(std::slice::from_ref(&api), &long("after")).unwrap();
    api.wait_state(&after, "RUNNING", T);
}

#[test]
fn losing_an_etcd_member_goes_unnoticed_and_losing_quorum_is_survived() {
    let mut ha = Ha::start(3, 2, "5s", &[("w1", 4)]);
    let leader = ha.wait_leader(None);
    let api = ha.masters[leader].api.clone();
    let apis = ha.apis();
    let id = submit_any(&apis, &long("steady")).unwrap();
    api.wait_state(&id, "RUNNING", T);

    // One member of three: nobody notices.
    ha.etcd.kill_member(0);
    for i in 0..5 {
        let r = api.post("/api/v1/apps", &json!({"name": format!("one-down-{i}"), "kind": "process", "spec": {"command": ["true"]}}));
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    assert_eq!(ha.role(leader).as_deref(), Some("ALIVE"));

    // Two of three: no quorum. Mutations get 503 (never a false 201), and the leader steps down.
    ha.etcd.kill_member(1);
    wait_for("mutations to be refused without quorum", T, || {
        let r = api
            .try_post(
                "/api/v1/apps",
                &json!({"name": "no-quorum", "kind": "process", "spec": {"command": ["true"]}}),
            )
            .ok()?;
        assert_ne!(
            r.status, 201,
            "a write was acknowledged without an etcd quorum"
        );
        (r.status == 503).then_some(())
    });
    wait_for("the leader to step down", T, || {
        (ha.role(leader).as_deref() != Some("ALIVE")).then_some(())
    });

    // etcd comes back: a leader is elected again and work resumes; the app never stopped.
    ha.etcd.start_member(0);
    ha.etcd.start_member(1);
    ha.etcd.wait_healthy();
    let again = ha.wait_leader(None);
    let api = ha.masters[again].api.clone();
    let app = api.wait_state(&id, "RUNNING", T);
    assert_eq!(app["attempt"], 1);
    let after = submit_any(&ha.apis(), &long("after-quorum")).unwrap();
    api.wait_state(&after, "RUNNING", T);
}
