//! The capture thread's decisions, as pure logic on the times it is given: when a quiet source
//! counts as stalled, when a stall has lasted long enough that the source is closed and reopened,
//! how long to wait before the next open (1 s, doubling to 30 s, back to 1 s once frames flowed
//! or on a restart), that an outage is announced once (`camera_offline`) and its end once
//! (`camera_online`, with how long it lasted), which failures are new enough to log at warn, and
//! when the "NO LIVE VIDEO" placeholder is due.
//!
//! No threads, no I/O, no clock of its own: `capture.rs` feeds it what happened and when, and
//! does what it answers. So the tests drive it with exact times, in microseconds.

use std::fmt;
use std::time::{Duration, Instant};

use super::CameraState;
use super::SourceError;

/// Placeholder rate while there is no live video.
pub const PLACEHOLDER_EVERY: Duration = Duration::from_secs(1);

/// The state machine's delays.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// A stalled source is given this long past the stall before it is closed and reopened.
    pub stall_grace: Duration,
    /// Wait before the first reopen after a failure; doubled per failure up to `backoff_max`.
    pub backoff_first: Duration,
    pub backoff_max: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            stall_grace: Duration::from_secs(5),
            backoff_first: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// Why the camera is not streaming.
#[derive(Clone, Debug, PartialEq)]
pub enum Failure {
    /// The source could not be opened (no device, busy, no permission…).
    Open(SourceError),
    /// The open source failed while streaming (unplugged, I/O error).
    Source(SourceError),
    /// The source delivered nothing for this long.
    NoFrames(Duration),
}

impl Failure {
    /// Whether `self` is `other` going on: logged at warn once, then at debug. A source that
    /// keeps stalling is one problem however long each stall was, and one that keeps failing
    /// the same way (the same kind of error) is one problem whatever its message's details.
    fn same_cause(&self, other: &Failure) -> bool {
        match (self, other) {
            (Failure::NoFrames(_), Failure::NoFrames(_)) => true,
            (Failure::Open(a), Failure::Open(b)) | (Failure::Source(a), Failure::Source(b)) => {
                a.kind == b.kind
            }
            _ => false,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Open(why) | Failure::Source(why) => write!(f, "{why}"),
            Failure::NoFrames(quiet) => write!(
                f,
                "no frame for {:.0} s; reopening the camera",
                quiet.as_secs_f64()
            ),
        }
    }
}

/// What a frame arriving changed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Arrived {
    /// The camera was not streaming before this frame (log it).
    pub started_streaming: bool,
    /// The frame ends an announced outage that lasted this long: publish `camera_online`.
    pub outage_ended: Option<Duration>,
}

/// What a poll without a frame means.
#[derive(Clone, Debug, PartialEq)]
pub enum Quiet {
    /// Nothing yet: frames are not overdue.
    Waiting,
    /// Overdue: the camera is stalled (`first`: it just became so — log it once).
    Stalled { first: bool },
    /// Stalled past the grace: close the source and go offline with this failure.
    GiveUp(Failure),
}

/// What a failure calls for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WentOffline {
    /// The first failure of this outage: publish `camera_offline`.
    pub announce: bool,
    /// Not the failure logged last: log it at warn (else at debug).
    pub new_cause: bool,
}

/// The capture thread's state and timers.
pub struct Health {
    timing: Timing,
    state: CameraState,
    /// No frame for this long means stalled (from the open source's frame rate).
    stall_after: Duration,
    /// The last frame of the open source, or when it opened.
    last_frame: Option<Instant>,
    /// A frame arrived since the last failure: the next wait starts from `backoff_first`.
    streamed: bool,
    /// The wait before the next reopen.
    backoff: Duration,
    /// Since when an announced outage lasts (`camera_offline` sent, no `camera_online` yet).
    outage_since: Option<Instant>,
    last_failure: Option<Failure>,
    last_placeholder: Option<Instant>,
}

impl Health {
    pub fn new(timing: Timing) -> Health {
        Health {
            timing,
            state: CameraState::Starting,
            stall_after: Duration::from_secs(1),
            last_frame: None,
            streamed: false,
            backoff: timing.backoff_first,
            outage_since: None,
            last_failure: None,
            last_placeholder: None,
        }
    }

    pub fn state(&self) -> CameraState {
        self.state
    }

    /// An open attempt begins.
    pub fn opening(&mut self) {
        self.state = CameraState::Starting;
        self.last_frame = None;
    }

