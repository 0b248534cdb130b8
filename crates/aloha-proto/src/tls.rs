//! Mutual TLS on every gRPC link between masters and workers (`--tls-ca`).
//!
//! Every daemon holds a certificate issued by the cluster's own CA with its role in a URI SAN:
//! [`PeerRole::Master`] (`aloha:role:master`) or [`PeerRole::Worker`] (`aloha:role:worker`).
//! Both sides check both things:
//! - **the chain**: a server requires a client certificate issued by `--tls-ca` (refused in the
//!   handshake otherwise), and a client requires the same of the server's;
//! - **the role**: a client dialling a master requires `aloha:role:master` in the server's
//!   certificate (a worker dialling a worker is refused in the handshake), and every service
//!   names the role of its callers ([`crate::auth::RequireToken::with_peer_role`]):
//!   `MasterService` takes workers, `PeerService` and `WorkerService` take masters
//!   (`PERMISSION_DENIED` otherwise).
//!
//! Host names are not checked: workers register the address they are dialled at, often an IP,
//! and what a peer may do follows from its role, not its name. A certificate that chains to the
//! cluster CA and carries the role is the identity; keep that CA for this cluster alone.
//!
//! The join token (`crate::auth`) still applies on top, so a stolen worker certificate alone
//! does not let anyone join a cluster that also has a token.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tonic::codegen::http::Uri;

use crate::auth::Reporter;

/// How long a peer may take to finish the TLS handshake after connecting.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a certificate says its holder is, in a URI SAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerRole {
    /// A master: serves workers and standbys, dials workers and the leader.
    Master,
    /// A worker: serves masters, dials masters.
    Worker,
}

impl PeerRole {
    /// The URI SAN that carries this role.
    pub fn uri(self) -> &'static str {
        match self {
            PeerRole::Master => "aloha:role:master",
            PeerRole::Worker => "aloha:role:worker",
        }
    }
}

impl std::fmt::Display for PeerRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PeerRole::Master => "master",
            PeerRole::Worker => "worker",
        })
    }
}

/// Why the mutual TLS setup could not be loaded; each names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no PEM item of the wanted kind.
    #[error("{what} {}: {reason}", path.display())]
    File {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// The certificate does not carry this daemon's role.
    #[error(
        "certificate {}: it has no URI SAN {} (its role URIs: {found}); issue this daemon a \
         certificate with that SAN (see docs/security.md)",
        path.display(), role.uri()
    )]
    NoRole {
        path: PathBuf,
        role: PeerRole,
        found: String,
    },
    /// The certificate is not issued by the CA.
    #[error("certificate {} is not issued by --tls-ca {}: {reason}", cert.display(), ca.display())]
    NotIssuedByCa {
        cert: PathBuf,
        ca: PathBuf,
        reason: String,
    },
    /// The key does not belong to the certificate, or rustls refused the setup.
    #[error("certificate {} and key {}: {reason}", cert.display(), key.display())]
    Config {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

/// The role URIs (`aloha:role:*`) in a DER certificate's subject alternative names; empty if it
/// has none or cannot be parsed.
pub fn roles_in(cert: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert) else {
        return Vec::new();
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) if u.starts_with("aloha:role:") => Some(u.to_string()),
            _ => None,
        })
        .collect()
}

/// Whether a DER certificate carries `role`.
pub fn has_role(cert: &[u8], role: PeerRole) -> bool {
    roles_in(cert).iter().any(|r| r == role.uri())
}

fn shown(roles: &[String]) -> String {
    if roles.is_empty() {
        "none".into()
    } else {
        roles.join(", ")
    }
}

/// The roles of a peer, for messages: `"aloha:role:worker"`, or `"none"`.
pub fn roles_shown(cert: &[u8]) -> String {
    shown(&roles_in(cert))
}

/// A daemon's mutual TLS setup: its certificate (with its role) and the cluster CA, ready to
/// serve and to dial.
#[derive(Clone)]
pub struct MutualTls {
    role: PeerRole,
    files: [PathBuf; 3],
    acceptor: TlsAcceptor,
    /// Client configs for dialling a master and a worker ([`PeerRole`] order).
    clients: [Arc<ClientConfig>; 2],
    /// Logs failed dials, shared by every dialler of this daemon.
    dial_failures: Reporter,
}

