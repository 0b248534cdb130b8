//! Who may call the REST API: bearer tokens with roles.
//!
//! With `--auth required` every request but `/healthz`, `/readyz` and the console's login page
//! and static files needs `Authorization: Bearer <token>` (or, in the console, the session
//! cookie a login with a token set). The role the route needs ([`required_role`]) is compared
//! with the token's: `reader` reads (every GET, `/metrics`, the event stream, logs);
//! `submitter` also submits, kills, retries and manages schedules (a submitter token may be
//! scoped to namespaces: it then writes only there); `admin` also manages tokens and
//! namespaces, drains workers and accepts a restored store. No token or a bad one: `401` with
//! `WWW-Authenticate: Bearer`; a valid token without the role: `403`.
//!
//! Tokens are `aloha_<id>_<secret>`: 12 hex digits of id and 64 of secret from the OS's random
//! source, shown once when created. The store keeps `tokens/<id>` with the SHA-256 of the
//! secret only; a presented token is looked up by id and its secret's hash compared in constant
//! time. Every master keeps the tokens in memory, reloads them from the store every
//! [`RELOAD_EVERY`] (so a token created or revoked on the leader counts on a standby within
//! that), and the master that wrote a change applies it at once. The bootstrap token
//! (`--bootstrap-token-file`) is an admin token that lives in that file only.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::Method;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use aloha_core::namespace::Scope;

use crate::store::{keys, StateStore, StoreError, Txn};

/// How often every master reloads the tokens from the store.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// Whether the REST API requires a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every request but the probes needs a token.
    Required,
    /// Nobody is asked for anything (loopback-only deployments, the demo).
    Off,
}

/// What a token may do; each role includes the ones before it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything.
    Reader,
    /// Also submits, kills and retries apps and manages schedules.
    Submitter,
    /// Also manages tokens, drains workers and accepts a restored store.
    Admin,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Reader => "reader",
            Role::Submitter => "submitter",
            Role::Admin => "admin",
        })
    }
}

/// The role a request needs; `None` for the open routes.
pub fn required_role(method: &Method, path: &str) -> Option<Role> {
    let open =
        matches!(path, "/healthz" | "/readyz" | "/ui/login") || path.starts_with("/ui/static/");
    if open {
        return None;
    }
    let admin = path == "/api/v1/tokens"
        || path.starts_with("/api/v1/tokens/")
        || path == "/api/v1/cluster/accept-restore"
        || (path.starts_with("/api/v1/namespaces/") && *method != Method::GET)
        || (path.starts_with("/api/v1/workers/") && *method != Method::GET)
        || (path.starts_with("/ui/workers/") && *method != Method::GET);
    if admin {
        return Some(Role::Admin);
    }
    if *method == Method::GET || *method == Method::HEAD {
        return Some(Role::Reader);
    }
    // A dry run changes nothing but still names what one may submit: submitter.
    Some(Role::Submitter)
}

/// A token as stored (no secret, only its hash) and listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenInfo {
    /// `tok-<12 hex digits>`; the token text is `aloha_<those digits>_<secret>`.
    pub id: String,
    /// What it is for.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// A `submitter` token may write only in these namespaces; empty: in every namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// The SHA-256 of the secret, hex; never served.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schema(ignore)]
    pub secret_sha256: String,
}

impl TokenInfo {
    /// The record without its hash, as the API shows it.
    pub fn public(&self) -> TokenInfo {
        TokenInfo {
            secret_sha256: String::new(),
            ..self.clone()
        }
    }
}

/// Who a request comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    /// The token's id (`bootstrap` for the bootstrap token).
    pub token_id: String,
    /// Its role.
    pub role: Role,
    /// The namespaces it may write in (`Scope::All` for an admin or an unscoped token).
    pub scope: Scope,
}

impl Principal {
    fn of(info: &TokenInfo) -> Principal {
        Principal {
            token_id: info.id.clone(),
            role: info.role,
            scope: scope_of(&info.id, info.role, &info.namespaces),
        }
    }
}

/// Where a token of `role` scoped to `namespaces` may write.
fn scope_of(id: &str, role: Role, namespaces: &[String]) -> Scope {
    if role == Role::Admin || namespaces.is_empty() {
        Scope::All
    } else {
        Scope::Only {
            who: format!("token {id}"),
            namespaces: namespaces.to_vec().into(),
        }
    }
}

/// Where the caller of a request may write: everywhere when the API needs no token.
pub fn scope(principal: Option<&Principal>) -> Scope {
    principal.map_or(Scope::All, |p| p.scope.clone())
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(n: usize) -> Result<String, String> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness from the OS: {e}"))?;
    Ok(hex(&bytes))
}

/// How long a console session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Most console sessions one master keeps (the oldest go first).
const MAX_SESSIONS: usize = 10_000;

