//! Fan-out primitive: one publisher, many subscribers, each behind a bounded queue.
//!
//! A subscriber that cannot keep up is *evicted* when its queue is full: its queue is
//! disconnected and its `on_evict` hook runs (the HTTP layer closes the socket there), so it
//! never slows the publisher or the others and never holds more than `capacity` items. Items are
//! `Arc`s in practice, so a queued item costs a pointer, not a copy.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender, TrySendError};

/// Called once when a subscriber is evicted (e.g. shut the client's socket down).
pub type EvictHook = Box<dyn FnOnce() + Send>;

struct Slot<T> {
    id: u64,
    tx: Sender<T>,
    on_evict: Option<EvictHook>,
}

struct Inner<T> {
    slots: Mutex<Vec<Slot<T>>>,
    next_id: AtomicU64,
}

/// The publishing side; cheap to clone.
pub struct Broadcast<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for Broadcast<T> {
    fn clone(&self) -> Self {
        Broadcast {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T: Clone> Default for Broadcast<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// A subscriber's end: receive from `rx`; dropping it unsubscribes.
pub struct Subscription<T> {
    pub rx: Receiver<T>,
    id: u64,
    inner: Arc<Inner<T>>,
}

impl<T> Drop for Subscription<T> {
    fn drop(&mut self) {
        // Also runs while a panicking connection thread unwinds: never panic here.
        let mut slots = self
            .inner
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slots.retain(|slot| slot.id != self.id);
    }
}

impl<T: Clone> Broadcast<T> {
    pub fn new() -> Self {
        Broadcast {
            inner: Arc::new(Inner {
                slots: Mutex::new(Vec::new()),
                next_id: AtomicU64::new(1),
            }),
        }
    }

    /// Adds a subscriber whose queue holds at most `capacity` items.
    pub fn subscribe(&self, capacity: usize, on_evict: Option<EvictHook>) -> Subscription<T> {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner
            .slots
            .lock()
            .expect("hub lock")
            .push(Slot { id, tx, on_evict });
        Subscription {
            rx,
            id,
            inner: Arc::clone(&self.inner),
        }
    }

    /// Offers `item` to every subscriber without blocking; evicts those whose queue is full.
    /// Returns how many subscribers were evicted by this call.
    pub fn publish(&self, item: &T) -> usize {
        let mut evicted = Vec::new();
        {
            let mut slots = self.inner.slots.lock().expect("hub lock");
            slots.retain_mut(|slot| match slot.tx.try_send(item.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    evicted.push(slot.on_evict.take());
                    false
                }
                // The subscriber is going away; its Drop will find nothing to remove.
                Err(TrySendError::Disconnected(_)) => false,
            });
        }
        // Hooks run outside the lock: they may do I/O (shutting a socket down).
        let count = evicted.len();
        for hook in evicted.into_iter().flatten() {
            hook();
        }
        count
    }

    /// Subscribers currently registered.
    pub fn len(&self) -> usize {
        self.inner.slots.lock().expect("hub lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn every_subscriber_gets_every_item_in_order() {
        let hub = Broadcast::new();
        let a = hub.subscribe(10, None);
        let b = hub.subscribe(10, None);
        for i in 0..5 {
            assert_eq!(hub.publish(&i), 0);
        }
        assert_eq!(a.rx.try_iter().collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
        assert_eq!(b.rx.try_iter().collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_full_subscriber_is_evicted_and_the_others_are_not() {
        let hub = Broadcast::new();
        let fired = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&fired);
        let slow = hub.subscribe(
            2,
            Some(Box::new(move || flag.store(true, Ordering::SeqCst))),
        );
        let fast = hub.subscribe(2, None);
        for i in 0..3 {
            hub.publish(&i);
            assert_eq!(fast.rx.recv().unwrap(), i);
        }
        assert!(fired.load(Ordering::SeqCst));
        assert_eq!(hub.len(), 1);
        // The evicted queue still holds what it had, then reports disconnection.
        assert_eq!(slow.rx.try_iter().collect::<Vec<_>>(), vec![0, 1]);
        assert!(slow.rx.recv().is_err());
    }

    #[test]
    fn dropping_a_subscription_unsubscribes() {
        let hub: Broadcast<u32> = Broadcast::new();
        let sub = hub.subscribe(1, None);
        assert_eq!(hub.len(), 1);
        drop(sub);
        assert!(hub.is_empty());
    }
}
