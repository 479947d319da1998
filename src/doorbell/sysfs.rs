//! Sysfs GPIO (`/sys/class/gpio`): chip lookup, export, direction, edge, value, unexport.
//!
//! The file access is ours and takes its root as a parameter, so the integration tests run the
//! real binary against a fake tree and go through exactly the code a Raspberry Pi runs; only the
//! root differs. The `sysfs_gpio` crate supplies the one thing a fake tree cannot exercise
//! anyway, the kernel's edge interrupt (`PinPoller`, epoll on the value file): the crate
//! hard-codes `/sys/class/gpio`, so it is used only when the root is that directory. Everywhere
//! else, or when the pin has no interrupt, the button is read every [`POLL_INTERVAL`].
//! ARCHITECTURE.md records the reasons.
//!
//! Errors are sentences for the person at the device: what failed, why it usually does, and
//! what to do (the `gpio` group, a `dtoverlay` holding the pin, the systemd sandbox).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::lines::{ButtonLine, ChimeLine};

/// Where the kernel puts sysfs GPIO; the default of `gpio_sysfs_root`.
pub const KERNEL_ROOT: &str = "/sys/class/gpio";

/// How often a button without edge interrupts is read. 10 ms is well under any debounce time
/// and costs about a hundred `pread`s a second.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// How long to wait, after exporting, for the pin's directory to appear and for udev to hand
/// its files to the `gpio` group (Raspberry Pi OS does that in a rule that runs just after the
/// export; a write in between fails with EACCES).
const EXPORT_SETTLE: Duration = Duration::from_secs(2);
const SETTLE_STEP: Duration = Duration::from_millis(10);

/// Labels of the chips whose line numbers are BCM numbers: the SoC's own GPIO block on the
/// Pi 1/Zero/2/3 (`pinctrl-bcm2835`) and Pi 4 (`pinctrl-bcm2711`), and the RP1 I/O chip that
/// carries the header pins on the Pi 5 (`pinctrl-rp1`).
const BCM_CHIP_LABELS: &[&str] = &["pinctrl-bcm2835", "pinctrl-bcm2711", "pinctrl-rp1"];

/// A GPIO chip as sysfs lists it (`gpiochipN/{base,ngpio,label}`).
#[derive(Clone, Debug, PartialEq)]
pub struct Chip {
    pub base: u32,
    pub ngpio: u32,
    pub label: String,
}

/// A BCM pin resolved to its sysfs number.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub bcm: u32,
    pub sysfs: u32,
    pub chip: String,
}

impl Line {
    /// `GPIO 17 (sysfs 529 on pinctrl-bcm2835)`, as every message names a pin.
    pub fn describe(&self) -> String {
        format!("GPIO {} (sysfs {} on {})", self.bcm, self.sysfs, self.chip)
    }
}

/// Sysfs GPIO under one root directory.
#[derive(Clone, Debug)]
pub struct SysfsGpio {
    root: PathBuf,
}

impl SysfsGpio {
    /// Checks that `root` is a sysfs GPIO directory (it has an `export` file).
    pub fn open(root: &Path) -> Result<SysfsGpio, String> {
        if !root.join("export").exists() {
            return Err(format!(
                "no sysfs GPIO at {}: the kernel was built without CONFIG_GPIO_SYSFS, or \
                 gpio_sysfs_root points elsewhere (Raspberry Pi OS kernels have it at {KERNEL_ROOT})",
                root.display()
            ));
        }
        Ok(SysfsGpio {
            root: root.to_path_buf(),
        })
    }

    /// True when this is the kernel's own tree, where the `sysfs_gpio` crate's paths are right.
    fn is_kernel_root(&self) -> bool {
        std::fs::canonicalize(&self.root)
            .is_ok_and(|real| real == std::fs::canonicalize(KERNEL_ROOT).unwrap_or_default())
    }

