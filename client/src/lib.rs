//! Rust client for Strata: a thin layer over the generated gRPC clients.
//!
//! Everything on the wire is plain `strata.v1` protobuf (re-exported as
//! [`proto`]), so other languages can generate the same clients from `proto/`.

pub mod group;
pub mod partitioner;
pub mod producer;
pub mod raw;
pub mod refusal;

use std::time::Duration;

use bytes::Bytes;
pub use producer::{Producer, RetryPolicy};
use proto::{admin_client::AdminClient, broker_client::BrokerClient, groups_client::GroupsClient};
pub use refusal::Refusal;
pub use strata_proto::v1 as proto;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Largest reply the client accepts (a fetch returns whole batches).
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// A channel that adds the client's credentials to every request.
pub type Transport = InterceptedService<Channel, Credentials>;

/// Connected clients of the Broker and Admin services, sharing one HTTP/2 connection.
#[derive(Clone)]
pub struct Client {
    /// Produce, fetch, subscribe, list offsets.
    pub broker: BrokerClient<Transport>,
    /// Topics, identity, ACLs, API tokens.
    pub admin: AdminClient<Transport>,
    /// Consumer groups.
    pub groups: GroupsClient<Transport>,
}

/// Credentials sent with every request: an API token as
/// `authorization: Bearer <token>`, or a username and password as
/// `authorization: Basic <base64 user:password>` (use TLS: they travel in
/// every request). With mutual TLS the certificate is a credential too,
/// given in [`TlsOptions`].
#[derive(Clone, Default)]
pub struct Credentials {
    bearer: Option<MetadataValue<Ascii>>,
}

impl Credentials {
    /// None.
    pub fn none() -> Credentials {
        Credentials::default()
    }

    /// An API token (`strata_<id>_<secret>`, or the broker's bootstrap token).
    pub fn token(token: &str) -> Result<Credentials, String> {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| "an API token must be printable ASCII without line breaks".to_string())?;
        Ok(Credentials { bearer: Some(value) })
    }

    /// A user and password.
    pub fn password(user: &str, password: &str) -> Result<Credentials, String> {
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let value = format!("Basic {encoded}").parse().map_err(|_| "unencodable credentials".to_string())?;
        Ok(Credentials { bearer: Some(value) })
    }
}

impl tonic::service::Interceptor for Credentials {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.bearer {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// Turns "host:port" into "http://host:port" (an URI is kept as it is).
pub fn endpoint_uri(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// TLS for a connection (PEM contents). Without a CA, the system's roots
/// are trusted; a certificate and key make it mutual TLS.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// CA certificates the broker's certificate must chain to.
    pub ca_pem: Option<Vec<u8>>,
    /// The client's certificate chain (mutual TLS).
    pub cert_pem: Option<Vec<u8>>,
    /// Its private key.
    pub key_pem: Option<Vec<u8>>,
    /// The name the broker's certificate must carry (default: the host of
    /// the address).
    pub server_name: Option<String>,
}

/// A channel (one HTTP/2 connection) to a broker at `addr`, over TLS when
/// `tls` is given, with the window and frame sizes Strata's replies want.
pub async fn channel(addr: &str, tls: Option<&TlsOptions>) -> Result<Channel, tonic::transport::Error> {
    let uri = match tls {
        Some(_) => endpoint_uri(addr).replacen("http://", "https://", 1),
        None => endpoint_uri(addr),
    };
    let mut endpoint = Endpoint::from_shared(uri)?;
    if let Some(t) = tls {
        let mut config = ClientTlsConfig::new();
        config = match &t.ca_pem {
            Some(ca) => config.ca_certificate(Certificate::from_pem(ca)),
            None => config.with_native_roots(),
        };
        if let (Some(cert), Some(key)) = (&t.cert_pem, &t.key_pem) {
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(name) = &t.server_name {
            config = config.domain_name(name);
        }
        endpoint = endpoint.tls_config(config)?;
    }
    endpoint
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        // Large windows keep a pipelined producer or a big fetch from
        // stalling on HTTP/2 flow control.
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(16 << 20))
        // The broker sends fetch replies in frames of this size; at the
        // HTTP/2 default of 16 KiB a 4 MiB fetch costs 256 writes, which
        // measured as half of a fetch's time.
        .max_frame_size(Some(1 << 20))
        .connect()
        .await
}

impl Client {
    /// Connects to a broker at `addr` ("127.0.0.1:7400" or "http://host:port").
    pub async fn connect(addr: &str) -> Result<Client, tonic::transport::Error> {
        Client::connect_with(addr, None).await
    }

    /// As [`Client::connect`], over TLS when `tls` is given.
    pub async fn connect_with(addr: &str, tls: Option<&TlsOptions>) -> Result<Client, tonic::transport::Error> {
        let channel = channel(addr, tls).await?;
        Ok(Client::from_channel(channel, Credentials::none()))
    }

    /// Wraps an existing channel; `credentials` go with every request.
    pub fn from_channel(channel: Channel, credentials: Credentials) -> Client {
        let t = InterceptedService::new(channel, credentials);
        Client {
            broker: BrokerClient::new(t.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            admin: AdminClient::new(t.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES),
            groups: GroupsClient::new(t),
        }
    }

    /// Creates a topic (`partitions` 0 = broker default).
    pub async fn create_topic(
        &mut self,
        name: &str,
        partitions: u32,
        configs: impl IntoIterator<Item = (String, String)>,
    ) -> Result<proto::TopicDescription, tonic::Status> {
        let req = proto::CreateTopicRequest { name: name.into(), partitions, configs: configs.into_iter().collect() };
        Ok(self.admin.create_topic(req).await?.into_inner().topic.unwrap_or_default())
    }

    /// Produces `records` to `topic` (to `partition`, or broker-chosen).
    pub async fn produce(
        &mut self,
        topic: &str,
        partition: Option<u32>,
        records: Vec<proto::Record>,
        acks: proto::Acks,
    ) -> Result<proto::ProduceResponse, tonic::Status> {
        let req =
            proto::ProduceRequest { topic: topic.into(), partition, records, acks: acks as i32, ..Default::default() };
        Ok(self.broker.produce(req).await?.into_inner())
    }

    /// Fetches one partition from `offset`, waiting up to `max_wait` for data.
    pub async fn fetch(
        &mut self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: u32,
        max_wait: Duration,
    ) -> Result<proto::PartitionRecords, tonic::Status> {
        let req = proto::FetchRequest {
            partitions: vec![proto::FetchPartition {
                topic: topic.into(),
                partition,
                offset,
                max_bytes,
                skip_damaged: false,
            }],
            max_wait_ms: max_wait.as_millis() as u32,
            min_bytes: 1,
            max_bytes,
        };
        let mut reply = self.broker.fetch(req).await?.into_inner();
        Ok(reply.partitions.pop().unwrap_or_default())
    }
}

/// A record with a value and an optional key.
pub fn record(key: Option<Bytes>, value: Bytes) -> proto::Record {
    proto::Record { offset: 0, timestamp_ms: 0, key, value: Some(value), headers: Vec::new() }
}
