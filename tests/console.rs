//! The web console in a real browser: Debian's chromium, headless, driven by npm's
//! `playwright-core` (`tests/console/console.mjs`), against a real master and worker. The
//! script submits an app through the form and sees it reach FINISHED without a reload, kills a
//! running app, reads its logs, walks every page and follows the live event feed; screenshots
//! go to `target/console-screenshots/`.
//!
//! Needs `node`, `/usr/bin/chromium` and `tests/console/node_modules` (`scripts/test.sh`
//! installs all three); without them the test fails, saying what is missing.

use std::path::Path;
use std::process::Command;

use aloha_e2e::{target_dir, workspace_root, Cluster};

#[test]
fn the_console_works_in_a_real_browser() {
    let c = Cluster::start("3s", &[("w1", 4)]);
    drive_the_console(&c, None, "console-screenshots");
}

#[test]
fn the_console_logs_in_and_works_in_a_real_browser_with_auth_required() {
    const TOKEN: &str = "4f9c2a7e1b3d5f6a8c0e2b4d6f8a1c3e";
    let c = Cluster::start_with("3s", &[("w1", 4)], |dir| {
        let f = dir.join("bootstrap.token");
        std::fs::write(&f, TOKEN).unwrap();
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        vec![
            "--auth".into(),
            "required".into(),
            "--bootstrap-token-file".into(),
            f.display().to_string(),
        ]
    });
    drive_the_console(&c, Some(TOKEN), "console-screenshots-auth");
}

/// Runs `console.mjs` against `c` (logging in with `token` first, if any); screenshots go to
/// `target/<shots>/`.
fn drive_the_console(c: &Cluster, token: Option<&str>, shots: &str) {
    let dir = workspace_root().join("tests/console");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: apt-get install -y chromium (scripts/test.sh does it)"
    );
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "tests/console/node_modules is missing: npm ci --prefix tests/console (scripts/test.sh does it)"
    );
    let shots = target_dir().parent().expect("the target dir").join(shots);
    let out = Command::new("node")
        .arg(dir.join("console.mjs"))
        .arg(&c.api().base)
        .arg(&shots)
        .args(token)
        .env("CHROMIUM", &chromium)
        .output()
        .unwrap_or_else(|e| panic!("cannot run node (apt-get install -y nodejs): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser test failed ({}):\n{stdout}\n{stderr}\nscreenshots: {}",
        out.status,
        shots.display()
    );
    assert!(stdout.contains("every check passed"), "{stdout}");
}

#[test]
fn the_console_pages_are_plain_html_with_a_strict_policy() {
    let c = Cluster::start("3s", &[]);
    let base = &c.api().base;
    for path in [
        "/",
        "/ui/apps",
        "/ui/workers",
        "/ui/schedules",
        "/ui/events",
        "/ui/submit",
    ] {
        let r = reqwest::blocking::get(format!("{base}{path}")).unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let csp = r.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(csp.contains("default-src 'self'"), "{path}: {csp}");
        let body = r.text().unwrap();
        assert!(body.starts_with("<!DOCTYPE html>"), "{path}");
        assert!(!body.contains("<script>"), "{path}: no inline script");
        assert!(!body.contains("style="), "{path}: no inline style");
        assert!(body.contains("<h1>"), "{path}");
    }
    let r = reqwest::blocking::get(format!("{base}/ui/apps/app-20200101000000-0042")).unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().unwrap().contains("not found"));
    let r = reqwest::blocking::get(format!("{base}/ui/static/console.js")).unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    // A form post that the master refuses shows the reason.
    let r = reqwest::blocking::Client::new()
        .post(format!("{base}/ui/submit"))
        .form(&[
            ("name", "x"),
            ("kind", "process"),
            ("command", ""),
            ("cores", "1"),
            ("memory_mb", "1"),
        ])
        .send()
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().unwrap().contains("give a command"));
}

#[test]
fn a_standby_says_so_on_every_page_and_links_the_leader() {
    use aloha_e2e::etcd::EtcdCluster;
    use aloha_e2e::wait_for;
    let dir = tempfile::Builder::new()
        .prefix("aloha-console-ha-")
        .tempdir()
        .unwrap();
    let etcd = EtcdCluster::start(1, dir.path());
    let masters = aloha_e2e::ha_masters(&etcd, dir.path());
    let (leader, standby) = wait_for(
        "a leader and a standby that knows it",
        std::time::Duration::from_secs(40),
        || {
            let l = masters
                .iter()
                .position(|m| aloha_e2e::role_of(m).as_deref() == Some("ALIVE"))?;
            let s = 1 - l;
            let c = masters[s].api.try_get("/api/v1/cluster").ok()?;
            (c.body["leader"].is_string()).then_some((l, s))
        },
    );
    let leader_url = masters[leader].api.base.clone();
    for path in [
        "/",
        "/ui/apps",
        "/ui/workers",
        "/ui/schedules",
        "/ui/submit",
    ] {
        let body = reqwest::blocking::get(format!("{}{path}", masters[standby].api.base))
            .unwrap()
            .text()
            .unwrap();
        assert!(
            body.contains("This master is <strong>STANDBY</strong>"),
            "{path}: {body}"
        );
        assert!(
            body.contains(&format!("href=\"{leader_url}/\"")),
            "{path}: no link to {leader_url}"
        );
        assert!(
            !body.contains("method=\"post\""),
            "{path}: a standby shows no forms"
        );
    }
    let body = reqwest::blocking::get(format!("{leader_url}/"))
        .unwrap()
        .text()
        .unwrap();
    assert!(
        !body.contains("This master is <strong>"),
        "the leader has no banner"
    );
    drop(masters);
    drop(etcd);
}
