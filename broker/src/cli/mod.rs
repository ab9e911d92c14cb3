//! Command line: `serve` runs the broker; the other commands are clients.

mod abuse;
mod acl;
mod bench;
mod broker_stats;
mod consume;
mod group;
mod health;
mod produce;
mod serve;
mod token;
mod topic;
mod user;
mod verify;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use strata_client::proto::Acks;

/// Boxed error for command results.
pub type CliError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser)]
#[command(name = "strata", version, about = "Strata: a durable, partitioned event broker over gRPC")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where client commands connect, and with which credentials: from flags,
/// else the environment, else the client config file, else defaults.
#[derive(clap::Args, Clone)]
pub struct Connect {
    /// Broker address [default: 127.0.0.1:7400].
    #[arg(long = "addr", env = "STRATA_ADDR", global = true)]
    addr_arg: Option<String>,
    /// The address in use (set by [`Connect::resolve`]).
    #[arg(skip)]
    pub addr: String,
    /// A TOML file with any of: addr, tls, tls_ca, tls_cert, tls_key,
    /// tls_server_name, token, user, password (flags and variables win).
    #[arg(long, env = "STRATA_CLIENT_CONFIG", value_name = "TOML_FILE", global = true)]
    client_config: Option<PathBuf>,
    /// Connect over TLS (implied by the other --tls-* flags); without
    /// --tls-ca the system's root certificates are trusted.
    #[arg(long, env = "STRATA_TLS", global = true)]
    tls: bool,
    /// CA certificates (PEM) the broker's certificate must chain to.
    #[arg(long, env = "STRATA_TLS_CA", value_name = "PEM_FILE", global = true)]
    tls_ca: Option<PathBuf>,
    /// Client certificate (PEM), for brokers that want mutual TLS (with --tls-key).
    #[arg(long, env = "STRATA_TLS_CERT", value_name = "PEM_FILE", global = true)]
    tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "STRATA_TLS_KEY", value_name = "PEM_FILE", global = true)]
    tls_key: Option<PathBuf>,
    /// Name the broker's certificate must carry (default: the address's host).
    #[arg(long, env = "STRATA_TLS_SERVER_NAME", global = true)]
    tls_server_name: Option<String>,
    /// API token sent with every request (prefer the variable: a flag
    /// shows in the process list).
    #[arg(long, env = "STRATA_TOKEN", hide_env_values = true, global = true, conflicts_with = "user")]
    token: Option<String>,
    /// User to authenticate as (with --password or STRATA_PASSWORD).
    #[arg(long, env = "STRATA_USER", global = true)]
    user: Option<String>,
    /// The user's password (prefer the variable).
    #[arg(long, env = "STRATA_PASSWORD", hide_env_values = true, global = true)]
    password: Option<String>,
}

/// The client config file (`--client-config`).
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ClientFile {
    addr: Option<String>,
    tls: Option<bool>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_server_name: Option<String>,
    token: Option<String>,
    user: Option<String>,
    password: Option<String>,
}

impl Connect {
    /// Fills what flags and variables left unset from the client config
    /// file, then defaults.
    fn resolve(&mut self) -> Result<(), CliError> {
        let file = match &self.client_config {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
                toml::from_str(&text).map_err(|e| format!("{}: {}", p.display(), e.message()))?
            }
            None => ClientFile::default(),
        };
        self.addr = self.addr_arg.clone().or(file.addr).unwrap_or_else(|| "127.0.0.1:7400".into());
        self.tls |= file.tls.unwrap_or(false);
        self.tls_ca = self.tls_ca.take().or(file.tls_ca);
        self.tls_cert = self.tls_cert.take().or(file.tls_cert);
        self.tls_key = self.tls_key.take().or(file.tls_key);
        self.tls_server_name = self.tls_server_name.take().or(file.tls_server_name);
        if self.token.is_none() && self.user.is_none() {
            (self.token, self.user, self.password) = (file.token, file.user, self.password.take().or(file.password));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("tls_cert and tls_key go together".into());
        }
        if self.user.is_some() && self.password.is_none() {
            return Err("a user needs a password (--password, STRATA_PASSWORD or the client config file)".into());
        }
        Ok(())
    }

    /// The TLS options these flags ask for, with the files read.
    pub fn tls(&self) -> Result<Option<strata_client::TlsOptions>, CliError> {
        let wanted = self.tls || self.tls_ca.is_some() || self.tls_cert.is_some() || self.tls_server_name.is_some();
        if !wanted {
            return Ok(None);
        }
        let read = |p: &Option<PathBuf>| -> Result<Option<Vec<u8>>, CliError> {
            p.as_ref()
                .map(|p| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()).into()))
                .transpose()
        };
        Ok(Some(strata_client::TlsOptions {
            ca_pem: read(&self.tls_ca)?,
            cert_pem: read(&self.tls_cert)?,
            key_pem: read(&self.tls_key)?,
            server_name: self.tls_server_name.clone(),
        }))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker.
    Serve(serve::ServeArgs),
    /// Create, list, describe, alter and delete topics.
    Topic {
        #[command(subcommand)]
        command: topic::TopicCommand,
        #[command(flatten)]
        connect: Connect,
    },
    /// Add, list and remove ACLs.
    Acl {
        #[command(subcommand)]
        command: acl::AclCommand,
        #[command(flatten)]
        connect: Connect,
    },
    /// Create, list and revoke API tokens.
    Token {
        #[command(subcommand)]
        command: token::TokenCommand,
        #[command(flatten)]
        connect: Connect,
    },
    /// Set passwords of, list and delete users.
    User {
        #[command(subcommand)]
        command: user::UserCommand,
        #[command(flatten)]
        connect: Connect,
    },
    /// List, describe, reset and delete consumer groups.
    Group {
        #[command(subcommand)]
        command: group::GroupCommand,
        #[command(flatten)]
        connect: Connect,
    },
    /// Produce lines from stdin or a file, one record per line.
    Produce(produce::ProduceArgs),
    /// Print records of a topic.
    Consume(consume::ConsumeArgs),
    /// Measure produce and consume throughput and latency against a broker.
    Bench(bench::BenchArgs),
    /// Load and abuse run against a broker on this machine: a producer and
    /// consumers at a steady rate, then stalled subscribers, idle and
    /// slow-header connections, and huge requests; reports throughput, p99
    /// and the broker's RSS per phase.
    Abuse(abuse::AbuseArgs),
    /// Check that a broker is up and serving (exit 0) or not (exit 1).
    Health(health::HealthArgs),
    /// Check a stopped broker's data directory: every batch, offset and index.
    Verify(verify::VerifyArgs),
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a configuration file (with the environment applied), naming any bad key.
    Check {
        /// The file.
        file: PathBuf,
    },
}

