//! The `spark` spec: what a submission's `spec` may say, checked once at `create`, and the
//! `spark-submit` command line it makes.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aloha_plugin_support::spec as check;
use serde::Deserialize;
use serde_json::Value;

const KIND: &str = "spark";

/// The master a spec without one runs on.
pub const DEFAULT_MASTER: &str = "local[*]";

const KNOWN_FIELDS: [&str; 11] = [
    "resource",
    "main_class",
    "args",
    "master",
    "deploy_mode",
    "conf",
    "name",
    "spark_home",
    "spark_submit",
    "env",
    "kill_grace_ms",
];

/// Where the Spark driver runs (`--deploy-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployMode {
    /// In the `spark-submit` process, on the worker.
    Client,
    /// On the cluster; `spark-submit` only submits (and by default waits).
    Cluster,
}

impl DeployMode {
    fn as_str(self) -> &'static str {
        match self {
            DeployMode::Client => "client",
            DeployMode::Cluster => "cluster",
        }
    }
}

/// What `SPARK_HOME` the `spark-submit` process gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SparkHome {
    /// Set to this directory: `spark-submit` is its `bin/spark-submit`.
    Set(PathBuf),
    /// Removed: an explicit `spark_submit` finds its own home, and a `SPARK_HOME` inherited from
    /// the worker could point at another installation.
    Unset,
    /// Left as the worker has it (it is where `spark-submit` was found, or there is none).
    Inherit,
}

/// A checked spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The `spark-submit` to run: a path, or a bare name looked up in `PATH`.
    pub spark_submit: PathBuf,
    /// What becomes of `SPARK_HOME`.
    pub spark_home: SparkHome,
    /// The application: a local path (resolved against the app directory) or a URL.
    pub resource: String,
    /// `--class`.
    pub main_class: Option<String>,
    /// The application's own arguments.
    pub args: Vec<String>,
    /// `--master`.
    pub master: String,
    /// `--deploy-mode`, if given.
    pub deploy_mode: Option<DeployMode>,
    /// `--conf key=value`, sorted by key.
    pub conf: BTreeMap<String, String>,
    /// `--name`, if any.
    pub name: Option<String>,
    /// Variables added to the worker's environment.
    pub env: BTreeMap<String, String>,
    /// Time between SIGTERM and SIGKILL on shutdown.
    pub kill_grace: Duration,
}

#[derive(Deserialize)]
struct RawSpec {
    resource: Option<String>,
    main_class: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    master: Option<String>,
    deploy_mode: Option<String>,
    #[serde(default)]
    conf: BTreeMap<String, Value>,
    name: Option<String>,
    spark_home: Option<PathBuf>,
    spark_submit: Option<PathBuf>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    kill_grace_ms: Option<u64>,
}

/// Checks `spec` against the worker's `conf` for this kind. `app_dir` resolves relative paths,
/// `app_name` (the Aloha app's name) is the default Spark application name, and `worker_env`
/// looks a variable up in the worker's environment (`SPARK_HOME`).
pub fn parse(
    spec: &Value,
    conf: &Value,
    app_dir: &Path,
    app_name: Option<&str>,
    worker_env: impl Fn(&str) -> Option<OsString>,
) -> Result<Spec, String> {
    check::known_fields(KIND, spec, &KNOWN_FIELDS)?;
    let raw: RawSpec =
        serde_json::from_value(spec.clone()).map_err(|e| format!("invalid spark spec: {e}"))?;

    let resource = check::non_empty(KIND, "resource", raw.resource)?.ok_or(
        "invalid spark spec: `resource` is required: the application's .py file or .jar \
         (relative to the app directory, or a URL)",
    )?;
    let resource = if is_url(&resource) {
        resource
    } else {
        check::resolve(app_dir, &resource)
            .to_string_lossy()
            .into_owned()
    };
    let main_class = check::non_empty(KIND, "main_class", raw.main_class)?;
    check::check_args(KIND, "args", &raw.args)?;
    // The spec's master, else the worker's (`[plugins.spark] master`), else local mode.
    let master = match check::non_empty(KIND, "master", raw.master)? {
        Some(master) => master,
        None => check::conf_str(KIND, conf, "master")?.unwrap_or_else(|| DEFAULT_MASTER.to_owned()),
    };
    let deploy_mode = match raw.deploy_mode.as_deref() {
        None => None,
        Some("client") => Some(DeployMode::Client),
        Some("cluster") => Some(DeployMode::Cluster),
        Some(other) => {
            return Err(format!(
                "invalid spark spec: `deploy_mode` must be \"client\" or \"cluster\", not {other:?}"
            ))
        }
    };
    let conf_pairs = spark_conf(raw.conf)?;
    let name = match check::non_empty(KIND, "name", raw.name)? {
        Some(name) => Some(name),
        None => app_name
            .filter(|n| !n.trim().is_empty() && !n.contains('\0'))
            .map(str::to_owned),
    };
    check::check_env(KIND, &raw.env)?;

    let (spark_submit, spark_home) = locate_spark_submit(
        raw.spark_home,
        raw.spark_submit,
        conf,
        raw.env
            .get("SPARK_HOME")
            .map(OsString::from)
            .or_else(|| worker_env("SPARK_HOME")),
    )?;
    Ok(Spec {
        spark_submit,
        spark_home,
        resource,
        main_class,
        args: raw.args,
        master,
        deploy_mode,
        conf: conf_pairs,
        name,
        env: raw.env,
        kill_grace: check::kill_grace(KIND, raw.kill_grace_ms, conf)?,
    })
}

