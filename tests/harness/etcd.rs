//! Real etcd processes for the HA tests: one or three members on free 127.0.0.1 client and
//! peer ports, each with its own data dir, fast heartbeats, killed and reaped on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{free_port, wait_for, Proc};

/// The etcd binary; panics with the install command when it is missing (never skips).
pub fn etcd_bin() -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", "command -v etcd"])
        .output()
        .expect("run sh");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && !path.is_empty(),
        "etcd is not installed: run `apt-get install -y etcd-server` (scripts/test.sh does)"
    );
    PathBuf::from(path)
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    proc: Option<Proc>,
}

/// An etcd cluster of one or more members.
pub struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    log_dir: PathBuf,
    /// Extra environment of every member (`ETCD_*` settings).
    env: Vec<(String, String)>,
    /// Clients must speak TLS with a certificate signed by this CA; the members' own
    /// certificate and key: (ca, cert, key) PEM files.
    tls: Option<(PathBuf, PathBuf, PathBuf)>,
}

impl EtcdCluster {
    /// Starts `n` members and waits until the cluster answers.
    pub fn start(n: usize, dir: &Path) -> EtcdCluster {
        Self::start_with_env(n, dir, &[])
    }

    /// Like [`EtcdCluster::start`], with `ETCD_*` settings in every member's environment.
    pub fn start_with_env(n: usize, dir: &Path, env: &[(&str, &str)]) -> EtcdCluster {
        Self::start_full(n, dir, env, None)
    }

    /// Like [`EtcdCluster::start`], serving clients over TLS only, with client certificates
    /// required (`--client-cert-auth`): `tls` is (ca, cert, key), PEM files, the certificate
    /// valid for 127.0.0.1. [`EtcdCluster::endpoints`] are then `https://` URLs.
    pub fn start_tls(n: usize, dir: &Path, tls: (PathBuf, PathBuf, PathBuf)) -> EtcdCluster {
        Self::start_full(n, dir, &[], Some(tls))
    }

    fn start_full(
        n: usize,
        dir: &Path,
        env: &[(&str, &str)],
        tls: Option<(PathBuf, PathBuf, PathBuf)>,
    ) -> EtcdCluster {
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("etcd{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                data_dir: dir.join(format!("etcd{i}")),
                proc: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = EtcdCluster {
            members,
            initial_cluster,
            log_dir: dir.to_path_buf(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            tls,
        };
        for i in 0..n {
            c.start_member(i);
        }
        c.wait_healthy();
        c
    }

    /// (Re)starts member `i` with its data dir.
    pub fn start_member(&mut self, i: usize) {
        let bin = etcd_bin();
        let m = &self.members[i];
        let client_url = format!("{}://127.0.0.1:{}", self.scheme(), m.client_port);
        let mut cmd = Command::new(bin);
        cmd.arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(format!("http://127.0.0.1:{}", m.peer_port))
            .arg("--initial-advertise-peer-urls")
            .arg(format!("http://127.0.0.1:{}", m.peer_port))
            .arg("--initial-cluster")
            .arg(&self.initial_cluster)
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--initial-cluster-token")
            .arg("aloha-e2e")
            .arg("--heartbeat-interval")
            .arg("50")
            .arg("--election-timeout")
            .arg("500")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if let Some((ca, cert, key)) = &self.tls {
            cmd.arg("--cert-file")
                .arg(cert)
                .arg("--key-file")
                .arg(key)
                .arg("--trusted-ca-file")
                .arg(ca)
                .arg("--client-cert-auth");
        }
        let name = format!("{}-{}", m.name, crate::unique());
        let p = Proc::spawn(&name, cmd, &self.log_dir);
        self.members[i].proc = Some(p);
    }

    /// SIGKILLs member `i`.
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut p) = self.members[i].proc.take() {
            p.kill9();
        }
    }

    /// Client URLs of every member, comma-separated.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}://127.0.0.1:{}", self.scheme(), m.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Waits until every running member reports healthy.
    pub fn wait_healthy(&self) {
        let mut builder = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2));
        if let Some((ca, cert, key)) = &self.tls {
            let read = |p: &PathBuf| std::fs::read(p).expect("a PEM file");
            let mut pem = read(cert);
            pem.extend(read(key));
            builder = builder
                .add_root_certificate(reqwest::Certificate::from_pem(&read(ca)).expect("a CA"))
                .identity(reqwest::Identity::from_pem(&pem).expect("a client identity"));
        }
        let client = builder.build().expect("http client");
        for m in self.members.iter().filter(|m| m.proc.is_some()) {
            let url = format!("{}://127.0.0.1:{}/health", self.scheme(), m.client_port);
            wait_for(
                &format!("{} healthy", m.name),
                Duration::from_secs(30),
                || {
                    let body = client.get(&url).send().ok()?.text().ok()?;
                    body.contains("\"health\":\"true\"").then_some(())
                },
            );
        }
    }

    /// The highest mod revision of any key under `prefix`: changes only when one of them is
    /// written.
    pub fn max_mod_revision(&self, prefix: &str) -> i64 {
        use base64_lite::encode;
        let m = self
            .members
            .iter()
            .find(|m| m.proc.is_some())
            .expect("a running member");
        let mut end = prefix.as_bytes().to_vec();
        let last = end.pop().expect("non-empty prefix");
        end.push(last + 1);
        let body = serde_json::json!({
            "key": encode(prefix.as_bytes()),
            "range_end": encode(&end),
        });
        let resp: serde_json::Value = reqwest::blocking::Client::new()
            .post(format!("http://127.0.0.1:{}/v3/kv/range", m.client_port))
            .json(&body)
            .send()
            .expect("etcd range")
            .json()
            .expect("etcd json");
        resp["kvs"]
            .as_array()
            .map(|kvs| {
                kvs.iter()
                    .filter_map(|kv| kv["mod_revision"].as_str()?.parse::<i64>().ok())
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0)
    }
}

/// Just enough base64 for etcd's JSON gateway.
mod base64_lite {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(data: &[u8]) -> String {
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn encodes_like_the_rfc() {
        assert_eq!(encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(encode(b"fooba"), "Zm9vYmE=");
        assert_eq!(encode(b"foob"), "Zm9vYg==");
    }
}

impl EtcdCluster {
    /// How many members the cluster has (running or not).
    pub fn member_count(&self) -> usize {
        self.members.len()
    }
}
