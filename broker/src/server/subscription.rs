//! A Subscribe stream's queue of replies, between the task that reads them
//! from storage and tonic, which sends them.
//!
//! Replies start small ([`FIRST_REPLY_BYTES`]) and double with each one the
//! client takes, up to its `max_bytes`: a subscriber that never reads costs
//! one small reply in HTTP/2's send buffer, not one of `max_bytes`, and one
//! that reads is at full size within a few replies.
//!
//! The queue holds at most `server.subscribe_buffer` replies (more than one
//! only while the client keeps taking them), each with the
//! reply memory (`server.reply_memory_bytes`) it was read with; the memory
//! goes back once the reply's bytes have been written to the socket (HTTP/2
//! buffers what the client's window allows: a client that opens its window
//! wide and never reads would otherwise hold memory past the budget). A
//! subscriber that stops
//! reading cannot make others wait for that memory: when the budget runs out,
//! the queues of subscribers that have taken nothing for [`SHED_AFTER`] are
//! dropped ([`Subscriptions::shed_stalled`]) and re-read from storage once
//! their client reads again; and such a subscriber takes budget only while
//! there is room, never waiting in line for it. One that takes nothing for
//! `server.subscribe_stall_timeout_ms` is ended with RESOURCE_EXHAUSTED.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures::Stream;
use strata_proto::raw;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tonic::Status;

use super::connections::ConnState;

/// Record bytes a subscription's first reply asks for.
pub const FIRST_REPLY_BYTES: usize = 64 << 10;

/// A subscriber that has taken nothing for this long while replies wait for
/// it gives them up when the reply budget runs out.
pub const SHED_AFTER: Duration = Duration::from_secs(1);

struct Queued {
    reply: raw::SubscribeResponse,
    queued_at: Instant,
    /// The offset the reply starts at (where to re-read from if dropped).
    offset: u64,
    memory: OwnedSemaphorePermit,
}

struct State {
    queue: VecDeque<Queued>,
    capacity: usize,
    /// tonic's waker, when it found the queue empty.
    waker: Option<Waker>,
    /// Sent after the queue, then the stream ends.
    end: Option<Status>,
    finished: bool,
    /// The client went away (the stream was dropped).
    gone: bool,
    /// The queue was dropped to give its memory to others; the reader waits
    /// for the client to read again, then re-reads from `resume_at`.
    shed: bool,
    resume_at: Option<u64>,
    last_take: Instant,
    /// Replies the client has earned to have read ahead for it: one per
    /// reply it took, at most `capacity`. A client that stops reading has
    /// one reply queued at most, however large the capacity.
    credits: usize,
}

struct Shared {
    state: Mutex<State>,
    /// The connection the replies go out on: a reply's memory is held until
    /// its bytes are written to the socket (None outside the RPC layer).
    conn: Option<Arc<ConnState>>,
    /// Wakes the reading task: room in the queue, or the client is gone.
    room: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Every live subscription's queue, for shedding.
#[derive(Default)]
pub struct Subscriptions {
    all: Mutex<Vec<Weak<Shared>>>,
}

impl Subscriptions {
    /// A new queue of `capacity` replies: the reading side and the stream
    /// tonic sends from.
    pub fn open(&self, capacity: usize, conn: Option<Arc<ConnState>>) -> (Feed, Outbox) {
        let shared = Arc::new(Shared {
            conn,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                capacity,
                waker: None,
                end: None,
                finished: false,
                gone: false,
                shed: false,
                resume_at: None,
                last_take: Instant::now(),
                credits: 0,
            }),
            room: Notify::new(),
        });
        let mut all = self.all.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&shared));
        (Feed(shared.clone()), Outbox(shared))
    }

    /// Drops the queued replies of subscribers that have taken nothing for
    /// [`SHED_AFTER`]; returns how many subscribers gave theirs up.
    pub fn shed_stalled(&self) -> usize {
        let live: Vec<Arc<Shared>> =
            self.all.lock().unwrap_or_else(|p| p.into_inner()).iter().filter_map(Weak::upgrade).collect();
        let mut shed = 0;
        for sub in live {
            let mut st = sub.lock();
            // A reply waiting that long has a client that is not reading.
            if st.gone || st.queue.front().is_none_or(|q| q.queued_at.elapsed() < SHED_AFTER) {
                continue;
            }
            st.resume_at = st.queue.front().map(|q| q.offset);
            st.queue.clear();
            st.shed = true;
            shed += 1;
        }
        if shed > 0 {
            metrics::counter!("strata_subscriber_queues_shed_total").increment(shed as u64);
        }
        shed
    }
}

