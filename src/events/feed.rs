//! The event source of an outside consumer (the MQTT bridge, a webhook sender): every event
//! after the consumer's position, in id order, from the store first and then live, in bounded
//! memory however far behind the consumer is.
//!
//! Like a stream's replay ([`super::replay`]) it subscribes to the hub *before* reading the
//! store, so no event falls between the two. Unlike a stream, it reads the store one page at a
//! time and only when asked for the next event: a consumer that waits for a broker or a
//! receiver holds one page and its live queue, never the backlog. A consumer too slow for its
//! live queue is evicted by the hub like any client; the feed then subscribes again and reads
//! the store, so nothing is lost, and while caught up (the usual case) events come from the
//! live queue, already serialised, without touching the store.

use std::borrow::Cow;
use std::collections::VecDeque;

use crossbeam_channel::{Receiver, TryRecvError};

use super::event::{Event, SharedEvent};
use super::hub::EventHub;
use super::store::StoreError;
use crate::hub::Subscription;

/// One event, as the hub fanned it out or as the store returned it.
#[derive(Debug)]
pub enum Fed {
    Live(SharedEvent),
    Stored(Event),
}

impl Fed {
    pub fn event(&self) -> &Event {
        match self {
            Fed::Live(shared) => &shared.event,
            Fed::Stored(event) => event,
        }
    }

    /// The event object as one line of JSON (serialised once by the hub for a live event).
    pub fn json(&self) -> Cow<'_, str> {
        match self {
            Fed::Live(shared) => Cow::Borrowed(&shared.json),
            Fed::Stored(event) => Cow::Owned(crate::json::text(&event.to_json())),
        }
    }
}

pub struct Feed {
    hub: EventHub,
    capacity: usize,
    page_size: u64,
    /// `None` while paused (the consumer cannot deliver anyway: no queue to fill and evict).
    live: Option<Subscription<SharedEvent>>,
    /// A live event taken from the queue (by the consumer's `select!`) and not yet handed out.
    taken: Option<SharedEvent>,
    page: VecDeque<Event>,
    /// The store may hold events after the position that the live queue does not.
    behind: bool,
    /// Events deleted by retention before this consumer got them (logged, counted).
    lost: u64,
}

impl Feed {
    /// A feed with a live queue of `capacity` events that reads the store `page_size` events
    /// at a time.
    pub fn new(hub: &EventHub, capacity: usize, page_size: u64) -> Feed {
        Feed {
            hub: hub.clone(),
            capacity,
            page_size: page_size.max(1),
            live: None,
            taken: None,
            page: VecDeque::new(),
            behind: true,
            lost: 0,
        }
    }

    /// Wait on this (in a `select!`) for a new event, but only once [`Feed::next`] returned
    /// `None`; give what it yields to [`Feed::took`].
    pub fn live(&mut self) -> Receiver<SharedEvent> {
        self.subscribed().clone()
    }

    /// Stops taking live events until the next [`Feed::next`] or [`Feed::live`], for a
    /// consumer that cannot deliver for a while (broker away, receiver failing): nothing
    /// queues for it meanwhile, and it catches up from the store. Also drops what is buffered,
    /// so the next [`Feed::next`] may start from an earlier position (events to send again).
    pub fn pause(&mut self) {
        self.page.clear();
        self.live = None;
        self.taken = None;
        self.behind = true;
    }

    /// The live queue, subscribing first if paused. A new subscription means the store may
    /// hold events it lacks.
    fn subscribed(&mut self) -> &Receiver<SharedEvent> {
        if self.live.is_none() {
            self.live = Some(self.hub.subscribe(self.capacity, None));
            self.behind = true;
        }
        &self.live.as_ref().expect("just subscribed").rx
    }

    /// Hands the feed what a `select!` on [`Feed::live`] received: an event, or the news that
    /// the hub evicted this consumer.
    pub fn took(&mut self, received: Result<SharedEvent, crossbeam_channel::RecvError>) {
        match received {
            Ok(event) => {
                debug_assert!(
                    self.taken.is_none(),
                    "select on live only after next() = None"
                );
                self.taken = Some(event);
            }
            Err(_) => self.resubscribe(),
        }
    }

