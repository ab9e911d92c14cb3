//! Assignors: pure, deterministic functions from (members, subscriptions,
//! partitions, previous assignment) to a target assignment. Inputs are sorted
//! maps, so the same inputs always give the same output.

use std::collections::{BTreeMap, BTreeSet};

/// A topic partition.
pub type Tp = (String, u32);
/// Member id → partitions.
pub type Assignment = BTreeMap<String, BTreeSet<Tp>>;

pub use crate::config::AssignorKind;

impl AssignorKind {
    /// Computes the target assignment.
    pub fn assign(
        self,
        members: &BTreeMap<String, BTreeSet<String>>,
        partitions: &BTreeMap<String, u32>,
        previous: &Assignment,
    ) -> Assignment {
        match self {
            AssignorKind::Uniform => uniform(members, partitions, previous),
            AssignorKind::Range => range(members, partitions),
        }
    }
}

/// Range: for each topic, its partitions in order are cut into contiguous
/// ranges, one per subscribed member in id order; the first `n % m` members
/// get one extra.
pub fn range(members: &BTreeMap<String, BTreeSet<String>>, partitions: &BTreeMap<String, u32>) -> Assignment {
    let mut out: Assignment = members.keys().map(|m| (m.clone(), BTreeSet::new())).collect();
    for (topic, &count) in partitions {
        let subs: Vec<&String> = members.iter().filter(|(_, t)| t.contains(topic)).map(|(m, _)| m).collect();
        if subs.is_empty() {
            continue;
        }
        let (base, extra) = (count as usize / subs.len(), count as usize % subs.len());
        let mut next = 0u32;
        for (i, m) in subs.iter().enumerate() {
            let n = base + usize::from(i < extra);
            let set = out.entry((*m).clone()).or_default();
            for p in next..next + n as u32 {
                set.insert((topic.clone(), p));
            }
            next += n as u32;
        }
    }
    out
}