    /// The source opened at `now`, promising `fps`: frames are overdue after three frame
    /// intervals (at least a second).
    pub fn opened(&mut self, now: Instant, fps: u32) {
        let interval = Duration::from_secs(1) / fps.max(1);
        self.stall_after = (interval * 3).max(Duration::from_secs(1));
        self.last_frame = Some(now);
    }

    /// A live frame captured at `now`.
    pub fn frame(&mut self, now: Instant) -> Arrived {
        self.last_frame = Some(now);
        self.streamed = true;
        self.last_placeholder = None;
        let started_streaming = self.state != CameraState::Streaming;
        self.state = CameraState::Streaming;
        let outage_ended = if started_streaming {
            self.last_failure = None;
            self.outage_since
                .take()
                .map(|since| now.saturating_duration_since(since))
        } else {
            None
        };
        Arrived {
            started_streaming,
            outage_ended,
        }
    }

    /// A poll of the open source at `now` gave no frame.
    pub fn quiet(&mut self, now: Instant) -> Quiet {
        let since = *self.last_frame.get_or_insert(now);
        let quiet = now.saturating_duration_since(since);
        if quiet >= self.stall_after + self.timing.stall_grace {
            return Quiet::GiveUp(Failure::NoFrames(quiet));
        }
        if quiet < self.stall_after {
            return Quiet::Waiting;
        }
        let first = self.state != CameraState::Stalled;
        self.state = CameraState::Stalled;
        Quiet::Stalled { first }
    }

    /// The source failed at `now` (could not open, broke, or stalled for good).
    pub fn failed(&mut self, now: Instant, failure: Failure) -> WentOffline {
        self.state = CameraState::Offline;
        self.last_frame = None;
        self.last_placeholder = None;
        let new_cause = !self
            .last_failure
            .as_ref()
            .is_some_and(|last| last.same_cause(&failure));
        self.last_failure = Some(failure);
        let announce = self.outage_since.is_none();
        if announce {
            self.outage_since = Some(now);
        }
        WentOffline {
            announce,
            new_cause,
        }
    }

    /// How long to wait before the next open, after a failure. Each wait doubles the next, up
    /// to `backoff_max`; frames flowing in between start it over.
    pub fn retry_delay(&mut self) -> Duration {
        if std::mem::take(&mut self.streamed) {
            self.backoff = self.timing.backoff_first;
        }
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(self.timing.backoff_max);
        delay
    }

    /// A restart was asked for: reopen now, and wait from `backoff_first` should it fail.
    /// A restart is not an outage: an announced one goes on until frames flow.
    pub fn restarted(&mut self) {
        self.state = CameraState::Starting;
        self.backoff = self.timing.backoff_first;
        self.last_frame = None;
    }

