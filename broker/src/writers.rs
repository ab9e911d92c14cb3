//! Producer ids and epochs (`InitProducer`), and the fencing of stale
//! instances by a stable writer id, as Kafka does with `transactional.id`.
//!
//! A writer id is scoped to the caller's principal (so one service cannot
//! fence another's). Each `InitProducer` with a writer id keeps the id's
//! producer id and bumps its epoch; a produce carrying an older epoch is
//! fenced on every partition, including ones the newer instance has not
//! written yet. Without a writer id a producer gets a new random id and
//! epoch 0, and nothing is fenced.
//!
//! Writer ids are events in the compacted internal topic
//! `__strata_writers` (key `principal \0 writer id`, value producer id i64
//! and epoch i16, little-endian), appended with fsync before the answer and
//! replayed at start-up.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ring::rand::{SecureRandom, SystemRandom};

use crate::config::AckLevel;
use crate::error::{Error, Result};
use crate::log::locks::LockExt;
use crate::partition::internal::{open_keyed_topic, replay_keyed, KeyedRecord};
use crate::partition::{Manager, Partition};

/// The internal topic of writer ids.
pub const WRITERS_TOPIC: &str = "__strata_writers";

/// Most writer ids kept.
pub const MAX_WRITERS: usize = 100_000;

/// Longest writer id.
pub const MAX_WRITER_ID_BYTES: usize = 255;

/// Producer ids and epochs.
pub struct Writers {
    log: Arc<Partition>,
    /// By `principal \0 writer id`: (producer id, epoch).
    by_writer: Mutex<HashMap<String, (i64, i16)>>,
    /// The newest epoch of each writer's producer id.
    epochs: Mutex<HashMap<i64, i16>>,
    writing: tokio::sync::Mutex<()>,
}

impl Writers {
    /// Opens `__strata_writers` (creating it on first start) and replays it.
    pub fn open(manager: &Manager) -> Result<Writers> {
        let log = open_keyed_topic(manager, WRITERS_TOPIC)?;
        let mut by_writer = HashMap::new();
        replay_keyed(&log, |_, key, value| {
            let Ok(key) = std::str::from_utf8(key) else { return };
            match value.and_then(decode) {
                Some(v) => by_writer.insert(key.to_string(), v),
                None => by_writer.remove(key),
            };
        })?;
        let epochs = by_writer.values().copied().collect();
        tracing::info!(writers = by_writer.len(), "loaded writer ids");
        Ok(Writers {
            log,
            by_writer: Mutex::new(by_writer),
            epochs: Mutex::new(epochs),
            writing: tokio::sync::Mutex::new(()),
        })
    }

    /// A producer id and epoch for `principal` (None: anonymous) and
    /// `writer_id` (empty: none).
    pub async fn init(&self, principal: Option<&str>, writer_id: &str) -> Result<(i64, i16)> {
        if writer_id.is_empty() {
            return Ok((random_id()?, 0));
        }
        if writer_id.len() > MAX_WRITER_ID_BYTES || writer_id.chars().any(char::is_control) {
            return Err(Error::InvalidArgument(format!(
                "writer_id must be at most {MAX_WRITER_ID_BYTES} bytes without control characters"
            )));
        }
        let key = format!("{}\0{writer_id}", principal.unwrap_or(""));
        let _w = self.writing.lock().await;
        let current = self.by_writer.locked().get(&key).copied();
        let next = match current {
            Some((id, epoch)) if epoch < i16::MAX => (id, epoch + 1),
            // A new writer, or one whose epochs ran out: a new id.
            Some(_) | None => (random_id()?, 0),
        };
        if current.is_none() && self.by_writer.locked().len() >= MAX_WRITERS {
            return Err(Error::ResourceExhausted(format!("the broker keeps at most {MAX_WRITERS} writer ids")));
        }
        let mut value = next.0.to_le_bytes().to_vec();
        value.extend_from_slice(&next.1.to_le_bytes());
        let record = KeyedRecord::set(key.clone().into_bytes(), value);
        self.log.append(&[record], crate::partition::now_ms(), AckLevel::Durable)?.acknowledged().await?;
        self.by_writer.locked().insert(key, next);
        self.epochs.locked().insert(next.0, next.1);
        Ok(next)
    }

    /// The newest epoch of `producer_id` if a writer id owns it.
    pub fn newest_epoch(&self, producer_id: i64) -> Option<i16> {
        self.epochs.locked().get(&producer_id).copied()
    }
}

fn decode(v: &[u8]) -> Option<(i64, i16)> {
    (v.len() == 10)
        .then(|| (i64::from_le_bytes(v[..8].try_into().unwrap_or_default()), i16::from_le_bytes([v[8], v[9]])))
}

/// A random positive 63-bit producer id.
fn random_id() -> Result<i64> {
    let mut b = [0u8; 8];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| Error::Internal("the system's random number generator failed".into()))?;
    Ok((u64::from_le_bytes(b) >> 1) as i64)
}
