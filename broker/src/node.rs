//! The node: the composition root of a broker.
//!
//! [`Node::open`] opens storage (the partition manager), the group
//! coordinator and the metrics endpoint; [`Node::run`] serves the
//! [`Listener`]s it is given (the gRPC server today; a Kafka-protocol
//! listener or a replication endpoint later), starts the cleaner once they
//! are ready (so no background pass runs before the broker answers), and
//! when `shutdown` resolves stops everything in a deliberate order:
//!
//! 1. listeners stop accepting, tell health checkers NOT_SERVING, end their
//!    streams and let in-flight requests finish (they may still need the
//!    coordinator and storage);
//! 2. background tasks stop: the group reaper, the cleaner (an ongoing pass
//!    stops between batches), the metrics endpoint;
//! 3. storage is flushed, fsynced and marked clean.
//!
//! Tests start a node in-process on port 0 with a temporary data directory.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::coordinator::Coordinator;
use crate::partition::Manager;
use crate::security::Security;
use crate::writers::Writers;

/// An error that stopped the node.
pub type NodeError = Box<dyn std::error::Error + Send + Sync>;

/// What listeners (and the services behind them) see of a node.
#[derive(Clone)]
pub struct NodeHandle {
    /// The configuration the node runs with.
    pub config: Arc<Config>,
    /// Topics and partitions.
    pub manager: Arc<Manager>,
    /// Consumer groups.
    pub coordinator: Arc<Coordinator>,
    /// ACLs, API tokens, super users.
    pub security: Arc<Security>,
    /// Producer ids and writer ids.
    pub writers: Arc<Writers>,
}

/// A listener's serving future.
pub type Serving = Pin<Box<dyn Future<Output = Result<(), NodeError>> + Send>>;

/// A protocol endpoint that a node runs: given the node and a stop signal,
/// it serves until the signal turns true, then finishes its in-flight work
/// and returns. It sends `ready` once it accepts requests.
pub trait Listener: Send {
    /// For log lines ("grpc").
    fn name(&self) -> &'static str;
    /// Starts serving.
    fn serve(self: Box<Self>, node: NodeHandle, stop: watch::Receiver<bool>, ready: oneshot::Sender<()>) -> Serving;
}

/// An open broker node.
pub struct Node {
    handle: NodeHandle,
    /// Stops the background tasks (after the listeners).
    tasks_stop: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Node {
    /// Opens storage and the coordinator, and starts the group reaper and
    /// the metrics endpoint if configured (the cleaner starts once the
    /// listeners are ready: its first pass is one interval after that).
    pub async fn open(config: Config) -> Result<Node, NodeError> {
        match crate::partition::fds::raise_limit() {
            Ok(limit) => tracing::info!(limit, "file descriptor limit (RLIMIT_NOFILE)"),
            Err(e) => tracing::warn!(error = %e, "cannot read the file descriptor limit"),
        }
        let manager = {
            let config = config.clone();
            // Opening reads and may repair files: keep it off the async workers.
            Arc::new(tokio::task::spawn_blocking(move || Manager::open(&config)).await??)
        };
        let coordinator = {
            let (m, c) = (manager.clone(), config.groups.clone());
            Arc::new(tokio::task::spawn_blocking(move || Coordinator::open(m, c)).await??)
        };
        let security = {
            let (m, a, q) = (manager.clone(), config.auth.clone(), config.quotas.clone());
            Arc::new(tokio::task::spawn_blocking(move || Security::open(&m, &a, &q)).await??)
        };
        let writers = {
            let (m, expiry) = (manager.clone(), config.storage.producer_expiry_ms);
            Arc::new(tokio::task::spawn_blocking(move || Writers::open(&m, expiry)).await??)
        };
        let (tasks_stop, stop_rx) = watch::channel(false);
        let mut tasks = vec![
            ("group reaper", tokio::spawn(coordinator.clone().run_reaper(stop_rx.clone()))),
            ("memory trimmer", tokio::spawn(crate::memory::run_trimmer(stop_rx.clone()))),
        ];
        if !config.server.metrics_listen.is_empty() {
            let addr = &config.server.metrics_listen;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr} for metrics: {e}"))?;
            crate::metrics::handle();
            let tls = match config.server.metrics_tls {
                true => crate::tls::Tls::load(&config.tls, b"http/1.1")?,
                false => None,
            };
            if let Some(t) = &tls {
                tasks.push(("metrics TLS reloader", tokio::spawn(t.clone().run_reloader(stop_rx.clone()))));
            }
            let scheme = if tls.is_some() { " (TLS)" } else { "" };
            tracing::info!("metrics listening on {}{scheme}", listener.local_addr()?);
            let serve = crate::metrics::serve(listener, tls, manager.clone(), coordinator.clone(), stop_rx);
            tasks.push(("metrics", tokio::spawn(serve)));
        }
        let handle = NodeHandle { config: Arc::new(config), manager, coordinator, security, writers };
        Ok(Node { handle, tasks_stop, tasks })
    }