    /// Every `gpiochip*` directory with a readable base and line count.
    pub fn chips(&self) -> Result<Vec<Chip>, String> {
        let entries = std::fs::read_dir(&self.root)
            .map_err(|e| format!("cannot list {}: {e}", self.root.display()))?;
        let mut chips: Vec<Chip> = entries
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.file_name().to_string_lossy().starts_with("gpiochip"))
            .filter_map(|entry| {
                let dir = entry.path();
                let number = |name: &str| read_trimmed(&dir.join(name)).ok()?.parse().ok();
                Some(Chip {
                    base: number("base")?,
                    ngpio: number("ngpio")?,
                    label: read_trimmed(&dir.join("label")).unwrap_or_default(),
                })
            })
            .collect();
        crate::short_sort::sort_short_by(&mut chips, |a, b| a.base < b.base);
        Ok(chips)
    }

    /// Translates a BCM number to the sysfs number: recent Raspberry Pi OS kernels number sysfs
    /// GPIOs from the chip's base (512 on 6.6 kernels), older ones from 0.
    pub fn bcm_line(&self, bcm: u32) -> Result<Line, String> {
        let chips = self.chips()?;
        let chip = pick_bcm_chip(&chips).ok_or_else(|| {
            format!(
                "no GPIO chip under {} (no gpiochip*/base): nothing to translate GPIO {bcm} to",
                self.root.display()
            )
        })?;
        if !BCM_CHIP_LABELS.contains(&chip.label.as_str()) && chips.len() > 1 {
            log::warn!(
                "no Raspberry Pi GPIO chip ({}) under {}; numbering GPIO {bcm} from {} (base {})",
                BCM_CHIP_LABELS.join(", "),
                self.root.display(),
                chip.label,
                chip.base
            );
        }
        if bcm >= chip.ngpio {
            return Err(format!(
                "GPIO {bcm} does not exist: {} has {} lines (GPIO 0 to {})",
                chip.label,
                chip.ngpio,
                chip.ngpio.saturating_sub(1)
            ));
        }
        Ok(Line {
            bcm,
            sysfs: chip.base + bcm,
            chip: chip.label.clone(),
        })
    }

    fn pin_dir(&self, line: &Line) -> PathBuf {
        self.root.join(format!("gpio{}", line.sysfs))
    }

    /// Exports `line` for use as `want` ("in" or "out"). Returns whether we exported it (and so
    /// should unexport it at the end). A pin already exported with the other direction belongs
    /// to someone else: that is an error, not something to take over.
    fn export(&self, line: &Line, want: &str) -> Result<bool, String> {
        let dir = self.pin_dir(line);
        if dir.exists() {
            let direction = read_trimmed(&dir.join("direction")).unwrap_or_default();
            let is_output = direction == "out" || direction == "high" || direction == "low";
            if is_output != (want == "out") {
                return Err(format!(
                    "{} is busy: it is already exported as an {} by another program \
                     ({}/direction says {direction:?}); pick another pin, or stop that program \
                     and run `echo {} > {}/unexport`",
                    line.describe(),
                    if is_output { "output" } else { "input" },
                    dir.display(),
                    line.sysfs,
                    self.root.display()
                ));
            }
            log::warn!(
                "{} was already exported (left by an earlier run, or shared); using it and \
                 leaving it exported at exit",
                line.describe()
            );
            return Ok(false);
        }
        let export = self.root.join("export");
        write_file(&export, &line.sysfs.to_string()).map_err(|e| explain(&e, &export, line))?;
        // The kernel creates the directory during the write; udev then fixes its permissions.
        let value = dir.join("value");
        let deadline = Instant::now() + EXPORT_SETTLE;
        while !value.exists() {
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} did not appear within {} s of writing {} to {}",
                    dir.display(),
                    EXPORT_SETTLE.as_secs(),
                    line.sysfs,
                    export.display()
                ));
            }
            std::thread::sleep(SETTLE_STEP);
        }
        Ok(true)
    }

    /// Writes one attribute of an exported pin, retrying while udev has not yet given the file
    /// to the `gpio` group.
    fn set_attr(&self, line: &Line, attr: &str, value: &str) -> Result<(), io::Error> {
        let path = self.pin_dir(line).join(attr);
        let deadline = Instant::now() + EXPORT_SETTLE;
        loop {
            match write_file(&path, value) {
                Err(e)
                    if e.kind() == io::ErrorKind::PermissionDenied && Instant::now() < deadline =>
                {
                    std::thread::sleep(SETTLE_STEP)
                }
                other => return other,
            }
        }
    }

    fn set_attr_or_explain(&self, line: &Line, attr: &str, value: &str) -> Result<(), String> {
        self.set_attr(line, attr, value)
            .map_err(|e| explain(&e, &self.pin_dir(line).join(attr), line))
    }

    fn unexport(&self, line: &Line) {
        let unexport = self.root.join("unexport");
        match write_file(&unexport, &line.sysfs.to_string()) {
            Ok(()) => log::info!("{} unexported", line.describe()),
            Err(e) => log::warn!(
                "cannot unexport {}: {}",
                line.describe(),
                explain(&e, &unexport, line)
            ),
        }
    }

    /// Exports `bcm` as the doorbell input: direction `in`, the kernel's own polarity off (we
    /// apply `active-low` ourselves, so the value file always holds the electrical level),
    /// interrupts on both edges where the pin has them.
    pub fn open_button(&self, bcm: u32, stop: Receiver<()>) -> Result<SysfsButton, String> {
        let line = self.bcm_line(bcm)?;
        let exported = self.export(&line, "in")?;
        let pin = ExportedPin {
            gpio: self.clone(),
            line,
            exported,
        };
        pin.gpio.set_attr_or_explain(&pin.line, "direction", "in")?;
        pin.gpio.set_attr_or_explain(&pin.line, "active_low", "0")?;
        let value_path = pin.gpio.pin_dir(&pin.line).join("value");
        let value = File::open(&value_path).map_err(|e| explain(&e, &value_path, &pin.line))?;
        let waiter = match pin.gpio.set_attr(&pin.line, "edge", "both") {
            Ok(()) if pin.gpio.is_kernel_root() => {
                match sysfs_gpio::PinPoller::new(u64::from(pin.line.sysfs)) {
                    Ok(poller) => Waiter::Interrupts(poller),
                    Err(e) => {
                        log::warn!(
                            "{}: edge interrupts unavailable ({e}); reading it every {} ms",
                            pin.line.describe(),
                            POLL_INTERVAL.as_millis()
                        );
                        Waiter::Polling(stop)
                    }
                }
            }
            Ok(()) => Waiter::Polling(stop),
            // No `edge` file, or EINVAL/EIO: the chip cannot interrupt on this pin.
            Err(e) => {
                log::warn!(
                    "{}: no edge interrupts ({e}); reading it every {} ms",
                    pin.line.describe(),
                    POLL_INTERVAL.as_millis()
                );
                Waiter::Polling(stop)
            }
        };
        Ok(SysfsButton {
            value: ValueFile {
                file: value,
                path: value_path,
            },
            waiter,
            pin,
        })
    }

    /// Exports `bcm` as the chime output, driven to its inactive level before anything else.
    pub fn open_chime(&self, bcm: u32, active_low: bool) -> Result<SysfsChime, String> {
        let line = self.bcm_line(bcm)?;
        let exported = self.export(&line, "out")?;
        let pin = ExportedPin {
            gpio: self.clone(),
            line,
            exported,
        };
        // "high"/"low" set the direction and the level in one step: no glitch on the relay.
        let inactive = if active_low { "high" } else { "low" };
        pin.gpio
            .set_attr_or_explain(&pin.line, "direction", inactive)?;
        pin.gpio.set_attr_or_explain(&pin.line, "active_low", "0")?;
        let value_path = pin.gpio.pin_dir(&pin.line).join("value");
        let file = OpenOptions::new()
            .write(true)
            .open(&value_path)
            .map_err(|e| explain(&e, &value_path, &pin.line))?;
        let mut chime = SysfsChime {
            value: ValueFile {
                file,
                path: value_path,
            },
            active_low,
            pin,
        };
        chime
            .set(false)
            .map_err(|e| explain(&e, &chime.value.path, &chime.pin.line))?;
        Ok(chime)
    }
}

