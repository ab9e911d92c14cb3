//! Retention (`cleanup.policy` includes `delete`): which closed segments go.
//!
//! Only whole closed segments are deleted, oldest first, and only a prefix of
//! them, so the log start moves forward and no hole appears. The active
//! segment is never deleted.

/// What retention needs to know about a closed segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentStat {
    /// Bytes on disk.
    pub size: u64,
    /// Largest record timestamp (i64::MIN if empty).
    pub max_timestamp: i64,
}

/// How many of the oldest closed segments to delete. `closed` is oldest
/// first; `total_size` includes the active segment.
///
/// A segment goes when every record in it is older than `retention_ms`
/// (its largest timestamp is before `now_ms - retention_ms`), or while the
/// partition without it would still be at or over `retention_bytes`.
/// Negative limits mean "no limit".
pub fn segments_to_delete(
    closed: &[SegmentStat],
    total_size: u64,
    now_ms: i64,
    retention_ms: i64,
    retention_bytes: i64,
) -> usize {
    let mut size = total_size;
    let mut n = 0;
    for s in closed {
        let expired = retention_ms >= 0 && s.max_timestamp < now_ms.saturating_sub(retention_ms);
        let over_budget = retention_bytes >= 0 && size.saturating_sub(s.size) >= retention_bytes as u64;
        if !(expired || over_budget) {
            break;
        }
        size -= s.size;
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seg(size: u64, max_timestamp: i64) -> SegmentStat {
        SegmentStat { size, max_timestamp }
    }

    #[test]
    fn by_time_deletes_the_expired_prefix_only() {
        let closed = [seg(10, 100), seg(10, 200), seg(10, 50), seg(10, 900)];
        // now 1000, retention 850 -> older than 150 expire: 100 yes, 200 no (stop).
        assert_eq!(segments_to_delete(&closed, 50, 1000, 850, -1), 1);
        assert_eq!(segments_to_delete(&closed, 50, 1000, 50, -1), 4);
        assert_eq!(segments_to_delete(&closed, 50, 1000, -1, -1), 0, "-1 keeps everything");
    }

    #[test]
    fn by_size_deletes_while_over_budget() {
        let closed = [seg(10, 0), seg(10, 0), seg(10, 0)];
        // 3 closed + 5 active = 35 bytes.
        assert_eq!(segments_to_delete(&closed, 35, 0, -1, 30), 0, "35-10 = 25 < 30");
        assert_eq!(segments_to_delete(&closed, 35, 0, -1, 25), 1);
        assert_eq!(segments_to_delete(&closed, 35, 0, -1, 0), 3, "the active segment stays");
    }

    proptest! {
        #[test]
        fn what_remains_respects_the_budget(sizes in proptest::collection::vec(1u64..1000, 0..30), active in 0u64..1000, budget in 0i64..20_000) {
            let closed: Vec<_> = sizes.iter().map(|&s| seg(s, i64::MAX)).collect();
            let total: u64 = sizes.iter().sum::<u64>() + active;
            let n = segments_to_delete(&closed, total, 0, -1, budget);
            let remaining: u64 = sizes[n..].iter().sum::<u64>() + active;
            // Deleting never takes the partition below its budget...
            if n > 0 {
                prop_assert!(remaining >= budget as u64);
            }
            // ...and stops only when deleting one more would.
            if n < sizes.len() {
                prop_assert!(remaining - sizes[n] < budget as u64);
            }
        }
    }
}
