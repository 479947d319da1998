//! Failed-authentication throttling, per client address (contract r2).
//!
//! A LAN device could otherwise try tens of thousands of tokens a second. Each wrong token is
//! counted against the address it came from; the [`MAX_FAILURES`]th within [`WINDOW`] blocks
//! the address for [`FIRST_BLOCK`], and each block that follows while failures go on is twice
//! as long (up to [`MAX_BLOCK`]). A blocked address gets 429 with `Retry-After` for anything
//! that presents a token, the right one included, so guessing cannot go on in the background
//! of a block.
//!
//! What is not a guess does not count: a request without a token (a dashboard opening before
//! its login), and the same wrong token again (a stale cookie, an `EventSource` reconnecting
//! with an old `?token=`): the last few wrong tokens of each address are remembered as keyed
//! hashes, never as text. Otherwise a phone with an old cookie would lock its owner out.
//!
//! The table is bounded ([`MAX_ADDRESSES`]): when full, records that no longer matter go
//! first, then the longest quiet one, so many addresses cost memory once, never more.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Wrong tokens from one address within [`WINDOW`] before it is blocked.
pub const MAX_FAILURES: u32 = 10;
/// The window failures are counted in.
pub const WINDOW: Duration = Duration::from_secs(60);
/// The first block; each further failure while the address is throttled doubles it.
pub const FIRST_BLOCK: Duration = Duration::from_secs(10);
/// The longest block.
pub const MAX_BLOCK: Duration = Duration::from_secs(3600);
/// After this long without a failure an address starts afresh.
const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Addresses remembered at most.
pub const MAX_ADDRESSES: usize = 4096;
/// Distinct wrong tokens remembered per address, so repeats are not counted again.
const REMEMBERED_TOKENS: usize = 4;

#[derive(Clone, Copy, Debug)]
struct Record {
    window_start: Instant,
    failures: u32,
    /// Blocks imposed so far (each doubles the next).
    strikes: u32,
    blocked_until: Option<Instant>,
    last_failure: Instant,
    /// Keyed hashes of the latest distinct wrong tokens, newest first.
    recent: [Option<u64>; REMEMBERED_TOKENS],
}

impl Record {
    fn new(now: Instant) -> Record {
        Record {
            window_start: now,
            failures: 0,
            strikes: 0,
            blocked_until: None,
            last_failure: now,
            recent: [None; REMEMBERED_TOKENS],
        }
    }

    /// Remembers `fingerprint`; false if it was already among the recent ones.
    fn remember(&mut self, fingerprint: u64) -> bool {
        if self.recent.contains(&Some(fingerprint)) {
            return false;
        }
        self.recent.rotate_right(1);
        self.recent[0] = Some(fingerprint);
        true
    }

    fn blocked(&self, now: Instant) -> Option<Duration> {
        self.blocked_until
            .filter(|until| *until > now)
            .map(|until| until - now)
    }

    /// Whether this record can still affect anything.
    fn matters(&self, now: Instant) -> bool {
        self.blocked(now).is_some() || now.duration_since(self.last_failure) < FORGET_AFTER
    }

    fn block(&mut self, now: Instant) -> Duration {
        let doubling = 1u32.checked_shl(self.strikes).unwrap_or(u32::MAX);
        let length = FIRST_BLOCK.saturating_mul(doubling).min(MAX_BLOCK);
        self.strikes = self.strikes.saturating_add(1);
        self.blocked_until = Some(now + length);
        length
    }
}

/// What a failure led to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AfterFailure {
    /// The same wrong token as one of the address's last few: not a new guess, not counted.
    Repeated,
    /// Counted; `failures` so far in this window.
    Counted { failures: u32 },
    /// This failure blocked the address for this long.
    Blocked(Duration),
}

/// The per-address failure table.
#[derive(Default)]
pub struct AuthThrottle {
    records: Mutex<HashMap<IpAddr, Record>>,
    /// Keys the token fingerprints (random per process).
    hasher: RandomState,
}

impl AuthThrottle {
    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Record>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How long `address` is still blocked, if it is (the caller answers 429).
    pub fn blocked(&self, address: IpAddr, now: Instant) -> Option<Duration> {
        self.records().get(&address)?.blocked(now)
    }

    /// Counts the wrong `token` from `address`.
    pub fn failed(&self, address: IpAddr, token: &str, now: Instant) -> AfterFailure {
        let fingerprint = self.hasher.hash_one(token);
        let mut records = self.records();
        if !records.contains_key(&address) && records.len() >= MAX_ADDRESSES {
            make_room(&mut records, now);
        }
        let record = records.entry(address).or_insert_with(|| Record::new(now));
        if now.duration_since(record.last_failure) >= FORGET_AFTER {
            *record = Record::new(now);
        }
        if !record.remember(fingerprint) {
            return AfterFailure::Repeated;
        }
        if now.duration_since(record.window_start) >= WINDOW {
            record.window_start = now;
            record.failures = 0;
        }
        record.failures = record.failures.saturating_add(1);
        record.last_failure = now;
        if record.failures >= MAX_FAILURES {
            AfterFailure::Blocked(record.block(now))
        } else {
            AfterFailure::Counted {
                failures: record.failures,
            }
        }
    }

