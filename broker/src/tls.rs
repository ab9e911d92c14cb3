//! TLS for the gRPC listener and the metrics endpoint (rustls): the
//! server's certificate, optional mutual TLS with a client CA, the
//! principal a client certificate maps to, and reloading changed files for
//! new connections.
//!
//! Every new connection takes the configuration current at its accept, so a
//! certificate rotated on disk is used from the next connection on, and
//! established connections keep the one they shook hands with. A reload
//! that fails (a half-written file, a key that does not match) keeps the
//! configuration in use and logs why.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;
use x509_parser::extensions::GeneralName;

use crate::config::{PrincipalSource, TlsConfig};
use crate::locks::{LockExt, RwLockExt};
use crate::shutdown::stopped;

/// The listener's TLS state: the configuration new connections get.
pub struct Tls {
    files: TlsConfig,
    /// The one application protocol served (ALPN): `h2` or `http/1.1`.
    alpn: &'static [u8],
    current: RwLock<Arc<ServerConfig>>,
    /// Modification times of the files when last loaded.
    loaded: Mutex<Vec<Option<SystemTime>>>,
}

impl Tls {
    /// Loads the files named in `config`, for a listener speaking `alpn`;
    /// None when TLS is off.
    pub fn load(config: &TlsConfig, alpn: &'static [u8]) -> Result<Option<Arc<Tls>>, String> {
        if !config.enabled() {
            return Ok(None);
        }
        let stamps = stamps(config);
        let server = build(config, alpn)?;
        Ok(Some(Arc::new(Tls {
            files: config.clone(),
            alpn,
            current: RwLock::new(Arc::new(server)),
            loaded: Mutex::new(stamps),
        })))
    }

    /// An acceptor with the configuration current now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read_locked().clone())
    }

    /// True with mutual TLS (every client presents a certificate).
    pub fn mutual(&self) -> bool {
        !self.files.client_ca_file.as_os_str().is_empty()
    }

    /// The principal `cert` (a client's leaf certificate, DER) maps to.
    pub fn principal(&self, cert: &[u8]) -> Option<String> {
        principal(cert, self.files.principal)
    }

    /// Reloads the files if any changed since they were loaded (or if
    /// `force`).
    pub fn reload(&self, force: bool) {
        let now = stamps(&self.files);
        if !force && *self.loaded.locked() == now {
            return;
        }
        match build(&self.files, self.alpn) {
            Ok(server) => {
                *self.current.write_locked() = Arc::new(server);
                *self.loaded.locked() = now;
                tracing::info!(cert = %self.files.cert_file.display(), "TLS files reloaded: new connections use them");
            }
            Err(e) => {
                // Not retried until a file changes again.
                *self.loaded.locked() = now;
                tracing::error!(error = %e, "TLS files changed but do not load; keeping the ones in use");
            }
        }
    }

    /// Checks the files every `tls.reload_interval_ms` and on SIGHUP,
    /// until `stop`.
    pub async fn run_reloader(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.files.reload_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            let force = tokio::select! {
                _ = tick.tick() => false,
                Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
                _ = stopped(&mut stop) => return,
            };
            self.reload(force);
        }
    }
}

fn stamps(c: &TlsConfig) -> Vec<Option<SystemTime>> {
    [&c.cert_file, &c.key_file, &c.client_ca_file]
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{what} {}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// The rustls configuration from the files.
fn build(c: &TlsConfig, alpn: &[u8]) -> Result<ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs(&c.cert_file, "tls.cert_file")?;
    let key =
        PrivateKeyDer::from_pem_file(&c.key_file).map_err(|e| format!("tls.key_file {}: {e}", c.key_file.display()))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = if c.client_ca_file.as_os_str().is_empty() {
        builder.with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        for ca in read_certs(&c.client_ca_file, "tls.client_ca_file")? {
            roots.add(ca).map_err(|e| format!("tls.client_ca_file {}: {e}", c.client_ca_file.display()))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| format!("tls.client_ca_file {}: {e}", c.client_ca_file.display()))?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut server = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls.cert_file {} with tls.key_file: {e}", c.cert_file.display()))?;
    // gRPC is HTTP/2 only; the metrics endpoint HTTP/1.1 only.
    server.alpn_protocols = vec![alpn.to_vec()];
    Ok(server)
}

/// The principal of a certificate by `source`; None if it has none.
pub fn principal(der: &[u8], source: PrincipalSource) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    if source == PrincipalSource::Cn {
        return cert.subject().iter_common_name().next()?.as_str().ok().map(str::to_string);
    }
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match (source, n) {
        (PrincipalSource::SanDns, GeneralName::DNSName(s))
        | (PrincipalSource::SanUri, GeneralName::URI(s))
        | (PrincipalSource::SanEmail, GeneralName::RFC822Name(s)) => Some(s.to_string()),
        _ => None,
    })
}
