//! The gRPC listener: the only layer that knows tonic and prost.
//!
//! [`GrpcListener`] serves the Broker, Admin, Groups, health and reflection
//! services of a node until the node tells it to stop, then stops
//! deliberately: health turns NOT_SERVING, streams end, and in-flight
//! requests get `server.shutdown_grace_ms` to finish. The node closes
//! storage afterwards.

mod admin;
mod authz;
mod broker;
mod connections;
mod groups;
mod health;
mod in_flight;
mod layers;
mod records;
pub mod status;
mod subscription;

use std::sync::Arc;
use std::time::Duration;

use strata_proto::server::{admin_server::AdminServer, broker_server::BrokerServer, groups_server::GroupsServer};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Semaphore};
use tonic::transport::Server;

pub use admin::AdminService;
pub use broker::BrokerService;
pub use groups::GroupsService;
use health::HealthService;
use strata_proto::health::health_server::HealthServer;

use crate::node::{Listener, NodeError, NodeHandle, Serving};
use crate::shutdown::stopped;

const H2_STREAM_WINDOW: u32 = 8 << 20;
const H2_CONNECTION_WINDOW: u32 = 16 << 20;
const H2_MAX_FRAME: u32 = 1 << 20;
const H2_MAX_HEADER_LIST: u32 = 64 << 10;

/// The gRPC listener on a bound TCP socket.
pub struct GrpcListener {
    listener: TcpListener,
}

impl GrpcListener {
    /// Serves gRPC on `listener` once the node runs it.
    pub fn new(listener: TcpListener) -> Self {
        GrpcListener { listener }
    }
}

impl Listener for GrpcListener {
    fn name(&self) -> &'static str {
        "grpc"
    }

    fn serve(self: Box<Self>, node: NodeHandle, stop: watch::Receiver<bool>, ready: oneshot::Sender<()>) -> Serving {
        Box::pin(run(self.listener, node, stop, ready))
    }
}

