//! The one place that maps broker errors to gRPC statuses: the canonical
//! code, the message, and a `google.rpc.ErrorInfo` (domain `strata.v1`, the
//! error's [`Reason`] and metadata) in `grpc-status-details-bin`, so a client
//! generated from `proto/` tells every refusal apart without reading prose.

use std::collections::HashMap;

use tonic::{Code, Status};

use crate::error::{Error, GroupError, Reason};

pub use strata_proto::codec::DOMAIN;

/// The gRPC code of an error.
pub fn code(e: &Error) -> Code {
    match e {
        Error::TopicNotFound { .. } | Error::PartitionNotFound { .. } | Error::GroupNotFound { .. } => Code::NotFound,
        Error::Group(GroupError::NoSubscription) => Code::InvalidArgument,
        Error::Group(_)
        | Error::DataDirInUse { .. }
        | Error::RecoveryRefused { .. }
        | Error::OffsetMismatch { .. }
        | Error::KeyMismatch { .. }
        | Error::UnknownProducer { .. }
        | Error::Producer { .. } => Code::FailedPrecondition,
        Error::TopicExists { .. } => Code::AlreadyExists,
        Error::InvalidTopicName { .. }
        | Error::InvalidPartitions { .. }
        | Error::InvalidConfig { .. }
        | Error::InvalidArgument(_)
        | Error::InternalTopic { read: false, .. }
        | Error::RecordTooLarge { .. }
        | Error::RequestTooLarge { .. } => Code::InvalidArgument,
        Error::OffsetOutOfRange { .. } => Code::OutOfRange,
        Error::DataLoss { .. } => Code::DataLoss,
        Error::Unavailable(..) => Code::Unavailable,
        Error::Busy { .. } | Error::LimitReached { .. } => Code::ResourceExhausted,
        Error::NotDeclaredWriter { .. } | Error::PermissionDenied { .. } | Error::InternalTopic { read: true, .. } => {
            Code::PermissionDenied
        }
        Error::Storage { .. } => match e.reason() {
            Reason::DiskFull | Reason::TooManyOpenFiles => Code::ResourceExhausted,
            _ => Code::Internal,
        },
        Error::Internal(_) => Code::Internal,
    }
}

/// Maps a broker error to its status (code, message, ErrorInfo).
pub fn to_status(e: Error) -> Status {
    let code = code(&e);
    if code == Code::Internal || matches!(e, Error::Storage { .. }) {
        tracing::error!(error = %e, "request failed on storage");
    }
    refusal(code, e.reason(), e.to_string(), e.metadata())
}

