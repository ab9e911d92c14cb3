//! Producer ids and epochs (`InitProducer`): which ids the broker issued,
//! to whom, and the fencing of stale instances by a stable writer id, as
//! Kafka does with `transactional.id`.
//!
//! - **Every producer id is issued, and bound to its owner**: the
//!   authenticated principal, or, without one (auth off), the client's IP
//!   address (as quotas key clients). A produce under an id this broker did
//!   not issue, or issued to another owner, is refused (UNKNOWN_PRODUCER_ID)
//!   before it touches a partition: one principal cannot write under
//!   another's id (and have the victim's batch answered as a duplicate), nor
//!   fill a partition's producer table with made-up ids.
//! - **Bounded per owner**: an owner holds at most [`MAX_IDS_PER_OWNER`]
//!   ids issued without a writer id (issuing one more retires its oldest)
//!   and at most [`MAX_WRITERS_PER_OWNER`] writer ids (one more is refused),
//!   so no owner can fill a partition's table of producers alone. Ids, and
//!   writer ids, unused for `storage.producer_expiry_ms` are retired. A
//!   retired id is refused like one never issued (the producer calls
//!   InitProducer again), and its state in a full partition table is the
//!   first to go.
//! - **Writer ids** are scoped to the caller's principal (so one service
//!   cannot fence another's). Each `InitProducer` with a writer id keeps the
//!   id's producer id, bumps its epoch and binds it to the caller; a produce
//!   carrying an older epoch is fenced on every partition, including ones the
//!   newer instance has not written yet.
//!
//! Both are events in the compacted internal topic `__strata_writers`,
//! appended with fsync before the answer and replayed at start-up, so the
//! bindings survive a restart: key `principal \0 writer id` → producer id
//! (i64) and epoch (i16), little-endian; key `\x01p<producer id>` → a flag
//! byte (1: it has a writer id) and the owner (`p:<principal>` or
//! `a:<ip>`). An id's tombstone retires it.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use ring::rand::{SecureRandom, SystemRandom};

use crate::error::{Error, Result, SeqError};
use crate::locks::LockExt;
use crate::partition::internal::{KeyedRecord, KeyedStore};
use crate::partition::Manager;

/// The internal topic of writer ids and issued producer ids.
pub const WRITERS_TOPIC: &str = "__strata_writers";

/// Most writer ids kept.
pub const MAX_WRITERS: usize = 100_000;

/// Most producer ids without a writer id one owner holds at once: issuing
/// one more retires its oldest.
pub const MAX_IDS_PER_OWNER: usize = 1_000;

/// Most writer ids one owner holds at once.
pub const MAX_WRITERS_PER_OWNER: usize = 1_000;

/// Most producer ids issued at once, over all owners.
pub const MAX_ISSUED: usize = 200_000;

/// Longest writer id.
pub const MAX_WRITER_ID_BYTES: usize = 255;

/// How often ids are checked for expiry (ms).
const EXPIRE_EVERY_MS: i64 = 60_000;

/// Key prefix of an issued producer id's record.
const ID_KEY_PREFIX: &str = "\u{1}p";

/// Whom a producer id was issued to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    /// An authenticated principal.
    Principal(Arc<str>),
    /// A client without one, by its IP address.
    Address(IpAddr),
    /// Neither (only outside the RPC layer): matches no request.
    Nobody,
    /// A writer id's producer id recorded before ids were bound, under the
    /// anonymous principal: any caller, until its next InitProducer binds it.
    Legacy,
}

impl Owner {
    /// The owner a request of `principal` from `ip` is.
    /// (An id is bound to the exact address; caps count by its group, an
    /// IPv6 client's /64: see [`Owner::cap_key`].)
    pub fn of(principal: Option<&str>, ip: Option<IpAddr>) -> Owner {
        match (principal, ip) {
            (Some(p), _) => Owner::Principal(p.into()),
            (None, Some(ip)) => Owner::Address(ip),
            (None, None) => Owner::Nobody,
        }
    }

    /// Whom the per-owner caps count this owner under: its address's group
    /// (one IPv6 client has a whole /64 to take addresses from).
    fn cap_key(&self) -> Owner {
        match self {
            Owner::Address(a) => Owner::Address(crate::net::address_group(*a)),
            other => other.clone(),
        }
    }

