//! Rate quotas per principal, enforced by throttling (as Kafka does):
//! each principal has, per kind of quota, a "theoretical arrival time"
//! (GCRA, the generic cell rate algorithm). A request of cost `c` at time
//! `now` is held until that time comes within [`BURST`] of `now`, and
//! moves it `c / rate` seconds on. So requests are never refused for their
//! rate, only delayed; a principal over its rate waits while the others do
//! not (the wait is on its own requests' tasks); and concurrency does not
//! help, since every request of the principal moves the same clock.
//!
//! Pure apart from the lock: the caller passes the time and sleeps.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::config::QuotasConfig;
use crate::locks::LockExt;

/// How far ahead of its rate a principal may run: a burst of this much
/// time's worth of its quota passes without delay.
pub const BURST: Duration = Duration::from_millis(100);

/// Most (principal, kind) clocks kept; past it, clocks with no debt (which
/// equal a fresh one) are dropped.
const MAX_CLOCKS: usize = 100_000;

/// What a quota limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Record bytes produced.
    ProduceBytes,
    /// Record bytes fetched or pushed.
    FetchBytes,
    /// Requests.
    Requests,
}

/// The quotas of a broker and each principal's clock.
pub struct Quotas {
    config: QuotasConfig,
    /// Per principal, a clock per [`Kind`] (None: never charged).
    clocks: std::sync::Mutex<HashMap<String, [Option<Instant>; 3]>>,
}

impl Quotas {
    /// From `[quotas]`.
    pub fn new(config: QuotasConfig) -> Self {
        Quotas { config, clocks: std::sync::Mutex::new(HashMap::new()) }
    }

    /// True if any rate is limited (else there is nothing to charge).
    pub fn any(&self) -> bool {
        let c = &self.config;
        c.produce_bytes_per_sec + c.fetch_bytes_per_sec + c.requests_per_sec > 0 || !c.principals.is_empty()
    }

    /// `who`'s clock for `kind`, charged `cost` if `admit(tat)` says so;
    /// returns the clock before the charge (at least `now`).
    fn with_clock(&self, who: &str, kind: Kind, cost: u64, now: Instant, admit: impl Fn(Instant) -> bool) -> Instant {
        let rate = self.rate(who, kind);
        let mut clocks = self.clocks.locked();
        if !clocks.contains_key(who) && clocks.len() >= MAX_CLOCKS {
            // Clocks with no debt equal fresh ones.
            clocks.retain(|_, ts| ts.iter().flatten().any(|t| *t > now));
        }
        // No allocation for a principal seen before.
        let slots = match clocks.get_mut(who) {
            Some(s) => s,
            None => clocks.entry(who.to_string()).or_insert([None; 3]),
        };
        let slot = &mut slots[kind as usize];
        let tat = slot.unwrap_or(now).max(now);
        if admit(tat) {
            *slot = Some(tat + Duration::from_secs_f64(cost as f64 / rate as f64));
        }
        tat
    }

    /// Units per second `principal` may use of `kind` (0: unlimited).
    pub fn rate(&self, principal: &str, kind: Kind) -> u64 {
        let o = self.config.principals.get(principal);
        match kind {
            Kind::ProduceBytes => o.and_then(|o| o.produce_bytes_per_sec).unwrap_or(self.config.produce_bytes_per_sec),
            Kind::FetchBytes => o.and_then(|o| o.fetch_bytes_per_sec).unwrap_or(self.config.fetch_bytes_per_sec),
            Kind::Requests => o.and_then(|o| o.requests_per_sec).unwrap_or(self.config.requests_per_sec),
        }
    }

    /// Charges `cost` of `kind` to `who` if that needs no wait; false (and
    /// nothing charged) if it would.
    pub fn admit(&self, who: &str, kind: Kind, cost: u64, now: Instant) -> bool {
        if self.rate(who, kind) == 0 {
            return true;
        }
        self.with_clock(who, kind, cost, now, |tat| tat <= now + BURST) <= now + BURST
    }

    /// Charges `cost` units of `kind` to `who` at `now`; returns how long
    /// the request must wait first (zero when within the quota). `who` is
    /// a principal, or `ip:<address>` for a caller without one.
    pub fn charge(&self, who: &str, kind: Kind, cost: u64, now: Instant) -> Duration {
        if self.rate(who, kind) == 0 {
            return Duration::ZERO;
        }
        let start = self.with_clock(who, kind, cost, now, |_| true);
        start.saturating_duration_since(now + BURST)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::QuotaOverride;

    fn quotas() -> Quotas {
        let mut c = QuotasConfig { produce_bytes_per_sec: 1000, ..Default::default() };
        c.principals.insert("fast".into(), QuotaOverride { produce_bytes_per_sec: Some(0), ..Default::default() });
        Quotas::new(c)
    }

    #[test]
    fn a_principal_over_its_rate_waits_and_others_do_not() {
        let q = quotas();
        let t0 = Instant::now();
        // 100 ms of burst: the first 100 B, and one more request, pass at once.
        assert_eq!(q.charge("slow", Kind::ProduceBytes, 100, t0), Duration::ZERO);
        assert_eq!(q.charge("slow", Kind::ProduceBytes, 1000, t0), Duration::ZERO);
        // Now 1.1 s of debt: the next waits 1 s (1.1 s less the burst).
        assert_eq!(q.charge("slow", Kind::ProduceBytes, 1, t0), Duration::from_millis(1000));
        assert_eq!(q.charge("other", Kind::ProduceBytes, 100, t0), Duration::ZERO, "clocks are per principal");
        assert_eq!(q.charge("slow", Kind::FetchBytes, 1 << 30, t0), Duration::ZERO, "no fetch quota set");
        for _ in 0..100 {
            assert_eq!(q.charge("fast", Kind::ProduceBytes, 1 << 30, t0), Duration::ZERO, "override: unlimited");
        }
        // admit charges only what passes at once.
        assert!(q.admit("new", Kind::ProduceBytes, 100, t0));
        assert!(q.admit("new", Kind::ProduceBytes, 100, t0), "within the burst");
        assert!(!q.admit("new", Kind::ProduceBytes, 100, t0));
        assert!(q.admit("new", Kind::ProduceBytes, 100, t0 + Duration::from_millis(100)), "refusals charged nothing");
        // Once time catches up, no wait.
        assert_eq!(q.charge("slow", Kind::ProduceBytes, 1, t0 + Duration::from_secs(2)), Duration::ZERO);
    }

    #[test]
    fn over_a_long_run_the_rate_is_the_quota() {
        let q = quotas();
        let t0 = Instant::now();
        let mut now = t0;
        let mut sent = 0u64;
        // A client that sends 64 B requests as fast as it is let.
        while now < t0 + Duration::from_secs(10) {
            now += q.charge("slow", Kind::ProduceBytes, 64, now);
            sent += 64;
        }
        let rate = sent as f64 / 10.0;
        assert!((rate - 1000.0).abs() < 30.0, "{rate} B/s");
    }
}
