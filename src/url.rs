//! The URLs porchlight reaches out to: an MQTT broker (`mqtt_url`), webhook receivers, and the
//! `public_url` it names in notifications. Only what those need: scheme, optional
//! `user:password@` (percent-decoded), host (name, IPv4 or `[IPv6]`), port, path with query.
//! Errors say what is wrong, for the config error that names the key.

use std::fmt;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Connects to `host_port` (`host:port` or `[v6]:port`): the first of its addresses that
/// answers within `timeout` each. The MQTT bridge and the webhook client both reach out this
/// way. `Err` says why, naming `shown` (the host as the user may read it) and the address tried.
pub fn connect(host_port: &str, shown: &str, timeout: Duration) -> Result<TcpStream, String> {
    let addrs = host_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {shown}: {e}"))?;
    let mut last_error = format!("{shown} resolves to no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last_error = format!("cannot connect to {addr}: {e}"),
        }
    }
    Err(last_error)
}

/// A parsed `scheme://[user[:password]@]host[:port][/path][?query]`.
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceUrl {
    /// Lower-cased.
    pub scheme: String,
    pub user: Option<String>,
    pub password: Option<String>,
    /// Without brackets for IPv6.
    pub host: String,
    pub port: u16,
    /// `/` when the URL has none; the query, if any, included.
    pub path: String,
}

/// Hides the password (and keeps the user out of logs too): for status, logs and errors.
impl fmt::Debug for ServiceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.redacted())
    }
}

impl ServiceUrl {
    /// Parses `text`. `default_port` maps a scheme to its port; a scheme it does not know
    /// (`None`) is refused, naming `schemes` as the ones that are.
    pub fn parse(
        text: &str,
        default_port: impl Fn(&str) -> Option<u16>,
        schemes: &str,
    ) -> Result<ServiceUrl, String> {
        if text.chars().any(|c| c.is_control() || c == ' ') {
            return Err("a URL cannot contain spaces or control characters".into());
        }
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(format!("{text:?} is not a URL ({schemes})"));
        };
        let scheme = scheme.to_ascii_lowercase();
        let Some(port) = default_port(&scheme) else {
            return Err(format!(
                "scheme {scheme:?} is not supported (use {schemes})"
            ));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if path.contains('#') {
            return Err("a URL fragment (#...) is never sent: remove it".into());
        }
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo), host_port),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let (user, password) = match info.split_once(':') {
                    Some((user, password)) => (user, Some(percent_decode(password)?)),
                    None => (info, None),
                };
                (Some(percent_decode(user)?), password)
            }
        };
        let (host, port) = split_host_port(host_port, port)?;
        Ok(ServiceUrl {
            scheme,
            user,
            password,
            host,
            port,
            path,
        })
    }

    /// `host:port` as a socket address string (IPv6 in brackets).
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The URL's authority as an HTTP `Host` header and a URL write it: the port left out
    /// when it is the scheme's `default_port`, an IPv6 address in brackets either way
    /// (`Host: ::1` is no valid header, `https://::1/` no valid URL).
    pub fn authority(&self, default_port: u16) -> String {
        if self.port != default_port {
            self.host_port()
        } else if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }

    /// `scheme://host:port` — no credentials and no path, which may hold a secret too (an ntfy
    /// topic on a public server is one).
    pub fn redacted(&self) -> String {
        format!("{}://{}", self.scheme, self.host_port())
    }
}

fn split_host_port(text: &str, default_port: u16) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err("an IPv6 address needs its closing ']'".into());
        };
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("[{host}] is not an IPv6 address"));
        }
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("unexpected {after:?} after the IPv6 address")),
            },
        }
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err("the URL names no host".into());
    }
    if !host.contains(':')
        && !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    {
        return Err(format!("{host:?} is not a host name or address"));
    }
    let port = match port {
        None => default_port,
        Some(text) => match text.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => return Err(format!("port {text:?} is not a number in 1..65535")),
        },
    };
    Ok((host.to_ascii_lowercase(), port))
}

