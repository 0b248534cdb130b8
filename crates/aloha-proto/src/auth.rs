//! The join token: a shared secret every gRPC call between masters and workers carries.
//!
//! With `--join-token-file` set, a master refuses `MasterService` and `PeerService` calls, and a
//! worker refuses `WorkerService` calls, that do not carry the same token (`UNAUTHENTICATED`):
//! a process that can reach the ports but does not know the token can neither register as a
//! worker (and receive launch descriptions) nor tell a worker what to run. The token travels
//! as `authorization: Bearer <token>` metadata; use TLS where the network is not trusted, or it
//! can be read on the wire.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use subtle::ConstantTimeEq;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// Shortest token accepted: 16 characters (e.g. `openssl rand -hex 32` makes 64).
pub const MIN_TOKEN_LEN: usize = 16;

/// A join token, read from a file.
#[derive(Clone)]
pub struct JoinToken {
    value: Arc<str>,
    header: AsciiMetadataValue,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JoinToken(<secret>)")
    }
}

impl PartialEq for JoinToken {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl JoinToken {
    /// Reads the token from `path`: its first line, surrounding whitespace removed. Refused when
    /// the file is readable or writable by group or others (it is a secret), when the token is
    /// shorter than [`MIN_TOKEN_LEN`], or when it holds anything but printable ASCII.
    pub fn from_file(path: &Path) -> Result<JoinToken, String> {
        let text = read_secret_file(path, "join token")?;
        Self::new(&text).map_err(|e| format!("join token file {}: {e}", path.display()))
    }

    /// A token from its text.
    pub fn new(token: &str) -> Result<JoinToken, String> {
        if token.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "the token must be at least {MIN_TOKEN_LEN} characters (e.g. openssl rand -hex 32)"
            ));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the token must be printable ASCII without spaces".into());
        }
        let header = format!("Bearer {token}")
            .parse()
            .map_err(|_| "the token is not a valid header value".to_string())?;
        Ok(JoinToken {
            value: token.into(),
            header,
        })
    }

    /// The token's text (to hand it on, e.g. as the master's bootstrap token).
    pub fn secret(&self) -> &str {
        &self.value
    }

    /// Whether `metadata` carries this token, compared in constant time.
    pub fn admits(&self, metadata: &MetadataMap) -> bool {
        let Some(given) = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        // Equal lengths are compared in constant time; a length mismatch fails at once (the
        // length is no secret worth keeping: the minimum is public).
        given.len() == self.value.len() && bool::from(given.as_bytes().ct_eq(self.value.as_bytes()))
    }
}

/// Reads a secret (a token, a password) from `path`: its first line, surrounding whitespace
/// removed. Refused when the file is readable or writable by group or others; `what` names the
/// secret in errors.
pub fn read_secret_file(path: &Path, what: &str) -> Result<String, String> {
    use std::os::unix::fs::MetadataExt;
    let shown = path.display();
    let md = std::fs::metadata(path).map_err(|e| format!("{what} file {shown}: {e}"))?;
    let mode = md.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{what} file {shown}: permissions {mode:04o} are too open; it is a secret: chmod 600 it"
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{what} file {shown}: {e}"))?;
    Ok(text.lines().next().unwrap_or("").trim().to_string())
}

/// Adds the join token (if any) to every call of a client.
#[derive(Clone, Debug, Default)]
pub struct WithToken(pub Option<JoinToken>);

impl Interceptor for WithToken {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(t) = &self.0 {
            req.metadata_mut().insert("authorization", t.header.clone());
        }
        Ok(req)
    }
}

/// A client channel that sends the join token.
pub type Authed =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, WithToken>;

/// How often refusals from one address are reported: a worker retrying every second must not
/// flood the log.
pub const REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Where a [`Reporter`] sends reports: `(address, count, reason)`.
type Sink = Arc<dyn Fn(&str, u64, &str) + Send + Sync>;

/// When each `(address, reason)` was last reported, and how often it happened since.
type Reported = HashMap<(String, String), (Instant, u64)>;

/// Reports refusals and failures to a callback at most once per [`REPORT_EVERY`] per address and
/// reason, with how many happened since the last report.
#[derive(Clone)]
pub struct Reporter {
    sink: Sink,
    last: Arc<std::sync::Mutex<Reported>>,
}

impl Reporter {
    /// Reports to `sink(address, count, reason)`.
    pub fn new(sink: impl Fn(&str, u64, &str) + Send + Sync + 'static) -> Self {
        Reporter {
            sink: Arc::new(sink),
            last: Arc::default(),
        }
    }

    /// Counts one refusal of `from` for `reason`; reports it unless reported recently.
    pub fn report(&self, from: &str, reason: &str) {
        let now = Instant::now();
        let report = {
            // A std mutex: held for a map update, never across an await.
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            // Bounded: forget addresses not seen for a while.
            if last.len() > 10_000 {
                last.retain(|_, (at, _)| now.duration_since(*at) < REPORT_EVERY);
            }
            let entry = last
                .entry((from.to_string(), reason.to_string()))
                .or_insert((now - REPORT_EVERY, 0));
            entry.1 += 1;
            if now.duration_since(entry.0) >= REPORT_EVERY {
                let n = entry.1;
                *entry = (now, 0);
                Some(n)
            } else {
                None
            }
        };
        if let Some(n) = report {
            (self.sink)(from, n, reason);
        }
    }
}