    fn matches(&self, principal: Option<&str>, ip: Option<IpAddr>) -> bool {
        match (self, principal) {
            (Owner::Legacy, _) => true,
            (Owner::Principal(p), Some(q)) => **p == *q,
            (Owner::Address(a), None) => ip == Some(*a),
            _ => false,
        }
    }

    fn encode(&self) -> String {
        match self {
            Owner::Principal(p) => format!("p:{p}"),
            Owner::Address(a) => format!("a:{a}"),
            Owner::Nobody | Owner::Legacy => String::new(),
        }
    }

    fn decode(s: &str) -> Option<Owner> {
        match s.split_at_checked(2)? {
            ("p:", p) => Some(Owner::Principal(p.into())),
            ("a:", a) => a.parse().ok().map(Owner::Address),
            _ => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Owner::Principal(p) => format!("principal {p:?}"),
            Owner::Address(a) => format!("client address {a}"),
            Owner::Nobody => "no caller".into(),
            Owner::Legacy => "any caller".into(),
        }
    }
}

/// An issued producer id.
#[derive(Debug)]
struct Issued {
    owner: Owner,
    /// The writer id (its `principal \0 writer id` key) it belongs to, if any.
    writer: Option<String>,
    /// Last produce or issue (ms; since start-up at the latest).
    last_used_ms: i64,
}

#[derive(Default)]
struct State {
    /// By `principal \0 writer id`: (producer id, epoch).
    by_writer: HashMap<String, (i64, i16)>,
    /// The newest epoch of each writer's producer id.
    epochs: HashMap<i64, i16>,
    issued: HashMap<i64, Issued>,
    /// Each owner's ids without a writer id, oldest first.
    by_owner: HashMap<Owner, VecDeque<i64>>,
    /// How many writer ids' producer ids each owner holds.
    writers_by_owner: HashMap<Owner, usize>,
    last_expire_ms: i64,
}

impl State {
    fn issue(&mut self, id: i64, owner: Owner, writer: Option<String>, now_ms: i64) {
        let new = Issued { owner: owner.clone(), writer: writer.clone(), last_used_ms: now_ms };
        if let Some(old) = self.issued.insert(id, new) {
            self.unlist(id, &old);
        }
        match writer {
            None => self.by_owner.entry(owner.cap_key()).or_default().push_back(id),
            Some(_) => *self.writers_by_owner.entry(owner.cap_key()).or_default() += 1,
        }
    }

    /// Forgets `id`, and the writer id it belongs to, if any.
    fn retire(&mut self, id: i64) {
        if let Some(old) = self.issued.remove(&id) {
            self.unlist(id, &old);
            if let Some(key) = &old.writer {
                if self.by_writer.get(key).is_some_and(|(i, _)| *i == id) {
                    self.by_writer.remove(key);
                }
                self.epochs.remove(&id);
            }
        }
    }

    fn unlist(&mut self, id: i64, old: &Issued) {
        let key = old.owner.cap_key();
        if old.writer.is_some() {
            if let Some(n) = self.writers_by_owner.get_mut(&key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.writers_by_owner.remove(&key);
                }
            }
        } else if let Some(ids) = self.by_owner.get_mut(&key) {
            ids.retain(|&i| i != id);
            if ids.is_empty() {
                self.by_owner.remove(&key);
            }
        }
    }

    /// The records that retire `id` (its own, and its writer id's).
    fn retire_records(&self, id: i64) -> Vec<KeyedRecord> {
        let mut records = vec![KeyedRecord::delete(id_key(id))];
        if let Some(key) = self.issued.get(&id).and_then(|i| i.writer.clone()) {
            if self.by_writer.get(&key).is_some_and(|(i, _)| *i == id) {
                records.push(KeyedRecord::delete(key.into_bytes()));
            }
        }
        records
    }
}

/// Producer ids, their owners and epochs.
pub struct Writers {
    store: KeyedStore,
    state: Mutex<State>,
    /// `storage.producer_expiry_ms`.
    expiry_ms: i64,
    writing: tokio::sync::Mutex<()>,
}

