//! porchlight patch: one deadline for a whole request — its head, its body, and the draining of
//! a body nobody read — however slowly the client trickles bytes.
//!
//! The socket's read timeout bounds each wait for a byte; a client sending one byte just inside
//! it could hold a connection for hours. [`DeadlineStream`] sits under every reader of the
//! connection and, while a [`Deadline`] is set, shortens the socket's read timeout to the time
//! left and fails reads with `TimedOut` once it has passed. The connection sets the deadline
//! when a request's first byte arrives and clears it before waiting for the next request (an
//! idle keep-alive connection is bounded by the socket's own timeout) and when a request
//! upgrades (a WebSocket lives as long as it is alive).

use std::io::{Error as IoError, ErrorKind, Read, Result as IoResult};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::util::RefinedTcpStream;

/// The shared deadline of the request being read on a connection.
#[derive(Clone, Debug, Default)]
pub struct Deadline(Arc<Mutex<Option<Instant>>>);

impl Deadline {
    pub fn set(&self, at: Instant) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(at);
    }

    pub fn clear(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    pub fn get(&self) -> Option<Instant> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The error a read gets once the request's deadline has passed.
fn deadline_passed() -> IoError {
    IoError::new(
        ErrorKind::TimedOut,
        "the request did not arrive within its deadline",
    )
}

/// The read half of a connection, reading under its [`Deadline`].
pub struct DeadlineStream {
    inner: RefinedTcpStream,
    deadline: Deadline,
    /// The socket's own read timeout, restored when no deadline is set.
    idle_timeout: Option<Duration>,
    /// Whether the socket's timeout is currently shortened.
    shortened: bool,
}

impl DeadlineStream {
    pub fn new(inner: RefinedTcpStream, deadline: Deadline) -> DeadlineStream {
        let idle_timeout = inner.read_timeout().unwrap_or(None);
        DeadlineStream {
            inner,
            deadline,
            idle_timeout,
            shortened: false,
        }
    }
}

impl Read for DeadlineStream {
    fn read(&mut self, buf: &mut [u8]) -> IoResult<usize> {
        let Some(at) = self.deadline.get() else {
            if self.shortened {
                self.inner.set_read_timeout(self.idle_timeout)?;
                self.shortened = false;
            }
            return self.inner.read(buf);
        };
        let left = at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(deadline_passed());
        }
        if self.idle_timeout.is_none_or(|idle| left < idle) {
            self.inner.set_read_timeout(Some(left))?;
            self.shortened = true;
        } else if self.shortened {
            self.inner.set_read_timeout(self.idle_timeout)?;
            self.shortened = false;
        }
        match self.inner.read(buf) {
            Err(e)
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
                    && Instant::now() >= at =>
            {
                Err(deadline_passed())
            }
            other => other,
        }
    }
}
