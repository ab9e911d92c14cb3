//! Users' passwords: PBKDF2-HMAC-SHA256 with a 16-byte random salt and
//! [`ITERATIONS`] rounds (SCRAM-SHA-256's and Kafka's default is 4,096;
//! this is more). Verification is constant-time (`ring::pbkdf2::verify`).
//!
//! Every request carries its credentials, and a full derivation costs
//! milliseconds of CPU, so a password that verified once is remembered as
//! SHA-256(salt ‖ password) in memory (never on disk) and later requests
//! compare against that; a wrong password always pays the full derivation,
//! and an unknown user pays it too, so timing does not tell which.

use std::num::NonZeroU32;
use std::sync::OnceLock;

use ring::digest::{digest, SHA256};
use ring::pbkdf2;
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::{Error, Result};

/// PBKDF2 rounds for new passwords (stored with each hash, so it can grow).
pub const ITERATIONS: u32 = 20_000;

/// Shortest password accepted.
pub const MIN_PASSWORD_BYTES: usize = 8;
/// Longest password accepted.
pub const MAX_PASSWORD_BYTES: usize = 1024;

const ALGORITHM: pbkdf2::Algorithm = pbkdf2::PBKDF2_HMAC_SHA256;

/// A user's stored credential.
#[derive(Debug)]
pub struct Hashed {
    /// PBKDF2 rounds.
    pub iterations: u32,
    /// Random salt.
    pub salt: [u8; 16],
    /// The derived key.
    pub hash: [u8; 32],
    /// SHA-256(salt ‖ password) once a request proved the password.
    verified: OnceLock<[u8; 32]>,
}

impl PartialEq for Hashed {
    fn eq(&self, o: &Self) -> bool {
        self.iterations == o.iterations && self.salt == o.salt && self.hash == o.hash
    }
}

impl Hashed {
    /// Hashes a new password (after checking its length).
    pub fn new(password: &str) -> Result<Hashed> {
        if !(MIN_PASSWORD_BYTES..=MAX_PASSWORD_BYTES).contains(&password.len()) {
            return Err(Error::InvalidArgument(format!(
                "a password must be {MIN_PASSWORD_BYTES}-{MAX_PASSWORD_BYTES} bytes, not {}",
                password.len()
            )));
        }
        let mut salt = [0u8; 16];
        SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| Error::Internal("the system's random number generator failed".into()))?;
        let mut hash = [0u8; 32];
        pbkdf2::derive(ALGORITHM, rounds(ITERATIONS), &salt, password.as_bytes(), &mut hash);
        Ok(Hashed::from_parts(ITERATIONS, salt, hash))
    }

    /// A stored credential as read back.
    pub fn from_parts(iterations: u32, salt: [u8; 16], hash: [u8; 32]) -> Hashed {
        Hashed { iterations, salt, hash, verified: OnceLock::new() }
    }

    /// True if `password` is the one a request proved before (a digest, no
    /// derivation).
    pub fn verify_remembered(&self, password: &str) -> bool {
        self.verified.get().is_some_and(|v| super::token::same(v, &self.quick(password)))
    }

    /// True if `password` is this user's: remembered, or by derivation.
    pub fn verify(&self, password: &str) -> bool {
        if self.verify_remembered(password) {
            return true;
        }
        let ok =
            pbkdf2::verify(ALGORITHM, rounds(self.iterations), &self.salt, password.as_bytes(), &self.hash).is_ok();
        if ok {
            let _ = self.verified.set(self.quick(password));
        }
        ok
    }

    fn quick(&self, password: &str) -> [u8; 32] {
        let mut input = self.salt.to_vec();
        input.extend_from_slice(password.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(digest(&SHA256, &input).as_ref());
        out
    }
}

/// The derivation an unknown user's attempt pays, so it takes as long as a
/// known user's wrong password.
pub fn waste_time(password: &str) {
    let mut out = [0u8; 32];
    pbkdf2::derive(ALGORITHM, rounds(ITERATIONS), &[0u8; 16], password.as_bytes(), &mut out);
}

fn rounds(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_and_others_do_not() {
        let h = Hashed::new("correct horse").unwrap();
        assert!(!h.verify("correct hors"));
        assert!(h.verify("correct horse"));
        assert!(h.verify("correct horse"), "again, from the remembered digest");
        assert!(!h.verify("wrong password"));
        let again = Hashed::new("correct horse").unwrap();
        assert_ne!(again.salt, h.salt, "salted");
        assert_ne!(again.hash, h.hash);
        assert!(Hashed::new("short").unwrap_err().to_string().contains("8-1024"));
    }
}
