//! `strata user ...`

use strata_client::proto::*;

use super::{connect, status_error, CliError, Connect};

#[derive(clap::Subcommand)]
pub enum UserCommand {
    /// Create a user, or change its password.
    Set {
        /// The username (its principal).
        username: String,
        /// The new password (prefer the variable: a flag shows in the process list).
        #[arg(long, env = "STRATA_NEW_PASSWORD", hide_env_values = true)]
        new_password: String,
    },
    /// List usernames.
    List,
    /// Delete a user.
    Delete {
        /// The username.
        username: String,
    },
}

pub async fn run(cmd: UserCommand, c: &Connect) -> Result<(), CliError> {
    let mut client = connect(c).await?;
    let admin = &mut client.admin;
    match cmd {
        UserCommand::Set { username, new_password } => {
            let req = SetUserRequest { username: username.clone(), password: new_password };
            let created = admin.set_user(req).await.map_err(status_error)?.into_inner().created;
            println!("{} {username}", if created { "created" } else { "changed the password of" });
        }
        UserCommand::List => {
            for u in admin.list_users(ListUsersRequest {}).await.map_err(status_error)?.into_inner().usernames {
                println!("{u}");
            }
        }
        UserCommand::Delete { username } => {
            let req = DeleteUserRequest { username: username.clone() };
            if !admin.delete_user(req).await.map_err(status_error)?.into_inner().deleted {
                return Err(format!("no user {username}").into());
            }
            println!("deleted {username}");
        }
    }
    Ok(())
}
