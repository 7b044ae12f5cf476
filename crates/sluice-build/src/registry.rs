//! A small client of the OCI distribution API: blobs (exists, get, mount, monolithic upload)
//! and manifests (get, put), with Basic credentials from a Docker `config.json` and the
//! Bearer token challenge that most registries answer 401 with.

use std::collections::BTreeMap;

use base64::Engine;
use reqwest::{Method, RequestBuilder, Response, StatusCode, header};

/// `host[:port]/repository:tag` (or `@sha256:...`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    /// A tag or a digest.
    pub reference: String,
}

impl std::str::FromStr for ImageRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, reference) = if let Some((n, d)) = s.split_once('@') {
            (n, d.to_string())
        } else {
            match s.rsplit_once(':') {
                Some((n, t)) if !t.contains('/') => (n, t.to_string()),
                _ => (s, "latest".to_string()),
            }
        };
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ if name.contains('/') => ("registry-1.docker.io".to_string(), name.to_string()),
            _ => (
                "registry-1.docker.io".to_string(),
                format!("library/{name}"),
            ),
        };
        if repository.is_empty() || reference.is_empty() {
            return Err(format!(
                "{s:?} is not an image reference (host/repository:tag)"
            ));
        }
        Ok(ImageRef {
            registry,
            repository,
            reference,
        })
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sep = if self.reference.starts_with("sha256:") {
            '@'
        } else {
            ':'
        };
        write!(
            f,
            "{}/{}{}{}",
            self.registry, self.repository, sep, self.reference
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("registry {0}: {1}")]
    Http(String, #[source] reqwest::Error),
    #[error("{method} {url}: {status} {body}")]
    Status {
        method: String,
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("registry: {0}")]
    Protocol(String),
    #[error(
        "{method} {url}: {status}: the registry refused the credentials, or wants some: put them in $DOCKER_CONFIG/config.json (`auths.<host>`, as `docker login` writes it; in a cluster, the dockerconfigjson Secret the operator mounts, `operator.registrySecret` in the chart)"
    )]
    Unauthorized {
        method: String,
        url: String,
        status: StatusCode,
    },
}

/// Manifest media types the builder reads and writes.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// One registry host.
pub struct Registry {
    http: reqwest::Client,
    base: String,
    basic: Option<String>,
    token: tokio::sync::Mutex<Option<String>>,
}

impl Registry {
    /// `plain_http` for a registry without TLS (loopback tests, in-cluster registries).
    pub fn new(host: &str, plain_http: bool, basic: Option<String>) -> Result<Registry, Error> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("sluice-build/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Http(host.into(), e))?;
        let scheme = if plain_http { "http" } else { "https" };
        Ok(Registry {
            http,
            base: format!("{scheme}://{host}"),
            basic,
            token: Default::default(),
        })
    }

