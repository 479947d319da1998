//! Told first, acknowledged once durable: the store's fsync, off the clients' path.
//!
//! The writer commits a batch with `synchronous=NORMAL`: the transaction is in the WAL, visible
//! to every reader and safe from a crash of the process (the kernel holds the written pages),
//! but not yet from a power cut. It then fans the events out at once, and hands the producers'
//! acknowledgements to the syncer thread, which makes the WAL durable with one `fdatasync` for
//! whatever has queued (group sync) and only then answers them. So an acknowledged event
//! (201/200/`command_result`) is on disk, as the API promises, while clients no longer wait for
//! the disk: an fsync costs ~1 ms on this VM, and up to a second on an SD card.
//!
//! What a power cut can now cost: the events committed in the last moment before it, which
//! clients may have seen but no producer was told were stored. Their ids must never be handed
//! out again (API: "never reused, also across restarts"), or a client that saw one would skip
//! the next event given it. Hence the **id floor**: a durable bound on every id told. The store
//! writes it ahead of use, in blocks ([`FLOOR_BLOCK`]), with an ordinary batch; the syncer makes
//! it durable; an id above the durable floor is never told before a sync. At start, ids
//! continue above the floor; a clean close lowers the floor to the last id, so a restart
//! leaves no gap.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use rusqlite::Connection;

use super::event::SharedEvent;
use super::store::StoreError;
use crate::metrics::Metrics;

/// Ids the floor is raised by at a time: at most this many ids are skipped after a power cut
/// or a `kill -9`, and the floor costs one small row write per this many events.
pub const FLOOR_BLOCK: u64 = 1024;
/// The floor is raised again once fewer than this many ids are left below it, early enough
/// that the syncer has made the new floor durable before the ids reach it.
pub const FLOOR_MARGIN: u64 = FLOOR_BLOCK / 2;

/// The WAL file of the store, kept open so it can be synced without SQLite: `fdatasync` on any
/// descriptor of the file flushes the pages every writer put there.
pub struct Wal {
    path: PathBuf,
    file: Mutex<File>,
    /// The highest id floor committed to the WAL (not necessarily durable yet).
    committed_floor: AtomicU64,
    /// The highest id floor known to be on disk: ids up to it may be told before their sync.
    durable_floor: AtomicU64,
}

impl Wal {
    /// Opens the WAL file at `path` (SQLite's `<database>-wal`, which exists while the
    /// database is open in WAL mode). No floor is durable until the first sync.
    pub fn open(path: PathBuf) -> io::Result<Wal> {
        let file = File::open(&path)?;
        Ok(Wal {
            path,
            file: Mutex::new(file),
            committed_floor: AtomicU64::new(0),
            durable_floor: AtomicU64::new(0),
        })
    }

    /// Makes everything committed so far durable, and with it the floor committed so far.
    /// Reopens the file first if SQLite replaced it (it does not while its writer connection
    /// stays open, but a stale descriptor would sync nothing).
    pub fn sync(&self) -> io::Result<()> {
        // Read before the sync: this floor's commit is in the WAL's pages already.
        let floor = self.committed_floor.load(Ordering::Acquire);
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if !same_file(&file, &self.path) {
            *file = File::open(&self.path)?;
        }
        file.sync_data()?;
        drop(file);
        self.durable_floor.fetch_max(floor, Ordering::AcqRel);
        Ok(())
    }

    /// A transaction that wrote `floor` has committed.
    pub fn floor_committed(&self, floor: u64) {
        self.committed_floor.fetch_max(floor, Ordering::AcqRel);
    }

    /// The floor last committed (what the next raise compares against).
    pub fn committed_floor(&self) -> u64 {
        self.committed_floor.load(Ordering::Acquire)
    }

    /// Ids up to this may be told to clients before their own sync.
    pub fn durable_floor(&self) -> u64 {
        self.durable_floor.load(Ordering::Acquire)
    }

