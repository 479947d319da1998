//! The durable event store: SQLite in `--data-dir` (WAL, `synchronous=NORMAL` plus our own
//! sync of the WAL, see [`super::durable`]).
//!
//! Why SQLite rather than a log of our own: it already survives `kill -9` and power cuts with a
//! torn last write (the WAL frame checksum drops it), `AUTOINCREMENT` never reuses an id even
//! after every row is deleted, and queries by type/before/after come for free. One writer
//! ([`Store`], owned by the event hub's writer thread) commits batches, and the syncer thread
//! makes them durable — one fsync for whatever has queued, not one per event (group commit);
//! readers ([`StoreReader`]) use their own connections, which WAL
//! lets run beside the writer.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, params};
use serde_json::{Map, Value};

use super::clip_rows::{self, ClipLocation, ClipRows, ClipUpdate, Updated};
use super::durable::{FLOOR_BLOCK, FLOOR_MARGIN, Wal};
use super::event::{Event, EventDraft};

pub const DB_FILE: &str = "events.sqlite3";

/// Retention limits: the oldest go first.
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    pub max_events: u64,
    pub max_snapshot_bytes: u64,
    /// Bytes of clip files kept; the oldest recordings go first.
    pub max_clip_bytes: u64,
}

/// Why the store could not do what was asked. Mapped to HTTP: `Full` → 507, the others → 503.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreError {
    /// The disk holding the data dir is full.
    Full,
    /// The data dir cannot be written (read-only file system or permissions); reads still work.
    ReadOnly(String),
    /// Any other failure of the store: an I/O error, a corrupt or vanished database file, a
    /// data dir that cannot be created, SQLite refusing WAL mode.
    Unavailable(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Full => f.write_str("the data dir's disk is full"),
            StoreError::ReadOnly(why) => write!(f, "the data dir is read-only: {why}"),
            StoreError::Unavailable(why) => write!(f, "the event store is unavailable: {why}"),
        }
    }
}

