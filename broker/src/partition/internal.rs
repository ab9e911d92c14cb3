//! Topic names, and the one rule for internal topics.
//!
//! Topics whose names start with `__` are the broker's own (committed
//! offsets, ACLs, tokens and users, writer ids). Their correctness depends
//! on their settings — `__consumer_offsets` must stay compacted and keep
//! every latest commit — so clients may read and describe them, but not
//! create, delete, produce to, reconfigure or grow them. Consumer groups do
//! not subscribe to them. [`AUTH_TOPIC`] holds credentials (token hashes,
//! users' salted password hashes): no client may read its records at all.
//! With `auth.enabled` no ACL matches an internal topic, so only super
//! users reach them.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::AckLevel;
use crate::error::{Error, Result};
use crate::log::batch::{RecordIter, RecordSource};

use super::{Manager, Partition};

/// Longest topic name (as Kafka).
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// Names of internal topics start with this.
pub const INTERNAL_PREFIX: &str = "__";

/// The internal topic of ACLs and API tokens (see `security`).
pub const AUTH_TOPIC: &str = "__strata_auth";

/// True for the broker's own topics.
pub fn is_internal(name: &str) -> bool {
    name.starts_with(INTERNAL_PREFIX)
}

/// What a client asks to do to a topic, as far as the internal-topic rule
/// is concerned (reading and describing are always allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientOp {
    /// CreateTopic.
    Create,
    /// DeleteTopic.
    Delete,
    /// Produce.
    Produce,
    /// AlterTopicConfig.
    AlterConfig,
    /// CreatePartitions.
    AddPartitions,
    /// Fetch or Subscribe.
    Read,
}

/// The internal-topic rule: refuses every [`ClientOp`] on an internal topic.
pub fn check_client_op(name: &str, op: ClientOp) -> Result<()> {
    if !is_internal(name) || (op == ClientOp::Read && name != AUTH_TOPIC) {
        return Ok(());
    }
    let internal = |message| Error::InternalTopic { topic: name.into(), read: false, message };
    Err(match op {
        ClientOp::Read => Error::InternalTopic {
            topic: name.into(),
            read: true,
            message: format!("topic '{name}' holds the broker's credentials: no client may read its records"),
        },
        ClientOp::Create => Error::InvalidTopicName {
            name: name.into(),
            reason: format!("names starting with '{INTERNAL_PREFIX}' are reserved for internal topics"),
        },
        ClientOp::Delete => internal(format!("topic '{name}' is internal and cannot be deleted")),
        ClientOp::Produce => internal(format!("topic '{name}' is internal: it cannot be produced to")),
        ClientOp::AlterConfig => {
            internal(format!("topic '{name}' is internal: its configuration is the broker's and cannot be changed"))
        }
        ClientOp::AddPartitions => {
            internal(format!("topic '{name}' is internal: its partition count cannot be changed"))
        }
    })
}

/// Checks a topic name against the rules.
pub fn validate_topic_name(name: &str) -> Result<()> {
    let invalid = |reason: String| Err(Error::InvalidTopicName { name: name.to_string(), reason });
    if name.is_empty() {
        return invalid("must not be empty".into());
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return invalid(format!("{} characters, at most {MAX_TOPIC_NAME_LEN} allowed", name.len()));
    }
    if name == "." || name == ".." {
        return invalid("'.' and '..' are reserved".into());
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return invalid(format!("character {c:?} is not allowed; use a-z, A-Z, 0-9, '.', '_' and '-'"));
    }
    Ok(())
}

/// A keyed, compacted internal topic holding broker state (committed
/// offsets, ACLs, tokens and users, producer ids): the latest record of a
/// key is its value, a tombstone deletes it. The one place such state is
/// read back and written: opened (created on first start) and replayed
/// whole at start-up, appended to durably. An append returns once its
/// records are below the high watermark, so a caller applies a change to
/// its in-memory state only once it is committed (with one replica that is
/// the fsync; with replication, the commit index: the contract stays).
pub struct KeyedStore {
    log: Arc<Partition>,
}

