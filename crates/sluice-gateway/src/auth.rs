//! Who is calling. A key may arrive as `Authorization: Bearer`, as the password of HTTP
//! Basic (what Excel, Tableau and Qlik send), as `X-API-Key`, or as `?api_key=` (for
//! tools that can only paste a URL). Verified keys are cached briefly so the hot path does
//! one SHA-256 and a map lookup instead of a database round trip; revocation through the
//! control API clears the cache at once.

use crate::state::Gateway;
use axum::http::{HeaderMap, header};
use base64::Engine;
use sluice_core::{Code, Error, Role, keys};
use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

/// The authenticated caller.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Principal {
    pub name: String,
    pub prefix: String,
    pub role: Role,
    /// `None` for platform admins.
    pub workspace: Option<String>,
}

impl Principal {
    /// Access to a workspace: other workspaces are invisible (404, not 403, so their
    /// names don't leak); a viewer may read but not write (403).
    pub fn authorize(&self, ws: &str, write: bool) -> Result<(), Error> {
        if self.role != Role::Admin && self.workspace.as_deref() != Some(ws) {
            return Err(Error::not_found(Code::WorkspaceNotFound, "workspace", ws));
        }
        if write && !self.role.can_write() {
            return Err(Error::new(
                Code::Forbidden,
                format!(
                    "key '{}' has role viewer in workspace '{ws}': this needs an editor or admin key",
                    self.name
                ),
            ));
        }
        Ok(())
    }

    pub fn require_admin(&self) -> Result<(), Error> {
        if self.role.is_admin() {
            Ok(())
        } else {
            Err(Error::new(
                Code::Forbidden,
                format!(
                    "key '{}' has role {}: this needs an admin key",
                    self.name, self.role
                ),
            ))
        }
    }

    /// Editors of the workspace (and admins) see Python tracebacks in errors.
    pub fn is_editor_of(&self, ws: &str) -> bool {
        self.role == Role::Admin || (self.role.can_write() && self.workspace.as_deref() == Some(ws))
    }
}

/// Pull the presented key out of a request, in order of preference.
pub fn presented_key(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let auth = auth.trim();
        if let Some(token) = auth
            .strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("bearer "))
        {
            return Some(token.trim().to_string());
        }
        if let Some(b64) = auth
            .strip_prefix("Basic ")
            .or_else(|| auth.strip_prefix("basic "))
        {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            // user:password; the user is free (tools insist on one), the password is the key.
            let (_, password) = text.split_once(':')?;
            return Some(password.to_string());
        }
    }
    if let Some(k) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(k.trim().to_string());
    }
    query_pairs(query)
        .into_iter()
        .find(|(k, _)| k == "api_key")
        .map(|(_, v)| v)
}

/// Parse a query string into ordered pairs (names may repeat, `+` is a space).
pub fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    q.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

pub(crate) const CACHE_TTL: Duration = Duration::from_secs(30);

/// Verified keys by hash. Only successes are cached: a wrong key always costs a lookup,
/// which is what we want for failed-login accounting later. Resolved secret feed links
/// (`links.rs`) live here too, under the same rules, cleared on their own.
#[derive(Default)]
pub struct KeyCache {
    entries: RwLock<HashMap<String, (Instant, Arc<Principal>)>>,
    pub(crate) links: crate::links::LinkCache,
}

impl KeyCache {
    pub fn clear(&self) {
        self.entries.write().expect("key cache lock").clear();
    }
}

