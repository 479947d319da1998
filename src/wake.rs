//! A wake-up that `poll(2)` can wait on together with a socket: an eventfd.
//!
//! A thread that must wait for its client's bytes *and* for another thread's signal has two
//! choices without an async runtime: a second thread that blocks on the socket and forwards
//! into a channel (a thread, its stack and buffers per connection), or one `poll` on the
//! socket and a file descriptor the other thread can make readable. This is that descriptor.
//! The kernel keeps it readable while its counter is non-zero, so a wake-up given before the
//! waiter polls is never lost, and any number of wake-ups before the waiter clears it count as
//! one (like a one-slot channel).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// One eventfd. Closed when dropped (also while a panicking thread unwinds): it can never leak.
#[derive(Debug)]
pub struct WakeFd {
    fd: OwnedFd,
}

impl WakeFd {
    /// A new, cleared wake-up. Fails when the process is out of file descriptors.
    pub fn new() -> io::Result<WakeFd> {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new descriptor we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and nothing else owns it.
        Ok(WakeFd {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Makes the descriptor readable until [`clear`](Self::clear). Never blocks (the counter
    /// only stops growing at 2^64 − 2, where the descriptor is readable anyway).
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a u64 on our stack to a descriptor we own.
        unsafe {
            libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8);
        }
    }

    /// Makes the descriptor unreadable again; says whether it had been woken.
    pub fn clear(&self) -> bool {
        let mut count: u64 = 0;
        // SAFETY: reads 8 bytes into a u64 on our stack from a descriptor we own (non-blocking:
        // a cleared eventfd answers EAGAIN).
        let read = unsafe { libc::read(self.fd.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
        read == 8 && count > 0
    }
}

impl AsFd for WakeFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for WakeFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// What a [`wait`] found ready.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// The socket reported what was asked (bytes to read, or the client's half-close), or it
    /// ended or broke.
    pub client: bool,
    pub woken: bool,
    pub stop: bool,
}

/// Waits up to `timeout` (`None`: no limit) until `socket` reports one of `socket_events`
/// (`POLLIN` for a client whose bytes we read, `POLLRDHUP` for one that should only ever
/// close; a hang-up or an error always counts), or `woken` or `stop` is readable. A signal's
/// interruption returns nothing ready; the caller's loop simply waits again.
pub fn wait(
    socket: &impl AsRawFd,
    socket_events: libc::c_short,
    woken: Option<BorrowedFd<'_>>,
    stop: Option<BorrowedFd<'_>>,
    timeout: Option<std::time::Duration>,
) -> Ready {
    let entry = |fd: libc::c_int, events: libc::c_short| libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // A negative descriptor is skipped by poll.
    let mut fds = [
        entry(socket.as_raw_fd(), socket_events),
        entry(woken.map_or(-1, |fd| fd.as_raw_fd()), libc::POLLIN),
        entry(stop.map_or(-1, |fd| fd.as_raw_fd()), libc::POLLIN),
    ];
    let timeout_ms = match timeout {
        None => -1,
        // Rounded up: waking a little before a deadline would only make us wait again.
        Some(timeout) => {
            let ms = timeout.as_micros().div_ceil(1000);
            libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
        }
    };
    // SAFETY: poll reads and writes the three pollfds of an array we own, for the call.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if ready <= 0 {
        return Ready::default();
    }
    Ready {
        client: fds[0].revents != 0,
        woken: fds[1].revents != 0,
        stop: fds[2].revents != 0,
    }
}

/// Whether `fd` is readable now (a zero-timeout poll).
#[cfg(test)]
pub fn is_readable(fd: BorrowedFd<'_>) -> bool {
    let mut poll = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one pollfd we own, with a zero timeout; it only writes `revents`.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    ready > 0 && poll.revents & libc::POLLIN != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_from_wake_until_cleared_and_wakes_coalesce() {
        let wake = WakeFd::new().unwrap();
        assert!(!is_readable(wake.as_fd()));
        assert!(!wake.clear(), "a fresh wake-up reads as not woken");
        wake.wake();
        wake.wake();
        assert!(is_readable(wake.as_fd()));
        assert!(wake.clear(), "two wake-ups are one");
        assert!(!is_readable(wake.as_fd()));
        assert!(!wake.clear());
    }

    #[test]
    fn a_wake_from_another_thread_ends_a_poll() {
        let wake = std::sync::Arc::new(WakeFd::new().unwrap());
        let waker = std::sync::Arc::clone(&wake);
        let thread = std::thread::spawn(move || waker.wake());
        let mut poll = libc::pollfd {
            fd: wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd we own; waits at most 10 s.
        let ready = unsafe { libc::poll(&mut poll, 1, 10_000) };
        thread.join().unwrap();
        assert_eq!(ready, 1);
        assert!(wake.clear());
    }
}
