//! The `spark` plugin on a real master and worker, running real `spark-submit` (pyspark's, in
//! local mode on Java 17): a job that finishes, one that fails with its code, one killed.
//!
//! Needs pyspark and Java: `eval "$(scripts/install-spark-flink.sh)"` installs them and exports
//! `SPARK_HOME` and `PYSPARK_PYTHON`; without those variables the tests look in the script's
//! default place (`${ALOHA_TOOLS_DIR:-$HOME/.cache/aloha-tools}`). Missing tools fail the tests,
//! saying how to install them: they are never skipped.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aloha_e2e::{
    app_pid, group_members, process_exists, require_python_module, toml_string, wait_for, Api,
    Cluster,
};
use serde_json::{json, Value};

/// Spark starts a JVM and a Python driver per job; three at once on 2 cores take a while.
const T: Duration = Duration::from_secs(240);

const INSTALL: &str = "install them with `eval \"$(scripts/install-spark-flink.sh)\"` (as root on \
                       Debian; it installs Java if missing and pyspark in a venv, and exports \
                       SPARK_HOME and PYSPARK_PYTHON), then run the tests again";

/// Where pyspark is.
struct Spark {
    /// The Spark distribution inside the pyspark package (has `bin/spark-submit`).
    home: PathBuf,
    /// A Python that can `import pyspark`, for the driver.
    python: PathBuf,
}

fn spark() -> Spark {
    let home = aloha_e2e::spark_home(INSTALL);
    // SPARK_HOME is <venv>/lib/python3.X/site-packages/pyspark.
    let python = std::env::var_os("PYSPARK_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            let venv = home.ancestors().nth(4)?;
            Some(venv.join("bin/python")).filter(|p| p.exists())
        })
        .unwrap_or_else(|| panic!("no Python for pyspark: set PYSPARK_PYTHON; {INSTALL}"));
    require_python_module(&python, "pyspark", INSTALL);
    Spark { home, python }
}

/// A master and one worker whose `[plugins.spark]` points at pyspark's Spark.
fn cluster(spark: &Spark) -> Cluster {
    // A generous worker timeout: these tests are about apps, not about losing workers, and a
    // loaded 2-core machine running JVMs must not make the master give up on the worker.
    let mut c = Cluster::start("10s", &[]);
    let config = format!(
        "[plugins.spark]\nspark_home = {}\nkill_grace_ms = 3000\n",
        toml_string(&spark.home.to_string_lossy())
    );
    c.add_worker_with_config("w1", 4, &config);
    c.api().wait_alive_workers(1, Duration::from_secs(30));
    c
}

/// Writes a job into the cluster's directory; returns its path.
fn job(c: &Cluster, name: &str, source: &str) -> PathBuf {
    let dir = c.dir.path().join("jobs");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, source).unwrap();
    path
}

