//! The bridge thread: connect to the broker, announce the device, publish every stored event
//! after the delivery cursor, answer commands, and reconnect with backoff when the broker goes
//! away — for as long as the server runs.
//!
//! On each connection, in order: `online` (retained) on the availability topic, the Home
//! Assistant discovery configs (retained; empty ones for entities not announced), the command
//! subscription, the latest event picture (retained), the status (retained, then every 30 s),
//! then events from the cursor on, QoS 1, at most [`WINDOW`](super::outbox::WINDOW) in flight.
//! The Last Will publishes `offline` if porchlight vanishes; a clean shutdown publishes it
//! itself and says DISCONNECT.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, select};

use super::codec::{self, Incoming, QoS};
use super::commands::{self, Parsed};
use super::connection::Connection;
use super::discovery::{self, AVAILABILITY_TOPIC, MOTION_TOPIC, SNAPSHOT_TOPIC, STATUS_TOPIC};
use super::outbox::Outbox;
use super::{BridgeStatus, MqttSettings};
use crate::auth::Role;
use crate::ctx::Ctx;
use crate::events::{Fed, Feed};
use crate::http::ws::commands::{Outcome, run_from};
use crate::http::ws::protocol;

/// MQTT keep-alive: the broker drops us (and publishes the Will) after 1.5× this without a
/// packet; we ping after half of it idle and give up on a broker silent for all of it.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
const STATUS_INTERVAL: Duration = Duration::from_secs(30);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A connection that lasted this long resets the backoff. One that ends sooner does not: a
/// broker that accepts and then hangs up (an ACL, another client taking the same client id)
/// would otherwise be reconnected to every [`FIRST_BACKOFF`] forever.
const STABLE: Duration = KEEP_ALIVE;
/// How long a clean shutdown waits for the broker to acknowledge what is in flight.
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);
/// Live events queued for the bridge before the hub drops it to catch up from the store.
const LIVE_QUEUE: usize = 256;
/// Events read from the store at a time while catching up.
const PAGE: u64 = 64;
const TICK: Duration = Duration::from_secs(1);
const STACK: usize = 256 * 1024;

/// Why a connection ended.
enum End {
    Shutdown,
    Lost(String),
}

/// Starts the bridge thread. It runs until shutdown; an unreachable broker only delays it.
pub fn start(
    settings: MqttSettings,
    status: Arc<BridgeStatus>,
    ctx: Arc<Ctx>,
) -> std::io::Result<JoinHandle<()>> {
    let bridge = Bridge {
        feed: Feed::new(&ctx.events, LIVE_QUEUE, PAGE),
        outbox: Outbox::new(status.cursor.position()),
        stop: ctx.shutdown.signal(),
        snapshot_published: 0,
        settings,
        status,
        ctx,
    };
    std::thread::Builder::new()
        .name("mqtt".into())
        .stack_size(STACK)
        .spawn(move || bridge.run())
}

struct Bridge {
    settings: MqttSettings,
    status: Arc<BridgeStatus>,
    ctx: Arc<Ctx>,
    feed: Feed,
    outbox: Outbox,
    stop: Receiver<()>,
    /// The event whose picture is on the snapshot topic.
    snapshot_published: u64,
}

