//! The `flink` spec: what a submission's `spec` may say, checked once at `create`, and the
//! `flink run` command line it makes.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aloha_plugin_support::spec as check;
use serde::Deserialize;
use serde_json::Value;

const KIND: &str = "flink";

/// How often the JobManager is asked about the job when neither the spec nor the worker says.
pub const DEFAULT_POLL_INTERVAL_MS: u64 = 1000;

const KNOWN_FIELDS: [&str; 12] = [
    "jar",
    "python",
    "entry_class",
    "args",
    "parallelism",
    "flink_home",
    "flink",
    "jobmanager",
    "detached",
    "env",
    "kill_grace_ms",
    "poll_interval_ms",
];

/// The program to submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// A jar (`flink run ... <jar>`).
    Jar(PathBuf),
    /// A Python file (`flink run ... -py <file>`).
    Python(PathBuf),
}

/// A checked spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The `flink` CLI to run: a path, or a bare name looked up in `PATH`.
    pub flink: PathBuf,
    /// The job, resolved against the app directory.
    pub program: Program,
    /// `-c`: the entry class of a jar.
    pub entry_class: Option<String>,
    /// The program's own arguments.
    pub args: Vec<String>,
    /// `-p`.
    pub parallelism: Option<u32>,
    /// The JobManager as `host:port`, for `-m`.
    pub jobmanager: String,
    /// `-d`: the CLI returns once the job is submitted.
    pub detached: bool,
    /// Variables added to the worker's environment.
    pub env: BTreeMap<String, String>,
    /// Time between SIGTERM and SIGKILL for the CLI's process group, and the longest wait for a
    /// cancelled job to reach CANCELED.
    pub kill_grace: Duration,
    /// How often the JobManager is asked about the job.
    pub poll_interval: Duration,
}

#[derive(Deserialize)]
struct RawSpec {
    jar: Option<String>,
    python: Option<String>,
    entry_class: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    parallelism: Option<u32>,
    flink_home: Option<PathBuf>,
    flink: Option<PathBuf>,
    jobmanager: Option<String>,
    detached: Option<bool>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    kill_grace_ms: Option<u64>,
    poll_interval_ms: Option<u64>,
}

/// Checks `spec` against the worker's `conf` for this kind. `app_dir` resolves relative paths and
/// `worker_env` looks a variable up in the worker's environment (`FLINK_HOME`).
pub fn parse(
    spec: &Value,
    conf: &Value,
    app_dir: &Path,
    worker_env: impl Fn(&str) -> Option<OsString>,
) -> Result<Spec, String> {
    check::known_fields(KIND, spec, &KNOWN_FIELDS)?;
    let raw: RawSpec =
        serde_json::from_value(spec.clone()).map_err(|e| format!("invalid flink spec: {e}"))?;

    let jar = check::non_empty(KIND, "jar", raw.jar)?;
    let python = check::non_empty(KIND, "python", raw.python)?;
    let program = match (jar, python) {
        (Some(_), Some(_)) => {
            return Err("invalid flink spec: give `jar` or `python`, not both".into())
        }
        (None, None) => {
            return Err(
                "invalid flink spec: `jar` or `python` is required: the job's jar or \
                        .py file, relative to the app directory"
                    .into(),
            )
        }
        (Some(jar), None) => Program::Jar(check::resolve(app_dir, jar)),
        (None, Some(py)) => Program::Python(check::resolve(app_dir, py)),
    };
    let entry_class = check::non_empty(KIND, "entry_class", raw.entry_class)?;
    if entry_class.is_some() && matches!(program, Program::Python(_)) {
        return Err(
            "invalid flink spec: `entry_class` is for a `jar` job, not a `python` one".into(),
        );
    }
    check::check_args(KIND, "args", &raw.args)?;
    if raw.parallelism == Some(0) {
        return Err("invalid flink spec: `parallelism` must be at least 1".into());
    }
    check::check_env(KIND, &raw.env)?;

    let jobmanager = match check::non_empty(KIND, "jobmanager", raw.jobmanager)? {
        Some(jm) => parse_jobmanager(&jm).map_err(|e| format!("invalid flink spec: {e}"))?,
        None => match check::conf_str(KIND, conf, "jobmanager")? {
            Some(jm) => parse_jobmanager(&jm)
                .map_err(|e| format!("invalid worker configuration for the flink plugin: {e}"))?,
            None => {
                return Err(
                    "invalid flink spec: `jobmanager` is required (the REST address of \
                            a Flink session cluster, e.g. \"127.0.0.1:8081\"), unless the \
                            worker's [plugins.flink] sets one"
                        .into(),
                )
            }
        },
    };

    let poll_ms = match raw.poll_interval_ms {
        Some(ms) => ms,
        None => {
            check::conf_millis(KIND, conf, "poll_interval_ms")?.unwrap_or(DEFAULT_POLL_INTERVAL_MS)
        }
    };
    if poll_ms == 0 {
        return Err("invalid flink spec: `poll_interval_ms` must be at least 1".into());
    }
    let flink = locate_flink(
        raw.flink_home,
        raw.flink,
        conf,
        raw.env
            .get("FLINK_HOME")
            .map(OsString::from)
            .or_else(|| worker_env("FLINK_HOME")),
    )?;
    Ok(Spec {
        flink,
        program,
        entry_class,
        args: raw.args,
        parallelism: raw.parallelism,
        jobmanager,
        detached: raw.detached.unwrap_or(true),
        env: raw.env,
        kill_grace: check::kill_grace(KIND, raw.kill_grace_ms, conf)?,
        poll_interval: Duration::from_millis(poll_ms),
    })
}

