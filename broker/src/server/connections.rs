//! Client connections as a budgeted resource.
//!
//! Every accepted connection is registered with what it costs and how it is
//! used: when it opened, whether it finished the HTTP/2 handshake, how many
//! requests it has open and since when it has had none. That is what lets
//! the broker keep serving new clients when sockets run out:
//!
//! - a connection that has not sent the HTTP/2 preface and SETTINGS within
//!   `server.handshake_timeout_ms` is closed;
//! - one with no open request for `server.idle_timeout_ms` is closed;
//! - at `server.max_connections` (or `server.max_connections_per_ip` for
//!   the new client's address) the connection idle longest is closed to make
//!   room; only when every connection has an open request is the new one
//!   refused;
//! - one whose replies hold reply memory (fetch replies being sent) but
//!   send nothing for `server.subscribe_stall_timeout_ms` (its client keeps
//!   its HTTP/2 window closed) is closed;
//! - accept errors (`EMFILE`: out of file descriptors) back off instead of
//!   spinning, and are logged at most once a second.
//!
//! With TLS (`[tls]`), the TLS handshake runs on the connection's first
//! read or write, not in the accept loop, so a client that never finishes it
//! holds up nobody else; it counts toward the handshake deadline, like a
//! client that never sends the HTTP/2 preface.
//!
//! Closing is `shutdown(2)` on the socket: the HTTP/2 server sees the end of
//! the stream and drops the connection. Nothing it had open is lost: a
//! connection is only closed for being idle once it has had no open request
//! for a moment, and for stalling only when its client takes nothing.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit};
use tonic::transport::server::Connected;

use super::in_flight::InFlight;
pub use crate::net::address_group;
use crate::shutdown::stopped;
use crate::tls::Tls;

/// The HTTP/2 client preface (24 bytes) and a SETTINGS frame header (9):
/// a client that sent this much has done its part of the handshake.
const HANDSHAKE_BYTES: u64 = 24 + 9;

/// A connection is closed for being idle (to make room, or at a stop) only
/// once it has been idle this long: its last reply may still be on its way
/// out of the HTTP/2 layer just after its request ended.
const MIN_IDLE: Duration = Duration::from_millis(250);

/// Limits on client connections (the `server.*` keys of the same names).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// `server.max_connections`.
    pub max_connections: usize,
    /// `server.max_connections_per_ip`.
    pub max_per_ip: usize,
    /// `server.max_streams_per_ip`.
    pub max_streams_per_ip: usize,
    /// `server.max_streams_per_principal`.
    pub max_streams_per_principal: usize,
    /// `quotas.connections_per_sec_per_ip` (0: unlimited).
    pub rate_per_ip: u64,
    /// `server.handshake_timeout_ms`.
    pub handshake_timeout: Duration,
    /// `server.idle_timeout_ms`.
    pub idle_timeout: Duration,
    /// `server.subscribe_stall_timeout_ms`: a connection whose replies hold
    /// reply memory and send nothing for this long is closed.
    pub send_stall_timeout: Duration,
}

/// How one connection is being used; shared by its socket, its requests
/// and the registry.
#[derive(Debug)]
pub struct ConnState {
    opened: Instant,
    bytes_read: AtomicU64,
    open_requests: AtomicUsize,
    /// Milliseconds after `opened` when the last request ended.
    idle_since_ms: AtomicU64,
    /// Replies holding reply memory until they are sent, and when one of
    /// them last sent something (ms after `opened`).
    held_replies: AtomicUsize,
    last_send_ms: AtomicU64,
    /// Open requests that are long-lived streams (Subscribe, Watch).
    long_streams: AtomicUsize,
    /// Reply memory handed to HTTP/2 and not yet written to the socket.
    in_flight: InFlight,
}

impl ConnState {
    fn new() -> ConnState {
        ConnState {
            opened: Instant::now(),
            bytes_read: AtomicU64::new(0),
            open_requests: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            held_replies: AtomicUsize::new(0),
            last_send_ms: AtomicU64::new(0),
            long_streams: AtomicUsize::new(0),
            in_flight: InFlight::default(),
        }
    }

