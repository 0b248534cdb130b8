//! The `flink` plugin on a real master and worker against a real Flink standalone session
//! cluster (pyflink's distribution, on loopback ports): a job that finishes, one cancelled by a
//! kill, and a submission that fails in the CLI.
//!
//! The Flink tests share one cluster: the first test to need it starts it with
//! `start-cluster.sh` (configuration, logs and pid files in a temp dir), and the last to finish
//! with it stops it with `stop-cluster.sh` and kills whatever is left, also when a test panics.
//!
//! Needs apache-flink and Java: `eval "$(scripts/install-spark-flink.sh)"` installs them and
//! exports `FLINK_HOME` and `ALOHA_FLINK_PYTHON`; without those variables the tests look in the
//! script's default place (`${ALOHA_TOOLS_DIR:-$HOME/.cache/aloha-tools}`). Missing tools fail
//! the tests, saying how to install them: they are never skipped.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use aloha_e2e::{
    app_pid, find_in_tool_venvs, free_port, process_exists, require_java, require_python_module,
    toml_string, wait_for, Api, Cluster,
};
use serde_json::json;

/// A Python job is submitted by a JVM plus a Python process: a few seconds each, more when
/// several run at once on 2 cores.
const T: Duration = Duration::from_secs(180);

const INSTALL: &str = "install them with `eval \"$(scripts/install-spark-flink.sh)\"` (as root on \
                       Debian; it installs Java if missing and apache-flink in a venv, and exports \
                       FLINK_HOME and ALOHA_FLINK_PYTHON), then run the tests again";

/// Where apache-flink is.
struct Flink {
    /// The Flink distribution inside the pyflink package (`bin/flink`, `bin/start-cluster.sh`).
    home: PathBuf,
    /// A Python that can `import pyflink`, for `flink run -py`.
    python: PathBuf,
}

fn flink() -> Flink {
    require_java(INSTALL);
    let home = std::env::var_os("FLINK_HOME")
        .map(PathBuf::from)
        .or_else(|| find_in_tool_venvs("flink-", "pyflink"))
        .unwrap_or_else(|| {
            panic!(
                "apache-flink is missing: FLINK_HOME is not set and {} has no flink venv; \
                 {INSTALL}",
                aloha_e2e::tools_dir().display()
            )
        });
    for script in ["bin/flink", "bin/start-cluster.sh", "bin/stop-cluster.sh"] {
        assert!(
            home.join(script).is_file(),
            "{} has no {script}; {INSTALL}",
            home.display()
        );
    }
    // FLINK_HOME is <venv>/lib/python3.X/site-packages/pyflink.
    let python = std::env::var_os("ALOHA_FLINK_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            let venv = home.ancestors().nth(4)?;
            Some(venv.join("bin/python")).filter(|p| p.exists())
        })
        .unwrap_or_else(|| panic!("no Python for pyflink: set ALOHA_FLINK_PYTHON; {INSTALL}"));
    require_python_module(&python, "pyflink", INSTALL);
    Flink { home, python }
}

/// A standalone Flink session cluster (one JobManager, one TaskManager) on loopback ports.
struct FlinkCluster {
    home: PathBuf,
    rest_port: u16,
    api: Api,
    /// conf/, log/ and pid/ of this cluster.
    dir: tempfile::TempDir,
}

