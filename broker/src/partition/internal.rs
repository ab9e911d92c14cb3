//! Topic names, and the one rule for internal topics.
//!
//! Topics whose names start with `__` are the broker's own (committed
//! offsets today; users, ACLs and producer state later). Their correctness
//! depends on their settings — `__consumer_offsets` must stay compacted and
//! keep every latest commit — so clients may read and describe them, but not
//! create, delete, produce to, reconfigure or grow them. Consumer groups do
//! not subscribe to them.

use crate::error::{Error, Result};

/// Longest topic name (as Kafka).
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// Names of internal topics start with this.
pub const INTERNAL_PREFIX: &str = "__";

/// True for the broker's own topics.
pub fn is_internal(name: &str) -> bool {
    name.starts_with(INTERNAL_PREFIX)
}

/// What a client asks to do to a topic, as far as the internal-topic rule
/// is concerned (reading and describing are always allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientOp {
    /// CreateTopic.
    Create,
    /// DeleteTopic.
    Delete,
    /// Produce.
    Produce,
    /// AlterTopicConfig.
    AlterConfig,
    /// CreatePartitions.
    AddPartitions,
}

/// The internal-topic rule: refuses every [`ClientOp`] on an internal topic.
pub fn check_client_op(name: &str, op: ClientOp) -> Result<()> {
    if !is_internal(name) {
        return Ok(());
    }
    Err(match op {
        ClientOp::Create => Error::InvalidTopicName {
            name: name.into(),
            reason: format!("names starting with '{INTERNAL_PREFIX}' are reserved for internal topics"),
        },
        ClientOp::Delete => Error::InvalidArgument(format!("topic '{name}' is internal and cannot be deleted")),
        ClientOp::Produce => Error::InvalidArgument(format!("topic '{name}' is internal: it cannot be produced to")),
        ClientOp::AlterConfig => Error::InvalidArgument(format!(
            "topic '{name}' is internal: its configuration is the broker's and cannot be changed"
        )),
        ClientOp::AddPartitions => {
            Error::InvalidArgument(format!("topic '{name}' is internal: its partition count cannot be changed"))
        }
    })
}

/// Checks a topic name against the rules.
pub fn validate_topic_name(name: &str) -> Result<()> {
    let invalid = |reason: String| Err(Error::InvalidTopicName { name: name.to_string(), reason });
    if name.is_empty() {
        return invalid("must not be empty".into());
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return invalid(format!("{} characters, at most {MAX_TOPIC_NAME_LEN} allowed", name.len()));
    }
    if name == "." || name == ".." {
        return invalid("'.' and '..' are reserved".into());
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return invalid(format!("character {c:?} is not allowed; use a-z, A-Z, 0-9, '.', '_' and '-'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_are_checked() {
        for ok in ["a", "orders.v1", "A_b-9", &"x".repeat(249)] {
            validate_topic_name(ok).unwrap();
        }
        for (bad, needle) in
            [("", "empty"), ("..", "reserved"), ("a/b", "'/'"), ("a b", "' '"), (&"x".repeat(250), "249")]
        {
            match validate_topic_name(bad) {
                Err(Error::InvalidTopicName { reason, .. }) => {
                    assert!(reason.contains(needle), "{reason}")
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn clients_may_not_change_internal_topics() {
        for op in
            [ClientOp::Create, ClientOp::Delete, ClientOp::Produce, ClientOp::AlterConfig, ClientOp::AddPartitions]
        {
            assert!(check_client_op("__consumer_offsets", op).is_err(), "{op:?}");
            check_client_op("orders", op).unwrap();
        }
    }
}
