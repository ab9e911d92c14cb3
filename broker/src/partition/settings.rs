//! Per-topic settings: Kafka-style keys, validated, resolved against the
//! broker-wide defaults in `[topics]`.

use std::collections::BTreeMap;

use crate::config::{TimestampType, TopicDefaults};
use crate::error::{Error, Result};
use crate::log::format::MAX_SEGMENT_BYTES;

/// `segment.bytes`: roll the active segment before it exceeds this.
pub const SEGMENT_BYTES: &str = "segment.bytes";
/// `segment.ms`: roll the active segment once it is this old.
pub const SEGMENT_MS: &str = "segment.ms";
/// `max.message.bytes`: largest record, as stored.
pub const MAX_MESSAGE_BYTES: &str = "max.message.bytes";
/// `timestamp.type`: `CreateTime` or `LogAppendTime`.
pub const TIMESTAMP_TYPE: &str = "timestamp.type";
/// `retention.ms`: delete closed segments whose newest record is older (-1 = keep forever).
pub const RETENTION_MS: &str = "retention.ms";
/// `retention.bytes`: per-partition size budget; oldest closed segments go first (-1 = unlimited).
pub const RETENTION_BYTES: &str = "retention.bytes";
/// `cleanup.policy`: `delete`, `compact`, or `compact,delete`.
pub const CLEANUP_POLICY: &str = "cleanup.policy";
/// `delete.retention.ms`: how long a tombstone stays after its timestamp.
pub const DELETE_RETENTION_MS: &str = "delete.retention.ms";
/// `min.compaction.lag.ms`: records younger than this are never compacted away.
pub const MIN_COMPACTION_LAG_MS: &str = "min.compaction.lag.ms";

/// Every key a topic accepts, sorted.
pub const KEYS: &[&str] = &[
    CLEANUP_POLICY,
    DELETE_RETENTION_MS,
    MAX_MESSAGE_BYTES,
    MIN_COMPACTION_LAG_MS,
    RETENTION_BYTES,
    RETENTION_MS,
    SEGMENT_BYTES,
    SEGMENT_MS,
    TIMESTAMP_TYPE,
];

/// What happens to old records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanupPolicy {
    /// Retention deletes old segments.
    pub delete: bool,
    /// The cleaner keeps only the latest record per key.
    pub compact: bool,
}

impl CleanupPolicy {
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

impl std::fmt::Display for CleanupPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match (self.compact, self.delete) {
            (true, true) => "compact,delete",
            (true, false) => "compact",
            _ => "delete",
        })
    }
}

const MIN_SEGMENT_BYTES: u64 = 4096;
const MAX_MESSAGE_BYTES_LIMIT: u64 = 64 << 20;

/// A topic's effective settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSettings {
    /// `segment.bytes`
    pub segment_bytes: u64,
    /// `segment.ms`
    pub segment_ms: u64,
    /// `max.message.bytes`
    pub max_message_bytes: u64,
    /// `timestamp.type`
    pub timestamp_type: TimestampType,
    /// `retention.ms` (-1 = forever)
    pub retention_ms: i64,
    /// `retention.bytes` (-1 = unlimited)
    pub retention_bytes: i64,
    /// `cleanup.policy`
    pub cleanup_policy: CleanupPolicy,
    /// `delete.retention.ms`
    pub delete_retention_ms: u64,
    /// `min.compaction.lag.ms`
    pub min_compaction_lag_ms: u64,
}

fn parse_i64_or_unlimited(key: &str, value: &str) -> Result<i64> {
    match value.trim() {
        "-1" => Ok(-1),
        v => Ok(parse_u64(key, v, 0, i64::MAX as u64).map_err(|_| Error::InvalidConfig {
            key: key.into(),
            reason: format!("'{value}' must be -1 (unlimited) or between 0 and {}", i64::MAX),
        })? as i64),
    }
}

fn parse_u64(key: &str, value: &str, min: u64, max: u64) -> Result<u64> {
    let v: u64 = value.trim().parse().map_err(|_| Error::InvalidConfig {
        key: key.into(),
        reason: format!("'{value}' is not a whole number; must be between {min} and {max}"),
    })?;
    if v < min || v > max {
        return Err(Error::InvalidConfig { key: key.into(), reason: format!("{v} must be between {min} and {max}") });
    }
    Ok(v)
}

