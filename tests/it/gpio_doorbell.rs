//! The GPIO doorbell, end to end: the real binary reads a fake sysfs GPIO tree that the test
//! drives like a kernel and a finger would (export, press, bounce, hold, release), and the
//! presses come out as `doorbell_pressed` events over SSE and `/api/events`.
//!
//! The fake kernel runs in a thread of the test: `export` and `unexport` are FIFOs it reads, so
//! every write is one command, as in sysfs; a number written to `export` becomes a `gpioN/`
//! directory, one written to `unexport` removes it. A button is its `value` file, rewritten in
//! place. Regular files cannot raise edge interrupts, so the
//! server reads the button every 10 ms here; everything else is the code a Raspberry Pi runs.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value;

/// Chip layout of a Raspberry Pi on a 6.6 kernel: the SoC's GPIOs from 512, then the
/// firmware's expander.
const PI_CHIPS: &[(u32, u32, &str)] = &[
    (512, 54, "pinctrl-bcm2835"),
    (566, 8, "raspberrypi-exp-gpio"),
];

/// A sysfs GPIO tree with a thread playing the kernel's part.
struct FakeGpio {
    dir: TempDir,
    /// The level a pin's `value` starts at when it is exported (sysfs number → high).
    idle: Arc<Mutex<HashMap<u32, bool>>>,
    stop: Arc<AtomicBool>,
    kernel: Option<thread::JoinHandle<()>>,
}

impl FakeGpio {
    fn new(chips: &[(u32, u32, &str)]) -> FakeGpio {
        let mut gpio = FakeGpio::without_kernel(chips);
        let root = gpio.root();
        let mut export = Commands::open(&root.join("export"));
        let mut unexport = Commands::open(&root.join("unexport"));
        let idle = Arc::clone(&gpio.idle);
        let stop = Arc::clone(&gpio.stop);
        let kernel = thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for n in export.take() {
                    let pin = root.join(format!("gpio{n}"));
                    fs::create_dir_all(&pin).unwrap();
                    let high = idle.lock().unwrap().get(&n).copied().unwrap_or(false);
                    // `value` last: the server waits for it to appear.
                    for (name, text) in [
                        ("direction", "in\n"),
                        ("edge", "none\n"),
                        ("active_low", "0\n"),
                        ("value", if high { "1\n" } else { "0\n" }),
                    ] {
                        fs::write(pin.join(name), text).unwrap();
                    }
                }
                for n in unexport.take() {
                    let _ = fs::remove_dir_all(root.join(format!("gpio{n}")));
                }
                // The kernel's reaction time.
                thread::sleep(Duration::from_millis(2));
            }
        });
        gpio.kernel = Some(kernel);
        gpio
    }

    /// The tree alone: writes to `export` go unanswered.
    fn without_kernel(chips: &[(u32, u32, &str)]) -> FakeGpio {
        let dir = TempDir::new("gpio");
        dir.write("export", "");
        dir.write("unexport", "");
        for (base, ngpio, label) in chips {
            let chip = dir.join(&format!("gpiochip{base}"));
            fs::create_dir_all(&chip).unwrap();
            fs::write(chip.join("base"), format!("{base}\n")).unwrap();
            fs::write(chip.join("ngpio"), format!("{ngpio}\n")).unwrap();
            fs::write(chip.join("label"), format!("{label}\n")).unwrap();
        }
        FakeGpio {
            dir,
            idle: Arc::default(),
            stop: Arc::default(),
            kernel: None,
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn root_str(&self) -> String {
        self.dir.path_str()
    }

    fn pin_dir(&self, n: u32) -> PathBuf {
        self.dir.join(&format!("gpio{n}"))
    }

    fn set_idle(&self, n: u32, high: bool) {
        self.idle.lock().unwrap().insert(n, high);
    }

    /// Another program exported `n` before us.
    fn pre_export(&self, n: u32, direction: &str, high: bool) {
        let pin = self.pin_dir(n);
        fs::create_dir_all(&pin).unwrap();
        fs::write(pin.join("direction"), format!("{direction}\n")).unwrap();
        fs::write(pin.join("edge"), "none\n").unwrap();
        fs::write(pin.join("active_low"), "0\n").unwrap();
        fs::write(pin.join("value"), if high { "1\n" } else { "0\n" }).unwrap();
    }

    /// Sets the electrical level, in place, as the pin would change under an open file.
    fn set_level(&self, n: u32, high: bool) {
        let file = fs::OpenOptions::new()
            .write(true)
            .open(self.pin_dir(n).join("value"))
            .unwrap();
        file.write_all_at(if high { b"1\n" } else { b"0\n" }, 0)
            .unwrap();
    }

    fn attr(&self, n: u32, name: &str) -> String {
        fs::read_to_string(self.pin_dir(n).join(name))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// Waits until `gpioN/` is gone (the fake kernel handled an unexport).
    fn wait_unexported(&self, n: u32) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.pin_dir(n).exists() {
            if Instant::now() > deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(2));
        }
        true
    }
}

