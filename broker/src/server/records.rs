//! Lets the storage codec read protobuf records directly.

use strata_proto::v1;

use crate::log::batch::RecordSource;

impl RecordSource for v1::Record {
    fn timestamp_ms(&self) -> i64 {
        self.timestamp_ms
    }
    fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }
    fn value(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }
    fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers.iter().map(|h| (h.key.as_str(), &h.value[..]))
    }
    /// The value as decoded: a slice of the request's buffer, which the log
    /// writes from without copying.
    fn shared_value(&self) -> Option<bytes::Bytes> {
        self.value.clone()
    }
}
