//! The browser IDE's assets, embedded in the binary and served at `/` (the page) and
//! `/ide/{file}` (its CSS, JS, editor bundle and icon). It owns nothing else: the IDE is a
//! client of the control API (`/api/v1`) like the CLI, and holds no server-side logic.
//!
//! Why `include_bytes!` and no embedding crate: five files, known at compile time, need no
//! directory walking or glob; a fresh clone builds with cargo alone because the editor
//! bundle (`assets/editor.js`, built from `web/` with esbuild) is committed, and
//! `web/build.mjs --check` (run by test.sh) fails when it drifts from its sources.
//!
//! Caching: asset URLs carry a hash of their content (`/ide/app.3f9c….js`), substituted
//! into the page and into `app.js` once at start, so they are served `immutable` for a year;
//! the page itself is `no-cache` with a strong ETag. Every asset is gzipped once at start,
//! not per request, and sent compressed to clients that accept gzip.

#![forbid(unsafe_code)]

use axum::{
    Router,
    body::{Body, Bytes},
    extract::Path,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use sha2::{Digest, Sha256};
use std::{collections::HashMap, io::Write, sync::LazyLock};

/// Source files, in substitution order: each file may name those before it as
/// `{{name}}`, which becomes that file's hashed URL.
const SOURCES: &[(&str, &str, &[u8])] = &[
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("../assets/favicon.svg"),
    ),
    (
        "editor.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/editor.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/app.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/app.js"),
    ),
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../assets/index.html"),
    ),
];

/// The page's security policy: scripts and styles only from this server (CodeMirror
/// writes its styles into `<style>` elements, hence `'unsafe-inline'` for styles only); no
/// framing, so another site cannot overlay the page where keys are typed.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

pub struct Asset {
    /// The URL it is served at (`/` for the page).
    pub url: String,
    pub media_type: &'static str,
    /// Shared, so a response costs a reference count, not a copy of the file.
    pub body: Bytes,
    pub gzip: Bytes,
    pub etag: String,
}

pub struct Assets {
    pub page: Asset,
    /// By file name under `/ide/` (hashed name).
    pub files: HashMap<String, Asset>,
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).expect("gzip into memory");
    e.finish().expect("gzip into memory")
}

fn build() -> Assets {
    let mut urls: Vec<(String, String)> = Vec::new();
    let mut files = HashMap::new();
    let mut page = None;
    for &(name, media_type, raw) in SOURCES {
        let mut body = raw.to_vec();
        if media_type.starts_with("text/") {
            let mut text = String::from_utf8(body).expect("assets are UTF-8");
            for (n, url) in &urls {
                text = text.replace(&format!("{{{{{n}}}}}"), url);
            }
            body = text.into_bytes();
        }
        let hash = hex::encode(&Sha256::digest(&body)[..8]);
        let etag = format!("\"{hash}\"");
        let gz = Bytes::from(gzip(&body));
        let body = Bytes::from(body);
        if name == "index.html" {
            page = Some(Asset {
                url: "/".into(),
                media_type,
                body,
                gzip: gz,
                etag,
            });
            continue;
        }
        let (stem, ext) = name
            .rsplit_once('.')
            .expect("asset names have an extension");
        let file = format!("{stem}.{hash}.{ext}");
        let url = format!("/ide/{file}");
        urls.push((name.to_string(), url.clone()));
        files.insert(
            file,
            Asset {
                url,
                media_type,
                body,
                gzip: gz,
                etag,
            },
        );
    }
    Assets {
        page: page.expect("index.html is an asset"),
        files,
    }
}

/// The assets, built (substituted, hashed, gzipped) on first use.
pub fn assets() -> &'static Assets {
    static ASSETS: LazyLock<Assets> = LazyLock::new(build);
    &ASSETS
}

/// `GET /` and `GET /ide/{file}`.
pub fn router() -> Router {
    // Build now rather than on the first request, so the first page load is not slower.
    let _ = assets();
    Router::new()
        .route("/", get(page))
        .route("/ide/{file}", get(file))
}

