//! Spark's REST submission protocol (`aloha-master --submission-addr`) on the real binaries:
//! Spark's own client — pyspark's `spark-submit --deploy-mode cluster`, `--status`, `--kill` —
//! against one master and against two HA masters on a real etcd with the standby listed first;
//! and plain HTTP for the error answers and Aloha's own request.
//!
//! The Spark tests compile a one-class jar with `javac` and `jar` and need pyspark (like
//! tests/spark.rs: `eval "$(scripts/install-spark-flink.sh)"`). Missing tools fail the tests,
//! saying how to install them: they are never skipped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aloha_e2e::etcd::EtcdCluster;
use aloha_e2e::{
    free_port, start_worker_with_config, toml_string, wait_for, Api, Cluster, MasterOpts,
    MasterProc, Proc, WorkerOpts,
};
use serde_json::{json, Value};

/// A JVM per `spark-submit` and per driver on 2 loaded cores take a while.
const T: Duration = Duration::from_secs(180);

const INSTALL: &str = "install them with `eval \"$(scripts/install-spark-flink.sh)\"` (as root on \
                       Debian; it installs Java if missing and pyspark in a venv, and exports \
                       SPARK_HOME and PYSPARK_PYTHON), then run the tests again";

const JDK: &str = "the tests compile their driver: install a JDK (`apt-get install -y \
                   openjdk-17-jdk-headless`), then run the tests again";

/// The Spark distribution inside the pyspark package (has `bin/spark-submit`).
fn spark_home() -> PathBuf {
    aloha_e2e::spark_home(INSTALL)
}

const MAIN: &str = r#"
public class Main {
    public static void main(String[] args) throws Exception {
        if (args.length > 0 && args[0].equals("sleep")) {
            System.out.println("sleeping");
            System.out.flush();
            Thread.sleep(600000);
        }
        System.out.println("hello from the REST driver, args " + String.join(",", args));
    }
}
"#;

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}; {JDK}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed: {text}");
    text
}

/// Compiles `Main` into `<dir>/app.jar`.
fn build_jar(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    let classes = dir.join("classes");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&classes).unwrap();
    std::fs::write(src.join("Main.java"), MAIN).unwrap();
    run(
        Command::new("javac")
            .arg("-d")
            .arg(&classes)
            .arg(src.join("Main.java")),
        "javac",
    );
    let jar = dir.join("app.jar");
    run(
        Command::new("jar")
            .arg("cf")
            .arg(&jar)
            .arg("-C")
            .arg(&classes)
            .arg("."),
        "jar",
    );
    jar
}

/// `spark-submit` sets its root logger to WARN, and what the REST client says about the
/// submission (the id, the server's responses) is INFO: that logger is set to INFO by name.
const LOG4J2: &str = "rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p %c{1}: %m%n%ex
logger.rest.name = org.apache.spark.deploy.rest
logger.rest.level = info
";

/// A `SPARK_CONF_DIR` whose log4j2 configuration shows the client's INFO lines. It lives in
/// the target dir (one per test binary's target, rewritten by each run), not in a temp dir a
/// static would never remove.
fn client_conf() -> &'static Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = aloha_e2e::target_dir().join("spark-client-conf");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("log4j2.properties"), LOG4J2).unwrap();
        dir
    })
}

/// Runs pyspark's `spark-submit` (the client) with `args`; its whole output.
fn spark_submit(home: &Path, args: &[&str]) -> String {
    let out = Command::new(home.join("bin/spark-submit"))
        .args(args)
        .env("SPARK_HOME", home)
        .env("SPARK_CONF_DIR", client_conf())
        .env("SPARK_LOCAL_IP", "127.0.0.1")
        .output()
        .expect("run spark-submit");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "spark-submit {args:?}: {text}");
    text
}

/// The submission id `spark-submit` reports ("Submission successfully created as ID").
fn submission_id(output: &str) -> String {
    let (_, rest) = output
        .split_once("Submission successfully created as ")
        .unwrap_or_else(|| panic!("no submission id in the client's output:\n{output}"));
    rest.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect()
}