    /// Bytes written to the socket so far.
    pub fn written(&self) -> u64 {
        self.in_flight.written()
    }

    /// Holds `permit` (reply memory) until the socket has written `bytes`
    /// more than it had at `from` (see `server/in_flight.rs`).
    pub fn hold_until_written(&self, from: u64, bytes: u64, permit: OwnedSemaphorePermit) {
        self.in_flight.hold(from, bytes, permit, self.now_ms());
    }

    /// How long memory in flight has waited for the socket to write
    /// anything (None: none in flight).
    fn in_flight_stalled_for(&self, now: Instant) -> Option<Duration> {
        let now_ms = now.saturating_duration_since(self.opened).as_millis() as u64;
        self.in_flight.stalled_for_ms(now_ms).map(Duration::from_millis)
    }

    fn handshaken(&self) -> bool {
        self.bytes_read.load(Ordering::Relaxed) >= HANDSHAKE_BYTES
    }

    /// How long it has had no open request (None: it has one).
    fn idle_for(&self, now: Instant) -> Option<Duration> {
        if self.open_requests.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = self.opened + Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed));
        Some(now.saturating_duration_since(since))
    }

    fn now_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    /// A reply holding reply memory starts; it must keep sending.
    pub fn reply_held(&self) {
        if self.held_replies.fetch_add(1, Ordering::AcqRel) == 0 {
            self.last_send_ms.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    /// A reply holding reply memory sent something.
    pub fn sending(&self) {
        self.last_send_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// A reply holding reply memory ended.
    pub fn reply_released(&self) {
        self.held_replies.fetch_sub(1, Ordering::AcqRel);
    }

    /// How long replies holding memory have sent nothing (None: none held).
    fn send_stalled_for(&self, now: Instant) -> Option<Duration> {
        if self.held_replies.load(Ordering::Acquire) == 0 {
            return None;
        }
        let since = self.opened + Duration::from_millis(self.last_send_ms.load(Ordering::Relaxed));
        Some(now.saturating_duration_since(since))
    }

    /// Marks a request open until the returned guard drops.
    pub fn begin_request(self: &Arc<Self>) -> RequestGuard {
        self.open_requests.fetch_add(1, Ordering::AcqRel);
        RequestGuard(self.clone())
    }
}

/// An open request on a connection (see [`ConnState::begin_request`]).
pub struct RequestGuard(Arc<ConnState>);

impl RequestGuard {
    /// The request's connection.
    pub fn conn(&self) -> Arc<ConnState> {
        self.0.clone()
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let ms = self.0.opened.elapsed().as_millis() as u64;
        self.0.idle_since_ms.store(ms, Ordering::Relaxed);
        self.0.open_requests.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What tonic puts in each request's extensions for this connection.
#[derive(Clone)]
pub struct ConnInfo {
    /// Its connection's state.
    pub state: Arc<ConnState>,
    /// The client's address.
    pub peer: SocketAddr,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The principal of the client's certificate (mutual TLS), set when the
    /// handshake completes (before any request is read).
    principal: Arc<OnceLock<String>>,
    id: u64,
    connections: Weak<Connections>,
}

impl ConnInfo {
    /// The principal the client's certificate maps to, with mutual TLS.
    pub fn principal(&self) -> Option<&str> {
        self.principal.get().map(String::as_str)
    }

    /// Admits a long-lived stream (Subscribe, health Watch) of `principal`
    /// on this connection, within `server.max_streams_per_ip` and
    /// `server.max_streams_per_principal`; the guard ends it.
    pub fn begin_stream(&self, principal: Option<&str>) -> Result<StreamGuard, crate::error::Error> {
        let Some(c) = self.connections.upgrade() else {
            return Err(crate::error::Error::Unavailable(
                crate::error::Unavailability::Stopping,
                "the listener is stopping".into(),
            ));
        };
        let group = address_group(self.peer.ip());
        let mut reg = c.lock();
        let from_group = reg.streams_by_group.get(&group).copied().unwrap_or(0);
        if from_group >= c.limits.max_streams_per_ip {
            return Err(crate::error::Error::Busy {
                limit: "server.max_streams_per_ip",
                message: format!(
                    "client address {group} has {from_group} long-lived streams (Subscribe, Watch) open: server.max_streams_per_ip = {}; end some first",
                    c.limits.max_streams_per_ip
                ),
            });
        }
        let principal: Option<Arc<str>> = principal.map(Arc::from);
        if let Some(p) = &principal {
            let of_principal = reg.streams_by_principal.get(p).copied().unwrap_or(0);
            if of_principal >= c.limits.max_streams_per_principal {
                return Err(crate::error::Error::Busy {
                    limit: "server.max_streams_per_principal",
                    message: format!(
                        "principal {p:?} has {of_principal} long-lived streams (Subscribe, Watch) open: server.max_streams_per_principal = {}; end some first",
                        c.limits.max_streams_per_principal
                    ),
                });
            }
            *reg.streams_by_principal.entry(p.clone()).or_default() += 1;
        }
        *reg.streams_by_group.entry(group).or_default() += 1;
        self.state.long_streams.fetch_add(1, Ordering::AcqRel);
        Ok(StreamGuard { connections: c.clone(), state: self.state.clone(), group, principal })
    }

    /// Closes this connection (and every request on it): for a client that
    /// holds a stream it will not read.
    pub fn close(&self, why: &'static str) {
        if let Some(c) = self.connections.upgrade() {
            c.lock().close(self.id, why);
        }
    }
}

/// An open long-lived stream (see [`ConnInfo::begin_stream`]).
pub struct StreamGuard {
    connections: Arc<Connections>,
    state: Arc<ConnState>,
    group: IpAddr,
    principal: Option<Arc<str>>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.state.long_streams.fetch_sub(1, Ordering::AcqRel);
        let mut reg = self.connections.lock();
        decrement(&mut reg.streams_by_group, &self.group);
        if let Some(p) = &self.principal {
            decrement(&mut reg.streams_by_principal, p);
        }
    }
}

/// One fewer under `key`; no entry at 0.
fn decrement<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(key);
        }
    }
}