/// A status with `reason` and `metadata` in its ErrorInfo, for refusals
/// made outside the request handlers (authentication, the request budget,
/// health); errors of the broker core go through [`to_status`].
pub fn refusal(code: Code, reason: Reason, message: String, metadata: Vec<(&'static str, String)>) -> Status {
    strata_proto::codec::refusal(code, reason.as_str(), info_metadata(reason, metadata), message)
}

/// The metadata of a refusal as clients see it: the reason's fields, plus
/// whether a retry may succeed and whether the refusal changed nothing.
pub fn info_metadata(reason: Reason, metadata: Vec<(&'static str, String)>) -> HashMap<String, String> {
    let mut m = strata_proto::codec::marks(reason.retriable(), reason.definite());
    m.extend(metadata.into_iter().map(|(k, v)| (k.to_string(), v)));
    m
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        to_status(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::StatusExt;

    /// Each ErrorReason of errors.proto, with its marks, parsed from the file.
    fn proto_reasons() -> Vec<(String, bool, bool)> {
        let text = include_str!("../../../proto/strata/v1/errors.proto");
        text.lines()
            .filter_map(|l| {
                let (decl, comment) = l.trim().split_once("; // ")?;
                let (name, _) = decl.split_once(" = ")?;
                let marks = comment.split('.').next()?;
                let (retry, definite) = marks.split_once(", ")?;
                Some((name.to_string(), retry == "retriable", definite == "definite"))
            })
            .collect()
    }

    #[test]
    fn every_reason_is_in_the_proto_with_the_same_marks_and_every_proto_reason_is_used() {
        let proto = proto_reasons();
        let ours: Vec<(String, bool, bool)> =
            Reason::ALL.iter().map(|r| (r.as_str().to_string(), r.retriable(), r.definite())).collect();
        assert_eq!(ours, proto, "Reason (error.rs) and ErrorReason (errors.proto) differ");
        // The generated enum has the same names, UNSPECIFIED aside.
        for r in Reason::ALL {
            assert!(strata_proto::v1::ErrorReason::from_str_name(r.as_str()).is_some(), "{}", r.as_str());
        }
    }

    #[test]
    fn every_error_variant_maps_to_a_reason_and_a_status_carrying_it() {
        use crate::error::{SeqError, Unavailability};
        let dmg = crate::log::Damage { file: "f".into(), position: 1, from: 2, next: 3, reason: "crc".into() };
        let all = vec![
            Error::TopicNotFound { topic: "t".into() },
            Error::PartitionNotFound { topic: "t".into(), partition: 3, partitions: 1 },
            Error::TopicExists { topic: "t".into() },
            Error::InvalidTopicName { name: "t".into(), reason: "r".into() },
            Error::InvalidPartitions { requested: 0, min: 1, max: 2 },
            Error::InvalidConfig { key: "k".into(), reason: "r".into() },
            Error::InvalidArgument("x".into()),
            Error::NotDeclaredWriter { topic: "t".into(), writer: "w".into(), principal: None },
            Error::PermissionDenied {
                principal: "p".into(),
                operation: "read".into(),
                resource_type: "topic".into(),
                resource: "t".into(),
            },
            Error::InternalTopic { topic: "__x".into(), read: true, message: "m".into() },
            Error::InternalTopic { topic: "__x".into(), read: false, message: "m".into() },
            Error::OffsetMismatch { topic: "t".into(), partition: 0, expected: 1, actual: 2 },
            Error::KeyMismatch { topic: "t".into(), partition: 0, expected: None, actual: Some(1) },
            Error::UnknownProducer { producer_id: 7, message: "m".into() },
            Error::Producer {
                topic: "t".into(),
                partition: 0,
                producer_id: 1,
                error: SeqError::Fenced { epoch: 0, current: 1 },
            },
            Error::Producer {
                topic: "t".into(),
                partition: 0,
                producer_id: 1,
                error: SeqError::OutOfOrder { got: 5, expected: 2 },
            },
            Error::Producer {
                topic: "t".into(),
                partition: 0,
                producer_id: 1,
                error: SeqError::OutOfOrder { got: 0, expected: 9 },
            },
            Error::Busy { limit: "server.reply_memory_bytes", message: "m".into() },
            Error::LimitReached { limit: "auth.max_acls", message: "m".into() },
            Error::RequestTooLarge { records: 1, stored: 2, limit: 1 },
            Error::RecordTooLarge { index: 0, size: 2, limit: 1 },
            Error::OffsetOutOfRange { topic: "t".into(), partition: 0, offset: 9, log_start: 0, high_watermark: 1 },
            Error::DataLoss { topic: "t".into(), partition: 0, damage: Box::new(dmg) },
            Error::GroupNotFound { group: "g".into() },
            Error::Group(GroupError::UnknownMember("m".into())),
            Error::Group(GroupError::StaleEpoch { member: "m".into(), got: 1, current: 2 }),
            Error::Group(GroupError::NotAssigned { member: "m".into(), tp: ("t".into(), 0) }),
            Error::Group(GroupError::NoSubscription),
            Error::Group(GroupError::GroupHasMembers(1)),
            Error::Group(GroupError::NotInGroup { member: "m".into(), group: "g".into() }),
            Error::Group(GroupError::NotEmpty { group: "g".into(), members: 1, action: "delete" }),
            Error::Unavailable(Unavailability::Stopping, "m".into()),
            Error::Unavailable(Unavailability::PartitionClosed, "m".into()),
            Error::Unavailable(Unavailability::ReadOnly, "m".into()),
            Error::Unavailable(Unavailability::Damaged, "m".into()),
            Error::Unavailable(Unavailability::Retry, "m".into()),
            Error::DataDirInUse { dir: "d".into(), holder: None },
            Error::RecoveryRefused { path: "p".into(), reason: "r".into() },
            Error::Internal("bug".into()),
            Error::storage("c", std::io::Error::from(std::io::ErrorKind::StorageFull)),
            Error::storage("c", std::io::Error::from_raw_os_error(libc::EMFILE)),
            Error::storage("c", std::io::Error::other("eio")),
        ];
        for e in all {
            let (reason, metadata, message) = (e.reason(), e.metadata(), e.to_string());
            let status = to_status(e);
            let info = status.get_error_details().error_info().cloned().expect("ErrorInfo");
            assert_eq!((info.reason.as_str(), info.domain.as_str()), (reason.as_str(), DOMAIN));
            assert_eq!(status.message(), message);
            for (k, v) in metadata {
                assert_eq!(info.metadata.get(k), Some(&v), "{reason:?}: {k}");
            }
            assert_eq!(info.metadata["retriable"], reason.retriable().to_string());
        }
    }
}
