//! EventHub: every event goes id → store → fan-out, in that order, on one writer thread.
//!
//! Producers (REST, the doorbell, the WebSocket) call [`EventHub::publish`], which blocks until
//! the event is committed and fanned out. The writer thread takes whatever requests are waiting
//! and commits them in one transaction (group commit: a burst costs one fsync, not one per
//! event), then offers each event, serialised once, to every subscriber: streaming clients
//! through the write-through fan-out (`fanout.rs`, which sends to their sockets itself),
//! in-process consumers through a queue each. It also persists the
//! delivery cursors of the MQTT bridge and webhooks ([`super::delivery`]), so it stays the
//! store's one writer.
//!
//! Clips: the clip recorder (a [`ClipSink`]) decides on this thread, as an event is stored,
//! whether it gets a clip, so the clip row is committed with the event and the event goes out
//! with its `clip_url` at once, never held back for the recording. What the recorder reports
//! later (a recording finished, or failed) comes back here as [`ClipUpdate`]s: the store keeps
//! one writer.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::clip_rows::{ClipPlan, ClipUpdate};
use super::delivery::{DeliveryCursors, SAVE_INTERVAL};
use super::event::{Event, EventDraft, PublishedEvent, SharedEvent};
use super::fanout::{Fanout, Outlet, Published, StreamEvictHook, Wire};
use super::store::{Store, StoreError, StoreReader};
use crate::hub::{Broadcast, EvictHook, Subscription};
use crate::metrics::Metrics;

/// Most events committed in one transaction.
const MAX_BATCH: usize = 256;
/// Producers waiting for the writer at most; more block (backpressure), never grow memory.
const REQUEST_QUEUE: usize = 1024;

enum Request {
    Append {
        draft: EventDraft,
        reply: Sender<Result<SharedEvent, StoreError>>,
    },
    Clip(ClipUpdate),
    SetClipSink(Box<dyn ClipSink>),
    Stop,
}

/// The clip recorder as the writer thread sees it. Its calls run on the writer thread, between
/// a batch's commit and its fan-out, so they must be quick and must never wait for the hub.
pub trait ClipSink: Send {
    /// Whether `draft`, about to be stored, gets a clip, and in which recording.
    fn plan(&mut self, draft: &EventDraft) -> Option<ClipPlan>;
    /// Every event just stored, in id order, before it is fanned out. `false`: its clip cannot
    /// be recorded after all (the hub then removes it before anyone sees the event).
    fn stored(&mut self, event: &Event) -> bool;
    /// The batch whose drafts were just planned was not stored.
    fn not_stored(&mut self);
}

/// The producers' and subscribers' handle; cheap to clone.
#[derive(Clone)]
pub struct EventHub {
    requests: Sender<Request>,
    broadcast: Broadcast<SharedEvent>,
    fanout: Fanout,
    reader: Arc<StoreReader>,
    cursors: DeliveryCursors,
}

impl EventHub {
    /// Starts the writer thread, which owns `store`. With `Err(store_error)` (a read-only data
    /// dir) the hub still runs: subscribers and reads work, every publish gets that error.
    pub fn start(
        store: Result<Store, StoreError>,
        reader: Arc<StoreReader>,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(EventHub, JoinHandle<()>)> {
        let (requests, rx) = crossbeam_channel::bounded(REQUEST_QUEUE);
        let broadcast = Broadcast::new();
        let fanout = Fanout::new();
        let cursors = DeliveryCursors::default();
        if let Ok(store) = &store {
            metrics
                .events_stored
                .store(store.stored(), Ordering::Relaxed);
        }
        let writer = {
            let broadcast = broadcast.clone();
            let cursors = cursors.clone();
            let fanout = fanout.clone();
            std::thread::Builder::new()
                .name("event-writer".into())
                .stack_size(256 * 1024)
                .spawn(move || run_writer(store, rx, broadcast, fanout, cursors, metrics))?
        };
        Ok((
            EventHub {
                requests,
                broadcast,
                fanout,
                reader,
                cursors,
            },
            writer,
        ))
    }

    /// Stores the event, fans it out, and returns it as sent. Once this returns `Ok`, the event
    /// is on disk.
    pub fn publish(&self, draft: EventDraft) -> Result<SharedEvent, StoreError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.requests
            .send(Request::Append { draft, reply })
            .map_err(|_| StoreError::Unavailable("the server is shutting down".into()))?;
        answer
            .recv()
            .map_err(|_| StoreError::Unavailable("the server is shutting down".into()))?
    }

