//! The store's side of clips: which events have a clip, which recording (file) each clip is in,
//! and how many bytes the files hold, in the same SQLite database as the events.
//!
//! One recording serves every event that happened while it ran ("one clip, extended": a second
//! press 2 s after the first joins the recording the first started, which then runs until
//! `clip_post_s` after the second). So there are two tables:
//!
//! - `clip_files`: one row per recording, named after the event that started it
//!   (`clips/<id>.mkv`), with its size once finished and whether it is still being written;
//! - `clips`: one row per event that has a clip, naming its recording.
//!
//! An event has a clip (`clip_url` is set) exactly while it has a `clips` row. Rows change only
//! on the event writer thread (the store's one writer), and a file is unlinked only after the
//! transaction that deleted its rows has committed: an event never points at a deleted clip.
//! A crash between the commit and the unlink leaves an orphan file, which the next start
//! removes.

use std::collections::HashSet;
use std::path::PathBuf;

use rusqlite::{OptionalExtension, Transaction, params};

use super::store::StoreError;
use crate::clips::file;

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS clip_files (
    id INTEGER PRIMARY KEY,
    bytes INTEGER NOT NULL DEFAULT 0,
    recording INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS clips (
    event_id INTEGER PRIMARY KEY,
    file_id INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS clips_by_file ON clips(file_id);
";

/// How an event being stored gets its clip (decided by the clip recorder as it is stored).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ClipPlan {
    /// A new recording, whose file is named after this event.
    New,
    /// The recording in progress that event `file_id` started.
    Join(u64),
    /// The recording that a [`ClipPlan::New`] earlier in the same batch starts.
    JoinBatch,
}

/// What the clip writer reports to the store (through the event hub's writer thread).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ClipUpdate {
    /// A recording ended; its file is `bytes` long.
    Finished { file_id: u64, bytes: u64 },
    /// A recording could not be made (no frame came, the disk refused): its events have no clip.
    Failed { file_id: u64 },
}

/// Where an event's clip is, for the reader.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClipLocation {
    pub file_id: u64,
    /// Still being written (or was, when the server stopped without finishing it).
    pub recording: bool,
    /// The event's own time: its clip starts `clip_pre_s` before it, which is later than the
    /// file's start when the event joined a recording under way.
    pub event_timestamp: f64,
}

/// The clip side of the store's state, owned by [`super::Store`].
pub(super) struct ClipRows {
    pub dir: PathBuf,
    /// Sum of `clip_files.bytes`.
    pub bytes: u64,
    pub max_bytes: u64,
    /// Files whose rows the current transaction deleted: unlinked once it commits.
    doomed: Vec<u64>,
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

impl ClipRows {
    pub fn new(dir: PathBuf, max_bytes: u64) -> ClipRows {
        ClipRows {
            dir,
            bytes: 0,
            max_bytes,
            doomed: Vec::new(),
        }
    }

    pub fn path(&self, file_id: u64) -> PathBuf {
        file::path(&self.dir, file_id)
    }

    /// Gives stored event `event_id` its clip as `plan` says. Returns the recording it is in,
    /// if any (a `Join` of a recording that is no longer being written gets none).
    pub fn insert(
        &mut self,
        tx: &Transaction<'_>,
        event_id: u64,
        plan: ClipPlan,
        batch_new: &mut Option<u64>,
    ) -> Result<Option<u64>, StoreError> {
        let file_id = match plan {
            ClipPlan::New => {
                tx.prepare_cached(
                    "INSERT INTO clip_files (id, bytes, recording) VALUES (?1, 0, 1)",
                )?
                .execute(params![to_i64(event_id)])?;
                *batch_new = Some(event_id);
                event_id
            }
            ClipPlan::Join(file_id) => {
                let recording: Option<bool> = tx
                    .prepare_cached("SELECT recording FROM clip_files WHERE id = ?1")?
                    .query_row(params![to_i64(file_id)], |row| row.get(0))
                    .optional()?;
                if recording != Some(true) {
                    return Ok(None);
                }
                file_id
            }
            ClipPlan::JoinBatch => match *batch_new {
                Some(file_id) => file_id,
                None => return Ok(None),
            },
        };
        tx.prepare_cached("INSERT INTO clips (event_id, file_id) VALUES (?1, ?2)")?
            .execute(params![to_i64(event_id), to_i64(file_id)])?;
        Ok(Some(file_id))
    }