    /// Lowers both floors after a clean close wrote `floor` and synced it.
    pub fn floor_lowered(&self, floor: u64) {
        self.committed_floor.store(floor, Ordering::Release);
        self.durable_floor.store(floor, Ordering::Release);
    }

    /// Holds off every sync while the guard lives (tests: proves that clients are told before
    /// the sync and producers only after it).
    #[cfg(test)]
    pub fn hold_syncs(&self) -> std::sync::MutexGuard<'_, File> {
        self.file.lock().unwrap()
    }
}

/// Whether `file` is still the file at `path` (same device and inode).
fn same_file(file: &File, path: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
        _ => false,
    }
}

/// A producer waiting for its event to be durable.
pub type Ack = (Sender<Result<SharedEvent, StoreError>>, SharedEvent);

/// What the writer left for the syncer. A `Mutex` and a `Condvar` rather than a channel: the
/// syncer takes everything at once anyway, and the list is bounded by the producers waiting
/// (each waits for its answer, and the hub's request queue is bounded).
#[derive(Default)]
struct Queue {
    acks: Vec<Ack>,
    /// Something was committed since the syncer last took the queue (also with no acks: a
    /// clip update or a delivery cursor wants its sync too).
    committed: bool,
    stopping: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The writer's handle on the syncer thread.
pub struct Syncer {
    shared: Arc<Shared>,
    thread: JoinHandle<()>,
}

impl Syncer {
    /// `checkpointer`: a connection of the store's own for checkpoints (without one, the
    /// writer's connection checkpoints as SQLite does by default).
    pub fn start(
        wal: Arc<Wal>,
        checkpointer: Option<Connection>,
        metrics: Arc<Metrics>,
    ) -> io::Result<Syncer> {
        let shared = Arc::new(Shared::default());
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("event-sync".into())
                .stack_size(128 * 1024)
                .spawn(move || {
                    let _answer_if_it_panics = AnswerIfPanicking(&shared);
                    let mut checkpoints = Checkpoints {
                        conn: checkpointer,
                        due: None,
                    };
                    run(&wal, &shared, &mut checkpoints, &metrics);
                })?
        };
        Ok(Syncer { shared, thread })
    }

    /// Answers `acks` once everything committed before this call is durable.
    pub fn after_sync(&self, acks: Vec<Ack>) {
        let mut queue = self.shared.lock();
        queue.acks.extend(acks);
        queue.committed = true;
        if self.thread.is_finished() {
            // The syncer is gone (it panicked): nobody can vouch for these events.
            refuse_all(&mut queue);
            return;
        }
        drop(queue);
        self.shared.ready.notify_one();
    }

    /// Syncs what is queued, answers it, and ends the thread.
    pub fn stop(self) {
        self.shared.lock().stopping = true;
        self.shared.ready.notify_one();
        if self.thread.join().is_err() {
            log::error!("the event store's sync thread panicked");
        }
    }
}

/// Producers waiting for a syncer that can no longer sync are told so.
fn refuse_all(queue: &mut Queue) {
    for (reply, _) in queue.acks.drain(..) {
        reply
            .send(Err(StoreError::Unavailable(
                "the event store's sync thread stopped".into(),
            )))
            .ok();
    }
}

/// Held by the syncer thread: if it panics, the producers still queued are answered (those it
/// had taken get a closed channel, which `publish` reports as well); later ones are answered by
/// [`Syncer::after_sync`], which sees the thread gone.
struct AnswerIfPanicking<'a>(&'a Shared);

impl Drop for AnswerIfPanicking<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            refuse_all(&mut self.0.lock());
        }
    }
}

/// How long after a commit its WAL frames are copied into the database file: long enough to
/// fold a burst's commits into one checkpoint (two fsyncs), short enough to keep the WAL small.
const CHECKPOINT_AFTER: Duration = Duration::from_secs(1);

