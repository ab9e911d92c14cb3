//! Who a caller is and what it may do: ACLs ([`acl`]), API tokens
//! ([`token`]), users with passwords ([`password`]), super users and the
//! bootstrap token (`[auth]` config).
//!
//! ACLs and tokens are events in the internal compacted topic
//! `__strata_auth` (one partition), written with fsync before a change is
//! acknowledged and replayed at start-up, as committed offsets are: a
//! restart keeps them, and replication will carry them like any topic.
//! Keys: `acl \0 principal \0 host \0 operation \0 resource type \0
//! pattern \0 resource name \0 permission` (value: one byte, 1),
//! `token \0 id` (value: see [`encode_token`]) and `user \0 name` (value:
//! see [`encode_user`]); removal is a tombstone.
//!
//! No ordinary principal reaches `__strata_auth`: it matches no ACL (an
//! internal topic), and its records are refused to everyone, super users
//! included (see `partition::internal`).

pub mod acl;
pub mod password;
pub mod quota;
pub mod token;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{AuthConfig, QuotasConfig};
use crate::error::{Error, Result};
use crate::locks::RwLockExt;
use crate::partition::internal::{KeyedRecord, KeyedStore};
use crate::partition::Manager;
use acl::{Acl, Operation, PatternType, Permission, ResourceType};
use password::Hashed;
use token::SecretHash;

pub use crate::partition::internal::AUTH_TOPIC;

/// Most ACLs a broker keeps (each request is checked against a principal's).
pub const MAX_ACLS: usize = 10_000;

/// Most API tokens a broker keeps.
pub const MAX_TOKENS: usize = 10_000;

/// Most users a broker keeps.
pub const MAX_USERS: usize = 10_000;

/// An API token as stored: never its secret, only the secret's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Its public id.
    pub id: String,
    /// Who a request carrying it is.
    pub principal: String,
    /// SHA-256 of the secret.
    pub hash: SecretHash,
    /// Wall-clock ms since the Unix epoch.
    pub created_at_ms: i64,
    /// Wall-clock ms after which it is refused; 0 = never.
    pub expires_at_ms: i64,
}

/// Why credentials were refused (all UNAUTHENTICATED to the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not shaped like a Strata token.
    MalformedToken,
    /// No such token: never issued, or revoked.
    UnknownToken,
    /// Past its expiry.
    ExpiredToken,
    /// No such user, or not its password (the caller is not told which).
    BadPassword,
    /// Too many password derivations for this address lately.
    TooManyAttempts,
    /// More than one `authorization` header: which one is meant is not
    /// guessed.
    Ambiguous,
}

impl Refused {
    /// The `credential` of a BAD_CREDENTIALS refusal (errors.proto).
    pub fn credential(&self) -> &'static str {
        match self {
            Refused::MalformedToken => "malformed",
            Refused::UnknownToken => "unknown_token",
            Refused::ExpiredToken => "expired_token",
            Refused::BadPassword => "bad_password",
            Refused::TooManyAttempts => "too_many_attempts",
            Refused::Ambiguous => "ambiguous",
        }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refused::MalformedToken => "the bearer token is not a Strata API token (strata_<id>_<secret>)",
            Refused::UnknownToken => "the API token is unknown or revoked",
            Refused::ExpiredToken => "the API token has expired",
            Refused::BadPassword => "unknown user or wrong password",
            Refused::TooManyAttempts => {
                "too many password checks from this address (auth.password_checks_per_sec): wait, or use an API token"
            }
            Refused::Ambiguous => "the request has more than one authorization header: send exactly one",
        })
    }
}

/// The ACLs, grouped by the principal they name (`*` under "*"), so a
/// check looks at the caller's and the wildcard's only.
#[derive(Default)]
struct AclIndex {
    all: BTreeSet<Acl>,
    by_principal: BTreeMap<String, Vec<Acl>>,
}

impl AclIndex {
    fn rebuild(all: BTreeSet<Acl>) -> AclIndex {
        let mut by_principal: BTreeMap<String, Vec<Acl>> = BTreeMap::new();
        for a in &all {
            by_principal.entry(a.principal.clone()).or_default().push(a.clone());
        }
        AclIndex { all, by_principal }
    }
}