/// The reading side of a subscription's queue.
pub struct Feed(Arc<Shared>);

/// What [`Feed::room`] found.
pub enum Room {
    /// Read the next reply: from this offset if Some (the queue was shed,
    /// re-read from there); `took`: the client took a reply since the last
    /// one was queued (it is reading: replies may grow).
    Ready { resume: Option<u64>, took: bool },
    /// The client is gone.
    Gone,
    /// The client has taken nothing for the whole wait.
    Stalled,
}

impl Feed {
    /// Waits until the queue has room (and a shed queue's client reads
    /// again), for at most `stall`.
    pub async fn room(&self, stall: Duration) -> Room {
        let deadline = tokio::time::Instant::now() + stall;
        loop {
            let notified = self.0.room.notified();
            {
                let mut st = self.0.lock();
                if st.gone {
                    return Room::Gone;
                }
                if !st.shed && (st.queue.is_empty() || (st.credits > 0 && st.queue.len() < st.capacity)) {
                    return Room::Ready { resume: st.resume_at.take(), took: st.credits > 0 };
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Room::Stalled;
            }
        }
    }

    /// Resolves when the client has gone.
    pub async fn gone(&self) {
        loop {
            let notified = self.0.room.notified();
            if self.0.lock().gone {
                return;
            }
            notified.await;
        }
    }

    /// Whether the client is reading: it asked for a reply within
    /// [`SHED_AFTER`], or is waiting for one now.
    pub fn taking(&self) -> bool {
        let st = self.0.lock();
        st.last_take.elapsed() < SHED_AFTER || (st.queue.is_empty() && st.waker.is_some())
    }

    /// Waits for the client to read again before reading more for it (it
    /// is not reading, and the reply budget has no room for it).
    pub fn park(&self) {
        self.0.lock().shed = true;
    }

    /// Queues a reply starting at `offset`, holding `memory`.
    pub fn push(&self, reply: raw::SubscribeResponse, offset: u64, memory: OwnedSemaphorePermit) {
        let mut st = self.0.lock();
        st.queue.push_back(Queued { reply, queued_at: Instant::now(), offset, memory });
        st.credits = st.credits.saturating_sub(1);
        if let Some(w) = st.waker.take() {
            w.wake();
        }
    }

    /// Ends the stream after what is queued, with `status` if given.
    pub fn finish(&self, status: Option<Status>) {
        let mut st = self.0.lock();
        st.end = status;
        st.finished = true;
        if let Some(w) = st.waker.take() {
            w.wake();
        }
    }

    /// Ends a stalled stream: drops what is queued (its memory goes back at
    /// once) and ends it with `status` when the client next reads.
    pub fn end_stalled(&self, status: Status) {
        self.0.lock().queue.clear();
        self.finish(Some(status));
    }
}

impl Drop for Feed {
    /// However the reading task ends (a panic included), the stream ends.
    fn drop(&mut self) {
        let mut st = self.0.lock();
        if !st.finished {
            st.finished = true;
            st.end.get_or_insert_with(|| {
                super::status::to_status(crate::error::Error::Internal("subscription ended unexpectedly".into()))
            });
            if let Some(w) = st.waker.take() {
                w.wake();
            }
        }
    }
}

/// The stream tonic sends a subscription's replies from.
pub struct Outbox(Arc<Shared>);

impl Stream for Outbox {
    type Item = Result<raw::SubscribeResponse, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut st = self.0.lock();
        // Asked for more: the client is reading.
        st.last_take = Instant::now();
        if std::mem::take(&mut st.shed) {
            self.0.room.notify_one();
        }
        if let Some(q) = st.queue.pop_front() {
            st.credits = (st.credits + 1).min(st.capacity);
            // tonic takes the reply to send: its memory goes back once its
            // bytes have left through the socket, not when HTTP/2 buffers them.
            if let Some(conn) = &self.0.conn {
                conn.hold_until_written(conn.written(), q.reply.records.records_len() as u64, q.memory);
            }
            self.0.room.notify_one();
            return Poll::Ready(Some(Ok(q.reply)));
        }
        if let Some(status) = st.end.take() {
            return Poll::Ready(Some(Err(status)));
        }
        if st.finished {
            return Poll::Ready(None);
        }
        st.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.gone = true;
        st.queue.clear();
        drop(st);
        self.0.room.notify_one();
    }
}