    /// The node as listeners see it.
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// Serves `listeners` until `shutdown` resolves (or one of them fails),
    /// then stops in the order of the module documentation.
    pub async fn run(
        self,
        listeners: Vec<Box<dyn Listener>>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), NodeError> {
        let (listeners_stop, stop_rx) = watch::channel(false);
        let mut readies = Vec::new();
        let mut serving: Vec<(&'static str, JoinHandle<Result<(), NodeError>>)> = listeners
            .into_iter()
            .map(|l| {
                let (ready, is_ready) = oneshot::channel();
                readies.push(is_ready);
                (l.name(), tokio::spawn(l.serve(self.handle.clone(), stop_rx.clone(), ready)))
            })
            .collect();
        // A listener that fails before it is ready drops its sender: the
        // select below then sees it exit.
        for is_ready in readies {
            let _ = is_ready.await;
        }
        let mut tasks = self.tasks;
        let (manager, cleaner) = (self.handle.manager.clone(), self.handle.config.cleaner.clone());
        tasks.push(("cleaner", tokio::spawn(crate::cleaner::run(manager, cleaner, self.tasks_stop.subscribe()))));
        // A listener that ends on its own has failed: stop the node.
        let first_exit = async {
            if serving.is_empty() {
                return std::future::pending().await;
            }
            let (r, i, _) = futures::future::select_all(serving.iter_mut().map(|(_, h)| h)).await;
            (i, r)
        };
        let exited = tokio::select! {
            exited = first_exit => Some(exited),
            _ = shutdown => None,
        };
        let mut result: Result<(), NodeError> = Ok(());
        let failed = exited.map(|(i, r)| {
            let name = serving[i].0;
            tracing::error!(listener = name, "listener stopped on its own; stopping the node");
            if let Err(e) = r.map_err(NodeError::from).and_then(|r| r) {
                result = Err(format!("{name} listener: {e}").into());
            }
            i
        });
        tracing::info!("stopping: no new connections, finishing in-flight requests");
        let _ = listeners_stop.send(true);
        for (i, (name, h)) in serving.into_iter().enumerate() {
            if failed == Some(i) {
                continue;
            }
            match h.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(listener = name, error = %e, "listener failed while stopping"),
                Err(e) => tracing::error!(listener = name, error = %e, "listener task panicked"),
            }
        }
        let _ = self.tasks_stop.send(true);
        for (name, task) in tasks {
            if let Err(e) = task.await {
                tracing::error!(task = name, error = %e, "background task failed");
            }
        }
        let manager = self.handle.manager.clone();
        let closed = tokio::task::spawn_blocking(move || manager.shutdown()).await?;
        if let Err(e) = closed {
            result = result.and(Err(e.into()));
        }
        result
    }
}
