//! What wraps every RPC, around the tonic services: per-RPC metrics, the
//! connection's open-request count, authorization (`authz.rs`), and the
//! request memory budget.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

use super::authz::Authorizer;
use super::connections::{ConnInfo, ConnState, RequestGuard, StreamGuard};
use super::status::{self, to_status};
use crate::error::{Error, Reason};
use tonic::Code;

/// How much more memory a Groups or Admin request takes decoded than on
/// the wire, at most: lists of small entries (a CommitOffsets of a topic
/// name, a partition and an offset per entry) become a `String` and a
/// struct each; measured 12–34 times. Charged against the request budget.
pub const CONTROL_DECODE_FACTOR: usize = 40;

/// The RPCs that hold a stream open for as long as the client likes:
/// bounded per address and principal (`server.max_streams_per_*`), and
/// their connections may be closed to make room for new clients.
const LONG_LIVED: &[&str] = &["/strata.v1.Broker/Subscribe", "/grpc.health.v1.Health/Watch"];

/// Limits every request shares (`server.*` keys).
#[derive(Clone)]
pub struct RequestLimits {
    /// `server.max_request_bytes`: the largest message a request may carry.
    pub max_request_bytes: usize,
    /// `server.max_control_request_bytes`: the largest Groups or Admin message.
    pub max_control_request_bytes: usize,
    /// `server.request_memory_bytes`: bytes of request messages being
    /// received and decoded at once, over all connections.
    pub budget: Arc<Semaphore>,
    /// The budget's size, for errors.
    pub budget_bytes: usize,
}

/// Wraps each RPC: counts it by method and gRPC status and times it (to the
/// response head: for streams, to the first reply); keeps its connection
/// marked busy until the response ends; holds its messages to the request
/// memory budget.
#[derive(Clone)]
pub struct RpcLayer {
    /// The limits.
    pub limits: RequestLimits,
    /// Who may call what.
    pub authorizer: Arc<Authorizer>,
}

impl<S> tower::Layer<S> for RpcLayer {
    type Service = Rpc<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Rpc { inner, limits: self.limits.clone(), authorizer: self.authorizer.clone() }
    }
}

/// See [`RpcLayer`].
#[derive(Clone)]
pub struct Rpc<S> {
    inner: S,
    limits: RequestLimits,
    authorizer: Arc<Authorizer>,
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for Rpc<S>
where
    S: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Tracked<tonic::body::Body>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let method = req.uri().path().to_string();
        let start = Instant::now();
        let conn = req.extensions().get::<ConnInfo>();
        let guard = conn.map(|c| c.state.begin_request());
        let admitted = self.authorizer.admit(&method, req.headers(), conn);
        if let Err(status) = &admitted {
            if status.code() == tonic::Code::Unauthenticated {
                let (principal, peer) = (conn.and_then(|c| c.principal()).unwrap_or(""), conn.map(|c| c.peer));
                super::authz::log_denial(&method, principal, peer, status.message(), "Unauthenticated");
            }
        }
        // A long-lived stream counts against its address's and principal's
        // bound from the start.
        let stream = match (&admitted, conn) {
            (Ok(caller), Some(c)) if LONG_LIVED.contains(&method.as_str()) => Some(c.begin_stream(caller.principal())),
            _ => None,
        };
        let limits = self.limits.clone();
        let kind = MessageKind::of(&method);
        let mut req = req.map(|body| tonic::body::Body::new(Budgeted::new(body, limits, kind)));
        // A refused request never reaches its service (nothing of it is read).
        // The service that is ready goes into the future; a clone stays.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let (stream, refused) = match stream {
                Some(Err(e)) => (None, Some(to_status(e))),
                Some(Ok(g)) => (Some(g), None),
                None => (None, None),
            };
            let result = match (admitted, refused) {
                (_, Some(status)) => Ok(status.into_http()),
                (Ok(caller), None) => {
                    // Held back for the caller's request-rate quota before
                    // anything of it is read.
                    let throttled = caller.throttled;
                    req.extensions_mut().insert(caller);
                    if !throttled.is_zero() {
                        tokio::time::sleep(throttled).await;
                    }
                    inner.call(req).await
                }
                (Err(status), None) => Ok(status.into_http()),
            };
            let code = match &result {
                // Errors come back trailers-only, with the status in the head.
                Ok(resp) => resp.headers().get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or("0").to_string(),
                Err(_) => "transport".to_string(),
            };
            // Unknown methods (UNIMPLEMENTED) share one label: a client must
            // not create a metric series per path it makes up.
            let method = if code == "12" { "unknown".to_string() } else { method };
            metrics::histogram!("strata_rpc_duration_seconds", "method" => method.clone())
                .record(start.elapsed().as_secs_f64());
            metrics::counter!("strata_rpc_requests_total", "method" => method, "code" => code).increment(1);
            result.map(|mut resp| {
                let held = resp.extensions_mut().remove::<HeldMemory>();
                let held = match (held, &guard) {
                    (Some(memory), Some(g)) => Some(HeldReply::new(memory, g.conn())),
                    _ => None,
                };
                resp.map(|inner| Tracked { inner, _guard: guard, _stream: stream, held })
            })
        })
    }
}

