//! Configuration: built-in defaults, then a TOML file, then environment
//! variables, then command-line flags, each overriding the one before.
//!
//! Environment rule: `STRATA_<SECTION>__<KEY>` (upper case, double underscore
//! between section and key) sets `<section>.<key>`, e.g.
//! `STRATA_SERVER__LISTEN=0.0.0.0:7400`. The value is read as a TOML value
//! when it is one (numbers, booleans, quoted strings) and as a plain string
//! otherwise. Unknown keys, from a file or the environment, are errors that
//! name the key. config/strata.toml documents every key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

mod security;
pub mod topic;

pub use security::{AuthConfig, PrincipalSource, QuotaOverride, QuotasConfig, TlsConfig};
pub use topic::{CleanupPolicy, TimestampType, TopicSettings, SETTINGS};

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// gRPC server.
    pub server: ServerConfig,
    /// Storage engine.
    pub storage: StorageConfig,
    /// Defaults for topics (each can be overridden per topic).
    pub topics: TopicDefaults,
    /// Background retention and compaction.
    pub cleaner: CleanerConfig,
    /// Consumer groups.
    pub groups: GroupsConfig,
    /// Logs.
    pub logging: LoggingConfig,
    /// TLS on the gRPC listener.
    pub tls: TlsConfig,
    /// Authorization.
    pub auth: AuthConfig,
    /// Rate quotas per principal.
    pub quotas: QuotasConfig,
}

/// `[groups]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GroupsConfig {
    /// Session timeout for members that do not ask for one (ms).
    pub session_timeout_ms: u64,
    /// Smallest session timeout a member may ask for (ms).
    pub min_session_timeout_ms: u64,
    /// Largest session timeout a member may ask for (ms).
    pub max_session_timeout_ms: u64,
    /// Heartbeat interval the coordinator tells members (ms).
    pub heartbeat_interval_ms: u64,
    /// `uniform` (balanced, sticky) or `range`.
    pub assignor: AssignorKind,
}

/// Which assignor a group uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AssignorKind {
    /// Balanced and sticky: moves as few partitions as possible.
    Uniform,
    /// Kafka's range assignor: contiguous ranges per topic, by member id.
    Range,
}

impl AssignorKind {
    /// Name as in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            AssignorKind::Uniform => "uniform",
            AssignorKind::Range => "range",
        }
    }
}

impl Default for GroupsConfig {
    fn default() -> Self {
        GroupsConfig {
            session_timeout_ms: 45_000,
            min_session_timeout_ms: 1_000,
            max_session_timeout_ms: 300_000,
            heartbeat_interval_ms: 3_000,
            assignor: AssignorKind::Uniform,
        }
    }
}

/// `[cleaner]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CleanerConfig {
    /// How often retention looks for segments to delete (ms).
    pub retention_check_interval_ms: u64,
    /// How often the compactor looks for compacted topics to clean (ms).
    pub compaction_interval_ms: u64,
    /// Most bytes per second the compactor reads plus writes.
    pub io_bytes_per_sec: u64,
    /// How often the scrubber verifies every sealed segment (ms; 0 = off).
    pub scrub_interval_ms: u64,
    /// Most bytes per second the scrubber reads.
    pub scrub_bytes_per_sec: u64,
}

impl Default for CleanerConfig {
    fn default() -> Self {
        CleanerConfig {
            retention_check_interval_ms: 300_000,
            compaction_interval_ms: 15_000,
            io_bytes_per_sec: 100 << 20,
            scrub_interval_ms: 3_600_000,
            scrub_bytes_per_sec: 32 << 20,
        }
    }
}