/// Submits a `spark` app in local mode with one core.
fn submit(api: &Api, spark: &Spark, name: &str, resource: &Path, extra: Value) -> String {
    let mut spec = json!({
        "resource": resource,
        "master": "local[1]",
        "conf": {"spark.ui.showConsoleProgress": false},
        "env": {
            "PYSPARK_PYTHON": spark.python,
            "SPARK_LOCAL_IP": "127.0.0.1",
        },
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    api.submit(json!({"name": name, "kind": "spark", "spec": spec}))["id"]
        .as_str()
        .expect("app id")
        .to_owned()
}

const SUM: &str = r#"
import sys
from pyspark.sql import SparkSession

spark = SparkSession.builder.getOrCreate()
n = int(sys.argv[1])
total = spark.sparkContext.parallelize(range(1, n + 1)).sum()
print(f"sum of 1..{n} = {total}")
spark.stop()
"#;

const FAIL: &str = r#"
import sys
from pyspark.sql import SparkSession

spark = SparkSession.builder.getOrCreate()
print("about to fail", flush=True)
print("something broke: no input for today", file=sys.stderr, flush=True)
spark.stop()
sys.exit(3)
"#;

const SLEEP: &str = r#"
import time
from pyspark.sql import SparkSession

spark = SparkSession.builder.getOrCreate()
spark.sparkContext.parallelize(range(10)).count()
print("ready", flush=True)
time.sleep(600)
"#;

#[test]
fn a_spark_job_finishes_with_its_output_and_application_id() {
    let spark = spark();
    let c = cluster(&spark);
    let api = c.api();
    job(&c, "sum.py", SUM);
    // Relative to the app directory, <dir>/w1/<app>/1: the job is in <dir>/jobs.
    let id = submit(
        api,
        &spark,
        "sum",
        Path::new("../../../jobs/sum.py"),
        json!({"args": ["10"]}),
    );
    let app = api.wait_state(&id, "FINISHED", T);
    assert_eq!(app["exit_code"], 0, "{app:#}");
    assert_eq!(
        Api::history(&app),
        ["SUBMITTED", "LAUNCHING", "RUNNING", "FINISHED"]
    );
    let dir = c.app_dir("w1", &id, 1);
    let stdout = std::fs::read_to_string(dir.join("stdout")).unwrap();
    assert!(stdout.contains("sum of 1..10 = 55"), "stdout: {stdout}");
    let app_id = app["details"]["spark_app_id"].as_str().unwrap_or_else(|| {
        panic!(
            "no spark_app_id in the details: {app:#}\nstderr:\n{}",
            std::fs::read_to_string(dir.join("stderr")).unwrap_or_default()
        )
    });
    assert!(
        app_id.starts_with("local-") && app_id.len() > "local-".len(),
        "{app_id}"
    );
    assert_eq!(
        app["details"]["pid"].as_str(),
        Some(app_pid(&dir).to_string().as_str())
    );
    // spark-submit got the Aloha app's name as the Spark application's.
    let stderr = std::fs::read_to_string(dir.join("stderr")).unwrap();
    assert!(stderr.contains("Submitted application: sum"), "{stderr}");
}

#[test]
fn a_failing_spark_job_fails_with_its_code_and_last_output() {
    let spark = spark();
    let c = cluster(&spark);
    let api = c.api();
    let path = job(&c, "fail.py", FAIL);
    let id = submit(api, &spark, "fails", &path, json!({}));
    let app = api.wait_state(&id, "FAILED", T);
    assert_eq!(app["exit_code"], 3, "{app:#}");
    assert_eq!(app["attempt"], 1, "an app failure is not relaunched");
    let message = app["message"].as_str().unwrap();
    assert!(
        message.starts_with("spark-submit exited with code 3"),
        "{message}"
    );
    // Spark relays the Python driver's stdout and stderr, merged, to its own stdout.
    assert!(
        message.contains("about to fail"),
        "the output tail: {message}"
    );
    assert!(
        message.contains("something broke: no input for today"),
        "the output tail: {message}"
    );
    assert!(
        !message.contains(" INFO "),
        "routine log lines are left out: {message}"
    );
}

#[test]
fn killing_a_spark_job_stops_its_whole_process_group() {
    let spark = spark();
    let c = cluster(&spark);
    let api = c.api();
    let path = job(&c, "sleep.py", SLEEP);
    let id = submit(api, &spark, "sleeper", &path, json!({}));
    api.wait_state(&id, "RUNNING", T);
    let dir = c.app_dir("w1", &id, 1);
    let pgid = app_pid(&dir);
    wait_for("the job to be ready", T, || {
        let out = std::fs::read_to_string(dir.join("stdout")).ok()?;
        out.contains("ready").then_some(())
    });
    // The JVM and the Python driver (at least) run in the app's group.
    let members = group_members(pgid);
    assert!(
        members.iter().any(|(_, comm)| comm == "java")
            && members.iter().any(|(_, comm)| comm.starts_with("python")),
        "{members:?}"
    );
    let r = api.post(
        &format!("/api/v1/apps/{id}/kill"),
        &json!({"reason": "spark test says stop"}),
    );
    assert_eq!(r.status, 202, "{:?}", r.body);
    let app = api.wait_state(&id, "KILLED", Duration::from_secs(60));
    assert!(
        app["message"]
            .as_str()
            .unwrap()
            .contains("spark test says stop"),
        "{app:#}"
    );
    wait_for(
        "no process of the app's group to be left",
        Duration::from_secs(30),
        || (group_members(pgid).is_empty() && !process_exists(-pgid)).then_some(()),
    );
}
