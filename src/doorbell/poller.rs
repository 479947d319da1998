//! The doorbell poller thread: read the button, debounce, ring once per press, pulse the chime.
//!
//! It owns its lines; dropping them at the end switches the chime off and unexports the pins.

use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::debounce::{Debouncer, Transition};
use super::lines::{ButtonLine, ChimeLine};
use crate::shutdown::Shutdown;

/// Longest wait without a reading: bounds how late shutdown is noticed when edge interrupts
/// wait for the button (the polling fallback wakes at once on shutdown).
const IDLE_WAKE: Duration = Duration::from_millis(250);
/// Pause after a failed read before the next try, so a vanished pin is not a busy loop.
const ERROR_BACKOFF: Duration = Duration::from_secs(1);

pub struct PollerSettings {
    /// BCM number, for the event's `data` and the logs.
    pub pin: u32,
    /// `GPIO 17 (sysfs 529 on pinctrl-bcm2835)`, for the logs.
    pub name: String,
    /// The button pulls the pin low when pressed (wired to ground with a pull-up).
    pub active_low: bool,
    pub debounce: Duration,
    pub cooldown: Duration,
    /// How long the chime stays on for one ring.
    pub chime_pulse: Duration,
    /// The level read before the server announced itself: the starting point, so a press
    /// that comes right after startup is a press and not the starting level.
    pub initial_high: Option<bool>,
}

/// What one ring does beyond the chime: store and fan out the event. Gets the event's `data`.
pub type Ring = Box<dyn FnMut(Map<String, Value>) + Send>;

/// Runs until shutdown.
pub fn run(
    mut button: Box<dyn ButtonLine>,
    mut chime: Option<Box<dyn ChimeLine>>,
    settings: PollerSettings,
    mut ring: Ring,
    shutdown: Shutdown,
) {
    let name = &settings.name;
    let stop = shutdown.signal();
    let mut debouncer = Debouncer::new(settings.debounce, settings.cooldown);
    if let Some(high) = settings.initial_high {
        debouncer.reading(Instant::now(), high != settings.active_low);
    }
    let mut chime_off_at: Option<Instant> = None;
    let mut failing = false;
    while !shutdown.is_triggered() {
        let now = Instant::now();
        match button.is_high() {
            Ok(Some(high)) => {
                if failing {
                    log::info!("{name}: readable again");
                    failing = false;
                }
                let pressed = high != settings.active_low;
                match debouncer.reading(now, pressed) {
                    Some(Transition::Pressed) => {
                        if let Some(chime) = chime.as_mut() {
                            switch_chime(chime.as_mut(), true, name);
                            chime_off_at = Some(now + settings.chime_pulse);
                        }
                        let mut data = Map::new();
                        data.insert("pin".into(), Value::from(settings.pin));
                        ring(data);
                    }
                    Some(Transition::PressedInCooldown) => log::debug!(
                        "{name}: pressed again within the {} ms cooldown; not a new ring",
                        settings.cooldown.as_millis()
                    ),
                    Some(Transition::Released) => log::debug!("{name}: button released"),
                    None => {}
                }
            }
            Ok(None) => {}
            Err(err) => {
                if !failing {
                    log::warn!("{name}: cannot read the button: {err}; retrying every second");
                    failing = true;
                }
                let _ = stop.recv_timeout(ERROR_BACKOFF);
                continue;
            }
        }
        let now = Instant::now();
        if let (Some(off_at), Some(chime)) = (chime_off_at, chime.as_mut())
            && now >= off_at
        {
            switch_chime(chime.as_mut(), false, name);
            chime_off_at = None;
        }
        let wake_at = [debouncer.deadline(), chime_off_at]
            .into_iter()
            .flatten()
            .fold(now + IDLE_WAKE, Instant::min);
        if let Err(err) = button.wait(wake_at.saturating_duration_since(now)) {
            log::warn!("{name}: waiting for the button failed: {err}");
            let _ = stop.recv_timeout(ERROR_BACKOFF);
        }
    }
    if let Some(chime) = chime.as_mut()
        && chime_off_at.is_some()
    {
        switch_chime(chime.as_mut(), false, name);
    }
    log::debug!("{name}: doorbell poller stopped");
}

