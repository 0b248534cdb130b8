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
        Self::start_with(etcd_members, masters, lease_ttl, workers, &[])
    }

    /// With extra master flags.
    fn start_with(
        etcd_members: usize,
        masters: usize,
        lease_ttl: &str,
        workers: &[(&str, u32)],
        extra: &[&str],
    ) -> Ha {
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
                let extra = extra.iter().map(|a| a.to_string()).collect();
                MasterProc::start_with(&format!("m{i}"), opts, extra, dir.path())
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
    // A namespace set on the leader reaches the standby's replica, and outlives the leader.
    let r = ha.masters[old].api.put(
        "/api/v1/namespaces/ha-ns",
        &json!({"weight": 2, "quota": {"max_queued_apps": 5}}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let standby = 1 - old;
    wait_for("the namespace on the standby", T, || {
        let r = ha.masters[standby]
            .api
            .try_get("/api/v1/namespaces/ha-ns")
            .ok()?;
        (r.status == 200 && r.body["weight"] == 2).then_some(())
    });
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
    let ns = api.get("/api/v1/namespaces/ha-ns").body;
    assert_eq!(
        (
            ns["weight"].as_u64(),
            ns["quota"]["max_queued_apps"].as_u64()
        ),
        (Some(2), Some(5)),
        "{ns}"
    );
    let mut body = long("in-ha-ns");
    body["namespace"] = json!("ha-ns");
    let in_ns = submit_any(std::slice::from_ref(&api), &body).unwrap();
    assert_eq!(api.app(&in_ns)["namespace"], "ha-ns");
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

/// Waits until every master but `leader` holds a liveness stream to it (the leader logs each).
fn wait_standbys_watch(ha: &Ha, leader: usize) {
    let standbys = ha.masters.len() - 1;
    wait_for("the standbys to watch the leader", T, || {
        let log = ha.masters[leader].proc.log_text();
        (log.matches("a standby watches this leader").count() >= standbys).then_some(())
    });
}

/// Submits through any of `apis` until one answers 201; how long that took.
fn first_201(apis: &[Api], body: &Value, timeout: Duration) -> Duration {
    let start = Instant::now();
    wait_for("a 201 from another master", timeout, || {
        submit_any(apis, body).map(|_| start.elapsed())
    })
}

#[test]
fn a_killed_leader_is_replaced_at_once_not_when_its_lease_expires() {
    // A 10 s lease: waiting for it would take 7-10 s.
    let mut ha = Ha::start(1, 3, "10s", &[("w1", 2)]);
    let old = ha.wait_leader(None);
    let id = submit_any(&ha.apis(), &long("keeps-running")).unwrap();
    ha.masters[old].api.wait_state(&id, "RUNNING", T);
    wait_standbys_watch(&ha, old);

    ha.masters[old].proc.kill9();
    let others: Vec<Api> = (0..3)
        .filter(|&i| i != old)
        .map(|i| ha.masters[i].api.clone())
        .collect();
    let took = first_201(&others, &long("after"), T);
    assert!(
        took < Duration::from_secs(5),
        "failover took {took:?}: the standbys waited for the 10 s lease"
    );
    let new = ha.wait_leader(Some(old));
    let revoked = (0..3).filter(|&i| i != old).any(|i| {
        ha.masters[i]
            .proc
            .log_text()
            .contains("revoked its lease (fast failover)")
    });
    assert!(revoked, "no standby revoked the dead leader's lease");
    // Nothing ran twice: the app keeps its first attempt.
    let app = ha.masters[new].api.wait_state(&id, "RUNNING", T);
    assert_eq!(app["attempt"], 1);
}

#[test]
fn with_fast_failover_off_a_killed_leader_is_replaced_when_its_lease_expires() {
    let mut ha = Ha::start_with(1, 2, "3s", &[], &["--fast-failover", "false"]);
    let old = ha.wait_leader(None);
    ha.masters[old].proc.kill9();
    let other = 1 - old;
    let took = first_201(&[ha.masters[other].api.clone()], &long("after"), T);
    // etcd keeps the lease 3 s after the last keep-alive, sent at most 1 s before the kill.
    assert!(
        took >= Duration::from_millis(1_500),
        "took over after {took:?}, before the lease could expire"
    );
    assert!(!ha.masters[other]
        .proc
        .log_text()
        .contains("revoked its lease"));
}

fn cluster_of(api: &Api) -> Option<Value> {
    api.try_get("/api/v1/cluster").ok().map(|r| r.body)
}

fn copy_dir(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success(), "cp -a {} {}", from.display(), to.display());
}

#[test]
fn a_restored_etcd_makes_the_masters_refuse_to_lead_until_an_operator_accepts_it() {
    let mut ha = Ha::start(1, 2, "2s", &[("w1", 2)]);
    let short =
        |name: &str| json!({"name": name, "kind": "process", "spec": {"command": ["true"]}});
    let l = ha.wait_leader(None);
    let before = submit_any(&ha.apis(), &short("before-backup")).unwrap();
    ha.masters[l].api.wait_state(&before, "FINISHED", T);

    // An operator backs up etcd's data (member stopped), and etcd goes on.
    let data = ha.dir.path().join("etcd0");
    let backup = ha.dir.path().join("etcd0-backup");
    ha.etcd.kill_member(0);
    copy_dir(&data, &backup);
    ha.etcd.start_member(0);
    ha.etcd.wait_healthy();
    // Work goes on after the backup, across a leader change (so the epoch moves past the
    // backup's revisions), and the old leader comes back as a standby.
    let l = ha.wait_leader(None);
    ha.masters[l].proc.signal(libc::SIGTERM);
    let l2 = ha.wait_leader(Some(l));
    assert!(ha.masters[l].proc.wait_exit(T).is_some());
    let dir = ha.dir.path().to_path_buf();
    ha.masters[l].restart_hard(&dir);
    ha.masters[l2].api.wait_alive_workers(1, T);
    let mut after = Vec::new();
    for i in 0..3 {
        let id = wait_for("a submission", T, || {
            submit_any(&ha.apis(), &short(&format!("after-backup-{i}")))
        });
        after.push(id);
    }
    let l = ha.wait_leader(None);
    for id in &after {
        ha.masters[l].api.wait_state(id, "FINISHED", T);
    }
    // Let both masters' keep-alives see the newest revisions.
    std::thread::sleep(Duration::from_millis(1_500));
    let old_epoch = cluster_of(&ha.masters[l].api).unwrap()["epoch"]
        .as_u64()
        .unwrap();

    // The backup is restored: etcd's revisions go back under the running masters.
    ha.etcd.kill_member(0);
    std::fs::remove_dir_all(&data).unwrap();
    copy_dir(&backup, &data);
    ha.etcd.start_member(0);
    ha.etcd.wait_healthy();

    // Every master notices and refuses to lead; nobody leads over the old data.
    wait_for("every master to refuse to lead", T, || {
        ha.masters
            .iter()
            .all(|m| cluster_of(&m.api).is_some_and(|c| c["refusing_to_lead"].is_string()))
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    for m in &ha.masters {
        let c = cluster_of(&m.api).unwrap();
        assert_ne!(c["role"], "ALIVE", "{c}");
        let r = m.api.get("/readyz");
        assert_eq!(r.status, 503);
        assert!(
            r.body["error"]
                .as_str()
                .unwrap()
                .contains("refusing to lead"),
            "{:?}",
            r.body
        );
    }

    // The operator accepts the restore: a leader is elected with an epoch above every
    // earlier one, the worker follows it, and launches are accepted again.
    let shown = std::process::Command::new(aloha_e2e::bin("alohactl"))
        .args(["--master", &ha.masters[0].api.base, "cluster"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("Refusing to lead"), "{shown}");
    let out = std::process::Command::new(aloha_e2e::bin("alohactl"))
        .args([
            "--master",
            &ha.masters[0].api.base,
            "cluster",
            "accept-restore",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("restore accepted: epoch generation"),
        "{said}"
    );
    let l = ha.wait_leader(None);
    let api = ha.masters[l].api.clone();
    let epoch = cluster_of(&api).unwrap()["epoch"].as_u64().unwrap();
    assert!(epoch > old_epoch, "epoch {epoch} after {old_epoch}");
    wait_for("the refusals to clear", T, || {
        ha.masters
            .iter()
            .all(|m| cluster_of(&m.api).is_some_and(|c| c["refusing_to_lead"].is_null()))
            .then_some(())
    });
    api.wait_alive_workers(1, T);
    // The state is the backup's: what was written after it is gone.
    assert_eq!(api.app(&before)["state"], "FINISHED");
    for id in &after {
        assert_eq!(api.get(&format!("/api/v1/apps/{id}")).status, 404);
    }
    let id = submit_any(std::slice::from_ref(&api), &short("after-restore")).unwrap();
    api.wait_state(&id, "FINISHED", T);
}

#[test]
fn masters_log_in_to_an_etcd_with_authentication_and_keep_their_token_fresh() {
    let dir = tempfile::Builder::new()
        .prefix("aloha-etcd-auth-")
        .tempdir()
        .unwrap();
    // Auth tokens that expire every 2 s: the masters must renew theirs.
    let etcd = EtcdCluster::start_with_env(1, dir.path(), &[("ETCD_AUTH_TOKEN_TTL", "2")]);
    let endpoint = etcd.endpoints();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let mut c = etcd_client::Client::connect([endpoint.as_str()], None)
                .await
                .unwrap();
            let _ = c.role_add("root").await;
            c.user_add("root", "pass-of-root-0123", None).await.unwrap();
            c.user_grant_role("root", "root").await.unwrap();
            c.auth_enable().await.unwrap();
        });
    let password = dir.path().join("etcd.password");
    std::fs::write(&password, "pass-of-root-0123\n").unwrap();
    std::fs::set_permissions(
        &password,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let login = vec![
        "--etcd-user".to_string(),
        "root".to_string(),
        "--etcd-password-file".to_string(),
        password.display().to_string(),
    ];
    let mut masters: Vec<MasterProc> = (0..2)
        .map(|i| {
            let opts = MasterOpts {
                http_port: free_port(),
                rpc_port: free_port(),
                state_dir: dir.path().join(format!("m{i}")),
                worker_timeout: "3s".into(),
                etcd: Some((endpoint.clone(), "2s".into())),
            };
            MasterProc::start_with(&format!("m{i}"), opts, login.clone(), dir.path())
        })
        .collect();
    let leader = aloha_e2e::leader_of(&masters, T);
    let apis: Vec<Api> = masters.iter().map(|m| m.api.clone()).collect();
    assert!(submit_any(&apis, &long("first")).is_some());
    // Past several token lifetimes, the leader still writes and keeps its lease.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        aloha_e2e::role_of(&masters[leader]).as_deref(),
        Some("ALIVE")
    );
    assert!(submit_any(&apis, &long("later")).is_some());
    // Failover works as well (the standby revokes the dead leader's lease as root).
    masters[leader].proc.kill9();
    let other = 1 - leader;
    aloha_e2e::leader_of(&masters[other..=other], T);
    let api = std::slice::from_ref(&masters[other].api);
    wait_for("a submission after failover", T, || {
        submit_any(api, &long("after"))
    });

    // A wrong password: the master says so and exits.
    let wrong = dir.path().join("wrong.password");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    std::fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = std::process::Command::new(aloha_e2e::bin("aloha-master"))
        .args(["--http-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--rpc-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--etcd-endpoints", &endpoint, "--etcd-user", "root"])
        .arg("--etcd-password-file")
        .arg(&wrong)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("as user root"), "{err}");
}

#[test]
fn masters_reach_etcd_over_tls_with_a_client_certificate() {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    let dir = tempfile::Builder::new()
        .prefix("aloha-etcd-tls-")
        .tempdir()
        .unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issue = |name: &str| {
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
        let (c, k) = (
            dir.path().join(format!("{name}.pem")),
            dir.path().join(format!("{name}-key.pem")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    };
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let (server_cert, server_key) = issue("etcd");
    let (client_cert, client_key) = issue("master");
    let etcd = EtcdCluster::start_tls(1, dir.path(), (ca_file.clone(), server_cert, server_key));
    let endpoints = etcd.endpoints();
    assert!(endpoints.starts_with("https://"));
    let tls_args = |with_cert: bool| {
        let mut v = vec!["--etcd-ca".to_string(), ca_file.display().to_string()];
        if with_cert {
            v.extend([
                "--etcd-cert".to_string(),
                client_cert.display().to_string(),
                "--etcd-key".to_string(),
                client_key.display().to_string(),
            ]);
        }
        v
    };
    let opts = MasterOpts {
        http_port: free_port(),
        rpc_port: free_port(),
        state_dir: dir.path().join("m0"),
        worker_timeout: "3s".into(),
        etcd: Some((endpoints.clone(), "2s".into())),
    };
    let master = MasterProc::start_with("m0", opts, tls_args(true), dir.path());
    aloha_e2e::leader_of(std::slice::from_ref(&master), T);
    assert!(submit_any(std::slice::from_ref(&master.api), &long("over-tls")).is_some());

    // Without a client certificate etcd refuses the connection: the master keeps trying, says
    // why in its log, and never leads.
    let mut cmd = std::process::Command::new(aloha_e2e::bin("aloha-master"));
    let http = free_port();
    cmd.args(["--http-addr", &format!("127.0.0.1:{http}")])
        .args(["--rpc-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--etcd-endpoints", &endpoints])
        .args(tls_args(false))
        .arg("--state-dir")
        .arg(dir.path().join("m1"));
    let refused = aloha_e2e::Proc::spawn("m1-no-cert", cmd, dir.path());
    wait_for("the refusal in the log", T, || {
        refused.log_text().contains("BadCertificate").then_some(())
    });
    let api = Api::new(&format!("http://127.0.0.1:{http}"));
    assert_ne!(api.get("/api/v1/cluster").body["role"], "ALIVE");
}

#[test]
fn a_standby_recovers_more_state_than_one_grpc_answer_holds() {
    // 400 queued apps with 16 KiB specs: 6.5 MB of records, past gRPC's 4 MiB answer default,
    // which once made every recovery (and the standby's replica) fail.
    let mut ha = Ha::start(1, 2, "2s", &[]);
    let old = ha.wait_leader(None);
    let api = ha.masters[old].api.clone();
    let filler = "x".repeat(16 * 1024);
    for i in 0..400 {
        let r = api.post(
            "/api/v1/apps",
            &json!({"name": format!("big-{i}"), "kind": "process", "cores": 1000,
                    "spec": {"command": ["true"], "env": {"FILLER": filler}}}),
        );
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    ha.masters[old].proc.kill9();
    let new = ha.wait_leader(Some(old));
    let api = ha.masters[new].api.clone();
    let mut seen = 0;
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/api/v1/apps?limit=1000&after={a}"),
            None => "/api/v1/apps?limit=1000".to_string(),
        };
        let page = api.get(&path);
        assert_eq!(page.status, 200, "{:?}", page.body);
        seen += page.body["apps"].as_array().unwrap().len();
        match page.body["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, 400);
    assert!(!ha.masters[new].proc.log_text().contains("recovery failed"));
}
