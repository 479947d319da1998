//! Shutdown: one broadcast that every loop can wait on, and the SIGTERM/SIGINT listener that
//! fires it.
//!
//! Signals are blocked in every thread (the mask is inherited, so [`block_signals`] runs before
//! any thread is spawned) and taken synchronously by one thread in `sigwait`: no async-signal
//! safety puzzles, and a signal can never interrupt a write halfway.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender};

/// Cloneable shutdown broadcast: [`Shutdown::trigger`] disconnects every [`Shutdown::signal`].
#[derive(Clone)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

struct Inner {
    tx: Mutex<Option<Sender<()>>>,
    rx: Receiver<()>,
    triggered: AtomicBool,
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
            }),
        }
    }

    /// Fires the broadcast; later calls do nothing.
    pub fn trigger(&self) {
        self.inner.triggered.store(true, Ordering::SeqCst);
        self.inner.tx.lock().expect("shutdown lock").take();
    }

    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::SeqCst)
    }

    /// A receiver that becomes ready (disconnected) when shutdown fires: use it in `select!`.
    pub fn signal(&self) -> Receiver<()> {
        self.inner.rx.clone()
    }
}

fn termination_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset only write the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}

/// Blocks SIGTERM and SIGINT in this thread and every thread it spawns afterwards.
pub fn block_signals() {
    let set = termination_signals();
    // SAFETY: changes only this thread's signal mask.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Spawns the thread that waits for SIGTERM/SIGINT and triggers `shutdown`.
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
}
