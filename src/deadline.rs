//! Reading a socket by one instant rather than with a timeout per read.
//!
//! A read timeout bounds each `read`, so a peer that sends a byte every few seconds renews it
//! for as long as it likes: an answer head, a CONNACK or a lingering close would then hold its
//! thread for hours. [`ReadBy`] gives every read only the time left until one deadline.

use std::io::{self, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// `stream`'s reads, all ending by `within` from its making: each waits at most the time left,
/// and a read that finds none left, or whose wait runs out, fails with `TimedOut`.
pub struct ReadBy<'s> {
    stream: &'s TcpStream,
    deadline: Instant,
    within: Duration,
}

impl<'s> ReadBy<'s> {
    pub fn new(stream: &'s TcpStream, within: Duration) -> ReadBy<'s> {
        ReadBy {
            stream,
            deadline: Instant::now() + within,
            within,
        }
    }

    fn timed_out(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("nothing more within {} s", self.within.as_secs_f64()),
        )
    }
}

impl Read for ReadBy<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.timed_out());
        }
        self.stream.set_read_timeout(Some(left))?;
        // The socket's own timeout reads as WouldBlock on Unix: it is this deadline passing.
        self.stream.read(buf).map_err(|err| match err.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => self.timed_out(),
            _ => err,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    #[test]
    fn a_trickling_peer_cannot_hold_the_reads_past_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (socket, _) = listener.accept().unwrap();
        let within = Duration::from_millis(300);
        let mut reader = ReadBy::new(&socket, within);
        let began = Instant::now();
        let mut buf = [0u8; 16];
        // A byte before each read, so a per-read timeout would never run out; the pause
        // between them is the trickle's pace, not a wait for anything.
        let mut trickled = 0;
        let err = loop {
            peer.write_all(b"x").unwrap();
            match reader.read(&mut buf) {
                Ok(n) => assert!(n > 0),
                Err(err) => break err,
            }
            trickled += 1;
            assert!(trickled < 1000, "still reading after {:?}", began.elapsed());
            std::thread::sleep(within / 10);
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(began.elapsed() >= within);
    }

    #[test]
    fn a_silent_peer_times_out_at_the_deadline() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (socket, _) = listener.accept().unwrap();
        let within = Duration::from_millis(200);
        let began = Instant::now();
        let err = ReadBy::new(&socket, within)
            .read(&mut [0u8; 4])
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(began.elapsed() >= within);
    }
}
