//! The seam between the doorbell logic and the hardware: what the poller needs from a button
//! and a chime, and nothing about sysfs. `sysfs.rs` implements it for the kernel's (or a fake)
//! tree; the poller's tests implement it in memory.

use std::io;
use std::time::Duration;

/// The button input.
pub trait ButtonLine: Send {
    /// The electrical level now: `Some(true)` high, `Some(false)` low, `None` when no level
    /// could be read this time (try again at the next wake-up).
    fn is_high(&mut self) -> io::Result<Option<bool>>;

    /// Blocks until the level may have changed (an edge interrupt) or `timeout` has passed,
    /// whichever comes first. Implementations without interrupts may return sooner.
    fn wait(&mut self, timeout: Duration) -> io::Result<()>;
}

/// The chime output (a buzzer or a relay).
pub trait ChimeLine: Send {
    /// Switches it on or off; the implementation applies the wiring's polarity.
    fn set(&mut self, on: bool) -> io::Result<()>;
}
