//! The one place that maps broker errors to gRPC statuses.

use tonic::{Code, Status};

use crate::error::{Error, GroupError};

/// Maps a broker error to the canonical gRPC code, keeping the message.
pub fn to_status(e: Error) -> Status {
    let code = match &e {
        Error::TopicNotFound { .. } | Error::PartitionNotFound { .. } | Error::GroupNotFound { .. } => Code::NotFound,
        Error::Group(GroupError::NoSubscription) => Code::InvalidArgument,
        Error::Group(_)
        | Error::DataDirInUse { .. }
        | Error::RecoveryRefused { .. }
        | Error::OffsetMismatch { .. }
        | Error::KeyMismatch { .. }
        | Error::Producer { .. } => Code::FailedPrecondition,
        Error::TopicExists { .. } => Code::AlreadyExists,
        Error::InvalidTopicName { .. }
        | Error::InvalidPartitions { .. }
        | Error::InvalidConfig { .. }
        | Error::InvalidArgument(_)
        | Error::RecordTooLarge { .. }
        | Error::RequestTooLarge { .. } => Code::InvalidArgument,
        Error::OffsetOutOfRange { .. } => Code::OutOfRange,
        Error::DataLoss { .. } => Code::DataLoss,
        Error::Unavailable(_) => Code::Unavailable,
        Error::ResourceExhausted(_) => Code::ResourceExhausted,
        Error::NotDeclaredWriter { .. } | Error::PermissionDenied(_) => Code::PermissionDenied,
        Error::Storage { source, .. }
            if source.kind() == std::io::ErrorKind::StorageFull
                || matches!(source.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) =>
        {
            Code::ResourceExhausted
        }
        Error::Storage { .. } | Error::Internal(_) => Code::Internal,
    };
    if code == Code::Internal || matches!(e, Error::Storage { .. }) {
        tracing::error!(error = %e, "request failed on storage");
    }
    Status::new(code, e.to_string())
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        to_status(e)
    }
}
