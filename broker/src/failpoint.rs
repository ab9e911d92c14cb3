//! Crash injection for tests: `STRATA_FAILPOINTS=name[,name...]` makes the
//! broker abort (no cleanup, like a kill -9) when it reaches a named point.
//! Points are placed between the steps of multi-file updates, so tests can
//! prove recovery is right after a crash at each step.

use std::sync::OnceLock;

/// Environment variable naming the active failpoints.
pub const ENV: &str = "STRATA_FAILPOINTS";

fn active() -> &'static [String] {
    static ACTIVE: OnceLock<Vec<String>> = OnceLock::new();
    ACTIVE.get_or_init(|| {
        std::env::var(ENV)
            .map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
    })
}

/// Aborts the process if failpoint `name` is active.
pub fn hit(name: &str) {
    if active().iter().any(|n| n == name) {
        eprintln!("failpoint {name} hit: aborting");
        std::process::abort();
    }
}
