//! EventHub: every event goes id → commit → fan-out → fsync → acknowledgement, in that order.
//!
//! Producers (REST, the doorbell, the WebSocket) call [`EventHub::publish`], which blocks until
//! the event is durable. The writer thread takes whatever requests are waiting and commits them
//! in one transaction (group commit), then offers each event, serialised once, to every
//! subscriber, then hands the producers' acknowledgements to the syncer thread, which answers
//! them after the fsync ([`super::durable`]: clients no longer wait for the disk, producers
//! still do). Streaming clients are offered events through the write-through fan-out
//! (`fanout.rs`, which sends to their sockets itself), in-process consumers through a queue
//! each. It also persists the delivery cursors of the MQTT bridge and webhooks ([`super::delivery`]), so it stays the
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
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::clip_rows::{ClipPlan, ClipUpdate};
use super::delivery::{DeliveryCursors, SAVE_INTERVAL};
use super::durable::{Ack, SlowDisk, Syncer, nanos};
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
        let syncer = match &store {
            Ok(store) => {
                let checkpointer = store
                    .checkpointer()
                    .inspect_err(|err| {
                        log::warn!("checkpoints stay on the event writer's connection: {err}")
                    })
                    .ok();
                Some(Syncer::start(
                    store.wal(),
                    checkpointer,
                    Arc::clone(&metrics),
                )?)
            }
            Err(_) => None,
        };
        let writer = {
            let broadcast = broadcast.clone();
            let cursors = cursors.clone();
            let fanout = fanout.clone();
            std::thread::Builder::new()
                .name("event-writer".into())
                .stack_size(256 * 1024)
                .spawn(move || {
                    crate::priority::run_event_fanout_first("event writer");
                    run_writer(store, syncer, rx, broadcast, fanout, cursors, metrics)
                })?
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

    /// Stores the event, fans it out, and returns it as sent once it is on disk (clients may
    /// have it a little before: see [`super::durable`]).
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
    syncer: Option<Syncer>,
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
    let mut slow_disk = SlowDisk::new("committing events", "every client waits for it");
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
                if save_cursors(&mut store, &cursors) {
                    sync_soon(syncer.as_ref());
                }
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
            if drafts.is_empty() {
                sync_soon(syncer.as_ref());
            }
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
        let took = storing.elapsed();
        metrics
            .store_commit_nanos
            .fetch_add(nanos(took), Ordering::Relaxed);
        slow_disk.note(took);
        let appended = appended.and_then(|(events, stored)| {
            // An id above the durable floor is synced before anyone is told of it.
            let last_id = events.last().map_or(0, |event| event.id);
            match &store {
                Ok(store) => store.make_tellable(last_id).map(|()| (events, stored)),
                Err(refusal) => Err(refusal.clone()),
            }
        });
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
                // Committed above: clients may see the events now; producers after the sync.
                count_fanout(&metrics, fanout.publish(&published));
                let mut acks: Vec<Ack> = Vec::with_capacity(published.len());
                for (event, reply) in published.into_iter().zip(replies.drain(..)) {
                    let evicted = broadcast.publish(&event);
                    count_evicted(&metrics, evicted as u64);
                    acks.push((reply, event));
                }
                acknowledge_when_durable(syncer.as_ref(), acks);
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
    // Answers every producer still waiting; the checkpoint then syncs the rest.
    if let Some(syncer) = syncer {
        syncer.stop();
    }
    if let Ok(Err(err)) = store.as_ref().map(Store::checkpoint) {
        log::warn!("final checkpoint of the event store failed: {err}");
    }
    log::debug!("event writer stopped");
}

/// Hands `acks` to the syncer, which answers them once their events are durable. There is a
/// syncer whenever the store opened, and only then are there events to acknowledge.
fn acknowledge_when_durable(syncer: Option<&Syncer>, acks: Vec<Ack>) {
    match syncer {
        Some(syncer) => syncer.after_sync(acks),
        None => debug_assert!(acks.is_empty(), "events stored without a syncer"),
    }
}

/// A commit without events (clip updates, delivery cursors) is made durable soon, with the
/// next group of events or on its own.
fn sync_soon(syncer: Option<&Syncer>) {
    acknowledge_when_durable(syncer, Vec::new());
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
/// ride along with). A failure is logged and retried on the next occasion. Whether it
/// committed something.
fn save_cursors(store: &mut Result<Store, StoreError>, cursors: &DeliveryCursors) -> bool {
    let Ok(store) = store else { return false };
    let moved = cursors.unsaved();
    if moved.is_empty() {
        return false;
    }
    match store.save_cursors(&moved) {
        Ok(()) => {
            cursors.mark_saved(&moved);
            true
        }
        Err(err) => {
            log::warn!("cannot save {} delivery cursor(s): {err}", moved.len());
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::store::Retention;
    use std::time::Duration;

    /// Clients get an event as soon as it is committed; its producer only once the fsync is
    /// done (here: held back until the test lets it run).
    #[test]
    fn clients_are_told_before_the_fsync_and_producers_after_it() {
        let dir = crate::events::scratch_dir("hub-sync");
        let retention = Retention {
            max_events: 100,
            max_snapshot_bytes: 1 << 20,
            max_clip_bytes: 1 << 20,
        };
        let store = Store::open(&dir, retention).unwrap();
        let wal = store.wal();
        let reader = Arc::new(StoreReader::new(&dir));
        let metrics = Arc::new(Metrics::new());
        let (hub, writer) = EventHub::start(Ok(store), reader, Arc::clone(&metrics)).unwrap();
        let client = hub.subscribe(16, None);
        let draft = || EventDraft::new("doorbell_pressed", "test", Default::default());

        let held = wal.hold_syncs();
        let (acked_tx, acked) = crossbeam_channel::bounded(1);
        let producer = {
            let hub = hub.clone();
            std::thread::spawn(move || acked_tx.send(hub.publish(draft())).unwrap())
        };
        let seen = client
            .rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the client is told while the fsync is held");
        assert_eq!(seen.event.id, 1);
        assert!(
            acked.recv_timeout(Duration::from_millis(200)).is_err(),
            "the producer was acknowledged before its event was durable"
        );
        drop(held);
        let acked = acked
            .recv_timeout(Duration::from_secs(10))
            .expect("acknowledged after the fsync")
            .unwrap();
        assert_eq!(acked.event.id, 1);
        producer.join().unwrap();
        assert!(metrics.store_syncs.load(Ordering::Relaxed) >= 1);
        // A second after the commit the syncer checkpoints, on its own connection.
        let deadline = Instant::now() + Duration::from_secs(10);
        while metrics.store_checkpoints.load(Ordering::Relaxed) == 0 {
            assert!(Instant::now() < deadline, "no checkpoint after the commit");
            std::thread::sleep(Duration::from_millis(20));
        }

        hub.stop();
        writer.join().unwrap();
        std::fs::remove_dir_all(dir).ok();
    }
}
