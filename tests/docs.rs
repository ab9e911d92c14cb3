//! What the docs promise, over the real broker: behaviours a newcomer reads
//! in the README, config/strata.toml and the .proto comments.

mod common;

use std::time::Duration;

use common::*;
use strata_client::proto::*;
use tonic::Code;

#[tokio::test]
async fn the_heartbeat_interval_never_exceeds_a_third_of_the_members_session() {
    let dir = tempfile::tempdir().unwrap();
    // Defaults: groups.heartbeat_interval_ms = 3000, min_session_timeout_ms = 1000.
    let b = Broker::start(dir.path());
    let mut c = b.client().await;
    create_topic(&mut c, "t", 1).await;
    let join = HeartbeatRequest {
        group_id: "g".into(),
        member_epoch: 0,
        session_timeout_ms: 1500,
        topics: vec!["t".into()],
        ..Default::default()
    };
    let mut reply = c.groups.heartbeat(join).await.unwrap().into_inner();
    let interval = reply.heartbeat_interval_ms;
    assert!(interval > 0 && interval <= 500, "told {interval} ms for a 1,500 ms session");
    // A member heartbeating at the interval it is told stays in the group.
    let started = tokio::time::Instant::now();
    while started.elapsed() < Duration::from_millis(4000) {
        tokio::time::sleep(Duration::from_millis(u64::from(reply.heartbeat_interval_ms))).await;
        let hb = HeartbeatRequest {
            group_id: "g".into(),
            member_id: reply.member_id.clone(),
            member_epoch: reply.member_epoch,
            owned: reply.assignment.clone(),
            ..Default::default()
        };
        reply = c.groups.heartbeat(hb).await.expect("still a member").into_inner();
    }
    // A long session still gets the configured interval.
    let join = HeartbeatRequest {
        group_id: "h".into(),
        member_epoch: 0,
        session_timeout_ms: 60_000,
        topics: vec!["t".into()],
        ..Default::default()
    };
    assert_eq!(c.groups.heartbeat(join).await.unwrap().into_inner().heartbeat_interval_ms, 3000);
}

#[tokio::test]
async fn internal_topics_refuse_changes_and_committed_offsets_survive_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut c = b.client().await;
    create_topic(&mut c, "t", 1).await;
    let alter = AlterTopicConfigRequest {
        name: "__consumer_offsets".into(),
        set: [("cleanup.policy".to_string(), "compact,delete".to_string())].into(),
        reset: vec![],
    };
    let err = c.admin.alter_topic_config(alter).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("internal"), "{}", err.message());
    let grow = CreatePartitionsRequest { name: "__consumer_offsets".into(), total: 3 };
    let err = c.admin.create_partitions(grow).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("internal"), "{}", err.message());
    let commit = CommitOffsetsRequest {
        group_id: "g".into(),
        member_id: String::new(),
        member_epoch: 0,
        offsets: vec![OffsetCommit { topic: "t".into(), partition: 0, offset: 0, metadata: "m".into() }],
    };
    c.groups.commit_offsets(commit).await.unwrap();
    drop(c);
    assert!(b.stop().await.success());
    let b = Broker::start(dir.path());
    let mut c = b.client().await;
    let d = describe(&mut c, "__consumer_offsets").await;
    let policy = d.configs.iter().find(|e| e.key == "cleanup.policy").map(|e| e.value.clone());
    assert_eq!(policy.as_deref(), Some("compact"), "unchanged");
    let offsets = committed(&mut c, "g").await;
    assert_eq!(offsets.iter().map(|o| (o.topic.as_str(), o.offset)).collect::<Vec<_>>(), vec![("t", 0)]);
}

#[tokio::test]
async fn server_reflection_v1alpha_lists_the_services() {
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", b.addr)).unwrap().connect().await.unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = client.server_reflection_info(tokio_stream::iter([req])).await.unwrap().into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else { panic!("{reply:?}") };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for want in ["strata.v1.Broker", "strata.v1.Admin", "strata.v1.Groups", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
}

#[tokio::test]
async fn a_subscribe_on_a_topic_then_deleted_ends_with_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    let mut c = b.client().await;
    create_topic(&mut c, "gone", 1).await;
    let req = SubscribeRequest { topic: "gone".into(), partition: 0, offset: None, max_bytes: 0, skip_damaged: false };
    let mut stream = c.broker.subscribe(req).await.unwrap().into_inner();
    c.admin.delete_topic(DeleteTopicRequest { name: "gone".into() }).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(30), stream.message()).await.expect("the stream ends");
    let err = end.expect_err("an error, not a clean end");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("gone"), "{}", err.message());
}

/// One command of a README shell block and the output the README shows
/// right under it (`# ` lines with no blank line between), if any.
struct Step {
    command: String,
    shown: Vec<String>,
}

/// The first ```sh block after `marker` in README.md, as steps.
fn readme_block(marker: &str) -> Vec<Step> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let after = &readme[readme.find(marker).unwrap_or_else(|| panic!("README has no {marker:?}"))..];
    let start = after.find("```sh\n").expect("a sh block") + 6;
    let block = &after[start..start + after[start..].find("```").unwrap()];
    let mut steps: Vec<Step> = Vec::new();
    let mut continued = false;
    let mut last_was_command = false;
    for line in block.lines() {
        if continued {
            let step = steps.last_mut().unwrap();
            step.command.push('\n');
            step.command.push_str(line);
            continued = line.ends_with('\\');
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            if last_was_command {
                steps.last_mut().unwrap().shown.push(comment.to_string());
            }
            continue;
        }
        last_was_command = !line.trim().is_empty();
        if !last_was_command {
            continue;
        }
        // A trailing "   # note" is not part of the command.
        let command = line.split("  #").next().unwrap().trim_end().to_string();
        continued = command.ends_with('\\');
        steps.push(Step { command, shown: Vec::new() });
    }
    steps
}

