//! EventHub: every event goes id → store → fan-out, in that order, on one writer thread.
//!
//! Producers (REST, the doorbell, the WebSocket) call [`EventHub::publish`], which blocks until
//! the event is committed and fanned out. The writer thread takes whatever requests are waiting
//! and commits them in one transaction (group commit: a burst costs one fsync, not one per
//! event), then offers each event, serialised once, to every subscriber. It also persists the
//! delivery cursors of the MQTT bridge and webhooks ([`super::delivery`]), so it stays the
//! store's one writer.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::delivery::{DeliveryCursors, SAVE_INTERVAL};
use super::event::{EventDraft, PublishedEvent, SharedEvent};
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
    Stop,
}

/// The producers' and subscribers' handle; cheap to clone.
#[derive(Clone)]
pub struct EventHub {
    requests: Sender<Request>,
    broadcast: Broadcast<SharedEvent>,
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
        let cursors = DeliveryCursors::default();
        if let Ok(store) = &store {
            metrics
                .events_stored
                .store(store.stored(), Ordering::Relaxed);
        }
        let writer = {
            let broadcast = broadcast.clone();
            let cursors = cursors.clone();
            std::thread::Builder::new()
                .name("event-writer".into())
                .stack_size(256 * 1024)
                .spawn(move || run_writer(store, rx, broadcast, cursors, metrics))?
        };
        Ok((
            EventHub {
                requests,
                broadcast,
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

    /// A live feed of events published from now on. `on_evict` runs if the subscriber falls
    /// `capacity` events behind.
    pub fn subscribe(
        &self,
        capacity: usize,
        on_evict: Option<EvictHook>,
    ) -> Subscription<SharedEvent> {
        self.broadcast.subscribe(capacity, on_evict)
    }

    pub fn reader(&self) -> &StoreReader {
        &self.reader
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

fn run_writer(
    mut store: Result<Store, StoreError>,
    rx: Receiver<Request>,
    broadcast: Broadcast<SharedEvent>,
    cursors: DeliveryCursors,
    metrics: Arc<Metrics>,
) {
    let mut drafts = Vec::with_capacity(MAX_BATCH);
    let mut replies = Vec::with_capacity(MAX_BATCH);
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
                Request::Stop => stopping = true,
            }
            if drafts.len() < MAX_BATCH && !stopping {
                next = rx.try_recv().ok();
            }
        }
        if drafts.is_empty() {
            continue;
        }
        let moved = cursors.unsaved();
        let appended = match &mut store {
            Ok(store) => store
                .append_saving(&drafts, &moved)
                .map(|events| (events, store.stored())),
            Err(refusal) => Err(refusal.clone()),
        };
        if appended.is_ok() {
            cursors.mark_saved(&moved);
        }
        match appended {
            Ok((events, stored)) => {
                metrics.store_commits.fetch_add(1, Ordering::Relaxed);
                metrics
                    .events_published
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                metrics.events_stored.store(stored, Ordering::Relaxed);
                for (event, reply) in events.into_iter().zip(replies.drain(..)) {
                    metrics.last_event_id.store(event.id, Ordering::Relaxed);
                    log::debug!(
                        "event {} {} from {}",
                        event.id,
                        event.event_type,
                        event.source
                    );
                    let published = Arc::new(PublishedEvent::new(event));
                    let evicted = broadcast.publish(&published);
                    if evicted > 0 {
                        metrics
                            .clients_evicted
                            .fetch_add(evicted as u64, Ordering::Relaxed);
                        log::info!("disconnected {evicted} event client(s) that fell behind");
                    }
                    reply.send(Ok(published)).ok();
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
    save_cursors(&mut store, &cursors);
    if let Ok(Err(err)) = store.as_ref().map(Store::checkpoint) {
        log::warn!("final checkpoint of the event store failed: {err}");
    }
    log::debug!("event writer stopped");
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
