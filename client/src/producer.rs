//! An idempotent producer: `InitProducer` once, then every request to a
//! partition carries the producer's id, epoch and the partition's next
//! sequence number. A request that timed out or failed in transit is sent
//! again with the same number (bounded retries, exponential backoff), and
//! the broker answers a repeat with the offsets it first gave, so each
//! batch is stored once and in order.
//!
//! With a `writer_id`, a new instance fences the older ones: their
//! requests get FAILED_PRECONDITION ("fenced"), which is not retried.
//! A batch the broker refuses (a conditional append that lost, a denied
//! write) stored nothing: its sequence number goes to the next batch if no
//! later one took a number yet.
//!
//! A producer without a writer id whose id the broker no longer knows
//! (UNKNOWN_PRODUCER_ID: it expired unused, or its owner was issued too
//! many) asks for a new id, numbers its partitions from 0 again, and sends
//! the batch under the new id — only if no attempt of that batch had an
//! unknown outcome (it might be stored under the old id; then the error is
//! returned). With a writer id, UNKNOWN_PRODUCER_ID is returned: the id
//! was taken over or expired, and the instance stops as a fenced one does.

use std::collections::HashMap;
use std::time::Duration;

use tonic::Status;

use crate::proto::ErrorReason;
use crate::refusal::{self, Refusal};
use crate::{proto, Client};

/// How requests are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per batch, the first included.
    pub attempts: u32,
    /// Wait before the first retry; doubles each time.
    pub first_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// How long one attempt may take before it counts as failed.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 10,
            first_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(10),
        }
    }
}

/// A produce request with its sequence number fixed: send it again and it
/// is the same batch to the broker.
///
/// Clones are the same batch: a new stamp (after the producer renewed its
/// id) and whether an attempt's outcome was unknown are shared by them.
#[derive(Debug, Clone)]
pub struct Batch {
    req: proto::ProduceRequest,
    stamp: std::sync::Arc<std::sync::Mutex<Stamp>>,
}

/// A batch's producer stamp, and whether it may have been stored already.
#[derive(Debug)]
struct Stamp {
    producer: Option<proto::ProducerBatch>,
    /// An attempt ended without a definite answer: it may be stored, so it
    /// is never sent under another id.
    in_doubt: bool,
}

impl Batch {
    /// Makes it a conditional append: stored only if the partition's next
    /// offset is `offset` (FAILED_PRECONDITION otherwise, not retried).
    pub fn with_expected_offset(mut self, offset: u64) -> Batch {
        self.req.expected_offset = Some(offset);
        self
    }

    /// Its sequence number on its partition.
    pub fn sequence(&self) -> i32 {
        self.stamp().producer.as_ref().map_or(-1, |p| p.sequence)
    }

    fn stamp(&self) -> std::sync::MutexGuard<'_, Stamp> {
        self.stamp.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The request as it is to be sent now.
    fn request(&self) -> proto::ProduceRequest {
        let mut req = self.req.clone();
        req.producer = self.stamp().producer;
        req
    }
}

/// See the module documentation.
pub struct Producer {
    client: Client,
    writer_id: String,
    producer_id: i64,
    epoch: i32,
    next: HashMap<(String, u32), i32>,
    /// How requests are retried.
    pub retry: RetryPolicy,
}

/// Whether to send the same batch again: its outcome is unknown (a retry
/// with the same sequence is answered, not stored twice), or the broker
/// says a retry may succeed (a budget spent for now, a full disk). A gap in
/// the sequence is not healed by sending the same batch again.
fn retryable(s: &Status) -> bool {
    match Refusal::of(s) {
        Some(r) => !r.definite() || (r.retriable() && !r.is(ErrorReason::OutOfOrderSequence)),
        None => refusal::outcome_unknown(s),
    }
}

impl Producer {
    /// Asks the broker for a producer id and epoch (`writer_id` empty: no
    /// fencing).
    pub async fn init(mut client: Client, writer_id: &str) -> Result<Producer, Status> {
        let req = proto::InitProducerRequest { writer_id: writer_id.into() };
        let r = client.broker.init_producer(req).await?.into_inner();
        Ok(Producer {
            client,
            writer_id: writer_id.to_string(),
            producer_id: r.producer_id,
            epoch: r.producer_epoch,
            next: HashMap::new(),
            retry: RetryPolicy::default(),
        })
    }

