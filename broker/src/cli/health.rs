//! `strata health`: asks the standard gRPC health service; exit 0 only if SERVING.
//! The container HEALTHCHECK runs this.

use std::time::Duration;

use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest};

use super::{CliError, Connect};

#[derive(clap::Args)]
pub struct HealthArgs {
    /// Service to check ("" = the whole server).
    #[arg(long, default_value = "")]
    service: String,
    /// Give up after this long.
    #[arg(long, default_value_t = 3000)]
    timeout_ms: u64,
    /// Check the broker this config file describes (its server.listen, with
    /// 0.0.0.0 read as 127.0.0.1) instead of --addr.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub connect: Connect,
}

pub async fn run(mut args: HealthArgs) -> Result<(), CliError> {
    if let Some(file) = &args.config {
        let config = strata::config::Config::load(Some(file), std::env::vars())?;
        let mut addr: std::net::SocketAddr = config.server.listen.parse()?;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        args.connect.addr = addr.to_string();
    }
    let check = async {
        let tls = args.connect.tls()?;
        let channel = strata_client::channel(&args.connect.addr, tls.as_ref())
            .await
            .map_err(|e| format!("cannot connect to {}: {}", args.connect.addr, super::error_chain(&e)))?;
        let reply = HealthClient::new(channel)
            .check(HealthCheckRequest { service: args.service.clone() })
            .await
            .map_err(|s| format!("health check failed: {:?}: {}", s.code(), s.message()))?;
        Ok::<i32, CliError>(reply.into_inner().status)
    };
    let status = tokio::time::timeout(Duration::from_millis(args.timeout_ms), check)
        .await
        .map_err(|_| format!("no answer from {} within {} ms", args.connect.addr, args.timeout_ms))??;
    let status = ServingStatus::try_from(status).unwrap_or(ServingStatus::Unknown);
    if status == ServingStatus::Serving {
        println!("SERVING");
        Ok(())
    } else {
        Err(format!("{} is {}", args.connect.addr, status.as_str_name()).into())
    }
}
