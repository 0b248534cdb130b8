//! The jsonl listener, loaded from its built `.so` through `aloha_plugin::host` as the master
//! loads it, writing real files.
//!
//! Cargo builds the library for these tests: an integration test depends on its package's
//! library target, which is compiled with both crate types in one rustc run, so
//! `cargo test -p aloha-listener-jsonl` leaves a fresh `.so` in `<target>/<profile>/deps/`.
//! `ALOHA_JSONL_LISTENER` overrides the path.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use aloha_plugin::host::{ApplicationPlugin, ListenerInstance, ListenerPlugin, LoadError};
use serde_json::{json, Value};

const SO_NAME: &str = "libaloha_listener_jsonl.so";

/// Where the built plugin library is: beside the test executable in `deps/`, else one level up.
fn plugin_path() -> PathBuf {
    if let Some(path) = std::env::var_os("ALOHA_JSONL_LISTENER") {
        return PathBuf::from(path);
    }
    // The test runs as <target>/<profile>/deps/<test>-<hash>.
    let exe = std::env::current_exe().expect("the test executable has a path");
    let deps = exe.parent().expect("the test executable is in a directory");
    let profile = deps.parent().expect("deps/ is in the profile directory");
    [deps.join(SO_NAME), profile.join(SO_NAME)]
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{SO_NAME} is not in {} or {}; run `cargo build -p aloha-listener-jsonl` first, \
                 or set ALOHA_JSONL_LISTENER",
                deps.display(),
                profile.display()
            )
        })
}

/// The plugin, loaded once per test binary.
fn plugin() -> &'static ListenerPlugin {
    static PLUGIN: OnceLock<ListenerPlugin> = OnceLock::new();
    PLUGIN.get_or_init(|| {
        ListenerPlugin::load(&plugin_path())
            .unwrap_or_else(|e| panic!("cannot load the jsonl listener: {e}"))
    })
}

fn listener(path: &Path) -> ListenerInstance {
    plugin()
        .create(&json!({ "path": path }))
        .unwrap_or_else(|e| panic!("create: {e}"))
}

/// Events as the master makes them (`aloha_core::Event`), one of each type.
fn events(first_seq: u64) -> Vec<Value> {
    let app = |seq: u64, old: Value, new: &str| {
        json!({
            "seq": seq, "at": "2025-01-01T00:00:00Z", "type": "app_state_changed",
            "app_id": "app-20250101000000-0001", "name": "nightly \"etl\"\nline two",
            "kind": "process", "old_state": old, "new_state": new, "attempt": 1,
            "worker_id": "w1", "message": null
        })
    };
    let s = first_seq;
    vec![
        app(s, Value::Null, "SUBMITTED"),
        app(s + 1, json!("SUBMITTED"), "RUNNING"),
        json!({
            "seq": s + 2, "at": "2025-01-01T00:00:01Z", "type": "app_relaunched",
            "app_id": "app-20250101000000-0001", "name": "n", "kind": "process",
            "attempt": 1, "retries": 1, "worker_id": "w1", "message": "worker w1 lost"
        }),
        json!({
            "seq": s + 3, "at": "2025-01-01T00:00:02Z", "type": "worker_joined",
            "worker_id": "w2", "address": "127.0.0.1:7001", "cores": 4, "memory_mb": 4096
        }),
        json!({
            "seq": s + 4, "at": "2025-01-01T00:00:03Z", "type": "leader_changed",
            "role": "leader", "leader": "127.0.0.1:8080", "epoch": 3
        }),
    ]
}

fn deliver(l: &mut ListenerInstance, event: &Value) -> Result<(), String> {
    let ty = event["type"].as_str().expect("every event has a type");
    l.deliver(&event.to_string(), ty)
}

fn read_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.ends_with('\n'), "the file ends with a whole line");
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

#[test]
fn the_library_is_a_listener_named_jsonl_and_not_an_application() {
    assert_eq!(plugin().name(), "jsonl");
    assert_eq!(plugin().path(), plugin_path());
    assert!(ApplicationPlugin::load(&plugin_path()).unwrap().is_none());
}

#[test]
fn each_event_becomes_exactly_one_line_that_parses_back() {
    let dir = tempfile::tempdir().unwrap();
    // Parent directories that do not exist yet are created.
    let path = dir.path().join("var/log/aloha/events.jsonl");
    let mut l = listener(&path);
    assert!(path.is_file(), "the file is created with the listener");
    assert_eq!(std::fs::read(&path).unwrap(), b"");

    let sent = events(1);
    for (n, event) in sent.iter().enumerate() {
        deliver(&mut l, event).unwrap();
        // Durable and visible as soon as delivery returns: one more line each time.
        assert_eq!(read_lines(&path).len(), n + 1);
    }
    assert_eq!(read_lines(&path), sent);
    drop(l);

    // A new instance (a master restart) appends after what is there.
    let mut l = listener(&path);
    // The host delivers at least once: after a restart it may offer events the file has.
    for event in &sent[3..] {
        deliver(&mut l, event).unwrap();
    }
    assert_eq!(
        read_lines(&path).len(),
        5,
        "redelivered events are not written twice"
    );
    let more = events(6);
    for event in &more {
        deliver(&mut l, event).unwrap();
    }
    let all = read_lines(&path);
    assert_eq!(all.len(), 10);
    let seqs: Vec<u64> = all.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    assert_eq!(all[5..], more[..]);
}

