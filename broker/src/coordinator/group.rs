//! One consumer group's membership and assignment state machine. Pure: time
//! comes in as milliseconds and topic metadata as a map, so it is tested
//! directly with random operation sequences.
//!
//! - The **group epoch** grows whenever membership, subscriptions or the
//!   subscribed partitions change; the assignor then computes a new **target**.
//! - Each member converges to its target at its own heartbeats: partitions
//!   leaving it are removed from its assignment (revoked) in its next reply;
//!   partitions coming to it are added only when no other member still has
//!   them assigned or still reports owning them. So no partition ever has two
//!   owners, and a member's epoch only changes in its own replies.
//! - A member's **epoch** grows each time its assignment changes; commits
//!   must carry the current one, and only for assigned partitions.

use std::collections::{BTreeMap, BTreeSet};

use super::assignor::{Assignment, AssignorKind, Tp};

/// How a member subscribes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    /// Exact topic names.
    Topics(BTreeSet<String>),
    /// A glob over topic names (`*` any run, `?` one character).
    Pattern(String),
}

impl Subscription {
    fn matches(&self, topic: &str) -> bool {
        match self {
            Subscription::Topics(t) => t.contains(topic),
            Subscription::Pattern(p) => glob(p.as_bytes(), topic.as_bytes()),
        }
    }
}

