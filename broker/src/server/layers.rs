//! Connection limit and per-RPC metrics, around the tonic services.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// An accepted connection, counted while open.
pub struct Conn {
    stream: TcpStream,
    _slot: Slot,
}

struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        let now = self.0.fetch_sub(1, Ordering::AcqRel) - 1;
        metrics::gauge!("strata_active_connections").set(now as f64);
    }
}

/// Accepts connections, closing those beyond `max` at once (logged).
pub fn incoming(listener: TcpListener, max: usize) -> impl Stream<Item = std::io::Result<Conn>> {
    let active = Arc::new(AtomicUsize::new(0));
    futures::stream::unfold((listener, active), move |(listener, active)| async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => return Some((Err(e), (listener, active))),
            };
            if active.load(Ordering::Acquire) >= max {
                tracing::warn!(%peer, max_connections = max, "connection refused: server.max_connections reached");
                metrics::counter!("strata_connections_rejected_total").increment(1);
                continue; // dropping the stream closes it
            }
            let _ = stream.set_nodelay(true);
            let now = active.fetch_add(1, Ordering::AcqRel) + 1;
            metrics::gauge!("strata_active_connections").set(now as f64);
            let conn = Conn { stream, _slot: Slot(active.clone()) };
            return Some((Ok(conn), (listener, active)));
        }
    })
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Counts requests by method and gRPC status, and times them (to the
/// response head: for streams, to the first reply).
#[derive(Clone, Default)]
pub struct RpcMetricsLayer;

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics { inner }
    }
}

/// See [`RpcMetricsLayer`].
#[derive(Clone)]
pub struct RpcMetrics<S> {
    inner: S,
}

impl<S, B, RB> tower::Service<http::Request<B>> for RpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req.uri().path().to_string();
        let start = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await;
            let code = match &result {
                // Errors come back trailers-only, with the status in the head.
                Ok(resp) => resp.headers().get("grpc-status").and_then(|v| v.to_str().ok()).unwrap_or("0").to_string(),
                Err(_) => "transport".to_string(),
            };
            metrics::histogram!("strata_rpc_duration_seconds", "method" => method.clone())
                .record(start.elapsed().as_secs_f64());
            metrics::counter!("strata_rpc_requests_total", "method" => method, "code" => code).increment(1);
            result
        })
    }
}
