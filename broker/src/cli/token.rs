//! `strata token ...`

use strata_client::proto::*;

use super::{connect, status_error, CliError, Connect};

#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Create an API token for a principal; prints the token (shown once).
    Create {
        /// Who requests carrying the token are.
        principal: String,
        /// Lifetime in seconds (default: until revoked).
        #[arg(long, value_name = "SECONDS")]
        ttl: Option<u64>,
    },
    /// List tokens (ids, principals, expiry; never the secrets).
    List {
        /// Only this principal's.
        #[arg(long)]
        principal: Option<String>,
    },
    /// Revoke a token by its id.
    Revoke {
        /// The token's id (from `strata token list`).
        token_id: String,
    },
}

pub async fn run(cmd: TokenCommand, c: &Connect) -> Result<(), CliError> {
    let mut client = connect(c).await?;
    let admin = &mut client.admin;
    match cmd {
        TokenCommand::Create { principal, ttl } => {
            let ttl_ms = ttl.unwrap_or(0).saturating_mul(1000);
            let r = admin.create_token(CreateTokenRequest { principal, ttl_ms }).await.map_err(status_error)?;
            let r = r.into_inner();
            let info = r.info.unwrap_or_default();
            eprintln!("token {} for {} (expires: {})", info.token_id, info.principal, expiry(info.expires_at_ms));
            println!("{}", r.token);
        }
        TokenCommand::List { principal } => {
            let req = ListTokensRequest { principal: principal.unwrap_or_default() };
            for t in admin.list_tokens(req).await.map_err(status_error)?.into_inner().tokens {
                println!("{} {} expires {}", t.token_id, t.principal, expiry(t.expires_at_ms));
            }
        }
        TokenCommand::Revoke { token_id } => {
            let r =
                admin.revoke_token(RevokeTokenRequest { token_id: token_id.clone() }).await.map_err(status_error)?;
            if !r.into_inner().revoked {
                return Err(format!("no token {token_id}").into());
            }
            println!("revoked {token_id}");
        }
    }
    Ok(())
}

fn expiry(ms: i64) -> String {
    match ms {
        0 => "never".into(),
        ms => format!("at {ms} ms since the epoch"),
    }
}
