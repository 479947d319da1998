//! REST routes, roles and tokens, input validation, /api/status and /metrics.

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::time::Duration;

use crate::common::*;
use serde_json::{Value, json};

fn token_args() -> Vec<String> {
    vec![
        "--token".into(),
        format!("viewer:{VIEWER}"),
        "--token".into(),
        format!("control:{CONTROL}"),
        "--token".into(),
        format!("admin:{ADMIN}"),
    ]
}

fn start_with_tokens(extra: &[&str]) -> Server {
    let args = token_args();
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.extend_from_slice(extra);
    Server::start(&all)
}

#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
enum Role {
    Viewer,
    Control,
    Admin,
}

fn token_of(role: Role) -> &'static str {
    match role {
        Role::Viewer => VIEWER,
        Role::Control => CONTROL,
        Role::Admin => ADMIN,
    }
}

struct Route {
    method: &'static str,
    path: String,
    body: String,
    min: Role,
    ok: &'static [u16],
    stream: bool,
}

fn routes(event_id: u64) -> Vec<Route> {
    let get = |path: String, ok: &'static [u16]| Route {
        method: "GET",
        path,
        body: String::new(),
        min: Role::Viewer,
        ok,
        stream: false,
    };
    vec![
        get("/".into(), &[200]),
        get("/api/status".into(), &[200]),
        get("/api/events".into(), &[200]),
        get(format!("/api/events/{event_id}"), &[200]),
        // No camera yet: 404 (no snapshot) / 503 (no frame) are authorised answers too.
        get(format!("/api/events/{event_id}/snapshot.jpg"), &[200, 404]),
        get("/api/snapshot.jpg".into(), &[200, 503]),
        get("/metrics".into(), &[200]),
        Route {
            stream: true,
            ..get("/stream/events".into(), &[200])
        },
        Route {
            stream: true,
            ..get("/stream/system-status".into(), &[200])
        },
        Route {
            method: "POST",
            path: "/api/events".into(),
            body: json!({"event_type": "auth_test", "data": {}}).to_string(),
            min: Role::Admin,
            ok: &[201],
            stream: false,
        },
        Route {
            method: "POST",
            path: "/api/trigger-doorbell".into(),
            body: String::new(),
            min: Role::Control,
            ok: &[200],
            stream: false,
        },
    ]
}