impl Gateway {
    /// Authenticate a request: 401 `unauthenticated` when no key was sent, 401
    /// `invalid_key` when it is unknown or revoked.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Arc<Principal>, Error> {
        let Some(secret) = presented_key(headers, query) else {
            return Err(Error::new(
                Code::Unauthenticated,
                "no API key: send 'Authorization: Bearer <key>', HTTP Basic with the key as password, 'X-API-Key', or '?api_key='",
            ));
        };
        self.principal_for_key(&secret).await
    }

    /// The principal a key stands for: 401 `invalid_key` when it is unknown or revoked.
    /// Shared by every protocol that receives a key (HTTP headers, the PostgreSQL
    /// password).
    pub async fn principal_for_key(&self, secret: &str) -> Result<Arc<Principal>, Error> {
        let hash = keys::hash(secret);
        let cached = self
            .inner
            .keys
            .entries
            .read()
            .expect("key cache lock")
            .get(&hash)
            .cloned();
        if let Some((at, p)) = cached
            && at.elapsed() < CACHE_TTL
        {
            return Ok(p);
        }
        let prefix = keys::prefix_of(secret);
        let record = self.inner.store.key_by_prefix(&prefix).await?;
        let Some(record) = record.filter(|r| keys::hashes_equal(&r.hash, &hash)) else {
            return Err(Error::new(
                Code::InvalidKey,
                "the API key is not valid or was revoked: ask an admin for a key (sluice keys create)",
            ));
        };
        let principal = Arc::new(Principal {
            name: record.name.clone(),
            prefix: record.prefix.clone(),
            role: record.role,
            workspace: record.workspace.clone(),
        });
        let store = self.inner.store.clone();
        tokio::spawn(async move {
            let _ = store.touch_key(&record.prefix).await;
        });
        self.inner
            .keys
            .entries
            .write()
            .expect("key cache lock")
            .insert(hash, (Instant::now(), principal.clone()));
        Ok(principal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn key_is_found_in_every_place_tools_put_it() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer sk_a"),
        );
        assert_eq!(presented_key(&h, None).as_deref(), Some("sk_a"));
        let mut h = HeaderMap::new();
        let b64 = base64::engine::general_purpose::STANDARD.encode("tableau:sk_b:with:colons");
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {b64}")).unwrap(),
        );
        assert_eq!(presented_key(&h, None).as_deref(), Some("sk_b:with:colons"));
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("sk_c"));
        assert_eq!(presented_key(&h, None).as_deref(), Some("sk_c"));
        assert_eq!(
            presented_key(&HeaderMap::new(), Some("a=1&api_key=sk_d%2Bx")).as_deref(),
            Some("sk_d+x")
        );
        assert_eq!(presented_key(&HeaderMap::new(), Some("a=1")), None);
    }

    #[test]
    fn query_pairs_decode_and_keep_order() {
        let p = query_pairs(Some("region=EU&tags=a%2Cb&tags=c&q=a+b&bad=%zz"));
        assert_eq!(p[0], ("region".into(), "EU".into()));
        assert_eq!(p[1], ("tags".into(), "a,b".into()));
        assert_eq!(p[2], ("tags".into(), "c".into()));
        assert_eq!(p[3], ("q".into(), "a b".into()));
        assert_eq!(p[4], ("bad".into(), "%zz".into()));
    }

    fn p(role: Role, ws: Option<&str>) -> Principal {
        Principal {
            name: "k".into(),
            prefix: "p".into(),
            role,
            workspace: ws.map(str::to_string),
        }
    }

    #[test]
    fn workspace_isolation_and_roles() {
        assert!(p(Role::Admin, None).authorize("any", true).is_ok());
        assert_eq!(
            p(Role::Viewer, Some("a"))
                .authorize("b", false)
                .unwrap_err()
                .code,
            Code::WorkspaceNotFound
        );
        assert!(p(Role::Viewer, Some("a")).authorize("a", false).is_ok());
        assert_eq!(
            p(Role::Viewer, Some("a"))
                .authorize("a", true)
                .unwrap_err()
                .code,
            Code::Forbidden
        );
        assert!(p(Role::Editor, Some("a")).authorize("a", true).is_ok());
        assert!(p(Role::Editor, Some("a")).is_editor_of("a"));
        assert!(!p(Role::Viewer, Some("a")).is_editor_of("a"));
        assert_eq!(
            p(Role::Editor, Some("a")).require_admin().unwrap_err().code,
            Code::Forbidden
        );
    }
}