/// The worker's configuration: pyspark's Spark, drivers in `local[1]`.
fn spark_config(home: &Path) -> String {
    format!(
        "[plugins.spark]\nspark_home = {}\nmaster = \"local[1]\"\nkill_grace_ms = 3000\n",
        toml_string(&home.to_string_lossy())
    )
}

fn submission_args(port: u16) -> Vec<String> {
    vec!["--submission-addr".into(), format!("127.0.0.1:{port}")]
}

#[test]
fn spark_submit_in_cluster_mode_runs_the_driver_on_a_worker_and_follows_and_kills_it() {
    let home = spark_home();
    let port = free_port();
    let mut c = Cluster::start_with("10s", &[], |_| submission_args(port));
    c.add_worker_with_config("w1", 4, &spark_config(&home));
    c.api().wait_alive_workers(1, Duration::from_secs(30));
    let jar = build_jar(&c.dir.path().join("jar"));
    let jar = jar.to_str().unwrap();
    let master = format!("spark://127.0.0.1:{port}");
    let cluster_mode = [
        "--master",
        &master,
        "--deploy-mode",
        "cluster",
        "--conf",
        "spark.master.rest.enabled=true",
    ];

    // A driver that finishes.
    let mut args = cluster_mode.to_vec();
    args.extend([
        "--name",
        "rest-hello",
        "--driver-memory",
        "512m",
        "--class",
        "Main",
        jar,
        "a",
        "b",
    ]);
    let out = spark_submit(&home, &args);
    let id = submission_id(&out);
    assert!(out.contains("CreateSubmissionResponse"), "{out}");
    let app = c.api().wait_state(&id, "FINISHED", T);
    assert_eq!(app["kind"], "spark", "{app:#}");
    assert_eq!(app["name"], "rest-hello");
    assert_eq!(
        (app["cores"].as_u64(), app["memory_mb"].as_u64()),
        (Some(1), Some(512))
    );
    assert_eq!(app["worker_id"], "w1");
    assert_eq!(app["labels"]["submitted_via"], "spark-rest");
    let stdout = std::fs::read_to_string(c.app_dir("w1", &id, 1).join("stdout")).unwrap();
    assert!(
        stdout.contains("hello from the REST driver, args a,b"),
        "the driver's stdout: {stdout}"
    );

    // --status, with Spark's client.
    let mut args = vec!["--master", &master, "--status", &id];
    let out = spark_submit(&home, &args);
    assert!(out.contains("SubmissionStatusResponse"), "{out}");
    assert!(out.contains("\"driverState\" : \"FINISHED\""), "{out}");
    assert!(out.contains("\"workerId\" : \"w1\""), "{out}");

    // A supervised driver that runs until killed with --kill.
    let mut submit = cluster_mode.to_vec();
    submit.extend(["--supervise", "--class", "Main", jar, "sleep"]);
    let sleeper = submission_id(&spark_submit(&home, &submit));
    let app = c.api().wait_state(&sleeper, "RUNNING", T);
    assert_eq!(app["restart"], "on_failure", "supervise: {app:#}");
    assert_eq!(app["max_retries"], 10, "{app:#}");
    wait_for("the driver to run", T, || {
        let dir = c.app_dir("w1", &sleeper, 1);
        let out = std::fs::read_to_string(dir.join("stdout")).ok()?;
        out.contains("sleeping").then_some(())
    });
    let out = spark_submit(&home, &["--master", &master, "--kill", &sleeper]);
    assert!(out.contains("KillSubmissionResponse"), "{out}");
    assert!(out.contains("\"success\" : true"), "{out}");
    let app = c
        .api()
        .wait_state(&sleeper, "KILLED", Duration::from_secs(60));
    assert_eq!(
        app["attempt"], 1,
        "a kill is final, even supervised: {app:#}"
    );
    args = vec!["--master", &master, "--status", &sleeper];
    let out = spark_submit(&home, &args);
    assert!(out.contains("\"driverState\" : \"KILLED\""), "{out}");
}