impl Writers {
    /// Opens `__strata_writers` (creating it on first start) and replays it.
    pub fn open(manager: &Manager, expiry_ms: u64) -> Result<Writers> {
        let store = KeyedStore::open(manager, WRITERS_TOPIC)?;
        let now = crate::partition::now_ms();
        let mut state = State::default();
        // By id: where its latest record is (issue order) and its owner.
        let mut owners: HashMap<i64, (u64, Owner)> = HashMap::new();
        store.replay(|offset, key, value| {
            let Ok(key) = std::str::from_utf8(key) else { return };
            if let Some(id) = key.strip_prefix(ID_KEY_PREFIX).and_then(|id| id.parse::<i64>().ok()) {
                match value.and_then(decode_owner) {
                    Some(owner) => owners.insert(id, (offset, owner)),
                    None => owners.remove(&id),
                };
                return;
            }
            match value.and_then(decode) {
                Some(v) => state.by_writer.insert(key.to_string(), v),
                None => state.by_writer.remove(key),
            };
        })?;
        state.epochs = state.by_writer.values().copied().collect();
        let mut writer_of: HashMap<i64, String> =
            state.by_writer.iter().map(|(key, (id, _))| (*id, key.clone())).collect();
        // Writer ids recorded before ids were bound: owned by their key's
        // principal (any caller for the anonymous one) until rebound.
        for (id, key) in &writer_of {
            if !owners.contains_key(id) {
                let principal = key.split('\0').next().unwrap_or_default();
                let owner = if principal.is_empty() { Owner::Legacy } else { Owner::Principal(principal.into()) };
                owners.insert(*id, (0, owner));
            }
        }
        // In issue order: an owner's oldest id is the first to retire.
        let mut owners: Vec<(i64, (u64, Owner))> = owners.into_iter().collect();
        owners.sort_unstable_by_key(|(_, (offset, _))| *offset);
        for (id, (_, owner)) in owners {
            let writer = writer_of.remove(&id);
            state.issue(id, owner, writer, now);
        }
        state.last_expire_ms = now;
        tracing::info!(writers = state.by_writer.len(), producer_ids = state.issued.len(), "loaded producer ids");
        Ok(Writers {
            store,
            state: Mutex::new(state),
            expiry_ms: expiry_ms as i64,
            writing: tokio::sync::Mutex::new(()),
        })
    }

    /// A producer id and epoch for `owner` (whose principal, if any, scopes
    /// the writer id) and `writer_id` (empty: none).
    pub async fn init(&self, owner: Owner, writer_id: &str) -> Result<(i64, i16)> {
        if writer_id.len() > MAX_WRITER_ID_BYTES || writer_id.chars().any(char::is_control) {
            return Err(Error::InvalidArgument(format!(
                "writer_id must be at most {MAX_WRITER_ID_BYTES} bytes without control characters"
            )));
        }
        if owner == Owner::Nobody {
            return Err(Error::Internal("InitProducer without a caller".into()));
        }
        let now = crate::partition::now_ms();
        let _w = self.writing.lock().await;
        let mut retire = self.expired(now);
        let writer_key = match &owner {
            _ if writer_id.is_empty() => None,
            Owner::Principal(p) => Some(format!("{p}\0{writer_id}")),
            _ => Some(format!("\0{writer_id}")),
        };
        let limit = |limit: &'static str, message: String| Err(Error::LimitReached { limit, message });
        let (next, records) = {
            let st = self.state.locked();
            let next = match &writer_key {
                None => {
                    // The owner's oldest id goes if it holds the most.
                    if let Some(ids) = st.by_owner.get(&owner.cap_key()).filter(|ids| ids.len() >= MAX_IDS_PER_OWNER) {
                        retire.extend(ids.iter().take(ids.len() + 1 - MAX_IDS_PER_OWNER).copied());
                    }
                    (self.fresh_id(&st)?, 0)
                }
                Some(key) => {
                    let current = st.by_writer.get(key).copied();
                    // Writer ids expiring now make room first.
                    let expiring = |of: Option<&Owner>| {
                        retire
                            .iter()
                            .filter_map(|id| st.issued.get(id))
                            .filter(|i| i.writer.is_some() && of.is_none_or(|o| i.owner.cap_key() == *o))
                            .count()
                    };
                    let cap_key = owner.cap_key();
                    let held = st.writers_by_owner.get(&cap_key).copied().unwrap_or(0) - expiring(Some(&cap_key));
                    if current.is_none() && held >= MAX_WRITERS_PER_OWNER {
                        return limit(
                            "writer_ids_per_owner",
                            format!(
                                "{} holds {MAX_WRITERS_PER_OWNER} writer ids, the most one owner may (unused ones expire after storage.producer_expiry_ms)",
                                owner.describe()
                            ),
                        );
                    }
                    if current.is_none() && st.by_writer.len() - expiring(None) >= MAX_WRITERS {
                        return limit("writer_ids", format!("the broker keeps at most {MAX_WRITERS} writer ids"));
                    }
                    match current {
                        Some((id, epoch)) if epoch < i16::MAX => (id, epoch + 1),
                        // Its epochs ran out: a new id, and the old one retires.
                        Some((id, _)) => {
                            retire.push(id);
                            (self.fresh_id(&st)?, 0)
                        }
                        None => (self.fresh_id(&st)?, 0),
                    }
                }
            };
            retire.sort_unstable();
            retire.dedup();
            retire.retain(|&id| id != next.0);
            let new_ids = usize::from(!st.issued.contains_key(&next.0));
            if st.issued.len() + new_ids > MAX_ISSUED + retire.len() {
                return limit(
                    "producer_ids",
                    format!(
                        "the broker has issued {MAX_ISSUED} producer ids in use (unused ones expire after storage.producer_expiry_ms)"
                    ),
                );
            }
            let mut records: Vec<KeyedRecord> = retire.iter().flat_map(|&id| st.retire_records(id)).collect();
            if let Some(key) = &writer_key {
                let mut value = next.0.to_le_bytes().to_vec();
                value.extend_from_slice(&next.1.to_le_bytes());
                records.push(KeyedRecord::set(key.clone().into_bytes(), value));
            }
            let mut owner_value = vec![u8::from(writer_key.is_some())];
            owner_value.extend_from_slice(owner.encode().as_bytes());
            records.push(KeyedRecord::set(id_key(next.0), owner_value));
            (next, records)
        };
        self.store.append(&records, now).await?;
        let mut st = self.state.locked();
        // The expired ones (if a look was due) go with this record: the
        // next look is a minute on. (A refused request looked for nothing.)
        if now - st.last_expire_ms >= EXPIRE_EVERY_MS {
            st.last_expire_ms = now;
        }
        for id in retire {
            st.retire(id);
        }
        if let Some(key) = &writer_key {
            st.by_writer.insert(key.clone(), next);
            st.epochs.insert(next.0, next.1);
        }
        st.issue(next.0, owner, writer_key, now);
        Ok(next)
    }