impl StoreError {
    /// An I/O failure of the store's own (not SQLite's) file operations, `doing` what.
    pub fn from_io(doing: &str, err: &std::io::Error) -> StoreError {
        match err.kind() {
            std::io::ErrorKind::StorageFull => StoreError::Full,
            std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied => {
                StoreError::ReadOnly(format!("{doing}: {err}"))
            }
            _ => StoreError::Unavailable(format!("{doing}: {err}")),
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        match err.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => StoreError::Full,
            Some(ErrorCode::ReadOnly) => StoreError::ReadOnly(err.to_string()),
            _ => StoreError::Unavailable(err.to_string()),
        }
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_type TEXT NOT NULL,
    timestamp REAL NOT NULL,
    source TEXT NOT NULL,
    data TEXT NOT NULL,
    has_snapshot INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS events_by_type ON events(event_type, id);
CREATE TABLE IF NOT EXISTS snapshots (
    event_id INTEGER PRIMARY KEY,
    jpeg BLOB NOT NULL,
    bytes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS delivery_cursors (
    name TEXT PRIMARY KEY,
    last_id INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS id_floor (
    slot INTEGER PRIMARY KEY CHECK (slot = 1),
    value INTEGER NOT NULL
);
";

/// The single writer.
pub struct Store {
    conn: Connection,
    retention: Retention,
    /// Rows in `events`, kept in memory so retention needs no COUNT(*) per commit.
    stored: u64,
    snapshot_bytes: u64,
    /// Which events have clips, in which files, and the clip folder (`<data dir>/clips`).
    clips: ClipRows,
    /// The WAL, synced by the syncer thread, and the id floor (see [`super::durable`]).
    wal: Arc<Wal>,
    /// The database file (for the checkpointer's connection).
    db_path: PathBuf,
    /// After an unclean close: the next event's id comes after this floor. Applied with that
    /// event, so until then the status shows the last id actually stored.
    skip_to: Option<u64>,
}

/// Page cache per connection, in KiB. SQLite's default (2 MiB each) across the writer and the
/// pooled readers would grow RSS with the database on a 512 MB board; the queries here are
/// by primary key or a short index range, so a small cache costs little.
const CACHE_KIB: i64 = 512;

fn open_connection(path: &Path, flags: OpenFlags) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    Ok(conn)
}

impl Store {
    /// Opens (creating if needed) the store in `dir`. SQLite recovers a torn last write here.
    pub fn open(dir: &Path, retention: Retention) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            let why = format!("cannot create {}: {e}", dir.display());
            match e.kind() {
                std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied => {
                    StoreError::ReadOnly(why)
                }
                _ => StoreError::Unavailable(why),
            }
        })?;
        let conn = open_connection(
            &dir.join(DB_FILE),
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        )?;
        if conn.is_readonly(rusqlite::DatabaseName::Main)? {
            // SQLite falls back to read-only when the file cannot be written.
            return Err(StoreError::ReadOnly(format!(
                "{} cannot be written",
                dir.join(DB_FILE).display()
            )));
        }
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Unavailable(format!(
                "could not switch to WAL mode (got {mode})"
            )));
        }
        // Commits reach the WAL's pages without an fsync; `Wal::sync` makes them durable
        // (checkpoints still sync, as SQLite always does). The syncer thread checkpoints on
        // its own connection (`Store::checkpointer`); this connection only steps in when the
        // WAL outgrows that (a burst of over 16 MB within a second).
        conn.execute_batch("PRAGMA synchronous=NORMAL; PRAGMA wal_autocheckpoint=4096;")?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(clip_rows::SCHEMA)?;
        // The first block of ids is made durable here, so the first event needs no sync of
        // its own before it is told.
        let skip_to = unclean_floor(&conn)?;
        let floor = skip_to
            .unwrap_or(last_id_given(&conn)?)
            .saturating_add(FLOOR_BLOCK);
        write_floor(&conn, floor)?;
        let wal_path = dir.join(format!("{DB_FILE}-wal"));
        let wal = Wal::open(wal_path.clone())
            .map_err(|e| StoreError::from_io(&format!("cannot open {}", wal_path.display()), &e))?;
        wal.floor_committed(floor);
        wal.sync()
            .map_err(|e| StoreError::from_io("cannot sync the event store", &e))?;
        let (stored, snapshot_bytes) = conn.query_row(
            "SELECT (SELECT COUNT(*) FROM events), (SELECT COALESCE(SUM(bytes), 0) FROM snapshots)",
            [],
            |row| Ok((row.get::<_, i64>(0)? as u64, row.get::<_, i64>(1)? as u64)),
        )?;
        let clips = ClipRows::new(dir.join(crate::clips::file::DIR), retention.max_clip_bytes);
        let mut store = Store {
            conn,
            retention,
            stored,
            snapshot_bytes,
            clips,
            wal: Arc::new(wal),
            db_path: dir.join(DB_FILE),
            skip_to,
        };
        store.recover_clips()?;
        Ok(store)
    }

    /// The WAL, for the syncer thread.
    pub fn wal(&self) -> Arc<Wal> {
        Arc::clone(&self.wal)
    }

    /// A connection of its own for the syncer thread's checkpoints, which then never hold up
    /// the writer's commits (a checkpoint copies the WAL into the database file and syncs both:
    /// several milliseconds, or far more on an SD card).
    pub fn checkpointer(&self) -> Result<Connection, StoreError> {
        open_connection(&self.db_path, OpenFlags::SQLITE_OPEN_READ_WRITE)
    }

    /// Makes everything committed so far durable, here and now.
    pub fn sync(&self) -> Result<(), StoreError> {
        self.wal
            .sync()
            .map_err(|e| StoreError::from_io("cannot make the events durable", &e))
    }

    /// Before events up to `last_id` are told to anyone: syncs now if an id is above the
    /// durable floor (only when more than [`FLOOR_MARGIN`] ids were taken within one sync).
    pub fn make_tellable(&self, last_id: u64) -> Result<(), StoreError> {
        if last_id <= self.wal.durable_floor() {
            return Ok(());
        }
        self.sync()
    }

    /// Brings the clip rows and files back in line after a crash (see `clip_rows::recover`).
    fn recover_clips(&mut self) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        let recovered = self
            .clips
            .recover(&tx)
            .and_then(|r| tx.commit().map(|()| r).map_err(StoreError::from));
        self.clips.committed(recovered.is_ok());
        let recovered = recovered?;
        if recovered != Default::default() {
            log::info!(
                "clips: {} recording(s) cut off by a stop were repaired, {} unusable one(s) and \
                 {} stray file(s) removed, {} event(s) lost their clip to max_clip_bytes",
                recovered.repaired,
                recovered.removed,
                recovered.orphans,
                recovered.unclipped
            );
        }
        Ok(())
    }

    /// Applies the clip writer's reports and the clip byte budget in one transaction, then
    /// deletes the files it dropped.
    pub fn update_clips(&mut self, updates: &[ClipUpdate]) -> Result<Updated, StoreError> {
        let tx = self.conn.transaction()?;
        let before = self.clips.bytes;
        let outcome = self
            .clips
            .update(&tx, updates)
            .and_then(|unclipped| tx.commit().map(|()| unclipped).map_err(StoreError::from));
        if outcome.is_err() {
            self.clips.bytes = before;
        }
        self.clips.committed(outcome.is_ok());
        outcome
    }

    /// Bytes the clip files hold (finished recordings).
    pub fn clip_bytes(&self) -> u64 {
        self.clips.bytes
    }

    /// Stores `drafts` in one transaction (one fsync) and applies retention in the same
    /// transaction. Returns the events with their ids, in order. Nothing is stored on error.
    pub fn append(&mut self, drafts: &[EventDraft]) -> Result<Vec<Event>, StoreError> {
        self.append_saving(drafts, &[])
    }

    /// [`Store::append`], saving the delivery `cursors` (name, last delivered id) in the same
    /// transaction: a moved cursor rides along with the next batch instead of costing an fsync.
    pub fn append_saving(
        &mut self,
        drafts: &[EventDraft],
        cursors: &[(String, u64)],
    ) -> Result<Vec<Event>, StoreError> {
        let clip_bytes = self.clips.bytes;
        let result = self.append_in_transaction(drafts, cursors);
        // Only a commit makes the clip files whose rows it deleted deletable.
        self.clips.committed(result.is_ok());
        if result.is_err() {
            self.clips.bytes = clip_bytes;
        }
        result
    }

    fn append_in_transaction(
        &mut self,
        drafts: &[EventDraft],
        cursors: &[(String, u64)],
    ) -> Result<Vec<Event>, StoreError> {
        let tx = self.conn.transaction()?;
        write_cursors(&tx, cursors)?;
        if let Some(floor) = self.skip_to {
            skip_ids_to(&tx, floor)?;
        }
        let mut batch_new = None;
        let mut events = Vec::with_capacity(drafts.len());
        let mut added_bytes = 0u64;
        {
            let mut insert_event = tx.prepare_cached(
                "INSERT INTO events (event_type, timestamp, source, data, has_snapshot)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut insert_snapshot = tx.prepare_cached(
                "INSERT INTO snapshots (event_id, jpeg, bytes) VALUES (?1, ?2, ?3)",
            )?;
            for draft in drafts {
                let data = crate::json::text(&draft.data);
                insert_event.execute(params![
                    draft.event_type,
                    draft.timestamp,
                    draft.source,
                    data,
                    draft.snapshot.is_some()
                ])?;
                let id = tx.last_insert_rowid() as u64;
                if let Some(jpeg) = &draft.snapshot {
                    insert_snapshot.execute(params![id as i64, &jpeg[..], jpeg.len() as i64])?;
                    added_bytes += jpeg.len() as u64;
                }
                let clip_file = match draft.clip {
                    Some(plan) => self.clips.insert(&tx, id, plan, &mut batch_new)?,
                    None => None,
                };
                events.push(Event {
                    id,
                    event_type: draft.event_type.clone(),
                    timestamp: draft.timestamp,
                    source: draft.source.clone(),
                    data: draft.data.clone(),
                    has_snapshot: draft.snapshot.is_some(),
                    clip_file,
                });
            }
        }
        let stored = self.stored + drafts.len() as u64;
        let snapshot_bytes = self.snapshot_bytes + added_bytes;
        let (stored, snapshot_bytes, unsnapshotted, deleted_up_to) =
            apply_retention(&tx, self.retention, stored, snapshot_bytes)?;
        if let Some(cutoff) = deleted_up_to {
            self.clips.events_deleted_up_to(&tx, cutoff)?;
        }
        let last_id = events.last().map_or(0, |event| event.id);
        let raised_floor = (last_id.saturating_add(FLOOR_MARGIN) > self.wal.committed_floor())
            .then(|| last_id.saturating_add(FLOOR_BLOCK));
        if let Some(floor) = raised_floor {
            write_floor(&tx, floor)?;
        }
        tx.commit()?;
        self.skip_to = None;
        if let Some(floor) = raised_floor {
            self.wal.floor_committed(floor);
        }
        self.stored = stored;
        self.snapshot_bytes = snapshot_bytes;
        for event in &mut events {
            if unsnapshotted.contains(&event.id) {
                event.has_snapshot = false;
            }
            if deleted_up_to.is_some_and(|cutoff| event.id as i64 <= cutoff) {
                event.clip_file = None;
            }
        }
        Ok(events)
    }

    pub fn stored(&self) -> u64 {
        self.stored
    }

    /// Saves delivery cursors (name, last delivered id) in a transaction of their own.
    pub fn save_cursors(&mut self, cursors: &[(String, u64)]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        write_cursors(&tx, cursors)?;
        tx.commit()?;
        Ok(())
    }

    /// Lowers the id floor to the last id given, durably: everything given is committed, so
    /// the next start may continue right after it (a clean close leaves no gap in the ids).
    fn lower_floor(&mut self) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        // Ids skipped to after an unclean close stay protected until an event took one.
        let last_id = last_id_given(&tx)?.max(self.skip_to.unwrap_or(0));
        write_floor(&tx, last_id)?;
        tx.commit()?;
        self.sync()?;
        self.wal.floor_lowered(last_id);
        Ok(())
    }

    /// Folds the WAL back into the database file, for a clean shutdown.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.conn
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
        Ok(())
    }
}