    /// A live feed of events published from now on, for an in-process consumer (streaming
    /// clients use [`EventHub::subscribe_stream`]). `on_evict` runs if the subscriber falls
    /// `capacity` events behind.
    pub fn subscribe(
        &self,
        capacity: usize,
        on_evict: Option<EvictHook>,
    ) -> Subscription<SharedEvent> {
        self.broadcast.subscribe(capacity, on_evict)
    }

    /// A streaming client's place in the fan-out: events published from now on are written to
    /// a handle of `socket` framed as `wire`, by the writer itself while the client's thread has
    /// handed it the socket, queued for that thread otherwise (see [`Outlet::settle`]), which the
    /// fan-out then wakes by making the returned eventfd readable (the thread waits on it in
    /// `poll(2)`). `on_evict` runs if the client falls `capacity` events behind. Fails, changing
    /// nothing, when the process is out of file descriptors for the handle or the eventfd.
    pub fn subscribe_stream(
        &self,
        socket: &std::net::TcpStream,
        wire: Wire,
        capacity: usize,
        on_evict: Option<StreamEvictHook>,
    ) -> std::io::Result<(Outlet, std::sync::Arc<crate::wake::WakeFd>)> {
        let handle = socket.try_clone()?;
        let wake = std::sync::Arc::new(crate::wake::WakeFd::new()?);
        let outlet = self.fanout.subscribe(
            handle,
            wire,
            capacity,
            on_evict,
            std::sync::Arc::clone(&wake),
        );
        Ok((outlet, wake))
    }

    pub fn reader(&self) -> &StoreReader {
        &self.reader
    }

    /// Hands the writer thread the clip recorder, which from then on plans the clips of the
    /// events it stores.
    pub fn set_clip_sink(&self, sink: Box<dyn ClipSink>) {
        self.requests.send(Request::SetClipSink(sink)).ok();
    }

    /// Reports a recording's end to the store (from the clip writer thread). Does not wait for
    /// the commit.
    pub fn clip_update(&self, update: ClipUpdate) {
        if self.requests.send(Request::Clip(update)).is_err() {
            log::warn!("clip {update:?} not recorded in the store: it is stopping");
        }
    }

    /// The delivery cursors this hub's writer persists.
    pub fn delivery_cursors(&self) -> &DeliveryCursors {
        &self.cursors
    }

    /// Asks the writer to finish what is queued, checkpoint and stop.
    pub fn stop(&self) {
        self.requests.send(Request::Stop).ok();
    }
}

/// Tells the clip recorder of each stored event; a clip it cannot record after all is removed
/// before the event is fanned out, so no client sees a `clip_url` that never worked.
fn tell_clip_sink(
    sink: &mut dyn ClipSink,
    store: &mut Store,
    events: &mut [Event],
    metrics: &Metrics,
) {
    let refused: Vec<u64> = events
        .iter()
        .filter(|event| !sink.stored(event) && event.clip_file.is_some())
        .map(|event| event.id)
        .collect();
    if refused.is_empty() {
        return;
    }
    let updates: Vec<ClipUpdate> = refused
        .iter()
        .map(|&file_id| ClipUpdate::Failed { file_id })
        .collect();
    match store.update_clips(&updates) {
        Ok(_) => {
            for event in events.iter_mut().filter(|e| refused.contains(&e.id)) {
                event.clip_file = None;
            }
        }
        Err(err) => log::error!("could not remove the clips the recorder refused: {err}"),
    }
    metrics
        .clip_bytes_stored
        .store(store.clip_bytes(), Ordering::Relaxed);
}

