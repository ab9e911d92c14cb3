//! Per-topic settings: Kafka-style keys, each defined once in the table of
//! [`topic_settings!`] below — its key, its `[topics]` TOML name, its type,
//! default, valid range and doc. Validation (`set`), `DescribeTopic`
//! (`SETTINGS`, `get`), the broker-wide defaults in `[topics]` and the docs
//! test (every key documented in README.md and config/strata.toml) all come
//! from that one table.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::log::format::MAX_SEGMENT_BYTES;

const MIN_SEGMENT_BYTES: u64 = 4096;
const MAX_MESSAGE_BYTES_LIMIT: u64 = 64 << 20;
const I64_MAX: u64 = i64::MAX as u64;
/// Longest principal name a setting takes.
pub const MAX_PRINCIPAL_BYTES: usize = 255;

/// What values a setting accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Valid {
    /// A whole number in `min..=max`.
    Between(u64, u64),
    /// -1 (no limit) or a whole number in `0..=i64::MAX`.
    UnlimitedOrPositive,
    /// One of these words.
    OneOf(&'static [&'static str]),
    /// A principal's name, or empty for none.
    Principal,
}

impl fmt::Display for Valid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Valid::Between(min, max) => write!(f, "between {min} and {max}"),
            Valid::UnlimitedOrPositive => write!(f, "-1 (unlimited) or between 0 and {}", i64::MAX),
            Valid::OneOf([one]) => f.write_str(one),
            Valid::OneOf([init @ .., last]) => write!(f, "{} or {last}", init.join(", ")),
            Valid::OneOf([]) => f.write_str("nothing"),
            Valid::Principal => {
                write!(
                    f,
                    "a principal's name of at most {MAX_PRINCIPAL_BYTES} bytes without control characters, or empty"
                )
            }
        }
    }
}

/// One topic setting, as the table defines it.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The topic key (`segment.bytes`).
    pub key: &'static str,
    /// Its name in the `[topics]` section of the broker config (`segment_bytes`).
    pub toml_key: &'static str,
    /// What it does.
    pub doc: &'static str,
    /// What values it accepts.
    pub valid: Valid,
}

/// A type a setting can have: parsed from text within its [`Valid`] range.
trait SettingValue: Sized {
    /// Parses `text`; the error says what is valid.
    fn parse_setting(text: &str, valid: Valid) -> std::result::Result<Self, String>;
    /// The value as `DescribeTopic` shows it (parses back to itself).
    fn show(&self) -> String;
}