    /// Send a request, answering one Bearer challenge if the registry asks for a token.
    async fn send(
        &self,
        method: Method,
        path: &str,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, Error> {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        for attempt in 0..2 {
            let mut req = build(self.http.request(method.clone(), &url));
            if let Some(t) = self.token.lock().await.as_ref() {
                req = req.bearer_auth(t);
            } else if let Some(b) = &self.basic {
                req = req.header(header::AUTHORIZATION, format!("Basic {b}"));
            }
            let resp = req
                .send()
                .await
                .map_err(|e| Error::Http(self.base.clone(), e))?;
            if resp.status() == StatusCode::UNAUTHORIZED && attempt == 0 {
                let challenge = resp
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                if let Some(params) = challenge.strip_prefix("Bearer ") {
                    *self.token.lock().await = Some(self.fetch_token(params).await?);
                    continue;
                }
            }
            return Ok(resp);
        }
        unreachable!("the loop returns on its second attempt")
    }

    async fn fetch_token(&self, params: &str) -> Result<String, Error> {
        let p: BTreeMap<String, String> = params
            .split(',')
            .filter_map(|kv| kv.trim().split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            .collect();
        let realm = p
            .get("realm")
            .ok_or_else(|| Error::Protocol("Bearer challenge without realm".into()))?;
        let mut req = self
            .http
            .get(realm)
            .query(&p.iter().filter(|(k, _)| *k != "realm").collect::<Vec<_>>());
        if let Some(b) = &self.basic {
            req = req.header(header::AUTHORIZATION, format!("Basic {b}"));
        }
        let resp = check(
            req.send()
                .await
                .map_err(|e| Error::Http(realm.clone(), e))?,
            "GET",
            realm,
        )
        .await?;
        let v: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| Error::Http(realm.clone(), e))?;
        v["token"]
            .as_str()
            .or(v["access_token"].as_str())
            .map(String::from)
            .ok_or_else(|| Error::Protocol("token response without a token".into()))
    }

    pub async fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool, Error> {
        let resp = self
            .send(Method::HEAD, &format!("/v2/{repo}/blobs/{digest}"), |r| r)
            .await?;
        Ok(resp.status().is_success())
    }

    pub async fn get_blob(&self, repo: &str, digest: &str) -> Result<Vec<u8>, Error> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let resp = check(self.send(Method::GET, &path, |r| r).await?, "GET", &path).await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Error::Http(self.base.clone(), e))?;
        if crate::layer::sha256(&bytes) != digest {
            return Err(Error::Protocol(format!(
                "blob {digest} arrived with another digest"
            )));
        }
        Ok(bytes.to_vec())
    }

    /// Ask the registry to link a blob from another repository; `false` if it would not.
    pub async fn mount_blob(&self, repo: &str, digest: &str, from: &str) -> Result<bool, Error> {
        let path = format!("/v2/{repo}/blobs/uploads/?mount={digest}&from={from}");
        let resp = self.send(Method::POST, &path, |r| r).await?;
        Ok(resp.status() == StatusCode::CREATED)
    }

    /// Upload a blob in one request (POST for a location, then PUT with the digest).
    pub async fn put_blob(&self, repo: &str, digest: &str, bytes: &[u8]) -> Result<(), Error> {
        let path = format!("/v2/{repo}/blobs/uploads/");
        let resp = check(self.send(Method::POST, &path, |r| r).await?, "POST", &path).await?;
        let location = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::Protocol("upload without a Location".into()))?
            .to_string();
        let location = if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            location
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{sep}digest={digest}");
        let body = bytes.to_vec();
        let resp = self
            .send(Method::PUT, &url, |r| {
                r.header(header::CONTENT_TYPE, "application/octet-stream")
                    .body(body.clone())
            })
            .await?;
        check(resp, "PUT", &url).await?;
        Ok(())
    }

    /// A manifest: its bytes, media type and digest.
    pub async fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<(Vec<u8>, String, String)>, Error> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let accept = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST].join(", ");
        let resp = self
            .send(Method::GET, &path, |r| {
                r.header(header::ACCEPT, accept.clone())
            })
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = check(resp, "GET", &path).await?;
        let media = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(OCI_MANIFEST)
            .to_string();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Error::Http(self.base.clone(), e))?
            .to_vec();
        let digest = crate::layer::sha256(&bytes);
        Ok(Some((bytes, media, digest)))
    }

    /// Put a manifest under a tag; returns its digest.
    pub async fn put_manifest(
        &self,
        repo: &str,
        tag: &str,
        media: &str,
        bytes: &[u8],
    ) -> Result<String, Error> {
        let path = format!("/v2/{repo}/manifests/{tag}");
        let body = bytes.to_vec();
        let media = media.to_string();
        let resp = self
            .send(Method::PUT, &path, |r| {
                r.header(header::CONTENT_TYPE, media.clone())
                    .body(body.clone())
            })
            .await?;
        check(resp, "PUT", &path).await?;
        Ok(crate::layer::sha256(bytes))
    }
}

async fn check(resp: Response, method: &str, url: &str) -> Result<Response, Error> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return Err(Error::Unauthorized {
            method: method.into(),
            url: url.into(),
            status,
        });
    }
    let body = resp.text().await.unwrap_or_default();
    Err(Error::Status {
        method: method.into(),
        url: url.into(),
        status,
        body: body.chars().take(500).collect(),
    })
}

/// Basic credentials for `host` from a Docker `config.json` (`auths.<host>.auth`, or
/// username/password).
pub fn basic_from_docker_config(config: &serde_json::Value, host: &str) -> Option<String> {
    let auths = config.get("auths")?.as_object()?;
    let entry = auths
        .iter()
        .find(|(k, _)| {
            let k = k
                .trim_start_matches("https://")
                .trim_start_matches("http://");
            k.split('/').next() == Some(host)
        })?
        .1;
    if let Some(a) = entry.get("auth").and_then(|a| a.as_str()) {
        return Some(a.to_string());
    }
    let user = entry.get("username")?.as_str()?;
    let pass = entry.get("password")?.as_str()?;
    Some(base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references() {
        let r: ImageRef = "127.0.0.1:5000/sluice/team/sales:abc".parse().unwrap();
        assert_eq!(
            (
                r.registry.as_str(),
                r.repository.as_str(),
                r.reference.as_str()
            ),
            ("127.0.0.1:5000", "sluice/team/sales", "abc")
        );
        let r: ImageRef = "python:3.12-slim".parse().unwrap();
        assert_eq!(
            r.to_string(),
            "registry-1.docker.io/library/python:3.12-slim"
        );
        let r: ImageRef = "ghcr.io/sluice-dev/runtime".parse().unwrap();
        assert_eq!(r.reference, "latest");
        let r: ImageRef = "localhost/x@sha256:00".parse().unwrap();
        assert_eq!(r.to_string(), "localhost/x@sha256:00");
    }

    #[test]
    fn docker_config_credentials() {
        let c = serde_json::json!({"auths": {"https://reg.example.com": {"username": "u", "password": "p"}, "other:5000": {"auth": "YWJj"}}});
        assert_eq!(
            basic_from_docker_config(&c, "reg.example.com").as_deref(),
            Some("dTpw")
        );
        assert_eq!(
            basic_from_docker_config(&c, "other:5000").as_deref(),
            Some("YWJj")
        );
        assert_eq!(basic_from_docker_config(&c, "nope"), None);
    }
}
