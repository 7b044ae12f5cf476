//! TLS for the PostgreSQL endpoint. The password is a key sent in clear text, so it
//! must travel inside TLS off the machine: `sluice up` makes a self-signed certificate
//! in its data dir on first start; `sluice server` uses `pg-tls.crt` / `pg-tls.key` from
//! its data dir when an operator puts them there. Plain connections are accepted from
//! loopback only once TLS is on (see `session.rs`).

use anyhow::Context;
use datafusion_postgres::pgwire::tokio::tokio_rustls::rustls;
use std::path::Path;
use std::sync::Arc;

pub const CERT_FILE: &str = "pg-tls.crt";
pub const KEY_FILE: &str = "pg-tls.key";

/// The acceptor for the certificate in `dir`, made there first when `create` is set and
/// there is none. `None` when there is no certificate and none may be made.
pub fn acceptor(dir: &Path, create: bool) -> anyhow::Result<Option<crate::TlsAcceptor>> {
    let cert_path = dir.join(CERT_FILE);
    let key_path = dir.join(KEY_FILE);
    if !cert_path.exists() || !key_path.exists() {
        if !create {
            return Ok(None);
        }
        let names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        let made = rcgen::generate_simple_self_signed(names)
            .context("cannot make a self-signed certificate for the PostgreSQL endpoint")?;
        write_private(&key_path, &made.key_pair.serialize_pem())?;
        std::fs::write(&cert_path, made.cert.pem())
            .with_context(|| format!("cannot write {}", cert_path.display()))?;
        tracing::info!(
            "made a self-signed certificate for the PostgreSQL endpoint: {}",
            cert_path.display()
        );
    }
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(&cert_path)
            .with_context(|| format!("cannot read {}", cert_path.display()))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .with_context(|| format!("{} is not a PEM certificate chain", cert_path.display()))?;
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(&key_path)
            .with_context(|| format!("cannot read {}", key_path.display()))?,
    ))
    .ok()
    .flatten()
    .with_context(|| format!("{} holds no PEM private key", key_path.display()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("the PostgreSQL endpoint's certificate and key do not match")?;
    // PostgreSQL 17 clients may start TLS directly (sslnegotiation=direct) with this ALPN.
    cfg.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Some(crate::TlsAcceptor::from(Arc::new(cfg))))
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}
