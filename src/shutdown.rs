//! Shutdown: one broadcast that every loop can wait on, and the SIGTERM/SIGINT listener that
//! fires it.
//!
//! Signals are blocked in every thread (the mask is inherited, so [`block_signals`] runs before
//! any thread is spawned) and taken synchronously by one thread in `sigwait`: no async-signal
//! safety puzzles, and a signal can never interrupt a write halfway.
//!
//! The broadcast has two forms: a channel that disconnects ([`Shutdown::signal`], for
//! `select!`) and a descriptor that becomes readable ([`Shutdown::fd`], for a thread that
//! waits in `poll(2)` on a socket, like a WebSocket session). The descriptor is one eventfd
//! for the whole process, made on first use and never cleared once fired.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use crossbeam_channel::{Receiver, Sender};

use crate::wake::WakeFd;

/// Cloneable shutdown broadcast: [`Shutdown::trigger`] disconnects every [`Shutdown::signal`].
#[derive(Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

struct Inner {
    tx: Mutex<Option<Sender<()>>>,
    rx: Receiver<()>,
    triggered: AtomicBool,
    /// The descriptor form, made by the first [`Shutdown::fd`]; woken (under `tx`'s lock, so
    /// a trigger and a first `fd` cannot miss each other) when shutdown fires.
    fd: OnceLock<WakeFd>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    pub fn new() -> Shutdown {
        let (tx, rx) = crossbeam_channel::bounded(0);
        Shutdown {
            inner: Arc::new(Inner {
                tx: Mutex::new(Some(tx)),
                rx,
                triggered: AtomicBool::new(false),
                fd: OnceLock::new(),
            }),
        }
    }

    /// Fires the broadcast; later calls do nothing.
    pub fn trigger(&self) {
        let mut tx = self.inner.tx.lock().unwrap_or_else(PoisonError::into_inner);
        self.inner.triggered.store(true, Ordering::SeqCst);
        tx.take();
        if let Some(fd) = self.inner.fd.get() {
            fd.wake();
        }
    }

    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::SeqCst)
    }

    /// A receiver that becomes ready (disconnected) when shutdown fires: use it in `select!`.
    pub fn signal(&self) -> Receiver<()> {
        self.inner.rx.clone()
    }

    /// A descriptor that becomes readable (`POLLIN`) when shutdown fires and stays so: wait on
    /// it with `poll(2)`, never read it. Fails only if the first call finds the process out of
    /// file descriptors.
    pub fn fd(&self) -> io::Result<BorrowedFd<'_>> {
        if let Some(fd) = self.inner.fd.get() {
            return Ok(fd.as_fd());
        }
        let _tx = self.inner.tx.lock().unwrap_or_else(PoisonError::into_inner);
        if self.inner.fd.get().is_none() {
            let fd = WakeFd::new()?;
            if self.is_triggered() {
                fd.wake();
            }
            self.inner.fd.set(fd).ok();
        }
        let fd = self.inner.fd.get().expect("set just above, under the lock");
        Ok(fd.as_fd())
    }
}

fn termination_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset only write the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        // The terminal porchlight was started from went away (an ssh session closed): its
        // default action would kill the process mid-write, with no `offline` on MQTT and no
        // clean close of the store. Nothing is reloaded on SIGHUP; it stops like SIGTERM.
        libc::sigaddset(&mut set, libc::SIGHUP);
        set
    }
}

/// Blocks SIGTERM, SIGINT and SIGHUP in this thread and every thread it spawns afterwards.
pub fn block_signals() {
    let set = termination_signals();
    // SAFETY: changes only this thread's signal mask.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Spawns the thread that waits for SIGTERM/SIGINT/SIGHUP and triggers `shutdown`.
pub fn spawn_signal_listener(shutdown: Shutdown) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let set = termination_signals();
            let mut signal: libc::c_int = 0;
            // SAFETY: sigwait reads the set and writes the signal number we own.
            let rc = unsafe { libc::sigwait(&set, &mut signal) };
            let name = match signal {
                libc::SIGTERM => "SIGTERM",
                libc::SIGINT => "SIGINT",
                libc::SIGHUP => "SIGHUP",
                _ => "a signal",
            };
            if rc == 0 {
                log::info!("{name} received: shutting down");
            }
            shutdown.trigger();
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn trigger_wakes_every_waiter() {
        let shutdown = Shutdown::new();
        let a = shutdown.signal();
        let b = shutdown.clone().signal();
        assert!(a.try_recv().is_err() && !shutdown.is_triggered());
        shutdown.trigger();
        assert!(a.recv().is_err() && b.recv().is_err());
        assert!(shutdown.is_triggered());
    }

    #[test]
    fn the_descriptor_becomes_readable_at_trigger_and_stays_so() {
        use crate::wake::is_readable;
        let shutdown = Shutdown::new();
        let fd = shutdown.fd().unwrap();
        assert!(!is_readable(fd));
        assert_eq!(
            shutdown.clone().fd().unwrap().as_raw_fd(),
            fd.as_raw_fd(),
            "one descriptor for every clone"
        );
        shutdown.trigger();
        assert!(is_readable(fd));
        assert!(is_readable(fd), "never cleared: every waiter sees it");
    }

    #[test]
    fn a_descriptor_made_after_the_trigger_is_readable() {
        let shutdown = Shutdown::new();
        shutdown.trigger();
        assert!(crate::wake::is_readable(shutdown.fd().unwrap()));
    }
}