impl Drop for Store {
    /// A drop is a clean close: nothing the store gave out is lost, so the floor can come down
    /// (a crash or a power cut never gets here and leaves the floor above every id told).
    fn drop(&mut self) {
        if let Err(err) = self.lower_floor() {
            log::warn!("event ids will skip ahead after the next start: {err}");
        }
    }
}

/// The largest event id ever given (also after its event was deleted).
fn last_id_given(conn: &Connection) -> Result<u64, StoreError> {
    let seq: i64 = conn.query_row(
        "SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'events'",
        [],
        |row| row.get(0),
    )?;
    Ok(u64::try_from(seq).unwrap_or(0))
}

fn write_floor(conn: &Connection, floor: u64) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO id_floor (slot, value) VALUES (1, ?1)
         ON CONFLICT(slot) DO UPDATE SET value = excluded.value",
        params![sql_int(floor)],
    )?;
    Ok(())
}

/// At open: the id floor, if it is above the last id given (the store was not closed cleanly:
/// ids up to the floor may have been told before a crash or a power cut lost their events).
fn unclean_floor(conn: &Connection) -> Result<Option<u64>, StoreError> {
    let last_id = last_id_given(conn)?;
    let floor: Option<i64> = conn
        .query_row("SELECT value FROM id_floor WHERE slot = 1", [], |row| {
            row.get(0)
        })
        .optional()?;
    let floor = floor.and_then(|f| u64::try_from(f).ok()).unwrap_or(0);
    if floor <= last_id {
        return Ok(None);
    }
    log::info!(
        "the event store was not closed cleanly: the next event id comes after {floor} (the \
         last stored is {last_id}; the ones between may have been shown to clients)"
    );
    Ok(Some(floor))
}

