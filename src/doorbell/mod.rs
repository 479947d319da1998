//! The doorbell button: what `--doorbell` names, the simulated doorbell that is pressed through
//! the API, and the GPIO doorbell: a button on a sysfs GPIO pin, read by a poller thread that
//! debounces it and rings once per press, with an optional chime output.
//!
//! - `sysfs.rs` — sysfs GPIO under a configurable root: BCM → sysfs numbering, export, errors.
//! - `lines.rs` — the small trait the poller reads the button and drives the chime through.
//! - `debounce.rs` — readings → presses (debounce, cooldown); pure.
//! - `poller.rs` — the thread.

pub(crate) mod debounce;
pub(crate) mod lines;
pub(crate) mod poller;
pub(crate) mod sysfs;

use std::fmt;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::control::Control;
use crate::shutdown::Shutdown;

/// What `--doorbell` names.
#[derive(Clone, Debug, PartialEq)]
pub enum DoorbellSpec {
    /// Pressed only through the API (`POST /api/trigger-doorbell`, the WebSocket command).
    Sim,
    /// A button on a GPIO pin (BCM numbering), read through sysfs.
    Gpio {
        pin: u32,
        active_low: bool,
        debounce_ms: u32,
    },
}

impl DoorbellSpec {
    pub fn parse(text: &str) -> Result<DoorbellSpec, String> {
        if text == "sim" {
            return Ok(DoorbellSpec::Sim);
        }
        let usage = "expected sim or gpio:PIN[:active-low][:debounce=MS]";
        let rest = text
            .strip_prefix("gpio:")
            .ok_or_else(|| format!("{text:?}: {usage}"))?;
        let mut parts = rest.split(':');
        let pin_text = parts.next().unwrap_or_default();
        let pin = parse_bcm(pin_text)?;
        let mut spec = DoorbellSpec::Gpio {
            pin,
            active_low: false,
            debounce_ms: 50,
        };
        for option in parts {
            let DoorbellSpec::Gpio {
                active_low,
                debounce_ms,
                ..
            } = &mut spec
            else {
                unreachable!("spec is Gpio here");
            };
            if option == "active-low" {
                *active_low = true;
            } else if let Some(ms) = option.strip_prefix("debounce=") {
                *debounce_ms =
                    ms.parse().ok().filter(|ms| *ms <= 10_000).ok_or_else(|| {
                        format!("debounce={ms}: expected 0 to 10000 milliseconds")
                    })?;
            } else {
                return Err(format!("{option:?}: unknown option; {usage}"));
            }
        }
        Ok(spec)
    }

    /// The name the status object reports in `doorbell.source`.
    pub fn source_name(&self) -> &'static str {
        match self {
            DoorbellSpec::Sim => "sim",
            DoorbellSpec::Gpio { .. } => "gpio",
        }
    }

    pub fn pin(&self) -> Option<u32> {
        match self {
            DoorbellSpec::Sim => None,
            DoorbellSpec::Gpio { pin, .. } => Some(*pin),
        }
    }
}

impl fmt::Display for DoorbellSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DoorbellSpec::Sim => f.write_str("sim"),
            DoorbellSpec::Gpio {
                pin,
                active_low,
                debounce_ms,
            } => {
                write!(f, "gpio:{pin}")?;
                if *active_low {
                    f.write_str(":active-low")?;
                }
                write!(f, ":debounce={debounce_ms}")
            }
        }
    }
}

/// The chime output, `gpio:PIN[:active-low]` (a relay board that switches on a low input is
/// active-low).
#[derive(Clone, Debug, PartialEq)]
pub struct ChimeSpec {
    pub pin: u32,
    pub active_low: bool,
}

impl ChimeSpec {
    /// `""` is no chime.
    pub fn parse(text: &str) -> Result<Option<ChimeSpec>, String> {
        if text.is_empty() {
            return Ok(None);
        }
        let usage = "expected \"\" (no chime) or gpio:PIN[:active-low]";
        let rest = text
            .strip_prefix("gpio:")
            .ok_or_else(|| format!("{text:?}: {usage}"))?;
        let (pin_text, option) = match rest.split_once(':') {
            Some((pin, option)) => (pin, Some(option)),
            None => (rest, None),
        };
        let pin = parse_bcm(pin_text)?;
        let active_low = match option {
            None => false,
            Some("active-low") => true,
            Some(other) => return Err(format!("{other:?}: unknown option; {usage}")),
        };
        Ok(Some(ChimeSpec { pin, active_low }))
    }
}

impl fmt::Display for ChimeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gpio:{}", self.pin)?;
        if self.active_low {
            f.write_str(":active-low")?;
        }
        Ok(())
    }
}