async fn page(headers: HeaderMap) -> Response {
    serve(&assets().page, &headers, "no-cache")
}

async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match assets().files.get(&name) {
        Some(a) => serve(a, &headers, "public, max-age=31536000, immutable"),
        // An old page asking for an asset of an earlier build: plain 404, and the
        // page's no-cache makes the next load fetch current URLs.
        None => (StatusCode::NOT_FOUND, "no such IDE asset; reload the page").into_response(),
    }
}

fn serve(a: &Asset, headers: &HeaderMap, cache: &'static str) -> Response {
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == a.etag));
    let gz = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let mut res = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else if gz {
        let mut r = Body::from(a.gzip.clone()).into_response();
        r.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        r
    } else {
        Body::from(a.body.clone()).into_response()
    };
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(a.media_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&a.etag).expect("hex etag"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if a.url == "/" {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::to_bytes;
    use http::Request;
    use tower::ServiceExt;

    async fn get(uri: &str, headers: &[(&str, &str)]) -> Response {
        let mut req = Request::get(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        router()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    #[test]
    fn every_placeholder_is_replaced_by_a_served_url() {
        let a = assets();
        let page = String::from_utf8(a.page.body.to_vec()).unwrap();
        let app = a
            .files
            .values()
            .find(|f| f.url.ends_with(".js") && f.url.contains("/app."))
            .unwrap();
        let app_js = String::from_utf8(app.body.to_vec()).unwrap();
        for text in [&page, &app_js] {
            assert!(!text.contains("{{"), "an unreplaced placeholder");
        }
        for f in a.files.values().filter(|f| !f.url.contains("/editor.")) {
            assert!(
                page.contains(&f.url),
                "{} is not referenced by the page",
                f.url
            );
        }
        let editor = a
            .files
            .values()
            .find(|f| f.url.contains("/editor."))
            .unwrap();
        assert!(
            app_js.contains(&editor.url),
            "app.js must import the hashed editor URL"
        );
    }

    /// The issue's budget: the first load (page, CSS, app, icon; not the editor) is at most
    /// 300 KB compressed.
    #[test]
    fn first_load_without_the_editor_is_under_300_kb_gzipped() {
        let a = assets();
        let total: usize = a.page.gzip.len()
            + a.files
                .values()
                .filter(|f| !f.url.contains("/editor."))
                .map(|f| f.gzip.len())
                .sum::<usize>();
        println!(
            "first load: {total} bytes gzipped (editor: {} more)",
            a.files
                .values()
                .find(|f| f.url.contains("/editor."))
                .unwrap()
                .gzip
                .len()
        );
        assert!(total <= 300 * 1024, "first load is {total} bytes gzipped");
    }

    #[tokio::test]
    async fn page_and_assets_are_served_compressed_cached_and_revalidated() {
        let res = get("/", &[("accept-encoding", "gzip, br")]).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-encoding"], "gzip");
        assert_eq!(res.headers()["cache-control"], "no-cache");
        assert!(
            res.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
        let etag = res.headers()["etag"].to_str().unwrap().to_string();
        let res = get("/", &[("if-none-match", &etag)]).await;
        assert_eq!(res.status(), 304);

        let app = assets()
            .files
            .values()
            .find(|f| f.url.contains("/app.") && f.url.ends_with(".js"))
            .unwrap();
        let res = get(&app.url, &[]).await;
        assert_eq!(res.status(), 200);
        assert!(
            res.headers()["cache-control"]
                .to_str()
                .unwrap()
                .contains("immutable")
        );
        assert_eq!(
            res.headers()["content-type"],
            "text/javascript; charset=utf-8"
        );
        assert!(res.headers().get("content-encoding").is_none());
        let body = to_bytes(res.into_body(), usize::MAX).await.unwrap();
        assert_eq!(&body[..], &app.body[..]);

        assert_eq!(get("/ide/app.0000.js", &[]).await.status(), 404);
    }
}
