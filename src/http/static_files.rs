//! The dashboard's files: embedded in the binary, or read from `--www DIR` for development.
//! No path outside the root is ever served: the URL path is decoded, `..` and hidden segments
//! are refused before touching the disk, and a file read from `--www` must still resolve inside
//! the root after symlinks.

use std::path::{Path, PathBuf};

use tiny_http::Request;

use super::caching;
use super::query::{Target, decode_component};
use super::reply::{self, Reply};
use crate::ctx::Ctx;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/www_embedded.rs"));
}

/// Content-Security-Policy of the dashboard: scripts, styles and connections only from this
/// server, no inline script, no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// The URL path as a relative file path, or `None` if it could name something outside the root.
pub fn relative_path(url_path: &str) -> Option<String> {
    let decoded = decode_component(url_path, false);
    let trimmed = decoded.trim_start_matches('/');
    let relative = if trimmed.is_empty() || decoded.ends_with('/') {
        format!("{trimmed}index.html")
    } else {
        trimmed.to_string()
    };
    let safe = relative.split('/').all(|segment| {
        !segment.is_empty() && !segment.starts_with('.') && !segment.contains(['\\', '\0'])
    });
    safe.then_some(relative)
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("ico") => "image/x-icon",
        Some("webmanifest") => "application/manifest+json",
        Some("wav") => "audio/wav",
        Some("mp3") => "audio/mpeg",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn read_from_dir(root: &Path, relative: &str) -> Option<Vec<u8>> {
    let root = root.canonicalize().ok()?;
    let path: PathBuf = root.join(relative).canonicalize().ok()?;
    if !path.starts_with(&root) || !path.is_file() {
        return None;
    }
    std::fs::read(path).ok()
}

/// The file's bytes, from `--www` or from the copy embedded in the binary.
fn load(relative: &str, ctx: &Ctx) -> Option<Vec<u8>> {
    match &ctx.http.www {
        Some(root) => read_from_dir(root, relative),
        None => embedded::EMBEDDED
            .iter()
            .find(|(path, _)| path[1..] == *relative)
            .map(|(_, bytes)| bytes.to_vec()),
    }
}

fn file_reply(status: u16, relative: &str, body: Vec<u8>) -> Reply {
    let kind = content_type(relative);
    let response = reply::bytes(status, kind, body)
        .with_header(reply::header("Referrer-Policy", "no-referrer"));
    if kind.starts_with("text/html") {
        // The page's Content-Security-Policy, and no framing.
        response
            .with_header(reply::header("Content-Security-Policy", CSP))
            .with_header(reply::header("X-Frame-Options", "DENY"))
    } else {
        response
    }
}

/// A dashboard file, tagged with a digest of its bytes: the browser revalidates it on every use
/// (`no-cache`) and gets a 304 while it is unchanged.
pub fn serve(request: &Request, url_path: &str, ctx: &Ctx) -> Reply {
    let not_found = || reply::error(404, "not_found", &format!("no such file: {url_path}"));
    let Some(relative) = relative_path(url_path) else {
        return not_found();
    };
    let Some(body) = load(&relative, ctx) else {
        return not_found();
    };
    tagged(request, &relative, body)
}

/// A file's 200 with its `ETag`, or 304 if the client's copy is current.
fn tagged(request: &Request, relative: &str, body: Vec<u8>) -> Reply {
    let tag = caching::etag("", &body);
    caching::conditional(request, &tag, "no-cache", body, |body| {
        file_reply(200, relative, body)
    })
}

/// Whether the client says it wants an HTML page (a browser's navigation does; scripts, curl
/// and EventSource do not).
fn wants_html(request: &Request) -> bool {
    super::access::header(request, "Accept")
        .is_some_and(|accept| accept.to_ascii_lowercase().contains("text/html"))
}

/// A dashboard file asked for without a valid token.
///
/// The page has to load before it can show its token form, yet `GET /` needs the viewer role.
/// The nearest behaviour that keeps every byte of data behind a token: the page's assets
/// (scripts, styles, icons: the same for everyone, no data in them) are served to anyone; an
/// HTML page still answers 401, and a browser's navigation gets the page itself as that 401's
/// body, so it shows the login form; scripts and curl get the usual JSON error.
pub fn serve_untrusted(request: &Request, target: &Target, ctx: &Ctx) -> Reply {
    // The 401 any other route would answer (it says whether the token was missing or wrong).
    let denied = match super::access::role_of(request, target, &ctx.http.tokens) {
        Err(denied) => denied,
        Ok(_) => return serve(request, &target.path, ctx),
    };
    let Some(relative) = relative_path(&target.path) else {
        return denied;
    };
    let is_page = content_type(&relative).starts_with("text/html");
    if is_page && !wants_html(request) {
        return denied;
    }
    match load(&relative, ctx) {
        Some(body) if is_page => file_reply(401, &relative, body)
            .with_header(reply::header("Cache-Control", "no-store"))
            .with_header(reply::header(
                "WWW-Authenticate",
                "Bearer realm=\"porchlight\"",
            ))
            // The same URL answers JSON to scripts: a cache must keep the two apart.
            .with_header(reply::header("Vary", "Accept")),
        Some(body) => tagged(request, &relative, body),
        None => denied,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_is_refused_before_the_disk() {
        assert_eq!(relative_path("/").as_deref(), Some("index.html"));
        assert_eq!(relative_path("/app.js").as_deref(), Some("app.js"));
        assert_eq!(relative_path("/img/").as_deref(), Some("img/index.html"));
        for bad in [
            "/../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/a/../../x",
            "/.git/config",
            "/a//b",
            "/a%5c..%5cb",
            "/x%00.html",
        ] {
            assert_eq!(relative_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_dashboard_is_embedded() {
        assert!(embedded::EMBEDDED.iter().any(|(p, _)| *p == "/index.html"));
    }
}
