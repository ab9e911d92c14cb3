//! The gRPC server: the only layer that knows tonic and prost.
//!
//! [`run`] serves until `shutdown` resolves, then stops deliberately: health
//! turns NOT_SERVING, streams end, in-flight requests get
//! `server.shutdown_grace_ms` to finish, and storage is flushed, fsynced and
//! marked clean.

mod admin;
mod broker;
mod groups;
mod layers;
mod records;
pub mod status;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use strata_proto::server::{admin_server::AdminServer, broker_server::BrokerServer, groups_server::GroupsServer};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tonic::transport::Server;

pub use admin::AdminService;
pub use broker::BrokerService;
pub use groups::GroupsService;

use crate::config::Config;
use crate::coordinator::Coordinator;
use crate::partition::Manager;

const H2_STREAM_WINDOW: u32 = 8 << 20;
const H2_CONNECTION_WINDOW: u32 = 16 << 20;
const H2_MAX_FRAME: u32 = 1 << 20;

/// An error that stopped the server.
pub type ServeError = Box<dyn std::error::Error + Send + Sync>;

/// Serves the Broker, Admin, health and reflection services on `listener`
/// until `shutdown` resolves, then shuts the storage down cleanly.
pub async fn run(
    listener: TcpListener,
    manager: Arc<Manager>,
    config: &Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let max_message = config.server.max_request_bytes as usize;
    let (stop_tx, stop_rx) = watch::channel(false);

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<BrokerServer<BrokerService>>().await;
    health.set_serving::<AdminServer<AdminService>>().await;
    health.set_serving::<GroupsServer<GroupsService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(strata_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let broker = BrokerServer::new(BrokerService::new(manager.clone(), config, stop_rx.clone()))
        .max_decoding_message_size(max_message)
        // A fetch returns at least one whole batch, which may exceed its max_bytes.
        .max_encoding_message_size(max_message * 2);
    let admin = AdminServer::new(AdminService::new(manager.clone()));
    let coordinator = {
        let (m, c) = (manager.clone(), config.groups.clone());
        Arc::new(tokio::task::spawn_blocking(move || Coordinator::open(m, c)).await??)
    };
    let reaper = tokio::spawn(coordinator.clone().run_reaper(stop_rx.clone()));
    let groups = GroupsServer::new(GroupsService::new(coordinator.clone()));

    let metrics = if config.server.metrics_listen.is_empty() {
        None
    } else {
        let addr = &config.server.metrics_listen;
        let listener =
            TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr} for metrics: {e}"))?;
        crate::metrics::handle();
        tracing::info!("metrics listening on {}", listener.local_addr()?);
        Some(tokio::spawn(crate::metrics::serve(listener, manager.clone(), coordinator, stop_rx.clone())))
    };

    let cleaner = tokio::spawn(crate::cleaner::run(manager.clone(), config.cleaner.clone(), stop_rx.clone()));

    // Logged last: once this line is out, every service is ready.
    tracing::info!("listening on {}", listener.local_addr()?);
    let incoming = layers::incoming(listener, config.server.max_connections as usize);
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
            .layer(layers::RpcMetricsLayer)
            .add_service(health_service)
            .add_service(reflection)
            .add_service(broker)
            .add_service(admin)
            .add_service(groups)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = serve_stop_rx.await;
            }),
    );

    let served = tokio::select! {
        r = &mut server => Some(r),
        _ = shutdown => None,
    };
    let result = match served {
        Some(r) => r.map_err(ServeError::from).and_then(|r| r.map_err(ServeError::from)),
        None => {
            tracing::info!("stopping: no new connections, finishing in-flight requests");
            health.set_not_serving::<BrokerServer<BrokerService>>().await;
            health.set_not_serving::<AdminServer<AdminService>>().await;
            health.set_not_serving::<GroupsServer<GroupsService>>().await;
            health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
            let _ = stop_tx.send(true);
            let _ = serve_stop_tx.send(());
            let grace = Duration::from_millis(config.server.shutdown_grace_ms);
            match tokio::time::timeout(grace, &mut server).await {
                Ok(r) => r.map_err(ServeError::from).and_then(|r| r.map_err(ServeError::from)),
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
    };
    let _ = stop_tx.send(true);
    let _ = reaper.await;
    if let Some(m) = metrics {
        let _ = m.await;
    }
    if let Err(e) = cleaner.await {
        tracing::error!(error = %e, "cleaner task failed");
    }
    let closed = tokio::task::spawn_blocking(move || manager.shutdown()).await?;
    result?;
    closed?;
    Ok(())
}