/// Picks the chip whose line numbers are BCM numbers: a known Raspberry Pi label first, else
/// (other boards, fake trees) the chip with the lowest base.
fn pick_bcm_chip(chips: &[Chip]) -> Option<&Chip> {
    chips
        .iter()
        .find(|chip| BCM_CHIP_LABELS.contains(&chip.label.as_str()))
        .or_else(|| chips.iter().min_by_key(|chip| chip.base))
}

/// An exported pin; unexports it when dropped if we exported it.
struct ExportedPin {
    gpio: SysfsGpio,
    line: Line,
    exported: bool,
}

impl Drop for ExportedPin {
    fn drop(&mut self) {
        if self.exported {
            self.gpio.unexport(&self.line);
        }
    }
}

/// The open `value` file. Read and written at offset 0 (`pread`/`pwrite`): sysfs produces a
/// fresh value for every read from the start, and a fake tree is rewritten in place.
struct ValueFile {
    file: File,
    path: PathBuf,
}

/// How the button waits for its next reading.
enum Waiter {
    /// The kernel's edge interrupt, through the `sysfs_gpio` crate's epoll poller.
    Interrupts(sysfs_gpio::PinPoller),
    /// No interrupts: wait [`POLL_INTERVAL`] (or less), waking at once on shutdown.
    Polling(Receiver<()>),
}

