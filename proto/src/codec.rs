//! The codecs: prost, with differences that matter to a broker facing
//! untrusted clients, and to speed.
//!
//! - Both sides encode into a buffer reserved at the message's encoded
//!   length ([`SizedEncoder`]): prost's own encoder lets tonic's buffer
//!   grow by doubling, copying a 1 MB produce request or fetch reply about
//!   once more than it writes it.
//! - A request that does not decode is `INVALID_ARGUMENT` naming the message
//!   and what failed (prost's codec says `INTERNAL`, as if the broker broke).
//! - A `ProduceRequest` is scanned on the wire before it is decoded: more
//!   than [`MAX_PRODUCE_RECORDS`] records or [`MAX_PRODUCE_HEADERS`] headers
//!   are refused without building them. A record can be 2 bytes on the wire
//!   but is about 100 bytes decoded, so without the scan a 32 MB request of
//!   empty records costs gigabytes; with it, decoding costs at most the
//!   request's size plus a fixed few megabytes. A `FetchRequest` naming more
//!   than [`MAX_FETCH_PARTITIONS`] partitions is refused the same way.

use std::any::TypeId;
use std::marker::PhantomData;

use bytes::Buf;
use prost::encoding::{decode_key, decode_varint, WireType};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

use crate::v1::{FetchRequest, ProduceRequest};

/// Most records one `ProduceRequest` may carry.
pub const MAX_PRODUCE_RECORDS: usize = 100_000;
/// Most headers one `ProduceRequest` may carry, over all its records.
pub const MAX_PRODUCE_HEADERS: usize = 100_000;

/// Most partitions one `FetchRequest` may name.
pub const MAX_FETCH_PARTITIONS: usize = 10_000;

/// Field numbers the scans follow: `ProduceRequest.records`, `Record.headers`,
/// `FetchRequest.partitions`.
const PRODUCE_RECORDS_FIELD: u32 = 3;
const FETCH_PARTITIONS_FIELD: u32 = 1;
const RECORD_HEADERS_FIELD: u32 = 5;

/// A scan of a message's wire bytes before it is decoded.
type WireCheck = fn(&[u8]) -> Result<(), String>;

/// Prost encoding into a buffer reserved at the message's size.
#[derive(Debug)]
pub struct SizedEncoder<T>(PhantomData<T>);

impl<T: Message> Encoder for SizedEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.reserve(item.encoded_len());
        item.encode_raw(buf);
        Ok(())
    }
}

/// The codec of servers and clients: [`SizedEncoder`]; decoding as
/// described in the module docs (the scans apply to requests only, so a
/// client decodes replies as prost does, with a clearer error).
#[derive(Debug, Clone)]
pub struct StrataCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for StrataCodec<T, U> {
    fn default() -> Self {
        StrataCodec(PhantomData)
    }
}

impl<T, U> Codec for StrataCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = SizedEncoder<T>;
    type Decoder = StrataDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        SizedEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrataDecoder(PhantomData)
    }
}

/// See [`StrataCodec`].
#[derive(Debug)]
pub struct StrataDecoder<U>(PhantomData<U>);

impl<U: Message + Default + 'static> Decoder for StrataDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let name = message_name::<U>();
        let check: Option<WireCheck> = match TypeId::of::<U>() {
            t if t == TypeId::of::<ProduceRequest>() => Some(check_produce),
            t if t == TypeId::of::<FetchRequest>() => Some(check_fetch),
            _ => None,
        };
        if let Some(check) = check {
            // A decode buffer holds one whole message, contiguous.
            let len = buf.remaining();
            let chunk = buf.chunk();
            if chunk.len() < len {
                return Err(refusal(
                    tonic::Code::Internal,
                    "INTERNAL",
                    marks(true, false),
                    format!("{name} buffer is not contiguous"),
                ));
            }
            check(&chunk[..len]).map_err(|e| malformed(format!("{name} {e}")))?;
        }
        U::decode(buf).map(Some).map_err(|e| malformed(format!("{name} does not decode as protobuf: {e}")))
    }
}

/// INVALID_ARGUMENT with reason MALFORMED_REQUEST (errors.proto): final,
/// definite.
fn malformed(message: String) -> Status {
    refusal(tonic::Code::InvalidArgument, "MALFORMED_REQUEST", marks(false, true), message)
}

/// `ErrorInfo.domain` of every refusal.
pub const DOMAIN: &str = "strata.v1";

/// The metadata every refusal carries: whether a retry may succeed, and
/// whether the refusal changed nothing (errors.proto).
pub fn marks(retriable: bool, definite: bool) -> std::collections::HashMap<String, String> {
    std::collections::HashMap::from([
        ("retriable".to_string(), retriable.to_string()),
        ("definite".to_string(), definite.to_string()),
    ])
}

/// A status carrying a `google.rpc.ErrorInfo` (domain `strata.v1`) of
/// `reason` (an errors.proto name) and `metadata` (with [`marks`]): how
/// every refusal of the broker is made.
pub fn refusal(
    code: tonic::Code,
    reason: &str,
    metadata: std::collections::HashMap<String, String>,
    message: String,
) -> Status {
    use tonic_types::{ErrorDetails, StatusExt};
    let info = ErrorDetails::with_error_info(reason, DOMAIN, metadata);
    Status::with_error_details(code, message, info)
}

