//! Turns raw button readings into presses: a level must hold for the debounce time before it
//! counts (contacts bounce for a few milliseconds when they close and open), and a press that
//! follows the last reported one within the cooldown is not reported again (a shaky finger or a
//! worn button that opens for longer than the debounce time is still one ring).
//!
//! Pure logic on timestamps the caller supplies, so the tests drive it with exact times.

use std::time::{Duration, Instant};

/// What a reading changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// The button went down and stayed down for the debounce time: ring.
    Pressed,
    /// Pressed again, but within the cooldown of the last ring: not a new ring.
    PressedInCooldown,
    /// The button came back up and stayed up for the debounce time.
    Released,
}

pub struct Debouncer {
    debounce: Duration,
    cooldown: Duration,
    /// The accepted level (true = pressed); `None` before the first reading.
    stable: Option<bool>,
    /// A level that differs from `stable`, and since when it has been read.
    pending: Option<(bool, Instant)>,
    /// When the last reported press was accepted.
    last_press: Option<Instant>,
}

impl Debouncer {
    pub fn new(debounce: Duration, cooldown: Duration) -> Debouncer {
        Debouncer {
            debounce,
            cooldown,
            stable: None,
            pending: None,
            last_press: None,
        }
    }

    /// The accepted level: `Some(true)` while the button is held down.
    #[cfg(test)]
    pub fn pressed(&self) -> Option<bool> {
        self.stable
    }

    /// Feeds one reading (`pressed`: the button is down, polarity already applied) taken at `now`.
    ///
    /// The first reading only sets the starting level: a button held while porchlight starts
    /// does not ring until it is released and pressed again.
    pub fn reading(&mut self, now: Instant, pressed: bool) -> Option<Transition> {
        let Some(stable) = self.stable else {
            self.stable = Some(pressed);
            return None;
        };
        if pressed == stable {
            // A bounce that came back before the debounce time ran out.
            self.pending = None;
            return None;
        }
        let since = match self.pending {
            Some((level, since)) if level == pressed => since,
            _ => {
                self.pending = Some((pressed, now));
                now
            }
        };
        if now.duration_since(since) < self.debounce {
            return None;
        }
        self.pending = None;
        self.stable = Some(pressed);
        if !pressed {
            return Some(Transition::Released);
        }
        let in_cooldown = self
            .last_press
            .is_some_and(|last| now.duration_since(last) < self.cooldown);
        if in_cooldown {
            return Some(Transition::PressedInCooldown);
        }
        self.last_press = Some(now);
        Some(Transition::Pressed)
    }

    /// When a pending level will have held for the debounce time: the caller should read again
    /// then, even if no edge wakes it.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending.map(|(_, since)| since + self.debounce)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBOUNCE: Duration = Duration::from_millis(50);
    const COOLDOWN: Duration = Duration::from_millis(1000);

    /// Feeds (milliseconds, level) readings; returns (milliseconds, transition) for each change.
    fn run(readings: &[(u64, bool)]) -> Vec<(u64, Transition)> {
        let start = Instant::now();
        let mut d = Debouncer::new(DEBOUNCE, COOLDOWN);
        readings
            .iter()
            .filter_map(|&(ms, level)| {
                d.reading(start + Duration::from_millis(ms), level)
                    .map(|t| (ms, t))
            })
            .collect()
    }

    #[test]
    fn a_clean_press_rings_once_after_the_debounce_time() {
        let got = run(&[
            (0, false),
            (100, true),
            (120, true),
            (150, true),
            (400, false),
            (460, false),
        ]);
        assert_eq!(
            got,
            vec![(150, Transition::Pressed), (460, Transition::Released)]
        );
    }

    #[test]
    fn bounces_shorter_than_the_debounce_time_are_ignored() {
        let got = run(&[
            (0, false),
            (100, true),
            (103, false),
            (106, true),
            (108, false),
            (110, true),
            (140, true),
            (160, true), // 50 ms since 110
            (300, false),
            (302, true),
            (304, false),
            (354, false),
        ]);
        assert_eq!(
            got,
            vec![(160, Transition::Pressed), (354, Transition::Released)]
        );
    }

    #[test]
    fn holding_the_button_is_one_ring() {
        let mut readings = vec![(0, false)];
        readings.extend((100..5000).step_by(10).map(|ms| (ms, true)));
        readings.push((5000, false));
        readings.push((5100, false));
        let got = run(&readings);
        assert_eq!(
            got,
            vec![(150, Transition::Pressed), (5100, Transition::Released)]
        );
    }

    #[test]
    fn a_second_press_within_the_cooldown_is_not_a_new_ring() {
        let got = run(&[
            (0, false),
            (0, true),
            (50, true),
            (200, false), // a long gap: a worn contact, or a nervous double press
            (260, false),
            (300, true),
            (360, true),
            (500, false),
            (560, false),
            (1100, true), // 1050 ms after the first ring: rings again
            (1150, true),
        ]);
        assert_eq!(
            got,
            vec![
                (50, Transition::Pressed),
                (260, Transition::Released),
                (360, Transition::PressedInCooldown),
                (560, Transition::Released),
                (1150, Transition::Pressed),
            ]
        );
    }

    #[test]
    fn a_button_held_at_start_rings_only_after_release_and_press() {
        let got = run(&[
            (0, true),
            (100, true),
            (200, false),
            (260, false),
            (300, true),
            (350, true),
        ]);
        assert_eq!(
            got,
            vec![(260, Transition::Released), (350, Transition::Pressed)]
        );
    }

    #[test]
    fn deadline_says_when_to_read_again() {
        let start = Instant::now();
        let mut d = Debouncer::new(DEBOUNCE, COOLDOWN);
        assert_eq!(d.reading(start, false), None);
        assert_eq!(d.deadline(), None);
        assert_eq!(d.reading(start + Duration::from_millis(10), true), None);
        assert_eq!(d.deadline(), Some(start + Duration::from_millis(60)));
        assert_eq!(
            d.reading(start + Duration::from_millis(60), true),
            Some(Transition::Pressed)
        );
        assert_eq!(d.deadline(), None);
        assert_eq!(d.pressed(), Some(true));
    }

    #[test]
    fn zero_debounce_accepts_the_first_differing_reading() {
        let start = Instant::now();
        let mut d = Debouncer::new(Duration::ZERO, Duration::ZERO);
        d.reading(start, false);
        assert_eq!(d.reading(start, true), Some(Transition::Pressed));
        assert_eq!(d.reading(start, false), Some(Transition::Released));
        assert_eq!(d.reading(start, true), Some(Transition::Pressed));
    }
}