/// A console login: the token it was opened with (checked again on every request, so a
/// revoked token ends its sessions) and the CSRF token its forms carry.
#[derive(Clone)]
struct Session {
    token_id: String,
    csrf: String,
    expires: std::time::Instant,
}

/// The token table of one master, and its console sessions.
pub struct Tokens {
    mode: AuthMode,
    bootstrap: Option<[u8; 32]>,
    by_id: RwLock<HashMap<String, TokenInfo>>,
    sessions: std::sync::Mutex<HashMap<String, Session>>,
}

impl Tokens {
    /// A table for `mode`; `bootstrap` is the bootstrap token's text, if any.
    pub fn new(mode: AuthMode, bootstrap: Option<&str>) -> Self {
        Tokens {
            mode,
            bootstrap: bootstrap.map(|b| sha256(b.as_bytes())),
            by_id: RwLock::default(),
            sessions: std::sync::Mutex::default(),
        }
    }

    /// Opens a console session for `token` if it is valid: the session id (the cookie's value)
    /// and its CSRF token.
    pub fn login(&self, token: &str) -> Option<(String, String)> {
        let p = self.check(token)?;
        let id = random_hex(32).ok()?;
        let csrf = random_hex(32).ok()?;
        let now = std::time::Instant::now();
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            id.clone(),
            Session {
                token_id: p.token_id,
                csrf: csrf.clone(),
                expires: now + SESSION_TTL,
            },
        );
        Some((id, csrf))
    }

    /// Who a console session is, and its CSRF token; `None` when unknown, expired, or its
    /// token was revoked since.
    pub fn session(&self, id: &str) -> Option<(Principal, String)> {
        let s = {
            let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            sessions.get(id)?.clone()
        };
        if s.expires <= std::time::Instant::now() {
            return None;
        }
        let principal = if s.token_id == "bootstrap" {
            self.bootstrap.as_ref().map(|_| Principal {
                token_id: s.token_id,
                role: Role::Admin,
                scope: Scope::All,
            })?
        } else {
            Principal::of(
                self.by_id
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&s.token_id)?,
            )
        };
        Some((principal, s.csrf))
    }

    /// Ends a console session.
    pub fn logout(&self, id: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Whether tokens are required.
    pub fn required(&self) -> bool {
        self.mode == AuthMode::Required
    }

    /// Who presents `token`, if it is valid.
    pub fn check(&self, token: &str) -> Option<Principal> {
        if let Some(b) = &self.bootstrap {
            if bool::from(sha256(token.as_bytes()).ct_eq(b)) {
                return Some(Principal {
                    token_id: "bootstrap".into(),
                    role: Role::Admin,
                    scope: Scope::All,
                });
            }
        }
        let rest = token.strip_prefix("aloha_")?;
        let (id, secret) = rest.split_once('_')?;
        let id = format!("tok-{id}");
        let table = self.by_id.read().unwrap_or_else(|p| p.into_inner());
        let info = table.get(&id)?;
        let given = hex(&sha256(secret.as_bytes()));
        bool::from(given.as_bytes().ct_eq(info.secret_sha256.as_bytes()))
            .then(|| Principal::of(info))
    }

    /// Every token, without secrets, by id.
    pub fn list(&self) -> Vec<TokenInfo> {
        let mut v: Vec<TokenInfo> = self
            .by_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(TokenInfo::public)
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Replaces the table with the store's.
    pub async fn reload(&self, store: &dyn StateStore) -> Result<(), StoreError> {
        let rows = store.scan_prefix(keys::TOKENS).await?;
        let table: HashMap<String, TokenInfo> = rows
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice::<TokenInfo>(&v).ok())
            .map(|t| (t.id.clone(), t))
            .collect();
        *self.by_id.write().unwrap_or_else(|p| p.into_inner()) = table;
        Ok(())
    }

    /// Creates a token through `store` (the leader's, fenced); returns it and its text, which
    /// is never shown again.
    pub async fn create(
        &self,
        store: &dyn StateStore,
        name: String,
        role: Role,
        namespaces: Vec<String>,
        now: DateTime<Utc>,
    ) -> Result<(TokenInfo, String), CreateError> {
        let id_hex = random_hex(6).map_err(CreateError::Random)?;
        let secret = random_hex(32).map_err(CreateError::Random)?;
        let info = TokenInfo {
            id: format!("tok-{id_hex}"),
            name,
            role,
            namespaces,
            created_at: now,
            secret_sha256: hex(&sha256(secret.as_bytes())),
        };
        let mut txn = Txn::default();
        txn.compares.push(crate::store::Compare::Value {
            key: keys::token(&info.id),
            value: None,
        });
        txn.put(
            keys::token(&info.id),
            serde_json::to_vec(&info).expect("a token serializes"),
        );
        if !store.txn(txn).await.map_err(CreateError::Store)? {
            return Err(CreateError::Random("token id collision; try again".into()));
        }
        self.by_id
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(info.id.clone(), info.clone());
        Ok((info.public(), format!("aloha_{id_hex}_{secret}")))
    }

    /// Revokes token `id` through `store`; false when there is no such token.
    pub async fn revoke(&self, store: &dyn StateStore, id: &str) -> Result<bool, StoreError> {
        let key = keys::token(id);
        if store.get(&key).await?.is_none() {
            return Ok(false);
        }
        let mut txn = Txn::default();
        txn.delete(key);
        store.txn(txn).await?;
        self.by_id
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        Ok(true)
    }
}