enum Cred<'a> {
    None,
    Bearer(&'a str),
    Query(&'a str),
    Cookie(&'a str),
}

/// Sends `route` with `cred`; returns the response (for streams: the head, then closed).
fn call(port: u16, route: &Route, cred: &Cred) -> Response {
    let mut path = route.path.clone();
    let mut headers: Vec<(String, String)> = Vec::new();
    match cred {
        Cred::None => {}
        Cred::Bearer(t) => headers.push(("Authorization".into(), format!("Bearer {t}"))),
        Cred::Query(t) => {
            let sep = if path.contains('?') { '&' } else { '?' };
            path = format!("{path}{sep}token={t}");
        }
        Cred::Cookie(c) => headers.push(("Cookie".into(), c.to_string())),
    }
    if route.method == "POST" {
        headers.push(("Content-Type".into(), "application/json".into()));
    }
    let refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if route.stream {
        match Sse::open(port, &path, &refs) {
            Ok(sse) => {
                let resp = Response {
                    status: sse.status,
                    headers: sse.headers.clone(),
                    body: Vec::new(),
                };
                sse.close();
                resp
            }
            Err(resp) => resp,
        }
    } else {
        request(port, route.method, &path, &refs, route.body.as_bytes())
    }
}

fn count_stored(port: u16) -> usize {
    all_events(port, Some(ADMIN)).len()
}

/// Checks every route against one way of presenting credentials.
fn check_matrix(port: u16, event_id: u64, make: &dyn Fn(Role) -> Cred<'static>, how: &str) {
    for route in routes(event_id) {
        // No credentials at all.
        let before = count_stored(port);
        let resp = call(port, &route, &Cred::None);
        assert_eq!(
            resp.status,
            401,
            "{} {} without a token: {} {:?}",
            route.method,
            route.path,
            resp.status,
            resp.text()
        );
        resp.assert_error_shape();
        assert_eq!(count_stored(port), before, "a 401 request stored an event");

        for role in [Role::Viewer, Role::Control, Role::Admin] {
            let before = count_stored(port);
            let resp = call(port, &route, &make(role));
            if role < route.min {
                assert_eq!(
                    resp.status,
                    403,
                    "{} {} as {role:?} via {how}: {} {:?}",
                    route.method,
                    route.path,
                    resp.status,
                    resp.text()
                );
                resp.assert_error_shape();
                assert_eq!(count_stored(port), before, "a 403 request stored an event");
            } else {
                assert!(
                    route.ok.contains(&resp.status),
                    "{} {} as {role:?} via {how}: expected one of {:?}, got {} {:?}",
                    route.method,
                    route.path,
                    route.ok,
                    resp.status,
                    resp.text()
                );
            }
        }
    }
}

#[test]
fn every_route_by_role_with_bearer_query_and_cookie() {
    let server = start_with_tokens(&[]);
    let port = server.port();
    let event_id = id_of(&post_event(port, Some(ADMIN), "seed", json!({})));

    check_matrix(port, event_id, &|r| Cred::Bearer(token_of(r)), "Bearer");
    check_matrix(port, event_id, &|r| Cred::Query(token_of(r)), "?token=");

    // Cookies from POST /api/login, one per role.
    let mut cookies: HashMap<&'static str, &'static str> = HashMap::new();
    for role in [Role::Viewer, Role::Control, Role::Admin] {
        let resp = post(
            port,
            "/api/login",
            None,
            &json!({"token": token_of(role)}).to_string(),
        );
        assert_eq!(resp.status, 200, "login as {role:?}: {:?}", resp.text());
        let set_cookie = resp
            .headers_named("set-cookie")
            .into_iter()
            .find(|c| c.trim_start().starts_with("porchlight_token="))
            .unwrap_or_else(|| panic!("login set no porchlight_token cookie: {:?}", resp.headers))
            .to_string();
        let attrs: Vec<String> = set_cookie
            .split(';')
            .skip(1)
            .map(|a| a.trim().to_ascii_lowercase())
            .collect();
        assert!(
            attrs.iter().any(|a| a == "path=/"),
            "the cookie needs Path=/ or browsers will not send it to /stream or /: {set_cookie:?}"
        );
        assert!(
            attrs.iter().any(|a| a == "httponly"),
            "the token cookie should be HttpOnly: {set_cookie:?}"
        );
        let pair = set_cookie.split(';').next().unwrap().trim().to_string();
        cookies.insert(token_of(role), Box::leak(pair.into_boxed_str()));
    }
    check_matrix(
        port,
        event_id,
        &move |r| Cred::Cookie(cookies[token_of(r)]),
        "login cookie",
    );

    // A browser sends other cookies too.
    let viewer_cookie = {
        let resp = post(
            port,
            "/api/login",
            None,
            &json!({"token": VIEWER}).to_string(),
        );
        let c = resp
            .headers_named("set-cookie")
            .into_iter()
            .find(|c| c.trim_start().starts_with("porchlight_token="))
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .trim()
            .to_string();
        format!("theme=dark; {c}; other=1")
    };
    let resp = request(
        port,
        "GET",
        "/api/status",
        &[("Cookie", &viewer_cookie)],
        b"",
    );
    assert_eq!(resp.status, 200, "cookie among others: {:?}", resp.text());
}

#[test]
fn wrong_tokens_and_login_failures() {
    let server = start_with_tokens(&[]);
    let port = server.port();
    let before = count_stored(port);
    for bad in [
        "wrong-token-0000",
        &ADMIN[..ADMIN.len() - 1],
        &format!("{ADMIN}x"),
        "",
    ] {
        let resp = request(
            port,
            "GET",
            "/api/status",
            &[("Authorization", &format!("Bearer {bad}"))],
            b"",
        );
        resp.assert_error(401);
        let resp = get(port, &format!("/api/status?token={bad}"), None);
        resp.assert_error(401);
        let resp = request(
            port,
            "POST",
            "/api/events",
            &[
                ("Authorization", &format!("Bearer {bad}")),
                ("Content-Type", "application/json"),
            ],
            json!({"event_type": "x"}).to_string().as_bytes(),
        );
        resp.assert_error(401);
    }
    let resp = request(
        port,
        "GET",
        "/api/status",
        &[("Cookie", "porchlight_token=not-a-valid-session")],
        b"",
    );
    resp.assert_error(401);

    let resp = post(
        port,
        "/api/login",
        None,
        &json!({"token": "nope-nope-nope"}).to_string(),
    );
    resp.assert_error(401);
    assert!(
        resp.headers_named("set-cookie")
            .iter()
            .all(|c| !c.contains("porchlight_token=") || c.contains("porchlight_token=;")),
        "a failed login must not set a usable cookie: {:?}",
        resp.headers
    );
    let resp = post(port, "/api/login", None, "{not json");
    assert!(
        (400..500).contains(&resp.status),
        "bad login JSON: {}",
        resp.status
    );
    resp.assert_error_shape();
    assert_eq!(count_stored(port), before);
}

#[test]
fn loopback_without_tokens_is_admin() {
    let server = Server::start(&[]);
    let port = server.port();
    assert_eq!(get(port, "/api/status", None).status, 200);
    assert_eq!(get(port, "/metrics", None).status, 200);
    assert_eq!(get(port, "/", None).status, 200);
    let event = post_event(port, None, "no_token_test", json!({"k": "v"}));
    trigger(port, None);
    assert_eq!(
        get(port, &format!("/api/events/{}", id_of(&event)), None).json(),
        event
    );
}

#[test]
fn dashboard_placeholder() {
    let server = Server::start(&[]);
    let resp = get(server.port(), "/", None);
    assert_eq!(resp.status, 200);
    let ct = resp.header("content-type").unwrap_or("");
    assert!(ct.starts_with("text/html"), "content-type {ct:?}");
    let lower = resp.text().to_ascii_lowercase();
    assert!(
        lower.contains("<html") || lower.contains("<!doctype"),
        "not HTML: {:?}",
        resp.text()
    );
}

#[test]
fn static_files_come_only_from_www() {
    let dir = TempDir::new("www");
    std::fs::create_dir(dir.join("www")).unwrap();
    dir.write(
        "www/index.html",
        "<!doctype html><title>custom dashboard</title>",
    );
    dir.write("www/app.js", "console.log('porchlight');");
    dir.write("secret.txt", "TOPSECRET");
    let www = dir.join("www").to_string_lossy().into_owned();
    let server = Server::start(&["--www", &www]);
    let port = server.port();

    let resp = get(port, "/", None);
    assert_eq!(resp.status, 200);
    assert!(
        resp.text().contains("custom dashboard"),
        "{:?}",
        resp.text()
    );
    let resp = get(port, "/app.js", None);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "console.log('porchlight');");
    let ct = resp.header("content-type").unwrap_or("");
    assert!(ct.contains("javascript"), "app.js content-type {ct:?}");

    for path in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/%2e%2e%2fsecret.txt",
        "/.%2e/secret.txt",
        "/..%5csecret.txt",
        "/www/../../secret.txt",
        "/app.js/../../secret.txt",
    ] {
        let resp = get(port, path, None);
        assert!(
            !resp.text().contains("TOPSECRET"),
            "{path} served a file outside --www"
        );
        assert!(resp.status < 500, "{path}: {}", resp.status);
    }
}

