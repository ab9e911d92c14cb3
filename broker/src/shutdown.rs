//! The broker-wide stop signal: a `watch` channel that turns true once.

use tokio::sync::watch;

/// Resolves when `shutdown` turns true (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // Drop the borrow at once: the future must stay Send.
    let _ = shutdown.wait_for(|s| *s).await;
}
