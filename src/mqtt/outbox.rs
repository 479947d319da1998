//! QoS 1 bookkeeping, with no I/O: packet ids for the messages in flight, a bounded window of
//! them, and the delivered position — the highest event id such that it and every event
//! before it were acknowledged (PUBACK). Only that position moves the delivery cursor, so an
//! event in flight when the connection drops is published again after the reconnect: at
//! least once, the duplicates bounded by the window.

use std::collections::VecDeque;

/// Messages in flight at most. A few are enough to hide the round trip to a broker on the
/// local network; more would only add duplicates after a connection loss.
pub const WINDOW: usize = 16;

#[derive(Debug)]
struct InFlight {
    packet_id: u16,
    /// The event this message publishes, if it is one (pictures, discovery and availability
    /// are QoS 1 too, but move no cursor).
    event_id: Option<u64>,
    acked: bool,
}

#[derive(Debug)]
pub struct Outbox {
    in_flight: VecDeque<InFlight>,
    last_packet_id: u16,
    /// Every event up to this id is acknowledged.
    delivered: u64,
    /// The last event id handed to the broker (in flight or acknowledged).
    sent: u64,
}

/// What an acknowledgement did.
#[derive(Debug, PartialEq, Eq)]
pub struct Acked {
    /// The new delivered position, if it moved.
    pub delivered: Option<u64>,
    /// Whether the acknowledged message published an event.
    pub event: bool,
}

/// A PUBACK for a packet id that is not in flight (late, after a reconnect, or a broker bug).
#[derive(Debug, PartialEq, Eq)]
pub struct UnknownAck(pub u16);

impl Outbox {
    /// An outbox whose events up to `delivered` are already delivered.
    pub fn new(delivered: u64) -> Outbox {
        Outbox {
            in_flight: VecDeque::with_capacity(WINDOW),
            last_packet_id: 0,
            delivered,
            sent: delivered,
        }
    }

    pub fn has_room(&self) -> bool {
        self.in_flight.len() < WINDOW
    }

    pub fn is_idle(&self) -> bool {
        self.in_flight.is_empty()
    }

    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Takes a packet id for a QoS 1 message about to be sent (`event_id` if it publishes an
    /// event). The caller checks [`Outbox::has_room`] first for events; control messages
    /// (availability, discovery) may go past the window.
    pub fn track(&mut self, event_id: Option<u64>) -> u16 {
        let packet_id = self.free_packet_id();
        if let Some(id) = event_id {
            debug_assert!(id > self.sent, "events go out in id order");
            self.sent = id;
        }
        self.in_flight.push_back(InFlight {
            packet_id,
            event_id,
            acked: false,
        });
        packet_id
    }

    /// Records a PUBACK (or the SUBACK of a SUBSCRIBE that took a packet id here).
    pub fn ack(&mut self, packet_id: u16) -> Result<Acked, UnknownAck> {
        let message = self
            .in_flight
            .iter_mut()
            .find(|m| m.packet_id == packet_id && !m.acked)
            .ok_or(UnknownAck(packet_id))?;
        message.acked = true;
        let event = message.event_id.is_some();
        let before = self.delivered;
        while self.in_flight.front().is_some_and(|m| m.acked) {
            if let Some(InFlight {
                event_id: Some(id), ..
            }) = self.in_flight.pop_front()
            {
                self.delivered = self.delivered.max(id);
            }
        }
        Ok(Acked {
            delivered: (self.delivered > before).then_some(self.delivered),
            event,
        })
    }

    /// The connection is gone: nothing is in flight any more, and every event after the
    /// delivered position is to be sent again. Returns how many events were in flight (the
    /// most that can arrive twice).
    pub fn reset(&mut self) -> u64 {
        let unacked = self.sent - self.delivered;
        self.in_flight.clear();
        self.sent = self.delivered;
        unacked
    }

    /// 1..=65535, skipping ids still in flight (2.3.1: a new message needs an unused id).
    fn free_packet_id(&mut self) -> u16 {
        loop {
            self.last_packet_id = self.last_packet_id.checked_add(1).unwrap_or(1);
            let id = self.last_packet_id;
            if !self.in_flight.iter().any(|m| m.packet_id == id) {
                return id;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_position_moves_only_over_a_contiguous_run_of_acks() {
        let mut outbox = Outbox::new(10);
        let a = outbox.track(Some(11));
        let picture = outbox.track(None);
        let b = outbox.track(Some(12));
        let c = outbox.track(Some(13));
        assert_eq!(outbox.sent(), 13);
        let moved = |ack: Result<Acked, UnknownAck>| ack.unwrap().delivered;
        // Out of order: 13 first moves nothing.
        assert_eq!(moved(outbox.ack(c)), None);
        assert_eq!(moved(outbox.ack(a)), Some(11));
        assert_eq!(
            moved(outbox.ack(b)),
            None,
            "the picture before 12 is not acked"
        );
        assert_eq!(
            outbox.ack(picture),
            Ok(Acked {
                delivered: Some(13),
                event: false
            })
        );
        assert!(outbox.is_idle());
        assert_eq!(outbox.ack(c), Err(UnknownAck(c)));
    }

    #[test]
    fn a_reset_sends_again_everything_not_acknowledged() {
        let mut outbox = Outbox::new(0);
        let first = outbox.track(Some(1));
        outbox.track(Some(2));
        outbox.track(Some(3));
        outbox.ack(first).unwrap();
        assert_eq!(outbox.reset(), 2);
        assert_eq!((outbox.delivered(), outbox.sent()), (1, 1));
        assert!(outbox.is_idle());
    }

    #[test]
    fn the_window_is_bounded_and_packet_ids_are_never_zero_or_in_use() {
        let mut outbox = Outbox::new(0);
        let mut ids = Vec::new();
        for event in 1..=WINDOW as u64 {
            assert!(outbox.has_room());
            ids.push(outbox.track(Some(event)));
        }
        assert!(!outbox.has_room());
        // Wrap around: ids still in flight are skipped, 0 is never used.
        outbox.last_packet_id = u16::MAX - 1;
        let after_wrap = [outbox.track(None), outbox.track(None)];
        assert_eq!(after_wrap[0], u16::MAX);
        assert!(!ids.contains(&after_wrap[1]) && after_wrap[1] != 0);
        assert_eq!(after_wrap[1], WINDOW as u16 + 1);
    }
}