struct Entry {
    /// The client's address group ([`address_group`]).
    ip: IpAddr,
    fd: RawFd,
    state: Arc<ConnState>,
    /// Shut down, waiting for the server to drop it; no longer counted.
    closing: bool,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    conns: HashMap<u64, Entry>,
    /// Per IP, when its connection rate is next within its quota (GCRA,
    /// one second of burst).
    rates: HashMap<IpAddr, Instant>,
    /// Long-lived streams open, per address group and per principal.
    streams_by_group: HashMap<IpAddr, usize>,
    streams_by_principal: HashMap<Arc<str>, usize>,
}

impl Registry {
    fn counted(&self) -> impl Iterator<Item = (&u64, &Entry)> {
        self.conns.iter().filter(|(_, e)| !e.closing)
    }

    /// Shuts the connection's socket down. Called with the registry locked:
    /// the socket is only closed after its entry is removed (see [`Conn`]),
    /// so `fd` is still this connection's.
    fn close(&mut self, id: u64, why: &'static str) {
        if let Some(e) = self.conns.get_mut(&id) {
            if !e.closing {
                e.closing = true;
                // SAFETY: `fd` is an open socket owned by a live `Conn` (its
                // entry is removed under this lock before the socket closes);
                // shutdown(2) does not close or invalidate the descriptor.
                unsafe { libc::shutdown(e.fd, libc::SHUT_RDWR) };
                e.state.in_flight.release();
                metrics::counter!("strata_connections_closed_total", "reason" => why).increment(1);
            }
        }
    }

