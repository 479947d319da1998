//! The dashboard as the server delivers it: `GET /api/whoami`, the login page a browser gets
//! without a token (while every data endpoint stays closed), and the embedded files themselves
//! (all present, small, no inline script or style for the CSP to trip on, no HTML sinks).
//! The page's behaviour in a real browser is tested in tests/browser/ (run by ./run-tests).

use std::collections::BTreeMap;

use crate::common::*;
use serde_json::json;

fn with_tokens(extra: &[&str]) -> Server {
    let viewer = format!("viewer:{VIEWER}");
    let control = format!("control:{CONTROL}");
    let admin = format!("admin:{ADMIN}");
    let mut args = vec!["--token", &viewer, "--token", &control, "--token", &admin];
    args.extend_from_slice(extra);
    Server::start(&args)
}

/// What a browser sends when it navigates to a page.
const BROWSER_ACCEPT: &str =
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";

fn browse(port: u16, path: &str, cookie: Option<&str>) -> Response {
    let mut headers = vec![("Accept", BROWSER_ACCEPT)];
    if let Some(cookie) = cookie {
        headers.push(("Cookie", cookie));
    }
    request(port, "GET", path, &headers, b"")
}

#[test]
fn whoami_answers_the_role_of_each_token() {
    let open = Server::start(&[]);
    let resp = get(open.port(), "/api/whoami", None);
    assert_eq!(resp.status, 200, "{:?}", resp.text());
    assert_eq!(
        resp.json(),
        json!({"role": "admin", "login_required": false})
    );

    let server = with_tokens(&[]);
    let port = server.port();
    get(port, "/api/whoami", None).assert_error(401);
    get(port, "/api/whoami", Some("not-a-real-token")).assert_error(401);
    for (token, role) in [(VIEWER, "viewer"), (CONTROL, "control"), (ADMIN, "admin")] {
        let resp = get(port, "/api/whoami", Some(token));
        assert_eq!(resp.status, 200, "{role}: {:?}", resp.text());
        assert_eq!(resp.json(), json!({"role": role, "login_required": true}));
        let resp = get(port, &format!("/api/whoami?token={token}"), None);
        assert_eq!(resp.json()["role"], role, "?token=");
    }
    // The login cookie is what the dashboard uses.
    let login = post(
        port,
        "/api/login",
        None,
        &json!({"token": CONTROL}).to_string(),
    );
    assert_eq!(login.status, 200);
    let cookie = login
        .headers_named("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("porchlight_token="))
        .expect("login sets the cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let resp = request(port, "GET", "/api/whoami", &[("Cookie", &cookie)], b"");
    assert_eq!(resp.json()["role"], "control");
    let resp = request(
        port,
        "POST",
        "/api/whoami",
        &[("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(resp.status, 405);
    resp.assert_error_shape();
}

#[test]
fn without_a_token_a_browser_gets_the_login_page_and_nothing_else() {
    let server = with_tokens(&[]);
    let port = server.port();

    // A browser's navigation: still 401, but with the page, so it can show its token form.
    let page = browse(port, "/", None);
    assert_eq!(page.status, 401);
    assert!(
        page.header("content-type")
            .unwrap_or("")
            .starts_with("text/html"),
        "{:?}",
        page.headers
    );
    assert!(
        page.text().contains("id=\"login-form\""),
        "not the dashboard page"
    );
    let csp = page.header("content-security-policy").unwrap_or("");
    assert!(csp.contains("script-src 'self'"), "CSP {csp:?}");
    assert!(page.header("www-authenticate").is_some());
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    assert_eq!(page.header("vary"), Some("Accept"));

    // A script asking for the same page gets the contract's JSON 401.
    get(port, "/", None).assert_error(401);
    get(port, "/index.html", None).assert_error(401);

    // The page's assets hold no data and are the same for everyone.
    for (path, kind) in [
        ("/js/main.js", "javascript"),
        ("/style.css", "text/css"),
        ("/icon.svg", "image/svg+xml"),
    ] {
        let resp = get(port, path, None);
        assert_eq!(resp.status, 200, "{path}: {:?}", resp.text());
        assert!(
            resp.header("content-type").unwrap_or("").contains(kind),
            "{path}: {:?}",
            resp.header("content-type")
        );
    }

    // Every data endpoint stays closed, even to a browser's Accept header.
    for path in [
        "/api/status",
        "/api/events",
        "/api/whoami",
        "/api/snapshot.jpg",
        "/metrics",
        "/stream/events",
        "/stream/system-status",
        "/stream/video",
        "/ws",
        "/no-such-file.js",
        "/no-such-page.html",
    ] {
        browse(port, path, None).assert_error(401);
    }
    // A wrong token is no better than none.
    let page = browse(port, "/", Some("porchlight_token=not-a-real-token"));
    assert_eq!(page.status, 401);
    // With a token the page is an ordinary 200.
    let page = browse(port, &format!("/?token={VIEWER}"), None);
    assert_eq!(page.status, 200);
    assert!(page.text().contains("id=\"dashboard\""));
}

#[test]
fn the_tokenless_path_serves_nothing_outside_www() {
    let dir = TempDir::new("www-login");
    std::fs::create_dir(dir.join("www")).unwrap();
    dir.write("www/index.html", "<!doctype html><title>login here</title>");
    dir.write("www/app.js", "console.log('porchlight');");
    dir.write("secret.txt", "TOPSECRET");
    dir.write("secret.html", "<p>TOPSECRET</p>");
    let www = dir.join("www").to_string_lossy().into_owned();
    let server = with_tokens(&["--www", &www]);
    let port = server.port();

    assert_eq!(browse(port, "/", None).status, 401);
    assert!(browse(port, "/", None).text().contains("login here"));
    assert_eq!(get(port, "/app.js", None).status, 200);
    for path in [
        "/../secret.txt",
        "/../secret.html",
        "/%2e%2e/secret.html",
        "/..%2fsecret.html",
        "/app.js/../../secret.txt",
        "/.%2e/secret.html",
    ] {
        let resp = browse(port, path, None);
        assert!(
            !resp.text().contains("TOPSECRET"),
            "{path} served a file outside --www without a token"
        );
        assert!(resp.status < 500, "{path}: {}", resp.status);
    }
}

/// Paths of local files an HTML or JS text refers to: `src="/…"`, `href="/…"`, `from './…'`.
/// Links to the API and the streams (the old-browser message offers them) are not files.
fn references(text: &str, base: &str) -> Vec<String> {
    let mut found = Vec::new();
    for marker in ["src=\"/", "href=\"/"] {
        for (at, _) in text.match_indices(marker) {
            let rest = &text[at + marker.len() - 1..];
            let path = &rest[..rest.find('"').unwrap()];
            if !path.starts_with("/api/") && !path.starts_with("/stream/") {
                found.push(path.to_string());
            }
        }
    }
    for (at, _) in text.match_indices("from './") {
        let rest = &text[at + "from './".len()..];
        found.push(format!("{base}{}", &rest[..rest.find('\'').unwrap()]));
    }
    found
}

#[test]
fn the_embedded_dashboard_is_whole_small_and_keeps_to_the_csp() {
    let server = Server::start(&[]);
    let port = server.port();
    let page = get(port, "/", None);
    assert_eq!(page.status, 200);
    let csp = page.header("content-security-policy").unwrap_or("");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "CSP {csp:?}"
    );

    // Follow every reference from the page and its modules: each must be there.
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = vec!["/index.html".to_string()];
    while let Some(path) = queue.pop() {
        if files.contains_key(&path) {
            continue;
        }
        let resp = get(port, &path, None);
        assert_eq!(resp.status, 200, "{path} is referenced but not served");
        let text = resp.text();
        let base = &path[..=path.rfind('/').unwrap()];
        queue.extend(references(&text, base));
        files.insert(path, text);
    }
    assert!(files.contains_key("/js/main.js") && files.contains_key("/style.css"));
    let total: usize = files.values().map(String::len).sum();
    // Issue 6's budget: under 60 KB uncompressed (a phone on weak Wi-Fi loads it whole).
    assert!(
        total < 60 * 1024,
        "the dashboard should stay under 60 KB; it is {total} bytes: {:?}",
        files.iter().map(|(p, t)| (p, t.len())).collect::<Vec<_>>()
    );

    // No inline script, style or handler: the CSP would block them (and they invite XSS).
    let html = &files["/index.html"];
    for (at, _) in html.match_indices("<script") {
        let tag = &html[at..at + html[at..].find('>').unwrap()];
        assert!(tag.contains(" src=\"/"), "inline script: {tag}");
    }
    assert!(!html.contains("<style"), "inline <style>");
    assert!(!html.contains(" style=\""), "inline style attribute");
    for (at, _) in html.match_indices(" on") {
        let word: String = html[at + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect();
        assert!(
            !html[at + 1 + word.len()..].starts_with('='),
            "inline handler {word}"
        );
    }
    // Dynamic text goes in as text: no HTML-parsing sinks anywhere in the scripts.
    for (path, text) in files.iter().filter(|(p, _)| p.ends_with(".js")) {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "setAttribute('on",
        ] {
            assert!(!text.contains(sink), "{path} uses {sink}");
        }
    }
}

/// `gzip -dc` of `bytes` (gzip is on every Debian machine the tests run on).
fn gunzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "not a valid gzip stream");
    out.stdout
}

#[test]
fn embedded_files_go_gzipped_to_clients_that_accept_it_and_plain_to_others() {
    let server = Server::start(&[]);
    let port = server.port();
    let www = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("www");
    for path in ["/index.html", "/js/main.js", "/style.css", "/icon.svg"] {
        let source = std::fs::read(www.join(&path[1..])).unwrap();

        // No Accept-Encoding (curl, scripts), identity only, gzip refused: the file as it is.
        for headers in [
            &[][..],
            &[("Accept-Encoding", "identity")][..],
            &[("Accept-Encoding", "gzip;q=0, deflate")][..],
            &[("Accept-Encoding", "*;q=0")][..],
            &[("Accept-Encoding", "gzip;q=nonsense")][..],
        ] {
            let plain = request(port, "GET", path, headers, b"");
            assert_eq!(plain.status, 200, "{path} {headers:?}");
            assert_eq!(plain.header("content-encoding"), None, "{path} {headers:?}");
            assert_eq!(plain.body, source, "{path} {headers:?}");
            assert_eq!(plain.header("vary"), Some("Accept-Encoding"));
        }

        // What browsers send: the stored gzip member, smaller, unpacking to the file.
        for accepted in [
            "gzip, deflate, br, zstd",
            "GZIP",
            "br;q=1.0, gzip;q=0.8",
            "*",
        ] {
            let packed = request(port, "GET", path, &[("Accept-Encoding", accepted)], b"");
            assert_eq!(packed.status, 200, "{path} {accepted}");
            assert_eq!(
                packed.header("content-encoding"),
                Some("gzip"),
                "{accepted}"
            );
            assert_eq!(packed.header("vary"), Some("Accept-Encoding"));
            assert_eq!(
                packed.header("content-length"),
                Some(packed.body.len().to_string().as_str())
            );
            assert_eq!(gunzip(&packed.body), source, "{path} {accepted}");
            if source.len() > 1000 {
                assert!(
                    packed.body.len() * 2 < source.len(),
                    "{path} barely compressed"
                );
            }
        }

        // Each representation has its own tag and is revalidated on its own.
        let plain = request(port, "GET", path, &[], b"");
        let packed = request(port, "GET", path, &[("Accept-Encoding", "gzip")], b"");
        let (plain_tag, packed_tag) = (
            plain.header("etag").unwrap(),
            packed.header("etag").unwrap(),
        );
        assert_ne!(plain_tag, packed_tag, "{path}");
        let again = request(
            port,
            "GET",
            path,
            &[("Accept-Encoding", "gzip"), ("If-None-Match", packed_tag)],
            b"",
        );
        assert_eq!(again.status, 304, "{path}");
        assert_eq!(again.header("vary"), Some("Accept-Encoding"));
        let other = request(port, "GET", path, &[("If-None-Match", packed_tag)], b"");
        assert_eq!(
            other.status, 200,
            "{path}: the gzip tag must not validate the plain copy"
        );
        assert_eq!(other.body, source);
    }
}