/// Makes the next id come after `floor` (in the transaction that stores it).
fn skip_ids_to(conn: &Connection, floor: u64) -> Result<(), StoreError> {
    let moved = conn.execute(
        "UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'events'",
        params![sql_int(floor)],
    )?;
    if moved == 0 {
        conn.execute(
            "INSERT INTO sqlite_sequence (name, seq) VALUES ('events', ?1)",
            params![sql_int(floor)],
        )?;
    }
    Ok(())
}

fn write_cursors(
    tx: &rusqlite::Transaction<'_>,
    cursors: &[(String, u64)],
) -> Result<(), StoreError> {
    if cursors.is_empty() {
        return Ok(());
    }
    let mut upsert = tx.prepare_cached(
        "INSERT INTO delivery_cursors (name, last_id) VALUES (?1, ?2)
         ON CONFLICT(name) DO UPDATE SET last_id = excluded.last_id",
    )?;
    for (name, last_id) in cursors {
        upsert.execute(params![name, i64::try_from(*last_id).unwrap_or(i64::MAX)])?;
    }
    Ok(())
}

/// Deletes the oldest events past `max_events` and the oldest snapshots past
/// `max_snapshot_bytes`. Returns the new totals, the ids whose snapshot was removed, and the
/// id up to which events were deleted (their clips go with them).
fn apply_retention(
    tx: &rusqlite::Transaction<'_>,
    retention: Retention,
    mut stored: u64,
    mut snapshot_bytes: u64,
) -> Result<(u64, u64, Vec<u64>, Option<i64>), StoreError> {
    let mut unsnapshotted = Vec::new();
    let mut deleted_up_to = None;
    if stored > retention.max_events {
        let excess = stored - retention.max_events;
        let cutoff: i64 = tx.query_row(
            "SELECT id FROM events ORDER BY id LIMIT 1 OFFSET ?1",
            params![(excess - 1) as i64],
            |row| row.get(0),
        )?;
        let freed: i64 = tx.query_row(
            "SELECT COALESCE(SUM(bytes), 0) FROM snapshots WHERE event_id <= ?1",
            params![cutoff],
            |row| row.get(0),
        )?;
        tx.execute(
            "DELETE FROM snapshots WHERE event_id <= ?1",
            params![cutoff],
        )?;
        let deleted = tx.execute("DELETE FROM events WHERE id <= ?1", params![cutoff])?;
        stored -= deleted as u64;
        snapshot_bytes -= freed as u64;
        deleted_up_to = Some(cutoff);
    }
    while snapshot_bytes > retention.max_snapshot_bytes {
        let oldest: Option<(i64, i64)> = tx
            .query_row(
                "SELECT event_id, bytes FROM snapshots ORDER BY event_id LIMIT 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()?;
        let Some((event_id, bytes)) = oldest else {
            snapshot_bytes = 0;
            break;
        };
        tx.execute(
            "DELETE FROM snapshots WHERE event_id = ?1",
            params![event_id],
        )?;
        tx.execute(
            "UPDATE events SET has_snapshot = 0 WHERE id = ?1",
            params![event_id],
        )?;
        snapshot_bytes -= bytes as u64;
        unsnapshotted.push(event_id as u64);
    }
    Ok((stored, snapshot_bytes, unsnapshotted, deleted_up_to))
}

/// A query over stored events (the `/api/events` parameters).
#[derive(Clone, Debug, Default)]
pub struct EventQuery {
    pub limit: u64,
    pub before: Option<u64>,
    pub after: Option<u64>,
    /// Event types to list (at most [`MAX_QUERY_TYPES`]); empty: every type.
    pub event_types: Vec<String>,
}

/// Most event types one `/api/events` query may name.
pub const MAX_QUERY_TYPES: usize = 8;

/// What the store holds, for status and for the SSE `gap` decision.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StoreBounds {
    /// The oldest id still stored.
    pub first_id: Option<u64>,
    /// The largest id ever assigned (also after its event was deleted).
    pub last_id: u64,
    pub stored: u64,
}