/// The syncer's checkpoints, on a connection of their own, a second after the first commit
/// since the last one.
struct Checkpoints {
    conn: Option<Connection>,
    due: Option<Instant>,
}

impl Checkpoints {
    fn after_commit(&mut self) {
        if self.conn.is_some() && self.due.is_none() {
            self.due = Some(Instant::now() + CHECKPOINT_AFTER);
        }
    }

    /// A passive checkpoint: it copies what it can without waiting for the writer or readers,
    /// and the writer restarts the WAL from its beginning once everything was copied.
    fn run(&mut self, metrics: &Metrics) {
        self.due = None;
        let Some(conn) = &self.conn else { return };
        let started = Instant::now();
        let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
        });
        match done {
            Ok((frames, copied)) => {
                metrics.store_checkpoints.fetch_add(1, Ordering::Relaxed);
                log::debug!(
                    "checkpoint: {copied} of {frames} WAL frame(s) copied in {} ms",
                    started.elapsed().as_millis()
                );
            }
            Err(err) => log::warn!("checkpoint of the event store failed: {err}"),
        }
    }
}

fn run(wal: &Wal, shared: &Shared, checkpoints: &mut Checkpoints, metrics: &Metrics) {
    let mut slow_disk = SlowDisk::new(
        "making events durable",
        "producers get their acknowledgement only after it (clients got the events before)",
    );
    let mut waiting: Vec<Ack> = Vec::new();
    loop {
        {
            let mut queue = shared.lock();
            while !queue.committed && !queue.stopping {
                match checkpoints.due {
                    Some(due) => {
                        let left = due.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        queue = shared
                            .ready
                            .wait_timeout(queue, left)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                    None => queue = shared.ready.wait(queue).unwrap_or_else(|p| p.into_inner()),
                }
            }
            if !queue.committed {
                if queue.stopping {
                    return;
                }
                drop(queue);
                checkpoints.run(metrics);
                continue;
            }
            queue.committed = false;
            std::mem::swap(&mut waiting, &mut queue.acks);
        }
        checkpoints.after_commit();
        let syncing = Instant::now();
        let synced = wal.sync();
        let took = syncing.elapsed();
        metrics.store_syncs.fetch_add(1, Ordering::Relaxed);
        metrics
            .store_sync_nanos
            .fetch_add(nanos(took), Ordering::Relaxed);
        slow_disk.note(took);
        match synced {
            Ok(()) => {
                for (reply, event) in waiting.drain(..) {
                    reply.send(Ok(event)).ok();
                }
            }
            Err(err) => {
                metrics.store_errors.fetch_add(1, Ordering::Relaxed);
                let err = StoreError::from_io("cannot make the events durable", &err);
                log::error!("{err} ({} event(s) not acknowledged)", waiting.len());
                for (reply, _) in waiting.drain(..) {
                    reply.send(Err(err.clone())).ok();
                }
            }
        }
    }
}

pub fn nanos(took: Duration) -> u64 {
    u64::try_from(took.as_nanos()).unwrap_or(u64::MAX)
}

/// A commit or a sync slower than this holds events up noticeably.
const SLOW_DISK: Duration = Duration::from_millis(100);
/// At most one slow-disk warning of each kind this often.
const SLOW_DISK_LOG_EVERY: Duration = Duration::from_secs(60);

/// Says so in the log when the disk holds events up (an SD card's fsync can take a second), at
/// most once a minute, with how many slow ones there were since the last warning.
pub struct SlowDisk {
    /// What was slow ("committing events").
    doing: &'static str,
    /// Who waited for it.
    cost: &'static str,
    last_warning: Option<Instant>,
    slow_since_warning: u64,
}

impl SlowDisk {
    pub fn new(doing: &'static str, cost: &'static str) -> SlowDisk {
        SlowDisk {
            doing,
            cost,
            last_warning: None,
            slow_since_warning: 0,
        }
    }

    /// Whether this one was warned of.
    pub fn note(&mut self, took: Duration) -> bool {
        if took < SLOW_DISK {
            return false;
        }
        self.slow_since_warning += 1;
        if self
            .last_warning
            .is_some_and(|t| t.elapsed() < SLOW_DISK_LOG_EVERY)
        {
            return false;
        }
        log::warn!(
            "{} took {} ms (the disk is slow; {} such time(s) since the last warning): {}",
            self.doing,
            took.as_millis(),
            self.slow_since_warning,
            self.cost
        );
        self.last_warning = Some(Instant::now());
        self.slow_since_warning = 0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_disk_is_warned_of_at_most_once_a_minute() {
        let mut disk = SlowDisk::new("syncing", "tests wait");
        assert!(!disk.note(Duration::from_millis(2)));
        assert!(disk.note(SLOW_DISK), "a slow sync is warned of");
        assert!(
            !disk.note(SLOW_DISK * 2),
            "the next one within a minute is only counted"
        );
        assert_eq!(disk.slow_since_warning, 1);
    }

    fn event(id: u64) -> SharedEvent {
        Arc::new(super::super::event::PublishedEvent::new(
            super::super::event::Event {
                id,
                event_type: "test".into(),
                timestamp: 0.0,
                source: "test".into(),
                data: Default::default(),
                has_snapshot: false,
                clip_file: None,
            },
        ))
    }

    /// A producer is answered after the sync: `Ok` when it worked, the error when it did not
    /// (the WAL vanished here; a full or failing disk in life), and everyone queued at a stop.
    #[test]
    fn producers_get_the_outcome_of_the_sync_that_covers_their_event() {
        let dir = super::super::scratch_dir("syncer");
        let path = dir.join("x-wal");
        std::fs::write(&path, b"frames").unwrap();
        let wal = Arc::new(Wal::open(path.clone()).unwrap());
        let metrics = Arc::new(Metrics::default());
        let syncer = Syncer::start(Arc::clone(&wal), None, Arc::clone(&metrics)).unwrap();
        let (reply, answer) = crossbeam_channel::bounded(1);
        syncer.after_sync(vec![(reply, event(1))]);
        let answered = answer.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(answered.unwrap().event.id, 1);

        std::fs::remove_file(&path).unwrap();
        let (reply, answer) = crossbeam_channel::bounded(1);
        syncer.after_sync(vec![(reply, event(2))]);
        let answered = answer.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(
            matches!(answered, Err(StoreError::Unavailable(_))),
            "{answered:?}"
        );
        assert!(metrics.store_errors.load(Ordering::Relaxed) >= 1);

        std::fs::write(&path, b"again").unwrap();
        let answers: Vec<_> = (3..6)
            .map(|id| {
                let (reply, answer) = crossbeam_channel::bounded(1);
                syncer.after_sync(vec![(reply, event(id))]);
                answer
            })
            .collect();
        syncer.stop();
        for answer in answers {
            assert!(
                answer.try_recv().unwrap().is_ok(),
                "answered before the stop ended"
            );
        }
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_sync_makes_the_committed_floor_durable_and_follows_a_replaced_file() {
        let dir = super::super::scratch_dir("wal");
        let path = dir.join("x-wal");
        std::fs::write(&path, b"frames").unwrap();
        let wal = Wal::open(path.clone()).unwrap();
        wal.floor_committed(2000);
        assert_eq!(wal.durable_floor(), 0, "committed is not durable");
        wal.sync().unwrap();
        assert_eq!(wal.durable_floor(), 2000);
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, b"new").unwrap();
        wal.sync().unwrap();
        assert!(same_file(&wal.file.lock().unwrap(), &path), "reopened");
        std::fs::remove_file(&path).unwrap();
        assert!(
            wal.sync().is_err(),
            "a vanished WAL is an error, not a no-op"
        );
        std::fs::remove_dir_all(dir).ok();
    }
}