fn message_name<U>() -> &'static str {
    let full = std::any::type_name::<U>();
    full.rsplit("::").next().unwrap_or(full)
}

/// Counts the records and headers of an encoded `ProduceRequest`, failing
/// at the first one past its limit. Linear in the message, allocation-free.
fn check_produce(mut msg: &[u8]) -> Result<(), String> {
    let (mut records, mut headers) = (0usize, 0usize);
    while !msg.is_empty() {
        let (field, body) = next_field(&mut msg)?;
        if field != PRODUCE_RECORDS_FIELD {
            continue;
        }
        let Some(mut record) = body else { continue };
        records += 1;
        if records > MAX_PRODUCE_RECORDS {
            return Err(format!(
                "has more than {MAX_PRODUCE_RECORDS} records (the most one request may carry; send more requests)"
            ));
        }
        while !record.is_empty() {
            if let (RECORD_HEADERS_FIELD, Some(_)) = next_field(&mut record)? {
                headers += 1;
                if headers > MAX_PRODUCE_HEADERS {
                    return Err(format!(
                        "has more than {MAX_PRODUCE_HEADERS} headers in all (the most one request may carry)"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Counts the partitions an encoded `FetchRequest` names.
fn check_fetch(mut msg: &[u8]) -> Result<(), String> {
    let mut partitions = 0usize;
    while !msg.is_empty() {
        if let (FETCH_PARTITIONS_FIELD, Some(_)) = next_field(&mut msg)? {
            partitions += 1;
            if partitions > MAX_FETCH_PARTITIONS {
                return Err(format!("names more than {MAX_FETCH_PARTITIONS} partitions (the most one fetch may name)"));
            }
        }
    }
    Ok(())
}

/// Reads one field's key and skips its value; returns the field number and,
/// for a length-delimited field, its bytes.
fn next_field<'a>(msg: &mut &'a [u8]) -> Result<(u32, Option<&'a [u8]>), String> {
    let malformed = |e: prost::DecodeError| format!("does not decode as protobuf: {e}");
    let (field, wire) = decode_key(msg).map_err(malformed)?;
    let body = match wire {
        WireType::Varint => {
            decode_varint(msg).map_err(malformed)?;
            None
        }
        WireType::SixtyFourBit => take(msg, 8).map(|_| None)?,
        WireType::ThirtyTwoBit => take(msg, 4).map(|_| None)?,
        WireType::LengthDelimited => {
            let len = decode_varint(msg).map_err(malformed)?;
            Some(take(msg, usize::try_from(len).unwrap_or(usize::MAX))?)
        }
        // Groups are not used by Strata's messages; prost rejects them below.
        WireType::StartGroup | WireType::EndGroup => {
            return Err(format!(
                "does not decode as protobuf: field {field} is a group, which Strata's messages never use"
            ))
        }
    };
    Ok((field, body))
}

fn take<'a>(msg: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if msg.len() < n {
        return Err("does not decode as protobuf: a field runs past the end of the message".into());
    }
    let (head, rest) = msg.split_at(n);
    *msg = rest;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{Header, Record};

    fn encoded(records: usize, headers_each: usize) -> Vec<u8> {
        let record = Record {
            headers: vec![Header { key: "k".into(), value: Default::default() }; headers_each],
            ..Default::default()
        };
        ProduceRequest { topic: "t".into(), records: vec![record; records], ..Default::default() }.encode_to_vec()
    }

    #[test]
    fn counts_records_and_headers_at_and_past_the_limits() {
        assert!(check_produce(&encoded(MAX_PRODUCE_RECORDS, 0)).is_ok());
        assert!(check_produce(&encoded(MAX_PRODUCE_RECORDS + 1, 0)).unwrap_err().contains("100000 records"));
        assert!(check_produce(&encoded(1, MAX_PRODUCE_HEADERS)).is_ok());
        assert!(check_produce(&encoded(2, MAX_PRODUCE_HEADERS / 2 + 1)).unwrap_err().contains("headers"));
        let fetch = |n| {
            let p = crate::v1::FetchPartition { topic: "t".into(), ..Default::default() };
            FetchRequest { partitions: vec![p; n], ..Default::default() }.encode_to_vec()
        };
        assert!(check_fetch(&fetch(MAX_FETCH_PARTITIONS)).is_ok());
        assert!(check_fetch(&fetch(MAX_FETCH_PARTITIONS + 1)).unwrap_err().contains("10000 partitions"));
    }

    #[test]
    fn malformed_bytes_are_an_error_not_a_panic() {
        let good = encoded(3, 2);
        for cut in 0..good.len() {
            let _ = check_produce(&good[..cut]);
        }
        assert!(check_produce(&[0xff]).is_err());
        assert!(check_produce(&[0x1a, 0x80, 0x80, 0x80, 0x80, 0x10]).is_err());
    }
}