    /// The counted connection (of `ip`, if given) idle longest, if any has
    /// been idle for [`MIN_IDLE`].
    fn longest_idle(&self, ip: Option<IpAddr>, now: Instant) -> Option<u64> {
        self.counted()
            .filter(|(_, e)| ip.is_none_or(|ip| e.ip == ip))
            .filter_map(|(id, e)| e.state.idle_for(now).filter(|idle| *idle >= MIN_IDLE).map(|idle| (idle, *id)))
            .max()
            .map(|(_, id)| id)
    }

    /// The connection to close for a new one when none is idle: one whose
    /// open requests are all long-lived streams (they reconnect), from the
    /// address group (of `ip`, if given) holding the most connections, the
    /// oldest of them. Never one with a unary request or a producing stream.
    fn streams_only(&self, ip: Option<IpAddr>) -> Option<u64> {
        let only_streams = |e: &Entry| {
            let open = e.state.open_requests.load(Ordering::Acquire);
            open > 0 && e.state.long_streams.load(Ordering::Acquire) >= open
        };
        let mut per_group: HashMap<IpAddr, usize> = HashMap::new();
        for (_, e) in self.counted() {
            *per_group.entry(e.ip).or_default() += 1;
        }
        self.counted()
            .filter(|(_, e)| ip.is_none_or(|ip| e.ip == ip) && only_streams(e))
            .max_by_key(|(id, e)| (per_group[&e.ip], std::cmp::Reverse(**id)))
            .map(|(id, _)| *id)
    }
}

/// The registry of open connections.
pub struct Connections {
    limits: ConnLimits,
    registry: Mutex<Registry>,
}

