//! SCRAM-SHA-256 (RFC 5802/7677) against a key's stored verifier.
//!
//! pgwire's `ScramAuth` checks a proof by recomputing it from the *salted password*
//! (`AuthSource::get_password`), which is a login credential in itself; Sluice stores
//! only PostgreSQL's verifier (StoredKey and ServerKey), from which a proof is checked
//! the other way round (`ClientKey = proof XOR HMAC(StoredKey, AuthMessage)`, then
//! `H(ClientKey) == StoredKey`). So pgwire carries the messages (`Authentication::SASL`,
//! `SASLContinue`, `SASLFinal`, the client's `SASLInitialResponse`/`SASLResponse`) and
//! this module reads and writes their SCRAM text; the cryptography is
//! `sluice_core::keys::ScramVerifier`.
//!
//! Channel binding (`SCRAM-SHA-256-PLUS`) is not offered; a client that supports it gets
//! `y` accepted (it saw the server does not), a client that insists on it (`p=`) is
//! refused.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rand::Rng;
use sluice_core::keys::ScramVerifier;

pub const MECHANISM: &str = "SCRAM-SHA-256";

/// Why an exchange failed: a malformed message (the protocol's fault) or a wrong proof
/// (the password's).
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    Malformed(String),
    WrongProof,
}

/// The server's side after its first message, waiting for the client's final message.
#[derive(Debug)]
pub struct Exchange {
    verifier: ScramVerifier,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

fn malformed(what: &str) -> Failure {
    Failure::Malformed(format!("malformed SCRAM message: {what}"))
}

impl Exchange {
    /// Reads the client-first-message and answers with the server-first-message.
    pub fn start(verifier: ScramVerifier, client_first: &[u8]) -> Result<(Self, String), Failure> {
        let mut server_nonce = [0u8; 18];
        rand::rng().fill(&mut server_nonce);
        Self::start_with_nonce(verifier, client_first, &B64.encode(server_nonce))
    }

    fn start_with_nonce(
        verifier: ScramVerifier,
        client_first: &[u8],
        server_nonce: &str,
    ) -> Result<(Self, String), Failure> {
        let text = std::str::from_utf8(client_first).map_err(|_| malformed("not UTF-8"))?;
        // gs2-header = gs2-cbind-flag "," [ authzid ] ","
        let (flag, rest) = text
            .split_once(',')
            .ok_or_else(|| malformed("no GS2 header"))?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => {
                return Err(Failure::Malformed(
                    "channel binding (SCRAM-SHA-256-PLUS) is not offered by this server: connect with channel_binding=prefer or disable".into(),
                ));
            }
            _ => return Err(malformed("unknown channel-binding flag")),
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or_else(|| malformed("no GS2 header"))?;
        if !authzid.is_empty() && !authzid.starts_with("a=") {
            return Err(malformed("bad authzid"));
        }
        let gs2_header = format!("{flag},{authzid},");
        // client-first-message-bare = [reserved-mext ","] username "," nonce ["," extensions]
        let mut parts = bare.split(',');
        let mut part = parts.next().ok_or_else(|| malformed("empty message"))?;
        if part.starts_with("m=") {
            return Err(malformed("mandatory extensions are not supported"));
        }
        if !part.starts_with("n=") {
            return Err(malformed("no user name attribute"));
        }
        part = parts.next().ok_or_else(|| malformed("no nonce"))?;
        let client_nonce = part
            .strip_prefix("r=")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| malformed("no nonce"))?;
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&verifier.salt),
            verifier.iterations
        );
        Ok((
            Exchange {
                verifier,
                gs2_header,
                client_first_bare: bare.to_string(),
                server_first: server_first.clone(),
                nonce,
            },
            server_first,
        ))
    }

    /// Checks the client-final-message; on success, the server-final-message.
    pub fn finish(self, client_final: &[u8]) -> Result<String, Failure> {
        let text = std::str::from_utf8(client_final).map_err(|_| malformed("not UTF-8"))?;
        // client-final-message = channel-binding "," nonce ["," extensions] "," proof
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or_else(|| malformed("no proof"))?;
        let mut parts = without_proof.split(',');
        let binding = parts
            .next()
            .and_then(|p| p.strip_prefix("c="))
            .ok_or_else(|| malformed("no channel binding"))?;
        if binding != B64.encode(&self.gs2_header) {
            return Err(malformed("channel binding does not match the GS2 header"));
        }
        let nonce = parts
            .next()
            .and_then(|p| p.strip_prefix("r="))
            .ok_or_else(|| malformed("no nonce"))?;
        if nonce != self.nonce {
            return Err(malformed("nonce does not match"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| malformed("proof is not base64"))?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let signature = self
            .verifier
            .verify(auth_message.as_bytes(), &proof)
            .ok_or(Failure::WrongProof)?;
        Ok(format!("v={}", B64.encode(signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's example, through the message parsing.
    #[test]
    fn rfc_7677_exchange() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let verifier = ScramVerifier::derive("pencil", &salt, 4096);
        let (ex, server_first) = Exchange::start_with_nonce(
            verifier.clone(),
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        )
        .unwrap();
        assert_eq!(
            server_first,
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        );
        let client_final = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(
            ex.finish(client_final.as_bytes()).unwrap(),
            "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );

        // The same messages against another password's verifier: a wrong proof.
        let other = ScramVerifier::derive("pencils", &salt, 4096);
        let (ex, _) = Exchange::start_with_nonce(
            other,
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        )
        .unwrap();
        assert_eq!(ex.finish(client_final.as_bytes()), Err(Failure::WrongProof));

        // A replayed final message with another nonce, or another binding, is refused.
        let (ex, _) =
            Exchange::start(verifier.clone(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
        assert!(matches!(
            ex.finish(client_final.as_bytes()),
            Err(Failure::Malformed(_))
        ));
        let (ex, _) = Exchange::start_with_nonce(
            verifier.clone(),
            b"y,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        )
        .unwrap();
        assert!(matches!(
            ex.finish(client_final.as_bytes()),
            Err(Failure::Malformed(_))
        ));
        assert!(matches!(
            Exchange::start(verifier, b"p=tls-server-end-point,,n=,r=abc"),
            Err(Failure::Malformed(m)) if m.contains("channel binding")
        ));
    }
}
