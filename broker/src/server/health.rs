//! `grpc.health.v1.Health`, answering from the listener's own stop signal
//! and the partitions' state: NOT_SERVING once the broker is stopping, or
//! while a partition is read-only until a restart (an fsync or a write
//! failed: restarting is the remedy, which is what an orchestrator does
//! with a container whose health check fails).
//!
//! Ours rather than tonic-health's reporter because a stop must end Watch
//! streams: every client using gRPC's built-in health checking holds one,
//! and a stream that never ends holds the broker's exit until the grace
//! period runs out. Here a stop sends NOT_SERVING, then the stream ends.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::error::Reason;
use crate::partition::Manager;
use strata_proto::health::health_check_response::ServingStatus;
use strata_proto::health::health_server::Health;
use strata_proto::health::{HealthCheckRequest, HealthCheckResponse};

/// The services a health check may name; "" is the server as a whole.
const SERVICES: &[&str] = &["", "strata.v1.Broker", "strata.v1.Admin", "strata.v1.Groups"];

/// How often a Watch looks at the partitions' state.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// SERVING until `stop` turns true or a partition is read-only.
#[derive(Clone)]
pub struct HealthService {
    stop: watch::Receiver<bool>,
    manager: Arc<Manager>,
    /// When the partitions were last looked at, and whether one was
    /// read-only: shared by every check and watch, so many of them cost one
    /// look at the partitions per [`WATCH_EVERY`].
    read_only: Arc<std::sync::Mutex<Option<(tokio::time::Instant, bool)>>>,
}

impl HealthService {
    /// Reports on this listener's services until `stop`.
    pub fn new(stop: watch::Receiver<bool>, manager: Arc<Manager>) -> Self {
        HealthService { stop, manager, read_only: Arc::default() }
    }

    fn any_read_only(&self) -> bool {
        let mut cached = self.read_only.lock().unwrap_or_else(|p| p.into_inner());
        let now = tokio::time::Instant::now();
        match *cached {
            Some((at, read_only)) if now.duration_since(at) < WATCH_EVERY => read_only,
            _ => {
                let partitions = self.manager.read_only_partitions();
                if !partitions.is_empty() {
                    tracing::debug!(?partitions, "health: NOT_SERVING while partitions are read-only");
                }
                *cached = Some((now, !partitions.is_empty()));
                !partitions.is_empty()
            }
        }
    }

    fn status_of(&self, service: &str) -> ServingStatus {
        if !SERVICES.contains(&service) {
            return ServingStatus::ServiceUnknown;
        }
        if *self.stop.borrow() {
            return ServingStatus::NotServing;
        }
        match self.any_read_only() {
            true => ServingStatus::NotServing,
            false => ServingStatus::Serving,
        }
    }
}

fn reply(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse { status: status as i32 }
}

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(&self, req: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        let service = req.into_inner().service;
        match self.status_of(&service) {
            ServingStatus::ServiceUnknown => Err(super::status::refusal(
                tonic::Code::NotFound,
                Reason::UnknownService,
                format!(
                    "unknown service {service:?}: this server has {}",
                    SERVICES.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ")
                ),
                vec![("service", service.clone())],
            )),
            status => Ok(Response::new(reply(status))),
        }
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn watch(&self, req: Request<HealthCheckRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let service = req.into_inner().service;
        let health = self.clone();
        let mut stop = self.stop.clone();
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let report = async {
                // Each change is reported; the stop is the last.
                let mut last = health.status_of(&service);
                if tx.send(Ok(reply(last))).await.is_err() || last == ServingStatus::ServiceUnknown {
                    return;
                }
                while !*stop.borrow_and_update() {
                    tokio::select! {
                        _ = stop.changed() => {}
                        _ = tokio::time::sleep(WATCH_EVERY) => {}
                    }
                    let now = health.status_of(&service);
                    if now != last && tx.send(Ok(reply(now))).await.is_err() {
                        return;
                    }
                    last = now;
                }
            };
            tokio::select! {
                _ = report => {}
                _ = tx.closed() => {}
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
