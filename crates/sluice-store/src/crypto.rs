//! Sealing of data-source configs at rest. The configs hold database passwords and tokens,
//! so the database (a file on a laptop, a backup of a PostgreSQL server) must never hold
//! them in clear: each row is sealed with ChaCha20-Poly1305 under the instance's master key,
//! with a fresh random nonce, and stored as `v1:<nonce>:<ciphertext>` (standard base64).
//!
//! The associated data binds a ciphertext to its row (the data-source name), so a config
//! copied onto another source's row by someone with write access to the database fails to
//! open instead of silently handing one source's credentials to another.

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use chacha20poly1305::{
    ChaCha20Poly1305, Key, Nonce,
    aead::{Aead, KeyInit, Payload},
};
use rand::Rng;

const VERSION: &str = "v1";
const NONCE_LEN: usize = 12;

#[derive(Clone)]
pub(crate) struct Sealer {
    cipher: ChaCha20Poly1305,
}

/// Why a sealed value could not be opened. The caller turns it into a message that names
/// the row; this layer does not know which row it is looking at.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// Not something [`Sealer::seal`] wrote (unknown version, bad base64, short nonce).
    Malformed(&'static str),
    /// Authentication failed: another master key, or the bytes were altered.
    WrongKeyOrTampered,
}

impl Sealer {
    pub(crate) fn new(secret: &[u8; 32]) -> Self {
        Sealer {
            cipher: ChaCha20Poly1305::new(Key::from_slice(secret)),
        }
    }

    pub(crate) fn seal(&self, plaintext: &[u8], aad: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        // ThreadRng is a CSPRNG seeded from the OS; a 96-bit random nonce per row is safe for
        // far more rows than a metadata store will ever seal under one key.
        rand::rng().fill(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            // Encryption only fails for inputs larger than ChaCha20 can address (256 GiB).
            .expect("a data-source config is far below the ChaCha20-Poly1305 size limit");
        format!("{VERSION}:{}:{}", B64.encode(nonce), B64.encode(ciphertext))
    }

    pub(crate) fn open(&self, sealed: &str, aad: &[u8]) -> Result<Vec<u8>, OpenError> {
        let mut parts = sealed.splitn(3, ':');
        let (Some(version), Some(nonce), Some(ciphertext)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(OpenError::Malformed("expected 'v1:<nonce>:<ciphertext>'"));
        };
        if version != VERSION {
            return Err(OpenError::Malformed("unknown format version"));
        }
        let nonce = B64
            .decode(nonce)
            .map_err(|_| OpenError::Malformed("nonce is not base64"))?;
        if nonce.len() != NONCE_LEN {
            return Err(OpenError::Malformed("nonce has the wrong length"));
        }
        let ciphertext = B64
            .decode(ciphertext)
            .map_err(|_| OpenError::Malformed("ciphertext is not base64"))?;
        self.cipher
            .decrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &ciphertext,
                    aad,
                },
            )
            .map_err(|_| OpenError::WrongKeyOrTampered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_a_fresh_nonce_each_time() {
        let s = Sealer::new(&[7; 32]);
        let a = s.seal(b"{\"url\":\"postgres://u:pw@h/db\"}", b"warehouse");
        let b = s.seal(b"{\"url\":\"postgres://u:pw@h/db\"}", b"warehouse");
        assert_ne!(
            a, b,
            "two seals of the same config must differ (random nonce)"
        );
        assert!(a.starts_with("v1:") && !a.contains("pw@"));
        assert_eq!(
            s.open(&a, b"warehouse").unwrap(),
            b"{\"url\":\"postgres://u:pw@h/db\"}"
        );
    }

    #[test]
    fn refuses_another_key_another_row_and_garbage() {
        let s = Sealer::new(&[7; 32]);
        let sealed = s.seal(b"secret", b"warehouse");
        assert_eq!(
            Sealer::new(&[8; 32]).open(&sealed, b"warehouse"),
            Err(OpenError::WrongKeyOrTampered)
        );
        assert_eq!(
            s.open(&sealed, b"other_source"),
            Err(OpenError::WrongKeyOrTampered)
        );
        assert!(matches!(
            s.open("v2:AAAA:AAAA", b"warehouse"),
            Err(OpenError::Malformed(_))
        ));
        assert!(matches!(
            s.open("plain json", b"warehouse"),
            Err(OpenError::Malformed(_))
        ));
    }
}
