//! The machine-readable reason of every refusal: [`Reason`], defined from
//! one row per reason (the same names and marks as
//! `proto/strata/v1/errors.proto`, checked by a test in `server/status.rs`),
//! and each [`Error`]'s reason and metadata.

use std::io;

use super::{Error, GroupError, SeqError, Unavailability};

/// Defines [`Reason`] from one row per reason: its name (as in
/// `proto/strata/v1/errors.proto`), whether a retry may succeed, and whether
/// a refusal with it changed nothing.
macro_rules! reasons {
    ($( $variant:ident = $name:literal, $retriable:literal, $definite:literal; )*) => {
        /// The machine-readable reason of a refusal (`ErrorInfo.reason`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Reason { $( #[doc = $name] $variant, )* }

        impl Reason {
            /// Every reason, in the order of errors.proto.
            pub const ALL: &[Reason] = &[$( Reason::$variant, )*];

            /// The name clients see (`ErrorInfo.reason`).
            pub fn as_str(self) -> &'static str {
                match self { $( Reason::$variant => $name, )* }
            }

            /// The same request, sent again unchanged, may succeed later.
            pub fn retriable(self) -> bool {
                match self { $( Reason::$variant => $retriable, )* }
            }

            /// A refusal with this reason changed nothing (a produce stored
            /// nothing); false: a write may have been stored.
            pub fn definite(self) -> bool {
                match self { $( Reason::$variant => $definite, )* }
            }
        }
    };
}

reasons! {
    TopicNotFound = "TOPIC_NOT_FOUND", false, true;
    PartitionNotFound = "PARTITION_NOT_FOUND", false, true;
    GroupNotFound = "GROUP_NOT_FOUND", false, true;
    UnknownService = "UNKNOWN_SERVICE", false, true;
    TopicExists = "TOPIC_EXISTS", false, true;
    InvalidTopicName = "INVALID_TOPIC_NAME", false, true;
    InvalidPartitions = "INVALID_PARTITIONS", false, true;
    InvalidConfig = "INVALID_CONFIG", false, true;
    InvalidArgument = "INVALID_ARGUMENT", false, true;
    RecordTooLarge = "RECORD_TOO_LARGE", false, true;
    RequestTooLarge = "REQUEST_TOO_LARGE", false, true;
    MalformedRequest = "MALFORMED_REQUEST", false, true;
    InternalTopic = "INTERNAL_TOPIC", false, true;
    NoSubscription = "NO_SUBSCRIPTION", false, true;
    Unauthenticated = "UNAUTHENTICATED", false, true;
    BadCredentials = "BAD_CREDENTIALS", false, true;
    TooManyPasswordChecks = "TOO_MANY_PASSWORD_CHECKS", true, true;
    PermissionDenied = "PERMISSION_DENIED", false, true;
    NotDeclaredWriter = "NOT_DECLARED_WRITER", false, true;
    OffsetMismatch = "OFFSET_MISMATCH", false, true;
    KeyMismatch = "KEY_MISMATCH", false, true;
    ProducerFenced = "PRODUCER_FENCED", false, true;
    OutOfOrderSequence = "OUT_OF_ORDER_SEQUENCE", true, true;
    DuplicateSequence = "DUPLICATE_SEQUENCE", false, true;
    UnknownProducerId = "UNKNOWN_PRODUCER_ID", false, true;
    UnknownMember = "UNKNOWN_MEMBER", false, true;
    StaleMemberEpoch = "STALE_MEMBER_EPOCH", false, true;
    NotAssigned = "NOT_ASSIGNED", false, true;
    GroupHasMembers = "GROUP_HAS_MEMBERS", false, true;
    NotInGroup = "NOT_IN_GROUP", false, true;
    GroupNotEmpty = "GROUP_NOT_EMPTY", false, true;
    OffsetOutOfRange = "OFFSET_OUT_OF_RANGE", false, true;
    DataLoss = "DATA_LOSS", false, true;
    BrokerStopping = "BROKER_STOPPING", true, false;
    PartitionClosed = "PARTITION_CLOSED", true, false;
    PartitionReadOnly = "PARTITION_READ_ONLY", false, false;
    PartitionDamaged = "PARTITION_DAMAGED", false, true;
    Retry = "RETRY", true, false;
    MessageTooLarge = "MESSAGE_TOO_LARGE", false, true;
    Busy = "BUSY", true, true;
    LimitReached = "LIMIT_REACHED", false, true;
    DiskFull = "DISK_FULL", true, true;
    TooManyOpenFiles = "TOO_MANY_OPEN_FILES", true, true;
    SubscriberStalled = "SUBSCRIBER_STALLED", true, true;
    StorageError = "STORAGE_ERROR", true, false;
    Internal = "INTERNAL", true, false;
    StartupRefused = "STARTUP_REFUSED", false, true;
}