/// `[server]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: String,
    /// Largest gRPC message accepted (a produce request, for instance).
    pub max_request_bytes: u64,
    /// Largest Groups or Admin request message: they decode to many times
    /// their size (small entries), so they have a smaller bound.
    pub max_control_request_bytes: u64,
    /// Record bytes per fetch when the request leaves `max_bytes` at 0.
    pub fetch_default_max_bytes: u64,
    /// Longest long-poll wait a fetch may ask for.
    pub fetch_max_wait_ms: u64,
    /// How long a stop waits for in-flight requests before closing anyway.
    pub shutdown_grace_ms: u64,
    /// Most concurrent HTTP/2 streams (requests) per connection; more wait.
    pub max_concurrent_streams: u32,
    /// Most open client connections. At the limit the connection idle
    /// longest is closed to make room; if every one has a request open, the
    /// new one is closed at once.
    pub max_connections: u32,
    /// Most open connections from one client IP address (same rule; at most
    /// `max_connections` in effect).
    pub max_connections_per_ip: u32,
    /// Most long-lived streams (Subscribe, health Watch) open at once from
    /// one client address (IPv6: one /64).
    pub max_streams_per_ip: u32,
    /// Most long-lived streams open at once for one authenticated principal.
    pub max_streams_per_principal: u32,
    /// A connection that has not sent the HTTP/2 preface and SETTINGS within
    /// this long is closed (ms).
    pub handshake_timeout_ms: u64,
    /// A connection with no open request for this long is closed (ms).
    pub idle_timeout_ms: u64,
    /// Bytes of request messages being received and decoded at once, over
    /// all connections; a request past it waits (its client is not read).
    pub request_memory_bytes: u64,
    /// Bytes of fetch replies being built and of replies queued for
    /// subscribers, over all requests; past it, reads wait.
    pub reply_memory_bytes: u64,
    /// A subscriber that takes no reply for this long is ended with
    /// RESOURCE_EXHAUSTED and what was queued for it is dropped (ms).
    pub subscribe_stall_timeout_ms: u64,
    /// A request still unanswered after this long is cancelled (ms; streams
    /// count until their first reply).
    pub request_timeout_ms: u64,
    /// Most records in one fetch reply (whole batches; at least one batch).
    pub fetch_max_records: u32,
    /// Replies a push subscription may have queued for a slow client; past
    /// that the broker waits for the client (bounded memory per subscription).
    pub subscribe_buffer: u32,
    /// Prometheus metrics endpoint (`http://ADDR/metrics`); empty = off.
    pub metrics_listen: String,
    /// Serve the metrics endpoint over TLS (`https://ADDR/metrics`) with the
    /// `[tls]` certificate, and with `tls.client_ca_file` only to clients
    /// with a certificate from that CA.
    pub metrics_tls: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:7400".into(),
            max_request_bytes: 32 << 20,
            max_control_request_bytes: 1 << 20,
            fetch_default_max_bytes: 4 << 20,
            fetch_max_wait_ms: 30_000,
            shutdown_grace_ms: 10_000,
            max_concurrent_streams: 256,
            max_connections: 1024,
            max_connections_per_ip: 256,
            max_streams_per_ip: 1024,
            max_streams_per_principal: 4096,
            handshake_timeout_ms: 10_000,
            idle_timeout_ms: 600_000,
            request_memory_bytes: 256 << 20,
            reply_memory_bytes: 256 << 20,
            subscribe_stall_timeout_ms: 60_000,
            request_timeout_ms: 60_000,
            fetch_max_records: 100_000,
            subscribe_buffer: 4,
            metrics_listen: "127.0.0.1:9400".into(),
            metrics_tls: false,
        }
    }
}

/// Durability a producer waits for.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AckLevel {
    /// Appended; no disk guarantee.
    None,
    /// Written to the OS (survives a broker crash, not a machine crash).
    Written,
    /// fsynced.
    Durable,
}

/// `[storage]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Where topics live.
    pub data_dir: PathBuf,
    /// Acks used when a produce request does not say.
    pub default_acks: AckLevel,
    /// fsync unflushed data at least this often (ms).
    pub flush_interval_ms: u64,
    /// Also fsync after this many unflushed records per partition (0 = off).
    pub flush_records: u64,
    /// Bytes between offset index entries.
    pub index_interval_bytes: u64,
    /// Preallocated size of an active segment's offset index.
    pub index_max_bytes: u64,
    /// Read and write segment data with direct I/O (O_DIRECT), bypassing the
    /// page cache, where the filesystem supports it. Off by default: readers
    /// of recent data are served from the page cache (docs/operations.md).
    pub direct_io: bool,
    /// What start-up does with damage that is not a torn tail.
    pub recovery: RecoveryMode,
    /// An idempotent producer's de-duplication state on a partition is
    /// dropped after it appended nothing there for this long (ms).
    pub producer_expiry_ms: u64,
    /// Most keys a partition indexes for per-key conditional appends
    /// (`expected_key`); past it they are refused on that partition.
    pub max_conditional_keys: u64,
}