/// `host:port` from `host:port` or `http://host:port[/]`.
fn parse_jobmanager(address: &str) -> Result<String, String> {
    let trimmed = address.trim();
    if trimmed.starts_with("https://") {
        return Err(format!(
            "`jobmanager` {address:?}: only plain HTTP is supported, not https"
        ));
    }
    let hostport = trimmed
        .strip_prefix("http://")
        .unwrap_or(trimmed)
        .trim_end_matches('/');
    let valid = match hostport.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && !host.contains(['/', ' ', '?', '#', '@'])
                && port.parse::<u16>().is_ok_and(|p| p > 0)
        }
        None => false,
    };
    if !valid {
        return Err(format!(
            "`jobmanager` {address:?} must be host:port (e.g. \"127.0.0.1:8081\")"
        ));
    }
    Ok(hostport.to_owned())
}

/// Which `flink` runs: the spec's `flink` or `flink_home`, else the worker's (`[plugins.flink]`)
/// `flink` or `flink_home`, else `$FLINK_HOME/bin/flink`, else `flink` from `PATH`. (The CLI
/// script finds its own installation from where it lies, so no `FLINK_HOME` is set for it.)
fn locate_flink(
    spec_home: Option<PathBuf>,
    spec_flink: Option<PathBuf>,
    conf: &Value,
    env_home: Option<OsString>,
) -> Result<PathBuf, String> {
    let empty = |p: &Option<PathBuf>| p.as_ref().is_some_and(|p| p.as_os_str().is_empty());
    if empty(&spec_home) || empty(&spec_flink) {
        return Err("invalid flink spec: `flink_home` and `flink` must not be empty".into());
    }
    match (spec_home, spec_flink) {
        (Some(_), Some(_)) => {
            return Err("invalid flink spec: give `flink_home` or `flink`, not both".into())
        }
        (Some(home), None) => return Ok(home.join("bin/flink")),
        (None, Some(flink)) => return Ok(flink),
        (None, None) => {}
    }
    match (
        check::conf_str(KIND, conf, "flink_home")?,
        check::conf_str(KIND, conf, "flink")?,
    ) {
        (Some(_), Some(_)) => Err("invalid worker configuration for the flink plugin: give \
                                   flink_home or flink, not both"
            .into()),
        (Some(home), None) => Ok(Path::new(&home).join("bin/flink")),
        (None, Some(flink)) => Ok(PathBuf::from(flink)),
        (None, None) => Ok(match env_home.filter(|h| !h.is_empty()) {
            Some(home) => Path::new(&home).join("bin/flink"),
            None => PathBuf::from("flink"),
        }),
    }
}