impl Drop for FakeGpio {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(kernel) = self.kernel.take() {
            let _ = kernel.join();
        }
    }
}

/// `export` or `unexport` as a FIFO the fake kernel reads without blocking.
struct Commands {
    fifo: fs::File,
    pending: String,
}

impl Commands {
    fn open(path: &Path) -> Commands {
        use std::os::unix::fs::OpenOptionsExt;
        fs::remove_file(path).unwrap();
        let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads the path we own.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o622) }, 0, "mkfifo");
        // Read-write: a writer's open never blocks, and reads never see end-of-file.
        let fifo = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .unwrap();
        Commands {
            fifo,
            pending: String::new(),
        }
    }

    /// The numbers written since the last call, one per line.
    fn take(&mut self) -> Vec<u32> {
        use std::io::Read;
        let mut buf = [0u8; 256];
        while let Ok(n) = self.fifo.read(&mut buf) {
            if n == 0 {
                break;
            }
            self.pending.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        let mut numbers = Vec::new();
        while let Some(end) = self.pending.find('\n') {
            let line: String = self.pending.drain(..=end).collect();
            numbers.push(line.trim().parse().expect("a GPIO number"));
        }
        numbers
    }
}

/// A button wired to a pin: `active_low` buttons pull it to ground when pressed.
struct Button<'a> {
    gpio: &'a FakeGpio,
    sysfs: u32,
    active_low: bool,
}

impl Button<'_> {
    fn set(&self, pressed: bool) {
        self.gpio.set_level(self.sysfs, pressed != self.active_low);
    }

    /// Contact bounce: `n` quick open/close flips, `ms` apart, ending on `pressed`.
    fn bounce(&self, pressed: bool, n: usize, ms: u64) {
        for _ in 0..n {
            self.set(pressed);
            hold(ms);
            self.set(!pressed);
            hold(ms);
        }
        self.set(pressed);
    }
}

/// How long the finger stays: the input the test is made of, not a wait for the server.
fn hold(ms: u64) {
    thread::sleep(Duration::from_millis(ms));
}

/// Waits until the server's stderr holds `needle` at least `count` times (the poller logs
/// every press and release it accepts: the test's signal that a reading was handled).
fn wait_log(server: &Server, needle: &str, count: usize) {
    let log = server.wait_stderr(|log| log.matches(needle).count() >= count);
    assert!(
        log.matches(needle).count() >= count,
        "waited 10 s for {count} × {needle:?}; stderr:\n{log}"
    );
}

fn gpio_events(port: u16) -> Vec<Value> {
    all_events(port, None)
        .into_iter()
        .filter(|e| e["event_type"] == "doorbell_pressed" && e["source"] == "gpio")
        .collect()
}

fn config(gpio: &FakeGpio, doorbell: &str, extra: &str) -> String {
    format!(
        "gpio_sysfs_root = {:?}\ndoorbell = {doorbell:?}\nlog_level = \"debug\"\n{extra}",
        gpio.root_str()
    )
}

/// Starts a server on an active-low button on BCM 17 (sysfs 529: base 512), idle high (a
/// button to ground with a pull-up).
fn start_on_gpio17(gpio: &FakeGpio, doorbell: &str, cooldown_ms: u64) -> Server {
    gpio.set_idle(529, true);
    Server::with_config(
        &config(
            gpio,
            doorbell,
            &format!("doorbell_cooldown_ms = {cooldown_ms}\n"),
        ),
        &[],
    )
}

const RELEASED_17: &str = "GPIO 17 (sysfs 529 on pinctrl-bcm2835): button released";
/// What the server logs for each ring.
const RING: &str = "doorbell pressed (event";

