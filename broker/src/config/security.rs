//! `[tls]`, `[auth]` and `[quotas]`: who may connect and call, and how fast.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{range, Config, ConfigError};

/// `[quotas]`: byte and request rates per principal, enforced by holding
/// requests back (throttling), and the connection rate per IP. 0 =
/// unlimited. `[quotas.principals.NAME]` overrides any of the three rates
/// for one principal; clients without a principal are limited per IP.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QuotasConfig {
    /// Record bytes (keys and values) per second a principal may produce.
    pub produce_bytes_per_sec: u64,
    /// Record bytes per second a principal may fetch or be pushed.
    pub fetch_bytes_per_sec: u64,
    /// Requests (and produce-stream messages) per second of a principal.
    pub requests_per_sec: u64,
    /// New connections per second from one IP address; more are closed.
    pub connections_per_sec_per_ip: u64,
    /// Per-principal overrides of the three rates.
    pub principals: BTreeMap<String, QuotaOverride>,
}

/// One principal's rates; an absent key takes the `[quotas]` default.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaOverride {
    /// See [`QuotasConfig::produce_bytes_per_sec`].
    pub produce_bytes_per_sec: Option<u64>,
    /// See [`QuotasConfig::fetch_bytes_per_sec`].
    pub fetch_bytes_per_sec: Option<u64>,
    /// See [`QuotasConfig::requests_per_sec`].
    pub requests_per_sec: Option<u64>,
}

/// `[auth]`: authentication (mutual TLS, API tokens) and authorization of
/// every RPC by the caller's principal and the ACLs.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Check every RPC: public ones (health, reflection, WhoAmI) pass,
    /// super users pass, anyone else needs an ACL that allows it.
    pub enabled: bool,
    /// Principals allowed every operation on every resource.
    pub super_users: Vec<String>,
    /// A token (at least 32 bytes) that authenticates as
    /// `bootstrap_principal`, a super user: the first credential of a new
    /// broker, to create ACLs and API tokens with. Empty = none. Best set
    /// from the environment (`STRATA_AUTH__BOOTSTRAP_TOKEN`).
    pub bootstrap_token: String,
    /// The principal `bootstrap_token` stands for.
    pub bootstrap_principal: String,
    /// Password derivations (milliseconds of CPU each) one client address
    /// may cause per second; past it, a password not proved before is
    /// refused without hashing (UNAUTHENTICATED).
    pub password_checks_per_sec: u64,
}

/// Shows `bootstrap_token` as "<set>": a debug print must not leak it.
impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("enabled", &self.enabled)
            .field("super_users", &self.super_users)
            .field("bootstrap_token", &if self.bootstrap_token.is_empty() { "" } else { "<set>" })
            .field("bootstrap_principal", &self.bootstrap_principal)
            .field("password_checks_per_sec", &self.password_checks_per_sec)
            .finish()
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: false,
            super_users: Vec::new(),
            bootstrap_token: String::new(),
            bootstrap_principal: "admin".into(),
            password_checks_per_sec: 10,
        }
    }
}

/// `[tls]`: TLS (and optionally mutual TLS) on the gRPC listener. Off while
/// `cert_file` is empty.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The server's certificate chain (PEM); empty = plaintext.
    pub cert_file: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// CA certificates (PEM) that client certificates must chain to; set =
    /// mutual TLS, every client must present one.
    pub client_ca_file: PathBuf,
    /// Where a client certificate's principal comes from: `cn` (subject
    /// common name), `san_dns`, `san_uri` or `san_email` (the first subject
    /// alternative name of that kind). A certificate without one is refused.
    pub principal: PrincipalSource,
    /// Check the files this often and use changed ones for new connections
    /// (ms; SIGHUP checks at once). Established connections keep theirs.
    pub reload_interval_ms: u64,
}

/// See [`TlsConfig::principal`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalSource {
    /// Subject common name.
    Cn,
    /// First DNS subject alternative name.
    SanDns,
    /// First URI subject alternative name (e.g. a SPIFFE id).
    SanUri,
    /// First e-mail (rfc822) subject alternative name.
    SanEmail,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            client_ca_file: PathBuf::new(),
            principal: PrincipalSource::Cn,
            reload_interval_ms: 5_000,
        }
    }
}

impl TlsConfig {
    /// True when TLS is configured.
    pub fn enabled(&self) -> bool {
        !self.cert_file.as_os_str().is_empty()
    }
}

/// The checks of these sections (and of settings that need TLS).
pub(super) fn validate(config: &Config) -> Result<(), ConfigError> {
    let tls = &config.tls;
    if tls.enabled() == tls.key_file.as_os_str().is_empty() {
        return Err(ConfigError("tls.cert_file and tls.key_file must be set together".into()));
    }
    if !tls.enabled() && !tls.client_ca_file.as_os_str().is_empty() {
        return Err(ConfigError("tls.client_ca_file needs tls.cert_file and tls.key_file".into()));
    }
    range("tls.reload_interval_ms", tls.reload_interval_ms, 100, 86_400_000)?;
    if config.server.metrics_tls && !tls.enabled() {
        return Err(ConfigError("server.metrics_tls needs tls.cert_file and tls.key_file".into()));
    }
    let auth = &config.auth;
    if !auth.bootstrap_token.is_empty() && auth.bootstrap_token.len() < 32 {
        return Err(ConfigError(format!(
            "auth.bootstrap_token is {} bytes: use at least 32 random bytes, e.g. 32 random letters and digits (or \"\" for none)",
            auth.bootstrap_token.len()
        )));
    }
    range("auth.password_checks_per_sec", auth.password_checks_per_sec, 1, 1_000_000)?;
    if auth.bootstrap_principal.is_empty() {
        return Err(ConfigError("auth.bootstrap_principal must not be empty".into()));
    }
    Ok(())
}