/// Authentication and authorization state of a broker.
pub struct Security {
    enabled: bool,
    super_users: HashSet<String>,
    /// `auth.bootstrap_token`'s hash and principal.
    bootstrap: Option<(SecretHash, String)>,
    store: KeyedStore,
    /// Swapped whole on each change (changes are rare, checks constant).
    acls: RwLock<Arc<AclIndex>>,
    tokens: RwLock<BTreeMap<String, Token>>,
    users: RwLock<BTreeMap<String, Arc<Hashed>>>,
    /// One change at a time: append, then apply, in log order.
    writing: tokio::sync::Mutex<()>,
    /// Rate quotas by principal.
    pub quotas: quota::Quotas,
    /// Password derivations per client address
    /// (`auth.password_checks_per_sec`): an unauthenticated caller cannot
    /// spend the broker's CPU on hashing guesses.
    derivations: quota::Quotas,
}

impl Security {
    /// Opens `__strata_auth` (creating it on first start) and replays it.
    pub fn open(manager: &Manager, config: &AuthConfig, quotas: &QuotasConfig) -> Result<Security> {
        let store = KeyedStore::open(manager, AUTH_TOPIC)?;
        let mut acls = BTreeSet::new();
        let mut tokens = BTreeMap::new();
        let mut users = BTreeMap::new();
        store.replay(|_, key, value| match decode_key(key) {
            Some(Key::Acl(a)) => {
                match value {
                    Some(_) => acls.insert(a),
                    None => acls.remove(&a),
                };
            }
            Some(Key::Token(id)) => match value.and_then(|v| decode_token(&id, v)) {
                Some(t) => {
                    tokens.insert(id, t);
                }
                None => {
                    tokens.remove(&id);
                }
            },
            Some(Key::User(name)) => match value.and_then(decode_user) {
                Some(h) => {
                    users.insert(name, Arc::new(h));
                }
                None => {
                    users.remove(&name);
                }
            },
            None => {
                tracing::warn!(key = ?String::from_utf8_lossy(key), "{AUTH_TOPIC}: skipping a record of unknown key")
            }
        })?;
        tracing::info!(
            acls = acls.len(),
            tokens = tokens.len(),
            users = users.len(),
            "loaded ACLs, API tokens and users"
        );
        let mut super_users: HashSet<String> = config.super_users.iter().cloned().collect();
        let bootstrap = (!config.bootstrap_token.is_empty()).then(|| {
            super_users.insert(config.bootstrap_principal.clone());
            (token::hash(&config.bootstrap_token), config.bootstrap_principal.clone())
        });
        Ok(Security {
            enabled: config.enabled,
            super_users,
            bootstrap,
            store,
            acls: RwLock::new(Arc::new(AclIndex::rebuild(acls))),
            tokens: RwLock::new(tokens),
            users: RwLock::new(users),
            writing: tokio::sync::Mutex::new(()),
            quotas: quota::Quotas::new(quotas.clone()),
            derivations: quota::Quotas::new(QuotasConfig {
                requests_per_sec: config.password_checks_per_sec,
                ..Default::default()
            }),
        })
    }

    /// Whether every RPC is checked (`auth.enabled`).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The principal a bearer token stands for.
    pub fn authenticate_token(&self, presented: &str) -> std::result::Result<String, Refused> {
        if let Some((hash, principal)) = &self.bootstrap {
            if token::same(hash, &token::hash(presented)) {
                return Ok(principal.clone());
            }
        }
        let (id, secret) = token::parse(presented).ok_or(Refused::MalformedToken)?;
        let tokens = self.tokens.read_locked();
        let t = tokens.get(id).filter(|t| token::same(&t.hash, &token::hash(secret))).ok_or(Refused::UnknownToken)?;
        if t.expires_at_ms != 0 && now_ms() >= t.expires_at_ms {
            return Err(Refused::ExpiredToken);
        }
        Ok(t.principal.clone())
    }