#[test]
fn bad_event_posts_are_4xx_json_and_store_nothing() {
    let server = start_with_tokens(&[]);
    let port = server.port();
    let mut sse = Sse::connect(port, &format!("/stream/events?token={VIEWER}"));
    let before = count_stored(port);
    let status_before = get(port, "/api/status", Some(ADMIN)).json()["events"]["stored"].clone();

    let long_type = "a".repeat(65);
    let big = json!({"event_type": "too_big", "data": {"pad": "x".repeat(17 * 1024)}}).to_string();
    let cases: Vec<(&str, String, u16)> = vec![
        ("bad json", r#"{"event_type": "x""#.into(), 400),
        ("not json at all", "event_type=x".into(), 400),
        ("array", "[1, 2, 3]".into(), 400),
        ("empty body", String::new(), 400),
        ("missing event_type", r#"{"data": {}}"#.into(), 400),
        ("event_type number", r#"{"event_type": 5}"#.into(), 400),
        ("event_type null", r#"{"event_type": null}"#.into(), 400),
        (
            "event_type upper",
            json!({"event_type": "Doorbell"}).to_string(),
            400,
        ),
        (
            "event_type dash",
            json!({"event_type": "door-bell"}).to_string(),
            400,
        ),
        (
            "event_type space",
            json!({"event_type": "door bell"}).to_string(),
            400,
        ),
        (
            "event_type empty",
            json!({"event_type": ""}).to_string(),
            400,
        ),
        (
            "event_type 65",
            json!({"event_type": long_type}).to_string(),
            400,
        ),
        (
            "event_type unicode",
            json!({"event_type": "tür"}).to_string(),
            400,
        ),
        (
            "event_type newline",
            json!({"event_type": "a\nevent: b"}).to_string(),
            400,
        ),
        (
            "data array",
            json!({"event_type": "ok", "data": [1]}).to_string(),
            400,
        ),
        (
            "data string",
            json!({"event_type": "ok", "data": "x"}).to_string(),
            400,
        ),
        (
            "unknown field",
            json!({"event_type": "ok", "extra": 1}).to_string(),
            400,
        ),
        (
            "id supplied",
            json!({"event_type": "ok", "id": 999999}).to_string(),
            400,
        ),
        (
            "source number",
            json!({"event_type": "ok", "source": 5}).to_string(),
            400,
        ),
        ("oversize", big, 413),
    ];
    for (name, body, status) in &cases {
        let resp = post(port, "/api/events", Some(ADMIN), body);
        assert_eq!(
            resp.status,
            *status,
            "{name}: expected {status}, got {} {:?}",
            resp.status,
            resp.text()
        );
        resp.assert_error_shape();
    }

    // A declared length far over the limit is refused without waiting for the body.
    let mut stream = connect(port);
    stream
        .write_all(
            format!(
                "POST /api/events HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {ADMIN}\r\n\
                 Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n{{"
            )
            .as_bytes(),
        )
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let resp = read_response(&mut BufReader::new(stream), "POST")
        .expect("no answer to a 1 GB Content-Length within 5 s");
    resp.assert_error(413);

    // A chunked body over the limit is refused as well (413, or 411 if chunked is refused).
    let mut stream = connect(port);
    let mut req = format!(
        "POST /api/events HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {ADMIN}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    let chunked_body =
        json!({"event_type": "chunked_big", "data": {"pad": "y".repeat(20 * 1024)}}).to_string();
    for chunk in chunked_body.as_bytes().chunks(4096) {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let _ = stream.write_all(&req);
    match read_response(&mut BufReader::new(stream), "POST") {
        Ok(resp) => {
            assert!(
                resp.status == 413 || resp.status == 411,
                "chunked 20 KiB body: {} {:?}",
                resp.status,
                resp.text()
            );
        }
        Err(e) => panic!("no answer to an oversize chunked body: {e}"),
    }

    assert_eq!(count_stored(port), before, "a rejected post was stored");
    let status_after = get(port, "/api/status", Some(ADMIN)).json()["events"]["stored"].clone();
    assert_eq!(status_after, status_before);
    // And nothing was published: the next event on the stream is the sentinel.
    let sentinel = post_event(port, Some(ADMIN), "sentinel", json!({}));
    let block = sse.expect_event();
    assert_eq!(
        block.id_num(),
        id_of(&sentinel),
        "a rejected post was published: {block:?}"
    );
}

#[test]
fn body_limit_is_16_kib_inclusive() {
    let server = Server::start(&[]);
    let port = server.port();
    let body_of =
        |n: usize| json!({"event_type": "size_test", "data": {"pad": "z".repeat(n)}}).to_string();
    let overhead = body_of(0).len();
    let exact = body_of(16 * 1024 - overhead);
    assert_eq!(exact.len(), 16 * 1024);
    let resp = post(port, "/api/events", None, &exact);
    assert_eq!(resp.status, 201, "a 16384-byte body: {:?}", resp.text());
    let over = body_of(16 * 1024 - overhead + 1);
    let resp = post(port, "/api/events", None, &over);
    resp.assert_error(413);
}

#[test]
fn valid_posts_and_their_fields() {
    let server = Server::start(&[]);
    let port = server.port();
    let t0 = now_unix();
    let max_type = "a".repeat(64);
    let resp = post(
        port,
        "/api/events",
        None,
        &json!({"event_type": max_type, "data": {"nested": {"a": [1, 2]}}, "source": "frigate"})
            .to_string(),
    );
    assert_eq!(resp.status, 201, "{:?}", resp.text());
    let ct = resp.header("content-type").unwrap_or("");
    assert!(ct.contains("application/json"), "content-type {ct:?}");
    let event = resp.json();
    assert_event_shape(&event);
    assert_eq!(event["event_type"], max_type.as_str());
    assert_eq!(event["source"], "frigate");
    assert_eq!(event["data"], json!({"nested": {"a": [1, 2]}}));
    let ts = event["timestamp"].as_f64().unwrap();
    assert!(ts >= t0 - 1.0 && ts <= now_unix() + 1.0, "timestamp {ts}");

    // data is optional and defaults to an empty object.
    let resp = post(
        port,
        "/api/events",
        None,
        &json!({"event_type": "no_data"}).to_string(),
    );
    assert_eq!(resp.status, 201, "{:?}", resp.text());
    let minimal = resp.json();
    assert_eq!(minimal["data"], json!({}));
    assert!(id_of(&minimal) > id_of(&event));

    let pressed = trigger(port, None);
    assert!(id_of(&pressed) > id_of(&minimal));
    let ts = pressed["timestamp"].as_f64().unwrap();
    assert!((ts - now_unix()).abs() < 5.0);

    for e in [&event, &minimal, &pressed] {
        let resp = get(port, &format!("/api/events/{}", id_of(e)), None);
        assert_eq!(resp.status, 200);
        assert_eq!(resp.json(), *e, "GET by id differs from the 201 body");
    }
}

#[test]
fn unknown_ids_and_routes_are_404_json() {
    let server = Server::start(&[]);
    let port = server.port();
    let event = trigger(port, None);
    get(port, "/api/events/987654321", None).assert_error(404);
    get(port, "/api/events/987654321/snapshot.jpg", None).assert_error(404);
    get(port, "/api/nope", None).assert_error(404);
    get(port, "/api/events/1/nope", None).assert_error(404);
    get(port, "/no/such/file.js", None).assert_error_shape();
    for path in ["/api/events/abc", "/api/events/-1", "/api/events/1.5"] {
        let resp = get(port, path, None);
        assert!(
            resp.status == 400 || resp.status == 404,
            "{path}: {} {:?}",
            resp.status,
            resp.text()
        );
        resp.assert_error_shape();
    }
    // An event without a snapshot (there is no camera frame yet).
    if event["snapshot_url"].is_null() {
        get(
            port,
            &format!("/api/events/{}/snapshot.jpg", id_of(&event)),
            None,
        )
        .assert_error(404);
    }
    let resp = get(port, "/api/snapshot.jpg", None);
    if resp.status != 200 {
        resp.assert_error(503);
    } else {
        assert_eq!(resp.header("content-type"), Some("image/jpeg"));
    }
    // A method the route does not take: 4xx JSON, never 5xx.
    for (method, path) in [
        ("DELETE", "/api/events"),
        ("PUT", "/api/status"),
        ("GET", "/api/trigger-doorbell"),
    ] {
        let resp = request(port, method, path, &[], b"");
        assert!(
            (400..500).contains(&resp.status),
            "{method} {path}: {} {:?}",
            resp.status,
            resp.text()
        );
        resp.assert_error_shape();
    }
    let stored = all_events(port, None);
    assert_eq!(stored.len(), 1, "wrong-method requests stored something");
}

#[test]
fn event_queries() {
    let server = Server::start(&[]);
    let port = server.port();
    let events: Vec<Value> = (0..6)
        .map(|i| {
            let kind = if i % 2 == 0 { "even_kind" } else { "odd_kind" };
            post_event(port, None, kind, json!({"i": i}))
        })
        .collect();
    let ids: Vec<u64> = events.iter().map(id_of).collect();
    let fetch = |q: &str| -> Vec<u64> { list_events(port, None, q).iter().map(id_of).collect() };

    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(fetch(""), newest_first);
    assert_eq!(fetch("limit=2"), newest_first[..2]);
    assert_eq!(
        fetch(&format!("before={}", ids[3])),
        vec![ids[2], ids[1], ids[0]],
        "before is exclusive, newest first"
    );
    assert_eq!(
        fetch(&format!("after={}", ids[3])),
        vec![ids[5], ids[4]],
        "after is exclusive, newest first"
    );
    assert_eq!(
        fetch(&format!("after={}&before={}", ids[0], ids[4])),
        vec![ids[3], ids[2], ids[1]]
    );
    assert_eq!(fetch(&format!("before={}&limit=1", ids[5])), vec![ids[4]]);
    assert_eq!(fetch("type=odd_kind"), vec![ids[5], ids[3], ids[1]]);
    assert_eq!(fetch("type=odd_kind&limit=1"), vec![ids[5]]);
    assert!(fetch("type=never_posted").is_empty());
    for (full, listed) in list_events(port, None, "").iter().rev().zip(&events) {
        assert_eq!(full, listed, "listed event differs from the 201 body");
    }

    let before = all_events(port, None).len();
    for q in [
        "limit=abc",
        "before=x",
        "after=zz",
        "limit=1e3",
        "limit=",
        "before=1.5",
        "limit=10&after=%20",
    ] {
        let resp = get(port, &format!("/api/events?{q}"), None);
        assert_eq!(resp.status, 400, "?{q}: {} {:?}", resp.status, resp.text());
        resp.assert_error_shape();
    }
    assert_eq!(all_events(port, None).len(), before);
}

#[test]
fn limit_defaults_to_50_and_is_capped_at_500() {
    let server = Server::start(&[]);
    let port = server.port();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..65 {
                    post_event(port, None, "many", json!({"t": t, "i": i}));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("producer panicked");
    }
    assert_eq!(list_events(port, None, "").len(), 50, "default limit");
    assert_eq!(list_events(port, None, "limit=500").len(), 500);
    assert_eq!(list_events(port, None, "limit=100000").len(), 500, "cap");
    assert_eq!(all_events(port, None).len(), 520);
}

#[test]
fn status_fields_and_types() {
    let server = Server::start(&[]);
    let port = server.port();
    let resp = get(port, "/api/status", None);
    assert_eq!(resp.status, 200);
    let ct = resp.header("content-type").unwrap_or("");
    assert!(ct.contains("application/json"), "content-type {ct:?}");
    let status = resp.json();
    assert_status_object(&status);
    assert_eq!(status["events"]["stored"], 0);
    assert_eq!(status["clients"]["sse"], 0);
    assert_eq!(status["doorbell"]["source"], "sim");
    assert!(status["doorbell"]["pin"].is_null());
    assert_eq!(status["camera"]["source"], "synthetic:640x480@15");

    let sse = Sse::connect(port, "/stream/events");
    let event = trigger(port, None);
    let status = get(port, "/api/status", None).json();
    assert_status_object(&status);
    assert_eq!(status["events"]["stored"], 1, "{status}");
    assert_eq!(status["events"]["last_id"].as_u64(), Some(id_of(&event)));
    assert_eq!(status["clients"]["sse"], 1, "{status}");
    let uptime = status["uptime_s"].as_f64().unwrap();
    assert!(uptime < 120.0, "uptime {uptime} for a fresh server");
    drop(sse);
}

#[test]
fn metrics_format_and_counters() {
    // Short heartbeats so the server notices the closed stream quickly at the end.
    let server = Server::with_config("heartbeat_s = 0.2\n", &[]);
    let port = server.port();
    let resp = get(port, "/metrics", None);
    assert_eq!(resp.status, 200);
    let ct = resp.header("content-type").unwrap_or("");
    assert!(ct.starts_with("text/plain"), "content-type {ct:?}");
    let text = resp.text();

    let mut types: HashMap<String, String> = HashMap::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let name = parts.next().expect("TYPE name").to_string();
            let kind = parts.next().expect("TYPE kind").to_string();
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind.as_str()),
                "{line}"
            );
            assert!(
                types.insert(name, kind).is_none(),
                "TYPE given twice: {line}"
            );
            continue;
        }
        if line.starts_with('#') {
            assert!(line.starts_with("# HELP "), "unexpected comment {line:?}");
            continue;
        }
        let (series, value) = split_series(line);
        let name = series.split('{').next().unwrap();
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
                && !name.as_bytes()[0].is_ascii_digit(),
            "bad metric name in {line:?}"
        );
        let base = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            types.contains_key(name) || types.contains_key(base),
            "{name} has no # TYPE line before it"
        );
        let number = value.split_whitespace().next().unwrap_or("");
        assert!(
            number.parse::<f64>().is_ok() || ["NaN", "+Inf", "-Inf"].contains(&number),
            "bad value in {line:?}"
        );
    }
    assert_eq!(
        types.get("porchlight_events_total").map(String::as_str),
        Some("counter")
    );
    assert_eq!(
        types.get("porchlight_clients").map(String::as_str),
        Some("gauge")
    );
    assert_eq!(
        types.get("porchlight_uptime_seconds").map(String::as_str),
        Some("gauge")
    );
    for kind in ["sse", "websocket", "video"] {
        assert!(
            metric(&text, &format!("porchlight_clients{{kind=\"{kind}\"}}")).is_some(),
            "no porchlight_clients{{kind=\"{kind}\"}} in\n{text}"
        );
    }

    let events_before = metric(&text, "porchlight_events_total").expect("events_total");
    let uptime_before = metric(&text, "porchlight_uptime_seconds").expect("uptime");
    trigger(port, None);
    post_event(port, None, "metrics_test", json!({}));
    let sse = Sse::connect(port, "/stream/events");
    let text = metrics(port, None);
    assert_eq!(
        metric(&text, "porchlight_events_total"),
        Some(events_before + 2.0),
        "events_total must count each stored event"
    );
    assert_eq!(metric(&text, "porchlight_clients{kind=\"sse\"}"), Some(1.0));
    assert!(metric(&text, "porchlight_uptime_seconds").unwrap() >= uptime_before);
    sse.close();
    let gauge = wait_metric(
        port,
        None,
        "porchlight_clients{kind=\"sse\"}",
        Duration::from_secs(5),
        |v| v == 0.0,
    );
    assert_eq!(
        gauge,
        Some(0.0),
        "the SSE gauge did not drop after the client left"
    );
}