/// Serves the gRPC services on `listener` until `stop` turns true.
async fn run(
    listener: TcpListener,
    node: NodeHandle,
    mut stop: watch::Receiver<bool>,
    ready: oneshot::Sender<()>,
) -> Result<(), NodeError> {
    let config = node.config.clone();
    let max_message = config.server.max_request_bytes as usize;

    let health = HealthServer::new(HealthService::new(stop.clone(), node.manager.clone()));
    // Both reflection versions: some tools (older grpcurl, Python's
    // grpcio-reflection client) speak only v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(strata_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let (reflection_v1, reflection_v1alpha) = (reflection().build_v1()?, reflection().build_v1alpha()?);

    // Connections need descriptors: never allow more than half the limit.
    let mut max_connections = config.server.max_connections as usize;
    if let Ok(limit) = crate::partition::fds::limit() {
        let fit = (limit / 2).max(1) as usize;
        if max_connections > fit {
            tracing::warn!(
                max_connections,
                nofile = limit,
                "server.max_connections is more than half the file descriptor limit (RLIMIT_NOFILE); using {fit}"
            );
            max_connections = fit;
        }
    }
    let connections = connections::Connections::new(connections::ConnLimits {
        max_connections,
        max_per_ip: config.server.max_connections_per_ip as usize,
        max_streams_per_ip: config.server.max_streams_per_ip as usize,
        max_streams_per_principal: config.server.max_streams_per_principal as usize,
        rate_per_ip: config.quotas.connections_per_sec_per_ip,
        handshake_timeout: Duration::from_millis(config.server.handshake_timeout_ms),
        idle_timeout: Duration::from_millis(config.server.idle_timeout_ms),
        send_stall_timeout: Duration::from_millis(config.server.subscribe_stall_timeout_ms),
    });
    let broker = BrokerServer::new(BrokerService::new(&node, stop.clone(), connections.clone()))
        .max_decoding_message_size(max_message)
        // A fetch reply carries at most max_request_bytes of records asked
        // for, plus one whole batch (which may exceed what was asked, but is
        // itself at most max_request_bytes), plus per-partition framing.
        .max_encoding_message_size(max_message * 2 + (4 << 20));
    // Bounded by the RPC layer first (RESOURCE_EXHAUSTED naming the key);
    // tonic's own bound agrees with it.
    let max_control = config.server.max_control_request_bytes as usize;
    let admin = AdminServer::new(AdminService::new(node.manager.clone(), node.security.clone()))
        .max_decoding_message_size(max_control);
    let groups = GroupsServer::new(GroupsService::new(node.coordinator.clone())).max_decoding_message_size(max_control);

    let tls = crate::tls::Tls::load(&config.tls, b"h2").map_err(NodeError::from)?;
    if config.auth.enabled && tls.is_none() {
        tracing::warn!("auth.enabled without TLS: API tokens cross the network in clear; configure [tls] unless the listener is on loopback");
    }
    let _reloader = tls.clone().map(|t| AbortOnDrop(tokio::spawn(t.run_reloader(stop.clone()))));
    // Logged last: once this line is out, every service is ready.
    match &tls {
        Some(t) => tracing::info!(mutual = t.mutual(), "listening on {} (TLS)", listener.local_addr()?),
        None => tracing::info!("listening on {}", listener.local_addr()?),
    }
    let _ = ready.send(());
    // Aborted when this returns.
    let _reaper = AbortOnDrop(tokio::spawn(connections.clone().run_reaper(stop.clone())));
    let incoming = connections::incoming(listener, connections, tls);
    let limits = layers::RequestLimits {
        max_request_bytes: max_message,
        max_control_request_bytes: max_control,
        budget: Arc::new(Semaphore::new(config.server.request_memory_bytes as usize)),
        budget_bytes: config.server.request_memory_bytes as usize,
    };
    let (serve_stop_tx, serve_stop_rx) = oneshot::channel::<()>();
    let mut server = tokio::spawn(
        Server::builder()
            // Large HTTP/2 windows and frames: a pipelined producer sending
            // 1 MB requests otherwise stalls on flow control (measured +20%
            // produce throughput). The connection window caps what one client
            // can have buffered in the broker at 16 MiB.
            .initial_stream_window_size(Some(H2_STREAM_WINDOW))
            .initial_connection_window_size(Some(H2_CONNECTION_WINDOW))
            .max_frame_size(Some(H2_MAX_FRAME))
            .timeout(Duration::from_millis(config.server.request_timeout_ms))
            .max_concurrent_streams(config.server.max_concurrent_streams)
            // The client's HTTP/2 header block: gRPC needs a few hundred bytes.
            .http2_max_header_list_size(Some(H2_MAX_HEADER_LIST))
            .layer(layers::RpcLayer { limits, authorizer: Arc::new(authz::Authorizer::new(node.security.clone())) })
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(broker)
            .add_service(admin)
            .add_service(groups)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = serve_stop_rx.await;
            }),
    );

    let served = tokio::select! {
        r = &mut server => Some(r),
        _ = stopped(&mut stop) => None,
    };
    match served {
        Some(r) => r.map_err(NodeError::from).and_then(|r| r.map_err(NodeError::from)),
        None => {
            // Health already reports NOT_SERVING (and its watches end): it
            // answers from the same stop signal.
            let _ = serve_stop_tx.send(());
            let grace = Duration::from_millis(config.server.shutdown_grace_ms);
            match tokio::time::timeout(grace, &mut server).await {
                Ok(r) => r.map_err(NodeError::from).and_then(|r| r.map_err(NodeError::from)),
                Err(_) => {
                    tracing::warn!(
                        grace_ms = grace.as_millis() as u64,
                        "grace period over; closing remaining connections"
                    );
                    server.abort();
                    Ok(())
                }
            }
        }
    }
}

/// Aborts its task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