/// Applies what the clip writer reported (recordings finished or failed) and the clip budget.
fn update_clips(store: &mut Result<Store, StoreError>, updates: &[ClipUpdate], metrics: &Metrics) {
    let Ok(store) = store else {
        return;
    };
    match store.update_clips(updates) {
        Ok(updated) => {
            metrics
                .clips_recorded
                .fetch_add(updated.finished, Ordering::Relaxed);
            if updated.unclipped > 0 {
                log::info!(
                    "{} event(s) lost their clip (max_clip_bytes, or a recording that failed)",
                    updated.unclipped
                );
            }
        }
        Err(err) => {
            metrics.store_errors.fetch_add(1, Ordering::Relaxed);
            log::error!("could not record {} clip update(s): {err}", updates.len());
        }
    }
    metrics
        .clip_bytes_stored
        .store(store.clip_bytes(), Ordering::Relaxed);
}

fn run_writer(
    mut store: Result<Store, StoreError>,
    rx: Receiver<Request>,
    broadcast: Broadcast<SharedEvent>,
    fanout: Fanout,
    cursors: DeliveryCursors,
    metrics: Arc<Metrics>,
) {
    let mut drafts = Vec::with_capacity(MAX_BATCH);
    let mut replies = Vec::with_capacity(MAX_BATCH);
    let mut clip_updates = Vec::new();
    let mut clip_sink: Option<Box<dyn ClipSink>> = None;
    let mut slow_disk = SlowDisk::default();
    let mut stopping = false;
    while !stopping {
        // With delivery cursors to keep, wake at least every SAVE_INTERVAL to save moved ones.
        let first = if cursors.is_empty() {
            rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
        } else {
            rx.recv_timeout(SAVE_INTERVAL)
        };
        let first = match first {
            Ok(first) => first,
            Err(RecvTimeoutError::Timeout) => {
                save_cursors(&mut store, &cursors);
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut next = Some(first);
        while let Some(request) = next.take() {
            match request {
                Request::Append { draft, reply } => {
                    drafts.push(draft);
                    replies.push(reply);
                }
                Request::Clip(update) => clip_updates.push(update),
                Request::SetClipSink(sink) => clip_sink = Some(sink),
                Request::Stop => stopping = true,
            }
            if drafts.len() < MAX_BATCH && !stopping {
                next = rx.try_recv().ok();
            }
        }
        if !clip_updates.is_empty() {
            update_clips(&mut store, &clip_updates, &metrics);
            clip_updates.clear();
        }
        if drafts.is_empty() {
            continue;
        }
        if let (Some(sink), Ok(_)) = (clip_sink.as_mut(), &store) {
            for draft in &mut drafts {
                draft.clip = sink.plan(draft);
            }
        }
        let moved = cursors.unsaved();
        let storing = Instant::now();
        let appended = match &mut store {
            Ok(store) => store
                .append_saving(&drafts, &moved)
                .map(|events| (events, store.stored())),
            Err(refusal) => Err(refusal.clone()),
        };
        slow_disk.note(storing.elapsed(), &metrics);
        if appended.is_ok() {
            cursors.mark_saved(&moved);
        } else if let Some(sink) = clip_sink.as_mut() {
            sink.not_stored();
        }
        match appended {
            Ok((mut events, stored)) => {
                if let (Some(sink), Ok(store)) = (clip_sink.as_mut(), &mut store) {
                    tell_clip_sink(sink.as_mut(), store, &mut events, &metrics);
                }
                metrics.store_commits.fetch_add(1, Ordering::Relaxed);
                metrics
                    .events_published
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                metrics.events_stored.store(stored, Ordering::Relaxed);
                let published: Vec<SharedEvent> = events
                    .into_iter()
                    .map(|event| {
                        log::debug!(
                            "event {} {} from {}",
                            event.id,
                            event.event_type,
                            event.source
                        );
                        Arc::new(PublishedEvent::new(event))
                    })
                    .collect();
                if let Some(last) = published.last() {
                    metrics
                        .last_event_id
                        .store(last.event.id, Ordering::Relaxed);
                }
                // Stored (fsync'd) above: clients may see the events now.
                count_fanout(&metrics, fanout.publish(&published));
                for (event, reply) in published.into_iter().zip(replies.drain(..)) {
                    let evicted = broadcast.publish(&event);
                    count_evicted(&metrics, evicted as u64);
                    reply.send(Ok(event)).ok();
                }
            }
            Err(err) => {
                metrics.store_errors.fetch_add(1, Ordering::Relaxed);
                log::error!("could not store {} event(s): {err}", drafts.len());
                for reply in replies.drain(..) {
                    reply.send(Err(err.clone())).ok();
                }
            }
        }
        drafts.clear();
    }
    if !clip_updates.is_empty() {
        update_clips(&mut store, &clip_updates, &metrics);
    }
    save_cursors(&mut store, &cursors);
    if let Ok(Err(err)) = store.as_ref().map(Store::checkpoint) {
        log::warn!("final checkpoint of the event store failed: {err}");
    }
    log::debug!("event writer stopped");
}

/// A commit (the transaction and its fsync) slower than this delays every client noticeably.
const SLOW_COMMIT: Duration = Duration::from_millis(100);
/// At most one slow-disk warning this often.
const SLOW_COMMIT_LOG_EVERY: Duration = Duration::from_secs(60);

/// Counts the time spent storing, and says so in the log when the disk holds events up: an SD
/// card's fsync can take a second, and every client waits for it.
#[derive(Default)]
struct SlowDisk {
    last_warning: Option<Instant>,
    slow_since_warning: u64,
}

impl SlowDisk {
    fn note(&mut self, took: Duration, metrics: &Metrics) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        metrics
            .store_commit_nanos
            .fetch_add(nanos, Ordering::Relaxed);
        if took < SLOW_COMMIT {
            return;
        }
        self.slow_since_warning += 1;
        if self
            .last_warning
            .is_some_and(|t| t.elapsed() < SLOW_COMMIT_LOG_EVERY)
        {
            return;
        }
        log::warn!(
            "storing events took {} ms (the disk is slow; {} such commit(s) since the last \
             warning): clients get each event only once it is on disk",
            took.as_millis(),
            self.slow_since_warning
        );
        self.last_warning = Some(Instant::now());
        self.slow_since_warning = 0;
    }
}

fn count_fanout(metrics: &Metrics, published: Published) {
    metrics
        .sse_events_sent
        .fetch_add(published.sse_sent, Ordering::Relaxed);
    metrics
        .ws_events_sent
        .fetch_add(published.ws_sent, Ordering::Relaxed);
    metrics
        .event_handoffs
        .fetch_add(published.handed_off, Ordering::Relaxed);
    count_evicted(metrics, published.evicted);
}

fn count_evicted(metrics: &Metrics, evicted: u64) {
    if evicted > 0 {
        metrics
            .clients_evicted
            .fetch_add(evicted, Ordering::Relaxed);
        log::info!("disconnected {evicted} event client(s) that fell behind");
    }
}

/// Saves the delivery cursors that moved, in a transaction of their own (no event batch to
/// ride along with). A failure is logged and retried on the next occasion.
fn save_cursors(store: &mut Result<Store, StoreError>, cursors: &DeliveryCursors) {
    let Ok(store) = store else { return };
    let moved = cursors.unsaved();
    if moved.is_empty() {
        return;
    }
    match store.save_cursors(&moved) {
        Ok(()) => cursors.mark_saved(&moved),
        Err(err) => log::warn!("cannot save {} delivery cursor(s): {err}", moved.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_time_is_counted_and_a_slow_disk_warned_of_at_most_once_a_minute() {
        let metrics = Metrics::default();
        let mut disk = SlowDisk::default();
        disk.note(Duration::from_millis(2), &metrics);
        assert!(disk.last_warning.is_none());
        disk.note(SLOW_COMMIT, &metrics);
        assert!(disk.last_warning.is_some(), "a slow commit is warned of");
        assert_eq!(disk.slow_since_warning, 0);
        disk.note(SLOW_COMMIT * 2, &metrics);
        assert_eq!(
            disk.slow_since_warning, 1,
            "the next one within a minute is only counted"
        );
        let spent = Duration::from_millis(2) + SLOW_COMMIT * 3;
        assert_eq!(
            metrics.store_commit_nanos.load(Ordering::Relaxed),
            u64::try_from(spent.as_nanos()).unwrap()
        );
    }
}