impl FlinkCluster {
    fn start(flink: &Flink) -> FlinkCluster {
        let dir = tempfile::Builder::new()
            .prefix("aloha-flink-")
            .tempdir()
            .expect("temp dir");
        let conf = dir.path().join("conf");
        for sub in ["conf", "log", "pid"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        for entry in std::fs::read_dir(flink.home.join("conf"))
            .unwrap()
            .flatten()
        {
            if entry.path().is_file() {
                std::fs::copy(entry.path(), conf.join(entry.file_name())).unwrap();
            }
        }
        let rest_port = free_port();
        let cluster = FlinkCluster {
            home: flink.home.clone(),
            rest_port,
            api: Api::new(&format!("http://127.0.0.1:{rest_port}")),
            dir,
        };
        // Flink's own tool for editing config.yaml (the Docker images use it too).
        let settings = [
            ("rest.port", rest_port.to_string()),
            ("rest.address", "127.0.0.1".into()),
            ("rest.bind-address", "127.0.0.1".into()),
            ("jobmanager.rpc.address", "127.0.0.1".into()),
            ("jobmanager.rpc.port", free_port().to_string()),
            ("jobmanager.bind-host", "127.0.0.1".into()),
            ("blob.server.port", free_port().to_string()),
            ("taskmanager.host", "127.0.0.1".into()),
            ("taskmanager.bind-host", "127.0.0.1".into()),
            ("taskmanager.rpc.port", free_port().to_string()),
            ("taskmanager.data.port", free_port().to_string()),
            ("taskmanager.numberOfTaskSlots", "4".into()),
            ("jobmanager.memory.process.size", "1024m".into()),
            ("taskmanager.memory.process.size", "1280m".into()),
        ];
        let mut edit = cluster.script("config-parser-utils.sh");
        edit.arg(&conf)
            .arg(flink.home.join("bin"))
            .arg(flink.home.join("lib"));
        for (key, value) in &settings {
            edit.arg("-D").arg(format!("{key}={value}"));
        }
        cluster.run(edit, "config-parser-utils.sh");
        // start-cluster.sh passes the masters file's port to the JobManager as its REST port.
        std::fs::write(conf.join("masters"), format!("127.0.0.1:{rest_port}\n")).unwrap();
        std::fs::write(conf.join("workers"), "127.0.0.1\n").unwrap();

        let started = Instant::now();
        let start = cluster.script("start-cluster.sh");
        cluster.run(start, "start-cluster.sh");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let ready = cluster.api.try_get("/overview").ok().is_some_and(|r| {
                r.status == 200 && r.body["taskmanagers"].as_u64().unwrap_or(0) >= 1
            });
            if ready {
                break;
            }
            // Drop stops what did start.
            assert!(
                Instant::now() < deadline,
                "the Flink cluster did not come up in 120 s:\n{}",
                cluster.logs()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        eprintln!(
            "Flink session cluster up on 127.0.0.1:{rest_port} in {:?}",
            started.elapsed()
        );
        cluster
    }

    /// A `bin/<name>` of the distribution, with this cluster's configuration, log and pid dirs.
    fn script(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.home.join("bin").join(name));
        cmd.env("FLINK_CONF_DIR", self.dir.path().join("conf"))
            .env("FLINK_LOG_DIR", self.dir.path().join("log"))
            .env("FLINK_PID_DIR", self.dir.path().join("pid"))
            .stdin(Stdio::null());
        cmd
    }

    /// Runs a script to its end (the daemons it starts live on: their output goes to log/).
    fn run(&self, mut cmd: Command, what: &str) {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
        assert!(
            out.status.success(),
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The last lines of the daemons' logs.
    fn logs(&self) -> String {
        let mut text = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path().join("log")) {
            for entry in entries.flatten() {
                let content = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let lines: Vec<&str> = content.lines().collect();
                let tail = &lines[lines.len().saturating_sub(30)..];
                text.push_str(&format!(
                    "----- {} -----\n{}\n",
                    entry.file_name().to_string_lossy(),
                    tail.join("\n")
                ));
            }
        }
        text
    }

    /// The `host:port` of the REST endpoint.
    fn jobmanager(&self) -> String {
        format!("127.0.0.1:{}", self.rest_port)
    }

    /// The job's state as the JobManager reports it.
    fn job_state(&self, job_id: &str) -> String {
        let r = self.api.get(&format!("/jobs/{job_id}"));
        assert_eq!(r.status, 200, "GET /jobs/{job_id}: {:?}", r.body);
        r.body["state"].as_str().unwrap_or_default().to_owned()
    }

    /// The pids in the pid files of the daemons.
    fn daemon_pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path().join("pid")) {
            for entry in entries.flatten() {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                pids.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok()),
                );
            }
        }
        pids
    }
}