impl KeyedStore {
    /// Opens partition 0 of the internal topic `name`, creating it on first
    /// start. Refused damage in it refuses start-up: its state is replayed
    /// whole or not at all (a replay cut short would bring back what later
    /// records undid: a revoked token, an older epoch, an older commit).
    pub fn open(manager: &Manager, name: &str) -> Result<KeyedStore> {
        let topic = match manager.topic(name) {
            Ok(t) => t,
            Err(Error::TopicNotFound { .. }) => {
                let configs = BTreeMap::from([
                    ("cleanup.policy".to_string(), "compact".to_string()),
                    ("segment.bytes".to_string(), (64u64 << 20).to_string()),
                ]);
                manager.create_internal_topic(name, 1, configs)?;
                manager.topic(name)?
            }
            Err(e) => return Err(e),
        };
        let log = topic.partition(0)?;
        if let Some(why) = log.refused() {
            return Err(Error::RecoveryRefused {
                path: manager.topic_dir_of(name),
                reason: format!(
                    "the internal topic {name} holds broker state, which must be replayed whole, and start-up refused damage in it: {why}"
                ),
            });
        }
        Ok(KeyedStore { log })
    }

    /// A store over an open partition (unit tests).
    #[cfg(test)]
    pub(crate) fn over(log: Arc<Partition>) -> KeyedStore {
        KeyedStore { log }
    }

    /// Replays the store from its start: `apply(offset, key, value)` for
    /// every keyed record in order (value None: a tombstone).
    pub fn replay(&self, apply: impl FnMut(u64, &[u8], Option<&[u8]>)) -> Result<()> {
        replay_keyed(&self.log, apply)
    }

    /// Appends `records` as one batch, fsynced, and returns once they are
    /// below the high watermark: then, and only then, the caller applies
    /// them to its state.
    pub async fn append(&self, records: &[KeyedRecord], now_ms: i64) -> Result<()> {
        let appended = self.log.append(records, now_ms, AckLevel::Durable)?.acknowledged().await?;
        debug_assert!(self.log.high_watermark() >= appended.next_offset);
        Ok(())
    }
}

/// One change to a keyed internal topic.
pub struct KeyedRecord {
    key: Vec<u8>,
    value: Option<Vec<u8>>,
}

impl KeyedRecord {
    /// Sets `key` to `value`.
    pub fn set(key: Vec<u8>, value: Vec<u8>) -> KeyedRecord {
        KeyedRecord { key, value: Some(value) }
    }

    /// Deletes `key` (a tombstone).
    pub fn delete(key: Vec<u8>) -> KeyedRecord {
        KeyedRecord { key, value: None }
    }
}

impl RecordSource for KeyedRecord {
    fn timestamp_ms(&self) -> i64 {
        0
    }
    fn key(&self) -> Option<&[u8]> {
        Some(&self.key)
    }
    fn value(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }
    fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        std::iter::empty()
    }
}

/// Replays a keyed topic from its start: `apply(offset, key, value)` for
/// every keyed record in order (value None: a tombstone). Also for a user
/// topic's key index (per-key conditions).
pub fn replay_keyed(log: &Partition, mut apply: impl FnMut(u64, &[u8], Option<&[u8]>)) -> Result<()> {
    let mut offset = log.log_start();
    while offset < log.high_watermark() {
        let r = log.read(offset, 4 << 20, usize::MAX, false)?;
        for chunk in &r.chunks {
            for rec in RecordIter::new(chunk) {
                if let Some(key) = rec.key {
                    apply(rec.offset, key, rec.value);
                }
            }
        }
        offset = r.next_offset;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_are_checked() {
        for ok in ["a", "orders.v1", "A_b-9", &"x".repeat(249)] {
            validate_topic_name(ok).unwrap();
        }
        for (bad, needle) in
            [("", "empty"), ("..", "reserved"), ("a/b", "'/'"), ("a b", "' '"), (&"x".repeat(250), "249")]
        {
            match validate_topic_name(bad) {
                Err(Error::InvalidTopicName { reason, .. }) => {
                    assert!(reason.contains(needle), "{reason}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn clients_may_not_change_internal_topics() {
        for op in
            [ClientOp::Create, ClientOp::Delete, ClientOp::Produce, ClientOp::AlterConfig, ClientOp::AddPartitions]
        {
            assert!(check_client_op("__consumer_offsets", op).is_err(), "{op:?}");
            check_client_op("orders", op).unwrap();
        }
        check_client_op("__consumer_offsets", ClientOp::Read).unwrap();
        assert!(check_client_op(AUTH_TOPIC, ClientOp::Read).is_err());
    }
}