/// The doorbell button on a sysfs GPIO.
pub struct SysfsButton {
    value: ValueFile,
    waiter: Waiter,
    // Last: the value file is closed before the pin is unexported.
    pin: ExportedPin,
}

impl SysfsButton {
    pub fn line(&self) -> &Line {
        &self.pin.line
    }

    /// True when edges wake the poller; false when it reads every [`POLL_INTERVAL`].
    pub fn has_interrupts(&self) -> bool {
        matches!(self.waiter, Waiter::Interrupts(_))
    }
}

impl ButtonLine for SysfsButton {
    fn is_high(&mut self) -> io::Result<Option<bool>> {
        let mut buf = [0u8; 4];
        let n = self.value.file.read_at(&mut buf, 0)?;
        match buf[..n].first() {
            Some(b'1') => Ok(Some(true)),
            Some(b'0') => Ok(Some(false)),
            // Caught between a truncate and a write (a fake tree rewritten with `echo`).
            None => Ok(None),
            Some(_) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} holds {:?}, not 0 or 1",
                    self.value.path.display(),
                    String::from_utf8_lossy(&buf[..n])
                ),
            )),
        }
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        match &mut self.waiter {
            Waiter::Interrupts(poller) => {
                let ms = timeout.as_millis().clamp(1, 60_000) as isize;
                poller.poll(ms).map(|_| ()).map_err(io::Error::from)
            }
            Waiter::Polling(stop) => {
                let _ = stop.recv_timeout(timeout.min(POLL_INTERVAL));
                Ok(())
            }
        }
    }
}

/// The chime (a buzzer or a relay) on a sysfs GPIO output.
pub struct SysfsChime {
    value: ValueFile,
    active_low: bool,
    pin: ExportedPin,
}

impl SysfsChime {
    pub fn line(&self) -> &Line {
        &self.pin.line
    }
}

impl ChimeLine for SysfsChime {
    fn set(&mut self, on: bool) -> io::Result<()> {
        let high = on != self.active_low;
        self.value
            .file
            .write_all_at(if high { b"1\n" } else { b"0\n" }, 0)
    }
}

impl Drop for SysfsChime {
    fn drop(&mut self) {
        // Never leave a relay energised.
        if let Err(e) = self.set(false) {
            log::warn!("cannot switch the chime off: {e}");
        }
    }
}

fn read_trimmed(path: &Path) -> io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_string())
}

/// One `write` of the whole value, as `echo VALUE > file` does: sysfs takes each write as one
/// command (a trailing newline is fine, and separates commands on a fake tree's FIFO). The
/// truncation is ignored by sysfs and keeps a fake tree's regular files tidy.
fn write_file(path: &Path, value: &str) -> io::Result<()> {
    use std::io::Write;
    let mut file = OpenOptions::new().write(true).truncate(true).open(path)?;
    file.write_all(format!("{value}\n").as_bytes())
}