impl Error {
    /// The machine-readable reason clients see.
    pub fn reason(&self) -> Reason {
        match self {
            Error::TopicNotFound { .. } => Reason::TopicNotFound,
            Error::PartitionNotFound { .. } => Reason::PartitionNotFound,
            Error::TopicExists { .. } => Reason::TopicExists,
            Error::InvalidTopicName { .. } => Reason::InvalidTopicName,
            Error::InvalidPartitions { .. } => Reason::InvalidPartitions,
            Error::InvalidConfig { .. } => Reason::InvalidConfig,
            Error::InvalidArgument(_) => Reason::InvalidArgument,
            Error::NotDeclaredWriter { .. } => Reason::NotDeclaredWriter,
            Error::PermissionDenied { .. } => Reason::PermissionDenied,
            Error::InternalTopic { .. } => Reason::InternalTopic,
            Error::OffsetMismatch { .. } => Reason::OffsetMismatch,
            Error::KeyMismatch { .. } => Reason::KeyMismatch,
            Error::UnknownProducer { .. } => Reason::UnknownProducerId,
            Error::Producer { error, .. } => match error {
                SeqError::Fenced { .. } => Reason::ProducerFenced,
                SeqError::OutOfOrder { got, expected } if got < expected => Reason::DuplicateSequence,
                SeqError::OutOfOrder { .. } => Reason::OutOfOrderSequence,
            },
            Error::Busy { .. } => Reason::Busy,
            Error::LimitReached { .. } => Reason::LimitReached,
            Error::RequestTooLarge { .. } => Reason::RequestTooLarge,
            Error::RecordTooLarge { .. } => Reason::RecordTooLarge,
            Error::OffsetOutOfRange { .. } => Reason::OffsetOutOfRange,
            Error::DataLoss { .. } => Reason::DataLoss,
            Error::GroupNotFound { .. } => Reason::GroupNotFound,
            Error::Group(e) => match e {
                GroupError::UnknownMember(_) => Reason::UnknownMember,
                GroupError::StaleEpoch { .. } => Reason::StaleMemberEpoch,
                GroupError::NotAssigned { .. } => Reason::NotAssigned,
                GroupError::NoSubscription => Reason::NoSubscription,
                GroupError::GroupHasMembers(_) => Reason::GroupHasMembers,
                GroupError::NotInGroup { .. } => Reason::NotInGroup,
                GroupError::NotEmpty { .. } => Reason::GroupNotEmpty,
            },
            Error::Unavailable(why, _) => match why {
                Unavailability::Stopping => Reason::BrokerStopping,
                Unavailability::PartitionClosed => Reason::PartitionClosed,
                Unavailability::ReadOnly => Reason::PartitionReadOnly,
                Unavailability::Damaged => Reason::PartitionDamaged,
                Unavailability::Retry => Reason::Retry,
            },
            Error::DataDirInUse { .. } | Error::RecoveryRefused { .. } => Reason::StartupRefused,
            Error::Internal(_) => Reason::Internal,
            Error::Storage { source, .. } if source.kind() == io::ErrorKind::StorageFull => Reason::DiskFull,
            Error::Storage { source, .. } if matches!(source.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                Reason::TooManyOpenFiles
            }
            Error::Storage { .. } => Reason::StorageError,
        }
    }