    /// Addresses remembered now.
    pub fn len(&self) -> usize {
        self.records().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Frees one place at least: records that no longer matter, else the longest quiet one.
fn make_room(records: &mut HashMap<IpAddr, Record>, now: Instant) {
    records.retain(|_, record| record.matters(now));
    if records.len() >= MAX_ADDRESSES
        && let Some(quietest) = records
            .iter()
            .filter(|(_, r)| r.blocked(now).is_none())
            .min_by_key(|(_, r)| r.last_failure)
            .or_else(|| records.iter().min_by_key(|(_, r)| r.last_failure))
            .map(|(address, _)| *address)
    {
        records.remove(&quietest);
    }
}

/// `Retry-After` for a remaining block: whole seconds, rounded up, at least 1.
pub fn retry_after_secs(left: Duration) -> u64 {
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(n: u32) -> IpAddr {
        IpAddr::from(std::net::Ipv4Addr::from(0x0A00_0000 + n))
    }

    fn guess(n: u64) -> String {
        format!("guess-{n:08}")
    }

    #[test]
    fn the_tenth_failure_in_a_minute_blocks_and_blocks_grow() {
        let throttle = AuthThrottle::default();
        let t0 = Instant::now();
        let a = address(1);
        for n in 1..MAX_FAILURES {
            let at = t0 + Duration::from_secs(u64::from(n));
            assert_eq!(
                throttle.failed(a, &guess(n.into()), at),
                AfterFailure::Counted { failures: n }
            );
            assert_eq!(throttle.blocked(a, at), None);
        }
        let t = t0 + Duration::from_secs(20);
        assert_eq!(
            throttle.failed(a, &guess(10), t),
            AfterFailure::Blocked(FIRST_BLOCK)
        );
        assert_eq!(throttle.blocked(a, t), Some(FIRST_BLOCK));
        // Another address is not affected.
        assert_eq!(throttle.blocked(address(2), t), None);
        // Failures going on after the block (within the window) block again, twice as long.
        let t = t + FIRST_BLOCK;
        assert_eq!(throttle.blocked(a, t), None);
        assert_eq!(
            throttle.failed(a, &guess(11), t),
            AfterFailure::Blocked(FIRST_BLOCK * 2)
        );
        let t = t + FIRST_BLOCK * 2;
        assert_eq!(
            throttle.failed(a, &guess(12), t),
            AfterFailure::Blocked(FIRST_BLOCK * 4)
        );
        // ... up to the cap.
        let mut t = t + FIRST_BLOCK * 4;
        for n in 13..40 {
            t += Duration::from_secs(1);
            let outcome = throttle.failed(a, &guess(n), t);
            if let AfterFailure::Blocked(length) = outcome {
                assert!(length <= MAX_BLOCK);
            }
        }
    }

    #[test]
    fn the_same_wrong_token_again_is_not_a_new_guess() {
        let throttle = AuthThrottle::default();
        let t0 = Instant::now();
        assert_eq!(
            throttle.failed(address(1), "stale-cookie", t0),
            AfterFailure::Counted { failures: 1 }
        );
        for n in 0..100 {
            let at = t0 + Duration::from_millis(n);
            assert_eq!(
                throttle.failed(address(1), "stale-cookie", at),
                AfterFailure::Repeated
            );
        }
        assert_eq!(throttle.blocked(address(1), t0), None);
        // A different guess still counts.
        assert_eq!(
            throttle.failed(address(1), "another", t0),
            AfterFailure::Counted { failures: 2 }
        );
    }

    #[test]
    fn failures_spread_over_more_than_a_minute_never_block() {
        let throttle = AuthThrottle::default();
        let t0 = Instant::now();
        for n in 0..100u64 {
            let outcome = throttle.failed(address(1), &guess(n), t0 + Duration::from_secs(n * 7));
            assert!(
                matches!(outcome, AfterFailure::Counted { .. }),
                "{n}: {outcome:?}"
            );
        }
    }

    #[test]
    fn a_block_ends() {
        let throttle = AuthThrottle::default();
        let t0 = Instant::now();
        for n in 0..MAX_FAILURES {
            throttle.failed(address(1), &guess(n.into()), t0);
        }
        assert!(throttle.blocked(address(1), t0).is_some());
        assert_eq!(throttle.blocked(address(1), t0 + FIRST_BLOCK), None);
    }

    #[test]
    fn many_addresses_are_bounded() {
        let throttle = AuthThrottle::default();
        let t0 = Instant::now();
        let blocked = address(0);
        for n in 0..MAX_FAILURES {
            throttle.failed(blocked, &guess(n.into()), t0);
        }
        for n in 1..(MAX_ADDRESSES as u32 * 3) {
            throttle.failed(address(n), "x", t0 + Duration::from_micros(u64::from(n)));
        }
        assert!(throttle.len() <= MAX_ADDRESSES);
        // The blocked address was kept over quiet ones.
        assert!(
            throttle
                .blocked(blocked, t0 + Duration::from_secs(1))
                .is_some()
        );
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(10)), 10);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