    /// Events deleted by retention before this consumer got them, since the start.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    fn resubscribe(&mut self) {
        // Subscribe again before the store is read: nothing committed from now on is missed.
        self.live = None;
        self.taken = None;
        self.subscribed();
    }

    /// The first event after `after`, if there is one now.
    pub fn next(&mut self, after: u64) -> Result<Option<Fed>, StoreError> {
        // Subscribed before any store read, so nothing falls between the two.
        self.subscribed();
        loop {
            while let Some(event) = self.page.pop_front() {
                if event.id > after {
                    return Ok(Some(Fed::Stored(event)));
                }
            }
            if self.behind {
                let events = self.hub.reader().after(after, self.page_size)?;
                if (events.len() as u64) < self.page_size {
                    // Everything committed before this read is in it; everything after is
                    // in the live queue, subscribed before the read.
                    self.behind = false;
                }
                if let Some(first) = events.first()
                    && first.id > after + 1
                    && after > 0
                {
                    let missing = first.id - after - 1;
                    self.lost += missing;
                    log::warn!(
                        "events {}..{} were deleted by retention before they could be delivered",
                        after + 1,
                        first.id - 1
                    );
                }
                self.page.extend(events);
                continue;
            }
            let event = match self.taken.take() {
                Some(event) => event,
                None => match self.subscribed().try_recv() {
                    Ok(event) => event,
                    Err(TryRecvError::Empty) => return Ok(None),
                    Err(TryRecvError::Disconnected) => {
                        self.resubscribe();
                        continue;
                    }
                },
            };
            if event.event.id > after {
                return Ok(Some(Fed::Live(event)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventDraft;
    use crate::events::store::{Retention, Store, StoreReader};
    use crate::metrics::Metrics;
    use std::sync::Arc;

    fn hub(name: &str, max_events: u64) -> (EventHub, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "porchlight-feed-{name}-{}-{}",
            std::process::id(),
            crate::clock::unix_now()
        ));
        let retention = Retention {
            max_events,
            max_snapshot_bytes: 1 << 20,
            max_clip_bytes: 1 << 20,
        };
        let store = Store::open(&dir, retention);
        let reader = Arc::new(StoreReader::new(&dir));
        let (hub, _writer) = EventHub::start(store, reader, Arc::new(Metrics::new())).unwrap();
        (hub, dir)
    }

    fn publish(hub: &EventHub, n: usize) {
        for _ in 0..n {
            hub.publish(EventDraft::new(
                "doorbell_pressed",
                "test",
                Default::default(),
            ))
            .unwrap();
        }
    }

    /// Drains the feed from `after`, as a consumer that delivers at once would.
    fn drain(feed: &mut Feed, mut after: u64) -> Vec<(u64, &'static str)> {
        let mut got = Vec::new();
        while let Some(fed) = feed.next(after).unwrap() {
            after = fed.event().id;
            got.push((
                after,
                if matches!(fed, Fed::Live(_)) {
                    "live"
                } else {
                    "store"
                },
            ));
        }
        got
    }

    #[test]
    fn the_store_first_then_live_each_once_in_order() {
        let (hub, dir) = hub("order", 1000);
        publish(&hub, 5);
        let mut feed = Feed::new(&hub, 16, 2);
        publish(&hub, 2);
        let got = drain(&mut feed, 1);
        let ids: Vec<u64> = got.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, vec![2, 3, 4, 5, 6, 7]);
        // Caught up: the next events come from the live queue.
        publish(&hub, 2);
        assert_eq!(drain(&mut feed, 7), vec![(8, "live"), (9, "live")]);
        assert!(feed.next(9).unwrap().is_none());
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn an_evicted_consumer_reads_what_it_missed_from_the_store() {
        let (hub, dir) = hub("evict", 1000);
        let mut feed = Feed::new(&hub, 4, 100);
        assert!(feed.next(0).unwrap().is_none());
        publish(&hub, 10);
        let ids: Vec<u64> = drain(&mut feed, 0).iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, (1..=10).collect::<Vec<_>>());
        // A select! that saw the eviction.
        publish(&hub, 6);
        let mut after = 10;
        while let Ok(event) = feed.live().try_recv() {
            feed.took(Ok(event));
            after = feed.next(after).unwrap().unwrap().event().id;
        }
        feed.took(Err(crossbeam_channel::RecvError));
        let ids: Vec<u64> = drain(&mut feed, after).iter().map(|(id, _)| *id).collect();
        assert_eq!(after, 14);
        assert_eq!(ids, vec![15, 16]);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn events_deleted_before_delivery_are_counted() {
        let (hub, dir) = hub("lost", 3);
        publish(&hub, 8);
        let mut feed = Feed::new(&hub, 4, 100);
        let ids: Vec<u64> = drain(&mut feed, 2).iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, vec![6, 7, 8]);
        assert_eq!(feed.lost(), 3);
        std::fs::remove_dir_all(dir).ok();
    }
}