#[test]
fn an_unwritable_path_fails_create_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let path = file.join("events.jsonl");
    let err = plugin().create(&json!({ "path": path })).unwrap_err();
    assert!(
        err.starts_with(&format!("cannot open {}: ", path.display())),
        "{err}"
    );
}

#[test]
fn bad_configuration_is_refused() {
    let err = plugin().create(&json!({})).unwrap_err();
    assert!(err.contains("missing field `path`"), "{err}");
    let err = plugin().create(&json!("events.jsonl")).unwrap_err();
    assert!(
        err.starts_with("invalid jsonl listener configuration: "),
        "{err}"
    );
}

#[test]
fn a_path_that_becomes_unwritable_fails_delivery_until_it_is_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let path = logs.join("events.jsonl");
    let mut l = listener(&path);
    let sent = events(1);
    deliver(&mut l, &sent[0]).unwrap();

    // The directory is replaced by a regular file: the path cannot be opened any more. (Tests
    // may run as root, so permissions would not stop the write.)
    std::fs::remove_dir_all(&logs).unwrap();
    std::fs::write(&logs, b"in the way").unwrap();
    let err = deliver(&mut l, &sent[1]).unwrap_err();
    assert!(
        err.starts_with(&format!("cannot append event 2 to {}: ", path.display())),
        "{err}"
    );

    // Fixed: the master's retry of the same event succeeds, in a new file.
    std::fs::remove_file(&logs).unwrap();
    deliver(&mut l, &sent[1]).unwrap();
    deliver(&mut l, &sent[2]).unwrap();
    assert_eq!(read_lines(&path), sent[1..3]);
}

#[test]
fn a_write_error_is_a_delivery_error() {
    // Writing to /dev/full fails with ENOSPC, a real I/O error from the write itself.
    let full = Path::new("/dev/full");
    if !full.exists() {
        eprintln!("skipped: no /dev/full");
        return;
    }
    let mut l = listener(full);
    for event in events(1) {
        let err = deliver(&mut l, &event).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "cannot append event {} to /dev/full: ",
                event["seq"]
            )),
            "{err}"
        );
    }
}

/// Compiles `source` into `<dir>/<name>` as a shared library with the system C compiler.
fn c_library(dir: &Path, name: &str, source: &str) -> PathBuf {
    let c_file = dir.join(format!("{name}.c"));
    std::fs::write(&c_file, source).unwrap();
    let out = dir.join(name);
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let result = Command::new(&cc)
        .args(["-shared", "-fPIC", "-o"])
        .arg(&out)
        .arg(&c_file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc:?}: {e}"));
    assert!(
        result.status.success(),
        "{cc} failed: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    out
}

#[test]
fn load_classifies_libraries_that_are_not_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let app_only = c_library(
        d,
        "libapp.so",
        "unsigned int aloha_plugin_abi_version(void) { return 1; }\n\
         int aloha_application_plugin(void) { return 0; }\n",
    );
    let err = ListenerPlugin::load(&app_only).unwrap_err();
    assert!(matches!(err, LoadError::NotAListener { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "{}: not an Aloha listener plugin (no `aloha_listener_plugin` symbol)",
            app_only.display()
        )
    );

    let other = c_library(d, "libother.so", "int f(void) { return 1; }\n");
    let err = ListenerPlugin::load(&other).unwrap_err();
    assert!(matches!(err, LoadError::NotAPlugin { .. }), "{err}");

    let wrong = c_library(
        d,
        "libwrong.so",
        "unsigned int aloha_plugin_abi_version(void) { return 999; }\n\
         int aloha_listener_plugin(void) { return 0; }\n",
    );
    let err = ListenerPlugin::load(&wrong).unwrap_err();
    assert!(
        matches!(err, LoadError::AbiMismatch { found: 999, .. }),
        "{err}"
    );

    let null_table = c_library(
        d,
        "libnull.so",
        "unsigned int aloha_plugin_abi_version(void) { return 1; }\n\
         const void *aloha_listener_plugin(void) { return 0; }\n",
    );
    let err = ListenerPlugin::load(&null_table).unwrap_err();
    assert!(matches!(err, LoadError::InvalidTable { .. }), "{err}");
}
