//! `GET /`: a small status page for people without Grafana. The page is one self-contained file
//! (`status.html`, inline CSS and script, no external assets, no build step) that reads
//! `/health` every few seconds and redraws itself.
//!
//! The Content-Security-Policy allows exactly the page's own inline style and script, by their
//! SHA-256, and lets the script fetch only from this origin: even if a namespace name slipped
//! into the markup, nothing injected could run.

use std::sync::LazyLock;

use actix_web::HttpResponse;
use actix_web::http::header;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// The page, served as it is.
const PAGE: &str = include_str!("status.html");

/// Computed once: the hashes of the page's inline blocks do not change while it runs.
static CSP: LazyLock<String> = LazyLock::new(|| content_security_policy(PAGE));

/// Serves the status page.
pub(crate) async fn status_page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP.as_str()))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(PAGE)
}

/// The policy for `page`: its one inline `<style>` and one inline `<script>` by hash, fetches
/// to this origin only, nothing else. A page without those blocks gets `'none'` for them.
pub(crate) fn content_security_policy(page: &str) -> String {
    let source = |tag: &str| inline_block(page, tag).map_or_else(|| "'none'".to_string(), csp_hash);
    format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; img-src data:; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        source("script"),
        source("style"),
    )
}

/// The text between `<tag>` and `</tag>` when the page has exactly one such block.
fn inline_block<'a>(page: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    if page.matches(&open).count() != 1 || page.matches(&close).count() != 1 {
        return None;
    }
    let start = page.find(&open)? + open.len();
    let end = page.find(&close)?;
    page.get(start..end)
}

/// A CSP hash source: `'sha256-<base64 of the SHA-256 of text>'`.
fn csp_hash(text: &str) -> String {
    format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_page_policy_allows_exactly_its_inline_script_and_style() {
        let csp = content_security_policy(PAGE);
        let script = inline_block(PAGE, "script").map(csp_hash);
        let style = inline_block(PAGE, "style").map(csp_hash);
        assert!(script.is_some() && style.is_some(), "the page must have one inline <script> and one <style>");
        assert!(csp.contains(&format!("script-src {};", script.unwrap_or_default())), "{csp}");
        assert!(csp.contains(&format!("style-src {};", style.unwrap_or_default())), "{csp}");
        assert!(csp.starts_with("default-src 'none';"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
    }

    #[test]
    fn status_page_csp_hash_is_the_browser_format() {
        // The hash of `alert(1)`, as browsers compute it for an inline script.
        assert_eq!(csp_hash("alert(1)"), "'sha256-bhHHL3z2vDgxUt0W3dWQOrprscmda2Y5pLsLg4GF+pI='");
    }

    #[test]
    fn status_page_without_inline_blocks_allows_no_script() {
        let csp = content_security_policy("<p>hello</p><script>a</script><script>b</script>");
        assert!(csp.contains("script-src 'none';") && csp.contains("style-src 'none';"), "{csp}");
    }

    #[test]
    fn status_page_is_self_contained() {
        for external in ["src=", "href=\"http", "href=\"//", "@import", "url("] {
            assert!(!PAGE.contains(external), "the page must not load anything: found {external:?}");
        }
        assert!(
            !PAGE.contains("innerHTML") && !PAGE.contains("insertAdjacentHTML") && !PAGE.contains("document.write")
        );
    }
}