/// What start-up does with damage in a partition's last segment that is
/// not a torn tail (valid batches after it, or a newer format version).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RecoveryMode {
    /// Refuse to start, naming the file and position; change nothing.
    Strict,
    /// Cut the segment at the damage (losing what follows) and start.
    Truncate,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: PathBuf::from("./data"),
            default_acks: AckLevel::Durable,
            flush_interval_ms: 1000,
            flush_records: 0,
            index_interval_bytes: 4096,
            index_max_bytes: 10 << 20,
            direct_io: false,
            recovery: RecoveryMode::Strict,
            producer_expiry_ms: 86_400_000,
            max_conditional_keys: 1_000_000,
        }
    }
}

/// `[topics]`: broker-wide defaults for topic settings, under the names of
/// [`TopicSettings`]' fields (`segment_bytes` for `segment.bytes`), plus the
/// partition counts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct TopicDefaults {
    /// Partitions of a topic created without a count.
    pub partitions: u32,
    /// Most partitions one topic may have.
    pub max_partitions: u32,
    /// Every topic setting's default (`config/topic.rs` defines them).
    #[serde(flatten)]
    pub settings: TopicSettings,
}

impl Default for TopicDefaults {
    fn default() -> Self {
        TopicDefaults { partitions: 1, max_partitions: 10_000, settings: TopicSettings::default() }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people.
    Human,
    /// One JSON object per line.
    Json,
}

/// `[logging]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// Filter, in tracing-subscriber's EnvFilter syntax (e.g. "info,strata=debug").
    pub level: String,
    /// `human` or `json`.
    pub format: LogFormat,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig { level: "info".into(), format: LogFormat::Human }
    }
}

/// A configuration problem, naming the key and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Prefix of configuration environment variables.
pub const ENV_PREFIX: &str = "STRATA_";