    /// Removes the clips of events up to `cutoff` (being deleted by event retention), and the
    /// recordings no event points at any more.
    pub fn events_deleted_up_to(
        &mut self,
        tx: &Transaction<'_>,
        cutoff: i64,
    ) -> Result<(), StoreError> {
        tx.prepare_cached("DELETE FROM clips WHERE event_id <= ?1")?
            .execute(params![cutoff])?;
        self.drop_unreferenced(tx)
    }

    /// Deletes the rows of finished recordings that no event points at.
    fn drop_unreferenced(&mut self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        let orphans: Vec<(i64, i64)> = tx
            .prepare_cached(
                "SELECT id, bytes FROM clip_files WHERE recording = 0
                   AND NOT EXISTS (SELECT 1 FROM clips WHERE clips.file_id = clip_files.id)",
            )?
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<_, _>>()?;
        for (id, _) in orphans {
            self.remove_file(tx, to_u64(id))?;
        }
        Ok(())
    }

    /// Deletes a recording's rows and its events' clips; its file goes after the commit.
    /// Returns the events that lost their clip.
    fn remove_file(&mut self, tx: &Transaction<'_>, file_id: u64) -> Result<u64, StoreError> {
        let bytes: Option<i64> = tx
            .prepare_cached("SELECT bytes FROM clip_files WHERE id = ?1")?
            .query_row(params![to_i64(file_id)], |row| row.get(0))
            .optional()?;
        let unclipped = tx
            .prepare_cached("DELETE FROM clips WHERE file_id = ?1")?
            .execute(params![to_i64(file_id)])?;
        tx.prepare_cached("DELETE FROM clip_files WHERE id = ?1")?
            .execute(params![to_i64(file_id)])?;
        self.bytes = self.bytes.saturating_sub(bytes.map_or(0, to_u64));
        self.doomed.push(file_id);
        Ok(unclipped as u64)
    }

    /// Applies the clip writer's reports, then the byte budget.
    pub fn update(
        &mut self,
        tx: &Transaction<'_>,
        updates: &[ClipUpdate],
    ) -> Result<Updated, StoreError> {
        let mut unclipped = 0;
        let mut finished = 0;
        for update in updates {
            match *update {
                ClipUpdate::Finished { file_id, bytes } => {
                    let changed = tx
                        .prepare_cached(
                            "UPDATE clip_files SET bytes = ?2, recording = 0
                             WHERE id = ?1 AND recording = 1",
                        )?
                        .execute(params![to_i64(file_id), to_i64(bytes)])?;
                    if changed > 0 {
                        self.bytes += bytes;
                        finished += 1;
                    }
                }
                ClipUpdate::Failed { file_id } => unclipped += self.remove_file(tx, file_id)?,
            }
        }
        self.drop_unreferenced(tx)?;
        unclipped += self.apply_budget(tx)?;
        Ok(Updated {
            finished,
            unclipped,
        })
    }

    /// Deletes the oldest finished recordings while the files hold more than `max_bytes`.
    fn apply_budget(&mut self, tx: &Transaction<'_>) -> Result<u64, StoreError> {
        let mut unclipped = 0;
        while self.bytes > self.max_bytes {
            let oldest: Option<i64> = tx
                .prepare_cached(
                    "SELECT id FROM clip_files WHERE recording = 0 ORDER BY id LIMIT 1",
                )?
                .query_row([], |row| row.get(0))
                .optional()?;
            let Some(id) = oldest else { break };
            unclipped += self.remove_file(tx, to_u64(id))?;
        }
        Ok(unclipped)
    }