impl Drop for FlinkCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        let pids = self.daemon_pids();
        let mut stop = self.script("stop-cluster.sh");
        stop.stdout(Stdio::null()).stderr(Stdio::null());
        let _ = stop.status();
        // Whatever stop-cluster.sh did not stop (a daemon that hung, a failed script) is killed.
        let deadline = Instant::now() + Duration::from_secs(15);
        for pid in pids.into_iter().filter(|&p| p > 1) {
            while process_exists(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            if process_exists(pid) {
                // SAFETY: plain kill(2) on a daemon this cluster started.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

/// The cluster shared by the tests running now: started by the first, stopped when the last
/// lets go of it.
fn shared_cluster(flink: &Flink) -> Arc<FlinkCluster> {
    static SHARED: Mutex<Weak<FlinkCluster>> = Mutex::new(Weak::new());
    // A test that panicked while starting it poisons the lock; the next one tries again.
    let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(cluster) = shared.upgrade() {
        return cluster;
    }
    let cluster = Arc::new(FlinkCluster::start(flink));
    *shared = Arc::downgrade(&cluster);
    cluster
}

/// A master and one worker whose `[plugins.flink]` points at the Flink cluster.
fn aloha(flink: &Flink, cluster: &FlinkCluster) -> Cluster {
    // A generous worker timeout: these tests are about apps, not about losing workers, and a
    // loaded 2-core machine running JVMs must not make the master give up on the worker.
    let mut c = Cluster::start("10s", &[]);
    let config = format!(
        "[plugins.flink]\nflink_home = {}\njobmanager = {}\npoll_interval_ms = 300\n\
         kill_grace_ms = 3000\n",
        toml_string(&flink.home.to_string_lossy()),
        toml_string(&cluster.jobmanager())
    );
    c.add_worker_with_config("w1", 4, &config);
    c.api().wait_alive_workers(1, Duration::from_secs(30));
    c
}

/// Writes a Python job into the cluster's directory and submits it as a `flink` app.
fn submit(c: &Cluster, flink: &Flink, name: &str, source: &str) -> String {
    let dir = c.dir.path().join("jobs");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.py"));
    std::fs::write(&path, source).unwrap();
    let spec = json!({
        "python": path,
        "parallelism": 1,
        "env": {"PYFLINK_CLIENT_EXECUTABLE": flink.python},
    });
    c.api()
        .submit(json!({"name": name, "kind": "flink", "spec": spec}))["id"]
        .as_str()
        .expect("app id")
        .to_owned()
}

/// The app's `flink_job_id` detail, once reported.
fn job_id_of(api: &Api, id: &str) -> String {
    wait_for("the flink_job_id detail", T, || {
        let app = api.app(id);
        let job = app["details"]["flink_job_id"].as_str()?.to_owned();
        Some(job)
    })
}

/// A bounded job: 200 generated rows into a sink that drops them.
const FINITE: &str = r#"
from pyflink.table import EnvironmentSettings, TableEnvironment

t = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
t.execute_sql("CREATE TABLE src (n BIGINT) WITH ('connector' = 'datagen', 'number-of-rows' = '200')")
t.execute_sql("CREATE TABLE snk (n BIGINT) WITH ('connector' = 'blackhole')")
t.execute_sql("INSERT INTO snk SELECT n FROM src")
print("submitted the finite job")
"#;

/// An unbounded job: ten generated rows a second, for ever.
const ENDLESS: &str = r#"
from pyflink.table import EnvironmentSettings, TableEnvironment

t = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
t.execute_sql("CREATE TABLE src (n BIGINT) WITH ('connector' = 'datagen', 'rows-per-second' = '10')")
t.execute_sql("CREATE TABLE snk (n BIGINT) WITH ('connector' = 'blackhole')")
t.execute_sql("INSERT INTO snk SELECT n FROM src")
print("submitted the endless job")
"#;

/// A program that fails before it submits anything.
const BROKEN: &str = r#"
raise RuntimeError("no job today: the input is missing")
"#;

#[test]
fn a_flink_job_finishes_and_the_jobmanager_agrees() {
    let flink = flink();
    let cluster = shared_cluster(&flink);
    let c = aloha(&flink, &cluster);
    let api = c.api();
    let id = submit(&c, &flink, "finite", FINITE);
    let app = api.wait_state(&id, "FINISHED", T);
    assert_eq!(app["exit_code"], 0, "{app:#}");
    assert_eq!(
        Api::history(&app),
        ["SUBMITTED", "LAUNCHING", "RUNNING", "FINISHED"]
    );
    let job_id = app["details"]["flink_job_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no flink_job_id detail: {app:#}"));
    assert!(
        job_id.len() == 32 && job_id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{job_id}"
    );
    assert_eq!(app["details"]["flink_job_state"], "FINISHED", "{app:#}");
    assert!(app["message"].as_str().unwrap().contains(job_id), "{app:#}");
    assert_eq!(cluster.job_state(job_id), "FINISHED");
    let dir = c.app_dir("w1", &id, 1);
    let stdout = std::fs::read_to_string(dir.join("stdout")).unwrap();
    assert!(
        stdout.contains(&format!("Job has been submitted with JobID {job_id}")),
        "{stdout}"
    );
    assert!(stdout.contains("submitted the finite job"), "{stdout}");
}

#[test]
fn killing_a_flink_app_cancels_its_job() {
    let flink = flink();
    let cluster = shared_cluster(&flink);
    let c = aloha(&flink, &cluster);
    let api = c.api();
    let id = submit(&c, &flink, "endless", ENDLESS);
    let job_id = job_id_of(api, &id);
    wait_for("the job to run on the cluster", T, || {
        (cluster.job_state(&job_id) == "RUNNING").then_some(())
    });
    wait_for("the app to see it running", T, || {
        let app = api.app(&id);
        (app["state"] == "RUNNING" && app["details"]["flink_job_state"] == "RUNNING").then_some(())
    });
    // In detached mode the CLI is gone by now: the job runs on the cluster alone.
    let pgid = app_pid(&c.app_dir("w1", &id, 1));
    wait_for("the detached CLI to exit", T, || {
        (!process_exists(-pgid)).then_some(())
    });

    let r = api.post(
        &format!("/api/v1/apps/{id}/kill"),
        &json!({"reason": "flink test says stop"}),
    );
    assert_eq!(r.status, 202, "{:?}", r.body);
    let app = api.wait_state(&id, "KILLED", Duration::from_secs(60));
    let message = app["message"].as_str().unwrap();
    assert!(message.contains("flink test says stop"), "{app:#}");
    assert!(message.contains("ended CANCELED"), "{app:#}");
    assert_eq!(cluster.job_state(&job_id), "CANCELED");
}

#[test]
fn a_program_that_submits_nothing_fails_with_the_clis_output() {
    let flink = flink();
    let cluster = shared_cluster(&flink);
    let c = aloha(&flink, &cluster);
    let api = c.api();
    let id = submit(&c, &flink, "broken", BROKEN);
    let app = api.wait_state(&id, "FAILED", T);
    let message = app["message"].as_str().unwrap();
    assert!(message.contains("before submitting a job"), "{app:#}");
    assert!(
        message.contains("no job today: the input is missing"),
        "the output tail: {app:#}"
    );
    assert_ne!(app["exit_code"], 0, "{app:#}");
    assert!(app["details"].get("flink_job_id").is_none(), "{app:#}");
}
