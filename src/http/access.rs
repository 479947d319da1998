//! Who is asking: the role a request's token grants, and whether a browser's cross-origin
//! request may act. Checked on every route before anything else runs.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use tiny_http::Request;

use super::query::Target;
use super::reply::{self, Reply};
use crate::auth::{Role, TokenTable};

/// Name of the cookie `POST /api/login` sets.
pub const TOKEN_COOKIE: &str = "porchlight_token";

/// The value of header `name`, if present.
pub fn header<'a>(request: &'a Request, name: &'static str) -> Option<&'a str> {
    request
        .headers()
        .iter()
        .find(|h| h.field.equiv(name))
        .map(|h| h.value.as_str())
}

/// Every line of the list header `name` joined into one comma-separated list, as RFC 9110
/// §5.3 allows a recipient to combine them (`Connection: keep-alive` and `Connection: Upgrade`
/// on two lines are the list `keep-alive, Upgrade`); `None` when absent.
pub fn joined(request: &Request, name: &'static str) -> Option<String> {
    let mut lines = request
        .headers()
        .iter()
        .filter(|h| h.field.equiv(name))
        .map(|h| h.value.as_str());
    let first = lines.next()?;
    Some(lines.fold(first.to_string(), |list, line| format!("{list}, {line}")))
}

/// The token a request presents: `Authorization: Bearer`, then `Authorization: Basic` (the
/// token as the password, any user name), then `?token=`, then the cookie. A malformed Basic
/// header presents an empty token (refused), never a server error.
pub fn presented_token<'a>(request: &'a Request, target: &'a Target) -> Option<Cow<'a, str>> {
    if let Some(auth) = header(request, "Authorization") {
        let (scheme, credentials) = auth.trim().split_once(' ').unwrap_or((auth, ""));
        if scheme.eq_ignore_ascii_case("Bearer") {
            return Some(Cow::Borrowed(credentials.trim()));
        }
        if scheme.eq_ignore_ascii_case("Basic") {
            return Some(Cow::Owned(basic_password(credentials).unwrap_or_default()));
        }
    }
    if let Some(token) = target.get("token") {
        return Some(Cow::Borrowed(token));
    }
    header(request, "Cookie").and_then(|cookies| {
        cookies.split(';').find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == TOKEN_COOKIE).then_some(Cow::Borrowed(value))
        })
    })
}

/// The password of Basic credentials (`base64(user:password)`), or `None` if they are not
/// that. Home Assistant's MJPEG camera, NVRs and `http://user:TOKEN@host/` URLs send the token
/// this way.
fn basic_password(credentials: &str) -> Option<String> {
    let decoded = data_encoding::BASE64
        .decode(credentials.trim().as_bytes())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_user, password) = text.split_once(':')?;
    Some(password.to_string())
}

/// Whether the request comes from a web browser: it sends `Sec-Fetch-*` (every current engine)
/// or a `Mozilla/` user agent (all of them, old ones too). ffmpeg, VLC, mpv, curl, Home
/// Assistant and scripts send neither.
fn from_browser(request: &Request) -> bool {
    header(request, "Sec-Fetch-Mode").is_some()
        || header(request, "Sec-Fetch-Dest").is_some()
        || header(request, "User-Agent").is_some_and(|ua| ua.starts_with("Mozilla/"))
}

/// A 401 with its challenges. ffmpeg, VLC and mpv send the `user:token@` of their URL only
/// when challenged with `Basic`, so other clients get that challenge first (ffmpeg and VLC read
/// only the scheme at the start of the header), then `Bearer`, in one header. A browser answers
/// a `Basic` challenge with its own password dialog, over the dashboard's sign-in form and for
/// every `<img>` or `EventSource` refused: browsers get only `Bearer`, which none prompts for.
pub fn unauthorized(request: &Request, message: &str) -> Reply {
    let challenge = if from_browser(request) {
        "Bearer realm=\"porchlight\""
    } else {
        "Basic realm=\"porchlight\", charset=\"UTF-8\", Bearer realm=\"porchlight\""
    };
    reply::error(401, "unauthorized", message)
        .with_header(reply::header("WWW-Authenticate", challenge))
}

/// The request's role, or the 401 to answer. With no tokens configured everyone is admin
/// (the config only allows that on loopback or with `--insecure-no-auth`).
pub fn role_of(request: &Request, target: &Target, tokens: &TokenTable) -> Result<Role, Reply> {
    if tokens.is_empty() {
        return Ok(Role::Admin);
    }
    match presented_token(request, target) {
        None => Err(unauthorized(
            request,
            "a token is required: send Authorization: Bearer TOKEN (or Basic with the token as \
             the password), ?token=TOKEN, or log in",
        )),
        Some(token) => tokens
            .role_of(&token)
            .ok_or_else(|| unauthorized(request, "the token is not valid")),
    }
}