    /// After a commit: unlinks the files whose rows it deleted. Before one failed: forgets them
    /// (the rows are back, so must the files stay).
    pub fn committed(&mut self, ok: bool) {
        for file_id in self.doomed.drain(..) {
            if !ok {
                continue;
            }
            let path = file::path(&self.dir, file_id);
            match std::fs::remove_file(&path) {
                Ok(()) => log::debug!("deleted clip file {}", path.display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => log::warn!("could not delete clip file {}: {e}", path.display()),
            }
        }
    }

    /// At start, before anyone records: recordings cut off by a crash or power cut are
    /// repaired (torn last frame removed, duration written) and marked finished; rows without a
    /// file and files without a row are removed; then the budget. Runs in `tx`.
    pub fn recover(&mut self, tx: &Transaction<'_>) -> Result<Recovered, StoreError> {
        let mut recovered = Recovered::default();
        if let Err(e) = std::fs::create_dir_all(&self.dir) {
            log::warn!("cannot create the clip folder {}: {e}", self.dir.display());
        }
        let files: Vec<(i64, bool)> = tx
            .prepare("SELECT id, recording FROM clip_files")?
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let mut known = HashSet::new();
        for (id, recording) in files {
            let file_id = to_u64(id);
            let path = self.path(file_id);
            if recording {
                match file::repair(&path) {
                    Ok(scan) if scan.frames > 0 => {
                        tx.execute(
                            "UPDATE clip_files SET bytes = ?2, recording = 0 WHERE id = ?1",
                            params![id, to_i64(scan.whole_len)],
                        )?;
                        recovered.repaired += 1;
                        known.insert(file_id);
                    }
                    outcome => {
                        if let Err(e) = outcome {
                            log::warn!("clip {} is unreadable ({e}); removing it", path.display());
                        }
                        self.remove_file(tx, file_id)?;
                        recovered.removed += 1;
                    }
                }
            } else if path.is_file() {
                known.insert(file_id);
            } else {
                self.remove_file(tx, file_id)?;
                recovered.removed += 1;
            }
        }
        // Files no row names: a crash after a commit that deleted their rows.
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(file_id) = file::id_from_name(&name.to_string_lossy()) else {
                    continue;
                };
                if !known.contains(&file_id) {
                    self.doomed.push(file_id);
                    recovered.orphans += 1;
                }
            }
        }
        self.bytes = tx.query_row(
            "SELECT COALESCE(SUM(bytes), 0) FROM clip_files",
            [],
            |row| row.get::<_, i64>(0).map(to_u64),
        )?;
        self.drop_unreferenced(tx)?;
        recovered.unclipped = self.apply_budget(tx)?;
        Ok(recovered)
    }
}

/// What applying the clip writer's reports did.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Updated {
    /// Recordings now finished and kept.
    pub finished: u64,
    /// Events that lost their clip (a failed recording, the byte budget).
    pub unclipped: u64,
}

/// What recovery at start did, for its log line.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Recovered {
    /// Recordings cut off by a crash, repaired and kept.
    pub repaired: u64,
    /// Recordings with no usable file, removed with their events' clips.
    pub removed: u64,
    /// Files without a row, deleted.
    pub orphans: u64,
    /// Events whose clip the byte budget removed.
    pub unclipped: u64,
}

/// A store made before clips existed, opened read-only (so nobody could add the tables): the
/// reader connection gets empty stand-ins of its own (TEMP tables, which a read-only
/// connection may create), so its queries work and say "no clip". Returns whether it did (such
/// a connection is not kept for reuse: the real tables may appear later).
pub fn readable_without_clips(conn: &rusqlite::Connection) -> rusqlite::Result<bool> {
    let present: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'clips')",
        [],
        |row| row.get(0),
    )?;
    if !present {
        conn.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS clip_files (
                 id INTEGER PRIMARY KEY, bytes INTEGER NOT NULL, recording INTEGER NOT NULL);
             CREATE TEMP TABLE IF NOT EXISTS clips (
                 event_id INTEGER PRIMARY KEY, file_id INTEGER NOT NULL);",
        )?;
    }
    Ok(!present)
}