    /// The producer id and epoch.
    pub fn id(&self) -> (i64, i32) {
        (self.producer_id, self.epoch)
    }

    /// Sends later requests over `client` (after a reconnect).
    pub fn set_client(&mut self, client: Client) {
        self.client = client;
    }

    /// The next batch for `topic`/`partition`: its sequence number is taken.
    pub fn batch(&mut self, topic: &str, partition: u32, records: Vec<proto::Record>, acks: proto::Acks) -> Batch {
        let next = self.next.entry((topic.to_string(), partition)).or_insert(0);
        let sequence = *next;
        *next = next.checked_add(1).unwrap_or(0);
        let producer = proto::ProducerBatch { producer_id: self.producer_id, producer_epoch: self.epoch, sequence };
        Batch {
            req: proto::ProduceRequest {
                topic: topic.into(),
                partition: Some(partition),
                records,
                acks: acks as i32,
                ..Default::default()
            },
            stamp: std::sync::Arc::new(std::sync::Mutex::new(Stamp { producer: Some(producer), in_doubt: false })),
        }
    }

    /// Sends `batch`, retrying by the policy while the outcome is unknown.
    pub async fn send(&mut self, batch: &Batch) -> Result<proto::ProduceResponse, Status> {
        let mut backoff = self.retry.first_backoff;
        let mut attempt = 1;
        loop {
            let call = self.client.broker.produce(batch.request());
            let result = match tokio::time::timeout(self.retry.attempt_timeout, call).await {
                Ok(r) => r.map(|r| r.into_inner()),
                Err(_) => Err(Status::deadline_exceeded("no answer within the attempt timeout")),
            };
            if let Err(s) = &result {
                if refusal::outcome_unknown(s) {
                    batch.stamp().in_doubt = true;
                }
            }
            match result {
                // This batch was never possibly stored, and the producer has
                // no writer id (one with a writer id that lost its id was
                // taken over, or expired: it stops, as a fenced one does): a
                // new id, and this batch first under it.
                Err(s)
                    if refusal::is(&s, ErrorReason::UnknownProducerId)
                        && self.writer_id.is_empty()
                        && !batch.stamp().in_doubt
                        && attempt < self.retry.attempts =>
                {
                    self.renew(batch).await?;
                    let partition = batch.req.partition.unwrap_or(0);
                    let fresh = self.batch(&batch.req.topic, partition, Vec::new(), proto::Acks::Unspecified);
                    let stamp = fresh.stamp().producer;
                    batch.stamp().producer = stamp;
                    attempt += 1;
                }
                Err(s) if retryable(&s) && attempt < self.retry.attempts => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(self.retry.max_backoff);
                    attempt += 1;
                }
                Err(s) if !refusal::outcome_unknown(&s) => {
                    // Refused: nothing was stored. If no later batch took a
                    // number yet, the next one reuses this one's.
                    self.give_back(batch);
                    return Err(s);
                }
                // Stored or not, unknown: the batch keeps its number; send
                // it again (after a reconnect) to find out.
                r => return r,
            }
        }
    }

    /// A new producer id, unless one was already taken since `batch` was
    /// numbered (another batch found the old one unknown first).
    async fn renew(&mut self, batch: &Batch) -> Result<(), Status> {
        if batch.stamp().producer.as_ref().is_some_and(|p| p.producer_id != self.producer_id) {
            return Ok(());
        }
        let req = proto::InitProducerRequest { writer_id: self.writer_id.clone() };
        let r = self.client.broker.init_producer(req).await?.into_inner();
        self.producer_id = r.producer_id;
        self.epoch = r.producer_epoch;
        self.next.clear();
        Ok(())
    }

    fn give_back(&mut self, batch: &Batch) {
        let Some(partition) = batch.req.partition else { return };
        if let Some(next) = self.next.get_mut(&(batch.req.topic.clone(), partition)) {
            if next.checked_sub(1) == Some(batch.sequence()) {
                *next = batch.sequence();
            }
        }
    }

    /// [`Producer::batch`] and [`Producer::send`].
    pub async fn produce(
        &mut self,
        topic: &str,
        partition: u32,
        records: Vec<proto::Record>,
        acks: proto::Acks,
    ) -> Result<proto::ProduceResponse, Status> {
        let batch = self.batch(topic, partition, records, acks);
        self.send(&batch).await
    }
}
