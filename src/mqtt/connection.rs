//! One connection to the broker: a blocking TCP socket, the CONNECT/CONNACK exchange, and a
//! reader thread that turns the bytes the broker sends into packets on a bounded channel.
//!
//! Why a reader thread: the bridge must wait for events, acknowledgements, commands and
//! shutdown at once, with no async runtime. A blocking read cannot be woken by a channel, so
//! the read sits on a thread of its own (small stack) and the bridge waits in one `select!`.
//! Only the bridge thread writes; the reader only reads. Closing the connection shuts the
//! socket down, which ends the reader's read.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::codec::{self, Decoded, Incoming};
use crate::deadline::ReadBy;

/// Connecting (per address), and waiting for the whole CONNACK: a deadline for the exchange,
/// not a timeout per read, or a peer trickling a byte every few seconds would hold the bridge
/// in its connect (and a clean shutdown behind it) for as long as it liked.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A write that cannot go on for this long means the broker is gone or stuck.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Packets read ahead of the bridge; a busy bridge pushes back on the broker through TCP.
const INCOMING_QUEUE: usize = 64;
const READER_STACK: usize = 64 * 1024;

/// What the reader thread hands over: a packet, or why the connection ended (the last item).
pub type Received = Result<Incoming, String>;

pub struct Connection {
    stream: TcpStream,
    incoming: Receiver<Received>,
    reader: Option<JoinHandle<()>>,
    last_write: Instant,
}

impl Connection {
    /// Connects to `host_port`, sends `connect` and waits for the broker to accept it.
    pub fn open(host_port: &str, connect: &[u8]) -> Result<Connection, String> {
        let mut stream = crate::url::connect(host_port, host_port, CONNECT_TIMEOUT)?;
        let io = |e: io::Error| format!("talking to {host_port}: {e}");
        stream.set_nodelay(true).map_err(io)?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT)).map_err(io)?;
        stream.write_all(connect).map_err(io)?;
        let mut connack = ReadBy::new(&stream, CONNECT_TIMEOUT);
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 256];
        let leftover = loop {
            match codec::decode(&buf).map_err(|e| e.to_string())? {
                Decoded::Packet {
                    packet: Incoming::ConnAck { code: 0, .. },
                    len,
                } => break buf.split_off(len),
                Decoded::Packet {
                    packet: Incoming::ConnAck { code, .. },
                    ..
                } => {
                    return Err(format!(
                        "the broker refused the connection: {}",
                        codec::connack_refusal(code)
                    ));
                }
                Decoded::Packet { packet, .. } => {
                    return Err(format!("the broker sent {packet:?} before CONNACK"));
                }
                Decoded::TooLarge { .. } => {
                    return Err("the broker sent a huge first packet".into());
                }
                Decoded::NeedMore => {}
            }
            match connack.read(&mut chunk) {
                Ok(0) => return Err(format!("{host_port} closed the connection before CONNACK")),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return Err(format!(
                        "no whole CONNACK from {host_port} within {} s",
                        CONNECT_TIMEOUT.as_secs()
                    ));
                }
                Err(e) => return Err(format!("no CONNACK from {host_port}: {e}")),
            }
        };
        stream.set_read_timeout(None).map_err(io)?;
        let (tx, incoming) = crossbeam_channel::bounded(INCOMING_QUEUE);
        let read_half = stream.try_clone().map_err(io)?;
        let reader = std::thread::Builder::new()
            .name("mqtt-reader".into())
            .stack_size(READER_STACK)
            .spawn(move || read_packets(read_half, leftover, tx))
            .map_err(|e| format!("cannot start the MQTT reader thread: {e}"))?;
        Ok(Connection {
            stream,
            incoming,
            reader: Some(reader),
            last_write: Instant::now(),
        })
    }

    /// Packets from the broker; disconnected (after an `Err` saying why) when the connection
    /// ended.
    pub fn incoming(&self) -> &Receiver<Received> {
        &self.incoming
    }

    /// Writes one or more whole packets. An error means the connection is unusable.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.last_write = Instant::now();
        Ok(())
    }

    /// How long since we last wrote (keep-alive: a PINGREQ is due after a quiet while).
    pub fn idle(&self) -> Duration {
        self.last_write.elapsed()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.stream.shutdown(Shutdown::Both).ok();
        // Drop our end of the channel first: a reader blocked handing over a packet wakes.
        self.incoming = crossbeam_channel::never();
        if let Some(reader) = self.reader.take() {
            reader.join().ok();
        }
    }
}

/// The reader thread: bytes → packets, until the socket ends or the bridge stops listening.
fn read_packets(mut stream: TcpStream, mut buf: Vec<u8>, tx: Sender<Received>) {
    if let Some(reason) = pump(&mut stream, &mut buf, &tx) {
        tx.send(Err(reason)).ok();
    }
}

/// Reads and hands over packets; returns why the connection ended, or `None` if the bridge
/// stopped listening.
fn pump(stream: &mut TcpStream, buf: &mut Vec<u8>, tx: &Sender<Received>) -> Option<String> {
    let mut chunk = vec![0u8; 4096];
    // Bytes of an oversized packet still to throw away.
    let mut skip = 0usize;
    loop {
        loop {
            if skip > 0 {
                let n = skip.min(buf.len());
                buf.drain(..n);
                skip -= n;
                if skip > 0 {
                    break;
                }
            }
            match codec::decode(buf) {
                Ok(Decoded::Packet { packet, len }) => {
                    buf.drain(..len);
                    tx.send(Ok(packet)).ok()?;
                }
                Ok(Decoded::TooLarge { len }) => {
                    log::warn!(
                        "ignored a {len}-byte packet from the MQTT broker (over {} bytes)",
                        codec::MAX_INCOMING
                    );
                    skip = len;
                }
                Ok(Decoded::NeedMore) => break,
                Err(error) => {
                    stream.shutdown(Shutdown::Both).ok();
                    return Some(error.to_string());
                }
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Some("the broker closed the connection".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Some(format!("reading from the broker: {e}")),
        }
    }
}
