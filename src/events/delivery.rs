//! Delivery cursors: how far each outside consumer of the event store (the MQTT bridge, each
//! webhook) has got, kept in the store so that delivery resumes where it stopped, also after a
//! restart or `kill -9`.
//!
//! A consumer moves its cursor in memory only ([`DeliveryCursor::advance`], one atomic store, so
//! a PUBACK or a 2xx never waits for a disk). The event writer thread — still the store's only
//! writer — persists the cursors that moved: inside the transaction of its next event batch
//! (no extra fsync while events flow) or, when no event comes, within [`SAVE_INTERVAL`], and
//! once more when it stops. So after a crash a consumer resumes at most [`SAVE_INTERVAL`]
//! behind what it had delivered: delivery is at least once, and the duplicates are bounded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::store::StoreReader;

/// Longest a moved cursor stays unsaved while no event is stored.
pub const SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// `saved` before the cursor was ever written.
const NEVER_SAVED: u64 = u64::MAX;

/// One consumer's position: the id of the last event it has delivered (or skipped).
#[derive(Debug)]
pub struct DeliveryCursor {
    name: String,
    position: AtomicU64,
    saved: AtomicU64,
}

impl DeliveryCursor {
    /// The row's key in the store (e.g. `mqtt 127.0.0.1:1883 porchlight/door`).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn position(&self) -> u64 {
        self.position.load(Ordering::Acquire)
    }

    /// Every event up to `id` is delivered. Never moves backwards.
    pub fn advance(&self, id: u64) {
        self.position.fetch_max(id, Ordering::AcqRel);
    }
}

/// The cursors registered in this process; the event writer persists them.
#[derive(Clone, Default)]
pub struct DeliveryCursors {
    cursors: Arc<Mutex<Vec<Arc<DeliveryCursor>>>>,
}

impl DeliveryCursors {
    /// The cursor named `name`, starting where the store says it stopped. A consumer that never
    /// ran starts at the newest event (it delivers what happens from now on, not the whole
    /// history), and so does one whose position is past the newest id (the store was replaced):
    /// both are saved at once.
    pub fn register(&self, name: &str, reader: &StoreReader) -> Arc<DeliveryCursor> {
        let newest = match reader.bounds() {
            Ok(bounds) => bounds.last_id,
            Err(err) => {
                log::warn!("cannot read the event store for {name}: {err}");
                0
            }
        };
        let stored = reader.cursor(name).unwrap_or_else(|err| {
            log::warn!("cannot read the delivery cursor of {name}: {err}");
            None
        });
        let (position, saved) = match stored {
            Some(id) if id <= newest => (id, id),
            Some(id) => {
                log::warn!(
                    "{name} had delivered up to event {id}, but the store's newest is {newest} \
                     (was it replaced?): delivering from event {} on",
                    newest + 1
                );
                (newest, NEVER_SAVED)
            }
            None => (newest, NEVER_SAVED),
        };
        let cursor = Arc::new(DeliveryCursor {
            name: name.to_string(),
            position: AtomicU64::new(position),
            saved: AtomicU64::new(saved),
        });
        let mut cursors = self.cursors.lock().expect("delivery cursors");
        cursors.retain(|c| c.name != name);
        cursors.push(Arc::clone(&cursor));
        cursor
    }

    pub fn is_empty(&self) -> bool {
        self.cursors.lock().expect("delivery cursors").is_empty()
    }

    /// The cursors whose position moved since they were last saved, as `(name, position)`.
    pub fn unsaved(&self) -> Vec<(String, u64)> {
        self.cursors
            .lock()
            .expect("delivery cursors")
            .iter()
            .filter_map(|c| {
                let position = c.position();
                (c.saved.load(Ordering::Acquire) != position).then(|| (c.name.clone(), position))
            })
            .collect()
    }

    /// Records that `saved` (from [`DeliveryCursors::unsaved`]) is on disk.
    pub fn mark_saved(&self, saved: &[(String, u64)]) {
        let cursors = self.cursors.lock().expect("delivery cursors");
        for (name, position) in saved {
            if let Some(cursor) = cursors.iter().find(|c| &c.name == name) {
                cursor.saved.store(*position, Ordering::Release);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventDraft;
    use crate::events::store::{Retention, Store};

    fn store(name: &str, events: usize) -> (Store, StoreReader, std::path::PathBuf) {
        let dir = crate::events::scratch_dir(&format!("delivery-{name}"));
        let retention = Retention {
            max_events: 1000,
            max_snapshot_bytes: 1 << 20,
            max_clip_bytes: 1 << 20,
        };
        let mut store = Store::open(&dir, retention).unwrap();
        let drafts: Vec<EventDraft> = (0..events)
            .map(|_| EventDraft::new("doorbell_pressed", "test", Default::default()))
            .collect();
        store.append(&drafts).unwrap();
        let reader = StoreReader::new(&dir);
        (store, reader, dir)
    }

    #[test]
    fn a_new_consumer_starts_at_the_newest_event_and_is_saved() {
        let (mut store, reader, dir) = store("new", 5);
        let cursors = DeliveryCursors::default();
        let cursor = cursors.register("mqtt a", &reader);
        assert_eq!(cursor.position(), 5);
        let unsaved = cursors.unsaved();
        assert_eq!(unsaved, vec![("mqtt a".to_string(), 5)]);
        store.save_cursors(&unsaved).unwrap();
        cursors.mark_saved(&unsaved);
        assert!(cursors.unsaved().is_empty());
        cursor.advance(7);
        cursor.advance(6);
        assert_eq!(cursor.position(), 7, "a cursor never moves back");
        assert_eq!(cursors.unsaved(), vec![("mqtt a".to_string(), 7)]);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_saved_position_survives_and_one_past_the_store_is_reset() {
        let (mut store, reader, dir) = store("resume", 5);
        store
            .save_cursors(&[("hook".to_string(), 3), ("ahead".to_string(), 50)])
            .unwrap();
        let cursors = DeliveryCursors::default();
        assert_eq!(cursors.register("hook", &reader).position(), 3);
        assert_eq!(cursors.register("ahead", &reader).position(), 5);
        assert_eq!(cursors.unsaved(), vec![("ahead".to_string(), 5)]);
        // Saved in the same transaction as events.
        let draft = EventDraft::new("doorbell_pressed", "test", Default::default());
        store
            .append_saving(&[draft], &[("hook".to_string(), 6)])
            .unwrap();
        assert_eq!(reader.cursor("hook").unwrap(), Some(6));
        std::fs::remove_dir_all(dir).ok();
    }
}
