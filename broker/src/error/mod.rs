//! Errors a caller of the broker core can act on. Each has a [`Reason`] (the
//! machine-readable name a client tells refusals apart by, listed with the
//! same names in `proto/strata/v1/errors.proto`) and metadata; `server::status`
//! maps them to gRPC status codes and `google.rpc.ErrorInfo`, in one place.

use std::fmt;
use std::io;

use crate::log::{Damage, LogError};

mod reason;
pub use reason::Reason;

/// A broker error.
#[derive(Debug)]
pub enum Error {
    /// No topic of that name.
    TopicNotFound {
        /// Requested topic.
        topic: String,
    },
    /// The topic has no such partition.
    PartitionNotFound {
        /// Topic.
        topic: String,
        /// Requested partition.
        partition: u32,
        /// Partitions the topic has.
        partitions: u32,
    },
    /// A topic of that name exists already.
    TopicExists {
        /// The topic.
        topic: String,
    },
    /// The topic name breaks the naming rules.
    InvalidTopicName {
        /// The name given.
        name: String,
        /// Which rule.
        reason: String,
    },
    /// A partition count outside the valid range.
    InvalidPartitions {
        /// Requested count.
        requested: u32,
        /// Smallest valid count.
        min: u32,
        /// Largest valid count.
        max: u32,
    },
    /// A configuration key is unknown or its value invalid.
    InvalidConfig {
        /// The key.
        key: String,
        /// What is wrong, with the valid range.
        reason: String,
    },
    /// Some other field of the request is invalid; the message says which.
    InvalidArgument(String),
    /// A produce to a topic that declares another principal as its writer.
    NotDeclaredWriter {
        /// The topic.
        topic: String,
        /// Its declared writer.
        writer: String,
        /// Who asked (None: anonymous).
        principal: Option<String>,
    },
    /// No ACL allows the caller this, or one denies it.
    PermissionDenied {
        /// The caller ("" when anonymous).
        principal: String,
        /// What it asked to do ("read", "write", ...).
        operation: String,
        /// Of what kind ("topic", "group", "cluster").
        resource_type: String,
        /// Which.
        resource: String,
    },
    /// A client asked to change an internal (`__`) topic, or to read the
    /// records of the credentials topic (`read`).
    InternalTopic {
        /// The topic.
        topic: String,
        /// A read (PERMISSION_DENIED) rather than a change (INVALID_ARGUMENT).
        read: bool,
        /// What was refused.
        message: String,
    },
    /// A conditional append (`expected_offset`) found the partition's next
    /// offset elsewhere; nothing was stored.
    OffsetMismatch {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// The next offset the request required.
        expected: u64,
        /// The partition's next offset.
        actual: u64,
    },
    /// A produce under a producer id (or epoch) this broker did not issue to
    /// the caller.
    UnknownProducer {
        /// The id.
        producer_id: i64,
        /// Why, and what to do.
        message: String,
    },
    /// A per-key conditional append found the key's latest record elsewhere.
    KeyMismatch {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// The latest offset the request required (None: absent).
        expected: Option<u64>,
        /// The key's latest offset (None: absent).
        actual: Option<u64>,
    },
    /// An idempotent producer's batch was refused (fenced, or out of order).
    Producer {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// The producer.
        producer_id: i64,
        /// Why.
        error: SeqError,
    },
    /// A broker-wide budget (memory, connections) is spent for now: retry
    /// later. `limit` names the setting.
    Busy {
        /// The setting or bound.
        limit: &'static str,
        /// The numbers and what to change.
        message: String,
    },
    /// A count the broker bounds (ACLs, tokens, producers, keys, file
    /// descriptors) is reached: retrying will not help until some go.
    LimitReached {
        /// The setting or bound.
        limit: &'static str,
        /// The numbers and what to change.
        message: String,
    },
    /// A produce request whose records, stored, would exceed what one fetch
    /// reply can carry (`server.max_request_bytes`).
    RequestTooLarge {
        /// Records in the request.
        records: usize,
        /// Their stored size as one batch, in bytes.
        stored: usize,
        /// The limit, in bytes.
        limit: usize,
    },
    /// A record is larger than the topic allows.
    RecordTooLarge {
        /// Index of the record in the request.
        index: usize,
        /// Its stored size in bytes.
        size: usize,
        /// The topic's `max.message.bytes`.
        limit: u64,
    },
    /// A read or reset outside [log start, high watermark].
    OffsetOutOfRange {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// Requested offset.
        offset: u64,
        /// First readable offset.
        log_start: u64,
        /// One past the last readable offset.
        high_watermark: u64,
    },
    /// The stored bytes at the requested offset are damaged.
    DataLoss {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// Where, what, and where reading can go on.
        damage: Box<Damage>,
    },
    /// No consumer group of that id.
    GroupNotFound {
        /// The group id.
        group: String,
    },
    /// The group's state refuses the request (fencing, membership).
    Group(GroupError),
    /// The broker or the partition cannot serve the request now (why, and
    /// the message).
    Unavailable(Unavailability, String),
    /// Another process holds the data directory.
    DataDirInUse {
        /// The directory.
        dir: std::path::PathBuf,
        /// The holder's PID, if it could be read.
        holder: Option<u32>,
    },
    /// Start-up found damage it will not repair on its own; nothing was changed.
    RecoveryRefused {
        /// The file or directory.
        path: std::path::PathBuf,
        /// What is wrong, and what the operator can do.
        reason: String,
    },
    /// A bug: a task panicked or an invariant broke; the message says where.
    Internal(String),
    /// The disk failed; what we were doing and the OS error.
    Storage {
        /// What we were doing.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
}

/// Why a request got UNAVAILABLE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailability {
    /// The broker is stopping.
    Stopping,
    /// The partition was closed under the request (a stop or a deletion).
    PartitionClosed,
    /// An fsync failed: read-only until restart.
    ReadOnly,
    /// Start-up refused to cut damage in the partition's log.
    Damaged,
    /// A transient conflict: send the same request again.
    Retry,
}