/// Reply memory a handler leaves in its response's extensions, to be held
/// until the reply has been sent: while its body is being sent, and then
/// until its bytes have been written to the socket (HTTP/2 buffers what
/// the client's window allows), so the memory goes back when the reply has
/// left, not when it was built or handed to HTTP/2.
#[derive(Clone)]
pub struct HeldMemory {
    permit: Arc<std::sync::Mutex<Option<OwnedSemaphorePermit>>>,
}

impl HeldMemory {
    /// Holds `permit` until the reply is sent.
    pub fn new(permit: OwnedSemaphorePermit) -> Self {
        HeldMemory { permit: Arc::new(std::sync::Mutex::new(Some(permit))) }
    }

    fn take(&self) -> Option<OwnedSemaphorePermit> {
        self.permit.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// [`HeldMemory`] in a response body, counted on its connection so that a
/// client that stops taking replies (an HTTP/2 window kept at 0) is closed
/// after `server.subscribe_stall_timeout_ms` (see `connections.rs`).
struct HeldReply {
    memory: HeldMemory,
    conn: Arc<ConnState>,
    /// The socket's byte count when the body's first bytes went to HTTP/2,
    /// and the body's bytes so far.
    from: Option<u64>,
    bytes: u64,
}

impl HeldReply {
    fn new(memory: HeldMemory, conn: Arc<ConnState>) -> Self {
        conn.reply_held();
        HeldReply { memory, conn, from: None, bytes: 0 }
    }

    fn sent(&mut self, bytes: usize) {
        self.from.get_or_insert_with(|| self.conn.written());
        self.bytes += bytes as u64;
    }
}

impl Drop for HeldReply {
    fn drop(&mut self) {
        self.conn.reply_released();
        // Handed to HTTP/2 whole: held until its bytes leave the socket.
        if let Some(permit) = self.memory.take() {
            let from = self.from.unwrap_or_else(|| self.conn.written());
            self.conn.hold_until_written(from, self.bytes, permit);
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted as open until it
    /// ends, and the reply memory it holds until then.
    pub struct Tracked<B> {
        #[pin]
        inner: B,
        _guard: Option<RequestGuard>,
        _stream: Option<StreamGuard>,
        held: Option<HeldReply>,
    }
}

impl<B: Body> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let Some(held) = this.held else { return this.inner.poll_frame(cx) };
        held.conn.sending();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(data) = frame.as_ref().and_then(|f| f.as_ref().ok()).and_then(|f| f.data_ref()) {
            held.sent(bytes::Buf::remaining(data));
        }
        Poll::Ready(frame)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

type Acquire = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, ()>> + Send>>;

/// Which bound a request's messages have.
#[derive(Clone, Copy, PartialEq, Eq)]
enum MessageKind {
    /// Broker (produce, fetch), health, reflection: `server.max_request_bytes`,
    /// charged at their size (they are scanned before decoding).
    Data,
    /// Groups and Admin: `server.max_control_request_bytes`, charged at
    /// [`CONTROL_DECODE_FACTOR`] times their size.
    Control,
}

impl MessageKind {
    fn of(path: &str) -> MessageKind {
        match path.starts_with("/strata.v1.Groups/") || path.starts_with("/strata.v1.Admin/") {
            true => MessageKind::Control,
            false => MessageKind::Data,
        }
    }
}

/// Longest a request message waits for room in the request memory budget
/// before it is refused with RESOURCE_EXHAUSTED.
const BUDGET_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A request body read frame by frame of the gRPC framing (a flag byte and
/// a 4-byte length before each message). Each message's length is checked
/// against `server.max_request_bytes` and taken from the request memory
/// budget before any of its bytes go on to be buffered and decoded; it is
/// given back when the next message starts or the body is dropped (a
/// unary request's body is dropped once decoded). While the budget is
/// spent the body is not read, so HTTP/2 flow control holds the client back.
struct Budgeted {
    inner: tonic::body::Body,
    limits: RequestLimits,
    kind: MessageKind,
    /// The chunk being scanned and how far.
    chunk: Option<(Bytes, usize)>,
    header: [u8; 5],
    header_len: usize,
    /// Bytes of the current message still to pass.
    message_left: usize,
    held: Option<OwnedSemaphorePermit>,
    acquiring: Option<Acquire>,
}

impl Budgeted {
    fn new(inner: tonic::body::Body, limits: RequestLimits, kind: MessageKind) -> Self {
        Budgeted {
            inner,
            limits,
            kind,
            chunk: None,
            header: [0; 5],
            header_len: 0,
            message_left: 0,
            held: None,
            acquiring: None,
        }
    }

    /// Scans the held chunk; Pending while waiting for budget.
    fn scan(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        loop {
            if let Some(acquiring) = &mut self.acquiring {
                let permit = ready!(acquiring.as_mut().poll(cx)).map_err(|_| {
                    to_status(Error::Busy {
                        limit: "server.request_memory_bytes",
                        message: format!(
                            "server.request_memory_bytes = {} stayed in use by other requests for {} ms; retry",
                            self.limits.budget_bytes,
                            BUDGET_WAIT.as_millis()
                        ),
                    })
                })?;
                self.held = Some(permit);
                self.acquiring = None;
            }
            let Some((chunk, pos)) = &mut self.chunk else { return Poll::Ready(Ok(())) };
            let rest = &chunk[*pos..];
            if rest.is_empty() {
                return Poll::Ready(Ok(()));
            }
            if self.message_left > 0 {
                let n = self.message_left.min(rest.len());
                self.message_left -= n;
                *pos += n;
                continue;
            }
            let n = (5 - self.header_len).min(rest.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&rest[..n]);
            self.header_len += n;
            *pos += n;
            if self.header_len < 5 {
                continue;
            }
            self.header_len = 0;
            let len = u32::from_be_bytes([self.header[1], self.header[2], self.header[3], self.header[4]]) as usize;
            self.message_left = len;
            // The previous message is decoded by now.
            self.held = None;
            self.take_budget(len)?;
        }
    }

    fn take_budget(&mut self, len: usize) -> Result<(), Status> {
        let limits = &self.limits;
        let (max, key, charge) = match self.kind {
            MessageKind::Data => (limits.max_request_bytes, "server.max_request_bytes", len),
            MessageKind::Control => (
                limits.max_control_request_bytes,
                "server.max_control_request_bytes",
                // What it takes decoded; never more than the whole budget.
                len.saturating_mul(CONTROL_DECODE_FACTOR).min(limits.budget_bytes),
            ),
        };
        if len > max {
            return Err(status::refusal(
                Code::ResourceExhausted,
                Reason::MessageTooLarge,
                format!("request message of {len} bytes is over {key} = {max}"),
                vec![("limit", key.to_string()), ("bytes", len.to_string()), ("max", max.to_string())],
            ));
        }
        let len = charge;
        // (At most max_request_bytes, which the budget is at least.)
        if let Ok(permit) = limits.budget.clone().try_acquire_many_owned(len as u32) {
            self.held = Some(permit);
            return Ok(());
        }
        metrics::counter!("strata_request_budget_waits_total").increment(1);
        // A bounded wait: a stream waiting is not read, and enough of them
        // could hold the connection's HTTP/2 window that the request holding
        // the memory needs to finish.
        let acquire = limits.budget.clone().acquire_many_owned(len as u32);
        self.acquiring =
            Some(Box::pin(
                async move { tokio::time::timeout(BUDGET_WAIT, acquire).await.map_err(|_| ())?.map_err(|_| ()) },
            ));
        Ok(())
    }
}

impl Body for Budgeted {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        // Asked for more with no message half-received: every message so
        // far has been decoded, so its memory goes back.
        if this.chunk.is_none() && this.message_left == 0 && this.header_len == 0 {
            this.held = None;
        }
        loop {
            if this.chunk.is_some() {
                ready!(this.scan(cx))?;
                if let Some((chunk, _)) = this.chunk.take() {
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
            }
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.chunk = Some((data, 0)),
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return Poll::Ready(other),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.chunk.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
