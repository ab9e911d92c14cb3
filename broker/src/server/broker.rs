//! `strata.v1.Broker`: produce, fetch, subscribe, list offsets.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesOrdered, StreamExt};
use futures::Stream;
use strata_proto::raw;
use strata_proto::server::broker_server::Broker;
use strata_proto::v1::*;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::authz::Caller;
use super::connections::{ConnInfo, Connections};
use super::layers::HeldMemory;
use super::status::{self, to_status};
use super::subscription::{Feed, Room, Subscriptions, FIRST_REPLY_BYTES, SHED_AFTER};
use crate::config::AckLevel;
use crate::error::{Error, Reason, Result, Unavailability};
use crate::log::batch::ProducerStamp;
use crate::node::NodeHandle;
use crate::partition::{check_client_op, AppendIf, ClientOp, Manager, Partition, Produced};
use crate::security::quota::Kind;
use crate::shutdown::stopped;
use crate::writers::{Owner, Writers};

/// Requests a ProduceStream may have in flight (appended, awaiting fsync).
const MAX_IN_FLIGHT: usize = 64;

/// The Broker service.
#[derive(Clone)]
pub struct BrokerService {
    manager: Arc<Manager>,
    default_acks: AckLevel,
    fetch_default_max_bytes: u32,
    /// `server.max_request_bytes`: the most record bytes one reply asks for,
    /// and the most one produce request may store (so every stored batch
    /// fits a reply).
    max_reply_bytes: usize,
    fetch_max_wait: Duration,
    fetch_max_records: usize,
    /// Replies queued per subscription before it waits for its client.
    subscribe_buffer: usize,
    /// `server.reply_memory_bytes`: record bytes of fetch replies being
    /// built and of subscription replies queued, over all requests.
    reply_budget: Arc<Semaphore>,
    /// `server.subscribe_stall_timeout_ms`.
    stall_timeout: Duration,
    /// Every subscription's queue (for shedding when the reply budget runs out).
    subscriptions: Arc<Subscriptions>,
    /// Producer ids, epochs and writer ids.
    writers: Arc<Writers>,
    /// The listener's connections: those whose replies stopped leaving are
    /// closed when the reply budget runs out.
    connections: Arc<Connections>,
    shutdown: watch::Receiver<bool>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl BrokerService {
    /// Serves `node`'s partitions; streams end when `shutdown` turns true.
    pub fn new(node: &NodeHandle, shutdown: watch::Receiver<bool>, connections: Arc<Connections>) -> Self {
        let config = &node.config;
        BrokerService {
            manager: node.manager.clone(),
            default_acks: config.storage.default_acks,
            fetch_default_max_bytes: config.server.fetch_default_max_bytes as u32,
            max_reply_bytes: config.server.max_request_bytes as usize,
            fetch_max_wait: Duration::from_millis(config.server.fetch_max_wait_ms),
            fetch_max_records: config.server.fetch_max_records as usize,
            subscribe_buffer: config.server.subscribe_buffer as usize,
            reply_budget: Arc::new(Semaphore::new(config.server.reply_memory_bytes as usize)),
            stall_timeout: Duration::from_millis(config.server.subscribe_stall_timeout_ms),
            subscriptions: Arc::new(Subscriptions::default()),
            writers: node.writers.clone(),
            connections,
            shutdown,
        }
    }

    fn acks(&self, acks: i32) -> Result<AckLevel> {
        match Acks::try_from(acks) {
            Ok(Acks::Unspecified) => Ok(self.default_acks),
            Ok(Acks::None) => Ok(AckLevel::None),
            Ok(Acks::Written) => Ok(AckLevel::Written),
            Ok(Acks::Durable) => Ok(AckLevel::Durable),
            Err(_) => Err(Error::InvalidArgument(format!(
                "acks {acks} is not valid: use 0 (broker default), 1 (none), 2 (written) or 3 (durable)"
            ))),
        }
    }

    /// Validates and appends now, in call order; returns the wait for the
    /// requested durability, so a stream can pipeline the next request.
    fn append(&self, req: &ProduceRequest, caller: &Caller) -> Result<Produced> {
        if req.topic.is_empty() {
            return Err(Error::InvalidArgument("produce request has no topic".into()));
        }
        caller.may(&req.topic)?;
        let principal = caller.principal();
        let acks = self.acks(req.acks)?;
        check_client_op(&req.topic, ClientOp::Produce)?;
        let topic = self.manager.topic(&req.topic)?;
        // The single-writer rule: a declared writer is the only principal
        // that may produce, whatever else would allow it.
        if let Some(writer) = topic.other_writer(principal) {
            return Err(Error::NotDeclaredWriter {
                topic: req.topic.clone(),
                writer,
                principal: principal.map(str::to_string),
            });
        }
        let cond = self.conditions(req, caller)?;
        let now = self.manager.now_ms();
        let produce = || topic.produce(req.partition, &req.records, now, acks, self.max_reply_bytes, cond);
        let produced = match produce() {
            // A producer table full of retired ids' state makes room first.
            Err(e) if e.is_producer_table_full() => {
                let partition = topic.partition(req.partition.unwrap_or(0))?;
                match partition.forget_producers(|id| !self.writers.is_issued(id)) {
                    0 => return Err(e),
                    _ => produce()?,
                }
            }
            r => r?,
        };
        let bytes = record_bytes(req);
        let labels = [("topic", req.topic.clone())];
        metrics::counter!("strata_records_in_total", &labels).increment(req.records.len() as u64);
        metrics::counter!("strata_bytes_in_total", &labels).increment(bytes as u64);
        Ok(produced)
    }

    /// The request's idempotent producer (issued to the caller, and checked
    /// against the writer's newest epoch: a stale instance is fenced here,
    /// on every partition) and its conditions (next offset, key's latest
    /// offset).
    fn conditions(&self, req: &ProduceRequest, caller: &Caller) -> Result<AppendIf> {
        let producer = match &req.producer {
            None => None,
            Some(p) => {
                let epoch = i16::try_from(p.producer_epoch).map_err(|_| {
                    Error::InvalidArgument(format!("producer_epoch {} is out of range 0-32767", p.producer_epoch))
                })?;
                if p.producer_id < 0 || epoch < 0 || p.sequence < 0 {
                    return Err(Error::InvalidArgument(
                        "producer_id, producer_epoch and sequence must not be negative".into(),
                    ));
                }
                let partition = req.partition.unwrap_or(0);
                self.writers.check(p.producer_id, epoch, caller.principal(), caller.ip(), &req.topic, partition)?;
                Some(ProducerStamp { id: p.producer_id, epoch, sequence: p.sequence })
            }
        };
        let expected_key_offset = match &req.expected_key {
            None => None,
            Some(k) => {
                let key = req.records.first().and_then(|r| r.key.as_deref());
                if key.is_none() || req.records.iter().any(|r| r.key.as_deref() != key) {
                    return Err(Error::InvalidArgument(
                        "expected_key needs every record of the request to have the same key".into(),
                    ));
                }
                Some(match k.expect {
                    Some(key_expectation::Expect::LastOffset(o)) => Some(o),
                    Some(key_expectation::Expect::Absent(true)) => None,
                    _ => return Err(Error::InvalidArgument("expected_key needs last_offset, or absent = true".into())),
                })
            }
        };
        Ok(AppendIf { producer, expected_offset: req.expected_offset, expected_key_offset })
    }

    /// Waits for `produced` to be acknowledged at the level it asked for and
    /// builds the reply; `omit_positions` leaves out the per-record positions.
    async fn acknowledge(
        request_id: u64,
        produced: Produced,
        omit_positions: bool,
        throttled: Duration,
    ) -> Result<ProduceResponse> {
        let ranges = produced
            .ranges()
            .map(|(partition, base_offset, record_count)| PartitionRange { partition, base_offset, record_count })
            .collect();
        let positions = match omit_positions {
            true => Vec::new(),
            false => produced.positions().map(|(partition, offset)| RecordPosition { partition, offset }).collect(),
        };
        for appending in produced.appended {
            appending.acknowledged().await?;
        }
        Ok(ProduceResponse { request_id, positions, ranges, error: None, throttle_time_ms: millis(throttled) })
    }

    /// A reader's `max_bytes`: the default for 0, and never more than one
    /// reply can carry (a larger ask is capped, as Kafka caps `fetch.max.bytes`).
    fn max_bytes(&self, asked: u32) -> usize {
        match asked {
            0 => self.fetch_default_max_bytes as usize,
            n => (n as usize).min(self.max_reply_bytes),
        }
    }

    /// Takes `bytes` (at most one reply's worth) from the reply budget,
    /// waiting while it is spent by others.
    async fn reply_memory(&self, bytes: usize) -> Result<OwnedSemaphorePermit> {
        let n = bytes as u32;
        if let Ok(permit) = self.reply_budget.clone().try_acquire_many_owned(n) {
            return Ok(permit);
        }
        // Subscribers that are not reading give up what is queued for them
        // first, and connections whose replies stopped leaving what HTTP/2
        // holds for them: they never make readers wait.
        if self.shed_stalled() {
            if let Ok(permit) = self.reply_budget.clone().try_acquire_many_owned(n) {
                return Ok(permit);
            }
        }
        metrics::counter!("strata_reply_budget_waits_total").increment(1);
        self.reply_budget
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(|_| Error::Unavailable(Unavailability::Stopping, "broker stopping".into()))
    }

    /// Frees reply memory held for clients that are not reading: queued
    /// subscription replies, then connections whose replies have sent
    /// nothing for [`SHED_AFTER`]. True if anything was freed.
    fn shed_stalled(&self) -> bool {
        self.subscriptions.shed_stalled() > 0 || self.connections.close_send_stalled(SHED_AFTER) > 0
    }

    /// Reply memory for a subscription's next read. Subscribers that are not
    /// reading never wait in line for it: None when there is no room for one
    /// now (it waits for its client instead).
    async fn subscription_memory(&self, feed: &Feed, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let n = bytes as u32;
        loop {
            if let Ok(permit) = self.reply_budget.clone().try_acquire_many_owned(n) {
                return Some(permit);
            }
            if self.shed_stalled() {
                continue;
            }
            if !feed.taking() {
                return None;
            }
            // In line, but only for a while: a subscriber that stops reading
            // meanwhile steps out.
            metrics::counter!("strata_reply_budget_waits_total").increment(1);
            let wait = self.reply_budget.clone().acquire_many_owned(n);
            match tokio::time::timeout(SHED_AFTER / 10, wait).await {
                Ok(Ok(permit)) => return Some(permit),
                Ok(Err(_)) => return None,
                Err(_) => {}
            }
        }
    }

    /// Ends a subscription whose client took nothing for the stall timeout;
    /// if it still holds the stream after as long again (it reads nothing,
    /// not even the status), closes its connection, which frees what HTTP/2
    /// holds for it.
    async fn stalled(&self, feed: &Feed, conn: Option<&ConnInfo>, offset: u64) {
        metrics::counter!("strata_subscribers_stalled_total").increment(1);
        feed.end_stalled(status::refusal(
            tonic::Code::ResourceExhausted,
            Reason::SubscriberStalled,
            format!(
                "subscriber took no reply for {} ms (server.subscribe_stall_timeout_ms); what was queued for it is dropped: subscribe again from offset {offset}",
                self.stall_timeout.as_millis()
            ),
            vec![("offset", offset.to_string()), ("limit", "server.subscribe_stall_timeout_ms".into())],
        ));
        if tokio::time::timeout(self.stall_timeout, feed.gone()).await.is_err() {
            if let Some(conn) = conn {
                tracing::info!(
                    "closing a connection whose subscriber read nothing for twice server.subscribe_stall_timeout_ms"
                );
                conn.close("stalled_subscriber");
            }
        }
    }

    fn log(&self, topic: &str, partition: u32) -> Result<Arc<Partition>> {
        self.manager.partition(topic, partition)
    }

    /// Reads one partition: the reply entry and the offset to read next.
    fn read(
        &self,
        topic: &str,
        partition: u32,
        log: &Partition,
        offset: u64,
        max_bytes: usize,
        skip_damaged: bool,
    ) -> Result<(raw::PartitionRecords, u64)> {
        let r = log.read(offset, max_bytes, self.fetch_max_records, skip_damaged)?;
        if r.records > 0 {
            let labels = [("topic", topic.to_string())];
            metrics::counter!("strata_records_out_total", &labels).increment(r.records as u64);
            metrics::counter!("strata_bytes_out_total", &labels).increment(r.bytes as u64);
        }
        let records = raw::PartitionRecords {
            topic: topic.to_string(),
            partition,
            high_watermark: r.high_watermark,
            log_start_offset: r.log_start,
            next_offset: r.next_offset,
            records: r.chunks,
        };
        Ok((records, r.next_offset))
    }
}

/// How a stream ends when the broker stops: UNAVAILABLE (retry elsewhere or
/// later), never OK, which would read as the end of the data.
fn stopping() -> Status {
    to_status(Error::Unavailable(Unavailability::Stopping, "the broker is stopping: subscribe again".into()))
}

/// Counts open subscriptions in `strata_subscriptions_active`.
struct ActiveSubscription;

impl ActiveSubscription {
    fn new() -> Self {
        metrics::gauge!("strata_subscriptions_active").increment(1.0);
        ActiveSubscription
    }
}

impl Drop for ActiveSubscription {
    fn drop(&mut self) {
        metrics::gauge!("strata_subscriptions_active").decrement(1.0);
    }
}

/// Key and value bytes of a produce request's records (what metrics count
/// and produce quotas charge).
fn record_bytes(req: &ProduceRequest) -> usize {
    req.records.iter().map(|r| r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len())).sum()
}