/// Read side: a small pool of read-only connections shared by connection threads.
pub struct StoreReader {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

/// Idle read connections kept open; more may exist briefly under load.
const MAX_IDLE_READERS: usize = 4;

fn row_to_event(row: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    let data: String = row.get(4)?;
    let data = match serde_json::from_str(&data) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    Ok(Event {
        id: row.get::<_, i64>(0)? as u64,
        event_type: row.get(1)?,
        timestamp: row.get(2)?,
        source: row.get(3)?,
        data,
        has_snapshot: row.get(5)?,
        clip_file: row.get::<_, Option<i64>>(6)?.map(|v| v as u64),
    })
}

const COLUMNS: &str = "id, event_type, timestamp, source, data, has_snapshot,
    (SELECT file_id FROM clips WHERE clips.event_id = events.id)";

/// An id or count as SQLite's signed 64-bit integer. The HTTP layer never passes more than
/// 2^63-1, but a larger value must not wrap negative here either (it made a replay loop
/// forever): it saturates, which keeps every comparison's meaning ("after an id no event can
/// have" matches nothing).
fn sql_int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl StoreReader {
    pub fn new(dir: &Path) -> StoreReader {
        StoreReader {
            path: dir.join(DB_FILE),
            idle: Mutex::new(Vec::new()),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let pooled = self.idle.lock().expect("reader pool").pop();
        let (conn, stand_ins) = match pooled {
            Some(conn) => (conn, false),
            None => {
                let conn = open_connection(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                let stand_ins = clip_rows::readable_without_clips(&conn)?;
                (conn, stand_ins)
            }
        };
        let result = f(&conn);
        let mut idle = self.idle.lock().expect("reader pool");
        if idle.len() < MAX_IDLE_READERS && !stand_ins {
            idle.push(conn);
        }
        Ok(result?)
    }

    /// Newest first, as `/api/events` answers.
    pub fn query(&self, q: &EventQuery) -> Result<Vec<Event>, StoreError> {
        self.with(|conn| {
            let sql = format!(
                "SELECT {COLUMNS} FROM events
                 WHERE (?1 IS NULL OR id < ?1) AND (?2 IS NULL OR id > ?2)
                   AND (?3 IS NULL OR event_type IN (?3, ?5, ?6, ?7, ?8, ?9, ?10, ?11))
                 ORDER BY id DESC LIMIT ?4"
            );
            // One statement for any number of types up to the bound: unused slots are NULL,
            // which IN never matches.
            let mut named = q.event_types.iter().map(String::as_str);
            let t: [Option<&str>; MAX_QUERY_TYPES] = std::array::from_fn(|_| named.next());
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(
                params![
                    q.before.map(sql_int),
                    q.after.map(sql_int),
                    t[0],
                    sql_int(q.limit),
                    t[1],
                    t[2],
                    t[3],
                    t[4],
                    t[5],
                    t[6],
                    t[7]
                ],
                row_to_event,
            )?;
            rows.collect()
        })
    }

    /// Oldest first: the events after `after_id`, for replay.
    pub fn after(&self, after_id: u64, limit: u64) -> Result<Vec<Event>, StoreError> {
        self.with(|conn| {
            let sql = format!("SELECT {COLUMNS} FROM events WHERE id > ?1 ORDER BY id LIMIT ?2");
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params![sql_int(after_id), sql_int(limit)], row_to_event)?;
            rows.collect()
        })
    }

    pub fn get(&self, id: u64) -> Result<Option<Event>, StoreError> {
        self.with(|conn| {
            let sql = format!("SELECT {COLUMNS} FROM events WHERE id = ?1");
            conn.prepare_cached(&sql)?
                .query_row(params![sql_int(id)], row_to_event)
                .optional()
        })
    }

    /// Where event `id`'s clip is, if it has one.
    pub fn clip(&self, id: u64) -> Result<Option<ClipLocation>, StoreError> {
        self.with(|conn| clip_rows::locate(conn, id))
    }

    pub fn snapshot(&self, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(|conn| {
            conn.prepare_cached("SELECT jpeg FROM snapshots WHERE event_id = ?1")?
                .query_row(params![sql_int(id)], |row| row.get(0))
                .optional()
        })
    }

    /// The last event id the consumer `name` delivered, if it ever saved one. A store written
    /// by an older porchlight has no cursor table: `None` then, not an error.
    pub fn cursor(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let found = self.with(|conn| {
            conn.prepare_cached("SELECT last_id FROM delivery_cursors WHERE name = ?1")?
                .query_row(params![name], |row| row.get::<_, i64>(0))
                .optional()
        });
        match found {
            Ok(id) => Ok(id.map(|id| u64::try_from(id).unwrap_or(0))),
            Err(StoreError::Unavailable(why)) if why.contains("no such table") => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// The newest event that still has its picture, and the picture.
    pub fn latest_snapshot(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        self.with(|conn| {
            conn.prepare_cached(
                "SELECT event_id, jpeg FROM snapshots ORDER BY event_id DESC LIMIT 1",
            )?
            .query_row([], |row| {
                Ok((
                    u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
                    row.get(1)?,
                ))
            })
            .optional()
        })
    }

    pub fn bounds(&self) -> Result<StoreBounds, StoreError> {
        self.with(|conn| {
            conn.query_row(
                "SELECT (SELECT MIN(id) FROM events),
                        (SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'events'),
                        (SELECT COUNT(*) FROM events)",
                [],
                |row| {
                    Ok(StoreBounds {
                        first_id: row.get::<_, Option<i64>>(0)?.map(|v| v as u64),
                        last_id: row.get::<_, i64>(1)? as u64,
                        stored: row.get::<_, i64>(2)? as u64,
                    })
                },
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn temp_dir(name: &str) -> PathBuf {
        super::super::scratch_dir(&format!("store-{name}"))
    }

    fn draft(event_type: &str) -> EventDraft {
        EventDraft::new(event_type, "test", Map::new())
    }

    const LOTS: Retention = Retention {
        max_events: 1000,
        max_snapshot_bytes: 1 << 30,
        max_clip_bytes: 1 << 30,
    };

    #[test]
    fn ids_increase_and_survive_reopen_and_deletion() {
        let dir = temp_dir("ids");
        let few = Retention {
            max_events: 2,
            max_snapshot_bytes: 1 << 20,
            max_clip_bytes: 1 << 20,
        };
        let mut store = Store::open(&dir, few).unwrap();
        let first = store.append(&[draft("a"), draft("b"), draft("c")]).unwrap();
        assert_eq!(
            first.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(store.stored(), 2);
        drop(store);
        let mut store = Store::open(&dir, few).unwrap();
        assert_eq!(store.stored(), 2);
        let next = store.append(&[draft("d")]).unwrap();
        assert_eq!(next[0].id, 4);
        let reader = StoreReader::new(&dir);
        let bounds = reader.bounds().unwrap();
        assert_eq!(
            bounds,
            StoreBounds {
                first_id: Some(3),
                last_id: 4,
                stored: 2
            }
        );
        std::fs::remove_dir_all(dir).ok();
    }

    /// A `kill -9` (no clean close) keeps every commit but not the lowered floor; a power cut
    /// can also lose the last commits, which clients may have seen. Neither gives an id twice.
    #[test]
    fn ids_told_before_a_crash_or_a_power_cut_are_never_given_again() {
        use super::super::durable::FLOOR_BLOCK;
        let dir = temp_dir("floor");
        let store = Store::open(&dir, LOTS).unwrap();
        let wal = store.wal();
        assert_eq!(
            wal.durable_floor(),
            FLOOR_BLOCK,
            "the first block is durable at open"
        );
        let mut store = store;
        let told = store.append(&[draft("a"), draft("b"), draft("c")]).unwrap();
        assert_eq!(told.last().unwrap().id, 3);
        std::mem::forget(store); // kill -9: no clean close
        // And a power cut lost the last commit: event 3 and its sequence are gone from disk.
        let raw = Connection::open(dir.join(DB_FILE)).unwrap();
        raw.execute_batch(
            "DELETE FROM events WHERE id = 3;
             UPDATE sqlite_sequence SET seq = 2 WHERE name = 'events';",
        )
        .unwrap();
        drop(raw);
        let store = Store::open(&dir, LOTS).unwrap();
        let bounds = StoreReader::new(&dir).bounds().unwrap();
        assert_eq!(
            bounds.last_id, 2,
            "until an event takes the next id, the last stored shows"
        );
        drop(store); // a clean close with no event in between keeps the skip
        let mut store = Store::open(&dir, LOTS).unwrap();
        let next = store.append(&[draft("d")]).unwrap();
        assert_eq!(
            next[0].id,
            FLOOR_BLOCK + 1,
            "ids continue above the floor, never at 3 again"
        );
        drop(store);
        let mut store = Store::open(&dir, LOTS).unwrap();
        assert_eq!(
            store.append(&[draft("e")]).unwrap()[0].id,
            FLOOR_BLOCK + 2,
            "a clean close leaves no gap"
        );
        drop(store);
        std::fs::remove_dir_all(dir).ok();
    }

    /// The floor is raised ahead of the ids, in blocks, and an id above the durable floor is
    /// synced before it may be told.
    #[test]
    fn the_floor_stays_ahead_of_the_ids() {
        use super::super::durable::{FLOOR_BLOCK, FLOOR_MARGIN};
        let dir = temp_dir("ahead");
        let mut store = Store::open(&dir, LOTS).unwrap();
        let wal = store.wal();
        let batch: Vec<_> = (0..100).map(|_| draft("x")).collect();
        let mut last = 0;
        for _ in 0..12 {
            last = store.append(&batch).unwrap().last().unwrap().id;
            assert!(
                wal.committed_floor() >= last + FLOOR_MARGIN,
                "floor {} is not ahead of id {last}",
                wal.committed_floor()
            );
        }
        assert_eq!(last, 1200);
        // Nothing synced since open, so 1200 is above the durable floor (the first block).
        assert_eq!(wal.durable_floor(), FLOOR_BLOCK);
        store.make_tellable(FLOOR_BLOCK).unwrap();
        assert_eq!(
            wal.durable_floor(),
            FLOOR_BLOCK,
            "no sync needed up to the floor"
        );
        store.make_tellable(last).unwrap();
        assert!(
            wal.durable_floor() >= last + FLOOR_MARGIN,
            "synced with its raised floor"
        );
        let on_disk: i64 = store
            .conn
            .query_row("SELECT value FROM id_floor", [], |row| row.get(0))
            .unwrap();
        assert_eq!(u64::try_from(on_disk).unwrap(), wal.durable_floor());
        drop(store);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn queries_filter_and_page() {
        let dir = temp_dir("query");
        let mut store = Store::open(&dir, LOTS).unwrap();
        let drafts: Vec<_> = (0..10)
            .map(|i| draft(if i % 2 == 0 { "even" } else { "odd" }))
            .collect();
        store.append(&drafts).unwrap();
        let reader = StoreReader::new(&dir);
        let ids = |q: EventQuery| -> Vec<u64> {
            reader.query(&q).unwrap().iter().map(|e| e.id).collect()
        };
        assert_eq!(
            ids(EventQuery {
                limit: 3,
                ..Default::default()
            }),
            vec![10, 9, 8]
        );
        assert_eq!(
            ids(EventQuery {
                limit: 50,
                before: Some(5),
                after: Some(2),
                ..Default::default()
            }),
            vec![4, 3]
        );
        assert_eq!(
            ids(EventQuery {
                limit: 50,
                event_types: vec!["odd".into()],
                ..Default::default()
            }),
            vec![10, 8, 6, 4, 2]
        );
        assert_eq!(
            ids(EventQuery {
                limit: 3,
                event_types: vec!["none_such".into(), "even".into(), "odd".into()],
                ..Default::default()
            }),
            vec![10, 9, 8]
        );
        let every_slot: Vec<String> = (0..MAX_QUERY_TYPES - 1)
            .map(|i| format!("t{i}"))
            .chain(["even".to_string()])
            .collect();
        assert_eq!(
            ids(EventQuery {
                limit: 2,
                event_types: every_slot,
                ..Default::default()
            }),
            vec![9, 7]
        );
        let replay: Vec<u64> = reader.after(7, 10).unwrap().iter().map(|e| e.id).collect();
        assert_eq!(replay, vec![8, 9, 10]);
        // Ids past SQLite's range saturate instead of wrapping negative (which matched all).
        assert!(reader.after(u64::MAX, 10).unwrap().is_empty());
        assert!(reader.after(1 << 63, 10).unwrap().is_empty());
        assert!(reader.get(u64::MAX).unwrap().is_none());
        assert!(reader.snapshot(u64::MAX).unwrap().is_none());
        assert_eq!(
            ids(EventQuery {
                limit: u64::MAX,
                before: Some(u64::MAX),
                after: Some(8),
                ..Default::default()
            }),
            vec![10, 9]
        );
        assert!(
            ids(EventQuery {
                limit: 50,
                after: Some(u64::MAX),
                ..Default::default()
            })
            .is_empty()
        );
        assert!(reader.get(11).unwrap().is_none());
        assert_eq!(reader.get(3).unwrap().unwrap().event_type, "even");
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_store_from_before_clips_is_readable_read_only() {
        let dir = temp_dir("preclips");
        let conn = Connection::open(dir.join(DB_FILE)).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.execute(
            "INSERT INTO events (event_type, timestamp, source, data) VALUES ('a', 1.0, 't', '{}')",
            [],
        )
        .unwrap();
        drop(conn);
        let reader = StoreReader::new(&dir);
        let event = reader.get(1).unwrap().unwrap();
        assert_eq!((event.event_type.as_str(), event.clip_file), ("a", None));
        assert!(reader.clip(1).unwrap().is_none());
        assert_eq!(
            reader
                .query(&EventQuery {
                    limit: 5,
                    ..Default::default()
                })
                .unwrap()
                .len(),
            1
        );
        // Opened for writing, the store adds the clip tables and keeps the event; readers then
        // see the real tables.
        let mut store = Store::open(&dir, LOTS).unwrap();
        assert_eq!(store.stored(), 1);
        let mut with_clip = draft("b");
        with_clip.clip = Some(super::super::ClipPlan::New);
        let stored = store.append(&[with_clip]).unwrap();
        assert_eq!(stored[0].clip_file, Some(2));
        assert_eq!(reader.get(2).unwrap().unwrap().clip_file, Some(2));
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn snapshot_retention_drops_oldest_pictures_first() {
        let dir = temp_dir("snap");
        let retention = Retention {
            max_events: 100,
            max_snapshot_bytes: 250,
            max_clip_bytes: 1 << 20,
        };
        let mut store = Store::open(&dir, retention).unwrap();
        let with_picture = |n: usize| {
            let mut d = draft("doorbell_pressed");
            d.snapshot = Some(Arc::new(vec![0xFF; n]));
            d
        };
        store
            .append(&[with_picture(100), with_picture(100)])
            .unwrap();
        let third = store.append(&[with_picture(100)]).unwrap();
        assert!(third[0].has_snapshot);
        let reader = StoreReader::new(&dir);
        assert!(reader.snapshot(1).unwrap().is_none());
        assert!(!reader.get(1).unwrap().unwrap().has_snapshot);
        assert_eq!(reader.snapshot(2).unwrap().unwrap().len(), 100);
        assert_eq!(reader.snapshot(3).unwrap().unwrap().len(), 100);
        std::fs::remove_dir_all(dir).ok();
    }
}
