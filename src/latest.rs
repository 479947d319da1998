//! Latest-wins exchange: one publisher, any number of readers, one slot.
//!
//! Video is the opposite of events: a frame nobody looked at before the next one arrived is
//! worthless, so nothing is queued. [`Latest::publish`] replaces the slot and wakes every waiting
//! reader; a reader that was busy (writing the previous frame to a slow socket) simply gets the
//! newest one when it asks again. The publisher never waits for a reader (the lock is held for a
//! pointer swap), a reader never delays another, and memory is one `Arc` per slot however many
//! readers there are and however slow they are.
//!
//! Every publish gets a sequence number, so a reader can ask for "anything newer than what I
//! had" and tell from the gap how many items it missed.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

struct Slot<T> {
    seq: u64,
    item: Option<Arc<T>>,
    closed: bool,
}

/// The shared slot; cheap to clone (all clones are the same slot).
pub struct Latest<T> {
    inner: Arc<(Mutex<Slot<T>>, Condvar)>,
}

impl<T> Clone for Latest<T> {
    fn clone(&self) -> Self {
        Latest {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<T> Default for Latest<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// What a wait ended with.
#[derive(Debug)]
pub enum Next<T> {
    /// An item newer than the one asked about, with its sequence number.
    Item(u64, Arc<T>),
    /// Nothing newer within the timeout.
    Timeout,
    /// The publisher closed the slot: nothing more will come.
    Closed,
}

impl<T> Latest<T> {
    pub fn new() -> Self {
        Latest {
            inner: Arc::new((
                Mutex::new(Slot {
                    seq: 0,
                    item: None,
                    closed: false,
                }),
                Condvar::new(),
            )),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        // A panic while holding this lock can only happen in a pointer swap; the slot is always
        // consistent, so a poisoned lock is still safe to use.
        self.inner.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the slot's item and wakes every waiting reader. Returns its sequence number.
    pub fn publish(&self, item: Arc<T>) -> u64 {
        let old;
        let seq;
        {
            let mut slot = self.lock();
            slot.seq += 1;
            seq = slot.seq;
            old = slot.item.replace(item);
        }
        self.inner.1.notify_all();
        // The replaced item (possibly the last reference to a large frame) is freed here,
        // outside the lock.
        drop(old);
        seq
    }

    /// Empties the slot (keeping the sequence), so that a reader arriving later waits for a
    /// fresh item instead of getting a stale one.
    pub fn clear(&self) {
        let old = self.lock().item.take();
        drop(old);
    }

    /// Wakes every reader with [`Next::Closed`], now and for every later wait.
    pub fn close(&self) {
        self.lock().closed = true;
        self.inner.1.notify_all();
    }

    /// The current item and its sequence number, without waiting.
    pub fn current(&self) -> Option<(u64, Arc<T>)> {
        let slot = self.lock();
        slot.item.as_ref().map(|item| (slot.seq, Arc::clone(item)))
    }

    /// The item if one newer than `after` is in the slot now, else waits up to `timeout` for
    /// the next publish. Pass 0 for "whatever is there".
    pub fn wait_newer(&self, after: u64, timeout: Duration) -> Next<T> {
        let deadline = Instant::now() + timeout;
        let mut slot = self.lock();
        loop {
            if slot.closed {
                return Next::Closed;
            }
            if slot.seq > after
                && let Some(item) = &slot.item
            {
                return Next::Item(slot.seq, Arc::clone(item));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Next::Timeout;
            }
            slot = self
                .inner
                .1
                .wait_timeout(slot, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::thread;

    #[test]
    fn a_reader_gets_the_newest_and_skips_what_it_missed() {
        let latest = Latest::new();
        assert!(latest.current().is_none());
        for i in 1..=5 {
            latest.publish(Arc::new(i));
        }
        match latest.wait_newer(0, Duration::ZERO) {
            Next::Item(seq, item) => {
                assert_eq!((seq, *item), (5, 5));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            latest.wait_newer(5, Duration::from_millis(10)),
            Next::Timeout
        ));
    }

    #[test]
    fn a_waiting_reader_is_woken_by_publish() {
        let latest: Latest<u32> = Latest::new();
        let reader = latest.clone();
        let (ready_tx, ready_rx) = mpsc::channel();
        let handle = thread::spawn(move || {
            ready_tx.send(()).unwrap();
            reader.wait_newer(0, Duration::from_secs(10))
        });
        ready_rx.recv().unwrap();
        latest.publish(Arc::new(7));
        match handle.join().unwrap() {
            Next::Item(1, item) => assert_eq!(*item, 7),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_reader_that_holds_an_item_never_blocks_the_publisher() {
        let latest = Latest::new();
        latest.publish(Arc::new(vec![0u8; 16]));
        let Next::Item(_, held) = latest.wait_newer(0, Duration::ZERO) else {
            panic!("no item")
        };
        // The reader keeps its Arc (a frame being written to a slow socket) while the
        // publisher moves on; the slot holds only the newest.
        for i in 1..100u8 {
            latest.publish(Arc::new(vec![i; 16]));
        }
        assert_eq!(held[0], 0);
        assert_eq!(Arc::strong_count(&held), 1);
        assert_eq!(latest.current().unwrap().1[0], 99);
    }

    #[test]
    fn clear_makes_late_readers_wait_for_a_fresh_item() {
        let latest = Latest::new();
        latest.publish(Arc::new(1));
        latest.clear();
        assert!(latest.current().is_none());
        assert!(matches!(
            latest.wait_newer(0, Duration::from_millis(5)),
            Next::Timeout
        ));
        assert_eq!(latest.publish(Arc::new(2)), 2);
    }

    #[test]
    fn close_wakes_every_reader() {
        let latest: Latest<u32> = Latest::new();
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let reader = latest.clone();
                thread::spawn(move || reader.wait_newer(0, Duration::from_secs(10)))
            })
            .collect();
        latest.close();
        for reader in readers {
            assert!(matches!(reader.join().unwrap(), Next::Closed));
        }
    }
}