impl Config {
    /// Loads the configuration: defaults, then `file` (if any), then the
    /// given environment variables (`STRATA_<SECTION>__<KEY>`).
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
                text.parse::<toml::Table>().map_err(|e| ConfigError(format!("{}: {e}", path.display())))?
            }
            None => toml::Table::new(),
        };
        let source = file.map_or("defaults".to_string(), |p| p.display().to_string());
        check_known_keys(&table, &source)?;
        // Where each key was set, to name it when its value is wrong.
        let mut sources: Vec<(String, String, String)> = Vec::new();
        for (section, keys) in table.iter() {
            for key in keys.as_table().map(|t| t.keys().cloned().collect::<Vec<_>>()).unwrap_or_default() {
                sources.push((section.clone(), key, format!("config file {source}")));
            }
        }
        for (name, raw) in env {
            let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let Some((section, key)) = rest.split_once("__") else {
                if let Some(meant) = one_underscore_meaning(rest) {
                    return Err(ConfigError(format!(
                        "environment variable {name} is not read: did you mean {ENV_PREFIX}{meant}? \
                         (section and key are separated by two underscores)"
                    )));
                }
                continue;
            };
            let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
            let value = parse_env_value(&raw);
            let mut single = toml::Table::new();
            single.insert(section.clone(), toml::Value::Table(toml::Table::from_iter([(key.clone(), value.clone())])));
            check_known_keys(&single, &format!("environment variable {name}"))?;
            table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| ConfigError(format!("environment variable {name}: section is not a table")))?
                .insert(key.clone(), value);
            sources.retain(|(s, k, _)| (s, k) != (&section, &key));
            sources.push((section, key, format!("environment variable {name}")));
        }
        let config: Config = toml::Value::Table(table.clone()).try_into().map_err(|e: toml::de::Error| {
            // Name the key: the first that fails on its own.
            for (section, key, from) in &sources {
                let Some(value) = table.get(section).and_then(|t| t.get(key)) else { continue };
                let single = toml::Table::from_iter([(
                    section.clone(),
                    toml::Value::Table(toml::Table::from_iter([(key.clone(), value.clone())])),
                )]);
                if let Err(e) = toml::Value::Table(single).try_into::<Config>() {
                    return ConfigError(format!("{from}: {section}.{key} = {value}: {}", e.message()));
                }
            }
            ConfigError(format!("{source}: {}", e.message()))
        })?;
        config.validate().map_err(|e| {
            // Say where the keys the error names were set.
            let from: Vec<&str> = sources
                .iter()
                .filter(|(section, key, _)| names_key(&e.0, &format!("{section}.{key}")))
                .map(|(_, _, from)| from.as_str())
                .collect();
            match from.is_empty() {
                true => e,
                false => ConfigError(format!("{}: {}", from.join(", "), e.0)),
            }
        })?;
        Ok(config)
    }

    /// Checks every value against its valid range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.listen.parse::<SocketAddr>().map_err(|e| {
            ConfigError(format!("server.listen = {:?} is not an address like 127.0.0.1:7400: {e}", self.server.listen))
        })?;
        range("server.max_request_bytes", self.server.max_request_bytes, 1 << 16, 1 << 30)?;
        range(
            "server.max_control_request_bytes",
            self.server.max_control_request_bytes,
            1 << 16,
            self.server.max_request_bytes,
        )?;
        security::validate(self)?;
        range("server.fetch_default_max_bytes", self.server.fetch_default_max_bytes, 1, self.server.max_request_bytes)?;
        range("server.fetch_max_wait_ms", self.server.fetch_max_wait_ms, 0, 3_600_000)?;
        range("server.shutdown_grace_ms", self.server.shutdown_grace_ms, 0, 3_600_000)?;
        range("server.max_concurrent_streams", u64::from(self.server.max_concurrent_streams), 1, 1 << 20)?;
        range("server.max_connections", u64::from(self.server.max_connections), 1, 1 << 20)?;
        range("server.max_connections_per_ip", u64::from(self.server.max_connections_per_ip), 1, 1 << 20)?;
        range("server.max_streams_per_ip", u64::from(self.server.max_streams_per_ip), 1, 1 << 20)?;
        range("server.max_streams_per_principal", u64::from(self.server.max_streams_per_principal), 1, 1 << 20)?;
        range("server.handshake_timeout_ms", self.server.handshake_timeout_ms, 100, 3_600_000)?;
        range("server.idle_timeout_ms", self.server.idle_timeout_ms, 1_000, 86_400_000)?;
        let max_request = self.server.max_request_bytes;
        range("server.request_memory_bytes", self.server.request_memory_bytes, max_request, 1 << 40)?;
        range("server.reply_memory_bytes", self.server.reply_memory_bytes, max_request, 1 << 40)?;
        range("server.subscribe_stall_timeout_ms", self.server.subscribe_stall_timeout_ms, 100, 86_400_000)?;
        range("server.request_timeout_ms", self.server.request_timeout_ms, 1, 86_400_000)?;
        if self.server.fetch_max_wait_ms >= self.server.request_timeout_ms {
            return Err(ConfigError(format!(
                "server.fetch_max_wait_ms = {} must be below server.request_timeout_ms = {}: a long poll would be cancelled before it could answer",
                self.server.fetch_max_wait_ms, self.server.request_timeout_ms
            )));
        }
        range("server.fetch_max_records", u64::from(self.server.fetch_max_records), 1, u64::from(u32::MAX))?;
        range("server.subscribe_buffer", u64::from(self.server.subscribe_buffer), 1, 1024)?;
        if !self.server.metrics_listen.is_empty() {
            self.server.metrics_listen.parse::<SocketAddr>().map_err(|e| {
                ConfigError(format!(
                    "server.metrics_listen = {:?} is not an address (or \"\" for off): {e}",
                    self.server.metrics_listen
                ))
            })?;
        }
        range("storage.flush_interval_ms", self.storage.flush_interval_ms, 1, 3_600_000)?;
        range("storage.producer_expiry_ms", self.storage.producer_expiry_ms, 1_000, 365 * 86_400_000)?;
        range("storage.max_conditional_keys", self.storage.max_conditional_keys, 1, 1 << 32)?;
        range("cleaner.scrub_interval_ms", self.cleaner.scrub_interval_ms, 0, 7 * 86_400_000)?;
        range("cleaner.scrub_bytes_per_sec", self.cleaner.scrub_bytes_per_sec, 1 << 20, 1 << 40)?;
        range("storage.index_interval_bytes", self.storage.index_interval_bytes, 1, 1 << 30)?;
        range("storage.index_max_bytes", self.storage.index_max_bytes, 4096, 1 << 30)?;
        if !self.storage.index_max_bytes.is_multiple_of(crate::log::format::INDEX_ENTRY_LEN as u64) {
            return Err(ConfigError(format!(
                "storage.index_max_bytes = {} must be a multiple of {} (the size of an index entry)",
                self.storage.index_max_bytes,
                crate::log::format::INDEX_ENTRY_LEN
            )));
        }
        range("cleaner.io_bytes_per_sec", self.cleaner.io_bytes_per_sec, 1 << 20, 1 << 40)?;
        range("topics.partitions", u64::from(self.topics.partitions), 1, u64::from(self.topics.max_partitions))?;
        range("topics.max_partitions", u64::from(self.topics.max_partitions), 1, 100_000)?;
        self.topics.settings.validate_as_defaults().map_err(|e| ConfigError(e.to_string()))?;
        if self.topics.settings.max_message_bytes + 1024 > self.server.max_request_bytes {
            return Err(ConfigError(format!(
                "topics.max_message_bytes = {} must be at least 1 KiB below server.max_request_bytes = {}",
                self.topics.settings.max_message_bytes, self.server.max_request_bytes
            )));
        }
        Ok(())
    }

    /// The configuration as TOML, for the start-up log line, with secrets
    /// (`auth.bootstrap_token`) shown as "<set>".
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        if !shown.auth.bootstrap_token.is_empty() {
            shown.auth.bootstrap_token = "<set>".into();
        }
        toml::to_string(&shown).unwrap_or_else(|e| format!("<unprintable: {e}>"))
    }
}

