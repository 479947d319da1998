//! Who is asking: the role a request's token grants, and whether a browser's cross-origin
//! request may act. Checked on every route before anything else runs.

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

/// The token a request presents: `Authorization: Bearer`, then `?token=`, then the cookie.
fn presented_token<'a>(request: &'a Request, target: &'a Target) -> Option<&'a str> {
    if let Some(token) = header(request, "Authorization").and_then(|auth| {
        auth.strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("bearer "))
    }) {
        return Some(token.trim());
    }
    if let Some(token) = target.get("token") {
        return Some(token);
    }
    header(request, "Cookie").and_then(|cookies| {
        cookies.split(';').find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == TOKEN_COOKIE).then_some(value)
        })
    })
}

/// The request's role, or the 401 to answer. With no tokens configured everyone is admin
/// (the config only allows that on loopback or with `--insecure-no-auth`).
pub fn role_of(request: &Request, target: &Target, tokens: &TokenTable) -> Result<Role, Reply> {
    if tokens.is_empty() {
        return Ok(Role::Admin);
    }
    match presented_token(request, target) {
        None => Err(reply::error(
            401,
            "unauthorized",
            "a token is required: send Authorization: Bearer TOKEN, ?token=TOKEN, or log in",
        )
        .with_header(reply::header(
            "WWW-Authenticate",
            "Bearer realm=\"porchlight\"",
        ))),
        Some(token) => tokens.role_of(token).ok_or_else(|| {
            reply::error(401, "unauthorized", "the token is not valid").with_header(reply::header(
                "WWW-Authenticate",
                "Bearer realm=\"porchlight\"",
            ))
        }),
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
