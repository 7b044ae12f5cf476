//! API keys. A key looks like `sk_<prefix>_<secret>`: the 10-character prefix is stored in
//! clear to find the row, the whole key only as a SHA-256 hash. Keys are 190 bits of
//! randomness, so a fast hash is right here (a slow KDF is for low-entropy passwords and
//! would put milliseconds on every BI request).
//!
//! Secret feed links (`fl_<prefix>_<secret>`) are made and stored the same way: a link is
//! a key that opens one feed, carried in the URL path by tools that cannot send headers.

use rand::Rng;
use sha2::{Digest, Sha256};

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

pub struct NewKey {
    /// The full key, shown to the user once.
    pub secret: String,
    pub prefix: String,
    pub hash: String,
}

fn random_string(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

pub fn generate() -> NewKey {
    generate_with("sk")
}

/// A new secret feed link token, `fl_<prefix>_<secret>`.
pub fn generate_link() -> NewKey {
    generate_with(LINK_TAG)
}

const LINK_TAG: &str = "fl";

fn generate_with(tag: &str) -> NewKey {
    let prefix = random_string(10);
    let secret = format!("{tag}_{prefix}_{}", random_string(32));
    let hash = hash(&secret);
    NewKey {
        secret,
        prefix,
        hash,
    }
}

pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The lookup prefix of a presented key. Keys not made by [`generate`] (an admin key set
/// with `SLUICE_ADMIN_KEY`) use the first 10 characters of their hash as prefix.
pub fn prefix_of(secret: &str) -> String {
    if let Some((p, s)) = secret
        .strip_prefix("sk_")
        .and_then(|rest| rest.split_once('_'))
        && p.len() == 10
        && !s.is_empty()
    {
        return p.to_string();
    }
    hash(secret)[..10].to_string()
}

/// The lookup prefix of a presented feed link token, or `None` when the text is not
/// shaped like one (then it cannot be a link, and no lookup is needed).
pub fn link_prefix_of(token: &str) -> Option<String> {
    let (p, s) = token
        .strip_prefix(LINK_TAG)?
        .strip_prefix('_')?
        .split_once('_')?;
    let ok = |t: &str| t.bytes().all(|b| ALPHABET.contains(&b));
    (p.len() == 10 && s.len() == 32 && ok(p) && ok(s)).then(|| p.to_string())
}

/// Constant-time comparison of two hex hashes.
pub fn hashes_equal(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn generated_keys_carry_their_prefix_and_hash() {
        let k = generate();
        assert!(k.secret.starts_with("sk_"));
        assert_eq!(prefix_of(&k.secret), k.prefix);
        assert!(hashes_equal(&hash(&k.secret), &k.hash));
        assert_ne!(generate().secret, k.secret);
    }
    #[test]
    fn links_are_keys_with_their_own_tag() {
        let l = generate_link();
        assert!(l.secret.starts_with("fl_"), "{}", l.secret);
        assert_eq!(
            link_prefix_of(&l.secret).as_deref(),
            Some(l.prefix.as_str())
        );
        assert!(hashes_equal(&hash(&l.secret), &l.hash));
        // An API key is not a link, nor is anything malformed.
        assert_eq!(link_prefix_of(&generate().secret), None);
        assert_eq!(link_prefix_of("fl_short_x"), None);
        assert_eq!(link_prefix_of(&l.secret.replace('_', "-")), None);
        assert_eq!(link_prefix_of(&format!("{}/", l.secret)), None);
    }
    #[test]
    fn custom_keys_get_a_hash_prefix() {
        let s = "a-custom-admin-key-of-at-least-32-chars!";
        assert_eq!(prefix_of(s), hash(s)[..10]);
    }
}
