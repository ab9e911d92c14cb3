//! What every listener's accept loop shares.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};

/// Accepts one connection; on an error (out of descriptors, for instance)
/// waits a little and logs at most once a second, so a full table neither
/// spins the loop nor floods the log.
pub async fn accept(listener: &TcpListener, what: &'static str) -> Option<(TcpStream, SocketAddr)> {
    static ERRORS: Mutex<Option<Instant>> = Mutex::new(None);
    match listener.accept().await {
        Ok(c) => Some(c),
        Err(e) => {
            metrics::counter!("strata_accept_errors_total", "listener" => what).increment(1);
            {
                let mut last = ERRORS.lock().unwrap_or_else(|p| p.into_inner());
                if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    *last = Some(Instant::now());
                    tracing::warn!(listener = what, error = %e, "accept failed; backing off (further errors within a second are not logged)");
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}
