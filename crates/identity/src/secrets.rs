//! Random tokens and their digests. Tokens carry 256 random bits, so a SHA-256 digest is a safe
//! and fast lookup key; passwords, which carry little entropy, use argon2id instead.

pub use kernel::crypto::random_token;
use sha2::{Digest, Sha256};

pub fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Compares without an early exit, so timing does not reveal how much of a guess was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