/// The read side: where an event's clip is.
pub fn locate(
    conn: &rusqlite::Connection,
    event_id: u64,
) -> rusqlite::Result<Option<ClipLocation>> {
    conn.prepare_cached(
        "SELECT clip_files.id, clip_files.recording, events.timestamp FROM clips
         JOIN clip_files ON clip_files.id = clips.file_id
         JOIN events ON events.id = clips.event_id
         WHERE clips.event_id = ?1",
    )?
    .query_row(params![to_i64(event_id)], |row| {
        Ok(ClipLocation {
            file_id: to_u64(row.get(0)?),
            recording: row.get(1)?,
            event_timestamp: row.get(2)?,
        })
    })
    .optional()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::store::{Retention, Store, StoreReader};
    use crate::events::{EventDraft, EventQuery};
    use crate::video::Frame;
    use std::path::Path;
    use std::time::{Duration, Instant};

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn dir(tag: &str) -> Dir {
        let path = std::env::temp_dir().join(format!(
            "porchlight-cliprows-{tag}-{}-{}",
            std::process::id(),
            crate::clock::unix_now()
        ));
        std::fs::create_dir_all(&path).unwrap();
        Dir(path)
    }

    fn retention(max_events: u64, max_clip_bytes: u64) -> Retention {
        Retention {
            max_events,
            max_snapshot_bytes: 1 << 30,
            max_clip_bytes,
        }
    }

    fn draft(plan: Option<ClipPlan>) -> EventDraft {
        let mut draft = EventDraft::new("doorbell_pressed", "test", Default::default());
        draft.clip = plan;
        draft
    }

    /// Writes a real clip file of `frames` frames for recording `id`; returns its length.
    fn write_clip(data: &Path, id: u64, frames: u64) -> u64 {
        let base = Instant::now();
        let path = file::path(&data.join(file::DIR), id);
        let mut writer = None;
        for n in 0..frames {
            let mut jpeg = vec![0xFF, 0xD8];
            jpeg.resize(200, n as u8);
            jpeg.extend_from_slice(&[0xFF, 0xD9]);
            let frame = Frame::new(
                n + 1,
                1.0e9 + n as f64 / 10.0,
                base + Duration::from_millis(n * 100),
                (32, 16),
                jpeg,
                true,
            );
            let w =
                writer.get_or_insert_with(|| file::ClipWriter::create(&path, &frame, "t").unwrap());
            w.append(&frame).unwrap();
        }
        writer.map_or(0, |w| w.len())
    }

    fn clip_of(reader: &StoreReader, id: u64) -> Option<u64> {
        reader.get(id).unwrap().unwrap().clip_file
    }

    #[test]
    fn plans_place_events_in_recordings() {
        let d = dir("plans");
        let mut store = Store::open(&d.0, retention(100, 1 << 30)).unwrap();
        // A new recording, one joining it in the same batch, one with no clip.
        let stored = store
            .append(&[
                draft(Some(ClipPlan::New)),
                draft(Some(ClipPlan::JoinBatch)),
                draft(None),
            ])
            .unwrap();
        let files: Vec<_> = stored.iter().map(|e| e.clip_file).collect();
        assert_eq!(files, [Some(1), Some(1), None]);
        // A later batch joins it by id while it records.
        let joined = store.append(&[draft(Some(ClipPlan::Join(1)))]).unwrap();
        assert_eq!(joined[0].clip_file, Some(1));
        // Finished, it takes no one else.
        store
            .update_clips(&[ClipUpdate::Finished {
                file_id: 1,
                bytes: 10,
            }])
            .unwrap();
        let late = store.append(&[draft(Some(ClipPlan::Join(1)))]).unwrap();
        assert_eq!(late[0].clip_file, None);
        assert_eq!(store.clip_bytes(), 10);
        let reader = StoreReader::new(&d.0);
        assert_eq!(clip_of(&reader, 4), Some(1));
        let location = reader.clip(2).unwrap().unwrap();
        assert_eq!((location.file_id, location.recording), (1, false));
        assert!(reader.clip(3).unwrap().is_none());
    }

    #[test]
    fn the_budget_deletes_the_oldest_finished_recordings_row_first_then_file() {
        let d = dir("budget");
        // Three recordings of 10 frames, all the same size; the budget holds two.
        let scratch = dir("budget-size");
        std::fs::create_dir_all(scratch.0.join(file::DIR)).unwrap();
        let one = write_clip(&scratch.0, 1, 10);
        let mut store = Store::open(&d.0, retention(100, 2 * one)).unwrap();
        let reader = StoreReader::new(&d.0);
        let mut lens = Vec::new();
        for _ in 0..3 {
            let event = store
                .append(&[draft(Some(ClipPlan::New))])
                .unwrap()
                .remove(0);
            lens.push(write_clip(&d.0, event.id, 10));
        }
        assert!(lens.iter().all(|l| *l == one));
        // The one still recording is never deleted, whatever the budget.
        let updated = store
            .update_clips(&[
                ClipUpdate::Finished {
                    file_id: 1,
                    bytes: lens[0],
                },
                ClipUpdate::Finished {
                    file_id: 2,
                    bytes: lens[1],
                },
            ])
            .unwrap();
        assert_eq!((updated.finished, updated.unclipped), (2, 0));
        let updated = store
            .update_clips(&[ClipUpdate::Finished {
                file_id: 3,
                bytes: lens[2],
            }])
            .unwrap();
        assert_eq!((updated.finished, updated.unclipped), (1, 1));
        assert_eq!(clip_of(&reader, 1), None);
        assert_eq!(clip_of(&reader, 2), Some(2));
        assert_eq!(clip_of(&reader, 3), Some(3));
        assert!(!file::path(&d.0.join(file::DIR), 1).exists());
        assert!(file::path(&d.0.join(file::DIR), 2).exists());
        assert_eq!(store.clip_bytes(), lens[1] + lens[2]);
        // A failed recording takes its events' clips and its file with it.
        let event = store
            .append(&[draft(Some(ClipPlan::New))])
            .unwrap()
            .remove(0);
        let updated = store
            .update_clips(&[ClipUpdate::Failed { file_id: event.id }])
            .unwrap();
        assert_eq!(updated.unclipped, 1);
        assert_eq!(clip_of(&reader, event.id), None);
    }

    #[test]
    fn deleted_events_take_their_clips_and_unreferenced_recordings_with_them() {
        let d = dir("events");
        let mut store = Store::open(&d.0, retention(2, 1 << 30)).unwrap();
        store.append(&[draft(Some(ClipPlan::New))]).unwrap();
        let len = write_clip(&d.0, 1, 5);
        store
            .update_clips(&[ClipUpdate::Finished {
                file_id: 1,
                bytes: len,
            }])
            .unwrap();
        // Two more events push event 1 out; its recording has no event left.
        store.append(&[draft(None), draft(None)]).unwrap();
        assert!(!file::path(&d.0.join(file::DIR), 1).exists());
        assert_eq!(store.clip_bytes(), 0);
        let reader = StoreReader::new(&d.0);
        assert_eq!(
            reader
                .query(&EventQuery {
                    limit: 10,
                    ..Default::default()
                })
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn recovery_repairs_cut_off_recordings_and_removes_strays() {
        let d = dir("recover");
        let clips = d.0.join(file::DIR);
        {
            let mut store = Store::open(&d.0, retention(100, 1 << 30)).unwrap();
            // 1: finished. 2: recording, cut off with a torn frame. 3: recording, no frame.
            // 4: finished, but its file is gone.
            for _ in 0..4 {
                store.append(&[draft(Some(ClipPlan::New))]).unwrap();
            }
            let one = write_clip(&d.0, 1, 4);
            let four = write_clip(&d.0, 4, 4);
            store
                .update_clips(&[
                    ClipUpdate::Finished {
                        file_id: 1,
                        bytes: one,
                    },
                    ClipUpdate::Finished {
                        file_id: 4,
                        bytes: four,
                    },
                ])
                .unwrap();
        }
        let whole = write_clip(&d.0, 2, 6);
        let mut bytes = std::fs::read(file::path(&clips, 2)).unwrap();
        let torn = bytes[bytes.len() - 150..bytes.len() - 50].to_vec();
        bytes.extend_from_slice(&torn);
        std::fs::write(file::path(&clips, 2), &bytes).unwrap();
        std::fs::remove_file(file::path(&clips, 4)).unwrap();
        std::fs::write(file::path(&clips, 99), b"a stray file from a crash").unwrap();
        std::fs::write(clips.join("notes.txt"), b"not ours").unwrap();

        let store = Store::open(&d.0, retention(100, 1 << 30)).unwrap();
        let reader = StoreReader::new(&d.0);
        let two = reader.clip(2).unwrap().unwrap();
        assert!(!two.recording);
        assert_eq!(
            std::fs::metadata(file::path(&clips, 2)).unwrap().len(),
            whole
        );
        assert_eq!(clip_of(&reader, 1), Some(1));
        assert_eq!(clip_of(&reader, 3), None);
        assert_eq!(clip_of(&reader, 4), None);
        assert!(!file::path(&clips, 99).exists());
        assert!(
            clips.join("notes.txt").exists(),
            "files not named like clips are left alone"
        );
        assert!(store.clip_bytes() >= whole);
    }
}