fn parse_bcm(text: &str) -> Result<u32, String> {
    text.parse()
        .ok()
        .filter(|pin| *pin <= 63)
        .ok_or_else(|| format!("{text:?} is not a BCM GPIO number (0 to 63)"))
}

/// What the GPIO doorbell needs besides its spec (config keys `gpio_sysfs_root`, `chime`,
/// `chime_ms`, `doorbell_cooldown_ms`).
pub struct GpioSettings<'a> {
    pub sysfs_root: &'a Path,
    pub cooldown: Duration,
    pub chime: Option<&'a ChimeSpec>,
    pub chime_pulse: Duration,
}

/// Opens the pins and starts the poller thread for a GPIO doorbell; `Ok(None)` for the simulated
/// one. Every error is fatal at startup and says what to fix: a doorbell that silently never
/// rings is worse than a service that refuses to start.
pub fn start(
    spec: &DoorbellSpec,
    settings: GpioSettings<'_>,
    control: Control,
    shutdown: Shutdown,
) -> Result<Option<JoinHandle<()>>, String> {
    let DoorbellSpec::Gpio {
        pin,
        active_low,
        debounce_ms,
    } = *spec
    else {
        return Ok(None);
    };
    let gpio = sysfs::SysfsGpio::open(settings.sysfs_root)?;
    let mut button = gpio.open_button(pin, shutdown.signal())?;
    let initial_high = lines::ButtonLine::is_high(&mut button)
        .map_err(|e| format!("cannot read {}: {e}", button.line().describe()))?;
    if initial_high.is_some_and(|high| high != active_low) {
        log::warn!(
            "the doorbell button on {} reads as pressed at start: it rings after it is released \
             and pressed again (wrong polarity? try {} :active-low)",
            button.line().describe(),
            if active_low { "without" } else { "adding" }
        );
    }
    let chime = match settings.chime {
        Some(chime) => Some(gpio.open_chime(chime.pin, chime.active_low)?),
        None => None,
    };
    let name = button.line().describe();
    log::info!(
        "doorbell on {name}{}, debounce {debounce_ms} ms, cooldown {} ms, {}{}",
        if active_low { ", active-low" } else { "" },
        settings.cooldown.as_millis(),
        if button.has_interrupts() {
            "edge interrupts".to_string()
        } else {
            format!("read every {} ms", sysfs::POLL_INTERVAL.as_millis())
        },
        match &chime {
            Some(chime) => format!(
                "; chime on {} for {} ms",
                chime.line().describe(),
                settings.chime_pulse.as_millis()
            ),
            None => String::new(),
        }
    );
    let poller_settings = poller::PollerSettings {
        pin,
        name,
        active_low,
        debounce: Duration::from_millis(u64::from(debounce_ms)),
        cooldown: settings.cooldown,
        chime_pulse: settings.chime_pulse,
        initial_high,
    };
    let ring: poller::Ring = Box::new(move |data| {
        if let Err(err) = control.trigger_doorbell(crate::events::builtin::GPIO_SOURCE, data) {
            log::warn!("doorbell press on GPIO {pin} not stored: {err}");
        }
    });
    let chime: Option<Box<dyn lines::ChimeLine>> = match chime {
        Some(chime) => Some(Box::new(chime)),
        None => None,
    };
    let handle = std::thread::Builder::new()
        .name("doorbell".into())
        .stack_size(64 * 1024)
        .spawn(move || poller::run(Box::new(button), chime, poller_settings, ring, shutdown))
        .map_err(|e| format!("cannot start the doorbell thread: {e}"))?;
    Ok(Some(handle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_chime_specs() {
        assert_eq!(ChimeSpec::parse("").unwrap(), None);
        let chime = ChimeSpec::parse("gpio:27:active-low").unwrap().unwrap();
        assert_eq!(
            chime,
            ChimeSpec {
                pin: 27,
                active_low: true
            }
        );
        assert_eq!(chime.to_string(), "gpio:27:active-low");
        assert_eq!(
            ChimeSpec::parse("gpio:5").unwrap().unwrap().to_string(),
            "gpio:5"
        );
        for bad in ["gpio:", "gpio:64", "gpio:5:loud", "27", "sim"] {
            assert!(ChimeSpec::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn parses_gpio_options() {
        assert_eq!(DoorbellSpec::parse("sim").unwrap(), DoorbellSpec::Sim);
        assert_eq!(
            DoorbellSpec::parse("gpio:17:active-low:debounce=30").unwrap(),
            DoorbellSpec::Gpio {
                pin: 17,
                active_low: true,
                debounce_ms: 30
            }
        );
        for bad in [
            "",
            "gpio",
            "gpio:",
            "gpio:x",
            "gpio:99",
            "gpio:4:loud",
            "button",
        ] {
            assert!(DoorbellSpec::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