impl SettingValue for u64 {
    fn parse_setting(text: &str, valid: Valid) -> std::result::Result<Self, String> {
        let Valid::Between(min, max) = valid else { unreachable!("u64 settings are ranges") };
        let v: u64 = text.trim().parse().map_err(|_| format!("'{text}' is not a whole number; must be {valid}"))?;
        if v < min || v > max {
            return Err(format!("{v} must be {valid}"));
        }
        Ok(v)
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl SettingValue for i64 {
    fn parse_setting(text: &str, valid: Valid) -> std::result::Result<Self, String> {
        match text.trim() {
            "-1" => Ok(-1),
            t => match t.parse::<u64>() {
                Ok(v) if v <= I64_MAX => Ok(v as i64),
                _ => Err(format!("'{text}' must be {valid}")),
            },
        }
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl SettingValue for TimestampType {
    fn parse_setting(text: &str, valid: Valid) -> std::result::Result<Self, String> {
        match text {
            "CreateTime" => Ok(TimestampType::CreateTime),
            "LogAppendTime" => Ok(TimestampType::LogAppendTime),
            _ => Err(format!("'{text}' must be {valid}")),
        }
    }
    fn show(&self) -> String {
        format!("{self:?}")
    }
}

/// The one principal that may produce to a topic (`writer.principal`), if
/// the topic declares one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Writer(pub String);

impl Writer {
    /// The declared writer, None when the topic declares none.
    pub fn declared(&self) -> Option<&str> {
        (!self.0.is_empty()).then_some(self.0.as_str())
    }
}

impl SettingValue for Writer {
    fn parse_setting(text: &str, valid: Valid) -> std::result::Result<Self, String> {
        if text.len() > MAX_PRINCIPAL_BYTES || text.chars().any(char::is_control) {
            return Err(format!("'{}' must be {valid}", text.escape_debug()));
        }
        Ok(Writer(text.to_string()))
    }
    fn show(&self) -> String {
        self.0.clone()
    }
}

impl SettingValue for CleanupPolicy {
    fn parse_setting(text: &str, valid: Valid) -> std::result::Result<Self, String> {
        CleanupPolicy::parse(text).ok_or_else(|| format!("'{text}' must be {valid}"))
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

/// Defines [`TopicSettings`], its defaults, [`SETTINGS`] and the
/// text accessors from one row per setting.
macro_rules! topic_settings {
    ($( #[doc = $doc:literal] $field:ident: $ty:ty = $default:expr, $key:literal, $valid:expr; )*) => {
        /// A topic's effective settings. In the broker config they are the
        /// `[topics]` defaults, under the field names.
        #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(default)]
        pub struct TopicSettings {
            $( #[doc = $doc] pub $field: $ty, )*
        }

        impl Default for TopicSettings {
            fn default() -> Self {
                TopicSettings { $( $field: $default, )* }
            }
        }

        /// Every topic setting, sorted by key.
        pub const SETTINGS: &[Setting] = &[
            $( Setting { key: $key, toml_key: stringify!($field), doc: $doc.trim_ascii(), valid: $valid }, )*
        ];

        impl TopicSettings {
            /// Applies one `key = value`, validating it.
            pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
                match key {
                    $( $key => {
                        self.$field = SettingValue::parse_setting(value, $valid)
                            .map_err(|reason| Error::InvalidConfig { key: key.into(), reason })?
                    } )*
                    _ => return Err(unknown_key(key)),
                }
                Ok(())
            }

            /// The value of `key` as text (None for an unknown key).
            pub fn get(&self, key: &str) -> Option<String> {
                match key {
                    $( $key => Some(SettingValue::show(&self.$field)), )*
                    _ => None,
                }
            }
        }
    };
}

topic_settings! {
    /// `cleanup.policy`: `delete` (retention), `compact` (latest record per key), or `compact,delete`.
    cleanup_policy: CleanupPolicy = CleanupPolicy::DELETE, "cleanup.policy",
        Valid::OneOf(&["delete", "compact", "compact,delete"]);
    /// `delete.retention.ms`: how long a tombstone stays after its timestamp on a compacted topic.
    delete_retention_ms: u64 = 24 * 3600 * 1000, "delete.retention.ms", Valid::Between(0, I64_MAX);
    /// `max.message.bytes`: the largest record, as stored.
    max_message_bytes: u64 = 1 << 20, "max.message.bytes", Valid::Between(1, MAX_MESSAGE_BYTES_LIMIT);
    /// `message.timestamp.after.max.ms`: how far ahead of the broker's clock a record's timestamp may be (CreateTime); one further ahead is refused, since time retention could never delete what precedes it.
    message_timestamp_after_max_ms: u64 = 3600 * 1000, "message.timestamp.after.max.ms", Valid::Between(0, I64_MAX);
    /// `min.compaction.lag.ms`: records younger than this are never compacted away.
    min_compaction_lag_ms: u64 = 0, "min.compaction.lag.ms", Valid::Between(0, I64_MAX);
    /// `retention.bytes`: per-partition size budget; the oldest closed segments go first (-1 = unlimited).
    retention_bytes: i64 = -1, "retention.bytes", Valid::UnlimitedOrPositive;
    /// `retention.ms`: delete closed segments whose newest record is older (-1 = keep forever).
    retention_ms: i64 = -1, "retention.ms", Valid::UnlimitedOrPositive;
    /// `segment.bytes`: roll the active segment before it exceeds this size.
    segment_bytes: u64 = 1 << 30, "segment.bytes", Valid::Between(MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES);
    /// `segment.ms`: roll the active segment once it is this old.
    segment_ms: u64 = 7 * 24 * 3600 * 1000, "segment.ms", Valid::Between(1, I64_MAX);
    /// `timestamp.type`: `CreateTime` (the producer's) or `LogAppendTime` (the broker's).
    timestamp_type: TimestampType = TimestampType::CreateTime, "timestamp.type",
        Valid::OneOf(&["CreateTime", "LogAppendTime"]);
    /// `writer.principal`: the one principal that may produce to the topic, whatever else allows (empty = no declared writer).
    writer_principal: Writer = Writer::default(), "writer.principal", Valid::Principal;
}

fn unknown_key(key: &str) -> Error {
    let keys: Vec<_> = SETTINGS.iter().map(|s| s.key).collect();
    Error::InvalidConfig {
        key: key.into(),
        reason: format!("unknown topic config key; valid keys are {}", keys.join(", ")),
    }
}

/// True if `key` is a topic setting.
pub fn is_setting(key: &str) -> bool {
    SETTINGS.iter().any(|s| s.key == key)
}

/// Checks that every key is a topic setting.
pub fn check_keys<'a>(keys: impl IntoIterator<Item = &'a String>) -> Result<()> {
    match keys.into_iter().find(|k| !is_setting(k)) {
        Some(k) => Err(unknown_key(k)),
        None => Ok(()),
    }
}

/// Whose clock stamps records.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum TimestampType {
    /// The producer's timestamp (or append time if it sent none).
    CreateTime,
    /// Always the broker's append time.
    LogAppendTime,
}

/// What happens to old records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupPolicy {
    /// Retention deletes old segments.
    pub delete: bool,
    /// The cleaner keeps only the latest record per key.
    pub compact: bool,
}

impl CleanupPolicy {
    /// `delete`, the default.
    pub const DELETE: CleanupPolicy = CleanupPolicy { delete: true, compact: false };

    /// Parses `delete`, `compact`, `compact,delete` (either order).
    pub fn parse(s: &str) -> Option<CleanupPolicy> {
        let mut p = CleanupPolicy { delete: false, compact: false };
        for part in s.split(',').map(str::trim) {
            match part {
                "delete" if !p.delete => p.delete = true,
                "compact" if !p.compact => p.compact = true,
                _ => return None,
            }
        }
        Some(p)
    }
}

impl fmt::Display for CleanupPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match (self.compact, self.delete) {
            (true, true) => "compact,delete",
            (true, false) => "compact",
            _ => "delete",
        })
    }
}

impl Serialize for CleanupPolicy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CleanupPolicy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CleanupPolicy::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("'{s}' must be delete, compact or compact,delete")))
    }
}