impl Bridge {
    fn run(mut self) {
        let broker = self.settings.broker.redacted();
        let mut backoff = FIRST_BACKOFF;
        let mut warned = false;
        loop {
            match self.connect() {
                Ok(connection) => {
                    let connected_at = Instant::now();
                    self.status.connects.fetch_add(1, Ordering::Relaxed);
                    self.status.connected.store(true, Ordering::Relaxed);
                    log::info!(
                        "MQTT: connected to {broker} as {} (publishing under {}/, events after {})",
                        self.settings.client_id(),
                        self.settings.prefix,
                        self.outbox.delivered()
                    );
                    warned = false;
                    let end = self.serve(connection);
                    let lasted = connected_at.elapsed();
                    self.status.connected.store(false, Ordering::Relaxed);
                    self.feed.pause();
                    let resent = self.outbox.reset();
                    match end {
                        End::Shutdown => return,
                        End::Lost(why) if lasted >= STABLE => {
                            self.status.failures.fetch_add(1, Ordering::Relaxed);
                            backoff = FIRST_BACKOFF;
                            log::warn!(
                                "MQTT: lost the connection to {broker}: {why}; reconnecting \
                                 ({resent} event(s) in flight will be sent again)"
                            );
                        }
                        End::Lost(why) => {
                            self.status.failures.fetch_add(1, Ordering::Relaxed);
                            log::warn!(
                                "MQTT: lost the connection to {broker} {} ms after it was \
                                 accepted: {why} (does the broker's ACL allow {}, or does \
                                 another client use that client id?); reconnecting in {} s \
                                 ({resent} event(s) in flight will be sent again)",
                                lasted.as_millis(),
                                self.settings.client_id(),
                                backoff.as_secs()
                            );
                        }
                    }
                }
                Err(why) => {
                    self.status.failures.fetch_add(1, Ordering::Relaxed);
                    if warned {
                        log::debug!("MQTT: still cannot reach {broker}: {why}");
                    } else {
                        warned = true;
                        log::warn!(
                            "MQTT: cannot reach {broker}: {why}; retrying with backoff up to \
                             {} s (events are kept and published once it is back)",
                            MAX_BACKOFF.as_secs()
                        );
                    }
                }
            }
            // The shutdown channel never carries a message: it only disconnects.
            if let Err(crossbeam_channel::RecvTimeoutError::Disconnected) =
                self.stop.recv_timeout(backoff)
            {
                return;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn connect(&self) -> Result<Connection, String> {
        let s = &self.settings;
        let will_topic = s.topic(AVAILABILITY_TOPIC);
        let client_id = s.client_id();
        let connect = codec::connect(&codec::Connect {
            client_id: &client_id,
            keep_alive_s: KEEP_ALIVE.as_secs() as u16,
            clean_session: true,
            username: s.broker.user.as_deref(),
            password: s.broker.password.as_deref(),
            will: Some(codec::Will {
                topic: &will_topic,
                payload: b"offline",
                qos: QoS::AtLeastOnce,
                retain: true,
            }),
        })
        .map_err(|e| e.to_string())?;
        Connection::open(&s.broker.host_port(), &connect)
    }

    /// One connection's life: announce, then events, commands, pings and status until the
    /// connection ends or the server stops.
    fn serve(&mut self, mut conn: Connection) -> End {
        match self.announce(&mut conn) {
            Ok(()) => {}
            Err(why) => return End::Lost(why),
        }
        let mut last_status = Instant::now();
        let mut ping_sent: Option<Instant> = None;
        let incoming = conn.incoming().clone();
        let stop = self.stop.clone();
        loop {
            let drained = match self.fill_window(&mut conn) {
                Ok(drained) => drained,
                Err(why) => return End::Lost(why),
            };
            let live = if drained {
                self.feed.live()
            } else {
                crossbeam_channel::never()
            };
            let handled = select! {
                recv(incoming) -> packet => match packet {
                    Ok(Ok(packet)) => {
                        if packet == Incoming::PingResp {
                            ping_sent = None;
                        }
                        self.on_packet(&mut conn, packet)
                    }
                    Ok(Err(why)) => Err(why),
                    Err(_) => Err("the connection ended".into()),
                },
                recv(live) -> event => {
                    self.feed.took(event);
                    Ok(())
                }
                recv(stop) -> _ => return self.goodbye(conn),
                default(TICK) => Ok(()),
            };
            if let Err(why) = handled {
                return End::Lost(why);
            }
            if last_status.elapsed() >= STATUS_INTERVAL {
                last_status = Instant::now();
                if let Err(why) = self.publish_status(&mut conn) {
                    return End::Lost(why);
                }
            }
            match ping_sent {
                Some(sent) if sent.elapsed() > KEEP_ALIVE => {
                    return End::Lost(format!("no PINGRESP within {} s", KEEP_ALIVE.as_secs()));
                }
                None if conn.idle() >= KEEP_ALIVE / 2 => {
                    if let Err(e) = conn.send(&codec::PINGREQ) {
                        return End::Lost(format!("writing to the broker: {e}"));
                    }
                    ping_sent = Some(Instant::now());
                }
                _ => {}
            }
        }
    }

    /// What every connection starts with: availability, discovery, the command subscription,
    /// the latest picture and the status.
    fn announce(&mut self, conn: &mut Connection) -> Result<(), String> {
        let s = self.settings.clone();
        self.send_qos1(conn, &s.topic(AVAILABILITY_TOPIC), b"online", true)?;
        for (topic, payload) in discovery::messages(&s) {
            self.send_qos1(conn, &topic, &payload, true)?;
        }
        if s.commands {
            let filter = commands::filter(&s.prefix);
            let packet_id = self.outbox.track(None);
            let packet = codec::subscribe(packet_id, &[(&filter, QoS::AtLeastOnce)])
                .map_err(|e| e.to_string())?;
            conn.send(&packet).map_err(write_error)?;
        }
        match self.ctx.events.reader().latest_snapshot() {
            Ok(Some((id, jpeg))) => {
                self.send_qos1(conn, &s.topic(SNAPSHOT_TOPIC), &jpeg, true)?;
                self.snapshot_published = id;
            }
            Ok(None) => {}
            Err(err) => log::warn!("MQTT: cannot read the latest event picture: {err}"),
        }
        self.publish_status(conn)
    }

    /// Publishes events from the feed while the window has room. `Ok(true)` when the feed
    /// has nothing more right now (wait for live events), `Ok(false)` when the window is full
    /// or the store could not be read (wait for acknowledgements, or retry on the next tick).
    fn fill_window(&mut self, conn: &mut Connection) -> Result<bool, String> {
        let drained = loop {
            if !self.outbox.has_room() {
                break false;
            }
            match self.feed.next(self.outbox.sent()) {
                Ok(Some(fed)) => self.publish_event(conn, &fed)?,
                Ok(None) => break true,
                Err(err) => {
                    log::warn!("MQTT: cannot read events from the store: {err}");
                    break false;
                }
            }
        };
        self.status
            .events_lost
            .store(self.feed.lost(), Ordering::Relaxed);
        Ok(drained)
    }

    fn publish_event(&mut self, conn: &mut Connection, fed: &Fed) -> Result<(), String> {
        let event = fed.event();
        let topic = self.settings.topic(&format!("events/{}", event.event_type));
        let packet_id = self.outbox.track(Some(event.id));
        let packet = codec::publish(
            &topic,
            fed.json().as_bytes(),
            QoS::AtLeastOnce,
            false,
            Some(packet_id),
        )
        .map_err(|e| e.to_string())?;
        conn.send(&packet).map_err(write_error)?;
        let motion = match event.event_type.as_str() {
            "motion_detected" => Some(&b"ON"[..]),
            "motion_ended" => Some(&b"OFF"[..]),
            _ => None,
        };
        if let Some(state) = motion {
            let topic = self.settings.topic(MOTION_TOPIC);
            self.send_qos1(conn, &topic, state, true)?;
        }
        if event.has_snapshot && event.id > self.snapshot_published {
            match self.ctx.events.reader().snapshot(event.id) {
                Ok(Some(jpeg)) => {
                    let topic = self.settings.topic(SNAPSHOT_TOPIC);
                    self.send_qos1(conn, &topic, &jpeg, true)?;
                    self.snapshot_published = event.id;
                }
                // Deleted by retention meanwhile: a newer picture will come.
                Ok(None) => {}
                Err(err) => log::warn!("MQTT: cannot read event {}'s picture: {err}", event.id),
            }
        }
        Ok(())
    }

    fn publish_status(&mut self, conn: &mut Connection) -> Result<(), String> {
        let status = crate::json::text(&self.ctx.status.sample());
        let topic = self.settings.topic(STATUS_TOPIC);
        let packet = codec::publish(&topic, status.as_bytes(), QoS::AtMostOnce, true, None)
            .map_err(|e| e.to_string())?;
        conn.send(&packet).map_err(write_error)
    }

    /// A QoS 1 message that is not an event (it moves no cursor).
    fn send_qos1(
        &mut self,
        conn: &mut Connection,
        topic: &str,
        payload: &[u8],
        retain: bool,
    ) -> Result<(), String> {
        let packet_id = self.outbox.track(None);
        let packet = codec::publish(topic, payload, QoS::AtLeastOnce, retain, Some(packet_id))
            .map_err(|e| e.to_string())?;
        conn.send(&packet).map_err(write_error)
    }

    fn on_packet(&mut self, conn: &mut Connection, packet: Incoming) -> Result<(), String> {
        match packet {
            Incoming::PubAck { packet_id } => self.acknowledged(packet_id),
            Incoming::SubAck { packet_id, codes } => {
                if codes.contains(&0x80) {
                    log::warn!(
                        "MQTT: the broker refused the subscription to {} (check its ACL): \
                         commands over MQTT will not arrive",
                        commands::filter(&self.settings.prefix)
                    );
                }
                self.acknowledged(packet_id);
            }
            Incoming::PingResp => {}
            Incoming::ConnAck { .. } => return Err("a second CONNACK".into()),
            Incoming::Publish(message) => {
                if let Some(packet_id) = message.packet_id {
                    conn.send(&codec::puback(packet_id)).map_err(write_error)?;
                }
                if self.settings.commands {
                    self.run_command(conn, &message.topic, &message.payload, message.retain)?;
                }
            }
        }
        Ok(())
    }

    fn acknowledged(&mut self, packet_id: u16) {
        match self.outbox.ack(packet_id) {
            Ok(acked) => {
                if acked.event {
                    self.status.events_published.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(delivered) = acked.delivered {
                    self.status.cursor.advance(delivered);
                }
            }
            Err(unknown) => log::debug!("MQTT: acknowledgement of unknown packet {}", unknown.0),
        }
    }

    fn run_command(
        &mut self,
        conn: &mut Connection,
        topic: &str,
        payload: &[u8],
        retained: bool,
    ) -> Result<(), String> {
        let prefix = &self.settings.prefix;
        let (name, answer) = match commands::parse(prefix, topic, payload, retained) {
            Parsed::Ignore => return Ok(()),
            Parsed::Refuse { name, refusal } => {
                log::warn!("MQTT command {name} refused: {}", refusal.message);
                (name, protocol::error(&refusal))
            }
            Parsed::Run(request) => {
                let name = request.command.name().to_string();
                let request_id = request.request_id;
                let outcome = run_from(
                    "mqtt",
                    request.command,
                    &request.params,
                    Role::Admin,
                    &self.ctx,
                );
                let answer = match outcome {
                    Outcome::Done(result) => {
                        log::info!("MQTT command {name}: done");
                        protocol::command_result(request.command, &request_id, Ok(result))
                    }
                    Outcome::Failed(error) => {
                        log::warn!("MQTT command {name} failed: {error}");
                        protocol::command_result(request.command, &request_id, Err(error))
                    }
                    Outcome::Refused(code, message) => {
                        log::warn!("MQTT command {name} refused: {message}");
                        protocol::error(&protocol::Refusal {
                            code,
                            message,
                            request_id: Some(request_id),
                        })
                    }
                };
                (name, answer)
            }
        };
        let topic = commands::result_topic(prefix, &name);
        self.send_qos1(conn, &topic, answer.as_bytes(), false)
    }

    /// A clean shutdown: `offline` (retained), a moment for the broker to acknowledge what is
    /// in flight (so the cursor is as far as it can be when the writer saves it), DISCONNECT.
    fn goodbye(&mut self, mut conn: Connection) -> End {
        let topic = self.settings.topic(AVAILABILITY_TOPIC);
        if self.send_qos1(&mut conn, &topic, b"offline", true).is_ok() {
            let deadline = Instant::now() + GOODBYE_TIMEOUT;
            while !self.outbox.is_idle() {
                match conn.incoming().recv_deadline(deadline) {
                    Ok(Ok(Incoming::PubAck { packet_id })) => self.acknowledged(packet_id),
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) | Err(_) => break,
                }
            }
            conn.send(&codec::DISCONNECT).ok();
        }
        log::info!(
            "MQTT: disconnected from {}",
            self.settings.broker.redacted()
        );
        End::Shutdown
    }
}

fn write_error(e: std::io::Error) -> String {
    format!("writing to the broker: {e}")
}
