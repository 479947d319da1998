//! Replay, then live, with no seam: the exactly-once, in-id-order delivery that every event
//! stream (SSE and WebSocket) shares.
//!
//! A stream subscribes to the hub *before* it reads the store, then offers every event, replayed
//! or live, to its [`Cursor`], which lets through only ids above the last one it handled. An event
//! committed before the subscription is in the store read; one fanned out after it is in the
//! queue; one in both is let through once. So a client that reconnects with the last id it saw
//! gets every later event exactly once, in order, whichever way each one reached it.

use super::event::Event;
use super::store::StoreReader;

/// Events read from the store per query while replaying.
const REPLAY_PAGE: u64 = 500;

/// What a replay hands to its stream, in order.
#[derive(Debug)]
pub enum Replayed<'a> {
    /// Retention deleted events after `from` before the client saw them: the first one still
    /// stored is `to`. Comes first, at most once.
    Gap { from: u64, to: u64 },
    /// A stored event newer than anything the stream handled. Not serialised yet: the stream
    /// builds only the form its client speaks, and only if its filter wants the event.
    Event(&'a Event),
    /// A page of events was handed over: a good moment to flush.
    PageEnd,
}

/// The largest event id a stream has handled (sent, or skipped by its filter).
#[derive(Debug, Default)]
pub struct Cursor {
    last_handled: u64,
}

impl Cursor {
    pub fn new() -> Cursor {
        Cursor::default()
    }

    pub fn last_handled(&self) -> u64 {
        self.last_handled
    }

    /// Whether event `id` is new to this stream; if it is, it counts as handled from now on.
    pub fn advance(&mut self, id: u64) -> bool {
        if id <= self.last_handled {
            return false;
        }
        self.last_handled = id;
        true
    }

    /// Hands `deliver` every stored event after `after` that the cursor has not handled, in id
    /// order (a [`Replayed::Gap`] first if some were deleted), and advances past them. Stops at
    /// the first error, from the store or from `deliver`.
    pub fn replay(
        &mut self,
        reader: &StoreReader,
        after: u64,
        mut deliver: impl FnMut(Replayed<'_>) -> Result<(), String>,
    ) -> Result<(), String> {
        let bounds = reader.bounds().map_err(|e| e.to_string())?;
        let first_available = bounds.first_id.unwrap_or(bounds.last_id + 1);
        if after < bounds.last_id && after + 1 < first_available {
            deliver(Replayed::Gap {
                from: after,
                to: first_available,
            })?;
        }
        self.last_handled = self.last_handled.max(after);
        loop {
            let page = reader
                .after(self.last_handled, REPLAY_PAGE)
                .map_err(|e| e.to_string())?;
            for event in &page {
                if self.advance(event.id) {
                    deliver(Replayed::Event(event))?;
                }
            }
            deliver(Replayed::PageEnd)?;
            if (page.len() as u64) < REPLAY_PAGE {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::store::{Retention, Store};
    use crate::events::{EventDraft, event::Event};

    fn store_with(name: &str, count: usize, max_events: u64) -> (StoreReader, Vec<Event>) {
        let dir = std::env::temp_dir().join(format!(
            "porchlight-replay-{name}-{}-{}",
            std::process::id(),
            crate::clock::unix_now()
        ));
        let retention = Retention {
            max_events,
            max_snapshot_bytes: 1 << 20,
            max_clip_bytes: 1 << 20,
        };
        let mut store = Store::open(&dir, retention).unwrap();
        let drafts: Vec<EventDraft> = (0..count)
            .map(|_| EventDraft::new("doorbell_pressed", "test", Default::default()))
            .collect();
        let events = store.append(&drafts).unwrap();
        (StoreReader::new(&dir), events)
    }

    /// Collects what a replay delivers as text, e.g. `["gap 1..4", "4", "5", "page"]`.
    fn replay(cursor: &mut Cursor, reader: &StoreReader, after: u64) -> Vec<String> {
        let mut seen = Vec::new();
        cursor
            .replay(reader, after, |item| {
                seen.push(match item {
                    Replayed::Gap { from, to } => format!("gap {from}..{to}"),
                    Replayed::Event(e) => e.id.to_string(),
                    Replayed::PageEnd => "page".into(),
                });
                Ok(())
            })
            .unwrap();
        seen
    }

    #[test]
    fn replays_after_the_id_then_passes_only_newer_live_events() {
        let (reader, _) = store_with("seam", 5, 100);
        let mut cursor = Cursor::new();
        assert_eq!(replay(&mut cursor, &reader, 2), ["3", "4", "5", "page"]);
        assert_eq!(cursor.last_handled(), 5);
        // A live event already replayed is let through once, not twice.
        assert!(!cursor.advance(4));
        assert!(!cursor.advance(5));
        assert!(cursor.advance(6));
        assert!(!cursor.advance(6));
    }

    #[test]
    fn a_gap_comes_first_when_retention_deleted_events() {
        let (reader, _) = store_with("gap", 6, 3);
        let mut cursor = Cursor::new();
        assert_eq!(
            replay(&mut cursor, &reader, 1),
            ["gap 1..4", "4", "5", "6", "page"]
        );
        // Up to date: nothing to replay, no gap.
        let mut cursor = Cursor::new();
        assert_eq!(replay(&mut cursor, &reader, 6), ["page"]);
    }

    #[test]
    fn a_delivery_error_stops_the_replay() {
        let (reader, _) = store_with("error", 3, 100);
        let mut cursor = Cursor::new();
        let mut delivered = 0;
        let result = cursor.replay(&reader, 0, |item| match item {
            Replayed::Event(_) if delivered == 1 => Err("client gone".into()),
            Replayed::Event(_) => {
                delivered += 1;
                Ok(())
            }
            _ => Ok(()),
        });
        assert_eq!(result, Err("client gone".to_string()));
        assert_eq!(delivered, 1);
    }
}
