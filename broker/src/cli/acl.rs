//! `strata acl ...`

use strata_client::proto::*;

use super::{connect, status_error, CliError, Connect};

/// An ACL as flags.
#[derive(clap::Args)]
pub struct AclArgs {
    /// The principal, or "*" for every authenticated one.
    #[arg(long)]
    principal: String,
    /// all, read, write, create, delete, alter or describe.
    #[arg(long, value_parser = ["all", "read", "write", "create", "delete", "alter", "describe"])]
    operation: String,
    /// The topic (name or prefix, "*" = every topic).
    #[arg(long, conflicts_with_all = ["group", "cluster"], required_unless_present_any = ["group", "cluster"])]
    topic: Option<String>,
    /// The group (name or prefix, "*" = every group).
    #[arg(long, conflicts_with = "cluster")]
    group: Option<String>,
    /// The cluster itself (listing, ACLs, tokens).
    #[arg(long)]
    cluster: bool,
    /// The name is a prefix.
    #[arg(long)]
    prefixed: bool,
    /// Deny instead of allow (a deny wins over every allow).
    #[arg(long)]
    deny: bool,
    /// Only from this IP address (default: any).
    #[arg(long, default_value = "*")]
    host: String,
}

#[derive(clap::Subcommand)]
pub enum AclCommand {
    /// Add an ACL: strata acl add --principal svc-orders --operation write --topic orders
    Add(AclArgs),
    /// List ACLs (all, or of one principal).
    List {
        /// Only this principal's.
        #[arg(long)]
        principal: Option<String>,
    },
    /// Remove the ACL given exactly as it was added.
    Remove(AclArgs),
}

fn to_acl(a: AclArgs) -> Acl {
    let operation = match a.operation.as_str() {
        "all" => AclOperation::All,
        "read" => AclOperation::Read,
        "write" => AclOperation::Write,
        "create" => AclOperation::Create,
        "delete" => AclOperation::Delete,
        "alter" => AclOperation::Alter,
        _ => AclOperation::Describe,
    };
    let (resource_type, resource_name) = match (a.topic, a.group) {
        (Some(t), _) => (ResourceType::Topic, t),
        (None, Some(g)) => (ResourceType::Group, g),
        (None, None) => (ResourceType::Cluster, "cluster".to_string()),
    };
    Acl {
        principal: a.principal,
        host: a.host,
        operation: operation as i32,
        resource_type: resource_type as i32,
        pattern_type: if a.prefixed { PatternType::Prefixed } else { PatternType::Literal } as i32,
        resource_name,
        permission: if a.deny { AclPermission::Deny } else { AclPermission::Allow } as i32,
    }
}

fn show(a: &Acl) -> String {
    let name = |v: &str, prefix: &str| v.strip_prefix(prefix).unwrap_or(v).to_ascii_lowercase();
    let operation = AclOperation::try_from(a.operation).map_or("?".into(), |o| name(o.as_str_name(), "ACL_OPERATION_"));
    let rt = ResourceType::try_from(a.resource_type).map_or("?".into(), |o| name(o.as_str_name(), "RESOURCE_TYPE_"));
    let pt = PatternType::try_from(a.pattern_type).map_or("?".into(), |o| name(o.as_str_name(), "PATTERN_TYPE_"));
    let perm = AclPermission::try_from(a.permission).map_or("?".into(), |o| name(o.as_str_name(), "ACL_PERMISSION_"));
    format!("{perm} {} {operation} {rt} {pt} {} from {}", a.principal, a.resource_name, a.host)
}

pub async fn run(cmd: AclCommand, c: &Connect) -> Result<(), CliError> {
    let mut client = connect(c).await?;
    let admin = &mut client.admin;
    match cmd {
        AclCommand::Add(a) => {
            let acl = to_acl(a);
            let created = admin.create_acl(CreateAclRequest { acl: Some(acl.clone()) }).await.map_err(status_error)?;
            let verb = if created.into_inner().created { "added" } else { "exists already" };
            println!("{verb}: {}", show(&acl));
        }
        AclCommand::List { principal } => {
            let req = ListAclsRequest { principal: principal.unwrap_or_default(), ..Default::default() };
            for a in admin.list_acls(req).await.map_err(status_error)?.into_inner().acls {
                println!("{}", show(&a));
            }
        }
        AclCommand::Remove(a) => {
            let acl = to_acl(a);
            let deleted = admin.delete_acl(DeleteAclRequest { acl: Some(acl.clone()) }).await.map_err(status_error)?;
            if !deleted.into_inner().deleted {
                return Err(format!("no such ACL: {}", show(&acl)).into());
            }
            println!("removed: {}", show(&acl));
        }
    }
    Ok(())
}