/// Runs `steps` with `strata` on the PATH, against `addr`, in `bin_dir`
/// with `env`; each must succeed and print what the README shows (in any
/// order where `unordered`).
fn run_readme_steps(steps: &[Step], addr: &str, bin_dir: &std::path::Path, unordered: bool, env: &[(&str, &str)]) {
    for step in steps {
        // Commands that follow a stream until Ctrl-C get a couple of seconds.
        let follow = step.command.contains("--follow");
        let script = if follow { format!("timeout -s INT 2 {}", step.command) } else { step.command.clone() };
        let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .env("PATH", path)
            .env("STRATA_ADDR", addr)
            .envs(env.iter().copied())
            .current_dir(bin_dir)
            .output()
            .unwrap();
        let ok = out.status.success() || (follow && out.status.code() == Some(124));
        assert!(ok, "README command failed: {}\n{}", step.command, String::from_utf8_lossy(&out.stderr));
        if step.shown.is_empty() {
            continue;
        }
        let mut printed: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
        let mut shown = step.shown.clone();
        if unordered {
            printed.sort();
            shown.sort();
        }
        assert_eq!(printed, shown, "README shows other output for: {}", step.command);
    }
}

#[tokio::test]
async fn the_readme_examples_print_what_the_readme_shows() {
    let dir = tempfile::tempdir().unwrap();
    let b = Broker::start(dir.path());
    // `alias strata=target/release/strata`, as the README says, for sh.
    let bin_dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_strata"), bin_dir.path().join("strata")).unwrap();

    let walk = readme_block("## Five-minute walk-through");
    assert!(walk.len() >= 10 && walk.iter().any(|s| !s.shown.is_empty()), "the walk-through was not parsed");
    run_readme_steps(&walk, &b.addr, bin_dir.path(), false, &[]);

    let entity = readme_block("Materialising a table from an entity topic");
    run_readme_steps(&entity, &b.addr, bin_dir.path(), true, &[]);

    // The consumer-group commands need a topic to consume.
    let mut c = b.client().await;
    create_topic(&mut c, "orders", 3).await;
    let groups = readme_block("partitions incrementally, so members keep consuming");
    run_readme_steps(&groups, &b.addr, bin_dir.path(), false, &[]);

    let safe = readme_block("## Safe producers");
    run_readme_steps(&safe, &b.addr, bin_dir.path(), false, &[]);

    // The secured walk-through, against a broker with auth on.
    let token = "readme-bootstrap-token-0123456789abcdef";
    let secured_dir = tempfile::tempdir().unwrap();
    let secured = Broker::start_with(
        secured_dir.path(),
        &[],
        &[("STRATA_AUTH__ENABLED", "true"), ("STRATA_AUTH__BOOTSTRAP_TOKEN", token)],
    );
    let steps = readme_block("A secured broker, with `STRATA_TOKEN`");
    run_readme_steps(&steps, &secured.addr, bin_dir.path(), false, &[("STRATA_TOKEN", token)]);
}

#[test]
fn every_config_key_the_docs_name_exists() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let config: toml::Table = std::fs::read_to_string(format!("{root}/config/strata.toml")).unwrap().parse().unwrap();
    let sections = ["server", "storage", "topics", "cleaner", "groups", "logging", "tls", "auth", "quotas"];
    let mut files = vec!["README.md".to_string(), "config/strata.toml".to_string()];
    for dir in ["docs", "proto/strata/v1"] {
        for e in std::fs::read_dir(format!("{root}/{dir}")).unwrap() {
            files.push(format!("{dir}/{}", e.unwrap().file_name().to_string_lossy()));
        }
    }
    let mut named = 0;
    for file in files {
        let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        for section in sections {
            let pattern = format!("{section}.");
            for (i, _) in text.match_indices(&pattern) {
                // A whole word `section.key`, key in snake_case.
                if text[..i].chars().next_back().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
                    continue;
                }
                let key: String = text[i + pattern.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                // File names (cleaner.rs) are not keys.
                if key.is_empty() || key.ends_with('_') || ["rs", "md", "toml", "proto"].contains(&key.as_str()) {
                    continue;
                }
                named += 1;
                let known = config.get(section).and_then(|s| s.as_table()).is_some_and(|t| t.contains_key(&key));
                assert!(known, "{file} names {section}.{key}, which config/strata.toml does not have");
            }
        }
    }
    assert!(named > 30, "only {named} config keys found in the docs");
}

#[test]
fn every_error_reason_is_documented_in_compatibility_md() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let doc = std::fs::read_to_string(format!("{root}/docs/compatibility.md")).unwrap();
    let proto = std::fs::read_to_string(format!("{root}/proto/strata/v1/errors.proto")).unwrap();
    let mut n = 0;
    for line in proto.lines() {
        let Some((decl, _)) = line.trim().split_once(" = ") else { continue };
        if decl.chars().all(|c| c.is_ascii_uppercase() || c == '_') && decl != "ERROR_REASON_UNSPECIFIED" {
            n += 1;
            assert!(doc.contains(&format!("`{decl}`")), "docs/compatibility.md does not list the reason {decl}");
        }
    }
    assert!(n > 40, "only {n} reasons found in errors.proto");
}
