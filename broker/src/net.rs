//! What every listener's accept loop shares.

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};

/// Accepts one connection; on an error (out of descriptors, for instance)
/// waits a little and logs at most once a second, so a full table neither
/// spins the loop nor floods the log.
pub async fn accept(listener: &TcpListener, what: &'static str) -> Option<(TcpStream, SocketAddr)> {
    static ERRORS: Mutex<RateLimitedLog> = Mutex::new(RateLimitedLog { last: None, events: 0 });
    match listener.accept().await {
        Ok(c) => Some(c),
        Err(e) => {
            metrics::counter!("strata_accept_errors_total", "listener" => what).increment(1);
            ERRORS.lock().unwrap_or_else(|p| p.into_inner()).log(|n| {
                tracing::warn!(listener = what, error = %e, errors = n, "accept failed; backing off");
            });
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}

/// Logs the first event and then at most once a second, with the count of
/// events since the last line.
#[derive(Default)]
pub struct RateLimitedLog {
    last: Option<Instant>,
    events: u64,
}

impl RateLimitedLog {
    /// Counts an event; calls `f` with the count when a line is due.
    pub fn log(&mut self, f: impl FnOnce(u64)) {
        self.events += 1;
        if self.last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            self.last = Some(Instant::now());
            f(std::mem::take(&mut self.events));
        }
    }
}

/// The address a client is counted under: its IP, or for IPv6 its /64 (one
/// client usually has a whole /64 to pick addresses from).
pub fn address_group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
        v4 => v4,
    }
}
