//! `/ui`: the dashboard. One HTML shell, a script and a stylesheet, all
//! embedded in the binary (no CDN: it works offline), served without a key
//! because they hold no data. The page asks the key of whoever opens it,
//! keeps it in the tab's `sessionStorage` and calls the same `/v1` routes
//! as every client with it, so the dashboard can do exactly what the key
//! may do; with no cookie, no other site can make the browser act. A
//! strict Content-Security-Policy allows only these same-origin files: no
//! inline script, no third-party origin.
//!
//! Why no framework: every view is a table over JSON the API already
//! serves; a few hundred lines of plain JavaScript render them with
//! `textContent` (a payload holding `<script>` shows as text), and no
//! JavaScript build joins the Rust build, the image or CI.

use axum::http::header;
use axum::response::IntoResponse;

const HTML: &str = include_str!("../assets/ui.html");
const SCRIPT: &str = include_str!("../assets/app.js");
const STYLE: &str = include_str!("../assets/app.css");

/// Same-origin files only; no inline code; the page cannot be framed.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
    img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

/// `GET /ui`: the dashboard's page (it holds no data).
#[utoipa::path(get, path = "/ui", tag = "operations", security(()), responses((status = 200, content_type = "text/html", description = "The web dashboard; it asks for an API key")))]
pub(crate) async fn page() -> impl IntoResponse {
    asset("text/html; charset=utf-8", HTML)
}

pub(crate) async fn script() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub(crate) async fn style() -> impl IntoResponse {
    asset("text/css; charset=utf-8", STYLE)
}