/// The `limit` of the refusal a partition's full table of idempotent
/// producers gives.
pub const PRODUCER_TABLE_LIMIT: &str = "producers_per_partition";

/// Result alias for broker operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with what we were doing.
    pub fn storage(context: impl Into<String>, source: io::Error) -> Error {
        Error::Storage { context: context.into(), source }
    }

    /// Converts a log error, naming the partition.
    pub fn from_log(topic: &str, partition: u32, e: LogError) -> Error {
        match e {
            LogError::OffsetOutOfRange { offset, log_start, high_watermark } => {
                Error::OffsetOutOfRange { topic: topic.to_string(), partition, offset, log_start, high_watermark }
            }
            LogError::Closed => {
                Error::Unavailable(Unavailability::PartitionClosed, format!("partition {topic}/{partition} is closed"))
            }
            LogError::DataLoss(damage) => Error::DataLoss { topic: topic.to_string(), partition, damage },
            LogError::ReadOnly(cause) => Error::Unavailable(
                Unavailability::ReadOnly,
                format!(
                    "partition {topic}/{partition} is read-only: {cause}, so nothing written since \
                 the last good fsync is acknowledged as durable; restart the broker (start-up checks the log)"
                ),
            ),
            LogError::Refused(why) => Error::Unavailable(
                Unavailability::Damaged,
                format!("partition {topic}/{partition} takes no writes: start-up refused to cut damage in {why}"),
            ),
            LogError::Io(e) => Error::storage(format!("partition {topic}/{partition}"), e),
            LogError::UnexpectedOffset { expected, actual } => {
                Error::OffsetMismatch { topic: topic.to_string(), partition, expected, actual }
            }
        }
    }
}

