//! The doorbell button: what `--doorbell` names, and the simulated doorbell that is pressed
//! through the API. The GPIO poller arrives with the device work (issue 7).

use std::fmt;

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
        let pin: u32 = pin_text
            .parse()
            .ok()
            .filter(|pin| *pin <= 63)
            .ok_or_else(|| format!("{pin_text:?} is not a BCM GPIO number (0 to 63)"))?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
