//! The broker's refusals, as machine-readable as it sends them: every error
//! status carries a `google.rpc.ErrorInfo` (domain `strata.v1`) whose reason
//! is an `ErrorReason` name from `proto/strata/v1/errors.proto`, with its
//! fields as metadata. Clients decide by these, never by the message.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::StatusExt;

/// `ErrorInfo.domain` of the broker's refusals.
pub use strata_proto::codec::DOMAIN;

/// A refusal's reason and fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// An `ErrorReason` name ("OFFSET_MISMATCH").
    pub reason: String,
    /// Its fields, and "retriable" and "definite".
    pub metadata: HashMap<String, String>,
}

impl Refusal {
    /// The broker's refusal in `status`, if it carries one (transport
    /// failures and timeouts do not).
    pub fn of(status: &Status) -> Option<Refusal> {
        let info = status.get_error_details().error_info()?.clone();
        (info.domain == DOMAIN).then(|| Refusal { reason: info.reason, metadata: info.metadata.into_iter().collect() })
    }

    /// The refusal carried in a ProduceStream reply.
    pub fn of_stream_error(e: &crate::proto::Error) -> Option<Refusal> {
        (!e.reason.is_empty()).then(|| Refusal { reason: e.reason.clone(), metadata: e.metadata.clone() })
    }

    /// Whether this is `reason`.
    pub fn is(&self, reason: crate::proto::ErrorReason) -> bool {
        self.reason == reason.as_str_name()
    }

    /// A field.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    /// A numeric field (offsets, sequences).
    pub fn number(&self, key: &str) -> Option<u64> {
        self.get(key)?.parse().ok()
    }

    /// The same request may succeed later.
    pub fn retriable(&self) -> bool {
        self.get("retriable") == Some("true")
    }

    /// The request changed nothing (a produce stored nothing).
    pub fn definite(&self) -> bool {
        self.get("definite") == Some("true")
    }
}

/// Whether `reason` is the refusal in `status`.
pub fn is(status: &Status, reason: crate::proto::ErrorReason) -> bool {
    Refusal::of(status).is_some_and(|r| r.is(reason))
}

/// Whether a write that failed with `status` may have been stored: the
/// broker says so (indeterminate), or no refusal came back at all (the
/// connection broke, the attempt timed out).
pub fn outcome_unknown(status: &Status) -> bool {
    match Refusal::of(status) {
        Some(r) => !r.definite(),
        None => matches!(
            status.code(),
            Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Cancelled | Code::Aborted
        ),
    }
}
