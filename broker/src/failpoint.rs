//! Fault injection for tests, from `STRATA_FAILPOINTS` (comma-separated):
//!
//! - `name` makes the broker abort (no cleanup, like a kill -9) when it
//!   reaches crash point `name` ([`hit`]). Crash points sit between the steps
//!   of multi-file updates, so tests can prove recovery is right after a
//!   crash at each one.
//! - `name=eio`, `name=enospc` or `name=emfile` makes I/O point `name`
//!   ([`io`]) fail with that error, every time, or only the first N times
//!   with `name=enospc*N` (then I/O works again, as after space was freed);
//!   `name=emfile@N` lets the first N hits pass before failing. I/O points:
//!   `write` (segment data), `fsync` (segment data), `fallocate` (segment
//!   preallocation), `rename` (topic metadata and compaction swaps), `open`
//!   (a partition's log being opened), `recovery_point` (the write of a
//!   partition's recovery point after an fsync).
//!
//! With the variable unset every point is one check of an empty list.

use std::io;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::OnceLock;

/// Environment variable naming the active failpoints.
pub const ENV: &str = "STRATA_FAILPOINTS";

/// The I/O points, in the order of the module documentation.
pub const IO_POINTS: [&str; 6] = ["write", "fsync", "fallocate", "rename", "open", "recovery_point"];

struct Point {
    name: String,
    /// None: a crash point. Some: the errno an I/O point fails with.
    errno: Option<i32>,
    /// Failures left (-1: for ever).
    left: AtomicI64,
    /// Hits to let pass before failing.
    pass: AtomicI64,
}

fn active() -> &'static [Point] {
    static ACTIVE: OnceLock<Vec<Point>> = OnceLock::new();
    ACTIVE.get_or_init(|| {
        let spec = std::env::var(ENV).unwrap_or_default();
        spec.split(',').map(str::trim).filter(|s| !s.is_empty()).map(parse).collect()
    })
}

fn parse(entry: &str) -> Point {
    let Some((name, kind)) = entry.split_once('=') else {
        return Point { name: entry.to_string(), errno: None, left: AtomicI64::new(-1), pass: AtomicI64::new(0) };
    };
    let (kind, pass) = kind.split_once('@').unwrap_or((kind, "0"));
    let (kind, times) = kind.split_once('*').unwrap_or((kind, "-1"));
    let errno = match kind {
        "eio" => libc::EIO,
        "enospc" => libc::ENOSPC,
        "emfile" => libc::EMFILE,
        other => panic!("{ENV}: unknown error '{other}' for failpoint {name}: use eio, enospc or emfile"),
    };
    let times = times.parse().unwrap_or_else(|_| panic!("{ENV}: '{times}' after '*' must be a count"));
    let pass = pass.parse().unwrap_or_else(|_| panic!("{ENV}: '{pass}' after '@' must be a count"));
    Point { name: name.to_string(), errno: Some(errno), left: AtomicI64::new(times), pass: AtomicI64::new(pass) }
}

/// Aborts the process if crash point `name` is active.
pub fn hit(name: &str) {
    if active().iter().any(|p| p.name == name && p.errno.is_none()) {
        crate::logging::last_words(&format!("failpoint {name} hit: aborting"));
        std::process::abort();
    }
}

/// Fails with the injected error if I/O point `name` is active.
pub fn io(name: &str) -> io::Result<()> {
    for p in active().iter().filter(|p| p.name == name) {
        let Some(errno) = p.errno else { continue };
        if p.pass.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n > 0).then(|| n - 1)).is_ok() {
            continue;
        }
        let fire = p.left.fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| match left {
            0 => None,
            -1 => Some(-1),
            n => Some(n - 1),
        });
        if fire.is_ok() {
            return Err(io::Error::from_raw_os_error(errno));
        }
    }
    Ok(())
}