    /// Ids unused for `storage.producer_expiry_ms` (with their writer ids),
    /// to retire (looked for at most once a minute).
    fn expired(&self, now_ms: i64) -> Vec<i64> {
        let st = self.state.locked();
        if now_ms - st.last_expire_ms < EXPIRE_EVERY_MS {
            return Vec::new();
        }
        let horizon = now_ms.saturating_sub(self.expiry_ms);
        st.issued.iter().filter(|(_, i)| i.last_used_ms < horizon).map(|(id, _)| *id).collect()
    }

    /// A random id not issued yet.
    fn fresh_id(&self, st: &State) -> Result<i64> {
        loop {
            let id = random_id()?;
            if !st.issued.contains_key(&id) && !st.epochs.contains_key(&id) {
                return Ok(id);
            }
        }
    }

    /// Checks that `producer_id` was issued to the caller (`principal`, or
    /// its address `ip`) and that `epoch` is its newest (older: fenced on
    /// every partition; newer: never issued). Notes the use.
    pub fn check(
        &self,
        producer_id: i64,
        epoch: i16,
        principal: Option<&str>,
        ip: Option<IpAddr>,
        topic: &str,
        partition: u32,
    ) -> Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let st = &mut *st;
        let unknown = |why: String| Error::UnknownProducer { producer_id, message: why };
        let Some(issued) = st.issued.get_mut(&producer_id) else {
            return Err(unknown(format!(
                "producer id {producer_id} was not issued by this broker, or expired unused: call InitProducer"
            )));
        };
        if !issued.owner.matches(principal, ip) {
            // A writer id's id taken over by a newer instance (InitProducer
            // from another owner binds it there, with a newer epoch): the
            // old instance is fenced, as from the same owner.
            if let (Some(_), Some(&current)) = (&issued.writer, st.epochs.get(&producer_id)) {
                if current > epoch {
                    return Err(Error::Producer {
                        topic: topic.to_string(),
                        partition,
                        producer_id,
                        error: SeqError::Fenced { epoch, current },
                    });
                }
            }
            return Err(unknown(format!(
                "producer id {producer_id} was issued to another {}: call InitProducer",
                if principal.is_some() { "principal" } else { "client" }
            )));
        }
        issued.last_used_ms = crate::partition::now_ms();
        match st.epochs.get(&producer_id).copied() {
            Some(current) if current > epoch => Err(Error::Producer {
                topic: topic.to_string(),
                partition,
                producer_id,
                error: SeqError::Fenced { epoch, current },
            }),
            Some(current) if current < epoch => Err(unknown(format!(
                "producer {producer_id} epoch {epoch} was never issued (its newest is {current}): call InitProducer"
            ))),
            // Without a writer id an id has epoch 0 only.
            None if epoch != 0 => Err(unknown(format!(
                "producer {producer_id} epoch {epoch} was never issued (it has epoch 0 only): call InitProducer"
            ))),
            _ => Ok(()),
        }
    }

    /// Whether `producer_id` is issued now (a partition table's entries of
    /// retired ids are the first to go when it is full).
    pub fn is_issued(&self, producer_id: i64) -> bool {
        self.state.locked().issued.contains_key(&producer_id)
    }
}

