//! Replay, then live, with no seam: the exactly-once, in-id-order delivery that every event
//! stream (SSE and WebSocket) shares.
//!
//! A stream subscribes to the hub *before* it reads the store, then offers every event, replayed
//! or live, to its [`Cursor`], which lets through only ids above the last one it handled. An event
//! committed before the subscription is in the store read; one fanned out after it is in the
//! queue; one in both is let through once. So a client that reconnects with the last id it saw
//! gets every later event exactly once, in order, whichever way each one reached it.

use std::fmt;

use super::event::Event;
use super::store::{StoreError, StoreReader};

/// Events read from the store per query while replaying.
const REPLAY_PAGE: u64 = 500;

/// What a replay hands to its stream, in order.
#[derive(Debug)]
pub enum Replayed<'a> {
    /// Retention deleted events after `from` before the client saw them: the first one still
    /// stored is `to`. Comes first, at most once.
    Gap { from: u64, to: u64 },
    /// The client's cursor `last_event_id` is ahead of every id the store ever assigned (its
    /// data dir was wiped or replaced): it should forget it. Live events after `newest_id`
    /// follow. Comes instead of any replay.
    Reset { last_event_id: u64, newest_id: u64 },
    /// A stored event newer than anything the stream handled. Not serialised yet: the stream
    /// builds only the form its client speaks, and only if its filter wants the event.
    Event(&'a Event),
    /// A page of events was handed over: a good moment to flush.
    PageEnd,
}

/// Why a replay stopped early. The stream branches on it: a failed delivery (`E`, the stream's
/// own write error) is the client's connection failing; the others are the server's side.
#[derive(Debug, PartialEq)]
pub enum ReplayError<E> {
    /// The store could not be read.
    Store(StoreError),
    /// A page of the store after event `from` moved the cursor no further (it would otherwise
    /// read the same page for ever).
    Stuck { from: u64 },
    /// The stream could not hand an item to its client.
    Deliver(E),
}

impl<E: fmt::Display> fmt::Display for ReplayError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::Store(err) => err.fmt(f),
            ReplayError::Stuck { from } => write!(
                f,
                "replay stopped: a page of the store after event {from} moved the cursor no \
                 further"
            ),
            ReplayError::Deliver(err) => err.fmt(f),
        }
    }
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

    /// Counts every id up to `id` as handled: the fan-out sent them (or skipped them by the
    /// filter) while it wrote to the stream's socket.
    pub fn skip_to(&mut self, id: u64) {
        self.last_handled = self.last_handled.max(id);
    }

    /// Hands `deliver` every stored event after `after` that the cursor has not handled, in id
    /// order (a [`Replayed::Gap`] first if some were deleted), and advances past them; or, when
    /// `after` is beyond the newest id ever stored, a [`Replayed::Reset`] and a cursor at that
    /// newest id. Stops at the first error, from the store or from `deliver`, and with
    /// [`ReplayError::Stuck`] if a page of the store does not move the cursor.
    pub fn replay<E>(
        &mut self,
        reader: &StoreReader,
        after: u64,
        mut deliver: impl FnMut(Replayed<'_>) -> Result<(), E>,
    ) -> Result<(), ReplayError<E>> {
        let mut deliver = |item: Replayed<'_>| deliver(item).map_err(ReplayError::Deliver);
        let bounds = reader.bounds().map_err(ReplayError::Store)?;
        if after > bounds.last_id {
            deliver(Replayed::Reset {
                last_event_id: after,
                newest_id: bounds.last_id,
            })?;
            self.last_handled = self.last_handled.max(bounds.last_id);
        } else {
            let first_available = bounds
                .first_id
                .unwrap_or_else(|| bounds.last_id.saturating_add(1));
            if after < bounds.last_id && after.saturating_add(1) < first_available {
                deliver(Replayed::Gap {
                    from: after,
                    to: first_available,
                })?;
            }
            self.last_handled = self.last_handled.max(after);
        }
        loop {
            let from = self.last_handled;
            let page = reader
                .after(from, REPLAY_PAGE)
                .map_err(ReplayError::Store)?;
            for event in &page {
                if self.advance(event.id) {
                    deliver(Replayed::Event(event))?;
                }
            }
            deliver(Replayed::PageEnd)?;
            if (page.len() as u64) < REPLAY_PAGE {
                return Ok(());
            }
            if self.last_handled == from {
                return Err(ReplayError::Stuck { from });
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
                    Replayed::Reset {
                        last_event_id,
                        newest_id,
                    } => format!("reset {last_event_id}>{newest_id}"),
                    Replayed::Event(e) => e.id.to_string(),
                    Replayed::PageEnd => "page".into(),
                });
                Ok::<(), String>(())
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
    fn a_cursor_ahead_of_the_store_is_reset_to_its_newest_id() {
        let (reader, _) = store_with("reset", 4, 100);
        let mut cursor = Cursor::new();
        assert_eq!(replay(&mut cursor, &reader, 1000), ["reset 1000>4", "page"]);
        assert_eq!(cursor.last_handled(), 4);
        // Live events after the newest stored id get through.
        assert!(cursor.advance(5));
        let mut cursor = Cursor::new();
        assert_eq!(
            replay(&mut cursor, &reader, 9_223_372_036_854_775_807),
            ["reset 9223372036854775807>4", "page"]
        );
        // Up to date is not ahead.
        let mut cursor = Cursor::new();
        assert_eq!(replay(&mut cursor, &reader, 4), ["page"]);
        // An empty store: everything is ahead of it.
        let (empty, _) = store_with("reset-empty", 0, 100);
        let mut cursor = Cursor::new();
        assert_eq!(replay(&mut cursor, &empty, 3), ["reset 3>0", "page"]);
        assert_eq!(cursor.last_handled(), 0);
    }

    /// Found by a hostile client: with 500+ events, a cursor of 2^64-1 wrapped negative in the
    /// store, every page was the same first 500 events and the loop never ended. Now the id is
    /// bounded where it is parsed, ahead-of-store is a reset, and a page that does not move the
    /// cursor ends the replay.
    #[test]
    fn a_huge_cursor_does_not_spin() {
        let (reader, _) = store_with("huge", 1200, 10_000);
        for after in [u64::MAX, 1 << 63, (1 << 63) - 1] {
            let mut cursor = Cursor::new();
            let seen = replay(&mut cursor, &reader, after);
            assert_eq!(seen.len(), 2, "{after}: {seen:?}");
            assert!(seen[0].starts_with("reset"), "{after}: {seen:?}");
        }
        // A full replay of 1200 events takes three pages and ends.
        let mut cursor = Cursor::new();
        let seen = replay(&mut cursor, &reader, 0);
        assert_eq!(seen.iter().filter(|s| *s == "page").count(), 3);
        assert_eq!(cursor.last_handled(), 1200);
    }

    #[test]
    fn a_delivery_error_stops_the_replay() {
        let (reader, _) = store_with("error", 3, 100);
        let mut cursor = Cursor::new();
        let mut delivered = 0;
        let result = cursor.replay(&reader, 0, |item| match item {
            Replayed::Event(_) if delivered == 1 => Err("client gone".to_string()),
            Replayed::Event(_) => {
                delivered += 1;
                Ok(())
            }
            _ => Ok(()),
        });
        assert_eq!(result, Err(ReplayError::Deliver("client gone".to_string())));
        assert_eq!(delivered, 1);
    }
}