impl TopicSettings {
    /// Broker defaults with the topic's overrides applied.
    pub fn resolve(defaults: &TopicSettings, overrides: &BTreeMap<String, String>) -> Result<TopicSettings> {
        let mut s = defaults.clone();
        for (k, v) in overrides {
            s.set(k, v)?;
        }
        Ok(s)
    }

    /// Checks broker-wide defaults with the same rules as per-topic values,
    /// naming the `[topics]` key.
    pub fn validate_as_defaults(&self) -> Result<()> {
        let mut check = self.clone();
        for s in SETTINGS {
            let value = self.get(s.key).unwrap_or_default();
            check.set(s.key, &value).map_err(|e| match e {
                Error::InvalidConfig { reason, .. } => {
                    Error::InvalidConfig { key: format!("topics.{} ({})", s.toml_key, s.key), reason }
                }
                e => e,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEGMENT_BYTES: &str = "segment.bytes";
    const TIMESTAMP_TYPE: &str = "timestamp.type";
    const RETENTION_MS: &str = "retention.ms";
    const CLEANUP_POLICY: &str = "cleanup.policy";

    #[test]
    fn overrides_apply_and_invalid_values_name_the_key() {
        let d = TopicSettings::default();
        let o = BTreeMap::from([(SEGMENT_BYTES.to_string(), "8192".to_string())]);
        let s = TopicSettings::resolve(&d, &o).unwrap();
        assert_eq!(s.segment_bytes, 8192);
        assert_eq!(s.max_message_bytes, d.max_message_bytes);
        for (k, v, needle) in [
            (SEGMENT_BYTES, "12", "between 4096"),
            (SEGMENT_BYTES, "abc", "whole number"),
            (TIMESTAMP_TYPE, "Now", "CreateTime or LogAppendTime"),
            (RETENTION_MS, "-2", "-1 (unlimited)"),
            (CLEANUP_POLICY, "compact,compact", "delete, compact or compact,delete"),
            ("retention.msx", "1", "valid keys are"),
            ("writer.principal", "svc\norders", "without control characters"),
        ] {
            let mut s = d.clone();
            match s.set(k, v) {
                Err(Error::InvalidConfig { key, reason }) => {
                    assert_eq!(key, k);
                    assert!(reason.contains(needle), "{reason}");
                }
                other => panic!("{k}={v}: {other:?}"),
            }
        }
        for k in SETTINGS.iter().map(|s| s.key) {
            let s = d.clone();
            let mut t = s.clone();
            t.set(k, &s.get(k).unwrap()).unwrap();
            assert_eq!(s, t, "{k} round-trips through text");
        }
    }

    #[test]
    fn the_table_is_sorted_and_names_match() {
        let keys: Vec<_> = SETTINGS.iter().map(|s| s.key).collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted);
        for s in SETTINGS {
            assert_eq!(s.toml_key, s.key.replace('.', "_"), "the TOML name follows the key");
            assert!(s.doc.starts_with(&format!("`{}`", s.key)), "{}", s.doc);
        }
    }
}

#[cfg(test)]
mod docs_tests {
    use super::*;

    fn read(rel: &str) -> String {
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
    }

    #[test]
    fn every_setting_is_documented() {
        let (toml, readme) = (read("../config/strata.toml"), read("../README.md"));
        for s in SETTINGS {
            assert!(toml.contains(&format!("# ({})", s.key)), "config/strata.toml documents {}", s.key);
            assert!(toml.contains(&format!("\n{} = ", s.toml_key)), "config/strata.toml sets {}", s.toml_key);
            assert!(readme.contains(&format!("`{}`", s.key)), "README.md names {}", s.key);
        }
    }
}

#[cfg(test)]
mod policy_tests {
    use super::*;

    #[test]
    fn cleanup_policies_parse() {
        let p = |s| CleanupPolicy::parse(s).map(|p| (p.delete, p.compact));
        assert_eq!(p("delete"), Some((true, false)));
        assert_eq!(p("compact"), Some((false, true)));
        assert_eq!(p("delete,compact"), Some((true, true)));
        assert_eq!(p("compact, delete"), Some((true, true)));
        assert_eq!(p(""), None);
        assert_eq!(p("purge"), None);
    }
}
