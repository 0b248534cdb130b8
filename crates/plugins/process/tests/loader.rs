//! The host's loader against real libraries: the built process plugin, garbage, and small C
//! libraries that play plugins of the wrong version or of no kind at all.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use aloha_plugin::host::{scan_dir, ApplicationPlugin, LoadError};
use aloha_plugin::ABI_VERSION;
use common::{plugin_path, symlink, SO_NAME};

/// Compiles `source` into `<dir>/<name>` as a shared library with the system C compiler (the
/// linker Rust itself uses on Linux, so it is there wherever these tests build).
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
    std::fs::remove_file(&c_file).unwrap();
    out
}

const WRONG_VERSION: &str = "unsigned int aloha_plugin_abi_version(void) { return 999; }\n";
const NOT_A_PLUGIN: &str = "int some_other_library(void) { return 1; }\n";
const LISTENER_ONLY: &str = "unsigned int aloha_plugin_abi_version(void) { return 1; }\n\
                             int aloha_listener_plugin(void) { return 0; }\n";
const NULL_TABLE: &str = "unsigned int aloha_plugin_abi_version(void) { return 1; }\n\
                          const void *aloha_application_plugin(void) { return 0; }\n";
// The outer version is right but the table says 7: the table's first field is what counts.
const WRONG_TABLE_VERSION: &str = "unsigned int aloha_plugin_abi_version(void) { return 1; }\n\
                                   static const struct { unsigned int v; } table = { 7 };\n\
                                   const void *aloha_application_plugin(void) { return &table; }\n";
// A version-1 table with a kind but no functions.
const NO_FUNCTIONS: &str = "#include <stddef.h>\n\
                            unsigned int aloha_plugin_abi_version(void) { return 1; }\n\
                            static const struct { unsigned int v; const char *kind; size_t len; \
                            void *fns[6]; } table = { 1, \"hollow\", 6, {0} };\n\
                            const void *aloha_application_plugin(void) { return &table; }\n";

#[test]
fn scan_dir_reports_garbage_and_keeps_the_real_plugin() {
    let dir = tempfile::tempdir().unwrap();
    symlink(&plugin_path(), &dir.path().join(SO_NAME));
    std::fs::write(dir.path().join("libgarbage.so"), b"this is not an ELF file").unwrap();
    std::fs::write(dir.path().join("README.txt"), b"not a library").unwrap();
    std::fs::create_dir(dir.path().join("subdir.so")).unwrap();

    let (plugins, errors) = scan_dir(dir.path());
    assert_eq!(plugins.len(), 1, "{plugins:?}");
    assert_eq!(plugins[0].kind(), "process");
    assert_eq!(errors.len(), 1, "{errors:?}");
    let prefix = format!(
        "{}: cannot load library: ",
        dir.path().join("libgarbage.so").display()
    );
    assert!(errors[0].starts_with(&prefix), "{}", errors[0]);
}

#[test]
fn scan_dir_refuses_a_second_plugin_of_the_same_kind() {
    let dir = tempfile::tempdir().unwrap();
    symlink(&plugin_path(), &dir.path().join("liba_process.so"));
    symlink(&plugin_path(), &dir.path().join("libb_process.so"));
    let (plugins, errors) = scan_dir(dir.path());
    assert_eq!(plugins.len(), 1);
    assert_eq!(plugins[0].path(), dir.path().join("liba_process.so"));
    assert_eq!(
        errors,
        [format!(
            "{}: kind \"process\" is already provided by {}",
            dir.path().join("libb_process.so").display(),
            dir.path().join("liba_process.so").display()
        )]
    );
}

#[test]
fn scan_dir_skips_non_plugins_silently_and_reports_version_mismatches() {
    let dir = tempfile::tempdir().unwrap();
    let wrong = c_library(dir.path(), "libwrong.so", WRONG_VERSION);
    c_library(dir.path(), "libother.so", NOT_A_PLUGIN);
    c_library(dir.path(), "liblistener.so", LISTENER_ONLY);
    let (plugins, errors) = scan_dir(dir.path());
    assert!(plugins.is_empty(), "{plugins:?}");
    assert_eq!(
        errors,
        [format!(
            "{}: plugin ABI version 999 does not match this host's ABI version {ABI_VERSION}; \
             rebuild the plugin against this Aloha release",
            wrong.display()
        )]
    );
}

#[test]
fn load_classifies_each_library() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let err = ApplicationPlugin::load(&c_library(d, "libwrong.so", WRONG_VERSION)).unwrap_err();
    assert!(
        matches!(
            err,
            LoadError::AbiMismatch {
                found: 999,
                expected: ABI_VERSION,
                ..
            }
        ),
        "{err}"
    );

    let err = ApplicationPlugin::load(&c_library(d, "libother.so", NOT_A_PLUGIN)).unwrap_err();
    assert!(matches!(err, LoadError::NotAPlugin { .. }), "{err}");

    let listener = ApplicationPlugin::load(&c_library(d, "liblistener.so", LISTENER_ONLY));
    assert!(matches!(listener, Ok(None)), "{listener:?}");

    let err = ApplicationPlugin::load(&c_library(d, "libnull.so", NULL_TABLE)).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("invalid plugin table: `aloha_application_plugin` returned null"),
        "{err}"
    );

    let err =
        ApplicationPlugin::load(&c_library(d, "libtable7.so", WRONG_TABLE_VERSION)).unwrap_err();
    assert!(
        matches!(err, LoadError::AbiMismatch { found: 7, .. }),
        "{err}"
    );

    let err = ApplicationPlugin::load(&c_library(d, "libhollow.so", NO_FUNCTIONS)).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("the table has no `create` function"),
        "{err}"
    );

    let garbage = d.join("libgarbage.so");
    std::fs::write(&garbage, b"\x7fELF but not really").unwrap();
    let err = ApplicationPlugin::load(&garbage).unwrap_err();
    assert!(matches!(err, LoadError::Open { .. }), "{err}");
}

#[test]
fn the_real_plugin_loads_by_path() {
    let plugin = ApplicationPlugin::load(&plugin_path())
        .expect("loads")
        .expect("is an Application plugin");
    assert_eq!(plugin.kind(), "process");
    assert_eq!(plugin.path(), plugin_path());
}
