//! API tokens: `strata_<id>_<secret>`, where the id (16 hex digits) names
//! the token in lists and revocations and the secret (64 hex digits, 256
//! random bits) proves it. The broker keeps only the SHA-256 of the secret:
//! a token cannot be recovered from what is stored, and a slow hash buys
//! nothing for 256 random bits.

use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::{Error, Result};

/// What every token starts with.
pub const PREFIX: &str = "strata_";

const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;

/// SHA-256 of a token's secret.
pub type SecretHash = [u8; 32];

/// A new token: (id, the whole token, the hash of its secret).
pub fn generate() -> Result<(String, String, SecretHash)> {
    let rng = SystemRandom::new();
    let mut bytes = [0u8; ID_BYTES + SECRET_BYTES];
    rng.fill(&mut bytes).map_err(|_| Error::Internal("the system's random number generator failed".into()))?;
    let id = hex(&bytes[..ID_BYTES]);
    let secret = hex(&bytes[ID_BYTES..]);
    let hash = hash(&secret);
    Ok((id.clone(), format!("{PREFIX}{id}_{secret}"), hash))
}

/// Splits a token into its id and secret; None if it is not shaped like one.
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.strip_prefix(PREFIX)?.split_once('_')?;
    let hex_of = |s: &str, n: usize| s.len() == n * 2 && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex_of(id, ID_BYTES) && hex_of(secret, SECRET_BYTES)).then_some((id, secret))
}

/// The stored form of a secret.
pub fn hash(secret: &str) -> SecretHash {
    let d = digest(&SHA256, secret.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Compares two hashes in time that does not depend on where they differ.
pub fn same(a: &SecretHash, b: &SecretHash) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_and_hash_to_what_is_stored() {
        let (id, token, h) = generate().unwrap();
        let (pid, secret) = parse(&token).unwrap();
        assert_eq!(pid, id);
        assert!(same(&hash(secret), &h));
        let (_, other, _) = generate().unwrap();
        assert_ne!(token, other);
        assert!(!same(&hash(parse(&other).unwrap().1), &h));
        for bad in
            ["", "strata_", "strata_abc_def", "token", &token[..token.len() - 1], &token.replace("strata_", "x_")]
        {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }
}