/// Turns an I/O error on a sysfs file into what the user should do about it.
pub fn explain(err: &io::Error, path: &Path, line: &Line) -> String {
    let path_s = path.display();
    match err.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => format!(
            "permission denied on {path_s} for {}: the user running porchlight ({}) must be in \
             the `gpio` group (`sudo adduser {} gpio`, then restart porchlight; the systemd unit \
             adds the group itself)",
            line.describe(),
            current_user(),
            current_user()
        ),
        Some(libc::EBUSY) => format!(
            "{} is busy ({path_s}: {err}): a kernel driver holds it (a dtoverlay in \
             /boot/firmware/config.txt, such as w1-gpio on GPIO 4, or the SPI, I2C or UART pins \
             when enabled) or another program exported it; `sudo cat /sys/kernel/debug/gpio` \
             shows who",
            line.describe()
        ),
        Some(libc::EROFS) => format!(
            "{path_s} is read-only for {}: under systemd the unit must list the GPIO directories \
             in ReadWritePaths= (see systemd/porchlight.service)",
            line.describe()
        ),
        Some(libc::EINVAL) if path.ends_with("export") => format!(
            "the kernel has no GPIO {} ({path_s}: {err}); check the pin number",
            line.sysfs
        ),
        Some(libc::ENOENT) => format!("{path_s} does not exist ({})", line.describe()),
        _ => format!("{path_s} ({}): {err}", line.describe()),
    }
}

/// The name of the user we run as, for messages that tell which user to add to a group.
fn current_user() -> String {
    // SAFETY: geteuid has no preconditions; getpwuid_r writes only into the buffers we pass.
    unsafe {
        let uid = libc::geteuid();
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut buf = [0 as libc::c_char; 1024];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result);
        if rc == 0 && !result.is_null() && !pwd.pw_name.is_null() {
            return std::ffi::CStr::from_ptr(pwd.pw_name)
                .to_string_lossy()
                .into_owned();
        }
        format!("uid {uid}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chip(base: u32, ngpio: u32, label: &str) -> Chip {
        Chip {
            base,
            ngpio,
            label: label.into(),
        }
    }

    #[test]
    fn picks_the_raspberry_pi_chip_over_the_expander() {
        let chips = [
            chip(512, 54, "pinctrl-bcm2835"),
            chip(566, 8, "raspberrypi-exp-gpio"),
        ];
        assert_eq!(pick_bcm_chip(&chips).unwrap().base, 512);
        let pi5 = [
            chip(512, 32, "gpio-brcmstb@107d508500"),
            chip(544, 4, "gpio-brcmstb@107d508520"),
            chip(571, 54, "pinctrl-rp1"),
        ];
        assert_eq!(pick_bcm_chip(&pi5).unwrap().label, "pinctrl-rp1");
        let other = [chip(32, 16, "b"), chip(0, 32, "a")];
        assert_eq!(pick_bcm_chip(&other).unwrap().label, "a");
        assert_eq!(pick_bcm_chip(&[]), None);
    }

    fn line() -> Line {
        Line {
            bcm: 17,
            sysfs: 529,
            chip: "pinctrl-bcm2835".into(),
        }
    }

    #[test]
    fn errors_say_what_to_do() {
        let export = Path::new("/sys/class/gpio/export");
        let busy = explain(&io::Error::from_raw_os_error(libc::EBUSY), export, &line());
        assert!(
            busy.contains("GPIO 17 (sysfs 529 on pinctrl-bcm2835) is busy"),
            "{busy}"
        );
        assert!(busy.contains("dtoverlay"), "{busy}");
        let denied = explain(&io::Error::from_raw_os_error(libc::EACCES), export, &line());
        assert!(denied.contains("`gpio` group"), "{denied}");
        assert!(denied.contains("adduser"), "{denied}");
        let ro = explain(&io::Error::from_raw_os_error(libc::EROFS), export, &line());
        assert!(ro.contains("ReadWritePaths"), "{ro}");
        let missing = explain(&io::Error::from_raw_os_error(libc::EINVAL), export, &line());
        assert!(missing.contains("no GPIO 529"), "{missing}");
    }

    #[test]
    fn a_directory_without_export_is_not_sysfs_gpio() {
        let err = SysfsGpio::open(&std::env::temp_dir().join("porchlight-no-such-gpio-root"))
            .unwrap_err();
        assert!(err.starts_with("no sysfs GPIO at"), "{err}");
        assert!(err.contains("CONFIG_GPIO_SYSFS"), "{err}");
    }
}