/// Uniform, sticky: every member keeps what it had, up to its fair share
/// (members that had more get the larger shares first); the rest goes to the
/// least-loaded eligible members. With identical subscriptions the result is
/// balanced within one partition and moves the fewest partitions possible.
pub fn uniform(
    members: &BTreeMap<String, BTreeSet<String>>,
    partitions: &BTreeMap<String, u32>,
    previous: &Assignment,
) -> Assignment {
    let mut out: Assignment = members.keys().map(|m| (m.clone(), BTreeSet::new())).collect();
    let all: Vec<Tp> = partitions
        .iter()
        .filter(|(t, _)| members.values().any(|s| s.contains(*t)))
        .flat_map(|(t, &n)| (0..n).map(move |p| (t.clone(), p)))
        .collect();
    if members.is_empty() || all.is_empty() {
        return out;
    }
    let eligible = |m: &str, tp: &Tp| members.get(m).is_some_and(|s| s.contains(&tp.0));
    // What each member may keep: its previous partitions that still exist and
    // that it still subscribes to.
    let exists: BTreeSet<&Tp> = all.iter().collect();
    let mut kept: BTreeMap<&String, Vec<Tp>> = members
        .keys()
        .map(|m| {
            let prev = previous.get(m).into_iter().flatten();
            (m, prev.filter(|tp| exists.contains(tp) && eligible(m, tp)).cloned().collect())
        })
        .collect();
    // Fair shares: the larger ones go to members that keep the most.
    let (base, extra) = (all.len() / members.len(), all.len() % members.len());
    let mut order: Vec<&String> = members.keys().collect();
    order.sort_by(|a, b| kept[b].len().cmp(&kept[a].len()).then(a.cmp(b)));
    let quota: BTreeMap<&String, usize> =
        order.iter().enumerate().map(|(i, m)| (*m, base + usize::from(i < extra))).collect();
    let mut taken: BTreeSet<Tp> = BTreeSet::new();
    for (m, tps) in kept.iter_mut() {
        tps.truncate(quota[m]);
        for tp in tps.iter() {
            taken.insert(tp.clone());
            out.entry((*m).clone()).or_default().insert(tp.clone());
        }
    }
    for tp in all.into_iter().filter(|tp| !taken.contains(tp)) {
        // Least loaded eligible member under its quota, else least loaded eligible.
        let candidates = members.keys().filter(|m| eligible(m, &tp));
        let under = candidates.clone().filter(|m| out[*m].len() < quota[m]).min_by_key(|m| (out[*m].len(), *m));
        if let Some(m) = under.or_else(|| candidates.min_by_key(|m| (out[*m].len(), *m))) {
            out.entry(m.clone()).or_default().insert(tp);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn members(ids: &[&str], topics: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
        let subs: BTreeSet<String> = topics.iter().map(|t| t.to_string()).collect();
        ids.iter().map(|m| (m.to_string(), subs.clone())).collect()
    }

    fn counts(a: &Assignment) -> Vec<usize> {
        a.values().map(BTreeSet::len).collect()
    }

    #[test]
    fn range_cuts_contiguous_ranges() {
        let a = range(&members(&["a", "b"], &["t"]), &BTreeMap::from([("t".to_string(), 5)]));
        let parts = |m: &str| a[m].iter().map(|tp| tp.1).collect::<Vec<_>>();
        assert_eq!(parts("a"), vec![0, 1, 2]);
        assert_eq!(parts("b"), vec![3, 4]);
    }

    #[test]
    fn uniform_is_sticky_when_a_member_joins() {
        let parts = BTreeMap::from([("t".to_string(), 6)]);
        let two = uniform(&members(&["a", "b"], &["t"]), &parts, &Assignment::new());
        assert_eq!(counts(&two), vec![3, 3]);
        let three = uniform(&members(&["a", "b", "c"], &["t"]), &parts, &two);
        assert_eq!(counts(&three), vec![2, 2, 2]);
        assert!(three["a"].is_subset(&two["a"]) && three["b"].is_subset(&two["b"]), "a and b only give up partitions");
    }

    #[test]
    fn only_subscribers_get_a_topic() {
        let mut m = members(&["a"], &["x"]);
        m.insert("b".into(), BTreeSet::from(["y".to_string()]));
        let parts = BTreeMap::from([("x".to_string(), 3), ("y".to_string(), 1), ("z".to_string(), 4)]);
        for a in [uniform(&m, &parts, &Assignment::new()), range(&m, &parts)] {
            assert!(a["a"].iter().all(|tp| tp.0 == "x") && a["a"].len() == 3);
            assert_eq!(a["b"].iter().cloned().collect::<Vec<_>>(), vec![("y".to_string(), 0)]);
        }
    }

    fn arb_case() -> impl Strategy<Value = (usize, usize, u32, u32, u64)> {
        // members before, members after, partitions before, partitions after, seed
        (1usize..8, 1usize..8, 1u32..40, 1u32..40, any::<u64>())
    }

    proptest! {
        #[test]
        fn uniform_balances_and_moves_no_more_than_needed((m1, m2, p1, p2, seed) in arb_case()) {
            let ids: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
            // Members after: a seeded mix of old and new ids.
            let before: Vec<&str> = ids[..m1].iter().map(String::as_str).collect();
            let after: Vec<&str> = (0..m2).map(|i| ids[(i + (seed as usize % 3)) % 10].as_str()).collect::<BTreeSet<_>>().into_iter().collect();
            let prev = uniform(&members(&before, &["t"]), &BTreeMap::from([("t".to_string(), p1)]), &Assignment::new());
            let parts = BTreeMap::from([("t".to_string(), p2)]);
            let next = uniform(&members(&after, &["t"]), &parts, &prev);

            // Every partition exactly once; balanced within one.
            let mut seen = BTreeSet::new();
            for set in next.values() {
                for tp in set {
                    prop_assert!(seen.insert(tp.clone()), "{tp:?} assigned twice");
                }
            }
            prop_assert_eq!(seen.len(), p2 as usize);
            let c = counts(&next);
            prop_assert!(c.iter().max().unwrap() - c.iter().min().unwrap() <= 1);

            // Moves of partitions whose previous owner is still here and that
            // still exist: exactly the minimum forced by the new fair shares.
            let kept_before: Vec<usize> = after.iter().map(|m| prev.get(*m).map_or(0, |s| s.iter().filter(|tp| tp.1 < p2).count())).collect();
            let (base, extra) = (p2 as usize / after.len(), p2 as usize % after.len());
            let mut sorted = kept_before.clone();
            sorted.sort_unstable_by(|a, b| b.cmp(a));
            let min_moves: usize = sorted.iter().enumerate().map(|(i, &k)| k.saturating_sub(base + usize::from(i < extra))).sum();
            let moved: usize = after.iter().map(|m| {
                let had = prev.get(*m).cloned().unwrap_or_default();
                had.iter().filter(|tp| tp.1 < p2 && !next[*m].contains(tp)).count()
            }).sum();
            prop_assert_eq!(moved, min_moves);
        }

        #[test]
        fn range_assigns_every_partition_once(m in 1usize..8, p in 0u32..50) {
            let ids: Vec<String> = (0..m).map(|i| format!("m{i}")).collect();
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            let a = range(&members(&refs, &["t"]), &BTreeMap::from([("t".to_string(), p)]));
            let total: usize = counts(&a).iter().sum();
            prop_assert_eq!(total, p as usize);
            let c = counts(&a);
            prop_assert!(c.iter().max().unwrap() - c.iter().min().unwrap() <= 1);
        }
    }
}