impl TopicSettings {
    /// Applies one `key = value`, validating it.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            SEGMENT_BYTES => self.segment_bytes = parse_u64(key, value, MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES)?,
            SEGMENT_MS => self.segment_ms = parse_u64(key, value, 1, i64::MAX as u64)?,
            MAX_MESSAGE_BYTES => self.max_message_bytes = parse_u64(key, value, 1, MAX_MESSAGE_BYTES_LIMIT)?,
            RETENTION_MS => self.retention_ms = parse_i64_or_unlimited(key, value)?,
            RETENTION_BYTES => self.retention_bytes = parse_i64_or_unlimited(key, value)?,
            DELETE_RETENTION_MS => self.delete_retention_ms = parse_u64(key, value, 0, i64::MAX as u64)?,
            MIN_COMPACTION_LAG_MS => self.min_compaction_lag_ms = parse_u64(key, value, 0, i64::MAX as u64)?,
            CLEANUP_POLICY => {
                self.cleanup_policy = CleanupPolicy::parse(value).ok_or_else(|| Error::InvalidConfig {
                    key: key.into(),
                    reason: format!("'{value}' must be delete, compact or compact,delete"),
                })?
            }
            TIMESTAMP_TYPE => {
                self.timestamp_type = match value {
                    "CreateTime" => TimestampType::CreateTime,
                    "LogAppendTime" => TimestampType::LogAppendTime,
                    _ => {
                        return Err(Error::InvalidConfig {
                            key: key.into(),
                            reason: format!("'{value}' must be CreateTime or LogAppendTime"),
                        })
                    }
                }
            }
            _ => {
                return Err(Error::InvalidConfig {
                    key: key.into(),
                    reason: format!("unknown topic config key; valid keys are {}", KEYS.join(", ")),
                })
            }
        }
        Ok(())
    }

    /// The value of `key` as text.
    pub fn get(&self, key: &str) -> String {
        match key {
            SEGMENT_BYTES => self.segment_bytes.to_string(),
            SEGMENT_MS => self.segment_ms.to_string(),
            MAX_MESSAGE_BYTES => self.max_message_bytes.to_string(),
            TIMESTAMP_TYPE => format!("{:?}", self.timestamp_type),
            RETENTION_MS => self.retention_ms.to_string(),
            RETENTION_BYTES => self.retention_bytes.to_string(),
            CLEANUP_POLICY => self.cleanup_policy.to_string(),
            DELETE_RETENTION_MS => self.delete_retention_ms.to_string(),
            MIN_COMPACTION_LAG_MS => self.min_compaction_lag_ms.to_string(),
            _ => String::new(),
        }
    }

    /// Broker defaults with the topic's overrides applied.
    pub fn resolve(defaults: &TopicDefaults, overrides: &BTreeMap<String, String>) -> Result<TopicSettings> {
        let mut s = TopicSettings::from(defaults);
        for (k, v) in overrides {
            s.set(k, v)?;
        }
        Ok(s)
    }
}

impl From<&TopicDefaults> for TopicSettings {
    fn from(d: &TopicDefaults) -> Self {
        TopicSettings {
            segment_bytes: d.segment_bytes,
            segment_ms: d.segment_ms,
            max_message_bytes: d.max_message_bytes,
            timestamp_type: d.timestamp_type,
            retention_ms: d.retention_ms,
            retention_bytes: d.retention_bytes,
            cleanup_policy: CleanupPolicy::parse(&d.cleanup_policy)
                .unwrap_or(CleanupPolicy { delete: true, compact: false }),
            delete_retention_ms: d.delete_retention_ms,
            min_compaction_lag_ms: d.min_compaction_lag_ms,
        }
    }
}

/// Checks the `[topics]` defaults with the same rules as per-topic values.
pub fn validate_defaults(d: &TopicDefaults) -> Result<()> {
    if CleanupPolicy::parse(&d.cleanup_policy).is_none() {
        return Err(Error::InvalidConfig {
            key: "topics.cleanup_policy".into(),
            reason: format!("'{}' must be delete, compact or compact,delete", d.cleanup_policy),
        });
    }
    let s = TopicSettings::from(d);
    let mut check = s;
    for key in KEYS {
        check.set(key, &s.get(key)).map_err(|e| match e {
            Error::InvalidConfig { key, reason } => {
                Error::InvalidConfig { key: format!("topics.{} ({key})", key.replace('.', "_")), reason }
            }
            e => e,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_apply_and_invalid_values_name_the_key() {
        let d = TopicDefaults::default();
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
        ] {
            let mut s = TopicSettings::from(&d);
            match s.set(k, v) {
                Err(Error::InvalidConfig { key, reason }) => {
                    assert_eq!(key, k);
                    assert!(reason.contains(needle), "{reason}");
                }
                other => panic!("{k}={v}: {other:?}"),
            }
        }
        for k in KEYS {
            let s = TopicSettings::from(&d);
            let mut t = s;
            t.set(k, &s.get(k)).unwrap();
            assert_eq!(s, t, "{k} round-trips through text");
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