#[test]
fn spark_submit_moves_on_from_a_standby_listed_first_to_the_leader() {
    let home = spark_home();
    let dir = tempfile::Builder::new()
        .prefix("aloha-spark-rest-ha-")
        .tempdir()
        .unwrap();
    let etcd = EtcdCluster::start(1, dir.path());
    let ports = [free_port(), free_port()];
    let masters: Vec<MasterProc> = (0..2)
        .map(|i| {
            let opts = MasterOpts {
                http_port: free_port(),
                rpc_port: free_port(),
                state_dir: dir.path().join(format!("m{i}")),
                worker_timeout: "10s".into(),
                etcd: Some((etcd.endpoints(), "2s".into())),
            };
            MasterProc::start_with(
                &format!("m{i}"),
                opts,
                submission_args(ports[i]),
                dir.path(),
            )
        })
        .collect();
    let leader = aloha_e2e::leader_of(&masters, T);
    let standby = 1 - leader;
    let rpcs: Vec<String> = masters.iter().map(MasterProc::rpc_url).collect();
    let opts = WorkerOpts {
        id: "w1".into(),
        cores: 4,
        memory_mb: 4096,
        work_dir: dir.path().join("w1"),
        kill_grace_ms: 2000,
    };
    let _worker: Proc = start_worker_with_config(&rpcs, &opts, &spark_config(&home), dir.path());
    masters[leader]
        .api
        .wait_alive_workers(1, Duration::from_secs(30));

    // The standby refuses, in the way Spark's client understands.
    let rest = Api::new(&format!("http://127.0.0.1:{}", ports[standby]));
    let r = rest.post(
        "/v1/submissions/create",
        &json!({"action": "CreateSubmissionRequest", "name": "x", "entryPoint": "process",
                "args": "{\"command\": [\"true\"]}"}),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["action"], "CreateSubmissionResponse");
    assert_eq!(r.body["success"], false);
    let message = r.body["message"].as_str().unwrap();
    assert!(
        message.starts_with("Current state is not alive"),
        "{message}"
    );
    for (path, action) in [
        ("/v1/submissions/status/app-1", "SubmissionStatusResponse"),
        ("/v1/submissions/kill/app-1", "KillSubmissionResponse"),
    ] {
        let r = if path.contains("kill") {
            rest.post(path, &json!({}))
        } else {
            rest.get(path)
        };
        assert_eq!((r.status, &r.body["action"]), (200, &json!(action)));
        assert_eq!(r.body["success"], false);
        assert!(r.body["message"]
            .as_str()
            .unwrap()
            .starts_with("Current state is not alive"));
    }

    // Spark's client, the standby first.
    let jar = build_jar(&dir.path().join("jar"));
    let url = format!(
        "spark://127.0.0.1:{},127.0.0.1:{}",
        ports[standby], ports[leader]
    );
    let out = spark_submit(
        &home,
        &[
            "--master",
            &url,
            "--deploy-mode",
            "cluster",
            "--conf",
            "spark.master.rest.enabled=true",
            "--class",
            "Main",
            jar.to_str().unwrap(),
            "ha",
        ],
    );
    let id = submission_id(&out);
    let app = masters[leader].api.wait_state(&id, "FINISHED", T);
    assert_eq!(app["kind"], "spark", "{app:#}");
    let stdout = std::fs::read_to_string(dir.path().join("w1").join(&id).join("1/stdout")).unwrap();
    assert!(stdout.contains("args ha"), "{stdout}");
    let out = spark_submit(&home, &["--master", &url, "--status", &id]);
    assert!(out.contains("\"driverState\" : \"FINISHED\""), "{out}");
    // The client asked the standby first each time (a refused status is all it logs of it).
    assert!(
        out.contains("unexpected type SubmissionStatusResponse"),
        "{out}"
    );
    let log = masters[standby].proc.log_text();
    for action in ["CreateSubmissionResponse", "SubmissionStatusResponse"] {
        assert!(
            log.lines()
                .any(|l| l.contains("not the leader") && l.contains(action)),
            "the standby answered no {action}: {log}"
        );
    }
}

