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

/// Every key a topic accepts.
pub const KEYS: &[&str] = &[MAX_MESSAGE_BYTES, SEGMENT_BYTES, SEGMENT_MS, TIMESTAMP_TYPE];

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
}

fn parse_u64(key: &str, value: &str, min: u64, max: u64) -> Result<u64> {
    let v: u64 = value.trim().parse().map_err(|_| Error::InvalidConfig {
        key: key.into(),
        reason: format!("'{value}' is not a whole number; must be between {min} and {max}"),
    })?;
    if v < min || v > max {
        return Err(Error::InvalidConfig {
            key: key.into(),
            reason: format!("{v} must be between {min} and {max}"),
        });
    }
    Ok(v)
}

impl TopicSettings {
    /// Applies one `key = value`, validating it.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            SEGMENT_BYTES => {
                self.segment_bytes = parse_u64(key, value, MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES)?
            }
            SEGMENT_MS => self.segment_ms = parse_u64(key, value, 1, i64::MAX as u64)?,
            MAX_MESSAGE_BYTES => {
                self.max_message_bytes = parse_u64(key, value, 1, MAX_MESSAGE_BYTES_LIMIT)?
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
                    reason: format!(
                        "unknown topic config key; valid keys are {}",
                        KEYS.join(", ")
                    ),
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
            _ => String::new(),
        }
    }

    /// Broker defaults with the topic's overrides applied.
    pub fn resolve(
        defaults: &TopicDefaults,
        overrides: &BTreeMap<String, String>,
    ) -> Result<TopicSettings> {
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
        }
    }
}

/// Checks the `[topics]` defaults with the same rules as per-topic values.
pub fn validate_defaults(d: &TopicDefaults) -> Result<()> {
    let s = TopicSettings::from(d);
    let mut check = s;
    for key in KEYS {
        check.set(key, &s.get(key)).map_err(|e| match e {
            Error::InvalidConfig { key, reason } => Error::InvalidConfig {
                key: format!("topics.{} ({key})", key.replace('.', "_")),
                reason,
            },
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