/// A throttle time for a reply field.
fn millis(d: Duration) -> u32 {
    d.as_millis().min(u128::from(u32::MAX)) as u32
}

/// Holds a request back for `wait` (quotas), unless the broker stops first.
async fn hold(wait: Duration, shutdown: &mut watch::Receiver<bool>) {
    if !wait.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopped(shutdown) => {}
        }
    }
}

/// A refusal inside a ProduceStream reply: what a unary call's status and
/// ErrorInfo would carry.
fn stream_error(e: Error) -> strata_proto::v1::Error {
    let reason = e.reason();
    strata_proto::v1::Error {
        code: status::code(&e) as i32,
        message: e.to_string(),
        reason: reason.as_str().to_string(),
        metadata: status::info_metadata(reason, e.metadata()),
    }
}

#[tonic::async_trait]
impl Broker for BrokerService {
    async fn produce(&self, req: Request<ProduceRequest>) -> Result<Response<ProduceResponse>, Status> {
        let caller = Caller::of(&req);
        let req = req.into_inner();
        // Denied requests are not held, nor charged to the quota.
        caller.may(&req.topic)?;
        let wait = caller.charge(Kind::ProduceBytes, record_bytes(&req) as u64);
        hold(wait, &mut self.shutdown.clone()).await;
        let produced = self.append(&req, &caller)?;
        let (request_id, omit) = (req.request_id, req.omit_record_positions);
        // The records' buffers go back before the wait for durability.
        drop(req);
        let reply = Self::acknowledge(request_id, produced, omit, caller.throttled + wait).await?;
        Ok(Response::new(reply))
    }

