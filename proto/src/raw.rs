//! Fetch-side replies built from stored bytes.
//!
//! The broker keeps each record batch's records as the protobuf encoding of
//! `repeated Record records = 15` (field 15 of `PartitionRecords`). A fetch reply
//! therefore needs no decoding: it writes the few scalar fields of each
//! `PartitionRecords` and then appends the stored record bytes as they are.
//! Clients decode the result as ordinary `v1::FetchResponse` messages.
//!
//! These types only ever encode; decoding one yields an empty value.

use bytes::{Buf, BufMut, Bytes};
use prost::encoding::{self, encode_key, encode_varint, encoded_len_varint, DecodeContext, WireType};
use prost::DecodeError;

/// `PartitionRecords` whose records are pre-encoded chunks.
#[derive(Debug, Default, Clone)]
pub struct PartitionRecords {
    /// Topic name.
    pub topic: String,
    /// Partition number.
    pub partition: u32,
    /// One past the last readable offset.
    pub high_watermark: u64,
    /// First readable offset.
    pub log_start_offset: u64,
    /// Where the reader continues (field 5).
    pub next_offset: u64,
    /// Concatenated `records` field entries (tag 15, length, `Record`), in offset order.
    pub records: Vec<Bytes>,
}

impl PartitionRecords {
    fn body_len(&self) -> usize {
        let mut len = 0;
        if !self.topic.is_empty() {
            len += encoding::string::encoded_len(1, &self.topic);
        }
        if self.partition != 0 {
            len += encoding::uint32::encoded_len(2, &self.partition);
        }
        if self.high_watermark != 0 {
            len += encoding::uint64::encoded_len(3, &self.high_watermark);
        }
        if self.log_start_offset != 0 {
            len += encoding::uint64::encoded_len(4, &self.log_start_offset);
        }
        if self.next_offset != 0 {
            len += encoding::uint64::encoded_len(5, &self.next_offset);
        }
        len + self.records_len()
    }

    /// Bytes of record data in this reply.
    pub fn records_len(&self) -> usize {
        self.records.iter().map(Bytes::len).sum()
    }

    fn encode_body(&self, buf: &mut impl BufMut) {
        if !self.topic.is_empty() {
            encoding::string::encode(1, &self.topic, buf);
        }
        if self.partition != 0 {
            encoding::uint32::encode(2, &self.partition, buf);
        }
        if self.high_watermark != 0 {
            encoding::uint64::encode(3, &self.high_watermark, buf);
        }
        if self.log_start_offset != 0 {
            encoding::uint64::encode(4, &self.log_start_offset, buf);
        }
        if self.next_offset != 0 {
            encoding::uint64::encode(5, &self.next_offset, buf);
        }
        for chunk in &self.records {
            buf.put_slice(chunk);
        }
    }

    /// Encodes `self` as an embedded message in field `tag`.
    fn encode_as_field(&self, tag: u32, buf: &mut impl BufMut) {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(self.body_len() as u64, buf);
        self.encode_body(buf);
    }

    fn field_len(&self, tag: u32) -> usize {
        let body = self.body_len();
        encoding::key_len(tag) + encoded_len_varint(body as u64) + body
    }
}

/// Wire-identical to `strata.v1.FetchResponse`.
#[derive(Debug, Default, Clone)]
pub struct FetchResponse {
    /// One entry per requested partition.
    pub partitions: Vec<PartitionRecords>,
    /// Milliseconds the request was held back for quotas.
    pub throttle_time_ms: u32,
}

impl prost::Message for FetchResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        for p in &self.partitions {
            p.encode_as_field(1, buf);
        }
        if self.throttle_time_ms != 0 {
            encoding::uint32::encode(2, &self.throttle_time_ms, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        // Encode-only: decode replies as `strata.v1` messages instead.
        encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        let throttle = match self.throttle_time_ms {
            0 => 0,
            t => encoding::uint32::encoded_len(2, &t),
        };
        self.partitions.iter().map(|p| p.field_len(1)).sum::<usize>() + throttle
    }

    fn clear(&mut self) {
        self.partitions.clear();
        self.throttle_time_ms = 0;
    }
}

/// Wire-identical to `strata.v1.SubscribeResponse`.
#[derive(Debug, Default, Clone)]
pub struct SubscribeResponse {
    /// The pushed records.
    pub records: PartitionRecords,
}

impl prost::Message for SubscribeResponse {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        self.records.encode_as_field(1, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        // Encode-only: decode replies as `strata.v1` messages instead.
        encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.records.field_len(1)
    }

    fn clear(&mut self) {
        self.records = PartitionRecords::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1;
    use prost::Message;

    fn stored_records(records: &[v1::Record]) -> Bytes {
        let mut buf = Vec::new();
        for r in records {
            encoding::message::encode(crate::PARTITION_RECORDS_RECORDS_FIELD, r, &mut buf);
        }
        buf.into()
    }

    #[test]
    fn raw_fetch_response_decodes_as_v1() {
        let records: Vec<v1::Record> = (0..3)
            .map(|i| v1::Record {
                offset: 7 + i,
                timestamp_ms: 1000 + i as i64,
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(vec![i as u8; 300])),
                headers: vec![v1::Header { key: "h".into(), value: Bytes::from_static(b"v") }],
            })
            .collect();
        let raw = FetchResponse {
            partitions: vec![
                PartitionRecords {
                    topic: "t".into(),
                    partition: 2,
                    high_watermark: 10,
                    log_start_offset: 0,
                    next_offset: 10,
                    records: vec![stored_records(&records[..1]), stored_records(&records[1..])],
                },
                PartitionRecords { topic: "u".into(), ..Default::default() },
            ],
            throttle_time_ms: 250,
        };
        let bytes = raw.encode_to_vec();
        assert_eq!(bytes.len(), raw.encoded_len());
        let decoded = v1::FetchResponse::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded.partitions.len(), 2);
        let p = &decoded.partitions[0];
        assert_eq!((p.topic.as_str(), p.partition, p.high_watermark), ("t", 2, 10));
        assert_eq!(p.next_offset, 10);
        assert_eq!(p.records, records);
        assert!(decoded.partitions[1].records.is_empty());
        assert_eq!(decoded.throttle_time_ms, 250);

        let sub = SubscribeResponse { records: raw.partitions[0].clone() };
        let decoded = v1::SubscribeResponse::decode(sub.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded.records.unwrap().records, records);
    }
}