impl std::fmt::Debug for MutualTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MutualTls")
            .field("role", &self.role)
            .field("cert", &self.files[0])
            .field("ca", &self.files[2])
            .finish_non_exhaustive()
    }
}

impl PartialEq for MutualTls {
    fn eq(&self, other: &Self) -> bool {
        self.role == other.role && self.files == other.files
    }
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::File {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in it".into()));
    }
    Ok(certs)
}

impl MutualTls {
    /// Loads this daemon's certificate chain `cert` and its key `key`, and the cluster CA `ca`.
    /// Refused, with the file named, when a file is unreadable or holds no PEM item, the key
    /// does not match the certificate, the certificate lacks `role`'s URI SAN, or it is not
    /// issued by `ca`.
    pub fn load(role: PeerRole, cert: &Path, key: &Path, ca: &Path) -> Result<Self, TlsError> {
        Self::build(role, cert, key, ca, true)
    }

    /// [`MutualTls::load`] without the check that `ca` issued `cert`: a peer from another
    /// cluster, to test that it is refused.
    #[cfg(test)]
    fn load_unchecked_issuer(role: PeerRole, cert: &Path, key: &Path, ca: &Path) -> Self {
        Self::build(role, cert, key, ca, false).unwrap()
    }

    fn build(
        role: PeerRole,
        cert: &Path,
        key: &Path,
        ca: &Path,
        check_issuer: bool,
    ) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for c in read_certs("--tls-ca", ca)? {
            roots.add(c).map_err(|e| TlsError::File {
                what: "--tls-ca",
                path: ca.to_path_buf(),
                reason: format!("not a usable CA certificate: {e}"),
            })?;
        }
        let roots = Arc::new(roots);
        let chain = read_certs("certificate", cert)?;
        let private = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::File {
            what: "key",
            path: key.to_path_buf(),
            reason: format!("no PEM private key read: {e}"),
        })?;
        let roles = roles_in(&chain[0]);
        if !roles.iter().any(|r| r == role.uri()) {
            return Err(TlsError::NoRole {
                path: cert.to_path_buf(),
                role,
                found: shown(&roles),
            });
        }
        let parsed = ParsedCertificate::try_from(&chain[0]).map_err(|e| TlsError::File {
            what: "certificate",
            path: cert.to_path_buf(),
            reason: e.to_string(),
        })?;
        if check_issuer {
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &parsed,
                &roots,
                &chain[1..],
                UnixTime::now(),
                provider.signature_verification_algorithms.all,
            )
            .map_err(|e| TlsError::NotIssuedByCa {
                cert: cert.to_path_buf(),
                ca: ca.to_path_buf(),
                reason: e.to_string(),
            })?;
        }
        let config_err = |e: String| TlsError::Config {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            reason: e,
        };
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| config_err(e.to_string()))?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| config_err(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), private.clone_key())
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => {
                    config_err("the key does not belong to the certificate".into())
                }
                e => config_err(e.to_string()),
            })?;
        server.alpn_protocols = vec![b"h2".to_vec()];
        let client = |peer| {
            client_config(&roots, &provider, &chain, &private, peer)
                .map(Arc::new)
                .map_err(|e| config_err(e.to_string()))
        };
        Ok(MutualTls {
            role,
            files: [cert.to_path_buf(), key.to_path_buf(), ca.to_path_buf()],
            acceptor: TlsAcceptor::from(Arc::new(server)),
            clients: [client(PeerRole::Master)?, client(PeerRole::Worker)?],
            dial_failures: Reporter::new(|addr, n, why| {
                tracing::warn!(
                    peer = %addr, failures = n,
                    "cannot connect over mutual TLS: {why} (reported at most every 10 s per address)"
                )
            }),
        })
    }

    /// This daemon's role.
    pub fn role(&self) -> PeerRole {
        self.role
    }

    /// A connector for [`tonic::transport::Endpoint::connect_with_connector_lazy`] that dials
    /// over TCP and TLS and requires the server's certificate to carry `peer`'s role. Failed
    /// handshakes are told to `on_failed` (the address, how many since the last report, the
    /// error), at most once per [`crate::auth::REPORT_EVERY`] per address.
    pub fn connector(
        &self,
        peer: PeerRole,
        on_failed: impl Fn(&str, u64, &str) + Send + Sync + 'static,
    ) -> TlsConnect {
        self.connector_reporting(peer, Reporter::new(on_failed))
    }

    /// [`MutualTls::connector`] that logs failed handshakes (a warning, at most once per
    /// [`crate::auth::REPORT_EVERY`] per address for the whole daemon).
    pub fn dialer(&self, peer: PeerRole) -> TlsConnect {
        self.connector_reporting(peer, self.dial_failures.clone())
    }

    fn connector_reporting(&self, peer: PeerRole, reporter: Reporter) -> TlsConnect {
        let config = match peer {
            PeerRole::Master => &self.clients[0],
            PeerRole::Worker => &self.clients[1],
        };
        TlsConnect {
            connector: TlsConnector::from(config.clone()),
            reporter,
        }
    }

    /// [`MutualTls::incoming`] that logs refused handshakes (a warning, at most once per
    /// [`crate::auth::REPORT_EVERY`] per address).
    pub fn accept(
        &self,
        listener: TcpListener,
    ) -> tokio_stream::wrappers::ReceiverStream<
        std::io::Result<tokio_rustls::server::TlsStream<TcpStream>>,
    > {
        self.incoming(listener, |from, n, why| {
            tracing::warn!(
                %from, refused = n,
                "refused a gRPC connection in the TLS handshake: {why} (reported at most every 10 s per address)"
            )
        })
    }

    /// Accepts connections from `listener` and completes their TLS handshakes (a client
    /// certificate issued by the CA is required); the connections that succeed come out of the
    /// stream, for `serve_with_incoming`. Failed handshakes are told to `on_refused` (the
    /// caller, how many since the last report, the error) at most once per
    /// [`crate::auth::REPORT_EVERY`] per address. Accepting stops when the stream is dropped.
    pub fn incoming(
        &self,
        listener: TcpListener,
        on_refused: impl Fn(&str, u64, &str) + Send + Sync + 'static,
    ) -> tokio_stream::wrappers::ReceiverStream<
        std::io::Result<tokio_rustls::server::TlsStream<TcpStream>>,
    > {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let acceptor = self.acceptor.clone();
        let reporter = Reporter::new(on_refused);
        tokio::spawn(async move {
            loop {
                let (tcp, from) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of file descriptors and the like: pause rather than spin.
                            tracing::warn!("accepting a gRPC connection failed: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                    _ = tx.closed() => return,
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                let reporter = reporter.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send(Ok(tls)).await;
                        }
                        Ok(Err(e)) => reporter.report(&from.ip().to_string(), &explain(&e)),
                        Err(_) => reporter.report(
                            &from.ip().to_string(),
                            "the TLS handshake did not finish within 10 s",
                        ),
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

/// Client TLS for dialling a peer that must present `peer`'s role, with this daemon's
/// certificate for the server to check.
fn client_config(
    roots: &Arc<RootCertStore>,
    provider: &Arc<CryptoProvider>,
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    peer: PeerRole,
) -> Result<ClientConfig, rustls::Error> {
    let verifier = Arc::new(PeerVerifier {
        roots: roots.clone(),
        algs: provider.signature_verification_algorithms,
        role: peer,
    });
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        // Not dangerous here: PeerVerifier checks the chain against the cluster CA as the
        // default verifier does, and the role where that checks the host name.
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain.to_vec(), key.clone_key())?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// A lazily connected channel to `endpoint`: over mutual TLS with `tls`, plain TCP without.
pub fn connect_lazy(
    endpoint: tonic::transport::Endpoint,
    tls: Option<&TlsConnect>,
) -> tonic::transport::Channel {
    match tls {
        Some(c) => endpoint.connect_with_connector_lazy(c.clone()),
        None => endpoint.connect_lazy(),
    }
}

/// A channel to `endpoint`, connected now: over mutual TLS with `tls`, plain TCP without.
pub async fn connect(
    endpoint: tonic::transport::Endpoint,
    tls: Option<&TlsConnect>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    match tls {
        Some(c) => endpoint.connect_with_connector(c.clone()).await,
        None => endpoint.connect().await,
    }
}

/// A handshake error, with a hint for the usual causes.
fn explain(e: &std::io::Error) -> String {
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    let text = match inner {
        Some(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other))) => {
            other.0.to_string()
        }
        _ => e.to_string(),
    };
    let hint = if text.contains("InvalidContentType") || text.contains("corrupt message") {
        " (the peer does not speak TLS: is --tls-ca set on both sides?)"
    } else if text.contains("UnknownIssuer")
        || text.contains("UnknownCA")
        || text.contains("BadSignature")
    {
        " (the certificate is not issued by the cluster CA, --tls-ca)"
    } else if text.contains("CertificateRequired") || text.contains("NoCertificatesPresented") {
        " (no client certificate: is --tls-ca set on the dialling side?)"
    } else {
        ""
    };
    format!("{text}{hint}")
}

/// Checks a server's certificate like rustls' default verifier, except that the role URI SAN is
/// required in place of the host name (see the module docs).
#[derive(Debug)]
struct PeerVerifier {
    roots: Arc<RootCertStore>,
    algs: WebPkiSupportedAlgorithms,
    role: PeerRole,
}

/// A certificate without the wanted role, as a rustls error.
#[derive(Debug, thiserror::Error)]
#[error("the peer's certificate lacks the URI SAN {wanted} (it has: {found})")]
struct WrongRole {
    wanted: &'static str,
    found: String,
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        if !has_role(end_entity, self.role) {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(WrongRole {
                    wanted: self.role.uri(),
                    found: roles_shown(end_entity),
                }))),
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Dials a gRPC peer over TCP and TLS ([`MutualTls::connector`]).
#[derive(Clone)]
pub struct TlsConnect {
    connector: TlsConnector,
    reporter: Reporter,
}

/// A TLS connection to a peer, as hyper wants it.
pub type TlsIo = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;

impl tower_service::Service<Uri> for TlsConnect {
    type Response = TlsIo;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<TlsIo>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.connector.clone();
        let reporter = self.reporter.clone();
        Box::pin(async move {
            let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
            let host = uri
                .host()
                .ok_or_else(|| invalid(format!("no host in {uri}")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri
                .port_u16()
                .ok_or_else(|| invalid(format!("no port in {uri}")))?;
            let addr = format!("{host}:{port}");
            let tcp = TcpStream::connect(&addr).await?;
            let _ = tcp.set_nodelay(true);
            // Sent as SNI only; the certificate's role is checked instead of the name.
            let name = ServerName::try_from(host.clone())
                .map_err(|e| invalid(format!("bad host {host:?}: {e}")))?;
            match connector.connect(name, tcp).await {
                Ok(tls) => Ok(hyper_util::rt::TokioIo::new(tls)),
                Err(e) => {
                    let why = explain(&e);
                    reporter.report(&addr, &why);
                    Err(std::io::Error::new(
                        e.kind(),
                        format!("TLS handshake with {addr} failed: {why}"),
                    ))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};

    struct Ca {
        cert: rcgen::Certificate,
        key: KeyPair,
    }

    fn ca() -> Ca {
        static SERIAL: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        let n = SERIAL.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("test CA {n}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        Ca {
            cert: params.self_signed(&key).unwrap(),
            key,
        }
    }

    /// Writes the CA and a certificate with `roles` issued by it; returns (cert, key, ca).
    fn issue(dir: &Path, name: &str, ca: &Ca, roles: &[&str]) -> (PathBuf, PathBuf, PathBuf) {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        for r in roles {
            params
                .subject_alt_names
                .push(SanType::URI((*r).try_into().unwrap()));
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
        let paths = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
            dir.join(format!("{name}-ca.pem")),
        );
        std::fs::write(&paths.0, cert.pem()).unwrap();
        std::fs::write(&paths.1, key.serialize_pem()).unwrap();
        std::fs::write(&paths.2, ca.cert.pem()).unwrap();
        paths
    }

    #[test]
    fn a_certificate_must_carry_the_role_match_its_key_and_chain_to_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = ca();
        let (cert, key, ca_pem) = issue(dir.path(), "m", &cluster, &["aloha:role:master"]);
        let tls = MutualTls::load(PeerRole::Master, &cert, &key, &ca_pem).unwrap();
        assert_eq!(tls.role(), PeerRole::Master);

        let err = MutualTls::load(PeerRole::Worker, &cert, &key, &ca_pem)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no URI SAN aloha:role:worker"), "{err}");
        assert!(err.contains("aloha:role:master"), "{err}");

        let (other_cert, other_key, other_ca) =
            issue(dir.path(), "o", &ca(), &["aloha:role:master"]);
        let err = MutualTls::load(PeerRole::Master, &other_cert, &other_key, &ca_pem)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not issued by --tls-ca"), "{err}");
        let err = MutualTls::load(PeerRole::Master, &cert, &other_key, &ca_pem)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("o.key") && err.contains("does not belong"),
            "{err}"
        );
        let err = MutualTls::load(PeerRole::Master, &cert, &key, &dir.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--tls-ca ") && err.contains("nope"),
            "{err}"
        );
        let err = MutualTls::load(PeerRole::Master, &key, &key, &other_ca)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
    }

    #[test]
    fn roles_are_read_from_uri_sans_only() {
        let cluster = ca();
        let mut params = CertificateParams::new(vec!["aloha:role:master".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::URI("aloha:role:worker".try_into().unwrap()));
        params
            .subject_alt_names
            .push(SanType::URI("spiffe://x/y".try_into().unwrap()));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &cluster.cert, &cluster.key).unwrap();
        // The DNS name that looks like a role does not count.
        assert_eq!(roles_in(cert.der()), vec!["aloha:role:worker".to_string()]);
        assert!(has_role(cert.der(), PeerRole::Worker));
        assert!(!has_role(cert.der(), PeerRole::Master));
        assert!(roles_in(b"not a certificate").is_empty());
    }

    /// A real handshake over loopback: the server's acceptor and a client's connector.
    async fn handshake(
        server: &MutualTls,
        client: &MutualTls,
        want: PeerRole,
    ) -> Result<Vec<String>, String> {
        use tokio_stream::StreamExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let refusals = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let r = refusals.clone();
        let mut incoming = server.incoming(listener, move |_, _, why| {
            r.lock().unwrap().push(why.to_string())
        });
        let mut connect = client.connector(want, |_, _, _| {});
        let uri: Uri = format!("http://{addr}").parse().unwrap();
        let dialled = tower_service::Service::call(&mut connect, uri).await;
        // In TLS 1.3 the client is done before the server has checked its certificate: a
        // refusal then shows on the server's side only.
        let client_side = match dialled {
            Ok(_) => {
                if let Ok(accepted) =
                    tokio::time::timeout(Duration::from_secs(2), incoming.next()).await
                {
                    let accepted = accepted.unwrap().unwrap();
                    let certs = accepted.get_ref().1.peer_certificates().unwrap().to_vec();
                    return Ok(roles_in(&certs[0]));
                }
                "connected".to_string()
            }
            Err(e) => {
                // Give the server a moment to report its side.
                tokio::time::sleep(Duration::from_millis(100)).await;
                e.to_string()
            }
        };
        let server_side = refusals.lock().unwrap().join("; ");
        Err(format!("{client_side} | server: {server_side}"))
    }

    #[tokio::test]
    async fn both_sides_check_the_ca_and_the_client_checks_the_servers_role() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = ca();
        let load = |name: &str, ca: &Ca, role: PeerRole| {
            let (c, k, _) = issue(dir.path(), name, ca, &[role.uri()]);
            // Everyone trusts the cluster CA.
            let (_, _, cluster_ca) = issue(dir.path(), "trust", &cluster, &[]);
            MutualTls::load_unchecked_issuer(role, &c, &k, &cluster_ca)
        };
        let master = load("master", &cluster, PeerRole::Master);
        let worker = load("worker", &cluster, PeerRole::Worker);
        let stranger = load("stranger", &ca(), PeerRole::Worker);

        assert_eq!(
            handshake(&master, &worker, PeerRole::Master).await.unwrap(),
            vec!["aloha:role:worker".to_string()]
        );
        // A worker dialling something that is not a master: refused by the client.
        let err = handshake(&worker, &master, PeerRole::Master)
            .await
            .unwrap_err();
        assert!(err.contains("lacks the URI SAN aloha:role:master"), "{err}");
        // A client certificate from another CA: refused by the server.
        let err = handshake(&master, &stranger, PeerRole::Master)
            .await
            .unwrap_err();
        assert!(
            err.contains("server: ") && err.contains("UnknownIssuer"),
            "{err}"
        );
        assert!(err.contains("not issued by the cluster CA"), "{err}");
    }
}