/// Checks calls to a server against the join token (if any) and, with mutual TLS, the role in
/// the caller's certificate; refusals are reported (the caller's address or `unknown`, how many
/// calls from it were refused since the last report, why) at most once per [`REPORT_EVERY`] per
/// address and reason, e.g. to log them.
#[derive(Clone)]
pub struct RequireToken {
    token: Option<JoinToken>,
    role: Option<crate::tls::PeerRole>,
    reporter: Reporter,
}

impl RequireToken {
    /// Requires `token` (none: every call passes).
    pub fn new(
        token: Option<JoinToken>,
        on_refused: impl Fn(&str, u64, &str) + Send + Sync + 'static,
    ) -> Self {
        RequireToken {
            token,
            role: None,
            reporter: Reporter::new(on_refused),
        }
    }

    /// Also requires a TLS client certificate with `role` (none: no certificate check; the
    /// server then runs without mutual TLS). Calls without one are `PERMISSION_DENIED`, or
    /// `UNAUTHENTICATED` when no certificate came at all.
    pub fn with_peer_role(mut self, role: Option<crate::tls::PeerRole>) -> Self {
        self.role = role;
        self
    }

    fn check_role(&self, req: &Request<()>) -> Result<(), Status> {
        let Some(role) = self.role else {
            return Ok(());
        };
        let certs = req.peer_certs();
        let Some(cert) = certs.as_ref().and_then(|c| c.first()) else {
            return Err(Status::unauthenticated(
                "a TLS client certificate issued by the cluster CA is required (--tls-ca)",
            ));
        };
        if crate::tls::has_role(cert, role) {
            return Ok(());
        }
        Err(Status::permission_denied(format!(
            "this service takes calls from {role}s only: the client certificate must carry the \
             URI SAN {} (it has: {})",
            role.uri(),
            crate::tls::roles_shown(cert)
        )))
    }
}

impl Interceptor for RequireToken {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let refused = match (&self.token, self.check_role(&req)) {
            (_, Err(status)) => status,
            (Some(t), Ok(())) if !t.admits(req.metadata()) => {
                Status::unauthenticated("a valid join token is required (--join-token-file)")
            }
            _ => return Ok(req),
        };
        let from = req
            .remote_addr()
            .map_or("unknown".to_string(), |a| a.ip().to_string());
        self.reporter.report(&from, refused.message());
        Err(refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn with(token: &JoinToken) -> MetadataMap {
        let req = WithToken(Some(token.clone()))
            .call(Request::new(()))
            .unwrap();
        req.metadata().clone()
    }

    #[test]
    fn only_the_same_token_is_admitted() {
        let t = JoinToken::new("0123456789abcdef0123").unwrap();
        assert!(t.admits(&with(&t)));
        let other = JoinToken::new("0123456789abcdef0124").unwrap();
        assert!(!t.admits(&with(&other)));
        assert!(!t.admits(&with(&JoinToken::new("0123456789abcdef01234").unwrap())));
        assert!(!t.admits(&MetadataMap::new()));
        let mut bare = MetadataMap::new();
        bare.insert("authorization", "0123456789abcdef0123".parse().unwrap());
        assert!(!t.admits(&bare), "the Bearer scheme is required");
    }

    #[test]
    fn short_or_odd_tokens_and_open_files_are_refused() {
        assert!(JoinToken::new("short").unwrap_err().contains("at least 16"));
        assert!(JoinToken::new("0123456789abcdef 0123").is_err());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(JoinToken::from_file(&f)
            .unwrap_err()
            .contains("permissions 0644 are too open"));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let t = JoinToken::from_file(&f).unwrap();
        assert!(t.admits(&with(&t)));
        assert_eq!(format!("{t:?}"), "JoinToken(<secret>)");
    }

    #[test]
    fn a_server_without_a_token_admits_everything_and_with_one_refuses_and_reports() {
        let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut open = RequireToken::new(None, |_, _, _| {});
        assert!(open.call(Request::new(())).is_ok());
        let t = JoinToken::new("0123456789abcdef0123").unwrap();
        let r = refused.clone();
        let mut strict = RequireToken::new(Some(t.clone()), move |_, n, _| {
            r.fetch_add(n as usize, std::sync::atomic::Ordering::SeqCst);
        });
        let status = strict.call(Request::new(())).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert_eq!(refused.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Further refusals from the same (unknown) address within 10 s are counted, not
        // reported each.
        for _ in 0..5 {
            assert!(strict.call(Request::new(())).is_err());
        }
        assert_eq!(refused.load(std::sync::atomic::Ordering::SeqCst), 1);
        let mut ok = Request::new(());
        *ok.metadata_mut() = with(&t);
        assert!(strict.call(ok).is_ok());
    }
}
