//! Who may talk to the cluster: a join token on every gRPC call between masters and workers,
//! and plugins loaded only from files and directories nobody else can change.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aloha_e2e::etcd::EtcdCluster;
use aloha_e2e::{bin, free_port, target_dir, wait_for, Api, Cluster, MasterOpts, MasterProc, Proc};
use aloha_proto::master_service_client::MasterServiceClient;
use aloha_proto::worker_service_client::WorkerServiceClient;
use aloha_proto::{HeartbeatRequest, KillAppRequest, RegisterWorkerRequest};
use serde_json::json;

const T: Duration = Duration::from_secs(30);
const TOKEN: &str = "7d1f0c8e2b9a4f65a3c1e0d9b8a7f6e5";

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
}

/// A token file with `token`, mode 0600.
fn token_file(dir: &Path, name: &str, token: &str) -> PathBuf {
    let f = dir.join(name);
    std::fs::write(&f, format!("{token}\n")).unwrap();
    chmod(&f, 0o600);
    f
}

/// A worker of `c`'s master on `plugin_dir`, with extra flags.
fn worker(c: &Cluster, id: &str, plugin_dir: &Path, extra: &[&str]) -> Proc {
    let mut cmd = Command::new(bin("aloha-worker"));
    cmd.arg("--master")
        .arg(c.master.rpc_url())
        .arg("--id")
        .arg(id)
        .arg("--cores")
        .arg("1")
        .arg("--memory-mb")
        .arg("512")
        .arg("--work-dir")
        .arg(c.dir.path().join(id))
        .arg("--plugin-dir")
        .arg(plugin_dir)
        .args(extra)
        .env("ALOHA_LOG", "info,aloha_worker=debug");
    Proc::spawn(id, cmd, c.dir.path())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn without_the_join_token_nothing_registers_heartbeats_reports_or_launches() {
    let mut c = Cluster::start_with("3s", &[], |dir| {
        let f = token_file(dir, "master.token", TOKEN);
        vec!["--join-token-file".into(), f.display().to_string()]
    });
    let api = c.api().clone();
    let dir = c.dir.path().to_path_buf();

    // No token, then a wrong one: refused, loudly on both sides.
    let wrong = token_file(&dir, "wrong.token", "ffffffffffffffffffffffffffffffff");
    let wrong = wrong.display().to_string();
    c.workers.push(worker(&c, "none", &target_dir(), &[]));
    c.workers.push(worker(
        &c,
        "wrong",
        &target_dir(),
        &["--join-token-file", &wrong],
    ));
    for w in &c.workers {
        wait_for("the worker to say it was refused", T, || {
            let log = w.log_text();
            (log.contains("the master refused the registration")
                && log.contains("a valid join token is required"))
            .then_some(())
        });
    }
    wait_for("the master to log the attempts", T, || {
        let log = c.master.proc.log_text();
        // Reported at most every 10 s per address, with a count: both workers are on 127.0.0.1.
        log.contains("refused gRPC calls: a valid join token is required")
            .then_some(())
    });
    assert!(api.workers().is_empty(), "{:?}", api.workers());

    // Straight gRPC without the token: register, heartbeat and report are all UNAUTHENTICATED.
    let url = c.master.rpc_url();
    rt().block_on(async {
        let mut m = MasterServiceClient::connect(url).await.unwrap();
        let reg = RegisterWorkerRequest {
            worker_id: "raw".into(),
            address: "127.0.0.1:1".into(),
            cores: 1,
            memory_mb: 512,
            kinds: vec!["process".into()],
            ..Default::default()
        };
        let code = m.register_worker(reg).await.unwrap_err().code();
        assert_eq!(code, tonic::Code::Unauthenticated);
        let hb = HeartbeatRequest {
            worker_id: "raw".into(),
        };
        assert_eq!(
            m.heartbeat(hb).await.unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let report = aloha_proto::AppStateReport {
            worker_id: "raw".into(),
            app_id: "app-20260101000000-0001".into(),
            attempt: 1,
            state: "FINISHED".into(),
            ..Default::default()
        };
        assert_eq!(
            m.report_app_state(report).await.unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    });

    // With the token: it registers and runs apps (the master's launch carries the token too,
    // which the worker requires).
    let good = token_file(&dir, "worker.token", TOKEN);
    let good = good.display().to_string();
    c.workers.push(worker(
        &c,
        "good",
        &target_dir(),
        &["--join-token-file", &good],
    ));
    api.wait_alive_workers(1, T);
    assert_eq!(api.workers()[0]["id"], "good");
    let id = api.submit_cmd("hello", &["true"], json!({}));
    api.wait_state(&id, "FINISHED", T);

    // Someone else posing as a master cannot tell that worker what to do.
    let address = api.workers()[0]["address"].as_str().unwrap().to_string();
    rt().block_on(async {
        let mut w = WorkerServiceClient::connect(format!("http://{address}"))
            .await
            .unwrap();
        let kill = KillAppRequest {
            epoch: u64::MAX,
            app_id: id.clone(),
            attempt: 1,
            ..Default::default()
        };
        assert_eq!(
            w.kill_app(kill).await.unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    });
    let good_log = c.workers[2].log_text();
    assert!(good_log.contains("refused gRPC calls: a valid join token is required"));
}

#[test]
fn a_join_token_file_others_can_read_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let f = token_file(dir.path(), "open.token", TOKEN);
    chmod(&f, 0o644);
    for (daemon, extra) in [
        (
            "aloha-master",
            vec![
                "--state-dir".to_string(),
                dir.path().join("m").display().to_string(),
            ],
        ),
        (
            "aloha-worker",
            vec![
                "--work-dir".to_string(),
                dir.path().join("w").display().to_string(),
            ],
        ),
    ] {
        let out = Command::new(bin(daemon))
            .arg("--join-token-file")
            .arg(&f)
            .args(&extra)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{daemon} started");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("permissions 0644 are too open"),
            "{daemon}: {err}"
        );
    }
    let short = token_file(dir.path(), "short.token", "tooshort");
    let out = Command::new(bin("aloha-master"))
        .arg("--join-token-file")
        .arg(&short)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16 characters"));
}

#[test]
fn masters_watch_each_other_with_the_join_token() {
    two_masters_watch_and_fail_over(|dir, _| {
        let f = dir.join("token");
        if !f.exists() {
            token_file(dir, "token", TOKEN);
        }
        vec!["--join-token-file".into(), f.display().to_string()]
    });
}

/// Two HA masters on a one-member etcd, each started with `flags(dir, i)`: the standby
/// watches the leader; after a SIGKILL of the leader it revokes the leader's lease (fast
/// failover) and leads.
fn two_masters_watch_and_fail_over(flags: impl Fn(&Path, usize) -> Vec<String>) {
    let dir = tempfile::Builder::new()
        .prefix("aloha-sec-")
        .tempdir()
        .unwrap();
    let etcd = EtcdCluster::start(1, dir.path());
    let mut masters: Vec<MasterProc> = (0..2)
        .map(|i| {
            let opts = MasterOpts {
                http_port: free_port(),
                rpc_port: free_port(),
                state_dir: dir.path().join(format!("m{i}")),
                worker_timeout: "3s".into(),
                etcd: Some((etcd.endpoints(), "10s".into())),
            };
            let extra = flags(dir.path(), i);
            MasterProc::start_with(&format!("m{i}"), opts, extra, dir.path())
        })
        .collect();
    let leader = aloha_e2e::leader_of(&masters, T);
    wait_for("the standby to watch the leader", T, || {
        masters[leader]
            .proc
            .log_text()
            .contains("a standby watches this leader")
            .then_some(())
    });
    masters[leader].proc.kill9();
    let standby = 1 - leader;
    wait_for("the standby to revoke the dead leader's lease", T, || {
        masters[standby]
            .proc
            .log_text()
            .contains("revoked its lease (fast failover)")
            .then_some(())
    });
    aloha_e2e::leader_of(&masters[standby..=standby], T);
    drop(etcd);
}

#[test]
fn a_plugin_others_can_write_to_is_refused_with_a_clear_error() {
    let mut c = Cluster::start("3s", &[]);
    let api = c.api().clone();
    let plugins = c.dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    chmod(&plugins, 0o755);
    let lib = plugins.join("libaloha_plugin_process.so");
    std::fs::copy(target_dir().join("libaloha_plugin_process.so"), &lib).unwrap();
    chmod(&lib, 0o666);

    c.workers.push(worker(&c, "loose", &plugins, &[]));
    let shown = wait_for("the worker to register", T, || {
        api.workers().into_iter().find(|w| w["id"] == "loose")
    });
    let errors = shown["plugin_errors"].to_string();
    assert!(
        errors.contains(
            "libaloha_plugin_process.so: refused: writable by group or others (mode 0666)"
        ),
        "{shown}"
    );
    assert_eq!(shown["kinds"], json!([]), "{shown}");

    // Fixed, the same plugin loads.
    let mut loose = c.workers.pop().unwrap();
    loose.terminate(T);
    chmod(&lib, 0o644);
    c.workers.push(worker(&c, "tight", &plugins, &[]));
    let shown = wait_for("the fixed worker to register", T, || {
        api.workers().into_iter().find(|w| w["id"] == "tight")
    });
    assert_eq!(shown["kinds"], json!(["process"]), "{shown}");
    assert_eq!(shown["plugin_errors"], json!([]), "{shown}");
}

/// Master flags for `--auth required` with [`TOKEN`] as the bootstrap token (a file in `dir`).
fn required_auth(dir: &Path) -> Vec<String> {
    let f = token_file(dir, "bootstrap.token", TOKEN);
    vec![
        "--auth".into(),
        "required".into(),
        "--bootstrap-token-file".into(),
        f.display().to_string(),
    ]
}

/// A blocking HTTP client that sends `token` (if any) as a bearer token and follows no redirect.
fn http(token: Option<&str>) -> reqwest::blocking::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {t}").parse().unwrap(),
        );
    }
    reqwest::blocking::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(headers)
        .timeout(T)
        .build()
        .unwrap()
}