/// Acknowledgement level on the command line.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum AcksArg {
    /// Reply once appended.
    None,
    /// Reply once written to the OS.
    Written,
    /// Reply once fsynced.
    Durable,
}

impl From<AcksArg> for Acks {
    fn from(a: AcksArg) -> Acks {
        match a {
            AcksArg::None => Acks::None,
            AcksArg::Written => Acks::Written,
            AcksArg::Durable => Acks::Durable,
        }
    }
}

impl Command {
    /// The command's connection settings, if it is a client command.
    fn connect_mut(&mut self) -> Option<&mut Connect> {
        match self {
            Command::Topic { connect, .. }
            | Command::Group { connect, .. }
            | Command::Acl { connect, .. }
            | Command::Token { connect, .. }
            | Command::User { connect, .. } => Some(connect),
            Command::Produce(a) => Some(&mut a.connect),
            Command::Consume(a) => Some(&mut a.connect),
            Command::Bench(a) => Some(&mut a.connect),
            Command::Abuse(a) => Some(&mut a.connect),
            Command::Health(a) => Some(&mut a.connect),
            Command::Serve(_) | Command::Verify(_) | Command::Config { .. } => None,
        }
    }
}

/// Runs a parsed command line.
pub async fn run(mut cli: Cli) -> Result<(), CliError> {
    if let Some(c) = cli.command.connect_mut() {
        c.resolve()?;
    }
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Topic { command, connect } => topic::run(command, &connect).await,
        Command::Group { command, connect } => group::run(command, &connect).await,
        Command::Acl { command, connect } => acl::run(command, &connect).await,
        Command::Token { command, connect } => token::run(command, &connect).await,
        Command::User { command, connect } => user::run(command, &connect).await,
        Command::Produce(args) => produce::run(args).await,
        Command::Consume(args) => consume::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Abuse(args) => abuse::run(args).await,
        Command::Health(args) => health::run(args).await,
        Command::Verify(args) => verify::run(args),
        Command::Config { command: ConfigCommand::Check { file } } => {
            let config = strata::config::Config::load(Some(&file), std::env::vars())?;
            println!("{}: valid", file.display());
            print!("{}", config.to_toml());
            Ok(())
        }
    }
}

/// Connects a client, with the address in the error.
pub async fn connect(c: &Connect) -> Result<strata_client::Client, CliError> {
    let tls = c.tls()?;
    let credentials = match (&c.token, &c.user, &c.password) {
        (Some(t), _, _) => strata_client::Credentials::token(t)?,
        (None, Some(u), Some(p)) => strata_client::Credentials::password(u, p)?,
        _ => strata_client::Credentials::none(),
    };
    let channel = strata_client::channel(&c.addr, tls.as_ref())
        .await
        .map_err(|e| format!("cannot connect to {}: {}", c.addr, error_chain(&e)))?;
    Ok(strata_client::Client::from_channel(channel, credentials))
}

/// An error and its sources on one line ("transport error: ... : invalid
/// peer certificate: UnknownIssuer"): tonic's transport errors say what
/// went wrong only in their sources.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A gRPC status as a one-line error: "NotFound: topic 'x' does not exist".
pub fn status_error(s: tonic::Status) -> CliError {
    format!("{:?}: {}", s.code(), s.message()).into()
}