impl Spec {
    /// The arguments after `flink`:
    /// `run -m <jobmanager> [-d] [-p N] [-c class] (<jar> | -py <file>) args...`.
    pub fn arguments(&self) -> Vec<String> {
        let mut a = vec!["run".to_owned(), "-m".to_owned(), self.jobmanager.clone()];
        if self.detached {
            a.push("-d".to_owned());
        }
        if let Some(p) = self.parallelism {
            a.extend(["-p".to_owned(), p.to_string()]);
        }
        if let Some(class) = &self.entry_class {
            a.extend(["-c".to_owned(), class.clone()]);
        }
        match &self.program {
            Program::Jar(jar) => a.push(jar.to_string_lossy().into_owned()),
            Program::Python(py) => {
                a.extend(["-py".to_owned(), py.to_string_lossy().into_owned()]);
            }
        }
        a.extend(self.args.iter().cloned());
        a
    }

    /// The JobManager's REST base URL (`http://host:port`).
    pub fn rest_url(&self) -> String {
        format!("http://{}", self.jobmanager)
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
        parse(&spec, &json!({}), Path::new("/apps/a1"), no_env).unwrap()
    }

    fn parse_err(spec: Value) -> String {
        parse(&spec, &json!({}), Path::new("/apps/a1"), no_env).unwrap_err()
    }

    #[test]
    fn minimal_jar_spec_gets_defaults() {
        let s = parse_ok(json!({"jar": "job.jar", "jobmanager": "127.0.0.1:8081"}));
        assert_eq!(s.program, Program::Jar("/apps/a1/job.jar".into()));
        assert!(s.detached);
        assert_eq!(s.flink, Path::new("flink"));
        assert_eq!(
            s.poll_interval,
            Duration::from_millis(DEFAULT_POLL_INTERVAL_MS)
        );
        assert_eq!(s.kill_grace, Duration::from_millis(5000));
        assert_eq!(
            s.arguments(),
            ["run", "-m", "127.0.0.1:8081", "-d", "/apps/a1/job.jar"]
        );
        assert_eq!(s.rest_url(), "http://127.0.0.1:8081");
    }

    #[test]
    fn full_jar_spec_makes_the_whole_command_line() {
        let s = parse_ok(json!({
            "jar": "/opt/jobs/wc.jar",
            "entry_class": "org.example.WordCount",
            "args": ["--input", "/data/in", "two words"],
            "parallelism": 4,
            "flink_home": "/opt/flink",
            "jobmanager": "http://jm.local:8081/",
            "detached": false,
            "env": {"JAVA_HOME": "/usr/lib/jvm/17"},
            "kill_grace_ms": 250,
            "poll_interval_ms": 100
        }));
        assert_eq!(
            s.arguments(),
            [
                "run",
                "-m",
                "jm.local:8081",
                "-p",
                "4",
                "-c",
                "org.example.WordCount",
                "/opt/jobs/wc.jar",
                "--input",
                "/data/in",
                "two words"
            ]
        );
        assert_eq!(s.flink, Path::new("/opt/flink/bin/flink"));
        assert_eq!(s.env["JAVA_HOME"], "/usr/lib/jvm/17");
        assert_eq!(s.kill_grace, Duration::from_millis(250));
        assert_eq!(s.poll_interval, Duration::from_millis(100));
    }

    #[test]
    fn python_jobs_use_py() {
        let s = parse_ok(json!({"python": "wc.py", "args": ["x"], "jobmanager": "h:1"}));
        assert_eq!(
            s.arguments(),
            ["run", "-m", "h:1", "-d", "-py", "/apps/a1/wc.py", "x"]
        );
    }

    #[test]
    fn the_worker_conf_fills_in_the_jobmanager_poll_interval_and_flink() {
        let conf = json!({"jobmanager": "10.0.0.5:8081", "poll_interval_ms": 300,
                          "flink_home": "/opt/flink", "kill_grace_ms": 700});
        let s = parse(&json!({"jar": "j.jar"}), &conf, Path::new("/a"), no_env).unwrap();
        assert_eq!(s.jobmanager, "10.0.0.5:8081");
        assert_eq!(s.poll_interval, Duration::from_millis(300));
        assert_eq!(s.flink, Path::new("/opt/flink/bin/flink"));
        assert_eq!(s.kill_grace, Duration::from_millis(700));
        // The spec wins.
        let s = parse(
            &json!({"jar": "j.jar", "jobmanager": "127.0.0.1:1", "flink": "/bin/fl"}),
            &conf,
            Path::new("/a"),
            no_env,
        )
        .unwrap();
        assert_eq!(
            (s.jobmanager.as_str(), s.flink.as_path()),
            ("127.0.0.1:1", Path::new("/bin/fl"))
        );
    }

