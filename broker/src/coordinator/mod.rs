//! Consumer groups: membership and assignment ([`group`], [`assignor`]),
//! committed offsets kept as events in an internal compacted topic
//! ([`offsets`]), and the [`Coordinator`] that ties them to the broker.

pub mod assignor;
pub mod group;
