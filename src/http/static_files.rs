//! The dashboard's files: embedded in the binary (gzip-compressed, see `build.rs`), or read from
//! `--www DIR` for development. An embedded file goes out as it is stored, with
//! `Content-Encoding: gzip`, to a client that accepts gzip (every browser), and unpacked to one
//! that does not (curl, scripts); both carry `Vary: Accept-Encoding` and their own `ETag`.
//! No path outside the root is ever served: the URL path is decoded, `..` and hidden segments
//! are refused before touching the disk, and a file read from `--www` must still resolve inside
//! the root after symlinks.

use std::path::{Path, PathBuf};

use tiny_http::Request;

use super::query::{Target, decode_component};
use super::ranges::{self, Validator};
use super::reply::{self, Reply};
use super::{caching, gzip};
use crate::ctx::Ctx;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/www_embedded.rs"));
}

/// Content-Security-Policy of the dashboard: scripts, styles and connections only from this
/// server, no inline script, no framing.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// The URL path (normalised, see `query::normalize_path`) as a relative file path, or `None`
/// if it could name something outside the root. Each segment is decoded on its own, so an
/// escaped `/` (`%2F`) or `\` (`%5C`) cannot make a separator: a segment that decodes to one,
/// to a NUL, or to a name starting with `.` (`..`, `.git`, however escaped) is refused.
pub fn relative_path(url_path: &str) -> Option<String> {
    let trimmed = url_path.strip_prefix('/')?;
    let mut segments: Vec<String> = trimmed
        .split('/')
        .map(|segment| decode_component(segment, false))
        .collect();
    // A path ending in `/` (or `/` itself) names the directory's index.
    if segments.last().is_some_and(String::is_empty) {
        segments.pop();
        segments.push("index.html".to_string());
    }
    let safe = segments.iter().all(|segment| {
        !segment.is_empty() && !segment.starts_with('.') && !segment.contains(['/', '\\', '\0'])
    });
    safe.then(|| segments.join("/"))
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

/// The embedded gzip member of the file at `relative` ("index.html").
pub(crate) fn embedded_gzip(relative: &str) -> Option<&'static [u8]> {
    embedded::EMBEDDED
        .iter()
        .find(|(path, _)| path[1..] == *relative)
        .map(|(_, member)| *member)
}

/// A file's bytes and how they are coded.
struct Body {
    bytes: Vec<u8>,
    /// Still the embedded gzip member (sent with `Content-Encoding: gzip`).
    gzipped: bool,
    /// Embedded, so the answer depends on `Accept-Encoding`.
    embedded: bool,
}

/// The file's bytes, from `--www` or from the copy embedded in the binary: left compressed if
/// `gzip_ok`, else unpacked.
fn load(relative: &str, ctx: &Ctx, gzip_ok: bool) -> Option<Body> {
    if let Some(root) = &ctx.http.www {
        let bytes = read_from_dir(root, relative)?;
        return Some(Body {
            bytes,
            gzipped: false,
            embedded: false,
        });
    }
    let member = embedded_gzip(relative)?;
    let bytes = if gzip_ok {
        member.to_vec()
    } else {
        gzip::gunzip(member)?
    };
    Some(Body {
        bytes,
        gzipped: gzip_ok,
        embedded: true,
    })
}

/// Whether `Accept-Encoding` accepts gzip: listed as `gzip` (or `x-gzip`), or matched by `*`,
/// with a q-value above 0. No header at all gets the identity: curl and scripts that send none
/// expect the file as it is.
fn accepts_gzip(request: &Request) -> bool {
    let Some(accepted) = super::access::header(request, "Accept-Encoding") else {
        return false;
    };
    let (mut gzip, mut any) = (None, None);
    for item in accepted.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let weight = parts.find_map(|p| {
            let (name, value) = p.split_once('=')?;
            name.trim().eq_ignore_ascii_case("q").then(|| value.trim())
        });
        // q is 0 to 1 with up to three decimals; anything else is not a yes.
        let wanted = weight.is_none_or(|q| q.parse::<f32>().is_ok_and(|q| q > 0.0 && q <= 1.0));
        if coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip") {
            gzip = Some(wanted);
        } else if coding == "*" {
            any = Some(wanted);
        }
    }
    gzip.or(any).unwrap_or(false)
}

fn file_reply(status: u16, relative: &str, body: Vec<u8>, gzipped: bool) -> Reply {
    let kind = content_type(relative);
    let mut response = reply::bytes(status, kind, body)
        .with_header(reply::header("Referrer-Policy", "no-referrer"));
    if gzipped {
        response = response.with_header(reply::header("Content-Encoding", "gzip"));
    }
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
    let Some(body) = load(&relative, ctx, accepts_gzip(request)) else {
        return not_found();
    };
    tagged(request, &relative, body)
}

/// A file's 200 with its `ETag`, or 304 if the client's copy is current. The tag is a digest
/// of the bytes sent, so the gzip and the plain copy have different tags, as they must.
fn tagged(request: &Request, relative: &str, body: Body) -> Reply {
    let tag = caching::etag("", &body.bytes);
    let Body {
        bytes,
        gzipped,
        embedded,
    } = body;
    let validator = Validator::Strong(&tag);
    let reply = ranges::reply(request, validator, "no-cache", bytes, |bytes| {
        file_reply(200, relative, bytes, gzipped)
    });
    if embedded {
        reply.with_header(reply::header("Vary", "Accept-Encoding"))
    } else {
        reply
    }
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
    // The 401 page is sent unpacked: its `Vary` is about `Accept` (below).
    match load(&relative, ctx, accepts_gzip(request) && !is_page) {
        Some(body) if is_page => file_reply(401, &relative, body.bytes, false)
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
            "/img%2Findex.html",
            "/img%2findex.html",
            "/%2E%2E%2Fsecret.txt",
            "/..%2Fsecret.txt",
            "/%2Egit/config",
            "/a%5Cb",
            "relative",
        ] {
            assert_eq!(relative_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_dashboard_is_embedded() {
        assert!(embedded::EMBEDDED.iter().any(|(p, _)| *p == "/index.html"));
    }

    /// Every embedded file unpacks to the bytes of its source in `www/`, and is smaller packed.
    #[test]
    fn every_embedded_file_unpacks_to_its_source() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("www");
        let (mut packed, mut plain) = (0, 0);
        for (path, member) in embedded::EMBEDDED {
            let source = std::fs::read(root.join(&path[1..])).unwrap();
            assert_eq!(gzip::gunzip(member).as_deref(), Some(&source[..]), "{path}");
            packed += member.len();
            plain += source.len();
        }
        assert!(packed * 2 < plain, "{packed} bytes packed of {plain}");
    }
}