/// The stored GPIO presses are exactly `n`, and the same ones came live over SSE.
fn assert_rings(server: &Server, sse: &mut Sse, n: usize) {
    let events = gpio_events(server.port());
    assert_eq!(
        events.len(),
        n,
        "one event per press: {events:#?}\nstderr:\n{}",
        server.stderr()
    );
    let live: Vec<Value> = sse.expect_events(n).iter().map(|b| b.json()).collect();
    for event in &live {
        assert_event_shape(event);
        assert_eq!(event["source"], "gpio");
        assert_eq!(event["data"], serde_json::json!({"pin": 17}));
    }
    // all_events returns them in id order, as the stream sent them.
    assert_eq!(live, events);
}

#[test]
fn bouncy_presses_and_a_long_hold_ring_exactly_once_each() {
    let gpio = FakeGpio::new(PI_CHIPS);
    // No cooldown: only the debounce stands between a bouncing contact and extra rings.
    let server = start_on_gpio17(&gpio, "gpio:17:active-low:debounce=80", 0);
    let port = server.port();
    // Exported and set up the way the kernel expects an interrupt-driven input.
    assert_eq!(gpio.attr(529, "direction"), "in");
    assert_eq!(gpio.attr(529, "edge"), "both");
    assert_eq!(gpio.attr(529, "active_low"), "0");
    let log = server.stderr_with("doorbell on GPIO 17");
    assert!(
        log.contains("doorbell on GPIO 17 (sysfs 529 on pinctrl-bcm2835), active-low"),
        "{log}"
    );
    let status = get(port, "/api/status", None).json();
    assert_eq!(
        status["doorbell"],
        serde_json::json!({"source": "gpio", "pin": 17})
    );
    let mut sse = Sse::connect(port, "/stream/events?types=doorbell_pressed");
    let button = Button {
        gpio: &gpio,
        sysfs: 529,
        active_low: true,
    };

    // 1. A clean press.
    button.set(true);
    hold(200);
    button.set(false);
    wait_log(&server, RELEASED_17, 1);

    // 2. Bouncy contacts on press and release: flips every 15 ms (slower than the server reads
    //    the pin, faster than the 80 ms debounce).
    hold(200);
    button.bounce(true, 4, 15);
    hold(200);
    button.bounce(false, 4, 15);
    wait_log(&server, RELEASED_17, 2);

    // 3. Held for 1.5 s: one ring, not one per reading.
    hold(200);
    button.set(true);
    hold(1500);
    button.set(false);
    wait_log(&server, RELEASED_17, 3);

    assert_rings(&server, &mut sse, 3);
}

#[test]
fn a_second_press_within_the_cooldown_is_not_a_new_ring() {
    const COOLDOWN: Duration = Duration::from_millis(3000);
    let gpio = FakeGpio::new(PI_CHIPS);
    let server = start_on_gpio17(&gpio, "gpio:17:active-low:debounce=20", 3000);
    let mut sse = Sse::connect(server.port(), "/stream/events?types=doorbell_pressed");
    let button = Button {
        gpio: &gpio,
        sysfs: 529,
        active_low: true,
    };
    // A double tap. Each step waits for the server to have read the last one (its log), so a
    // loaded machine that reads the pin late changes nothing; the cooldown is long enough that
    // the second press is well inside it however slow that was.
    button.set(true);
    wait_log(&server, RING, 1);
    let first_ring_seen = Instant::now();
    button.set(false);
    wait_log(&server, RELEASED_17, 1);
    button.set(true);
    wait_log(
        &server,
        "pressed again within the 3000 ms cooldown; not a new ring",
        1,
    );
    button.set(false);
    wait_log(&server, RELEASED_17, 2);
    // Once the cooldown is over (counted from the ring, which the server made before the test
    // saw it), a press rings again.
    thread::sleep(
        (first_ring_seen + COOLDOWN + Duration::from_millis(100))
            .saturating_duration_since(Instant::now()),
    );
    button.set(true);
    wait_log(&server, RING, 2);
    button.set(false);
    wait_log(&server, RELEASED_17, 3);
    assert_rings(&server, &mut sse, 2);
}

