//! Namespaces end to end, with the real binaries: quotas that refuse (429) and quotas that hold
//! apps back, weighted fair shares on a real worker, submitter tokens scoped to namespaces, and
//! namespaces kept across a master restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aloha_e2e::{wait_for, Api, Cluster};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);

fn sleeper(api: &Api, ns: &str, name: &str) -> String {
    api.submit_cmd(name, &["sleep", "120"], json!({"namespace": ns}))
}

/// The namespace's usage as served.
fn usage(api: &Api, ns: &str) -> Value {
    let r = api.get(&format!("/api/v1/namespaces/{ns}"));
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["usage"].clone()
}

fn running(api: &Api, ns: &str) -> u64 {
    usage(api, ns)["running_apps"].as_u64().unwrap()
}

#[test]
fn quotas_refuse_or_hold_back_and_shares_follow_the_weights() {
    let mut c = Cluster::start("3s", &[]);
    let api = Api::new(&c.master.api.base);

    // An unknown namespace is refused, naming how to create it.
    let r = api.post(
        "/api/v1/apps",
        &json!({"name": "x", "kind": "process", "spec": {"command": ["true"]}, "namespace": "team-a"}),
    );
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert!(
        r.body["error"]
            .as_str()
            .unwrap()
            .contains("PUT /api/v1/namespaces/team-a"),
        "{:?}",
        r.body
    );
    let r = api.put("/api/v1/namespaces/Team_A", &json!({}));
    assert_eq!(r.status, 400, "{:?}", r.body);
    let r = api.put("/api/v1/namespaces/x", &json!({"weight": 0}));
    assert_eq!(r.status, 400, "{:?}", r.body);
    let r = api.put("/api/v1/namespaces/x", &json!({"quota": {"max_cpu": 1}}));
    assert_eq!(r.status, 422, "{:?}", r.body);

    // team-a by the API, team-b and capped by alohactl.
    let r = api.put(
        "/api/v1/namespaces/team-a",
        &json!({"quota": {"max_queued_apps": 8}, "weight": 1}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["quota"]["max_queued_apps"], 8);
    let (code, out, err) = c.ctl(&["namespace", "set", "team-b", "--weight", "3"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("team-b"), "{out}");
    let (code, _, err) = c.ctl(&["namespace", "set", "capped", "--max-running-apps", "1"]);
    assert_eq!(code, 0, "{err}");

    // Eight sleepers each for team-a and team-b while no worker is there; a ninth in team-a
    // is over its max_queued_apps: 429, and nothing is created.
    for i in 0..8 {
        sleeper(&api, "team-a", &format!("a{i}"));
        sleeper(&api, "team-b", &format!("b{i}"));
    }
    let before = api.get("/api/v1/apps?limit=1000").body["apps"]
        .as_array()
        .unwrap()
        .len();
    let r = api.post(
        "/api/v1/apps",
        &json!({"name": "a8", "kind": "process", "spec": {"command": ["true"]}, "namespace": "team-a"}),
    );
    assert_eq!(r.status, 429, "{:?}", r.body);
    assert!(
        r.body["error"]
            .as_str()
            .unwrap()
            .contains("max_queued_apps = 8"),
        "{:?}",
        r.body
    );
    let after = api.get("/api/v1/apps?limit=1000").body["apps"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, after, "a refused submission created nothing");
    // alohactl says the same in one line and exits non-zero.
    let (code, _, err) = c.ctl(&[
        "submit",
        "--name",
        "a9",
        "--namespace",
        "team-a",
        "--",
        "true",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("max_queued_apps"), "{err}");

    // A worker with 4 cores: weights 1 and 3 share it 1 to 3.
    c.add_worker("w1", 4);
    api.wait_alive_workers(1, T);
    wait_for("4 apps placed", T, || {
        (running(&api, "team-a") + running(&api, "team-b") == 4).then_some(())
    });
    assert_eq!((running(&api, "team-a"), running(&api, "team-b")), (1, 3));

    // A namespace limited to one running app: its others wait, named by the quota, and do not
    // keep the other namespaces from the second worker.
    let capped: Vec<String> = (0..3)
        .map(|i| sleeper(&api, "capped", &format!("c{i}")))
        .collect();
    c.add_worker("w2", 4);
    api.wait_alive_workers(2, T);
    wait_for("8 apps placed", T, || {
        let n: u64 = ["team-a", "team-b", "capped"]
            .iter()
            .map(|ns| running(&api, ns))
            .sum();
        (n == 8).then_some(())
    });
    assert_eq!(running(&api, "capped"), 1);
    let waiting: Vec<Value> = capped
        .iter()
        .map(|id| api.app(id))
        .filter(|a| a["state"] == "SUBMITTED")
        .collect();
    assert_eq!(waiting.len(), 2);
    for a in &waiting {
        assert_eq!(
            a["message"],
            "waiting for namespace capped's quota max_running_apps = 1 (1 apps running)",
            "{a}"
        );
        assert_eq!(a["namespace"], "capped");
    }

    // The list names usage next to quota; alohactl shows it as a table.
    let list = api.get("/api/v1/namespaces").body;
    let names: Vec<&str> = list["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["capped", "default", "team-a", "team-b"]);
    let (code, out, err) = c.ctl(&["namespace", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("QUEUED"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("capped") && l.contains("1/1") && l.contains("2/-")),
        "{out}"
    );

    // A namespace with apps cannot be deleted; default never.
    let r = api.delete("/api/v1/namespaces/capped");
    assert_eq!(r.status, 409, "{:?}", r.body);
    let r = api.delete("/api/v1/namespaces/default");
    assert_eq!(r.status, 409, "{:?}", r.body);

    // Namespaces and their quotas survive a restart.
    let dir = c.dir.path().to_path_buf();
    c.master.restart_hard(&dir);
    let api = Api::new(&c.master.api.base);
    let r = api.get("/api/v1/namespaces/team-b");
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["weight"], 3);
    let r = api.get("/api/v1/namespaces/team-a");
    assert_eq!(r.body["quota"]["max_queued_apps"], 8);
    let r = api.post(
        "/api/v1/apps",
        &json!({"name": "a10", "kind": "process", "spec": {"command": ["true"]}, "namespace": "team-a"}),
    );
    assert!(
        r.status == 429 || r.status == 201,
        "after the restart: {:?}",
        r.body
    );
    // Emptied, a namespace can go.
    let (code, _, err) = c.ctl(&["namespace", "set", "empty"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = c.ctl(&["namespace", "delete", "empty"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("deleted namespace empty"), "{out}");
    assert_eq!(api.get("/api/v1/namespaces/empty").status, 404);
}

/// The ids of a page of `GET /api/v1/apps`, and its `next`.
fn page(api: &Api, query: &str) -> (Vec<String>, Option<String>) {
    let r = api.get(&format!("/api/v1/apps?{query}"));
    assert_eq!(r.status, 200, "{query}: {:?}", r.body);
    let ids = r.body["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    (ids, r.body["next"].as_str().map(str::to_string))
}

#[test]
fn apps_are_listed_by_namespace() {
    let c = Cluster::start("3s", &[]);
    let api = Api::new(&c.master.api.base);
    for ns in ["team-a", "team-b"] {
        assert_eq!(
            api.put(&format!("/api/v1/namespaces/{ns}"), &json!({}))
                .status,
            200
        );
    }
    let a: Vec<String> = (0..3)
        .map(|i| sleeper(&api, "team-a", &format!("a{i}")))
        .collect();
    let b: Vec<String> = (0..2)
        .map(|i| sleeper(&api, "team-b", &format!("b{i}")))
        .collect();
    let d = sleeper(&api, "default", "d");

    // Newest first, only that namespace's apps.
    let (ids, next) = page(&api, "namespace=team-a");
    assert_eq!(ids, [a[2].clone(), a[1].clone(), a[0].clone()]);
    assert_eq!(next, None);
    assert_eq!(page(&api, "namespace=default").0, [d.as_str()]);
    assert_eq!(
        page(&api, "namespace=team-b&state=SUBMITTED").0,
        [b[1].clone(), b[0].clone()]
    );
    // Paged with the cursor.
    let (ids, next) = page(&api, "namespace=team-b&limit=1");
    assert_eq!(ids, [b[1].clone()]);
    let (ids, next) = page(
        &api,
        &format!("namespace=team-b&limit=1&after={}", next.unwrap()),
    );
    assert_eq!(ids, [b[0].clone()]);
    let (ids, _) = page(
        &api,
        &format!("namespace=team-b&limit=1&after={}", next.unwrap()),
    );
    assert!(ids.is_empty(), "{ids:?}");
    // A namespace that does not exist (any more) has no apps; a name that cannot be one is a
    // bad request, and so is a namespace with a schedule's runs.
    assert_eq!(page(&api, "namespace=gone"), (vec![], None));
    let r = api.get("/api/v1/apps?namespace=Team_A");
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(
        r.body["error"].as_str().unwrap().contains("namespace"),
        "{:?}",
        r.body
    );
    let r = api.get("/api/v1/apps?namespace=team-a&schedule_id=sched-1");
    assert_eq!(r.status, 400, "{:?}", r.body);

    // alohactl list -n, and --all across the short pages.
    let (code, out, err) = c.ctl(&["list", "-n", "team-a"]);
    assert_eq!(code, 0, "{err}");
    assert!(a.iter().all(|id| out.contains(id.as_str())), "{out}");
    assert!(
        !out.contains(b[0].as_str()) && !out.contains(d.as_str()),
        "{out}"
    );
    let (code, out, err) = c.ctl(&["list", "--namespace", "team-b", "--limit", "1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(b[1].as_str()), "{out}");
    assert!(
        err.contains(&format!(
            "more: alohactl list --namespace team-b --limit 1 --after {}",
            b[1]
        )),
        "{err}"
    );
    let (code, out, err) = c.ctl(&[
        "-o", "json", "list", "-n", "team-b", "--limit", "1", "--all",
    ]);
    assert_eq!(code, 0, "{err}");
    let all: Value = serde_json::from_str(&out).unwrap();
    let ids: Vec<&str> = all["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [b[1].as_str(), b[0].as_str()]);
    assert_eq!(all["next"], Value::Null);
}

const BOOTSTRAP: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";

fn bootstrap_file(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let f = dir.join("bootstrap.token");
    std::fs::write(&f, format!("{BOOTSTRAP}\n")).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    f
}

#[test]
fn a_submitter_token_scoped_to_a_namespace_writes_only_there() {
    let c = Cluster::start_with("3s", &[("w1", 2)], |dir| {
        vec![
            "--auth".into(),
            "required".into(),
            "--bootstrap-token-file".into(),
            bootstrap_file(dir).display().to_string(),
        ]
    });
    let base = c.master.api.base.clone();
    let admin = Api::with_token(&base, BOOTSTRAP);
    for ns in ["team-a", "team-b"] {
        let r = admin.put(&format!("/api/v1/namespaces/{ns}"), &json!({}));
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    // alohactl makes the scoped token.
    let (code, out, err) = c.ctl(&[
        "--token",
        BOOTSTRAP,
        "token",
        "create",
        "--name",
        "team a ci",
        "--role",
        "submitter",
        "--namespace",
        "team-a",
    ]);
    assert_eq!(code, 0, "{err}");
    let token = out.lines().next().unwrap().trim().to_string();
    let (code, out, _) = c.ctl(&["--token", BOOTSTRAP, "token", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.contains("team a ci") && l.contains("team-a")),
        "{out}"
    );
    // Only submitters are scoped.
    let r = admin.post(
        "/api/v1/tokens",
        &json!({"name": "x", "role": "reader", "namespaces": ["team-a"]}),
    );
    assert_eq!(r.status, 400, "{:?}", r.body);

    let a = Api::with_token(&base, &token);
    let cmd = |ns: &str| json!({"name": "s", "kind": "process", "spec": {"command": ["sleep", "60"]}, "namespace": ns});
    let r = a.post("/api/v1/apps", &cmd("team-a"));
    assert_eq!(r.status, 201, "{:?}", r.body);
    let own = r.body["id"].as_str().unwrap().to_string();

    // Elsewhere: 403 naming the token and its namespaces; nothing created.
    for ns in ["team-b", "default"] {
        let r = a.post("/api/v1/apps", &cmd(ns));
        assert_eq!(r.status, 403, "{:?}", r.body);
        let msg = r.body["error"].as_str().unwrap();
        assert!(
            msg.contains("may only write in namespace team-a") && msg.contains(ns),
            "{msg}"
        );
    }
    let r = a.post("/api/v1/apps?dry_run=true", &cmd("team-b"));
    assert_eq!(r.status, 403, "{:?}", r.body);
    // An app of another namespace can be read but not killed or retried.
    let theirs = admin.submit(cmd("team-b"))["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(a.get(&format!("/api/v1/apps/{theirs}")).status, 200);
    let r = a.post(&format!("/api/v1/apps/{theirs}/kill"), &json!({}));
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert_ne!(admin.app(&theirs)["state"], "KILLED");
    let r = a.post(&format!("/api/v1/apps/{own}/kill"), &json!({}));
    assert_eq!(r.status, 202, "{:?}", r.body);
    // Schedules too.
    let sched = |ns: &str| json!({"name": "roll", "namespace": ns, "every": "1h", "app": {"kind": "process", "spec": {"command": ["true"]}}});
    assert_eq!(a.post("/api/v1/schedules", &sched("team-b")).status, 403);
    let r = a.post("/api/v1/schedules", &sched("team-a"));
    assert_eq!(r.status, 201, "{:?}", r.body);
    let theirs_s = admin.post("/api/v1/schedules", &sched("team-b")).body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = a.post(&format!("/api/v1/schedules/{theirs_s}/pause"), &json!({}));
    assert_eq!(r.status, 403, "{:?}", r.body);
    let r = a.delete(&format!("/api/v1/schedules/{theirs_s}"));
    assert_eq!(r.status, 403, "{:?}", r.body);
    // Namespaces are an admin's: a submitter reads them but cannot change them.
    assert_eq!(a.get("/api/v1/namespaces").status, 200);
    let r = a.put("/api/v1/namespaces/team-a", &json!({"weight": 5}));
    assert_eq!(r.status, 403, "{:?}", r.body);
    // An unscoped submitter writes everywhere.
    let r = admin.post(
        "/api/v1/tokens",
        &json!({"name": "all", "role": "submitter"}),
    );
    let all = Api::with_token(&base, r.body["token"].as_str().unwrap());
    assert_eq!(all.post("/api/v1/apps", &cmd("team-b")).status, 201);
}