/// Whether a resource names something `spark-submit` fetches itself rather than a local file.
/// `file:/abs/app.jar` is what Spark's own REST client sends for a local jar.
fn is_url(resource: &str) -> bool {
    resource.contains("://") || resource.starts_with("local:") || resource.starts_with("file:")
}

/// `conf` values may be strings, numbers or booleans; keys are Spark property names.
fn spark_conf(raw: BTreeMap<String, Value>) -> Result<BTreeMap<String, String>, String> {
    let mut conf = BTreeMap::new();
    for (key, value) in raw {
        if key.trim().is_empty() || key.contains('=') || key.contains('\0') {
            return Err(format!(
                "invalid spark spec: `conf` key {key:?} must be non-empty and contain neither \
                 '=' nor NUL"
            ));
        }
        let value = match value {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                return Err(format!(
                    "invalid spark spec: `conf.{key}` must be a string, number or boolean, \
                     not {other}"
                ))
            }
        };
        if value.contains('\0') {
            return Err(format!(
                "invalid spark spec: `conf.{key}` contains a NUL byte"
            ));
        }
        conf.insert(key, value);
    }
    Ok(conf)
}

/// Which `spark-submit` runs: the spec's `spark_submit` or `spark_home`, else the worker's
/// (`[plugins.spark]`) `spark_submit` or `spark_home`, else `$SPARK_HOME/bin/spark-submit`, else
/// `spark-submit` from `PATH`.
fn locate_spark_submit(
    spec_home: Option<PathBuf>,
    spec_submit: Option<PathBuf>,
    conf: &Value,
    env_home: Option<OsString>,
) -> Result<(PathBuf, SparkHome), String> {
    let empty = |p: &Option<PathBuf>| p.as_ref().is_some_and(|p| p.as_os_str().is_empty());
    if empty(&spec_home) || empty(&spec_submit) {
        return Err("invalid spark spec: `spark_home` and `spark_submit` must not be empty".into());
    }
    match (spec_home, spec_submit) {
        (Some(_), Some(_)) => {
            return Err("invalid spark spec: give `spark_home` or `spark_submit`, not both".into())
        }
        (Some(home), None) => return Ok((home.join("bin/spark-submit"), SparkHome::Set(home))),
        (None, Some(submit)) => return Ok((submit, SparkHome::Unset)),
        (None, None) => {}
    }
    let conf_home = check::conf_str(KIND, conf, "spark_home")?;
    let conf_submit = check::conf_str(KIND, conf, "spark_submit")?;
    match (conf_home, conf_submit) {
        (Some(_), Some(_)) => Err(
            "invalid worker configuration for the spark plugin: give spark_home or \
             spark_submit, not both"
                .into(),
        ),
        (Some(home), None) => {
            let home = PathBuf::from(home);
            Ok((home.join("bin/spark-submit"), SparkHome::Set(home)))
        }
        (None, Some(submit)) => Ok((PathBuf::from(submit), SparkHome::Unset)),
        (None, None) => match env_home.filter(|h| !h.is_empty()) {
            Some(home) => Ok((
                Path::new(&home).join("bin/spark-submit"),
                SparkHome::Inherit,
            )),
            None => Ok((PathBuf::from("spark-submit"), SparkHome::Inherit)),
        },
    }
}

impl Spec {
    /// The arguments after `spark-submit`:
    /// `--master M [--deploy-mode D] [--name N] [--class C] [--conf k=v]... resource args...`.
    pub fn arguments(&self) -> Vec<String> {
        let mut a = vec!["--master".to_owned(), self.master.clone()];
        if let Some(mode) = self.deploy_mode {
            a.extend(["--deploy-mode".to_owned(), mode.as_str().to_owned()]);
        }
        if let Some(name) = &self.name {
            a.extend(["--name".to_owned(), name.clone()]);
        }
        if let Some(class) = &self.main_class {
            a.extend(["--class".to_owned(), class.clone()]);
        }
        for (key, value) in &self.conf {
            a.extend(["--conf".to_owned(), format!("{key}={value}")]);
        }
        a.push(self.resource.clone());
        a.extend(self.args.iter().cloned());
        a
    }