    /// Whether a placeholder frame is due at `now` (none sent in the last second since live
    /// video stopped); if so it counts as sent.
    pub fn placeholder_due(&mut self, now: Instant) -> bool {
        let due = self
            .last_placeholder
            .is_none_or(|last| now.saturating_duration_since(last) >= PLACEHOLDER_EVERY);
        if due {
            self.last_placeholder = Some(now);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind;

    fn timing() -> Timing {
        Timing::default()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_quiet_source_stalls_after_three_frame_intervals_and_gives_up_after_the_grace() {
        let t0 = Instant::now();
        let mut health = Health::new(timing());
        health.opened(t0, 1); // one frame a second: stalled after 3 s
        assert!(health.frame(t0).started_streaming);
        assert_eq!(health.quiet(t0 + ms(2_999)), Quiet::Waiting);
        assert_eq!(health.state(), CameraState::Streaming);
        assert_eq!(health.quiet(t0 + ms(3_000)), Quiet::Stalled { first: true });
        assert_eq!(health.state(), CameraState::Stalled);
        assert_eq!(
            health.quiet(t0 + ms(4_000)),
            Quiet::Stalled { first: false }
        );
        assert_eq!(
            health.quiet(t0 + ms(8_000)),
            Quiet::GiveUp(Failure::NoFrames(ms(8_000)))
        );
    }

    #[test]
    fn fast_sources_stall_after_one_second_at_least() {
        let t0 = Instant::now();
        let mut health = Health::new(timing());
        health.opened(t0, 30);
        health.frame(t0);
        assert_eq!(health.quiet(t0 + ms(999)), Quiet::Waiting);
        assert_eq!(health.quiet(t0 + ms(1_000)), Quiet::Stalled { first: true });
        // A frame ends the stall without an event: it was no outage.
        let arrived = health.frame(t0 + ms(1_100));
        assert_eq!(
            arrived,
            Arrived {
                started_streaming: true,
                outage_ended: None
            }
        );
    }

    #[test]
    fn a_source_that_never_sends_a_frame_stalls_from_its_open() {
        let t0 = Instant::now();
        let mut health = Health::new(timing());
        health.opening();
        health.opened(t0, 15);
        assert_eq!(health.quiet(t0 + ms(500)), Quiet::Waiting);
        assert_eq!(health.quiet(t0 + ms(1_000)), Quiet::Stalled { first: true });
        assert!(matches!(health.quiet(t0 + ms(6_000)), Quiet::GiveUp(_)));
    }

    fn missing() -> SourceError {
        SourceError::new(ErrorKind::NotFound, "no such device")
    }

    #[test]
    fn an_outage_is_announced_once_and_its_end_says_how_long() {
        let t0 = Instant::now();
        let mut health = Health::new(timing());
        let first = health.failed(t0, Failure::Open(missing()));
        assert_eq!(
            first,
            WentOffline {
                announce: true,
                new_cause: true
            }
        );
        assert_eq!(health.state(), CameraState::Offline);
        // Retries failing the same way: neither announced nor logged at warn again.
        health.opening();
        // (The same kind of error: its message's details may differ.)
        let again = health.failed(
            t0 + ms(1_000),
            Failure::Open(SourceError::new(
                ErrorKind::NotFound,
                "no such device (ENODEV)",
            )),
        );
        assert_eq!(
            again,
            WentOffline {
                announce: false,
                new_cause: false
            }
        );
        // Failing differently is logged, still not announced.
        health.opening();
        let other = health.failed(
            t0 + ms(3_000),
            Failure::Open(SourceError::new(
                ErrorKind::PermissionDenied,
                "permission denied",
            )),
        );
        assert_eq!(
            other,
            WentOffline {
                announce: false,
                new_cause: true
            }
        );
        health.opening();
        health.opened(t0 + ms(7_000), 15);
        let back = health.frame(t0 + ms(7_250));
        assert_eq!(back.outage_ended, Some(ms(7_250)));
        assert!(back.started_streaming);
        // The next outage is a new one.
        let next = health.failed(
            t0 + ms(9_000),
            Failure::Source(SourceError::new(ErrorKind::NotFound, "unplugged")),
        );
        assert!(next.announce && next.new_cause);
    }

    #[test]
    fn stalls_of_any_length_are_one_cause() {
        let t0 = Instant::now();
        let mut health = Health::new(timing());
        assert!(health.failed(t0, Failure::NoFrames(ms(6_000))).new_cause);
        assert!(!health.failed(t0, Failure::NoFrames(ms(9_000))).new_cause);
        assert!(
            health
                .failed(t0, Failure::Source("no frame".to_string().into()))
                .new_cause
        );
    }

    #[test]
    fn the_backoff_doubles_to_its_cap_and_starts_over_after_frames_or_a_restart() {
        let t0 = Instant::now();
        let mut health = Health::new(timing());
        let mut waits = Vec::new();
        for _ in 0..7 {
            health.failed(
                t0,
                Failure::Open(SourceError::new(ErrorKind::ResourceBusy, "busy")),
            );
            waits.push(health.retry_delay().as_secs());
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        // Frames flowed: the next failure waits a second again.
        health.opened(t0, 15);
        health.frame(t0);
        health.failed(
            t0 + ms(10),
            Failure::Source(SourceError::new(ErrorKind::NotFound, "unplugged")),
        );
        assert_eq!(health.retry_delay(), ms(1_000));
        assert_eq!(health.retry_delay(), ms(2_000));
        // A restart starts over too, and is no outage of its own.
        health.restarted();
        assert_eq!(health.state(), CameraState::Starting);
        assert_eq!(health.retry_delay(), ms(1_000));
    }

    #[test]
    fn placeholders_are_due_once_a_second_and_at_once_after_live_video_stops() {
        let t0 = Instant::now();
        let mut health = Health::new(timing());
        assert!(health.placeholder_due(t0));
        assert!(!health.placeholder_due(t0 + ms(999)));
        assert!(health.placeholder_due(t0 + ms(1_000)));
        health.opened(t0, 15);
        health.frame(t0 + ms(1_100));
        health.failed(
            t0 + ms(1_200),
            Failure::Source(SourceError::new(ErrorKind::NotFound, "unplugged")),
        );
        assert!(health.placeholder_due(t0 + ms(1_200)));
    }

    #[test]
    fn failures_read_as_the_user_should_see_them() {
        assert_eq!(Failure::Open(missing()).to_string(), "no such device");
        assert_eq!(
            Failure::NoFrames(ms(6_400)).to_string(),
            "no frame for 6 s; reopening the camera"
        );
    }
}
