//! Roles and tokens. Roles nest (`viewer` ⊂ `control` ⊂ `admin`); a request's role comes from its
//! token, or is `admin` when no token is configured (only allowed on loopback or with
//! `--insecure-no-auth`, see `Config::validate`).

use std::fmt;

/// What a client may do. Ordered: a higher role may do everything a lower one may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Control,
    Admin,
}

impl Role {
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "viewer" => Some(Role::Viewer),
            "control" => Some(Role::Control),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Control => "control",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The configured tokens. Secrets never appear in `Debug` output or logs.
#[derive(Clone, Default)]
pub struct TokenTable {
    entries: Vec<(Role, Vec<u8>)>,
}

impl fmt::Debug for TokenTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|(role, _)| role))
            .finish()
    }
}

/// Shortest token accepted: a guessable token on a LAN-facing doorbell is worse than none.
pub const MIN_TOKEN_LEN: usize = 8;

impl TokenTable {
    /// Adds `ROLE:TOKEN`.
    pub fn add_spec(&mut self, spec: &str) -> Result<(), String> {
        let (role, token) = spec
            .split_once(':')
            .ok_or_else(|| "expected ROLE:TOKEN (e.g. admin:s3cret-token)".to_string())?;
        let role = parse_role(role)?;
        if token.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "the {role} token is shorter than {MIN_TOKEN_LEN} characters"
            ));
        }
        // Tokens travel in a header, a URL and a cookie: keep to characters safe in all three.
        if !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~/=".contains(&b))
        {
            return Err(format!(
                "the {role} token may hold only letters, digits and - . _ ~ / ="
            ));
        }
        if self.entries.iter().any(|(_, t)| t == token.as_bytes()) {
            return Err("the same token is given twice".to_string());
        }
        self.entries.push((role, token.as_bytes().to_vec()));
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn roles(&self) -> impl Iterator<Item = Role> + '_ {
        self.entries.iter().map(|(role, _)| *role)
    }

    /// The role a presented token grants. Every configured token is compared, each in constant
    /// time, so the time taken says nothing about which token (or which prefix) was close.
    pub fn role_of(&self, presented: &str) -> Option<Role> {
        let mut found = None;
        for (role, token) in &self.entries {
            if constant_time_eq(token, presented.as_bytes()) {
                found = Some(*role);
            }
        }
        found
    }
}

/// Compares in time that depends only on the lengths, never on where the bytes differ.
fn constant_time_eq(expected: &[u8], presented: &[u8]) -> bool {
    let mut diff =
        (expected.len() ^ presented.len()) as u8 | ((expected.len() != presented.len()) as u8);
    for (i, e) in expected.iter().enumerate() {
        let p = presented.get(i).copied().unwrap_or(0);
        diff |= e ^ p;
    }
    std::hint::black_box(diff) == 0
}

/// Which role a `--token ROLE:TOKEN` grants.
fn parse_role(text: &str) -> Result<Role, String> {
    Role::parse(text).ok_or_else(|| format!("role {text:?} is not one of viewer, control, admin"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_nest() {
        assert!(Role::Admin > Role::Control && Role::Control > Role::Viewer);
    }

    #[test]
    fn tokens_map_to_roles() {
        let mut table = TokenTable::default();
        table.add_spec("viewer:viewer-token").unwrap();
        table.add_spec("admin:admin-token-1").unwrap();
        assert_eq!(table.role_of("viewer-token"), Some(Role::Viewer));
        assert_eq!(table.role_of("admin-token-1"), Some(Role::Admin));
        assert_eq!(table.role_of("admin-token-"), None);
        assert_eq!(table.role_of("admin-token-12"), None);
        assert_eq!(table.role_of(""), None);
        assert!(table.add_spec("root:whatever-long").is_err());
        assert!(table.add_spec("viewer:short").is_err());
        assert!(table.add_spec("viewer-no-colon").is_err());
        assert!(table.add_spec("control:viewer-token").is_err());
        assert!(!format!("{table:?}").contains("token"));
    }

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