/// 403 unless `role` may do what needs `required`.
pub fn require(role: Role, required: Role) -> Result<(), Reply> {
    if role >= required {
        Ok(())
    } else {
        Err(reply::error(
            403,
            "forbidden",
            &format!("this needs the {required} role; the token has {role}"),
        ))
    }
}

/// A browser's cross-origin request is refused unless its origin is the page's own host or
/// listed in `allowed_origins`. Requests without `Origin` (scripts, curl) are not browsers'
/// cross-site requests and pass.
pub fn origin_allowed(request: &Request, allowed: &[String]) -> bool {
    let Some(origin) = header(request, "Origin") else {
        return true;
    };
    if allowed.iter().any(|a| a == origin) {
        return true;
    }
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    match (origin_host, header(request, "Host")) {
        (Some(origin_host), Some(host)) => origin_host.eq_ignore_ascii_case(host),
        _ => false,
    }
}

/// The host a `Host` header names, without its port or IPv6 brackets, lower-cased and without
/// a trailing dot; `None` if it is not `host[:port]`.
pub fn host_name(value: &str) -> Option<String> {
    let host = if let Some(rest) = value.strip_prefix('[') {
        rest.split_once(']')?.0
    } else {
        value.split_once(':').map_or(value, |(host, _)| host)
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// (r2) DNS rebinding: a web page at `http://evil.example` whose name the attacker re-points
/// at 127.0.0.1 reaches a tokenless porchlight as "same origin", with `Host: evil.example`.
/// So without tokens, a request must name a host that cannot be such a page's: a loopback
/// name or address, the listen address (any IP address when listening on all of them: an
/// address is not a name anyone can re-point), or an entry of `allowed_hosts`. With tokens
/// configured the token is the gate and any `Host` is accepted. A request without `Host`
/// (HTTP/1.0; no browser sends one) passes.
pub fn host_allowed(request: &Request, listen: &SocketAddr, allowed_hosts: &[String]) -> bool {
    host_value_allowed(header(request, "Host"), listen, allowed_hosts)
}

/// [`host_allowed`] on the `Host` header's value.
pub fn host_value_allowed(
    value: Option<&str>,
    listen: &SocketAddr,
    allowed_hosts: &[String],
) -> bool {
    let Some(value) = value else {
        return true;
    };
    let Some(host) = host_name(value) else {
        return false;
    };
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        if ip.is_loopback() || ip == listen.ip() || listen.ip().is_unspecified() {
            return true;
        }
    }
    allowed_hosts.contains(&host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        assert_eq!(host_name("Door.Local:8080").as_deref(), Some("door.local"));
        assert_eq!(host_name("[::1]:80").as_deref(), Some("::1"));
        assert_eq!(host_name("[::1]").as_deref(), Some("::1"));
        assert_eq!(host_name("localhost.").as_deref(), Some("localhost"));
        assert_eq!(host_name("127.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(host_name(""), None);
        assert_eq!(host_name("[::1"), None);
        assert_eq!(host_name(":80"), None);
    }

    #[test]
    fn only_names_no_page_can_rebind_are_allowed() {
        let loopback: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let allowed = ["door.local".to_string()];
        let ok = |host: &str, listen: &SocketAddr| host_value_allowed(Some(host), listen, &allowed);
        for host in [
            "localhost",
            "LOCALHOST:8080",
            "localhost.:8080",
            "app.localhost",
            "127.0.0.1:8080",
            "127.9.9.9",
            "[::1]:8080",
            "[::ffff:127.0.0.1]",
            "door.local:8080",
            "Door.Local",
        ] {
            assert!(ok(host, &loopback), "{host}");
        }
        for host in [
            "evil-rebind.example:8080",
            "evil.example",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "192.168.1.20:8080",
            "door.local.evil",
            "",
            "[::1",
        ] {
            assert!(!ok(host, &loopback), "{host}");
        }
        // Listening on one LAN address: that address; on all: any address, still no names.
        let lan: SocketAddr = "192.168.1.20:8080".parse().unwrap();
        assert!(ok("192.168.1.20:8080", &lan));
        assert!(!ok("192.168.1.21:8080", &lan));
        let all: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(ok("192.168.1.21:8080", &all));
        assert!(ok("[fe80::1]:8080", &"[::]:8080".parse().unwrap()));
        assert!(!ok("evil.example:8080", &all));
        assert!(host_value_allowed(None, &loopback, &[]));
    }

    #[test]
    fn basic_credentials_carry_the_token_as_password() {
        // "anyone:viewer-token-0001"
        assert_eq!(
            basic_password("YW55b25lOnZpZXdlci10b2tlbi0wMDAx").as_deref(),
            Some("viewer-token-0001")
        );
        // An empty user name, and a password holding a colon.
        assert_eq!(basic_password("OmE6Yg==").as_deref(), Some("a:b"));
        assert_eq!(basic_password("not base64!"), None);
        assert_eq!(basic_password("bm9jb2xvbg=="), None); // "nocolon"
        assert_eq!(basic_password("//79"), None); // not UTF-8
    }
}