#[test]
fn active_high_button_pulses_the_chime_and_both_pins_are_unexported_at_exit() {
    let gpio = FakeGpio::new(PI_CHIPS);
    // BCM 22 (sysfs 534) pulled down, pressed to 3.3 V; the chime relay on BCM 27 (sysfs 539).
    let mut server = Server::with_config(
        &config(&gpio, "gpio:22", "chime = \"gpio:27\"\nchime_ms = 300\n"),
        &[],
    );
    let port = server.port();
    assert_eq!(
        gpio.attr(539, "direction"),
        "low",
        "output, driven low at once"
    );
    assert_eq!(gpio.attr(539, "value"), "0");
    let button = Button {
        gpio: &gpio,
        sysfs: 534,
        active_low: false,
    };
    button.set(true);
    // The relay closes for chime_ms, then opens.
    let deadline = Instant::now() + Duration::from_secs(10);
    while gpio.attr(539, "value") != "1" {
        assert!(Instant::now() < deadline, "chime never switched on");
        thread::sleep(Duration::from_millis(1));
    }
    let on_at = Instant::now();
    while gpio.attr(539, "value") != "0" {
        assert!(Instant::now() < deadline, "chime never switched off");
        thread::sleep(Duration::from_millis(1));
    }
    let pulse = on_at.elapsed();
    assert!(
        pulse >= Duration::from_millis(200),
        "chime pulse {pulse:?}, configured 300 ms"
    );
    button.set(false);
    wait_log(&server, "button released", 1);
    let events = gpio_events(port);
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["data"]["pin"], 22);

    server.stop();
    assert!(gpio.wait_unexported(534), "button pin still exported");
    assert!(gpio.wait_unexported(539), "chime pin still exported");
    let log = server.stderr_with("GPIO 22 (sysfs 534 on pinctrl-bcm2835) unexported");
    assert!(
        log.contains("GPIO 22 (sysfs 534 on pinctrl-bcm2835) unexported"),
        "{log}"
    );
}

/// Runs the binary against `gpio` with `doorbell`; it must refuse to start.
fn refused(gpio_root: &str, doorbell: &str) -> Finished {
    let data = TempDir::new("gpio-data");
    let finished = run_to_exit(
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &data.path_str(),
            "--doorbell",
            doorbell,
            "--config",
            &data
                .write(
                    "porchlight.toml",
                    &format!("gpio_sysfs_root = {gpio_root:?}\n"),
                )
                .to_string_lossy(),
        ],
        Duration::from_secs(20),
    );
    assert_eq!(
        finished.code(),
        Some(1),
        "GPIO trouble is a fatal error (exit 1); stderr:\n{}",
        finished.stderr
    );
    assert!(
        !finished.stderr.contains("listening on"),
        "started anyway:\n{}",
        finished.stderr
    );
    finished
}