fn switch_chime(chime: &mut dyn ChimeLine, on: bool, name: &str) {
    if let Err(err) = chime.set(on) {
        log::warn!(
            "{name}: cannot switch the chime {}: {err}",
            if on { "on" } else { "off" }
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::io;
    use std::sync::{Arc, Mutex};

    /// A button that plays back levels, one per reading, and ends the run when they run out.
    struct Script {
        levels: VecDeque<Option<bool>>,
        step: Duration,
        shutdown: Shutdown,
    }

    impl ButtonLine for Script {
        fn is_high(&mut self) -> io::Result<Option<bool>> {
            match self.levels.pop_front() {
                Some(level) => Ok(level),
                None => {
                    self.shutdown.trigger();
                    Ok(None)
                }
            }
        }

        fn wait(&mut self, timeout: Duration) -> io::Result<()> {
            // Real time must pass: the debouncer measures it.
            std::thread::sleep(timeout.min(self.step));
            Ok(())
        }
    }

    struct Recorder(Arc<Mutex<Vec<bool>>>);

    impl ChimeLine for Recorder {
        fn set(&mut self, on: bool) -> io::Result<()> {
            self.0.lock().unwrap().push(on);
            Ok(())
        }
    }

    #[test]
    fn active_low_press_rings_once_and_pulses_the_chime() {
        let shutdown = Shutdown::new();
        // Idle high (pull-up), a bouncy press to low held for a while, then release.
        let mut levels: VecDeque<Option<bool>> = VecDeque::new();
        levels.extend([Some(true); 5]);
        levels.extend([Some(false), Some(true), None, Some(false), Some(true)]);
        levels.extend([Some(false); 30]);
        levels.extend([Some(true); 30]);
        let button = Script {
            levels,
            step: Duration::from_millis(2),
            shutdown: shutdown.clone(),
        };
        let chime_log = Arc::new(Mutex::new(Vec::new()));
        let rings = Arc::new(Mutex::new(Vec::new()));
        let rings_in = Arc::clone(&rings);
        run(
            Box::new(button),
            Some(Box::new(Recorder(Arc::clone(&chime_log)))),
            PollerSettings {
                pin: 17,
                name: "GPIO 17".into(),
                active_low: true,
                debounce: Duration::from_millis(10),
                cooldown: Duration::from_secs(5),
                chime_pulse: Duration::from_millis(20),
                initial_high: None,
            },
            Box::new(move |data| rings_in.lock().unwrap().push(data)),
            shutdown,
        );
        let rings = rings.lock().unwrap();
        assert_eq!(rings.len(), 1, "rings: {rings:?}");
        assert_eq!(rings[0]["pin"], 17);
        assert_eq!(*chime_log.lock().unwrap(), vec![true, false]);
    }

    #[test]
    fn read_errors_are_retried_not_fatal() {
        struct Broken(Shutdown, u32);
        impl ButtonLine for Broken {
            fn is_high(&mut self) -> io::Result<Option<bool>> {
                self.1 += 1;
                if self.1 == 2 {
                    self.0.trigger();
                }
                Err(io::Error::other("gone"))
            }
            fn wait(&mut self, _: Duration) -> io::Result<()> {
                Ok(())
            }
        }
        let shutdown = Shutdown::new();
        let started = Instant::now();
        run(
            Box::new(Broken(shutdown.clone(), 0)),
            None,
            PollerSettings {
                pin: 4,
                name: "GPIO 4".into(),
                active_low: false,
                debounce: Duration::ZERO,
                cooldown: Duration::ZERO,
                chime_pulse: Duration::ZERO,
                initial_high: None,
            },
            Box::new(|_| panic!("no ring from a broken pin")),
            shutdown,
        );
        // One backoff, cut short by the shutdown at the second read.
        assert!(started.elapsed() < ERROR_BACKOFF * 3);
    }

    fn settings(active_low: bool) -> PollerSettings {
        PollerSettings {
            pin: 27,
            name: "GPIO 27".into(),
            active_low,
            debounce: Duration::from_millis(5),
            cooldown: Duration::from_secs(5),
            chime_pulse: Duration::from_secs(60),
            initial_high: None,
        }
    }

    /// Runs the poller over `button` and returns the rings and the chime's switching.
    fn rings_of(
        button: Box<dyn ButtonLine>,
        chime: Option<Box<dyn ChimeLine>>,
        settings: PollerSettings,
        shutdown: Shutdown,
    ) -> Vec<Map<String, Value>> {
        let rings = Arc::new(Mutex::new(Vec::new()));
        let rings_in = Arc::clone(&rings);
        run(
            button,
            chime,
            settings,
            Box::new(move |data| rings_in.lock().unwrap().push(data)),
            shutdown,
        );
        rings.lock().unwrap().clone()
    }

    #[test]
    fn shutdown_in_the_middle_of_a_chime_pulse_switches_the_chime_off() {
        // A press, then the server stops long before the minute-long pulse ends: the relay is
        // never left energised.
        let shutdown = Shutdown::new();
        let mut levels: VecDeque<Option<bool>> = VecDeque::new();
        levels.extend([Some(false); 3]);
        levels.extend([Some(true); 20]);
        let button = Script {
            levels,
            step: Duration::from_millis(2),
            shutdown: shutdown.clone(),
        };
        let chime_log = Arc::new(Mutex::new(Vec::new()));
        let rings = rings_of(
            Box::new(button),
            Some(Box::new(Recorder(Arc::clone(&chime_log)))),
            settings(false),
            shutdown,
        );
        assert_eq!(rings.len(), 1);
        assert_eq!(*chime_log.lock().unwrap(), vec![true, false]);
    }

    #[test]
    fn a_button_held_since_startup_is_not_a_press_until_released_and_pressed_again() {
        let shutdown = Shutdown::new();
        let mut levels: VecDeque<Option<bool>> = VecDeque::new();
        // Held (low, active-low) when the server started and still held: no ring.
        levels.extend([Some(false); 10]);
        // Released, pressed: one ring; the cooldown swallows a second press.
        levels.extend([Some(true); 10]);
        levels.extend([Some(false); 10]);
        levels.extend([Some(true); 10]);
        levels.extend([Some(false); 10]);
        let button = Script {
            levels,
            step: Duration::from_millis(2),
            shutdown: shutdown.clone(),
        };
        let mut held = settings(true);
        held.initial_high = Some(false);
        let rings = rings_of(Box::new(button), None, held, shutdown);
        assert_eq!(rings.len(), 1, "{rings:?}");
        assert_eq!(rings[0]["pin"], 27);
    }

    /// A button that fails `failures` reads (a pin that vanished and came back), then plays
    /// `then`; every `wait` can fail too.
    struct Flaky {
        failures: u32,
        wait_fails: bool,
        then: Script,
    }

    impl ButtonLine for Flaky {
        fn is_high(&mut self) -> io::Result<Option<bool>> {
            if self.failures > 0 {
                self.failures -= 1;
                return Err(io::Error::other("value file gone"));
            }
            self.then.is_high()
        }

        fn wait(&mut self, timeout: Duration) -> io::Result<()> {
            self.then.wait(timeout)?;
            if self.wait_fails {
                self.wait_fails = false;
                return Err(io::Error::other("poll failed"));
            }
            Ok(())
        }
    }

    struct BrokenChime(Arc<Mutex<u32>>);

    impl ChimeLine for BrokenChime {
        fn set(&mut self, _: bool) -> io::Result<()> {
            *self.0.lock().unwrap() += 1;
            Err(io::Error::other("relay gone"))
        }
    }

    #[test]
    fn a_pin_that_comes_back_rings_again_and_a_broken_chime_does_not_stop_the_ring() {
        let shutdown = Shutdown::new();
        let mut levels: VecDeque<Option<bool>> = VecDeque::new();
        levels.extend([Some(false); 5]);
        levels.extend([Some(true); 10]);
        let button = Flaky {
            failures: 1,
            wait_fails: true,
            then: Script {
                levels,
                step: Duration::from_millis(2),
                shutdown: shutdown.clone(),
            },
        };
        let tries = Arc::new(Mutex::new(0));
        let mut short = settings(false);
        short.chime_pulse = Duration::from_millis(10);
        let rings = rings_of(
            Box::new(button),
            Some(Box::new(BrokenChime(Arc::clone(&tries)))),
            short,
            shutdown,
        );
        assert_eq!(rings.len(), 1, "{rings:?}");
        // Switched on and off (both failing), the ring stored all the same.
        assert_eq!(*tries.lock().unwrap(), 2);
    }
}
