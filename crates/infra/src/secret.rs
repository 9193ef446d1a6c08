//! Shared secrets that callers present (service tokens, the admin and operator tokens): kept only
//! as a SHA-256 digest once read, compared in constant time, and refused at start-up when too
//! short to be a secret.

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The fewest bytes a configured token may have: 32 bytes of randomness, as
/// `head -c 32 /dev/urandom | base64` or `openssl rand -hex 16` make.
pub const MIN_TOKEN_BYTES: usize = 32;

/// A configured token, of which only the digest is kept.
#[derive(Clone)]
pub struct Token {
    digest: [u8; 32],
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token([redacted])")
    }
}

/// A configured token is shorter than [`MIN_TOKEN_BYTES`].
#[derive(Debug, thiserror::Error)]
#[error(
    "{name} is {len} bytes long; a token must be at least {MIN_TOKEN_BYTES} (e.g. `head -c 32 /dev/urandom | base64`)"
)]
pub struct TooShort {
    pub name: &'static str,
    pub len: usize,
}

impl Token {
    /// Reads a configured token (`name` is its variable, for the error), refusing one shorter than
    /// [`MIN_TOKEN_BYTES`]. Surrounding whitespace (a newline from a mounted file) is not part of it.
    pub fn new(name: &'static str, secret: &SecretString) -> Result<Token, TooShort> {
        let text = secret.expose_secret().trim();
        if text.len() < MIN_TOKEN_BYTES {
            return Err(TooShort { name, len: text.len() });
        }
        Ok(Token { digest: Sha256::digest(text.as_bytes()).into() })
    }

    /// Whether `presented` is the token. Digests are compared, in constant time: neither the
    /// length nor any prefix of the token shows in the timing.
    pub fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        bool::from(self.digest.ct_eq(&digest))
    }

    /// Whether an `Authorization` header's value is `Bearer <the token>`.
    pub fn matches_bearer(&self, authorization: Option<&str>) -> bool {
        authorization.and_then(|v| v.strip_prefix("Bearer ")).is_some_and(|t| self.matches(t))
    }

    /// A value that changes when the token does and says nothing about it (a digest of the digest,
    /// under a label of its own): what a session records of the token that opened it.
    pub fn generation(&self) -> Vec<u8> {
        let mut h = Sha256::new();
        h.update(b"token-generation\0");
        h.update(self.digest);
        h.finalize()[..16].to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(s: &str) -> Result<Token, TooShort> {
        Token::new("TEST_TOKEN", &SecretString::from(s.to_owned()))
    }

    #[test]
    fn short_tokens_are_refused() {
        let e = token("0123456789abcdef0123456789abcde").unwrap_err();
        assert_eq!(e.len, 31);
        assert!(e.to_string().contains("TEST_TOKEN"));
        assert!(token("0123456789abcdef0123456789abcdef").is_ok());
        assert!(token("   0123456789abcdef   \n").is_err(), "whitespace does not count");
    }

    #[test]
    fn only_the_token_matches() {
        let t = token("0123456789abcdef0123456789abcdef").unwrap();
        assert!(t.matches("0123456789abcdef0123456789abcdef"));
        assert!(t.matches("0123456789abcdef0123456789abcdef\n"));
        assert!(!t.matches("0123456789abcdef0123456789abcdeF"));
        assert!(!t.matches(""));
        assert!(t.matches_bearer(Some("Bearer 0123456789abcdef0123456789abcdef")));
        assert!(!t.matches_bearer(Some("0123456789abcdef0123456789abcdef")));
        assert!(!t.matches_bearer(Some("Basic 0123456789abcdef0123456789abcdef")));
        assert!(!t.matches_bearer(None));
        assert!(!format!("{t:?}").contains("0123"));
    }

    #[test]
    fn generations_differ_by_token_and_hide_it() {
        let a = token("0123456789abcdef0123456789abcdef").unwrap();
        let b = token("0123456789abcdef0123456789abcdeX").unwrap();
        assert_eq!(a.generation(), a.generation());
        assert_ne!(a.generation(), b.generation());
        assert_ne!(&a.generation()[..], &a.digest[..16]);
    }
}
