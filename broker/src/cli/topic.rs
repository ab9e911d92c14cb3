//! `strata topic ...`

use strata_client::proto::*;

use super::{connect, status_error, CliError, Connect};

#[derive(clap::Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        /// Topic name.
        name: String,
        /// Partition count (broker default if omitted).
        #[arg(long, short, default_value_t = 0)]
        partitions: u32,
        /// Topic setting, repeatable: --config segment.bytes=1048576
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_kv)]
        configs: Vec<(String, String)>,
        /// The topic's declared writer: the only principal that may produce
        /// to it (the writer.principal setting).
        #[arg(long, value_name = "PRINCIPAL")]
        writer: Option<String>,
    },
    /// List topics.
    List,
    /// Show partitions, offsets, sizes and configuration.
    Describe {
        /// Topic name.
        name: String,
    },
    /// Change settings: --set k=v, --reset k.
    Alter {
        /// Topic name.
        name: String,
        /// Setting to set, repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_kv)]
        set: Vec<(String, String)>,
        /// Setting to reset to the broker default, repeatable.
        #[arg(long = "reset", value_name = "KEY")]
        reset: Vec<String>,
    },
    /// Grow a topic to a new partition count.
    AddPartitions {
        /// Topic name.
        name: String,
        /// New total.
        total: u32,
    },
    /// Delete a topic and its data.
    Delete {
        /// Topic name.
        name: String,
    },
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("'{s}' is not KEY=VALUE"))
}

fn print_description(t: &TopicDescription) {
    println!("topic {}  partitions {}", t.name, t.partitions.len());
    println!("{:>9} {:>14} {:>14} {:>14} {:>8}", "partition", "log-start", "high-watermark", "bytes", "segments");
    for p in &t.partitions {
        println!(
            "{:>9} {:>14} {:>14} {:>14} {:>8}",
            p.partition, p.log_start_offset, p.high_watermark, p.size_bytes, p.segments
        );
    }
    println!("config:");
    for c in &t.configs {
        let source = if c.source == ConfigSource::Topic as i32 { "topic" } else { "default" };
        println!("  {} = {} ({source})", c.key, c.value);
    }
}

pub async fn run(cmd: TopicCommand, c: &Connect) -> Result<(), CliError> {
    let mut client = connect(c).await?;
    let admin = &mut client.admin;
    match cmd {
        TopicCommand::Create { name, partitions, mut configs, writer } => {
            configs.extend(writer.map(|w| ("writer.principal".to_string(), w)));
            let req = CreateTopicRequest { name, partitions, configs: configs.into_iter().collect() };
            let t = admin.create_topic(req).await.map_err(status_error)?.into_inner();
            print_description(&t.topic.unwrap_or_default());
        }
        TopicCommand::List => {
            let topics =
                admin.list_topics(ListTopicsRequest::default()).await.map_err(status_error)?.into_inner().topics;
            for t in topics {
                println!("{}\t{}", t.name, t.partitions);
            }
        }
        TopicCommand::Describe { name } => {
            let t = admin.describe_topic(DescribeTopicRequest { name }).await.map_err(status_error)?.into_inner();
            print_description(&t.topic.unwrap_or_default());
        }
        TopicCommand::Alter { name, set, reset } => {
            let req = AlterTopicConfigRequest { name, set: set.into_iter().collect(), reset };
            let t = admin.alter_topic_config(req).await.map_err(status_error)?.into_inner();
            print_description(&t.topic.unwrap_or_default());
        }
        TopicCommand::AddPartitions { name, total } => {
            let req = CreatePartitionsRequest { name, total };
            let t = admin.create_partitions(req).await.map_err(status_error)?.into_inner();
            print_description(&t.topic.unwrap_or_default());
        }
        TopicCommand::Delete { name } => {
            admin.delete_topic(DeleteTopicRequest { name: name.clone() }).await.map_err(status_error)?;
            println!("deleted topic {name}");
        }
    }
    Ok(())
}