    /// The principal (the user's name) of a username and password, from
    /// `client` (its address, for the derivation budget). With
    /// `remembered_only`, only a password proved before passes (no
    /// derivation: for public RPCs, which need no identity).
    pub fn authenticate_password(
        &self,
        user: &str,
        password: &str,
        client: &str,
        remembered_only: bool,
    ) -> std::result::Result<String, Refused> {
        // Not under the lock: a derivation takes milliseconds.
        let hashed = self.users.read_locked().get(user).cloned();
        if hashed.as_ref().is_some_and(|h| h.verify_remembered(password)) {
            return Ok(user.to_string());
        }
        if remembered_only {
            return Err(Refused::BadPassword);
        }
        if !self.derivations.admit(client, quota::Kind::Requests, 1, std::time::Instant::now()) {
            return Err(Refused::TooManyAttempts);
        }
        match hashed {
            Some(h) if h.verify(password) => Ok(user.to_string()),
            Some(_) => Err(Refused::BadPassword),
            None => {
                password::waste_time(password);
                Err(Refused::BadPassword)
            }
        }
    }

    /// Sets `user`'s password; true if the user is new.
    pub async fn set_user(&self, user: &str, password: &str) -> Result<bool> {
        acl::check_name("username", user, &[':'])?;
        let hashed = {
            let password = password.to_string();
            tokio::task::spawn_blocking(move || Hashed::new(&password))
                .await
                .map_err(|e| Error::Internal(format!("hashing task failed: {e}")))??
        };
        let _w = self.writing.lock().await;
        let new = !self.users.read_locked().contains_key(user);
        if new && self.users.read_locked().len() >= MAX_USERS {
            return Err(Error::LimitReached {
                limit: "users",
                message: format!("the broker keeps at most {MAX_USERS} users; delete some first"),
            });
        }
        self.write(KeyedRecord::set(user_key(user), encode_user(&hashed))).await?;
        self.users.write_locked().insert(user.to_string(), Arc::new(hashed));
        Ok(new)
    }

    /// Deletes a user and revokes every API token issued for its name; false
    /// if there was no user of that name. Its ACLs stay, as Kafka's do (an
    /// ACL names a principal, which may come back, or authenticate by
    /// certificate).
    pub async fn delete_user(&self, user: &str) -> Result<bool> {
        let _w = self.writing.lock().await;
        if !self.users.read_locked().contains_key(user) {
            return Ok(false);
        }
        // Tokens first: a crash in between leaves the user, so the delete
        // can be repeated; never a deleted user whose tokens still work.
        let ids: Vec<String> =
            self.tokens.read_locked().values().filter(|t| t.principal == user).map(|t| t.id.clone()).collect();
        for id in ids {
            self.write(KeyedRecord::delete(token_key(&id))).await?;
            self.tokens.write_locked().remove(&id);
        }
        self.write(KeyedRecord::delete(user_key(user))).await?;
        self.users.write_locked().remove(user);
        Ok(true)
    }

    /// Every user's name.
    pub fn list_users(&self) -> Vec<String> {
        self.users.read_locked().keys().cloned().collect()
    }

    /// True for the principals allowed everything.
    pub fn is_super_user(&self, principal: &str) -> bool {
        self.super_users.contains(principal)
    }

    /// Whether the ACLs allow `r` (super users aside: see [`Self::is_super_user`]).
    pub fn allowed(&self, r: &acl::Request<'_>) -> bool {
        let index = self.acls.read_locked().clone();
        let mine = index.by_principal.get(r.principal).into_iter().flatten();
        let anyone = index.by_principal.get("*").into_iter().flatten();
        acl::decide(mine.chain(anyone), r)
    }

    /// Adds an ACL; false if it existed already.
    pub async fn create_acl(&self, a: Acl) -> Result<bool> {
        let a = a.validate()?;
        let _w = self.writing.lock().await;
        let index = self.acls.read_locked().clone();
        if index.all.contains(&a) {
            return Ok(false);
        }
        if index.all.len() >= MAX_ACLS {
            return Err(Error::LimitReached {
                limit: "acls",
                message: format!(
                    "the broker keeps at most {MAX_ACLS} ACLs; delete some first (prefix ACLs cover many resources)"
                ),
            });
        }
        self.write(KeyedRecord::set(acl_key(&a), vec![1])).await?;
        let mut all = index.all.clone();
        all.insert(a);
        *self.acls.write_locked() = Arc::new(AclIndex::rebuild(all));
        Ok(true)
    }

