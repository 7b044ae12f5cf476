//! API keys. A key looks like `sk_<prefix>_<secret>`: the 10-character prefix is stored in
//! clear to find the row, the whole key only as a SHA-256 hash. Keys are 190 bits of
//! randomness, so a fast hash is right here (a slow KDF is for low-entropy passwords and
//! would put milliseconds on every BI request).
//!
//! Secret feed links (`fl_<prefix>_<secret>`) are made and stored the same way: a link is
//! a key that opens one feed, carried in the URL path by tools that cannot send headers.
//!
//! For the PostgreSQL endpoint's SCRAM-SHA-256 logins, a key made through the API also
//! gets a SCRAM verifier ([`ScramVerifier`], RFC 5802/7677), stored in PostgreSQL's own
//! `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` form. Like the hash it
//! cannot be turned back into the key, and it does not let its holder log in either.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
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

/// PostgreSQL's default (`scram_iterations`). Keys have 190 random bits, so the count is
/// not what protects them; it is what every client accepts and expects.
pub const SCRAM_ITERATIONS: u32 = 4096;

/// A SCRAM-SHA-256 verifier of a key: what the server needs to check a client's proof
/// and to prove itself to the client, without the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

/// `Hi(password, salt, i)` of RFC 5802: PBKDF2-HMAC-SHA-256 with one output block.
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    let mut first = salt.to_vec();
    first.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac_sha256(password, &first);
    let mut out = u.clone();
    for _ in 1..iterations {
        u = hmac_sha256(password, &u);
        out.iter_mut().zip(&u).for_each(|(o, x)| *o ^= x);
    }
    out
}

impl ScramVerifier {
    /// A verifier of `secret` with a new random 16-byte salt.
    pub fn generate(secret: &str) -> Self {
        let salt: [u8; 16] = rand::rng().random();
        Self::derive(secret, &salt, SCRAM_ITERATIONS)
    }

    /// The verifier of `secret` for this salt and iteration count. SASLprep leaves keys
    /// as they are (they are printable ASCII without spaces), so none is applied.
    pub fn derive(secret: &str, salt: &[u8], iterations: u32) -> Self {
        let salted = hi(secret.as_bytes(), salt, iterations.max(1));
        let client_key = hmac_sha256(&salted, b"Client Key");
        ScramVerifier {
            iterations: iterations.max(1),
            salt: salt.to_vec(),
            stored_key: Sha256::digest(&client_key).to_vec(),
            server_key: hmac_sha256(&salted, b"Server Key"),
        }
    }

    /// Reads PostgreSQL's `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix("SCRAM-SHA-256$")?;
        let (params, keys) = rest.split_once('$')?;
        let (iterations, salt) = params.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        let v = ScramVerifier {
            iterations: iterations.parse().ok().filter(|&i| i > 0)?,
            salt: B64.decode(salt).ok()?,
            stored_key: B64.decode(stored).ok()?,
            server_key: B64.decode(server).ok()?,
        };
        (v.stored_key.len() == 32 && v.server_key.len() == 32).then_some(v)
    }

    /// Checks a client's proof for `auth_message` (client-first-message-bare,
    /// server-first-message and client-final-message-without-proof, joined by commas).
    /// On success, the server signature the client checks in turn.
    pub fn verify(&self, auth_message: &[u8], proof: &[u8]) -> Option<Vec<u8>> {
        if proof.len() != 32 {
            return None;
        }
        let signature = hmac_sha256(&self.stored_key, auth_message);
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
        let stored = Sha256::digest(&client_key);
        let same = stored
            .iter()
            .zip(&self.stored_key)
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0;
        same.then(|| hmac_sha256(&self.server_key, auth_message))
    }
}

impl std::fmt::Display for ScramVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(&self.stored_key),
            B64.encode(&self.server_key)
        )
    }
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

    /// RFC 7677's example exchange (user "user", password "pencil").
    #[test]
    fn scram_verifier_checks_rfc_7677_example() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let v = ScramVerifier::derive("pencil", &salt, 4096);
        let bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let final_bare = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let auth = format!("{bare},{server_first},{final_bare}");
        let proof = B64
            .decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        let signature = v.verify(auth.as_bytes(), &proof).expect("proof accepted");
        assert_eq!(
            B64.encode(signature),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        let mut bad = proof.clone();
        bad[0] ^= 1;
        assert_eq!(v.verify(auth.as_bytes(), &bad), None);
        assert_eq!(v.verify(b"another message", &proof), None);
        // PostgreSQL's text form, read back.
        let text = v.to_string();
        assert!(
            text.starts_with("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"),
            "{text}"
        );
        assert_eq!(ScramVerifier::parse(&text), Some(v));
        assert_eq!(ScramVerifier::parse("SCRAM-SHA-256$0:AA==$AA==:AA=="), None);
        assert_eq!(ScramVerifier::parse("md5abc"), None);
    }

    #[test]
    fn generated_verifiers_are_salted() {
        let k = generate();
        let (a, b) = (
            ScramVerifier::generate(&k.secret),
            ScramVerifier::generate(&k.secret),
        );
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.stored_key, b.stored_key);
        assert_eq!(ScramVerifier::derive(&k.secret, &a.salt, a.iterations), a);
    }
}