/// `key = v` must lie in `min..=max`.
fn range(key: &str, v: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if v < min || v > max {
        return Err(ConfigError(format!("{key} = {v} is out of range: must be between {min} and {max}")));
    }
    Ok(())
}

/// Whether `message` names `key` (as a whole dotted name).
fn names_key(message: &str, key: &str) -> bool {
    message.match_indices(key).any(|(i, _)| {
        let before = message[..i].chars().next_back();
        let after = message[i + key.len()..].chars().next();
        let part = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        !part(before) && !part(after)
    })
}

fn parse_env_value(raw: &str) -> toml::Value {
    // Parse as the right-hand side of a TOML key; fall back to a string.
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

/// For a `STRATA_` variable without the double underscore (`SERVER_LISTEN`),
/// the variable it most likely meant (`SERVER__LISTEN`), if any.
fn one_underscore_meaning(rest: &str) -> Option<String> {
    let known = toml::Table::try_from(Config::default()).expect("defaults serialize");
    let lower = rest.to_ascii_lowercase();
    known.iter().find_map(|(section, keys)| {
        let key = lower.strip_prefix(section.as_str())?.strip_prefix('_')?;
        keys.as_table()?
            .contains_key(key)
            .then(|| format!("{}__{}", section.to_ascii_uppercase(), key.to_ascii_uppercase()))
    })
}

/// Rejects keys the configuration does not have, naming them and the valid ones.
fn check_known_keys(table: &toml::Table, source: &str) -> Result<(), ConfigError> {
    let known = toml::Table::try_from(Config::default()).expect("defaults serialize");
    for (section, value) in table {
        let Some(known_section) = known.get(section).and_then(|v| v.as_table()) else {
            let sections: Vec<_> = known.keys().map(String::as_str).collect();
            return Err(ConfigError(format!(
                "{source}: unknown config section [{section}]; sections are {}",
                sections.join(", ")
            )));
        };
        let Some(keys) = value.as_table() else {
            return Err(ConfigError(format!("{source}: [{section}] must be a table")));
        };
        for key in keys.keys() {
            if !known_section.contains_key(key) {
                let valid: Vec<_> = known_section.keys().map(String::as_str).collect();
                return Err(ConfigError(format!(
                    "{source}: unknown config key {section}.{key}; keys in [{section}] are {}",
                    valid.join(", ")
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_need_no_file() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.storage.default_acks, AckLevel::Durable);
    }

    #[test]
    fn the_shipped_file_matches_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/strata.toml");
        let c = Config::load(Some(&path), env(&[])).unwrap();
        assert_eq!(c, Config::default(), "config/strata.toml must document the built-in defaults");
    }

    #[test]
    fn file_then_env_override() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(&path, "[server]\nlisten = \"0.0.0.0:1\"\n[storage]\nflush_records = 5\n").unwrap();
        let c = Config::load(
            Some(&path),
            env(&[("STRATA_SERVER__LISTEN", "127.0.0.1:9"), ("STRATA_ADDR", "ignored"), ("HOME", "/x")]),
        )
        .unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:9");
        assert_eq!(c.storage.flush_records, 5);
        let c = Config::load(Some(&path), env(&[("STRATA_STORAGE__DEFAULT_ACKS", "written")])).unwrap();
        assert_eq!(c.storage.default_acks, AckLevel::Written);
    }

    #[test]
    fn unknown_keys_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(&path, "[storage]\nsegmnt_bytes = 5\n").unwrap();
        let e = Config::load(Some(&path), env(&[])).unwrap_err();
        assert!(e.0.contains("storage.segmnt_bytes"), "{e}");
        std::fs::write(&path, "[nope]\n").unwrap();
        assert!(Config::load(Some(&path), env(&[])).unwrap_err().0.contains("[nope]"));
        let e = Config::load(None, env(&[("STRATA_SERVER__LISTN", "x")])).unwrap_err();
        assert!(e.0.contains("STRATA_SERVER__LISTN") && e.0.contains("server.listn"), "{e}");
    }

    #[test]
    fn invalid_values_name_the_key_and_range() {
        let e = Config::load(None, env(&[("STRATA_TOPICS__SEGMENT_BYTES", "10")])).unwrap_err();
        assert!(e.0.contains("segment.bytes") || e.0.contains("segment_bytes"), "{e}");
        let e = Config::load(None, env(&[("STRATA_SERVER__LISTEN", "nowhere")])).unwrap_err();
        assert!(e.0.contains("server.listen"), "{e}");
        let e = Config::load(None, env(&[("STRATA_STORAGE__DEFAULT_ACKS", "maybe")])).unwrap_err();
        assert!(e.0.contains("maybe") || e.0.contains("variant"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key_and_where_it_was_set() {
        let e = Config::load(None, env(&[("STRATA_STORAGE__DEFAULT_ACKS", "maybe")])).unwrap_err();
        assert!(e.0.contains("STRATA_STORAGE__DEFAULT_ACKS") && e.0.contains("storage.default_acks"), "{e}");
        let e = Config::load(None, env(&[("STRATA_GROUPS__ASSIGNOR", "roundrobin")])).unwrap_err();
        assert!(e.0.contains("STRATA_GROUPS__ASSIGNOR") && e.0.contains("groups.assignor"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(&path, "[logging]\nformat = \"xml\"\n").unwrap();
        let e = Config::load(Some(&path), env(&[])).unwrap_err();
        assert!(e.0.contains(&path.display().to_string()) && e.0.contains("logging.format"), "{e}");
        let e = Config::load(None, env(&[("STRATA_SERVER_LISTEN", "0.0.0.0:1")])).unwrap_err();
        assert!(e.0.contains("STRATA_SERVER__LISTEN"), "{e}");
        // Client-side variables stay valid.
        Config::load(None, env(&[("STRATA_ADDR", "127.0.0.1:1"), ("STRATA_FAILPOINTS", "")])).unwrap();
        for (var, value, needle) in [
            ("STRATA_STORAGE__INDEX_MAX_BYTES", "4097", "multiple of 8"),
            ("STRATA_CLEANER__IO_BYTES_PER_SEC", "1", "cleaner.io_bytes_per_sec"),
            ("STRATA_SERVER__FETCH_MAX_WAIT_MS", "60000", "server.request_timeout_ms"),
            ("STRATA_SERVER__REQUEST_MEMORY_BYTES", "1024", "server.request_memory_bytes"),
        ] {
            let e = Config::load(None, env(&[(var, value)])).unwrap_err();
            assert!(e.0.contains(needle) && e.0.contains(var) && e.0.contains(value), "{var}={value}: {e}");
        }
        // A range error names the file it came from.
        std::fs::write(&path, "[server]\nidle_timeout_ms = 5\n").unwrap();
        let e = Config::load(Some(&path), env(&[])).unwrap_err();
        assert!(e.0.contains(&path.display().to_string()) && e.0.contains("server.idle_timeout_ms = 5"), "{e}");
    }
}