    /// Removes an ACL; false if there was none such.
    pub async fn delete_acl(&self, a: Acl) -> Result<bool> {
        let a = a.validate()?;
        let _w = self.writing.lock().await;
        let index = self.acls.read_locked().clone();
        if !index.all.contains(&a) {
            return Ok(false);
        }
        self.write(KeyedRecord::delete(acl_key(&a))).await?;
        let mut all = index.all.clone();
        all.remove(&a);
        *self.acls.write_locked() = Arc::new(AclIndex::rebuild(all));
        Ok(true)
    }

    /// ACLs, filtered by principal, resource type and name where given.
    pub fn list_acls(&self, principal: Option<&str>, rt: Option<ResourceType>, name: Option<&str>) -> Vec<Acl> {
        let index = self.acls.read_locked().clone();
        index
            .all
            .iter()
            .filter(|a| principal.is_none_or(|p| a.principal == p))
            .filter(|a| rt.is_none_or(|t| a.resource_type == t))
            .filter(|a| name.is_none_or(|n| a.resource_name == n))
            .cloned()
            .collect()
    }

    /// Issues a token for `principal`, valid for `ttl_ms` (0: until revoked).
    /// Returns the token itself (never stored) and its description.
    pub async fn create_token(&self, principal: &str, ttl_ms: u64) -> Result<(String, Token)> {
        acl::check_name("token principal", principal, &[])?;
        if principal == "*" {
            return Err(Error::InvalidArgument(
                "a token's principal cannot be \"*\" (that means every principal in ACLs)".into(),
            ));
        }
        let _w = self.writing.lock().await;
        // Expired tokens make room.
        let expired: Vec<String> = {
            let now = now_ms();
            let tokens = self.tokens.read_locked();
            tokens.values().filter(|t| t.expires_at_ms != 0 && t.expires_at_ms <= now).map(|t| t.id.clone()).collect()
        };
        for id in expired {
            self.write(KeyedRecord::delete(token_key(&id))).await?;
            self.tokens.write_locked().remove(&id);
        }
        if self.tokens.read_locked().len() >= MAX_TOKENS {
            return Err(Error::LimitReached {
                limit: "tokens",
                message: format!("the broker keeps at most {MAX_TOKENS} API tokens; revoke some first"),
            });
        }
        let (id, secret, hash) = token::generate()?;
        let created_at_ms = now_ms();
        let expires_at_ms = match ttl_ms {
            0 => 0,
            ttl => created_at_ms.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)),
        };
        let t = Token { id: id.clone(), principal: principal.to_string(), hash, created_at_ms, expires_at_ms };
        self.write(KeyedRecord::set(token_key(&id), encode_token(&t))).await?;
        self.tokens.write_locked().insert(id, t.clone());
        Ok((secret, t))
    }

    /// Revokes a token; false if there was none of that id.
    pub async fn revoke_token(&self, id: &str) -> Result<bool> {
        let _w = self.writing.lock().await;
        if !self.tokens.read_locked().contains_key(id) {
            return Ok(false);
        }
        self.write(KeyedRecord::delete(token_key(id))).await?;
        self.tokens.write_locked().remove(id);
        Ok(true)
    }

    /// Tokens (of `principal` only, when given), without their secrets.
    pub fn list_tokens(&self, principal: Option<&str>) -> Vec<Token> {
        let tokens = self.tokens.read_locked();
        tokens.values().filter(|t| principal.is_none_or(|p| t.principal == p)).cloned().collect()
    }

    /// Appends one change and waits for fsync.
    async fn write(&self, record: KeyedRecord) -> Result<()> {
        self.store.append(&[record], now_ms()).await
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

enum Key {
    Acl(Acl),
    Token(String),
    User(String),
}

fn user_key(name: &str) -> Vec<u8> {
    format!("user\0{name}").into_bytes()
}

/// A user's value: version byte 1, PBKDF2 rounds (u32 little-endian), the
/// 16-byte salt, the 32-byte derived key.
fn encode_user(h: &Hashed) -> Vec<u8> {
    let mut v = vec![1u8];
    v.extend_from_slice(&h.iterations.to_le_bytes());
    v.extend_from_slice(&h.salt);
    v.extend_from_slice(&h.hash);
    v
}

fn decode_user(v: &[u8]) -> Option<Hashed> {
    if v.len() != 53 || v[0] != 1 {
        return None;
    }
    let iterations = u32::from_le_bytes(v[1..5].try_into().ok()?);
    Some(Hashed::from_parts(iterations, v[5..21].try_into().ok()?, v[21..53].try_into().ok()?))
}

fn acl_key(a: &Acl) -> Vec<u8> {
    let pattern = match a.pattern_type {
        PatternType::Literal => "literal",
        PatternType::Prefixed => "prefixed",
    };
    let permission = match a.permission {
        Permission::Allow => "allow",
        Permission::Deny => "deny",
    };
    format!(
        "acl\0{}\0{}\0{}\0{}\0{pattern}\0{}\0{permission}",
        a.principal, a.host, a.operation, a.resource_type, a.resource_name
    )
    .into_bytes()
}

fn token_key(id: &str) -> Vec<u8> {
    format!("token\0{id}").into_bytes()
}

fn decode_key(b: &[u8]) -> Option<Key> {
    let s = std::str::from_utf8(b).ok()?;
    let f: Vec<&str> = s.split('\0').collect();
    match f.as_slice() {
        ["token", id] => Some(Key::Token(id.to_string())),
        ["user", name] => Some(Key::User(name.to_string())),
        ["acl", principal, host, op, rt, pattern, name, permission] => Some(Key::Acl(Acl {
            principal: principal.to_string(),
            host: host.to_string(),
            operation: match *op {
                "all" => Operation::All,
                "read" => Operation::Read,
                "write" => Operation::Write,
                "create" => Operation::Create,
                "delete" => Operation::Delete,
                "alter" => Operation::Alter,
                "describe" => Operation::Describe,
                _ => return None,
            },
            resource_type: match *rt {
                "topic" => ResourceType::Topic,
                "group" => ResourceType::Group,
                "cluster" => ResourceType::Cluster,
                _ => return None,
            },
            pattern_type: match *pattern {
                "literal" => PatternType::Literal,
                "prefixed" => PatternType::Prefixed,
                _ => return None,
            },
            resource_name: name.to_string(),
            permission: match *permission {
                "allow" => Permission::Allow,
                "deny" => Permission::Deny,
                _ => return None,
            },
        })),
        _ => None,
    }
}

/// A token's value: version byte 1, the 32-byte secret hash, created and
/// expires (i64 little-endian ms), then the principal (UTF-8).
fn encode_token(t: &Token) -> Vec<u8> {
    let mut v = vec![1u8];
    v.extend_from_slice(&t.hash);
    v.extend_from_slice(&t.created_at_ms.to_le_bytes());
    v.extend_from_slice(&t.expires_at_ms.to_le_bytes());
    v.extend_from_slice(t.principal.as_bytes());
    v
}

fn decode_token(id: &str, v: &[u8]) -> Option<Token> {
    if v.first() != Some(&1) || v.len() < 49 {
        return None;
    }
    Some(Token {
        id: id.to_string(),
        hash: v[1..33].try_into().ok()?,
        created_at_ms: i64::from_le_bytes(v[33..41].try_into().ok()?),
        expires_at_ms: i64::from_le_bytes(v[41..49].try_into().ok()?),
        principal: String::from_utf8(v[49..].to_vec()).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_token_values_round_trip() {
        let a = Acl {
            principal: "svc".into(),
            host: "10.1.2.3".into(),
            operation: Operation::Describe,
            resource_type: ResourceType::Group,
            pattern_type: PatternType::Prefixed,
            resource_name: "billing-".into(),
            permission: Permission::Deny,
        };
        match decode_key(&acl_key(&a)) {
            Some(Key::Acl(b)) => assert_eq!(a, b),
            _ => panic!("acl key did not decode"),
        }
        let t = Token {
            id: "0123456789abcdef".into(),
            principal: "svc-orders".into(),
            hash: [7; 32],
            created_at_ms: 5,
            expires_at_ms: 9,
        };
        assert!(matches!(decode_key(&token_key(&t.id)), Some(Key::Token(id)) if id == t.id));
        assert_eq!(decode_token(&t.id, &encode_token(&t)), Some(t));
        assert!(decode_key(b"acl\0only").is_none());
        let h = Hashed::new("password1").unwrap();
        assert!(matches!(decode_key(&user_key("bob")), Some(Key::User(n)) if n == "bob"));
        let back = decode_user(&encode_user(&h)).unwrap();
        assert_eq!(back, h);
        assert!(back.verify("password1"));
        assert!(decode_token("x", &[1, 2]).is_none());
    }
}