    /// The environment changes for the `spark-submit` process: `(name, Some(value))` to set,
    /// `(name, None)` to remove, applied in order over the worker's environment.
    pub fn env_changes(&self) -> Vec<(String, Option<String>)> {
        let mut changes = Vec::new();
        match &self.spark_home {
            SparkHome::Set(home) => changes.push((
                "SPARK_HOME".to_owned(),
                Some(home.to_string_lossy().into_owned()),
            )),
            SparkHome::Unset => changes.push(("SPARK_HOME".to_owned(), None)),
            SparkHome::Inherit => {}
        }
        // The spec's own variables come last: they win.
        changes.extend(self.env.iter().map(|(k, v)| (k.clone(), Some(v.clone()))));
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn no_env(_: &str) -> Option<OsString> {
        None
    }

    fn parse_ok(spec: Value) -> Spec {
        parse(&spec, &json!({}), Path::new("/apps/a1"), None, no_env).unwrap()
    }

    fn parse_err(spec: Value) -> String {
        parse(&spec, &json!({}), Path::new("/apps/a1"), None, no_env).unwrap_err()
    }

    #[test]
    fn minimal_spec_gets_defaults() {
        let s = parse_ok(json!({"resource": "job.py"}));
        assert_eq!(s.resource, "/apps/a1/job.py");
        assert_eq!(s.master, "local[*]");
        assert_eq!(s.spark_submit, Path::new("spark-submit"));
        assert_eq!(s.spark_home, SparkHome::Inherit);
        assert_eq!(s.kill_grace, Duration::from_millis(5000));
        assert_eq!(s.arguments(), ["--master", "local[*]", "/apps/a1/job.py"]);
        assert!(s.env_changes().is_empty());
    }

    #[test]
    fn full_spec_makes_the_whole_command_line() {
        let s = parse_ok(json!({
            "resource": "/opt/jobs/etl.jar",
            "main_class": "com.example.Etl",
            "args": ["--day", "2024-01-01", "two words"],
            "master": "spark://10.0.0.1:7077",
            "deploy_mode": "cluster",
            "conf": {"spark.executor.memory": "2g", "spark.executor.cores": 2,
                     "spark.dynamicAllocation.enabled": false},
            "name": "nightly etl",
            "spark_home": "/opt/spark",
            "env": {"HADOOP_CONF_DIR": "/etc/hadoop"},
            "kill_grace_ms": 250
        }));
        assert_eq!(
            s.arguments(),
            [
                "--master",
                "spark://10.0.0.1:7077",
                "--deploy-mode",
                "cluster",
                "--name",
                "nightly etl",
                "--class",
                "com.example.Etl",
                "--conf",
                "spark.dynamicAllocation.enabled=false",
                "--conf",
                "spark.executor.cores=2",
                "--conf",
                "spark.executor.memory=2g",
                "/opt/jobs/etl.jar",
                "--day",
                "2024-01-01",
                "two words",
            ]
        );
        assert_eq!(s.spark_submit, Path::new("/opt/spark/bin/spark-submit"));
        assert_eq!(
            s.env_changes(),
            [
                ("SPARK_HOME".to_owned(), Some("/opt/spark".to_owned())),
                ("HADOOP_CONF_DIR".to_owned(), Some("/etc/hadoop".to_owned())),
            ]
        );
        assert_eq!(s.kill_grace, Duration::from_millis(250));
    }

    #[test]
    fn urls_are_kept_as_they_are() {
        for url in [
            "hdfs://nn/jobs/a.jar",
            "local:/opt/a.jar",
            "s3a://b/k.py",
            "file:/tmp/a.jar",
        ] {
            assert_eq!(parse_ok(json!({"resource": url})).resource, url);
        }
    }

    #[test]
    fn the_workers_master_is_the_default_and_the_spec_beats_it() {
        let dir = Path::new("/a");
        let conf = json!({"master": "spark://10.0.0.9:7077"});
        let s = parse(&json!({"resource": "x.py"}), &conf, dir, None, no_env).unwrap();
        assert_eq!(s.master, "spark://10.0.0.9:7077");
        let spec = json!({"resource": "x.py", "master": "local[2]"});
        let s = parse(&spec, &conf, dir, None, no_env).unwrap();
        assert_eq!(s.master, "local[2]");
        let err = parse(
            &json!({"resource": "x.py"}),
            &json!({"master": 7}),
            dir,
            None,
            no_env,
        )
        .unwrap_err();
        assert!(
            err.starts_with("invalid worker configuration for the spark plugin: master"),
            "{err}"
        );
    }

    #[test]
    fn the_app_name_is_the_default_spark_name() {
        let dir = Path::new("/a");
        let s = parse(
            &json!({"resource": "x.py"}),
            &json!({}),
            dir,
            Some("nightly"),
            no_env,
        );
        assert_eq!(s.unwrap().name.as_deref(), Some("nightly"));
        let s = parse(
            &json!({"resource": "x.py", "name": "mine"}),
            &json!({}),
            dir,
            Some("nightly"),
            no_env,
        );
        assert_eq!(s.unwrap().name.as_deref(), Some("mine"));
    }

    #[test]
    fn spark_submit_is_found_in_order() {
        let dir = Path::new("/a");
        let spec = json!({"resource": "x.py"});
        let env_home = |k: &str| (k == "SPARK_HOME").then(|| OsString::from("/env/spark"));
        // The worker's SPARK_HOME.
        let s = parse(&spec, &json!({}), dir, None, env_home).unwrap();
        assert_eq!(s.spark_submit, Path::new("/env/spark/bin/spark-submit"));
        assert_eq!(s.spark_home, SparkHome::Inherit);
        // The worker's configuration beats it.
        let s = parse(
            &spec,
            &json!({"spark_home": "/conf/spark"}),
            dir,
            None,
            env_home,
        )
        .unwrap();
        assert_eq!(s.spark_submit, Path::new("/conf/spark/bin/spark-submit"));
        assert_eq!(s.spark_home, SparkHome::Set("/conf/spark".into()));
        let s = parse(
            &spec,
            &json!({"spark_submit": "/c/ss"}),
            dir,
            None,
            env_home,
        )
        .unwrap();
        assert_eq!(
            (s.spark_submit, s.spark_home),
            ("/c/ss".into(), SparkHome::Unset)
        );
        // The spec beats both.
        let spec2 = json!({"resource": "x.py", "spark_submit": "/s/ss"});
        let s = parse(
            &spec2,
            &json!({"spark_home": "/conf/spark"}),
            dir,
            None,
            env_home,
        )
        .unwrap();
        assert_eq!(s.spark_submit, Path::new("/s/ss"));
        assert_eq!(s.env_changes(), [("SPARK_HOME".to_owned(), None::<String>)]);
        // The spec's env SPARK_HOME counts as the environment's.
        let spec3 = json!({"resource": "x.py", "env": {"SPARK_HOME": "/mine"}});
        let s = parse(&spec3, &json!({}), dir, None, env_home).unwrap();
        assert_eq!(s.spark_submit, Path::new("/mine/bin/spark-submit"));
        // Nothing anywhere: PATH.
        let s = parse(&spec, &json!({}), dir, None, no_env).unwrap();
        assert_eq!(s.spark_submit, Path::new("spark-submit"));
    }

    #[test]
    fn unknown_fields_are_all_named() {
        let err = parse_err(json!({"resource": "x.py", "jars": [], "klass": "X"}));
        assert!(
            err.starts_with("invalid spark spec: unknown fields \"jars\", \"klass\" (known: "),
            "{err}"
        );
    }

    #[test]
    fn bad_values_are_explained() {
        let cases = [
            (json!({}), "`resource` is required"),
            (json!({"resource": ""}), "`resource` is empty"),
            (json!({"resource": 3}), "invalid type"),
            (
                json!({"resource": "x", "deploy_mode": "remote"}),
                "\"client\" or \"cluster\"",
            ),
            (json!({"resource": "x", "master": " "}), "`master` is empty"),
            (
                json!({"resource": "x", "args": ["a\u{0}"]}),
                "`args[0]` contains a NUL",
            ),
            (
                json!({"resource": "x", "conf": {"a=b": "c"}}),
                "`conf` key \"a=b\"",
            ),
            (
                json!({"resource": "x", "conf": {"a": [1]}}),
                "`conf.a` must be a string",
            ),
            (json!({"resource": "x", "env": {"A=B": "1"}}), "\"A=B\""),
            (
                json!({"resource": "x", "spark_home": "/a", "spark_submit": "/b"}),
                "not both",
            ),
            (
                json!({"resource": "x", "spark_home": ""}),
                "must not be empty",
            ),
            (
                json!({"resource": "x", "kill_grace_ms": -1}),
                "invalid value",
            ),
            (json!("x.py"), "JSON object"),
        ];
        for (spec, expected) in cases {
            let err = parse_err(spec.clone());
            assert!(err.contains(expected), "{spec}: {err}");
            assert!(err.starts_with("invalid spark spec: "), "{spec}: {err}");
        }
        let err = parse(
            &json!({"resource": "x"}),
            &json!({"spark_home": 3}),
            Path::new("/a"),
            None,
            no_env,
        )
        .unwrap_err();
        assert!(
            err.starts_with("invalid worker configuration for the spark plugin"),
            "{err}"
        );
    }
}