    type ProduceStreamStream = BoxStream<ProduceResponse>;

    async fn produce_stream(
        &self,
        req: Request<Streaming<ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStreamStream>, Status> {
        let caller = Caller::of(&req);
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(MAX_IN_FLIGHT);
        let svc = self.clone();
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            // Appends happen as requests arrive; acknowledgements (which may
            // wait for a shared fsync) complete in order behind them.
            let mut pending = FuturesOrdered::new();
            let mut reading = true;
            let mut first = true;
            // A request that did not decode ends the stream with its status,
            // after the replies to the requests before it.
            let mut broken: Option<Status> = None;
            // Quotas hold back the reading of the next request.
            let mut resume_at = Instant::now();
            loop {
                let held = Instant::now() < resume_at;
                tokio::select! {
                    msg = inbound.message(), if reading && !held && pending.len() < MAX_IN_FLIGHT => match msg {
                        Ok(Some(req)) => {
                            let (id, omit) = (req.request_id, req.omit_record_positions);
                            let appended = svc.append(&req, &caller);
                            // Charged once appended (a refused request costs
                            // nothing); the first request's rate was charged
                            // by the RPC layer.
                            let requests = if first { Duration::ZERO } else { caller.charge(Kind::Requests, 1) };
                            let bytes = if appended.is_ok() { record_bytes(&req) as u64 } else { 0 };
                            let wait = requests.max(caller.charge(Kind::ProduceBytes, bytes));
                            let throttled = if first { caller.throttled + wait } else { wait };
                            first = false;
                            resume_at = Instant::now() + wait;
                            // The records' buffers go back now.
                            drop(req);
                            pending.push_back(async move {
                                let reply = match appended {
                                    Ok(produced) => Self::acknowledge(id, produced, omit, throttled).await,
                                    Err(e) => Err(e),
                                };
                                reply.unwrap_or_else(|e| ProduceResponse { request_id: id, positions: Vec::new(), ranges: Vec::new(), error: Some(stream_error(e)), throttle_time_ms: millis(throttled) })
                            });
                        }
                        Ok(None) => reading = false,
                        Err(status) => {
                            tracing::debug!(%status, "produce stream broken by the client");
                            broken = Some(status);
                            reading = false;
                        }
                    },
                    Some(reply) = pending.next() => {
                        if tx.send(Ok(reply)).await.is_err() {
                            return;
                        }
                    },
                    _ = tokio::time::sleep_until(resume_at), if reading && held => {}
                    // Requests not read yet are not answered: UNAVAILABLE
                    // after the replies to those read, not OK.
                    _ = stopped(&mut shutdown), if reading => {
                        reading = false;
                        broken = Some(stopping());
                    }
                    else => break,
                }
            }
            if let Some(status) = broken {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn fetch(&self, req: Request<FetchRequest>) -> Result<Response<raw::FetchResponse>, Status> {
        let caller = Caller::of(&req);
        let req = req.into_inner();
        if req.partitions.is_empty() {
            return Err(Error::InvalidArgument("fetch request names no partitions".into()).into());
        }
        for p in &req.partitions {
            caller.may(&p.topic)?;
            check_client_op(&p.topic, ClientOp::Read)?;
        }
        // Held back while the caller's earlier fetches are over its quota;
        // this one's bytes are charged once read.
        let wait = caller.charge(Kind::FetchBytes, 0);
        hold(wait, &mut self.shutdown.clone()).await;
        let logs = req.partitions.iter().map(|p| self.log(&p.topic, p.partition)).collect::<Result<Vec<_>>>()?;
        let total_max = self.max_bytes(req.max_bytes);
        let max_wait = Duration::from_millis(u64::from(req.max_wait_ms)).min(self.fetch_max_wait);
        let min_bytes = (req.min_bytes as usize).max(1);
        let deadline = Instant::now() + max_wait;
        let mut shutdown = self.shutdown.clone();
        loop {
            // Watch before reading, so an append between the read and the wait still wakes us.
            let mut watches: Vec<_> = logs.iter().map(|l| l.watch_high_watermark()).collect();
            let mut memory = self.reply_memory(total_max).await?;
            let mut reply = raw::FetchResponse::default();
            let mut budget = total_max;
            for (p, log) in req.partitions.iter().zip(&logs) {
                let part_max = if p.max_bytes == 0 { total_max } else { self.max_bytes(p.max_bytes) };
                let max = part_max.min(budget);
                // Over budget (max 0): the offset is still validated, nothing is read.
                let (part, _) = self.read(&p.topic, p.partition, log, p.offset, max, p.skip_damaged)?;
                budget = budget.saturating_sub(part.records_len());
                reply.partitions.push(part);
            }
            let got = total_max - budget;
            // A reader at offsets compaction removed learns where to go on
            // at once: waiting would not bring it records.
            let passed = reply
                .partitions
                .iter()
                .zip(&req.partitions)
                .any(|(part, p)| part.records_len() == 0 && part.next_offset > p.offset);
            if got >= min_bytes || passed || Instant::now() >= deadline || *shutdown.borrow() {
                // Held, for what the reply carries, until it has been sent
                // (see `layers::HeldMemory`).
                let held: usize = reply.partitions.iter().map(raw::PartitionRecords::records_len).sum();
                drop(memory.split(memory.num_permits() - held.min(memory.num_permits())));
                caller.charge(Kind::FetchBytes, held as u64);
                reply.throttle_time_ms = millis(caller.throttled + wait);
                let mut response = Response::new(reply);
                response.extensions_mut().insert(HeldMemory::new(memory));
                return Ok(response);
            }
            // Nothing held while waiting.
            drop(memory);
            let any_change = futures::future::select_all(watches.iter_mut().map(|w| Box::pin(w.changed())));
            tokio::select! {
                _ = any_change => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = stopped(&mut shutdown) => {}
            }
        }
    }

    type SubscribeStream = BoxStream<raw::SubscribeResponse>;

    async fn subscribe(&self, req: Request<SubscribeRequest>) -> Result<Response<Self::SubscribeStream>, Status> {
        let conn = req.extensions().get::<ConnInfo>().cloned();
        let caller = Caller::of(&req);
        let req = req.into_inner();
        caller.may(&req.topic)?;
        check_client_op(&req.topic, ClientOp::Read)?;
        let log = self.log(&req.topic, req.partition)?;
        let mut offset = req.offset.unwrap_or_else(|| log.high_watermark());
        let max_bytes = self.max_bytes(req.max_bytes);
        // Check the start offset now, so a bad one fails the call itself.
        self.read(&req.topic, req.partition, &log, offset, 0, false)?;
        let (feed, outbox) = self.subscriptions.open(self.subscribe_buffer, conn.as_ref().map(|c| c.state.clone()));
        let mut reply_bytes = FIRST_REPLY_BYTES.min(max_bytes);
        let svc = self.clone();
        let mut shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let _active = ActiveSubscription::new();
            let end = loop {
                let mut hw = log.watch_high_watermark();
                if log.is_closed() {
                    // Deleted (NOT_FOUND: retrying will not help), or the broker is stopping.
                    break Some(match svc.manager.partition(&req.topic, req.partition) {
                        Err(e) => to_status(e),
                        Ok(_) => to_status(Error::Unavailable(
                            Unavailability::PartitionClosed,
                            format!("partition {} was closed", log.name()),
                        )),
                    });
                }
                let room = tokio::select! {
                    room = feed.room(svc.stall_timeout) => room,
                    _ = stopped(&mut shutdown) => break Some(stopping()),
                };
                match room {
                    Room::Ready { resume, took } => {
                        offset = resume.unwrap_or(offset);
                        if took {
                            reply_bytes = (reply_bytes * 2).min(max_bytes);
                        }
                    }
                    Room::Gone => return,
                    Room::Stalled => {
                        svc.stalled(&feed, conn.as_ref(), offset).await;
                        return;
                    }
                }
                // Budget first, so a read never holds memory the broker does not have.
                let mut memory = tokio::select! {
                    m = svc.subscription_memory(&feed, reply_bytes) => match m {
                        Some(m) => m,
                        None => {
                            feed.park();
                            continue;
                        }
                    },
                    _ = feed.gone() => return,
                    _ = stopped(&mut shutdown) => break Some(stopping()),
                };
                match svc.read(&req.topic, req.partition, &log, offset, reply_bytes, req.skip_damaged) {
                    Ok((records, next)) if !records.records.is_empty() => {
                        // Keep what the reply holds, give back the rest.
                        let used = records.records_len().min(memory.num_permits());
                        drop(memory.split(memory.num_permits() - used));
                        let pushed = records.records_len() as u64;
                        feed.push(raw::SubscribeResponse { records }, offset, memory);
                        offset = next;
                        // Over the fetch quota: the next read waits.
                        let wait = caller.charge(Kind::FetchBytes, pushed);
                        if !wait.is_zero() {
                            tokio::select! {
                                _ = tokio::time::sleep(wait) => {}
                                _ = feed.gone() => return,
                                _ = stopped(&mut shutdown) => break Some(stopping()),
                            }
                        }
                    }
                    // Nothing to push, but offsets to pass (compacted away, or skipped damage).
                    Ok((_, next)) if next > offset => offset = next,
                    Ok(_) => {
                        drop(memory);
                        tokio::select! {
                            _ = hw.changed() => {}
                            _ = feed.gone() => return,
                            _ = stopped(&mut shutdown) => break Some(stopping()),
                        }
                    }
                    Err(e) => break Some(to_status(e)),
                }
            };
            feed.finish(end);
        });
        Ok(Response::new(Box::pin(outbox)))
    }

    async fn init_producer(&self, req: Request<InitProducerRequest>) -> Result<Response<InitProducerResponse>, Status> {
        let caller = Caller::of(&req);
        let writer_id = req.into_inner().writer_id;
        let owner = Owner::of(caller.principal(), caller.ip());
        let (producer_id, epoch) = self.writers.init(owner, &writer_id).await?;
        Ok(Response::new(InitProducerResponse { producer_id, producer_epoch: i32::from(epoch) }))
    }

    async fn list_offsets(&self, req: Request<ListOffsetsRequest>) -> Result<Response<ListOffsetsResponse>, Status> {
        let caller = Caller::of(&req);
        let req = req.into_inner();
        caller.may(&req.topic)?;
        let log = self.log(&req.topic, req.partition)?;
        let (log_start, hw) = (log.log_start(), log.high_watermark());
        let (offset, timestamp_ms) = match req.spec {
            None => {
                return Err(
                    Error::InvalidArgument("list offsets needs one of earliest, latest or timestamp_ms".into()).into()
                )
            }
            Some(list_offsets_request::Spec::Earliest(_)) => (log_start, -1),
            Some(list_offsets_request::Spec::Latest(_)) => (hw, -1),
            Some(list_offsets_request::Spec::TimestampMs(ts)) => log.offset_for_timestamp(ts)?.unwrap_or((hw, -1)),
        };
        Ok(Response::new(ListOffsetsResponse { offset, timestamp_ms, log_start_offset: log_start, high_watermark: hw }))
    }
}