/// Matches a glob in linear time (the classic two-pointer walk, which
/// backtracks only to the last `*`): a pattern of many stars cannot take
/// exponential time or overflow the stack.
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                Some((sp, ss)) => {
                    pi = sp + 1;
                    si = ss + 1;
                    star = Some((sp, ss + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// A group member.
#[derive(Debug, Clone)]
pub struct Member {
    /// Coordinator-given id.
    pub id: String,
    /// Static instance id, if any.
    pub instance_id: Option<String>,
    /// What it consumes.
    pub subscription: Subscription,
    /// Removed if no heartbeat for this long.
    pub session_timeout_ms: u64,
    /// Time of expiry.
    pub deadline_ms: u64,
    /// Grows on every assignment change.
    pub epoch: i32,
    /// Partitions it may own now.
    pub assigned: BTreeSet<Tp>,
    /// Partitions it last reported owning.
    pub owned: BTreeSet<Tp>,
    /// A static member that left temporarily: its partitions stay reserved.
    pub away: bool,
}

/// What a heartbeat asks for.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    /// Empty to join.
    pub member_id: String,
    /// 0 join, -1 leave, -2 static temporary leave, else current epoch.
    pub member_epoch: i32,
    /// Static instance id.
    pub instance_id: Option<String>,
    /// New subscription, if it changes (required on join).
    pub subscription: Option<Subscription>,
    /// Session timeout for a join.
    pub session_timeout_ms: u64,
    /// Partitions the member reports owning.
    pub owned: BTreeSet<Tp>,
}

/// The coordinator's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatReply {
    /// Member id.
    pub member_id: String,
    /// Member epoch (-1 after leaving, -2 after a temporary leave).
    pub member_epoch: i32,
    /// Partitions it may own now.
    pub assignment: BTreeSet<Tp>,
}

pub use crate::error::GroupError;

/// One group.
#[derive(Debug, Clone)]
pub struct Group {
    /// Group id.
    pub id: String,
    /// Grows on every change that needs a new target.
    pub epoch: i32,
    /// Members by id.
    pub members: BTreeMap<String, Member>,
    /// Target assignment for `epoch`.
    pub target: Assignment,
    /// Subscribed topics and their partition counts when `target` was computed.
    subscribed: BTreeMap<String, u32>,
    /// The assignor.
    pub assignor: AssignorKind,
    next_member: u64,
}

impl Group {
    /// An empty group.
    pub fn new(id: String, assignor: AssignorKind) -> Group {
        Group {
            id,
            epoch: 0,
            members: BTreeMap::new(),
            target: Assignment::new(),
            subscribed: BTreeMap::new(),
            assignor,
            next_member: 0,
        }
    }

    /// "Empty", "Reconciling" or "Stable".
    pub fn state(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.members.values().all(|m| self.target.get(&m.id).is_none_or(|t| *t == m.assigned)) {
            "Stable"
        } else {
            "Reconciling"
        }
    }

    /// Members that are not away (temporarily left static members).
    pub fn active_members(&self) -> usize {
        self.members.values().filter(|m| !m.away).count()
    }

    /// Handles a heartbeat at time `now_ms` with the broker's topics.
    pub fn heartbeat(
        &mut self,
        hb: Heartbeat,
        now_ms: u64,
        topics: &BTreeMap<String, u32>,
    ) -> Result<HeartbeatReply, GroupError> {
        let id = match hb.member_epoch {
            0 => self.join(&hb, now_ms)?,
            -1 | -2 => {
                let m = self
                    .members
                    .get_mut(&hb.member_id)
                    .ok_or_else(|| GroupError::UnknownMember(hb.member_id.clone()))?;
                if hb.member_epoch == -2 && m.instance_id.is_some() {
                    m.away = true;
                    m.owned.clear();
                    return Ok(HeartbeatReply {
                        member_id: hb.member_id,
                        member_epoch: -2,
                        assignment: BTreeSet::new(),
                    });
                }
                self.members.remove(&hb.member_id);
                self.rebalance(topics);
                return Ok(HeartbeatReply { member_id: hb.member_id, member_epoch: -1, assignment: BTreeSet::new() });
            }
            epoch => {
                let m = self
                    .members
                    .get_mut(&hb.member_id)
                    .ok_or_else(|| GroupError::UnknownMember(hb.member_id.clone()))?;
                if epoch != m.epoch {
                    return Err(GroupError::StaleEpoch { member: m.id.clone(), got: epoch, current: m.epoch });
                }
                m.deadline_ms = now_ms + m.session_timeout_ms;
                // A member can only hold on to what it had, never claim more.
                m.owned =
                    hb.owned.iter().filter(|tp| m.assigned.contains(*tp) || m.owned.contains(*tp)).cloned().collect();
                if let Some(sub) = &hb.subscription {
                    if *sub != m.subscription {
                        m.subscription = sub.clone();
                        self.epoch += 1;
                        self.subscribed.clear(); // force a new target below
                    }
                }
                hb.member_id.clone()
            }
        };
        if self.subscribed_topics(topics) != self.subscribed {
            self.rebalance(topics);
        }
        self.reconcile(&id);
        let m = &self.members[&id];
        Ok(HeartbeatReply { member_id: id, member_epoch: m.epoch, assignment: m.assigned.clone() })
    }

    fn join(&mut self, hb: &Heartbeat, now_ms: u64) -> Result<String, GroupError> {
        let subscription = hb.subscription.clone().ok_or(GroupError::NoSubscription)?;
        self.next_member += 1;
        let id = format!("{}-{}-{}", self.id, self.epoch, self.next_member);
        let mut member = Member {
            id: id.clone(),
            instance_id: hb.instance_id.clone(),
            subscription,
            session_timeout_ms: hb.session_timeout_ms,
            deadline_ms: now_ms + hb.session_timeout_ms,
            epoch: 1,
            assigned: BTreeSet::new(),
            owned: BTreeSet::new(),
            away: false,
        };
        // Static membership: the new instance takes over the old member's
        // place (and fences it); no new target if nothing else changed.
        let previous = hb.instance_id.as_ref().and_then(|inst| {
            self.members.values().find(|m| m.instance_id.as_ref() == Some(inst)).map(|m| m.id.clone())
        });
        if let Some((old_id, old)) = previous.and_then(|id| self.members.remove_entry(&id)) {
            member.assigned = old.assigned;
            member.epoch = old.epoch + 1;
            if let Some(t) = self.target.remove(&old_id) {
                self.target.insert(id.clone(), t);
            }
            if member.subscription != old.subscription {
                self.subscribed.clear();
            }
            self.members.insert(id.clone(), member);
        } else {
            self.members.insert(id.clone(), member);
            self.subscribed.clear(); // membership changed: new target
        }
        Ok(id)
    }

    fn subscribed_topics(&self, topics: &BTreeMap<String, u32>) -> BTreeMap<String, u32> {
        topics
            .iter()
            .filter(|(t, _)| self.members.values().any(|m| m.subscription.matches(t)))
            .map(|(t, n)| (t.clone(), *n))
            .collect()
    }

    /// New group epoch and target assignment.
    fn rebalance(&mut self, topics: &BTreeMap<String, u32>) {
        self.epoch += 1;
        self.subscribed = self.subscribed_topics(topics);
        let subs: BTreeMap<String, BTreeSet<String>> = self
            .members
            .values()
            .map(|m| (m.id.clone(), self.subscribed.keys().filter(|t| m.subscription.matches(t)).cloned().collect()))
            .collect();
        self.target = self.assignor.assign(&subs, &self.subscribed, &self.target);
        // Members learn of revocations at their own next heartbeat (their
        // epoch changes only in their own replies); a revoked partition stays
        // busy until its owner has dropped it from both its assignment and
        // what it reports owning.
    }

    /// Moves member `id` toward its target: grants partitions that no other
    /// member has assigned or still owns.
    fn reconcile(&mut self, id: &str) {
        let target = self.target.get(id).cloned().unwrap_or_default();
        let busy: BTreeSet<&Tp> = self
            .members
            .values()
            .filter(|m| m.id != id)
            .flat_map(|m| m.assigned.iter().chain(m.owned.iter()))
            .collect();
        let grant: Vec<Tp> = target.iter().filter(|tp| !busy.contains(tp)).cloned().collect();
        let Some(m) = self.members.get_mut(id) else { return };
        let before = m.assigned.clone();
        m.assigned.retain(|tp| target.contains(tp));
        m.assigned.extend(grant);
        if m.assigned != before {
            m.epoch += 1;
        }
    }

    /// Removes members whose session expired; returns their ids.
    pub fn expire(&mut self, now_ms: u64, topics: &BTreeMap<String, u32>) -> Vec<String> {
        let expired: Vec<String> =
            self.members.values().filter(|m| m.deadline_ms < now_ms).map(|m| m.id.clone()).collect();
        if !expired.is_empty() {
            for id in &expired {
                self.members.remove(id);
            }
            self.rebalance(topics);
        }
        expired
    }

    /// Rebalances if the subscribed topics or partition counts changed.
    pub fn refresh_metadata(&mut self, topics: &BTreeMap<String, u32>) {
        if !self.members.is_empty() && self.subscribed_topics(topics) != self.subscribed {
            self.rebalance(topics);
        }
    }

    /// May `member_id` at `epoch` commit offsets for `tps`? Empty member id
    /// = a standalone commit, allowed only while the group has no members.
    pub fn check_commit<'a>(
        &self,
        member_id: &str,
        epoch: i32,
        tps: impl IntoIterator<Item = &'a Tp>,
    ) -> Result<(), GroupError> {
        if member_id.is_empty() {
            return match self.members.len() {
                0 => Ok(()),
                n => Err(GroupError::GroupHasMembers(n)),
            };
        }
        let m = self
            .members
            .get(member_id)
            .filter(|m| !m.away)
            .ok_or_else(|| GroupError::UnknownMember(member_id.to_string()))?;
        if epoch != m.epoch {
            return Err(GroupError::StaleEpoch { member: m.id.clone(), got: epoch, current: m.epoch });
        }
        // A revoked partition the member still reports owning is held by no
        // one else (see `reconcile`), so it may still commit it before release.
        for tp in tps {
            if !m.assigned.contains(tp) && !m.owned.contains(tp) {
                return Err(GroupError::NotAssigned { member: m.id.clone(), tp: tp.clone() });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SESSION: u64 = 1000;

    fn topics(n: u32) -> BTreeMap<String, u32> {
        BTreeMap::from([("t".to_string(), n)])
    }

    fn join(g: &mut Group, now: u64, topics_: &BTreeMap<String, u32>, instance: Option<&str>) -> HeartbeatReply {
        let hb = Heartbeat {
            member_epoch: 0,
            instance_id: instance.map(str::to_string),
            subscription: Some(Subscription::Topics(BTreeSet::from(["t".to_string()]))),
            session_timeout_ms: SESSION,
            ..Default::default()
        };
        g.heartbeat(hb, now, topics_).unwrap()
    }

    /// A heartbeat from a well-behaved member that owns exactly what it was given.
    fn beat(g: &mut Group, id: &str, now: u64, topics_: &BTreeMap<String, u32>) -> HeartbeatReply {
        let m = &g.members[id];
        let hb =
            Heartbeat { member_id: id.into(), member_epoch: m.epoch, owned: m.assigned.clone(), ..Default::default() };
        g.heartbeat(hb, now, topics_).unwrap()
    }

    fn assert_single_owners(g: &Group) {
        let mut seen = BTreeSet::new();
        for m in g.members.values() {
            for tp in &m.assigned {
                assert!(seen.insert(tp.clone()), "{tp:?} has two owners");
            }
        }
    }

    #[test]
    fn partitions_move_only_after_release() {
        let t = topics(6);
        let mut g = Group::new("g".into(), AssignorKind::Uniform);
        let a = join(&mut g, 0, &t, None);
        assert_eq!(a.assignment.len(), 6);
        // a owns all six; b joins: b's share is revoked from a, but b gets it
        // only after a stops reporting it.
        let b = join(&mut g, 1, &t, None);
        assert!(b.assignment.is_empty(), "a still owns them");
        let a2 = g
            .heartbeat(
                Heartbeat {
                    member_id: a.member_id.clone(),
                    member_epoch: g.members[&a.member_id].epoch,
                    owned: a.assignment.clone(),
                    ..Default::default()
                },
                2,
                &t,
            )
            .unwrap();
        assert_eq!(a2.assignment.len(), 3, "revoked at once");
        let b2 = beat(&mut g, &b.member_id, 3, &t);
        assert!(b2.assignment.is_empty(), "a reported owning all six last time");
        beat(&mut g, &a.member_id, 4, &t); // a now reports only its three
        let b3 = beat(&mut g, &b.member_id, 5, &t);
        assert_eq!(b3.assignment.len(), 3);
        assert_eq!(g.state(), "Stable");
        assert_single_owners(&g);
    }

    #[test]
    fn stale_epochs_and_unassigned_partitions_are_fenced() {
        let t = topics(2);
        let mut g = Group::new("g".into(), AssignorKind::Uniform);
        let a = join(&mut g, 0, &t, None);
        let tp = ("t".to_string(), 0);
        g.check_commit(&a.member_id, a.member_epoch, [&tp]).unwrap();
        assert!(matches!(g.check_commit(&a.member_id, a.member_epoch - 1, [&tp]), Err(GroupError::StaleEpoch { .. })));
        assert!(matches!(
            g.check_commit(&a.member_id, a.member_epoch, [&("t".to_string(), 9)]),
            Err(GroupError::NotAssigned { .. })
        ));
        assert!(matches!(g.check_commit("", 0, [&tp]), Err(GroupError::GroupHasMembers(1))));
        // Expired: unknown from then on.
        assert_eq!(g.expire(SESSION + 1, &t), vec![a.member_id.clone()]);
        assert!(matches!(g.check_commit(&a.member_id, a.member_epoch, [&tp]), Err(GroupError::UnknownMember(_))));
        g.check_commit("", 0, [&tp]).unwrap();
    }

    #[test]
    fn static_member_returns_without_rebalance() {
        let t = topics(4);
        let mut g = Group::new("g".into(), AssignorKind::Uniform);
        let a = join(&mut g, 0, &t, Some("pod-a"));
        let b = join(&mut g, 0, &t, Some("pod-b"));
        for now in 1..4 {
            beat(&mut g, &a.member_id, now, &t);
            beat(&mut g, &b.member_id, now, &t);
        }
        let a_parts = g.members[&a.member_id].assigned.clone();
        let b_parts = g.members[&b.member_id].assigned.clone();
        assert_eq!((a_parts.len(), b_parts.len()), (2, 2));
        let epoch = g.epoch;
        // pod-a restarts: temporary leave, then a new process with the same instance id.
        let bye = Heartbeat { member_id: a.member_id.clone(), member_epoch: -2, ..Default::default() };
        assert_eq!(g.heartbeat(bye, 4, &t).unwrap().member_epoch, -2);
        let back = join(&mut g, 5, &t, Some("pod-a"));
        assert_eq!(back.assignment, a_parts, "same partitions back");
        assert_eq!(g.epoch, epoch, "no rebalance");
        assert!(!g.members.contains_key(&a.member_id), "the old member id is fenced");
        // A second live process with pod-b's id takes over and fences the first.
        let b2 = join(&mut g, 6, &t, Some("pod-b"));
        assert_eq!(b2.assignment, b_parts);
        let old = Heartbeat { member_id: b.member_id.clone(), member_epoch: b2.member_epoch - 1, ..Default::default() };
        assert!(matches!(g.heartbeat(old, 7, &t), Err(GroupError::UnknownMember(_))));
    }

    #[test]
    fn patterns_pick_up_new_topics() {
        let mut g = Group::new("g".into(), AssignorKind::Uniform);
        let hb = Heartbeat {
            subscription: Some(Subscription::Pattern("orders.*".into())),
            session_timeout_ms: SESSION,
            ..Default::default()
        };
        let mut topics = BTreeMap::from([("orders.eu".to_string(), 1), ("payments".to_string(), 1)]);
        let a = g.heartbeat(hb, 0, &topics).unwrap();
        assert_eq!(a.assignment, BTreeSet::from([("orders.eu".to_string(), 0)]));
        topics.insert("orders.us".into(), 2);
        let a2 = beat(&mut g, &a.member_id, 1, &topics);
        assert_eq!(a2.assignment.len(), 3);
        assert!(glob(b"a*c?", b"abbbcd") && !glob(b"a*c?", b"abbbc"));
        assert!(glob(b"*", b"") && glob(b"a**", b"a") && !glob(b"", b"a") && glob(b"*.eu", b"orders.eu"));
        // Many stars against a long name that does not match: linear, no recursion.
        let (mut p, s) = (vec![b'*'; 100_000], vec![b'a'; 10_000]);
        p.push(b'x');
        assert!(!glob(&p, &s));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Join,
        Leave(usize),
        Beat(usize),
        Silent(usize), // a member heartbeats without having released what was revoked
        Expire,
        Grow,
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            2 => Just(Op::Join),
            1 => (0usize..8).prop_map(Op::Leave),
            4 => (0usize..8).prop_map(Op::Beat),
            1 => (0usize..8).prop_map(Op::Silent),
            1 => Just(Op::Expire),
            1 => Just(Op::Grow),
        ]
    }

    proptest! {
        #[test]
        fn random_histories_keep_the_invariants(ops in proptest::collection::vec(arb_op(), 1..60), assignor in prop_oneof![Just(AssignorKind::Uniform), Just(AssignorKind::Range)]) {
            let mut g = Group::new("g".into(), assignor);
            let mut t = topics(5);
            let mut now = 0u64;
            let mut epochs: BTreeMap<String, i32> = BTreeMap::new();
            let mut group_epoch = g.epoch;
            for op in ops {
                now += 100;
                let ids: Vec<String> = g.members.keys().cloned().collect();
                match op {
                    Op::Join => { join(&mut g, now, &t, None); }
                    Op::Leave(i) if !ids.is_empty() => {
                        let id = &ids[i % ids.len()];
                        let hb = Heartbeat { member_id: id.clone(), member_epoch: -1, ..Default::default() };
                        g.heartbeat(hb, now, &t).unwrap();
                    }
                    Op::Beat(i) if !ids.is_empty() => { beat(&mut g, &ids[i % ids.len()], now, &t); }
                    Op::Silent(i) if !ids.is_empty() => {
                        let id = &ids[i % ids.len()];
                        let m = &g.members[id];
                        let owned: BTreeSet<Tp> = m.owned.union(&m.assigned).cloned().collect();
                        let hb = Heartbeat { member_id: id.clone(), member_epoch: m.epoch, owned, ..Default::default() };
                        g.heartbeat(hb, now, &t).unwrap();
                    }
                    Op::Expire => { g.expire(now + SESSION / 2, &t); }
                    Op::Grow => { *t.get_mut("t").unwrap() += 1; g.refresh_metadata(&t); }
                    _ => {}
                }
                assert_single_owners(&g);
                prop_assert!(g.epoch >= group_epoch, "group epoch went back");
                group_epoch = g.epoch;
                for m in g.members.values() {
                    if let Some(&e) = epochs.get(&m.id) {
                        prop_assert!(m.epoch >= e, "member epoch went back");
                    }
                    epochs.insert(m.id.clone(), m.epoch);
                }
            }
            // Converge: everyone heartbeats honestly a few rounds; then every
            // partition is owned by exactly one live member.
            if !g.members.is_empty() {
                for _ in 0..3 {
                    now += 1;
                    let ids: Vec<String> = g.members.keys().cloned().collect();
                    for id in ids { beat(&mut g, &id, now, &t); }
                }
                let total: usize = g.members.values().map(|m| m.assigned.len()).sum();
                prop_assert_eq!(total, t["t"] as usize);
                prop_assert_eq!(g.state(), "Stable");
            }
        }
    }
}
