//! `strata group ...`

use strata_client::proto::*;

use super::{connect, status_error, CliError, Connect};

#[derive(clap::Subcommand)]
pub enum GroupCommand {
    /// List consumer groups.
    List,
    /// Show members, assignments and lag per partition.
    Describe {
        /// Group id.
        group: String,
    },
    /// Move a group's committed offsets (the group must have no members).
    Reset {
        /// Group id.
        group: String,
        /// Only this topic (default: every partition the group committed).
        #[arg(long)]
        topic: Option<String>,
        /// To: earliest, latest, or an offset.
        #[arg(long, default_value = "earliest")]
        to: String,
        /// To the first record at or after this timestamp (ms); overrides --to.
        #[arg(long)]
        timestamp: Option<i64>,
        /// Show the new offsets without committing them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete a group and its committed offsets (the group must have no members).
    Delete {
        /// Group id.
        group: String,
    },
}

pub async fn run(cmd: GroupCommand, c: &Connect) -> Result<(), CliError> {
    let mut client = connect(c).await?;
    let groups = &mut client.groups;
    match cmd {
        GroupCommand::List => {
            for g in groups.list_groups(ListGroupsRequest {}).await.map_err(status_error)?.into_inner().groups {
                println!("{}\t{}\t{} member(s)", g.group_id, g.state, g.members);
            }
        }
        GroupCommand::Describe { group } => {
            let d = groups
                .describe_group(DescribeGroupRequest { group_id: group })
                .await
                .map_err(status_error)?
                .into_inner();
            println!("group {}  state {}  epoch {}  assignor {}", d.group_id, d.state, d.group_epoch, d.assignor);
            for m in &d.members {
                let parts: Vec<String> = m
                    .assignment
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(move |p| format!("{}/{p}", t.topic)))
                    .collect();
                let instance =
                    if m.instance_id.is_empty() { String::new() } else { format!(" instance {}", m.instance_id) };
                println!("member {} epoch {}{instance}: {}", m.member_id, m.member_epoch, parts.join(" "));
            }
            println!("{:<24} {:>9} {:>12} {:>12} {:>10}  member", "topic", "partition", "committed", "log-end", "lag");
            for p in &d.partitions {
                let committed = if p.committed_offset < 0 { "-".to_string() } else { p.committed_offset.to_string() };
                println!(
                    "{:<24} {:>9} {:>12} {:>12} {:>10}  {}",
                    p.topic, p.partition, committed, p.log_end_offset, p.lag, p.member_id
                );
            }
        }
        GroupCommand::Reset { group, topic, to, timestamp, dry_run } => {
            let to = match (timestamp, to.as_str()) {
                (Some(ts), _) => reset_offsets_request::To::TimestampMs(ts),
                (None, "earliest") => reset_offsets_request::To::Earliest(true),
                (None, "latest") => reset_offsets_request::To::Latest(true),
                (None, n) => reset_offsets_request::To::Offset(
                    n.parse().map_err(|_| format!("--to {n}: use earliest, latest or an offset"))?,
                ),
            };
            let partitions = match topic {
                Some(topic) => {
                    let d = client
                        .admin
                        .describe_topic(DescribeTopicRequest { name: topic.clone() })
                        .await
                        .map_err(status_error)?;
                    let n = d.into_inner().topic.unwrap_or_default().partitions.len() as u32;
                    vec![TopicPartitions { topic, partitions: (0..n).collect() }]
                }
                None => vec![],
            };
            let req = ResetOffsetsRequest { group_id: group, partitions, to: Some(to), dry_run };
            let reply = client.groups.reset_offsets(req).await.map_err(status_error)?.into_inner();
            for o in reply.offsets {
                println!("{}\t{}\t{}{}", o.topic, o.partition, o.offset, if dry_run { "\t(dry run)" } else { "" });
            }
        }
        GroupCommand::Delete { group } => {
            groups.delete_group(DeleteGroupRequest { group_id: group.clone() }).await.map_err(status_error)?;
            println!("deleted group {group}");
        }
    }
    Ok(())
}