impl Error {
    /// True for a partition's full table of idempotent producers.
    pub fn is_producer_table_full(&self) -> bool {
        matches!(self, Error::LimitReached { limit, .. } if *limit == PRODUCER_TABLE_LIMIT)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::TopicNotFound { topic } => write!(f, "topic '{topic}' does not exist"),
            Error::PartitionNotFound { topic, partition, partitions } => write!(
                f,
                "topic '{topic}' has no partition {partition}; valid partitions are 0..{}",
                partitions.saturating_sub(1)
            ),
            Error::TopicExists { topic } => write!(f, "topic '{topic}' already exists"),
            Error::InvalidTopicName { name, reason } => write!(f, "invalid topic name '{name}': {reason}"),
            Error::InvalidPartitions { requested, min, max } => {
                write!(f, "invalid partition count {requested}: must be between {min} and {max}")
            }
            Error::InvalidConfig { key, reason } => write!(f, "invalid config '{key}': {reason}"),
            Error::InvalidArgument(msg) => f.write_str(msg),
            Error::Busy { message, .. }
            | Error::LimitReached { message, .. }
            | Error::InternalTopic { message, .. }
            | Error::UnknownProducer { message, .. } => f.write_str(message),
            Error::PermissionDenied { principal, operation, resource_type, resource } => write!(
                f,
                "principal {principal:?} may not {operation} {resource_type} {resource:?}: no ACL allows it, or one denies it"
            ),
            Error::NotDeclaredWriter { topic, writer, principal } => write!(
                f,
                "write to topic {topic} denied: its declared writer is {writer:?} (writer.principal), not {}",
                principal.as_deref().map_or("an anonymous client".to_string(), |p| format!("{p:?}"))
            ),
            Error::OffsetMismatch { topic, partition, expected, actual } => write!(
                f,
                "conditional append to {topic}/{partition} refused: expected_offset is {expected}, but the partition's next offset is {actual}; nothing was stored"
            ),
            Error::KeyMismatch { topic, partition, expected, actual } => {
                let at = |o: &Option<u64>| o.map_or("absent".to_string(), |o| format!("at offset {o}"));
                write!(
                    f,
                    "conditional append to {topic}/{partition} refused: the key's latest record is {}, the request expected it {}; nothing was stored",
                    at(actual),
                    at(expected)
                )
            }
            Error::Producer { topic, partition, producer_id, error } => match error {
                SeqError::Fenced { epoch, current } => write!(
                    f,
                    "producer {producer_id} epoch {epoch} is fenced on {topic}/{partition}: a newer instance (epoch {current}) has taken over; nothing was stored"
                ),
                SeqError::OutOfOrder { got, expected } => write!(
                    f,
                    "producer {producer_id} sent sequence {got} to {topic}/{partition}, expected {expected} (the next, or one of the last 5 for a retry); nothing was stored"
                ),
            },
            Error::RequestTooLarge { records, stored, limit } => write!(
                f,
                "produce request of {records} records would be stored as {stored} bytes, over server.max_request_bytes = {limit} (the most one fetch reply carries); send fewer records per request"
            ),
            Error::RecordTooLarge { index, size, limit } => write!(
                f,
                "record {index} is {size} bytes, over the topic's max.message.bytes limit of {limit} bytes"
            ),
            Error::OffsetOutOfRange { topic, partition, offset, log_start, high_watermark } => write!(
                f,
                "offset {offset} is out of range for {topic}/{partition}: valid offsets are {log_start}..={high_watermark} (log start..=high watermark)"
            ),
            Error::DataLoss { topic, partition, damage: d } => write!(
                f,
                "{topic}/{partition}: offsets {}..{} are lost: the batch at byte {} of {} is damaged ({}); \
                 the next readable offset is {} (read from there, or set skip_damaged to be taken there)",
                d.from,
                d.next,
                d.position,
                d.file.display(),
                d.reason,
                d.next
            ),
            Error::GroupNotFound { group } => write!(f, "consumer group '{group}' does not exist"),
            Error::Group(e) => e.fmt(f),
            Error::Unavailable(_, msg) => f.write_str(msg),
            Error::Internal(msg) => f.write_str(msg),
            Error::RecoveryRefused { path, reason } => {
                write!(f, "refusing to start: {}: {reason}", path.display())
            }
            Error::DataDirInUse { dir, holder } => {
                write!(f, "data directory {} is in use by another strata process", dir.display())?;
                if let Some(pid) = holder {
                    write!(f, " (pid {pid})")?;
                }
                write!(f, "; stop it first, or give this one another --data-dir")
            }
            Error::Storage { context, source } => write!(f, "storage error in {context}: {source}"),
        }
    }
}

/// Why a group operation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupError {
    /// The member is not (or no longer) in the group: expired, left or fenced.
    UnknownMember(String),
    /// The request carries an epoch other than the member's current one.
    StaleEpoch {
        /// Member.
        member: String,
        /// Epoch sent.
        got: i32,
        /// Current epoch.
        current: i32,
    },
    /// A commit for a partition the member does not own.
    NotAssigned {
        /// Member.
        member: String,
        /// The partition.
        tp: (String, u32),
    },
    /// A join without a subscription.
    NoSubscription,
    /// A standalone commit while the group has members.
    GroupHasMembers(usize),
    /// A heartbeat of a member with a non-zero epoch for a group that does
    /// not exist (any more).
    NotInGroup {
        /// Member.
        member: String,
        /// Group.
        group: String,
    },
    /// An operation that needs a group without members.
    NotEmpty {
        /// Group.
        group: String,
        /// Its members.
        members: usize,
        /// What was asked ("delete", "reset offsets of").
        action: &'static str,
    },
}

impl std::fmt::Display for GroupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GroupError::UnknownMember(m) => {
                write!(f, "member {m} is not in the group (expired, left, or fenced by a newer instance); rejoin with member_epoch 0")
            }
            GroupError::StaleEpoch { member, got, current } => {
                write!(f, "member {member} sent epoch {got} but its current epoch is {current}: fenced")
            }
            GroupError::NotAssigned { member, tp } => {
                write!(f, "member {member} does not own {}/{}: fenced", tp.0, tp.1)
            }
            GroupError::NoSubscription => write!(f, "a join needs topics or a topic_pattern"),
            GroupError::GroupHasMembers(n) => {
                write!(f, "the group has {n} active member(s): only members may commit, with their id and epoch")
            }
            GroupError::NotInGroup { member, group } => {
                write!(f, "member {member} is not in group '{group}'; rejoin with member_epoch 0")
            }
            GroupError::NotEmpty { group, members, action } => {
                write!(f, "cannot {action} group '{group}': it has {members} member(s); stop its consumers first")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Storage { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<GroupError> for Error {
    fn from(e: GroupError) -> Self {
        Error::Group(e)
    }
}

/// Why an idempotent batch is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqError {
    /// Its epoch is older than the newest this partition has seen.
    Fenced {
        /// The batch's epoch.
        epoch: i16,
        /// The newest.
        current: i16,
    },
    /// Not the next sequence and not a kept one.
    OutOfOrder {
        /// The batch's sequence.
        got: i32,
        /// The sequence expected next.
        expected: i32,
    },
}
