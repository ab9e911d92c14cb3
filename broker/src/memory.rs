//! Process memory: what the broker holds, and giving back what a burst took.
//!
//! Budgets bound what requests, replies and subscribers hold at once; this
//! module makes sure memory freed after a burst goes back to the system.
//! glibc's allocator keeps freed heap in its arenas (and raises its mmap
//! threshold after large frees, so later large buffers come from the heap
//! too): without a trim, RSS stays at the burst's peak for good.

use std::time::Duration;

use tokio::sync::watch;

use crate::shutdown::stopped;

/// How often freed memory is handed back.
const TRIM_INTERVAL: Duration = Duration::from_secs(5);

/// The process's resident set size in bytes, if the system says.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// Returns freed heap memory to the system every few seconds until `stop`.
pub async fn run_trimmer(mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(TRIM_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => trim(),
            _ = stopped(&mut stop) => return,
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only releases free memory; it is thread-safe.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