/// Why a token could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The OS gave no randomness, or the id collided.
    #[error("{0}")]
    Random(String),
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
}

/// The token a request presents: `Authorization: Bearer <token>`.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Keeps every master's table current: reloads it from `store` every [`RELOAD_EVERY`].
pub async fn keep_loaded(
    tokens: Arc<Tokens>,
    store: Arc<dyn StateStore>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let _ = tokio::time::timeout(RELOAD_EVERY, tokens.reload(store.as_ref())).await;
        tokio::select! {
            _ = tokio::time::sleep(RELOAD_EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[test]
    fn routes_need_the_least_role_that_can_use_them() {
        let get = Method::GET;
        let post = Method::POST;
        for open in ["/healthz", "/readyz", "/ui/login", "/ui/static/console.css"] {
            assert_eq!(required_role(&get, open), None, "{open}");
        }
        assert_eq!(required_role(&get, "/api/v1/apps"), Some(Role::Reader));
        assert_eq!(required_role(&get, "/metrics"), Some(Role::Reader));
        assert_eq!(required_role(&get, "/"), Some(Role::Reader));
        assert_eq!(required_role(&post, "/api/v1/apps"), Some(Role::Submitter));
        assert_eq!(
            required_role(&Method::DELETE, "/api/v1/schedules/s-1"),
            Some(Role::Submitter)
        );
        assert_eq!(
            required_role(&post, "/ui/apps/x/kill"),
            Some(Role::Submitter)
        );
        assert_eq!(required_role(&get, "/api/v1/tokens"), Some(Role::Admin));
        assert_eq!(
            required_role(&post, "/api/v1/workers/w1/drain"),
            Some(Role::Admin)
        );
        assert_eq!(required_role(&get, "/api/v1/workers"), Some(Role::Reader));
        assert_eq!(
            required_role(&post, "/api/v1/cluster/accept-restore"),
            Some(Role::Admin)
        );
        assert!(Role::Admin > Role::Submitter && Role::Submitter > Role::Reader);
    }

    #[tokio::test]
    async fn a_token_is_shown_once_stored_hashed_checked_and_revocable() {
        let store = MemoryStore::new();
        let t = Tokens::new(AuthMode::Required, Some("bootstrap-secret-0123"));
        let (info, text) = t
            .create(&store, "ci".into(), Role::Submitter, vec![], Utc::now())
            .await
            .unwrap();
        assert!(text.starts_with(&format!("aloha_{}_", &info.id[4..])));
        assert_eq!(text.len(), "aloha_".len() + 12 + 1 + 64);
        let p = t.check(&text).unwrap();
        assert_eq!(
            (p.token_id.as_str(), p.role),
            (info.id.as_str(), Role::Submitter)
        );
        // Stored: the hash, never the secret.
        let raw = store.get(&keys::token(&info.id)).await.unwrap().unwrap();
        let raw = String::from_utf8(raw).unwrap();
        let secret = text.rsplit('_').next().unwrap();
        assert!(!raw.contains(secret));
        assert!(raw.contains(&hex(&sha256(secret.as_bytes()))));
        assert!(t.list().iter().all(|i| i.secret_sha256.is_empty()));
        // A wrong secret, a wrong id, garbage: nobody.
        let mut wrong = text.clone();
        wrong.pop();
        wrong.push(if text.ends_with('0') { '1' } else { '0' });
        assert_eq!(t.check(&wrong), None);
        assert_eq!(t.check("aloha_000000000000_x"), None);
        assert_eq!(t.check(""), None);
        // The bootstrap token is an admin.
        assert_eq!(t.check("bootstrap-secret-0123").unwrap().role, Role::Admin);
        // Another master sees it after a reload; a revocation removes it everywhere.
        let other = Tokens::new(AuthMode::Required, None);
        other.reload(&store).await.unwrap();
        assert!(other.check(&text).is_some());
        assert!(t.revoke(&store, &info.id).await.unwrap());
        assert!(!t.revoke(&store, &info.id).await.unwrap());
        assert_eq!(t.check(&text), None);
        other.reload(&store).await.unwrap();
        assert_eq!(other.check(&text), None);
    }
}