impl Connections {
    /// An empty registry enforcing `limits`.
    pub fn new(limits: ConnLimits) -> Arc<Self> {
        Arc::new(Connections { limits, registry: Mutex::new(Registry::default()) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes room for a new connection from `ip` by closing the connection
    /// idle longest where a limit is reached; false if no room can be made.
    fn admit(&self, ip: IpAddr) -> bool {
        let mut reg = self.lock();
        let now = Instant::now();
        if self.limits.rate_per_ip > 0 {
            if reg.rates.len() >= 100_000 {
                reg.rates.retain(|_, t| *t > now);
            }
            let tat = reg.rates.entry(address_group(ip)).or_insert(now);
            let start = (*tat).max(now);
            if start > now + Duration::from_secs(1) {
                metrics::counter!("strata_connections_rate_limited_total").increment(1);
                return false;
            }
            *tat = start + Duration::from_secs_f64(1.0 / self.limits.rate_per_ip as f64);
        }
        let group = address_group(ip);
        let from_ip = reg.counted().filter(|(_, e)| e.ip == group).count();
        if from_ip >= self.limits.max_per_ip {
            match reg.longest_idle(Some(group), now).or_else(|| reg.streams_only(Some(group))) {
                Some(id) => reg.close(id, "evicted"),
                None => return false,
            }
        }
        if reg.counted().count() >= self.limits.max_connections {
            match reg.longest_idle(None, now).or_else(|| reg.streams_only(None)) {
                Some(id) => reg.close(id, "evicted"),
                None => return false,
            }
        }
        true
    }

    fn register(self: &Arc<Self>, stream: TcpStream, peer: SocketAddr, tls: Option<&Arc<Tls>>) -> Conn {
        let state = Arc::new(ConnState::new());
        let mut reg = self.lock();
        let id = reg.next_id;
        reg.next_id += 1;
        let entry =
            Entry { ip: address_group(peer.ip()), fd: stream.as_raw_fd(), state: state.clone(), closing: false };
        reg.conns.insert(id, entry);
        metrics::gauge!("strata_active_connections").set(reg.conns.len() as f64);
        drop(reg);
        let io = match tls {
            Some(tls) => Io::Handshake(Box::new(tls.acceptor().accept(stream)), tls.clone()),
            None => Io::Plain(stream),
        };
        let principal = Arc::new(OnceLock::new());
        let info = ConnInfo { state, peer, tls: tls.is_some(), principal, id, connections: Arc::downgrade(self) };
        Conn { _slot: Slot { id, connections: self.clone() }, io, info }
    }

    /// Closes connections past their handshake or idle deadline; once the
    /// server is `stopping`, every connection without an open request.
    fn reap(&self, stopping: bool) {
        let mut reg = self.lock();
        let now = Instant::now();
        let expired: Vec<(u64, &'static str)> = reg
            .counted()
            .filter_map(|(id, e)| {
                let age = now.saturating_duration_since(e.state.opened);
                let idle = e.state.idle_for(now);
                if stopping && idle.is_some_and(|idle| idle >= MIN_IDLE) {
                    Some((*id, "stopping"))
                } else if !e.state.handshaken() && age >= self.limits.handshake_timeout {
                    Some((*id, "handshake_timeout"))
                } else if idle.is_some_and(|idle| idle >= self.limits.idle_timeout) {
                    Some((*id, "idle_timeout"))
                } else if e.state.send_stalled_for(now).is_some_and(|s| s >= self.limits.send_stall_timeout) {
                    Some((*id, "send_stalled"))
                } else if e.state.in_flight_stalled_for(now).is_some_and(|s| s >= 2 * self.limits.send_stall_timeout) {
                    // Replies handed to HTTP/2 whose bytes never leave: the
                    // client reads nothing. Twice the timeout: a stalled
                    // subscriber first gets its status (see `broker.rs`).
                    Some((*id, "send_stalled"))
                } else {
                    None
                }
            })
            .collect();
        for (id, why) in expired {
            reg.close(id, why);
        }
    }

    /// Closes the connections whose replies holding reply memory have sent
    /// nothing for `stalled` (clients that keep their windows shut, or do not
    /// read their socket): when the reply budget runs out, what they hold
    /// goes to readers that read. Returns how many were closed.
    pub fn close_send_stalled(&self, stalled: Duration) -> usize {
        let mut reg = self.lock();
        let now = Instant::now();
        let ids: Vec<u64> = reg
            .counted()
            .filter(|(_, e)| {
                let state = &e.state;
                state.send_stalled_for(now).is_some_and(|s| s >= stalled)
                    || state.in_flight_stalled_for(now).is_some_and(|s| s >= stalled)
            })
            .map(|(id, _)| *id)
            .collect();
        for &id in &ids {
            reg.close(id, "send_stalled");
        }
        ids.len()
    }

    /// Closes idle and unhandshaken connections every so often; after
    /// `stop`, every idle one (a stop waits for connections to end, and an
    /// idle or silent client would not end its own). Runs until dropped.
    pub async fn run_reaper(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let shortest = self.limits.handshake_timeout.min(self.limits.idle_timeout).min(self.limits.send_stall_timeout);
        let period = (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut tick = tokio::time::interval(period);
        tokio::select! {
            _ = async { loop { tick.tick().await; self.reap(false) } } => {}
            _ = stopped(&mut stop) => {}
        }
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tick.tick().await;
            self.reap(true);
        }
    }
}

/// Accepts connections for the gRPC server under `connections`' limits.
pub fn incoming(
    listener: TcpListener,
    connections: Arc<Connections>,
    tls: Option<Arc<Tls>>,
) -> impl Stream<Item = std::io::Result<Conn>> {
    let refusals = crate::net::RateLimitedLog::default();
    let state = (listener, connections, refusals, tls);
    futures::stream::unfold(state, |(listener, connections, mut refusals, tls)| async move {
        loop {
            let Some((stream, peer)) = crate::net::accept(&listener, "grpc").await else { continue };
            if !connections.admit(peer.ip()) {
                metrics::counter!("strata_connections_rejected_total").increment(1);
                refusals.log(|n| {
                    tracing::warn!(%peer, refused = n, "connections refused: over quotas.connections_per_sec_per_ip, or every connection has a request open at server.max_connections or server.max_connections_per_ip")
                });
                continue; // dropping the stream closes it
            }
            let _ = stream.set_nodelay(true);
            let conn = connections.register(stream, peer, tls.as_ref());
            return Some((Ok(conn), (listener, connections, refusals, tls)));
        }
    })
}

/// Removes its connection from the registry when dropped.
struct Slot {
    id: u64,
    connections: Arc<Connections>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut reg = self.connections.lock();
        reg.conns.remove(&self.id);
        metrics::gauge!("strata_active_connections").set(reg.conns.len() as f64);
    }
}

/// An accepted, registered connection.
pub struct Conn {
    // Dropped first (fields drop in order): the entry goes before the socket
    // closes, which is what makes `Registry::close` safe.
    _slot: Slot,
    io: Io,
    info: ConnInfo,
}

/// A connection's byte stream: plain, in its TLS handshake, or TLS.
enum Io {
    Plain(TcpStream),
    Handshake(Box<tokio_rustls::Accept<TcpStream>>, Arc<Tls>),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// The handshake failed.
    Failed,
}

impl Conn {
    /// Drives a TLS handshake to its end; Ready(Ok) once the stream is
    /// plain or TLS. A mutual-TLS client whose certificate names no
    /// principal (by `tls.principal`) is refused here.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        use std::future::Future;
        let Io::Handshake(accept, tls) = &mut self.io else {
            return match self.io {
                Io::Failed => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
                _ => Poll::Ready(Ok(())),
            };
        };
        let stream = match Pin::new(accept.as_mut()).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(stream)) => stream,
            Poll::Ready(Err(e)) => {
                metrics::counter!("strata_tls_handshake_failures_total").increment(1);
                tracing::debug!(peer = %self.info.peer, error = %e, "TLS handshake failed");
                self.io = Io::Failed;
                return Poll::Ready(Err(e));
            }
        };
        if tls.mutual() {
            let cert = stream.get_ref().1.peer_certificates().and_then(|c| c.first());
            match cert.and_then(|c| tls.principal(c)) {
                Some(p) => {
                    let _ = self.info.principal.set(p);
                }
                None => {
                    metrics::counter!("strata_tls_handshake_failures_total").increment(1);
                    tracing::debug!(peer = %self.info.peer, "client certificate names no principal (tls.principal)");
                    self.io = Io::Failed;
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::PermissionDenied,
                        "client certificate names no principal",
                    )));
                }
            }
        }
        self.io = Io::Tls(Box::new(stream));
        Poll::Ready(Ok(()))
    }
}

