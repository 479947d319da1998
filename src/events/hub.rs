//! EventHub: every event goes id → store → fan-out, in that order, on one writer thread.
//!
//! Producers (REST, the doorbell, the WebSocket) call [`EventHub::publish`], which blocks until
//! the event is committed and fanned out. The writer thread takes whatever requests are waiting
//! and commits them in one transaction (group commit: a burst costs one fsync, not one per
//! event), then offers each event, serialised once, to every subscriber: streaming clients
//! through the write-through fan-out (`fanout.rs`, which sends to their sockets itself),
//! in-process consumers through a queue each.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use super::event::{EventDraft, PublishedEvent, SharedEvent};
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
    Stop,
}

/// The producers' and subscribers' handle; cheap to clone.
#[derive(Clone)]
pub struct EventHub {
    requests: Sender<Request>,
    broadcast: Broadcast<SharedEvent>,
    fanout: Fanout,
    reader: Arc<StoreReader>,
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
        if let Ok(store) = &store {
            metrics
                .events_stored
                .store(store.stored(), Ordering::Relaxed);
        }
        let writer = {
            let broadcast = broadcast.clone();
            let fanout = fanout.clone();
            std::thread::Builder::new()
                .name("event-writer".into())
                .stack_size(256 * 1024)
                .spawn(move || run_writer(store, rx, broadcast, fanout, metrics))?
        };
        Ok((
            EventHub {
                requests,
                broadcast,
                fanout,
                reader,
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
    /// `socket` (a handle of the client's own) framed as `wire`, by the writer itself while the
    /// client's thread has handed it the socket, queued for that thread otherwise (see
    /// [`Outlet::settle`]). `on_evict` runs if the client falls `capacity` events behind.
    pub fn subscribe_stream(
        &self,
        socket: std::net::TcpStream,
        wire: Wire,
        capacity: usize,
        on_evict: Option<StreamEvictHook>,
    ) -> Outlet {
        self.fanout.subscribe(socket, wire, capacity, on_evict)
    }

    pub fn reader(&self) -> &StoreReader {
        &self.reader
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
    fanout: Fanout,
    metrics: Arc<Metrics>,
) {
    let mut drafts = Vec::with_capacity(MAX_BATCH);
    let mut replies = Vec::with_capacity(MAX_BATCH);
    let mut stopping = false;
    while !stopping {
        let Ok(first) = rx.recv() else { break };
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
        let appended = match &mut store {
            Ok(store) => store.append(&drafts).map(|events| (events, store.stored())),
            Err(refusal) => Err(refusal.clone()),
        };
        match appended {
            Ok((events, stored)) => {
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
                    metrics.last_event_id.store(last.event.id, Ordering::Relaxed);
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
    if let Ok(Err(err)) = store.as_ref().map(Store::checkpoint) {
        log::warn!("final checkpoint of the event store failed: {err}");
    }
    log::debug!("event writer stopped");
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
