//! `grpc.health.v1.Health`, answering from the listener's own stop signal.
//!
//! Ours rather than tonic-health's reporter because a stop must end Watch
//! streams: every client using gRPC's built-in health checking holds one,
//! and a stream that never ends holds the broker's exit until the grace
//! period runs out. Here a stop sends NOT_SERVING, then the stream ends.

use std::pin::Pin;

use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::error::Reason;
use strata_proto::health::health_check_response::ServingStatus;
use strata_proto::health::health_server::Health;
use strata_proto::health::{HealthCheckRequest, HealthCheckResponse};

/// The services a health check may name; "" is the server as a whole.
const SERVICES: &[&str] = &["", "strata.v1.Broker", "strata.v1.Admin", "strata.v1.Groups"];

/// SERVING until `stop` turns true, NOT_SERVING after.
pub struct HealthService {
    stop: watch::Receiver<bool>,
}

impl HealthService {
    /// Reports on this listener's services until `stop`.
    pub fn new(stop: watch::Receiver<bool>) -> Self {
        HealthService { stop }
    }
}

fn status_of(service: &str, stopping: bool) -> ServingStatus {
    match (SERVICES.contains(&service), stopping) {
        (false, _) => ServingStatus::ServiceUnknown,
        (true, false) => ServingStatus::Serving,
        (true, true) => ServingStatus::NotServing,
    }
}

fn reply(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse { status: status as i32 }
}

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(&self, req: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        let service = req.into_inner().service;
        match status_of(&service, *self.stop.borrow()) {
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
        let mut stop = self.stop.clone();
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let report = async {
                let first = status_of(&service, *stop.borrow_and_update());
                if tx.send(Ok(reply(first))).await.is_err() || *stop.borrow() {
                    return;
                }
                // The only change there is: the stop. Report it, then end.
                let _ = stop.wait_for(|s| *s).await;
                let _ = tx.send(Ok(reply(status_of(&service, true)))).await;
            };
            tokio::select! {
                _ = report => {}
                _ = tx.closed() => {}
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
