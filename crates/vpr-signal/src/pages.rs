//! Join pages: the page that residents, officers and observers open from the
//! join link (`/join?token=...`), and its script and style sheet under
//! `/assets/`. The files live in `web/` and are compiled into the binary.
//!
//! The page reads the join token from its own URL and signs in over the
//! WebSocket join (`/ws`), so the server never looks at the token here.

use axum::extract::Path;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The join page.
const JOIN_HTML: &str = include_str!("../web/join.html");

/// Static assets by file name: content type and body.
const ASSETS: &[(&str, &str, &str)] = &[
    ("join.js", "text/javascript; charset=utf-8", include_str!("../web/join.js")),
    ("strings.js", "text/javascript; charset=utf-8", include_str!("../web/strings.js")),
    ("join.css", "text/css; charset=utf-8", include_str!("../web/join.css")),
];

/// Content Security Policy of the join page: its own scripts, styles and
/// WebSocket only, media from capture and peer connections, no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; media-src 'self' blob: mediastream:; img-src 'self' data:; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /join?token=...`: the join page. The token stays in the browser: the
/// page is not cached and sends no `Referer`, so the token does not leak into
/// caches or other sites' logs.
pub async fn join() -> Response {
    let mut response = (StatusCode::OK, JOIN_HTML).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(
        HeaderName::from_static("permissions-policy"),
        HeaderValue::from_static("camera=(self), microphone=(self), geolocation=()"),
    );
    response
}

/// `GET /assets/{file}`: a script or style sheet of the join page, or 404.
pub async fn asset(Path(file): Path<String>) -> Response {
    let Some((content_type, body)) = find_asset(&file) else {
        return (StatusCode::NOT_FOUND, "no such asset\n").into_response();
    };
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The names carry no version, so browsers must revalidate after an upgrade.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

/// Returns the content type and body of asset `file`.
fn find_asset(file: &str) -> Option<(&'static str, &'static str)> {
    ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .map(|(_, content_type, body)| (*content_type, *body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_found_by_exact_name() {
        assert_eq!(find_asset("join.js").map(|(kind, _)| kind), Some("text/javascript; charset=utf-8"));
        assert_eq!(find_asset("join.css").map(|(kind, _)| kind), Some("text/css; charset=utf-8"));
        assert!(find_asset("strings.js").is_some_and(|(_, body)| body.contains("fr:")));
        assert!(find_asset("../src/lib.rs").is_none());
        assert!(find_asset("JOIN.JS").is_none());
    }

    #[test]
    fn join_page_loads_its_assets() {
        for (name, _, _) in ASSETS {
            assert!(JOIN_HTML.contains(&format!("/assets/{name}")), "join.html does not load {name}");
        }
    }

    #[tokio::test]
    async fn join_page_is_not_cached() {
        let response = join().await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(response.headers()[header::REFERRER_POLICY], "no-referrer");
    }

    #[tokio::test]
    async fn unknown_asset_is_404() {
        let response = asset(Path("missing.js".to_owned())).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    }
}