    #[test]
    fn flink_is_found_in_order() {
        let dir = Path::new("/a");
        let spec = json!({"jar": "j.jar", "jobmanager": "h:1"});
        let env_home = |k: &str| (k == "FLINK_HOME").then(|| OsString::from("/env/flink"));
        let s = parse(&spec, &json!({}), dir, env_home).unwrap();
        assert_eq!(s.flink, Path::new("/env/flink/bin/flink"));
        let s = parse(&spec, &json!({"flink": "/c/flink"}), dir, env_home).unwrap();
        assert_eq!(s.flink, Path::new("/c/flink"));
        let spec2 = json!({"jar": "j.jar", "jobmanager": "h:1", "env": {"FLINK_HOME": "/mine"}});
        let s = parse(&spec2, &json!({}), dir, env_home).unwrap();
        assert_eq!(s.flink, Path::new("/mine/bin/flink"));
        let s = parse(&spec, &json!({}), dir, no_env).unwrap();
        assert_eq!(s.flink, Path::new("flink"));
    }

    #[test]
    fn bad_values_are_explained() {
        let jm = "127.0.0.1:8081";
        let cases = [
            (json!({"jobmanager": jm}), "`jar` or `python` is required"),
            (
                json!({"jar": "a", "python": "b", "jobmanager": jm}),
                "not both",
            ),
            (json!({"jar": "", "jobmanager": jm}), "`jar` is empty"),
            (
                json!({"python": "a.py", "entry_class": "X", "jobmanager": jm}),
                "for a `jar` job",
            ),
            (
                json!({"jar": "a", "parallelism": 0, "jobmanager": jm}),
                "at least 1",
            ),
            (
                json!({"jar": "a", "parallelism": -2, "jobmanager": jm}),
                "invalid value",
            ),
            (
                json!({"jar": "a", "jobmanager": jm, "poll_interval_ms": 0}),
                "at least 1",
            ),
            (
                json!({"jar": "a", "jobmanager": jm, "detached": "yes"}),
                "invalid type",
            ),
            (
                json!({"jar": "a", "jobmanager": jm, "args": ["\u{0}"]}),
                "`args[0]`",
            ),
            (
                json!({"jar": "a", "jobmanager": jm, "env": {"=": "1"}}),
                "\"=\"",
            ),
            (
                json!({"jar": "a", "jobmanager": jm, "flink": "/f", "flink_home": "/h"}),
                "not both",
            ),
            (json!({"jar": "a"}), "`jobmanager` is required"),
            (
                json!({"jar": "a", "jobmanager": "localhost"}),
                "must be host:port",
            ),
            (
                json!({"jar": "a", "jobmanager": "h:0"}),
                "must be host:port",
            ),
            (
                json!({"jar": "a", "jobmanager": "http://h:1/path"}),
                "must be host:port",
            ),
            (
                json!({"jar": "a", "jobmanager": "https://h:1"}),
                "only plain HTTP",
            ),
            (
                json!({"jar": "a", "jobmanager": jm, "parallelsim": 2}),
                "unknown field \"parallelsim\"",
            ),
        ];
        for (spec, expected) in cases {
            let err = parse_err(spec.clone());
            assert!(err.contains(expected), "{spec}: {err}");
            assert!(err.starts_with("invalid flink spec: "), "{spec}: {err}");
        }
        let err = parse(
            &json!({"jar": "a"}),
            &json!({"jobmanager": "x"}),
            Path::new("/a"),
            no_env,
        )
        .unwrap_err();
        assert!(
            err.starts_with("invalid worker configuration for the flink plugin"),
            "{err}"
        );
    }
}
