//! Calls with protobuf bytes as they are: for tools and tests that must send
//! what a well-behaved client would not (malformed or adversarial messages).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::Status;

/// A codec that sends and receives message bytes unchanged.
#[derive(Clone, Copy, Debug, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining())))
    }
}

/// A gRPC client on `channel` without message size limits.
pub fn grpc(channel: Channel) -> tonic::client::Grpc<Channel> {
    tonic::client::Grpc::new(channel).max_encoding_message_size(usize::MAX).max_decoding_message_size(usize::MAX)
}

/// One unary call of `method` (e.g. `/strata.v1.Broker/Produce`) with `body`.
pub async fn unary(channel: Channel, method: &'static str, body: Bytes) -> Result<Bytes, Status> {
    let mut grpc = grpc(channel);
    grpc.ready().await.map_err(|e| Status::unavailable(e.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(method);
    grpc.unary(tonic::Request::new(body), path, RawCodec).await.map(|r| r.into_inner())
}

/// An encoded `ProduceRequest` for partition 0 of `topic` with `n` empty
/// records (2 bytes each on the wire, about 100 decoded).
pub fn empty_records(topic: &str, n: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(n * 2 + topic.len() + 8);
    b.put_u8(0x0a); // topic = 1
    prost_len(&mut b, topic.len());
    b.put_slice(topic.as_bytes());
    b.put_slice(&[0x10, 0x00]); // partition = 0
    for _ in 0..n {
        b.put_slice(&[0x1a, 0x00]); // records = 3, empty
    }
    b.freeze()
}

fn prost_len(b: &mut BytesMut, mut n: usize) {
    while n >= 0x80 {
        b.put_u8((n as u8) | 0x80);
        n >>= 7;
    }
    b.put_u8(n as u8);
}
