//! API keys: 256 random bits behind a recognisable prefix, so that secret scanners can find a
//! leaked key, stored only as a SHA-256 hash. A fast hash is enough: with 256 bits of entropy
//! there is nothing to brute-force, and authentication stays one indexed lookup.

use sha2::{Digest, Sha256};

/// Every key starts with this.
pub const KEY_PREFIX: &str = "lpscim_";

/// How many characters of a key are kept in clear to tell keys apart in listings.
const SHOWN: usize = KEY_PREFIX.len() + 6;

/// A freshly generated key: shown once, then only its hash and prefix remain.
#[derive(Debug)]
pub struct NewKey {
    pub key: String,
    pub prefix: String,
    pub hash: Vec<u8>,
}

/// Generates a key from the operating system's random source.
pub fn generate() -> Result<NewKey, getrandom::Error> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)?;
    let key = format!("{KEY_PREFIX}{}", hex::encode(secret));
    let prefix = key.chars().take(SHOWN).collect();
    let hash = hash(&key);
    Ok(NewKey { key, prefix, hash })
}

/// The stored hash of a presented key.
pub fn hash(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_random_and_hashed() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert!(a.key.starts_with(KEY_PREFIX));
        assert_eq!(a.key.len(), KEY_PREFIX.len() + 64);
        assert_ne!(a.key, b.key);
        assert_eq!(a.hash, hash(&a.key));
        assert!(a.key.starts_with(&a.prefix));
        assert!(a.prefix.len() < 16, "the prefix reveals almost nothing of the secret");
    }
}
