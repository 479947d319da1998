//! systemd's notify protocol (`sd_notify(3)`): one datagram per state change, sent to the socket
//! `$NOTIFY_SOCKET` names. With `Type=notify` systemd calls the service started only when
//! `READY=1` arrives (so `systemctl start` returns once we really listen), and with `WatchdogSec=`
//! it restarts the service when `WATCHDOG=1` stops arriving. That is a few lines of socket code,
//! so there is no libsystemd binding and no crate for it.
//!
//! Outside systemd (`$NOTIFY_SOCKET` unset) every call is a no-op.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Sends state changes to systemd, if it asked for them.
pub struct Notifier {
    target: Option<Target>,
    watchdog: Option<Duration>,
}

struct Target {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// `$NOTIFY_SOCKET` as given, for log lines.
    name: String,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID` as systemd sets them.
    pub fn from_env() -> Notifier {
        let var = |name| std::env::var(name).ok();
        Notifier::from_vars(
            var("NOTIFY_SOCKET").as_deref(),
            var("WATCHDOG_USEC").as_deref(),
            var("WATCHDOG_PID").as_deref(),
            std::process::id(),
        )
    }

    /// The environment, spelled out so tests need not change the process's own.
    pub fn from_vars(
        socket: Option<&str>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        own_pid: u32,
    ) -> Notifier {
        let target = socket
            .filter(|s| !s.is_empty())
            .and_then(|name| match open_target(name) {
                Ok(target) => Some(target),
                Err(err) => {
                    log::warn!("NOTIFY_SOCKET={name}: {err}; not notifying systemd");
                    None
                }
            });
        // WATCHDOG_PID names the process the watchdog is meant for; a child that inherited
        // the variable must not feed its parent's watchdog.
        let for_us = watchdog_pid.is_none_or(|pid| pid.trim().parse::<u32>() == Ok(own_pid));
        let watchdog = watchdog_usec
            .and_then(|usec| usec.trim().parse::<u64>().ok())
            .filter(|usec| *usec > 0 && for_us && target.is_some())
            .map(Duration::from_micros);
        Notifier { target, watchdog }
    }

    /// True when systemd listens (`$NOTIFY_SOCKET` was set and usable).
    #[cfg(test)]
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// `WatchdogSec=` as systemd passed it: `WATCHDOG=1` must arrive more often than this.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// How often the main loop should wake to feed the watchdog: half the interval, as
    /// `sd_watchdog_enabled(3)` recommends, so one late wake-up is not yet a restart.
    pub fn tick(&self) -> Duration {
        match self.watchdog {
            Some(interval) => (interval / 2).max(Duration::from_millis(10)),
            None => Duration::from_secs(5),
        }
    }

    /// Sends one datagram of `KEY=VALUE` lines. Failures are logged, never fatal: systemd
    /// going away must not take the doorbell down with it.
    pub fn notify(&self, state: &str) {
        let Some(target) = &self.target else { return };
        match target.socket.send_to_addr(state.as_bytes(), &target.addr) {
            Ok(_) => {}
            // The receive queue is full: systemd is busy; the next tick sends again.
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                log::debug!("NOTIFY_SOCKET={} is full; dropped {state:?}", target.name)
            }
            Err(err) => log::warn!("cannot notify systemd at {}: {err}", target.name),
        }
    }

    /// `READY=1`: the listener is bound, clients can connect.
    pub fn ready(&self, status: &str) {
        self.notify(&format!("READY=1\nSTATUS={status}"));
    }

    pub fn watchdog(&self) {
        self.notify("WATCHDOG=1");
    }

    pub fn stopping(&self) {
        self.notify("STOPPING=1\nSTATUS=stopping");
    }

    /// A free-form line `systemctl status` shows.
    pub fn status(&self, text: &str) {
        self.notify(&format!("STATUS={text}"));
    }
}

/// `/path` is a filesystem socket, `@name` one in the abstract namespace (the `@` stands for the
/// leading NUL byte).
fn open_target(name: &str) -> io::Result<Target> {
    let addr = if let Some(abstract_name) = name.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(abstract_name.as_bytes())?
    } else if name.starts_with('/') {
        SocketAddr::from_pathname(name)?
    } else {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "only /path and @abstract sockets are supported",
        ));
    };
    let socket = UnixDatagram::unbound()?;
    // A notification must never block the main loop (and with it the watchdog).
    socket.set_nonblocking(true)?;
    Ok(Target {
        socket,
        addr,
        name: name.to_string(),
    })
}

/// Feeds the watchdog from the main loop, but only while every vital thread is alive: a
/// server whose event writer or accept loop has died still answers nothing useful, and
/// systemd restarting it is the repair.
pub struct Watchdog<'a> {
    notifier: &'a Notifier,
    /// The first vital thread found stopped; once set, the watchdog is never fed again.
    stopped: Option<String>,
}

impl<'a> Watchdog<'a> {
    pub fn new(notifier: &'a Notifier) -> Watchdog<'a> {
        Watchdog {
            notifier,
            stopped: None,
        }
    }

    /// One main-loop tick: `stopped` names a vital thread that has ended, if any.
    pub fn tick(&mut self, stopped: Option<&str>) {
        if self.stopped.is_none()
            && let Some(name) = stopped
        {
            let consequence = match self.notifier.watchdog_interval() {
                Some(interval) => format!(
                    "no longer feeding the systemd watchdog: systemd restarts porchlight within \
                     {} s",
                    interval.as_secs_f64()
                ),
                None => "porchlight needs a restart".to_string(),
            };
            log::error!("the {name} thread has stopped; {consequence}");
            self.notifier
                .status(&format!("the {name} thread has stopped"));
            self.stopped = Some(name.to_string());
        }
        if self.stopped.is_none() && self.notifier.watchdog_interval().is_some() {
            self.notifier.watchdog();
        }
    }

    /// The vital thread that stopped, if one has.
    #[cfg(test)]
    pub fn stopped(&self) -> Option<&str> {
        self.stopped.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Listener {
        socket: UnixDatagram,
        path: std::path::PathBuf,
    }

    impl Listener {
        fn new(tag: &str) -> Listener {
            let path = std::env::temp_dir().join(format!(
                "porchlight-notify-{tag}-{}.sock",
                std::process::id()
            ));
            let _ = std::fs::remove_file(&path);
            let socket = UnixDatagram::bind(&path).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            Listener { socket, path }
        }

        fn recv(&self) -> String {
            let mut buf = [0u8; 512];
            let n = self.socket.recv(&mut buf).expect("a datagram");
            String::from_utf8_lossy(&buf[..n]).into_owned()
        }

        fn nothing_waiting(&self) -> bool {
            self.socket.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 512];
            let empty = self.socket.recv(&mut buf).is_err();
            self.socket.set_nonblocking(false).unwrap();
            empty
        }
    }

    impl Drop for Listener {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    #[test]
    fn unset_socket_means_silent_no_watchdog() {
        let n = Notifier::from_vars(None, Some("1000000"), None, 1);
        assert!(!n.is_enabled());
        assert_eq!(n.watchdog_interval(), None);
        n.ready("x"); // no panic, nothing to send to
    }

    #[test]
    fn watchdog_pid_must_be_ours() {
        let listener = Listener::new("pid");
        let path = listener.path.to_str().unwrap();
        let mine = Notifier::from_vars(Some(path), Some("400000"), Some("77"), 77);
        assert_eq!(mine.watchdog_interval(), Some(Duration::from_millis(400)));
        assert_eq!(mine.tick(), Duration::from_millis(200));
        let parents = Notifier::from_vars(Some(path), Some("400000"), Some("78"), 77);
        assert_eq!(parents.watchdog_interval(), None);
        assert!(parents.is_enabled(), "READY/STOPPING still go out");
    }

    #[test]
    fn sends_one_datagram_per_state_to_a_path_socket() {
        let listener = Listener::new("path");
        let n = Notifier::from_vars(listener.path.to_str(), Some("1000000"), None, 1);
        n.ready("listening on http://127.0.0.1:1");
        assert_eq!(
            listener.recv(),
            "READY=1\nSTATUS=listening on http://127.0.0.1:1"
        );
        n.watchdog();
        assert_eq!(listener.recv(), "WATCHDOG=1");
        n.stopping();
        assert_eq!(listener.recv(), "STOPPING=1\nSTATUS=stopping");
    }

    #[test]
    fn abstract_socket_names_start_with_at() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("porchlight-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = Notifier::from_vars(Some(&format!("@{name}")), None, None, 1);
        n.watchdog(); // no watchdog configured, but the raw send still works
        n.notify("READY=1");
        let mut buf = [0u8; 64];
        let got = socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..got], b"WATCHDOG=1");
        let got = socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..got], b"READY=1");
    }

    #[test]
    fn relative_socket_names_are_refused() {
        let n = Notifier::from_vars(Some("relative.sock"), Some("1000"), None, 1);
        assert!(!n.is_enabled());
    }

    #[test]
    fn watchdog_is_fed_only_while_every_vital_thread_lives() {
        let listener = Listener::new("vital");
        let n = Notifier::from_vars(listener.path.to_str(), Some("1000000"), None, 1);
        let mut watchdog = Watchdog::new(&n);
        watchdog.tick(None);
        assert_eq!(listener.recv(), "WATCHDOG=1");
        watchdog.tick(Some("event writer"));
        assert_eq!(
            listener.recv(),
            "STATUS=the event writer thread has stopped"
        );
        assert_eq!(watchdog.stopped(), Some("event writer"));
        // Later ticks, even ones that find nothing stopped, never feed it again.
        watchdog.tick(None);
        watchdog.tick(Some("accept loop"));
        assert!(listener.nothing_waiting(), "watchdog fed after a death");
    }
}