#[test]
fn tokens_with_special_characters_and_scheme_case() {
    // The server accepts letters, digits and - . _ ~ / = in tokens (URL-safe ones), so these
    // are the characters a percent-encoding client may encode.
    let token = "s3cr.t/t~k=n_x-y";
    let spec = format!("control:{token}");
    let server = Server::start(&["--token", &spec]);
    let port = server.port();
    assert_eq!(get(port, "/api/status", Some(token)).status, 200, "Bearer");
    let encoded: String = token
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let resp = get(port, &format!("/api/status?token={encoded}"), None);
    assert_eq!(
        resp.status,
        200,
        "percent-encoded ?token=: {:?}",
        resp.text()
    );
    let sse = Sse::open(port, &format!("/stream/events?token={encoded}"), &[]);
    assert!(sse.is_ok(), "EventSource with a percent-encoded token");
    let resp = get(port, &format!("/api/status?limit=1&token={token}"), None);
    assert_eq!(resp.status, 200, "unencoded ?token=: {:?}", resp.text());
    // The auth scheme is case-insensitive (RFC 9110 11.1).
    let resp = request(
        port,
        "GET",
        "/api/status",
        &[("Authorization", &format!("bearer {token}"))],
        b"",
    );
    assert_eq!(resp.status, 200, "lowercase bearer: {:?}", resp.text());
    // Control may trigger but not post arbitrary events.
    assert_eq!(
        post(port, "/api/trigger-doorbell", Some(token), "").status,
        200
    );
    post(
        port,
        "/api/events",
        Some(token),
        &json!({"event_type": "x"}).to_string(),
    )
    .assert_error(403);
}