#[test]
fn the_protocol_errors_and_alohas_own_request_over_plain_http() {
    let port = free_port();
    let c = Cluster::start_with("10s", &[("w1", 2)], |_| submission_args(port));
    let rest = Api::new(&format!("http://127.0.0.1:{port}"));
    let error = |r: &aloha_e2e::Resp, status: u16, says: &str| {
        assert_eq!(r.status, status, "{:?}", r.body);
        assert_eq!(r.body["action"], "ErrorResponse", "{:?}", r.body);
        assert_eq!(r.body["success"], false);
        assert!(r.body["serverSparkVersion"].is_string(), "{:?}", r.body);
        let message = r.body["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{message}");
    };

    let create = "/v1/submissions/create";
    let r = rest.post_raw(create, "application/json", b"{not json".to_vec());
    error(&r, 400, "Malformed request");
    let spark = json!({
        "action": "CreateSubmissionRequest", "clientSparkVersion": "4.0.1",
        "mainClass": "Main", "sparkProperties": {"spark.app.name": "x"},
    });
    error(&rest.post(create, &spark), 400, "'appResource' is missing");
    error(
        &rest.post(create, &json!({"appResource": "a.jar"})),
        400,
        "action",
    );
    let r = rest.post(create, &json!({"action": "MakeCoffeeRequest"}));
    error(&r, 400, "unexpected type MakeCoffeeRequest");
    let r = rest.post("/v2/submissions/create", &spark);
    error(&r, 468, "Unknown protocol version 'v2'");
    assert_eq!(r.body["highestProtocolVersion"], "v1");
    error(
        &rest.get("/v1/submissions/status"),
        400,
        "Submission ID is missing",
    );
    error(&rest.get("/"), 400, "Missing protocol version");
    assert_eq!(
        c.api().get("/api/v1/apps").body["apps"],
        json!([]),
        "nothing was created"
    );

    // Aloha's request: any kind, the spec as a JSON string, libs in the description.
    let r = rest.post(
        create,
        &json!({
            "action": "CreateSubmissionRequest",
            "name": "aloha-rest",
            "entryPoint": "process",
            "libs": ["/opt/lib/extra.jar"],
            "args": "{\"command\": [\"sh\", \"-c\", \"echo hi from aloha rest\"]}",
            "memory": 64,
            "cores": 1,
        }),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["action"], "CreateSubmissionResponse");
    assert_eq!(r.body["success"], true);
    let id = r.body["submissionId"].as_str().unwrap().to_string();
    let status = wait_for("the submission to finish", T, || {
        let r = rest.get(&format!("/v1/submissions/status/{id}"));
        (r.body["driverState"] == "FINISHED").then_some(r)
    });
    assert_eq!(status.status, 200);
    assert_eq!(status.body["action"], "SubmissionStatusResponse");
    assert_eq!(status.body["success"], true);
    assert_eq!(status.body["submissionId"], id.as_str());
    assert_eq!(status.body["workerId"], "w1");
    assert!(status.body["workerHostPort"]
        .as_str()
        .is_some_and(|a| a.contains(':')));
    let app = c.api().app(&id);
    assert_eq!(
        (&app["kind"], &app["memory_mb"], &app["libs"]),
        (
            &json!("process"),
            &json!(64),
            &json!(["/opt/lib/extra.jar"])
        )
    );
    let dir = c.app_dir("w1", &id, 1);
    let desc: Value =
        serde_json::from_slice(&std::fs::read(dir.join("description.json")).unwrap()).unwrap();
    assert_eq!(desc["libs"], json!(["/opt/lib/extra.jar"]), "{desc:#}");
    let out = std::fs::read_to_string(dir.join("stdout")).unwrap();
    assert!(out.contains("hi from aloha rest"), "{out}");

    // Kill: a supervised app is restarted on failure, but a kill is final.
    let r = rest.post(
        create,
        &json!({
            "action": "CreateSubmissionRequest", "name": "sleeper", "entryPoint": "process",
            "args": "{\"command\": [\"sleep\", \"600\"]}", "supervise": true,
        }),
    );
    let sleeper = r.body["submissionId"].as_str().unwrap().to_string();
    let app = c.api().wait_state(&sleeper, "RUNNING", T);
    assert_eq!(app["restart"], "on_failure");
    let r = rest.post(&format!("/v1/submissions/kill/{sleeper}"), &json!({}));
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["action"], "KillSubmissionResponse");
    assert_eq!(r.body["success"], true);
    assert_eq!(r.body["submissionId"], sleeper.as_str());
    c.api()
        .wait_state(&sleeper, "KILLED", Duration::from_secs(30));
    let r = rest.post(&format!("/v1/submissions/kill/{sleeper}"), &json!({}));
    assert_eq!(r.body["success"], false, "already ended: {:?}", r.body);
    let r = rest.get("/v1/submissions/status/app-20260101000000-9999");
    assert_eq!((r.status, &r.body["success"]), (200, &json!(false)));
    assert_eq!(r.body["action"], "SubmissionStatusResponse");
}