/// Runs `$op` on the connection's stream once it is ready.
macro_rules! on_stream {
    ($conn:expr, $cx:expr, |$s:ident| $op:expr) => {{
        let conn = &mut *$conn;
        match conn.poll_ready($cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        match &mut conn.io {
            Io::Plain($s) => $op,
            Io::Tls(tls) => {
                let $s = tls.as_mut();
                $op
            }
            Io::Handshake(..) | Io::Failed => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }};
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = on_stream!(self, cx, |s| Pin::new(s).poll_read(cx, buf));
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            self.info.state.bytes_read.fetch_add(n, Ordering::Relaxed);
        }
        r
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = on_stream!(self, cx, |s| Pin::new(s).poll_write(cx, buf));
        if let Poll::Ready(Ok(n)) = r {
            self.info.state.in_flight.wrote(n, self.info.state.now_ms());
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        on_stream!(self, cx, |s| Pin::new(s).poll_flush(cx))
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        on_stream!(self, cx, |s| Pin::new(s).poll_shutdown(cx))
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = on_stream!(self, cx, |s| Pin::new(s).poll_write_vectored(cx, bufs));
        if let Poll::Ready(Ok(n)) = r {
            self.info.state.in_flight.wrote(n, self.info.state.now_ms());
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        // Asked once, possibly before a TLS handshake: both TCP and TLS
        // streams take vectored writes.
        true
    }
}