    /// The reason's fields (`ErrorInfo.metadata`), as errors.proto lists them.
    pub fn metadata(&self) -> Vec<(&'static str, String)> {
        let tp = |topic: &str, partition: u32| vec![("topic", topic.to_string()), ("partition", partition.to_string())];
        let opt = |o: &Option<u64>| o.map_or("absent".to_string(), |o| o.to_string());
        match self {
            Error::TopicNotFound { topic } | Error::TopicExists { topic } => vec![("topic", topic.clone())],
            Error::PartitionNotFound { topic, partition, partitions } => {
                let mut m = tp(topic, *partition);
                m.push(("partitions", partitions.to_string()));
                m
            }
            Error::InvalidTopicName { name, .. } => vec![("topic", name.clone())],
            Error::InvalidPartitions { requested, min, max } => {
                vec![("requested", requested.to_string()), ("min", min.to_string()), ("max", max.to_string())]
            }
            Error::InvalidConfig { key, .. } => vec![("key", key.clone())],
            Error::NotDeclaredWriter { topic, writer, .. } => {
                vec![("topic", topic.clone()), ("writer", writer.clone())]
            }
            Error::PermissionDenied { principal, operation, resource_type, resource } => vec![
                ("principal", principal.clone()),
                ("operation", operation.clone()),
                ("resource_type", resource_type.clone()),
                ("resource", resource.clone()),
            ],
            Error::InternalTopic { topic, .. } => vec![("topic", topic.clone())],
            Error::UnknownProducer { producer_id, .. } => vec![("producer_id", producer_id.to_string())],
            Error::OffsetMismatch { topic, partition, expected, actual } => {
                let mut m = tp(topic, *partition);
                m.extend([("expected_offset", expected.to_string()), ("next_offset", actual.to_string())]);
                m
            }
            Error::KeyMismatch { topic, partition, expected, actual } => {
                let mut m = tp(topic, *partition);
                m.extend([("expected", opt(expected)), ("actual", opt(actual))]);
                m
            }
            Error::Producer { topic, partition, producer_id, error } => {
                let mut m = tp(topic, *partition);
                m.push(("producer_id", producer_id.to_string()));
                match error {
                    SeqError::Fenced { epoch, current } => {
                        m.extend([("epoch", epoch.to_string()), ("current_epoch", current.to_string())])
                    }
                    SeqError::OutOfOrder { got, expected } => {
                        m.extend([("sequence", got.to_string()), ("expected_sequence", expected.to_string())])
                    }
                }
                m
            }
            Error::Busy { limit, .. } | Error::LimitReached { limit, .. } => vec![("limit", limit.to_string())],
            Error::RequestTooLarge { records, stored, limit } => {
                vec![("records", records.to_string()), ("stored", stored.to_string()), ("limit", limit.to_string())]
            }
            Error::RecordTooLarge { index, size, limit } => {
                vec![("index", index.to_string()), ("size", size.to_string()), ("limit", limit.to_string())]
            }
            Error::OffsetOutOfRange { topic, partition, offset, log_start, high_watermark } => {
                let mut m = tp(topic, *partition);
                m.extend([
                    ("offset", offset.to_string()),
                    ("log_start_offset", log_start.to_string()),
                    ("high_watermark", high_watermark.to_string()),
                ]);
                m
            }
            Error::DataLoss { topic, partition, damage } => {
                let mut m = tp(topic, *partition);
                m.extend([
                    ("from_offset", damage.from.to_string()),
                    ("next_offset", damage.next.to_string()),
                    ("file", damage.file.display().to_string()),
                    ("position", damage.position.to_string()),
                ]);
                m
            }
            Error::GroupNotFound { group } => vec![("group", group.clone())],
            Error::Group(e) => match e {
                GroupError::UnknownMember(m) => vec![("member", m.clone())],
                GroupError::StaleEpoch { member, got, current } => {
                    vec![("member", member.clone()), ("epoch", got.to_string()), ("current_epoch", current.to_string())]
                }
                GroupError::NotAssigned { member, tp: (t, p) } => {
                    vec![("member", member.clone()), ("topic", t.clone()), ("partition", p.to_string())]
                }
                GroupError::NoSubscription => Vec::new(),
                GroupError::GroupHasMembers(n) => vec![("members", n.to_string())],
                GroupError::NotInGroup { member, group } => vec![("member", member.clone()), ("group", group.clone())],
                GroupError::NotEmpty { group, members, .. } => {
                    vec![("group", group.clone()), ("members", members.to_string())]
                }
            },
            Error::Unavailable(..)
            | Error::InvalidArgument(_)
            | Error::DataDirInUse { .. }
            | Error::RecoveryRefused { .. }
            | Error::Internal(_)
            | Error::Storage { .. } => Vec::new(),
        }
    }
}
