//! File descriptors as a budgeted resource.
//!
//! Every partition keeps its active segment's log, offset index and time
//! index open ([`FDS_PER_PARTITION`]), and each sealed segment its log file.
//! The broker raises its soft `RLIMIT_NOFILE` to the hard limit at start and
//! refuses a topic creation or growth that would leave fewer descriptors
//! than client connections need, instead of failing half-way with `EMFILE`.

use std::io;

/// Descriptors a new, empty partition holds open.
pub const FDS_PER_PARTITION: u64 = 3;

/// Descriptors kept for everything else: the listeners, the metrics
/// endpoint's connections, the data directory lock, logging, a margin.
pub const FDS_RESERVED: u64 = 64;

/// Descriptors kept free of partitions under `limit`: one per client
/// connection allowed (`server.max_connections`), but at most a quarter of
/// the limit, so that a low limit still leaves room for topics.
pub fn reserved(limit: u64, max_connections: u32) -> u64 {
    FDS_RESERVED + u64::from(max_connections).min(limit / 4)
}

fn rlimit() -> io::Result<libc::rlimit> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lim)
}

/// The descriptor limit in force (the soft one).
pub fn limit() -> io::Result<u64> {
    Ok(rlimit()?.rlim_cur)
}

/// Raises the soft descriptor limit to the hard one (once, at start);
/// returns the limit now in force.
pub fn raise_limit() -> io::Result<u64> {
    let mut lim = rlimit()?;
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    Ok(lim.rlim_cur)
}

/// Descriptors the process has open now.
pub fn open_now() -> io::Result<u64> {
    Ok(std::fs::read_dir("/proc/self/fd")?.count() as u64)
}
