//! Every SQL text the store prepares, checked against the SQLite this binary links.
//!
//! `.cargo/config.toml` compiles SQLite without features the store never uses
//! (`SQLITE_OMIT_*`). Most of them make the omitted syntax a clean error at prepare time, but
//! the amalgamation's parser is generated with every feature in, so a few do not: with
//! `SQLITE_OMIT_COMPOUND_SELECT` a `UNION` returns only its last `SELECT`'s rows, with
//! `SQLITE_OMIT_FOREIGN_KEY` a `REFERENCES` clause is parsed and not enforced, and a pragma
//! left out (`SQLITE_OMIT_FLAG_PRAGMAS`, `SQLITE_OMIT_AUTOVACUUM`) is a silent no-op. These
//! tests read the store's sources, prepare every SQL string literal in them (the schemas
//! first), check that each pragma they name is compiled in, and refuse the silent ones, so a
//! new statement that needs an omitted feature fails here instead of misbehaving.

use rusqlite::Connection;

const SOURCES: [(&str, &str); 3] = [
    ("store.rs", include_str!("store.rs")),
    ("clip_rows.rs", include_str!("clip_rows.rs")),
    ("durable.rs", include_str!("durable.rs")),
];

/// Syntax that the trimmed SQLite still parses but no longer carries out.
const SILENTLY_OMITTED: [&str; 4] = ["UNION", "INTERSECT", "EXCEPT", "REFERENCES"];

/// The string literals of `source` (escapes undone, `\` line continuations joined).
fn string_literals(source: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut chars = source.chars().peekable();
    let mut previous = ' ';
    while let Some(c) = chars.next() {
        if c == '/' && chars.peek() == Some(&'/') {
            // A comment, which may quote words.
            while chars.next().is_some_and(|c| c != '\n') {}
            previous = '\n';
        } else if c == '"' && previous != '\'' {
            // (After a `'`, a `'"'` char literal, not the start of a string.)
            let mut text = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => match chars.next() {
                        Some('\n') => {
                            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                                chars.next();
                            }
                        }
                        Some('n') => text.push('\n'),
                        Some(other) => text.push(other),
                        None => {}
                    },
                    other => text.push(other),
                }
            }
            found.push(text);
            previous = '"';
        } else {
            previous = c;
        }
    }
    found
}

fn is_sql(text: &str) -> bool {
    let first = text.split_whitespace().next().unwrap_or("");
    ["SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "PRAGMA"].contains(&first)
}

/// Every SQL statement in the store's sources, `{COLUMNS}` filled in as `format!` does.
fn statements() -> Vec<(&'static str, String)> {
    let store = SOURCES[0].1;
    let columns_at = store
        .find("const COLUMNS: &str = ")
        .expect("store.rs has COLUMNS");
    let columns = &string_literals(&store[columns_at..])[0];
    let mut statements = Vec::new();
    for (file, source) in SOURCES {
        for text in string_literals(source).into_iter().filter(|t| is_sql(t)) {
            let text = text.replace("{COLUMNS}", columns);
            for statement in text.split(';').filter(|s| !s.trim().is_empty()) {
                statements.push((file, statement.trim().to_string()));
            }
        }
    }
    statements
}

#[test]
fn every_statement_the_store_uses_prepares() {
    let all = statements();
    assert!(all.len() > 40, "found only {} statements", all.len());
    let conn = Connection::open_in_memory().unwrap();
    for (_, create) in all.iter().filter(|(_, s)| s.starts_with("CREATE TABLE")) {
        conn.execute(create, []).unwrap();
    }
    for (file, statement) in &all {
        if let Err(e) = conn.prepare(statement) {
            panic!("{file}: {statement:?} does not prepare: {e}");
        }
    }
}

#[test]
fn every_pragma_the_store_uses_is_compiled_in() {
    let mut names: Vec<String> = statements()
        .iter()
        .filter_map(|(_, s)| s.strip_prefix("PRAGMA "))
        .map(|rest| {
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
            rest[..end.unwrap_or(rest.len())].to_string()
        })
        .collect();
    // Set through rusqlite's `pragma_update` rather than written out.
    for (_, source) in SOURCES {
        for call in source.split("pragma_update(None, ").skip(1) {
            names.push(string_literals(call)[0].clone());
        }
    }
    assert!(names.iter().any(|n| n == "cache_size"), "{names:?}");
    assert!(names.iter().any(|n| n == "wal_checkpoint"), "{names:?}");
    let conn = Connection::open_in_memory().unwrap();
    for name in names {
        // An unknown (or omitted) pragma is no statement at all: no columns, no row.
        let columns = conn
            .prepare(&format!("PRAGMA {name}"))
            .unwrap()
            .column_count();
        assert!(
            columns > 0,
            "PRAGMA {name} is not compiled into this SQLite"
        );
    }
}

#[test]
fn no_statement_uses_syntax_the_trimmed_sqlite_ignores() {
    for (file, statement) in statements() {
        let upper = statement.to_ascii_uppercase();
        for word in SILENTLY_OMITTED {
            assert!(
                !upper
                    .split(|c: char| !c.is_ascii_alphanumeric())
                    .any(|w| w == word),
                "{file}: {statement:?} uses {word}, which .cargo/config.toml compiles out of \
                 SQLite (SQLITE_OMIT_COMPOUND_SELECT / SQLITE_OMIT_FOREIGN_KEY)"
            );
        }
    }
}

#[test]
fn the_omitted_syntax_fails_or_is_inert_as_documented() {
    let conn = Connection::open_in_memory().unwrap();
    // A compound SELECT runs its last part only (see the module comment): not an error, which is
    // why the test above refuses it in the store's SQL.
    let rows: Vec<i64> = conn
        .prepare("SELECT 1 UNION ALL SELECT 2")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows, [2]);
    // Clean errors at prepare time.
    for omitted in [
        "SELECT 0x10",
        "CREATE TABLE g (a INTEGER, b INTEGER AS (a + 1))",
        "SELECT \"no_such_column\" FROM sqlite_master",
        "SELECT X'00'",
    ] {
        assert!(conn.prepare(omitted).is_err(), "{omitted} prepared");
    }
}