/// `%XX` escapes, for a user name or password holding `@`, `:` or `/`.
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(byte) => out.push(byte),
                None => return Err("a '%' in the user or password must start a %XX escape".into()),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the user or password is not UTF-8 once decoded".into())
}

/// `public_url`: an `http(s)://` address without credentials; returned without a trailing `/`
/// so paths can be appended.
pub fn parse_public_url(text: &str) -> Result<String, String> {
    let url = ServiceUrl::parse(text, http_port, "http:// or https://")?;
    if url.user.is_some() {
        return Err("public_url is shown to people: it must not hold a user or password".into());
    }
    if url.path.contains('?') {
        return Err("public_url cannot have a query (?...)".into());
    }
    Ok(text.trim_end_matches('/').to_string())
}

/// Default ports of `http` and `https`.
pub fn http_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connecting_takes_the_first_address_that_answers_or_says_why_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap().to_string();
        let stream = connect(&open, "broker", Duration::from_secs(5)).unwrap();
        assert_eq!(stream.peer_addr().unwrap().to_string(), open);
        drop(listener);
        // Nothing listens there any more: refused, naming the address tried.
        let err = connect(&open, "broker", Duration::from_secs(5)).unwrap_err();
        assert!(
            err.starts_with(&format!("cannot connect to {open}: ")),
            "{err}"
        );
        let err = connect(
            "no-such-host.invalid:1883",
            "no-such-host.invalid",
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(
            err.starts_with("cannot resolve no-such-host.invalid: "),
            "{err}"
        );
    }

    fn mqtt_port(scheme: &str) -> Option<u16> {
        (scheme == "mqtt").then_some(1883)
    }

    #[test]
    fn parses_every_part() {
        let url = ServiceUrl::parse("MQTT://us%40er:p%3Aa@Broker.lan:1884", mqtt_port, "mqtt://")
            .unwrap();
        assert_eq!(url.scheme, "mqtt");
        assert_eq!(url.user.as_deref(), Some("us@er"));
        assert_eq!(url.password.as_deref(), Some("p:a"));
        assert_eq!(url.host, "broker.lan");
        assert_eq!(url.port, 1884);
        assert_eq!(url.path, "/");
        assert_eq!(url.redacted(), "mqtt://broker.lan:1884");
        assert!(!format!("{url:?}").contains("p:a"));

        let url = ServiceUrl::parse("http://[::1]:9000/hook?x=1", http_port, "http").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("::1", 9000));
        assert_eq!(url.path, "/hook?x=1");
        assert_eq!(url.host_port(), "[::1]:9000");
        let url = ServiceUrl::parse("https://ntfy.sh?x", http_port, "http").unwrap();
        assert_eq!((url.port, url.path.as_str()), (443, "/?x"));
        let url = ServiceUrl::parse("mqtt://user@10.0.0.2", mqtt_port, "mqtt").unwrap();
        assert_eq!((url.user.as_deref(), url.password), (Some("user"), None));
    }

    #[test]
    fn refuses_what_cannot_be_reached() {
        for bad in [
            "broker.lan",
            "tcp://broker.lan",
            "mqtt://",
            "mqtt://:1883",
            "mqtt://host:0",
            "mqtt://host:65536",
            "mqtt://host:x",
            "mqtt://bad host",
            "mqtt://h\u{0}",
            "mqtt://[::1",
            "mqtt://[nothex]:1",
            "mqtt://u:%zz@host",
            "mqtt://h/path#frag",
            "mqtt://hö",
        ] {
            assert!(
                ServiceUrl::parse(bad, mqtt_port, "mqtt://").is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn public_url_is_plain_http() {
        assert_eq!(
            parse_public_url("http://door.local:8080/").unwrap(),
            "http://door.local:8080"
        );
        assert!(parse_public_url("https://u:p@door.example").is_err());
        assert!(parse_public_url("ftp://door").is_err());
        assert!(parse_public_url("http://door/?a=1").is_err());
    }
}