#[test]
fn missing_gpio_sysfs_chips_and_pins_are_clear_errors() {
    let nowhere = TempDir::new("no-gpio");
    let missing_root = nowhere.join("class/gpio").to_string_lossy().into_owned();
    let out = refused(&missing_root, "gpio:17");
    assert!(out.stderr.contains("no sysfs GPIO at"), "{}", out.stderr);
    assert!(out.stderr.contains("CONFIG_GPIO_SYSFS"), "{}", out.stderr);

    let chipless = FakeGpio::new(&[]);
    let out = refused(&chipless.root_str(), "gpio:17");
    assert!(out.stderr.contains("no GPIO chip under"), "{}", out.stderr);

    let gpio = FakeGpio::new(PI_CHIPS);
    let out = refused(&gpio.root_str(), "gpio:60");
    assert!(
        out.stderr
            .contains("GPIO 60 does not exist: pinctrl-bcm2835 has 54 lines (GPIO 0 to 53)"),
        "{}",
        out.stderr
    );

    // The kernel accepted the export but no pin directory came.
    let silent = FakeGpio::without_kernel(PI_CHIPS);
    let out = refused(&silent.root_str(), "gpio:5");
    assert!(
        out.stderr.contains("gpio517 did not appear within 2 s"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_pin_exported_as_an_output_by_another_program_is_busy() {
    let gpio = FakeGpio::new(PI_CHIPS);
    gpio.pre_export(529, "out", false);
    let out = refused(&gpio.root_str(), "gpio:17");
    assert!(
        out.stderr.contains(
            "GPIO 17 (sysfs 529 on pinctrl-bcm2835) is busy: it is already exported as an output"
        ),
        "{}",
        out.stderr
    );
    assert_eq!(
        gpio.attr(529, "direction"),
        "out",
        "the other program's pin was changed"
    );

    // The chime too must not take over somebody else's input.
    let gpio = FakeGpio::new(PI_CHIPS);
    gpio.pre_export(539, "in", false);
    let data = TempDir::new("gpio-data");
    let out = run_to_exit(
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            &data.path_str(),
            "--config",
            &data
                .write(
                    "porchlight.toml",
                    &config(&gpio, "gpio:17", "chime = \"gpio:27\"\n"),
                )
                .to_string_lossy(),
        ],
        Duration::from_secs(20),
    );
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("GPIO 27 (sysfs 539 on pinctrl-bcm2835) is busy"),
        "{}",
        out.stderr
    );
    // The button pin it had already exported was given back.
    assert!(
        gpio.wait_unexported(529),
        "button pin left exported after the failed start"
    );
}

#[test]
fn an_input_left_exported_by_an_earlier_run_is_reused_and_left_exported() {
    let gpio = FakeGpio::new(PI_CHIPS);
    gpio.pre_export(529, "in", false);
    let mut server = Server::with_config(&config(&gpio, "gpio:17:debounce=10", ""), &[]);
    let log = server.stderr_with("was already exported");
    assert!(log.contains("was already exported"), "{log}");
    gpio.set_level(529, true);
    wait_log(&server, "doorbell pressed", 1);
    assert_eq!(gpio_events(server.port()).len(), 1);
    server.stop();
    assert!(
        gpio.pin_dir(529).exists(),
        "unexported a pin it did not export"
    );
}

#[test]
fn permission_denied_names_the_gpio_group() {
    let gpio = FakeGpio::without_kernel(PI_CHIPS);
    let data = TempDir::new("gpio-data");
    let config_path = data.write("porchlight.toml", &config(&gpio, "gpio:17", ""));
    // A copy of the binary outside the checkout, which `nobody` may not be able to reach.
    let bin = data.join("porchlight");
    if fs::hard_link(BIN, &bin).is_err() {
        fs::copy(BIN, &bin).unwrap();
    }
    let mut command = std::process::Command::new(&bin);
    command.args([
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &data.path_str(),
        "--config",
        &config_path.to_string_lossy(),
    ]);
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    fs::set_permissions(
        gpio.root().join("export"),
        fs::Permissions::from_mode(0o444),
    )
    .unwrap();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // Root ignores file modes: run it as `nobody`, as a user outside the gpio group.
        let nobody = 65534;
        std::os::unix::fs::chown(data.path(), Some(nobody), Some(nobody)).unwrap();
        command.uid(nobody).gid(nobody);
    }
    let out = command
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run porchlight");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "permission denied on {}/export for GPIO 17",
            gpio.root_str()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("must be in the `gpio` group"), "{stderr}");
}

#[test]
fn a_chime_without_a_gpio_doorbell_is_a_config_error() {
    let out = run_to_exit(
        &[
            "--check-config",
            &TempDir::new("chime")
                .write("c.toml", "chime = \"gpio:27\"\n")
                .to_string_lossy(),
        ],
        Duration::from_secs(10),
    );
    assert_eq!(out.code(), Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("chime"), "{}", out.stderr);
}

/// A value file that holds something other than 0 or 1 (a flaky driver, a wrong pin): one
/// warning that says what it holds, a retry every second, and once it reads a level again
/// the log says so and a press rings as usual.
#[test]
fn an_unreadable_button_is_retried_and_rings_once_it_reads_again() {
    let gpio = FakeGpio::new(PI_CHIPS);
    let server = start_on_gpio17(&gpio, "gpio:17:active-low:debounce=10", 0);
    let port = server.port();
    let mut sse = Sse::connect(port, "/stream/events?types=doorbell_pressed");
    let value = fs::OpenOptions::new()
        .write(true)
        .open(gpio.pin_dir(529).join("value"))
        .unwrap();
    value.write_all_at(b"?\n", 0).unwrap();
    wait_log(
        &server,
        "value holds \"?\\n\", not 0 or 1; retrying every second",
        1,
    );
    gpio.set_level(529, true);
    wait_log(
        &server,
        "GPIO 17 (sysfs 529 on pinctrl-bcm2835): readable again",
        1,
    );
    let button = Button {
        gpio: &gpio,
        sysfs: 529,
        active_low: true,
    };
    button.set(true);
    wait_log(&server, RING, 1);
    assert_rings(&server, &mut sse, 1);
    assert_eq!(
        server.stderr().matches("cannot read the button").count(),
        1,
        "one warning for the outage: {}",
        server.stderr()
    );
}