/// Makes a JWS with jjwt, the library Spark's `JWSFilter` verifies with, from pyspark's jars,
/// the way a Spark client signs: `Keys.hmacShaKeyFor(Decoders.BASE64URL.decode(secret))`.
const MAKE_JWS: &str = r#"
import io.jsonwebtoken.Jwts;
import io.jsonwebtoken.io.Decoders;
import io.jsonwebtoken.security.Keys;

public class MakeJws {
    public static void main(String[] args) {
        System.out.print(Jwts.builder()
            .subject("ci")
            .signWith(Keys.hmacShaKeyFor(Decoders.BASE64URL.decode(args[0])))
            .compact());
    }
}
"#;

#[test]
fn a_jws_made_by_jjwt_as_for_sparks_jws_filter_is_accepted() {
    use base64::Engine;
    let home = spark_home();
    let port = free_port();
    let secret =
        base64::engine::general_purpose::URL_SAFE.encode(*b"an HS256 secret of 32 bytes, ok.");
    let other = base64::engine::general_purpose::URL_SAFE.encode([5u8; 32]);
    let c = Cluster::start_with("10s", &[], |dir| {
        let f = dir.join("jws.secret");
        std::fs::write(&f, &secret).unwrap();
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let mut args = submission_args(port);
        args.extend([
            "--submission-jws-secret-file".into(),
            f.display().to_string(),
        ]);
        args
    });
    let src = c.dir.path().join("jws");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("MakeJws.java"), MAKE_JWS).unwrap();
    let jars = format!("{}/jars/*", home.display());
    run(
        Command::new("javac")
            .args(["-cp", &jars, "-d"])
            .arg(&src)
            .arg(src.join("MakeJws.java")),
        "javac",
    );
    let make = |secret: &str| {
        run(
            Command::new("java").args([
                "-cp",
                &format!("{}:{jars}", src.display()),
                "MakeJws",
                secret,
            ]),
            "java MakeJws",
        )
        .trim()
        .to_string()
    };
    let status = format!("http://127.0.0.1:{port}/v1/submissions/status/app-20260101000000-0001");
    let client = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap();
    let get = |token: Option<&str>| {
        let mut r = client.get(&status);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().unwrap().status().as_u16()
    };
    assert_eq!(get(None), 401);
    assert_eq!(get(Some(&make(&other))), 401);
    assert_eq!(get(Some(&make(&secret))), 200);
}