fn id_key(id: i64) -> Vec<u8> {
    format!("{ID_KEY_PREFIX}{id}").into_bytes()
}

fn decode(v: &[u8]) -> Option<(i64, i16)> {
    (v.len() == 10)
        .then(|| (i64::from_le_bytes(v[..8].try_into().unwrap_or_default()), i16::from_le_bytes([v[8], v[9]])))
}

/// The owner in an issued id's record (after its writer-id flag byte).
fn decode_owner(v: &[u8]) -> Option<Owner> {
    let (_, owner) = v.split_first()?;
    Owner::decode(std::str::from_utf8(owner).ok()?)
}

/// A random positive 63-bit producer id.
fn random_id() -> Result<i64> {
    let mut b = [0u8; 8];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| Error::Internal("the system's random number generator failed".into()))?;
    Ok((u64::from_le_bytes(b) >> 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_match_only_themselves() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let alice = Owner::of(Some("alice"), Some(ip));
        assert!(alice.matches(Some("alice"), Some(other)), "a principal, from any address");
        assert!(!alice.matches(Some("bob"), Some(ip)));
        assert!(!alice.matches(None, Some(ip)));
        let addr = Owner::of(None, Some(ip));
        assert!(addr.matches(None, Some(ip)));
        assert!(!addr.matches(None, Some(other)) && !addr.matches(Some("alice"), Some(ip)));
        assert!(!Owner::Nobody.matches(None, None));
        // Bound to the exact address; counted (caps) by an IPv6 client's /64.
        let v6 = Owner::of(None, Some("2001:db8::1".parse().unwrap()));
        assert!(!v6.matches(None, Some("2001:db8::ffff:2".parse().unwrap())));
        let same_64 = Owner::of(None, Some("2001:db8::ffff:2".parse().unwrap()));
        assert_eq!(v6.cap_key(), same_64.cap_key());
        assert_ne!(v6.cap_key(), Owner::of(None, Some("2001:db8:0:1::1".parse().unwrap())).cap_key());
        for o in [alice, addr] {
            assert_eq!(Owner::decode(&o.encode()), Some(o));
        }
    }

    #[test]
    fn an_owner_holds_a_bounded_number_of_ids_oldest_retired_first() {
        let mut st = State::default();
        let owner = Owner::of(Some("a"), None);
        for id in 0..5 {
            st.issue(id, owner.clone(), None, 0);
        }
        st.by_writer.insert("a\0w".into(), (100, 3));
        st.epochs.insert(100, 3);
        st.issue(100, owner.clone(), Some("a\0w".into()), 0);
        assert_eq!(st.by_owner[&owner].len(), 5, "writer ids are counted apart");
        assert_eq!(st.writers_by_owner[&owner], 1);
        st.retire(0);
        assert_eq!(st.by_owner[&owner].front(), Some(&1));
        // Rebinding an id to another owner moves it.
        st.issue(1, Owner::of(Some("b"), None), None, 0);
        assert_eq!(st.by_owner[&owner].len(), 3);
        // Retiring a writer id's producer id forgets the writer id too.
        assert_eq!(st.retire_records(100).len(), 2);
        st.retire(100);
        assert!(st.by_writer.is_empty() && st.epochs.is_empty() && !st.writers_by_owner.contains_key(&owner));
    }
}