fn ctl(c: &Cluster, env: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin("alohactl"))
        .arg("--master")
        .arg(&c.master.api.base)
        .args(args)
        .env_remove("ALOHA_TOKEN")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A token made by `alohactl token create` with the bootstrap token's file.
fn create_token(c: &Cluster, bootstrap: &Path, role: &str) -> String {
    let (ok, out, err) = ctl(
        c,
        &[],
        &[
            "--token-file",
            bootstrap.to_str().unwrap(),
            "token",
            "create",
            "--name",
            &format!("{role} for tests"),
            "--role",
            role,
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("shown once"), "{out}");
    out.lines().next().unwrap().trim().to_string()
}

#[test]
fn rest_calls_need_a_token_with_the_right_role() {
    let mut c = Cluster::start_with("3s", &[("w1", 1)], required_auth);
    let base = c.master.api.base.clone();
    let bootstrap = c.dir.path().join("bootstrap.token");
    let url = |p: &str| format!("{base}{p}");

    // Probes stay open; everything else needs a token.
    assert_eq!(
        http(None).get(url("/healthz")).send().unwrap().status(),
        200
    );
    assert_eq!(http(None).get(url("/readyz")).send().unwrap().status(), 200);
    for path in ["/api/v1/apps", "/metrics", "/api/v1/workers"] {
        let r = http(None).get(url(path)).send().unwrap();
        assert_eq!(r.status(), 401, "{path}");
        assert_eq!(
            r.headers()["www-authenticate"].to_str().unwrap(),
            "Bearer realm=\"aloha\""
        );
        let body: serde_json::Value = r.json().unwrap();
        assert!(body["error"]
            .as_str()
            .unwrap()
            .contains("token is required"));
    }
    let r = http(Some("aloha_000000000000_nope"))
        .get(url("/api/v1/apps"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);

    let reader = create_token(&c, &bootstrap, "reader");
    let submitter = create_token(&c, &bootstrap, "submitter");
    let app = json!({"name": "hi", "kind": "process", "spec": {"command": ["true"]}});

    // reader: reads, nothing more.
    let r = http(Some(&reader));
    assert_eq!(r.get(url("/api/v1/apps")).send().unwrap().status(), 200);
    assert_eq!(r.get(url("/metrics")).send().unwrap().status(), 200);
    let denied = r.post(url("/api/v1/apps")).json(&app).send().unwrap();
    assert_eq!(denied.status(), 403);
    let body: serde_json::Value = denied.json().unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("has the role reader; this needs submitter"),
        "{body}"
    );
    assert_eq!(r.get(url("/api/v1/tokens")).send().unwrap().status(), 403);

    // submitter: submits (alohactl with ALOHA_TOKEN), cannot drain or manage tokens.
    let (ok, out, err) = ctl(
        &c,
        &[("ALOHA_TOKEN", &submitter)],
        &["submit", "--name", "via-ctl", "--", "true"],
    );
    assert!(ok, "{err}");
    assert!(out.contains("app-"), "{out}");
    let s = http(Some(&submitter));
    let r = s.post(url("/api/v1/apps")).json(&app).send().unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<serde_json::Value>().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        s.post(url("/api/v1/workers/w1/drain"))
            .send()
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        s.post(url("/api/v1/tokens"))
            .json(&json!({"name": "x", "role": "admin"}))
            .send()
            .unwrap()
            .status(),
        403
    );
    let (ok, _, err) = ctl(&c, &[], &["list"]);
    assert!(!ok);
    assert!(err.contains("token is required"), "{err}");

    // admin: lists tokens without secrets; a bad body is a 400.
    let a = http(Some(TOKEN));
    let listed: serde_json::Value = a.get(url("/api/v1/tokens")).send().unwrap().json().unwrap();
    let text = listed.to_string();
    assert_eq!(listed["tokens"].as_array().unwrap().len(), 2, "{text}");
    for secret in [&reader, &submitter] {
        assert!(!text.contains(secret.rsplit('_').next().unwrap()));
    }
    assert!(!text.contains("sha256"), "{text}");
    // A body that does not fit is a 422 like everywhere in the API; a bad name a 400.
    let r = a
        .post(url("/api/v1/tokens"))
        .json(&json!({"name": "x", "role": "root"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 422);
    let r = a
        .post(url("/api/v1/tokens"))
        .json(&json!({"name": "", "role": "reader"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);

    // The store keeps hashes only.
    let secret = submitter.rsplit('_').next().unwrap().as_bytes().to_vec();
    for e in walk(&c.dir.path().join("master")) {
        let bytes = std::fs::read(&e).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_slice()),
            "the secret is stored in {}",
            e.display()
        );
    }

    // Revoked: admits nobody. Tokens survive a master restart.
    let reader_id = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["role"] == "reader")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (ok, out, err) = ctl(
        &c,
        &[("ALOHA_TOKEN", TOKEN)],
        &["token", "revoke", &reader_id],
    );
    assert!(ok && out.contains("revoked"), "{out}{err}");
    assert_eq!(
        http(Some(&reader))
            .get(url("/api/v1/apps"))
            .send()
            .unwrap()
            .status(),
        401
    );
    let dir = c.dir.path().to_path_buf();
    c.master.restart_hard(&dir);
    let s = http(Some(&submitter));
    wait_for("the restarted master to know the token", T, || {
        let r = s.get(url(&format!("/api/v1/apps/{id}"))).send().ok()?;
        (r.status() == 200).then_some(())
    });
    assert_eq!(
        http(Some(&reader))
            .get(url("/api/v1/apps"))
            .send()
            .unwrap()
            .status(),
        401
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn the_console_logs_in_with_a_token_and_checks_csrf_on_every_form() {
    let c = Cluster::start_with("3s", &[("w1", 1)], required_auth);
    let base = c.master.api.base.clone();
    let url = |p: &str| format!("{base}{p}");
    let browser = http(None);

    // Not logged in: the pages send you to the login page.
    let r = browser.get(url("/ui/apps")).send().unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/ui/login");
    let login = browser.get(url("/ui/login")).send().unwrap();
    assert_eq!(login.status(), 200);
    assert!(login.text().unwrap().contains("name=\"token\""));

    // A wrong token: 401, no cookie.
    let r = browser
        .post(url("/ui/login"))
        .form(&[("token", "wrong-token-0123456789")])
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());

    // The right one: an HttpOnly, SameSite=Strict session cookie.
    let r = browser
        .post(url("/ui/login"))
        .form(&[("token", TOKEN)])
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let session = set.split(';').next().unwrap().to_string();
    let get = |p: &str| {
        browser
            .get(url(p))
            .header("cookie", &session)
            .send()
            .unwrap()
    };

    let id = c.api().submit_cmd("long", &["sleep", "60"], json!({}));
    c.api().wait_state(&id, "RUNNING", T);
    let page = get(&format!("/ui/apps/{id}"));
    assert_eq!(page.status(), 200);
    let html = page.text().unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a CSRF field in the forms")
        .to_string();
    assert!(html.contains("Log out"));

    // A form post without the CSRF token (a forged cross-site form would look so): 403.
    let kill = url(&format!("/ui/apps/{id}/kill"));
    let r = browser
        .post(&kill)
        .header("cookie", &session)
        .form(&[("reason", "x")])
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = browser
        .post(&kill)
        .header("cookie", &session)
        .form(&[("reason", "x"), ("csrf", "0".repeat(64).as_str())])
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(c.api().app(&id)["state"], "RUNNING");
    // With it: done.
    let r = browser
        .post(&kill)
        .header("cookie", &session)
        .form(&[("reason", "from the console"), ("csrf", csrf.as_str())])
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    c.api().wait_state(&id, "KILLED", T);

    // Logged out: the cookie admits nobody.
    let r = browser
        .post(url("/ui/logout"))
        .header("cookie", &session)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(get("/ui/apps").status(), 303);
}

#[test]
fn sparks_submission_port_needs_loopback_or_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let out = Command::new(bin("aloha-master"))
        .args(["--http-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--rpc-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--submission-addr", &format!("0.0.0.0:{port}")])
        .arg("--state-dir")
        .arg(dir.path().join("m"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has no authentication of its own"), "{err}");

    // With --auth required it serves, and asks for a token.
    let c = Cluster::start_with("3s", &[], |dir| {
        let mut args = required_auth(dir);
        args.extend(["--submission-addr".into(), format!("0.0.0.0:{port}")]);
        args
    });
    let create = format!("http://127.0.0.1:{port}/v1/submissions/create");
    let body = json!({"action": "CreateSubmissionRequest", "appResource": "x.jar", "mainClass": "Main",
        "appArgs": [], "clientSparkVersion": "3.5.0", "environmentVariables": {}, "sparkProperties": {}});
    let r = http(None).post(&create).json(&body).send().unwrap();
    assert_eq!(r.status(), 401);
    let r = http(Some(TOKEN)).post(&create).json(&body).send().unwrap();
    assert_ne!(r.status(), 401);
    assert_ne!(r.status(), 403);
    drop(c);
}

/// A CA and a certificate it signed for 127.0.0.1 and localhost, as PEM files in `dir`:
/// (ca.pem, cert.pem, key.pem).
fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    chmod(&paths.2, 0o600);
    paths
}

#[test]
fn the_rest_api_and_alohactl_speak_https() {
    let dir = tempfile::Builder::new()
        .prefix("aloha-tls-")
        .tempdir()
        .unwrap();
    let (ca, cert, key) = certificates(dir.path());
    let port = free_port();
    let mut cmd = Command::new(bin("aloha-master"));
    cmd.args(["--http-addr", &format!("127.0.0.1:{port}")])
        .args(["--rpc-addr", &format!("127.0.0.1:{}", free_port())])
        .arg("--state-dir")
        .arg(dir.path().join("m"))
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key);
    let _master = Proc::spawn("tls-master", cmd, dir.path());
    let base = format!("https://127.0.0.1:{port}");
    let trusting = reqwest::blocking::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .timeout(T)
        .build()
        .unwrap();
    wait_for("the master over HTTPS", T, || {
        let r = trusting.get(format!("{base}/healthz")).send().ok()?;
        (r.status() == 200).then_some(())
    });
    let cluster: serde_json::Value = trusting
        .get(format!("{base}/api/v1/cluster"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(cluster["address"], base, "it advertises its https URL");

    // Plain HTTP gets no answer; a client that does not trust the CA refuses the certificate.
    let plain = http(None)
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send();
    assert!(plain.map(|r| r.status() != 200).unwrap_or(true));
    let untrusting = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(T)
        .build()
        .unwrap();
    assert!(untrusting.get(format!("{base}/healthz")).send().is_err());

    // alohactl with --ca-cert works; without it, a one-line error.
    let run = |args: &[&str]| {
        Command::new(bin("alohactl"))
            .args(["--master", &base])
            .args(args)
            .env_remove("ALOHA_CA_CERT")
            .output()
            .unwrap()
    };
    let ok = run(&["--ca-cert", ca.to_str().unwrap(), "cluster"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("ALIVE"));
    let bad = run(&["cluster"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn a_client_that_never_finishes_its_headers_is_disconnected() {
    use std::io::{Read, Write};
    let c = Cluster::start("3s", &[]);
    let addr = c.api().base.trim_start_matches("http://").to_string();
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    // Half a request, then silence (a slowloris client).
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: ")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(40)))
        .unwrap();
    let mut buf = [0u8; 1024];
    match slow.read(&mut buf) {
        // Closed, or answered (408) and then closed: either way it does not hang forever.
        Ok(_) => {}
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "the connection was still open after 40 s"
        ),
    }
    // Afterwards, normal requests are served. On a new connection: the harness client's pooled
    // one sat idle as long as the slow one, so the master closes it at the same moment (an idle
    // keep-alive connection waits for its next request's headers under the same timeout), and a
    // request sent on it just then would race with the close.
    assert_eq!(Api::new(&c.api().base).get("/healthz").status, 200);
}

/// Waits until `c`'s master logs that it refused the TLS handshake of worker `worker` (its
/// index in `c.workers`) because `why`, and the worker gives up on registering.
fn refused_in_the_handshake(c: &Cluster, worker: usize, why: &str) {
    wait_for(
        &format!("the master to refuse worker {worker}: {why}"),
        T,
        || {
            let log = c.master.proc.log_text();
            (log.contains("refused a gRPC connection in the TLS handshake") && log.contains(why))
                .then_some(())
        },
    );
    wait_for("the refused worker to give up on registering", T, || {
        c.workers[worker]
            .log_text()
            .contains("no master accepted the registration")
            .then_some(())
    });
}

/// A test CA that issues role certificates ([`Pki::issue`]).
struct Pki {
    ca: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Pki {
    /// A CA named `name` (distinct names, as distinct real CAs have).
    fn new(name: &str) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        Pki {
            ca: params.self_signed(&key).unwrap(),
            key,
        }
    }

    /// Writes the CA certificate as `<name>.pem` in `dir`.
    fn write_ca(&self, dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(format!("{name}.pem"));
        std::fs::write(&p, self.ca.pem()).unwrap();
        p
    }

    /// A certificate for localhost and 127.0.0.1 with the URI SAN `aloha:role:<role>`, written
    /// as `<name>.pem` and `<name>.key` (0600) in `dir`.
    fn issue(&self, dir: &Path, name: &str, role: &str) -> (String, String) {
        use rcgen::{CertificateParams, KeyPair, SanType};
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params.subject_alt_names.push(SanType::URI(
            format!("aloha:role:{role}").try_into().unwrap(),
        ));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.key).unwrap();
        let (c, k) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        chmod(&k, 0o600);
        (c.display().to_string(), k.display().to_string())
    }
}

/// The cluster CA, a master certificate and the join token for a master in `dir`; the master's
/// flags.
fn mtls_master(dir: &Path, pki: &Pki) -> Vec<String> {
    let ca = pki.write_ca(dir, "cluster-ca");
    let (cert, key) = pki.issue(dir, "master", "master");
    let token = token_file(dir, "master.token", TOKEN);
    vec![
        "--tls-ca".into(),
        ca.display().to_string(),
        "--grpc-tls-cert".into(),
        cert,
        "--grpc-tls-key".into(),
        key,
        "--join-token-file".into(),
        token.display().to_string(),
    ]
}

/// Worker flags for mutual TLS with `ca` and a certificate issued by `pki` with `role`.
fn mtls_worker(dir: &Path, name: &str, pki: &Pki, role: &str, ca: &Path) -> Vec<String> {
    let (cert, key) = pki.issue(dir, name, role);
    let token = token_file(dir, &format!("{name}.token"), TOKEN);
    vec![
        "--tls-ca".into(),
        ca.display().to_string(),
        "--tls-cert".into(),
        cert,
        "--tls-key".into(),
        key,
        "--join-token-file".into(),
        token.display().to_string(),
    ]
}

/// A gRPC channel over TLS with tonic's own client (host name checked, no role check), with
/// the client certificate `cert`/`key`.
async fn tls_channel(url: &str, ca: &Path, cert: &str, key: &str) -> tonic::transport::Channel {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()))
        .identity(Identity::from_pem(
            std::fs::read(cert).unwrap(),
            std::fs::read(key).unwrap(),
        ))
        .domain_name("localhost");
    Endpoint::from_shared(url.replace("http://", "https://"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn with_token<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    req
}

#[test]
fn masters_and_workers_talk_over_mutual_tls_and_plaintext_peers_are_refused() {
    let pki = Pki::new("cluster CA");
    let mut c = Cluster::start_with("3s", &[], |dir| mtls_master(dir, &pki));
    let api = c.api().clone();
    let dir = c.dir.path().to_path_buf();
    let ca = dir.join("cluster-ca.pem");
    let flags = mtls_worker(&dir, "good", &pki, "worker", &ca);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    c.workers.push(worker(&c, "good", &target_dir(), &flags));
    api.wait_alive_workers(1, T);

    // Worker → master (register, heartbeat, report) and master → worker (launch, kill, logs).
    let id = api.submit_cmd("hello", &["sh", "-c", "echo over-mtls"], json!({}));
    api.wait_state(&id, "FINISHED", T);
    let r = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{}/api/v1/apps/{id}/logs", c.master.api.base))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), "over-mtls\n");
    let id = api.submit_cmd("long", &["sleep", "60"], json!({}));
    api.wait_state(&id, "RUNNING", T);
    let r = api.post(&format!("/api/v1/apps/{id}/kill"), &json!({}));
    assert!(r.status < 300, "{:?}", r.body);
    api.wait_state(&id, "KILLED", T);

    // A worker without TLS (but with the token) never registers; the master says why.
    let token = token_file(&dir, "plain.token", TOKEN);
    c.workers.push(worker(
        &c,
        "plain",
        &target_dir(),
        &["--join-token-file", &token.display().to_string()],
    ));
    refused_in_the_handshake(&c, 1, "the peer does not speak TLS");
    let ids: Vec<_> = api.workers().iter().map(|w| w["id"].clone()).collect();
    assert_eq!(ids, vec![json!("good")]);

    // Nor can a plaintext client command the worker.
    let address = api.workers()[0]["address"].as_str().unwrap().to_string();
    rt().block_on(async {
        let plain = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .connect()
            .await;
        if let Ok(ch) = plain {
            let kill = KillAppRequest {
                epoch: u64::MAX,
                app_id: id.clone(),
                attempt: 1,
                ..Default::default()
            };
            let status = WorkerServiceClient::new(ch)
                .kill_app(with_token(kill))
                .await
                .unwrap_err();
            // The connection breaks (how depends on timing): no answer from the service.
            assert!(
                matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal
                ) && std::error::Error::source(&status).is_some(),
                "{status:?}"
            );
        }
    });
    wait_for("the worker to log the plaintext caller", T, || {
        c.workers[0]
            .log_text()
            .contains("the peer does not speak TLS")
            .then_some(())
    });
}

#[test]
fn certificates_from_another_ca_or_with_the_wrong_role_are_refused() {
    let pki = Pki::new("cluster CA");
    let mut c = Cluster::start_with("3s", &[], |dir| mtls_master(dir, &pki));
    let api = c.api().clone();
    let dir = c.dir.path().to_path_buf();
    let ca = dir.join("cluster-ca.pem");

    // A worker whose certificate comes from another CA, though it knows (and trusts) the
    // cluster's: the master refuses it in the handshake.
    let other = Pki::new("another CA");
    let both = dir.join("both-cas.pem");
    std::fs::write(
        &both,
        format!(
            "{}{}",
            std::fs::read_to_string(&ca).unwrap(),
            other.ca.pem()
        ),
    )
    .unwrap();
    let flags = mtls_worker(&dir, "stranger", &other, "worker", &both);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    c.workers
        .push(worker(&c, "stranger", &target_dir(), &flags));
    refused_in_the_handshake(&c, 0, "not issued by the cluster CA");

    // A worker that is good, for the checks below.
    let flags = mtls_worker(&dir, "good", &pki, "worker", &ca);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    c.workers.push(worker(&c, "good", &target_dir(), &flags));
    api.wait_alive_workers(1, T);
    let ids: Vec<_> = api.workers().iter().map(|w| w["id"].clone()).collect();
    assert_eq!(ids, vec![json!("good")], "the stranger must never register");

    // A worker's certificate (from the right CA, with the token) cannot command another
    // worker: WorkerService takes masters only.
    let address = api.workers()[0]["address"].as_str().unwrap().to_string();
    let (wcert, wkey) = pki.issue(&dir, "rogue-worker", "worker");
    let (mcert, mkey) = pki.issue(&dir, "stolen-master", "master");
    let url = c.master.rpc_url();
    rt().block_on(async {
        let ch = tls_channel(&format!("http://{address}"), &ca, &wcert, &wkey).await;
        let kill = KillAppRequest {
            epoch: u64::MAX,
            app_id: "app-20260101000000-0001".into(),
            attempt: 1,
            ..Default::default()
        };
        let status = WorkerServiceClient::new(ch)
            .kill_app(with_token(kill))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains("aloha:role:master"), "{status:?}");

        // And a master's certificate does not register a worker: MasterService takes workers.
        let ch = tls_channel(&url, &ca, &mcert, &mkey).await;
        let reg = RegisterWorkerRequest {
            worker_id: "posing".into(),
            address: "127.0.0.1:1".into(),
            cores: 1,
            memory_mb: 512,
            kinds: vec!["process".into()],
            ..Default::default()
        };
        let status = MasterServiceClient::new(ch)
            .register_worker(with_token(reg))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

        // The right certificate but no join token: still refused.
        let ch = tls_channel(&url, &ca, &wcert, &wkey).await;
        let status = MasterServiceClient::new(ch)
            .heartbeat(HeartbeatRequest {
                worker_id: "good".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    });
    assert!(c.workers[1]
        .log_text()
        .contains("refused gRPC calls: this service takes calls from masters only"));
    wait_for("the master to log the role refusal", T, || {
        c.master
            .proc
            .log_text()
            .contains("refused gRPC calls: this service takes calls from workers only")
            .then_some(())
    });

    // A worker dialling something with a worker's certificate (not a master) refuses it:
    // point a worker at the good worker's port.
    let flags = mtls_worker(&dir, "misled", &pki, "worker", &ca);
    let mut cmd = Command::new(bin("aloha-worker"));
    cmd.args(["--master", &format!("http://{address}")])
        .args(["--id", "misled", "--cores", "1", "--memory-mb", "512"])
        .arg("--work-dir")
        .arg(dir.join("misled"))
        .arg("--plugin-dir")
        .arg(target_dir())
        .args(&flags);
    c.workers.push(Proc::spawn("misled", cmd, &dir));
    wait_for(
        "the misled worker to refuse a worker's certificate",
        T,
        || {
            c.workers[2]
                .log_text()
                .contains("lacks the URI SAN aloha:role:master (it has: aloha:role:worker)")
                .then_some(())
        },
    );
}

#[test]
fn mutual_tls_setups_that_cannot_work_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("cluster CA");
    let ca = pki.write_ca(dir.path(), "ca").display().to_string();
    let (wcert, wkey) = pki.issue(dir.path(), "w", "worker");
    let (mcert, mkey) = pki.issue(dir.path(), "m", "master");
    let other = Pki::new("another CA");
    let (ocert, okey) = other.issue(dir.path(), "o", "master");
    let state = dir.path().join("m").display().to_string();
    let work = dir.path().join("w").display().to_string();
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "aloha-master",
            vec![
                "--tls-ca",
                &ca,
                "--grpc-tls-cert",
                &wcert,
                "--grpc-tls-key",
                &wkey,
            ],
            "no URI SAN aloha:role:master",
        ),
        (
            "aloha-master",
            vec![
                "--tls-ca",
                &ca,
                "--grpc-tls-cert",
                &ocert,
                "--grpc-tls-key",
                &okey,
            ],
            "is not issued by --tls-ca",
        ),
        (
            "aloha-master",
            vec![
                "--tls-ca",
                &ca,
                "--grpc-tls-cert",
                &mcert,
                "--grpc-tls-key",
                &wkey,
            ],
            "the key does not belong to the certificate",
        ),
        (
            "aloha-master",
            vec!["--tls-ca", &ca],
            "tls_ca needs this master's certificate and key",
        ),
        (
            "aloha-worker",
            vec!["--tls-ca", &ca, "--tls-cert", &mcert, "--tls-key", &mkey],
            "no URI SAN aloha:role:worker",
        ),
        (
            "aloha-worker",
            vec!["--tls-ca", &ca],
            "tls_ca, tls_cert and tls_key go together",
        ),
    ];
    for (daemon, flags, expected) in cases {
        let place = if daemon == "aloha-master" {
            ["--state-dir", &state]
        } else {
            ["--work-dir", &work]
        };
        let out = Command::new(bin(daemon))
            .args(place)
            .args(&flags)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{daemon} {flags:?} started");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{daemon} {flags:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
}

#[test]
fn masters_watch_each_other_over_mutual_tls() {
    let pki = Pki::new("cluster CA");
    two_masters_watch_and_fail_over(|dir, i| {
        let own = dir.join(format!("m{i}-pki"));
        std::fs::create_dir(&own).unwrap();
        mtls_master(&own, &pki)
    });
}

/// A compact JWS over `header` and `claims` (JSON texts), HMAC-SHA256-signed with `key`.
fn jws(key: &[u8], header: &str, claims: &str) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use hmac::Mac;
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(input.as_bytes());
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

#[test]
fn sparks_submission_port_takes_sparks_jws_bearer() {
    use base64::Engine;
    let port = free_port();
    let key = [42u8; 32];
    // Padded, as Spark's documentation makes it (Java's URL encoder).
    let secret = base64::engine::general_purpose::URL_SAFE.encode(key);
    // Off loopback with --auth off: the JWS secret alone guards the port.
    let c = Cluster::start_with("3s", &[], |dir| {
        let f = token_file(dir, "jws.secret", &secret);
        vec![
            "--submission-addr".into(),
            format!("0.0.0.0:{port}"),
            "--submission-jws-secret-file".into(),
            f.display().to_string(),
        ]
    });
    let base = format!("http://127.0.0.1:{port}/v1/submissions");
    let create = json!({"action": "CreateSubmissionRequest", "appResource": "x.jar",
        "mainClass": "Main", "appArgs": [], "clientSparkVersion": "4.0.1",
        "environmentVariables": {}, "sparkProperties": {"spark.app.name": "jws"}});
    let good = jws(&key, r#"{"alg":"HS256","typ":"JWT"}"#, r#"{"sub":"ci"}"#);

    // Refused: no bearer, another secret, alg none, a changed payload, expired, an Aloha-style
    // token.
    let r = http(None)
        .post(format!("{base}/create"))
        .json(&create)
        .send()
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let none = {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode("{}")
        )
    };
    let mut tampered: Vec<String> = good.split('.').map(String::from).collect();
    tampered[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"sub":"admin"}"#);
    let bad = [
        jws(&[7u8; 32], r#"{"alg":"HS256"}"#, "{}"),
        none,
        jws(&key, r#"{"alg":"none"}"#, "{}"),
        jws(&key, r#"{"alg":"HS512"}"#, "{}"),
        tampered.join("."),
        jws(&key, r#"{"alg":"HS256"}"#, r#"{"exp":1000}"#),
        TOKEN.to_string(),
    ];
    for token in &bad {
        let r = http(Some(token))
            .post(format!("{base}/create"))
            .json(&create)
            .send()
            .unwrap();
        assert_eq!(r.status(), 401, "{token}");
        let r = http(Some(token))
            .get(format!("{base}/status/app-20260101000000-0001"))
            .send()
            .unwrap();
        assert_eq!(r.status(), 401, "{token}");
    }
    assert!(c.api().get("/api/v1/apps").body["apps"]
        .as_array()
        .unwrap()
        .is_empty());

    // Accepted: create, status and kill with the JWS.
    let r = http(Some(&good))
        .post(format!("{base}/create"))
        .json(&create)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["success"], true, "{body}");
    let id = body["submissionId"].as_str().unwrap().to_string();
    let r = http(Some(&good))
        .get(format!("{base}/status/{id}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let later = jws(
        &key,
        r#"{"alg":"HS256"}"#,
        &format!(r#"{{"exp":{}}}"#, chrono_now() + 600),
    );
    let r = http(Some(&later))
        .post(format!("{base}/kill/{id}"))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    c.api().wait_state(&id, "KILLED", T);
}

fn chrono_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn a_submission_jws_secret_that_is_short_or_open_is_refused_at_start() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let short = token_file(
        dir.path(),
        "short",
        &base64::engine::general_purpose::URL_SAFE.encode([1u8; 16]),
    );
    let open = token_file(
        dir.path(),
        "open",
        &base64::engine::general_purpose::URL_SAFE.encode([1u8; 32]),
    );
    chmod(&open, 0o644);
    for (f, expected) in [
        (&short, "at least 32"),
        (&open, "permissions 0644 are too open"),
    ] {
        let out = Command::new(bin("aloha-master"))
            .arg("--state-dir")
            .arg(dir.path().join("m"))
            .arg("--submission-jws-secret-file")
            .arg(f)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{err}");
    }
}

#[test]
fn with_auth_required_the_submission_port_takes_a_jws_or_an_aloha_token() {
    use base64::Engine;
    let port = free_port();
    let key = [9u8; 48];
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key);
    let c = Cluster::start_with("3s", &[], |dir| {
        let mut args = required_auth(dir);
        let f = token_file(dir, "jws.secret", &secret);
        args.extend([
            "--submission-addr".into(),
            format!("127.0.0.1:{port}"),
            "--submission-jws-secret-file".into(),
            f.display().to_string(),
        ]);
        args
    });
    let status = format!("http://127.0.0.1:{port}/v1/submissions/status/app-20260101000000-0001");
    // On loopback too: with a secret set, the port is no longer open.
    assert_eq!(http(None).get(&status).send().unwrap().status(), 401);
    let wrong = jws(&[1u8; 48], r#"{"alg":"HS256"}"#, "{}");
    assert_eq!(
        http(Some(&wrong)).get(&status).send().unwrap().status(),
        401
    );
    let good = jws(&key, r#"{"alg":"HS256"}"#, "{}");
    assert_eq!(http(Some(&good)).get(&status).send().unwrap().status(), 200);
    assert_eq!(http(Some(TOKEN)).get(&status).send().unwrap().status(), 200);
    drop(c);
}

#[test]
fn a_worker_with_mutual_tls_explains_why_a_plaintext_master_does_not_answer() {
    let pki = Pki::new("cluster CA");
    let mut c = Cluster::start("3s", &[]);
    let dir = c.dir.path().to_path_buf();
    let ca = pki.write_ca(&dir, "cluster-ca");
    let flags = mtls_worker(&dir, "tls-only", &pki, "worker", &ca);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    c.workers
        .push(worker(&c, "tls-only", &target_dir(), &flags));
    wait_for("the worker to say why it cannot register", T, || {
        let log = c.workers[0].log_text();
        (log.contains("cannot connect over mutual TLS")
            && log.contains("is --tls-ca set on both sides?"))
        .then_some(())
    });
    assert!(c.api().workers().is_empty());
}