#[test]
fn keep_alive_pipelining_and_expect_continue() {
    let server = Server::start(&[]);
    let port = server.port();

    // Two requests in one write: both answered, in order, on the same connection.
    let mut stream = connect(port);
    let body = json!({"event_type": "pipelined", "data": {}}).to_string();
    let both = format!(
        "POST /api/events HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}GET /api/events?limit=1 HTTP/1.1\r\nHost: localhost\r\n\r\n",
        body.len()
    );
    stream.write_all(both.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let first = read_response(&mut reader, "POST").expect("first pipelined response");
    assert_eq!(first.status, 201, "{:?}", first.text());
    let second = read_response(&mut reader, "GET").expect("second pipelined response");
    assert_eq!(second.status, 200, "{:?}", second.text());
    assert_eq!(second.json()["events"][0], first.json());

    // curl sends `Expect: 100-continue` for bodies over 1 KiB and waits up to 1 s for it.
    let mut stream = connect(port);
    let body = json!({"event_type": "expect_test", "data": {"pad": "e".repeat(2000)}}).to_string();
    let head = format!(
        "POST /api/events HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let interim = read_head(&mut reader);
    match &interim {
        Ok((100, _, _)) => {}
        Ok((status, _, _)) => panic!("Expect: 100-continue answered {status} before the body"),
        Err(_) => eprintln!("no 100 Continue within 1.5 s (curl would wait 1 s per upload)"),
    }
    stream.write_all(body.as_bytes()).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let resp = read_response(&mut reader, "POST").expect("final response after 100-continue");
    assert_eq!(resp.status, 201, "{:?}", resp.text());
    assert_eq!(
        resp.json()["data"]["pad"].as_str().map(str::len),
        Some(2000)
    );
    assert_eq!(list_events(port, None, "type=expect_test").len(), 1);
}
