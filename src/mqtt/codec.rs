//! MQTT 3.1.1 packets, as far as a publishing client needs them, with no I/O: packets are
//! encoded into byte vectors and decoded from a byte slice that may hold a partial packet, so
//! the decoder can be unit-tested and fuzzed on its own and the socket code stays trivial.
//!
//! Why our own and not the `mqtt-protocol` crate: the client needs six packet encoders and five
//! decoders (about 300 lines here); `mqtt-protocol` decodes from a blocking `Read`, so a
//! partial packet would block the reader halfway through a parse instead of returning "need
//! more bytes", and it would bring `thiserror`/`byteorder` for what a few shifts do.
//!
//! Spec references are to OASIS MQTT Version 3.1.1 (section numbers in the comments).

use std::fmt;

/// Quality of service. QoS 2 is never used by porchlight, and refused if a broker sends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QoS {
    AtMostOnce = 0,
    AtLeastOnce = 1,
}

/// The largest packet porchlight accepts from a broker (commands are small JSON objects; a
/// retained picture on a command topic would be a mistake). Longer packets are skipped unread.
pub const MAX_INCOMING: usize = 64 * 1024;

/// The largest "remaining length" the protocol can express (four 7-bit digits, 2.2.3).
const MAX_REMAINING: usize = 268_435_455;

/// A packet a broker sends to a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// 3.2: the answer to CONNECT. `code` 0 is accepted; 1–5 say why not.
    ConnAck { session_present: bool, code: u8 },
    /// 3.3: a message on a topic we subscribed to.
    Publish(Message),
    /// 3.4: the broker has our QoS 1 message.
    PubAck { packet_id: u16 },
    /// 3.9: one return code per requested filter (0x00/0x01 granted QoS, 0x80 failure).
    SubAck { packet_id: u16, codes: Vec<u8> },
    /// 3.13
    PingResp,
}

/// A received PUBLISH.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: QoS,
    pub retain: bool,
    /// Present for QoS 1: acknowledge with [`puback`].
    pub packet_id: Option<u16>,
}

/// What [`decode`] found at the start of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A whole packet, `len` bytes long.
    Packet { packet: Incoming, len: usize },
    /// A packet longer than [`MAX_INCOMING`]: `len` bytes (the header already in the buffer
    /// included) to discard without parsing.
    TooLarge { len: usize },
    /// Not a whole packet yet: read more.
    NeedMore,
}

/// A broker sent something that is not valid MQTT 3.1.1 from a server: the connection cannot
/// go on (2.x, 3.x), so the client closes it.
#[derive(Debug, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MQTT protocol error: {}", self.0)
    }
}

fn err<T>(message: impl Into<String>) -> Result<T, ProtocolError> {
    Err(ProtocolError(message.into()))
}

/// Decodes the packet at the start of `buf`, if it is all there.
pub fn decode(buf: &[u8]) -> Result<Decoded, ProtocolError> {
    let Some(&first) = buf.first() else {
        return Ok(Decoded::NeedMore);
    };
    let Some((remaining, header_len)) = remaining_length(&buf[1..])? else {
        return Ok(Decoded::NeedMore);
    };
    let header_len = 1 + header_len;
    let len = header_len + remaining;
    if len > MAX_INCOMING {
        return Ok(Decoded::TooLarge { len });
    }
    if buf.len() < len {
        return Ok(Decoded::NeedMore);
    }
    let body = &buf[header_len..len];
    let flags = first & 0x0F;
    let packet = match first >> 4 {
        2 => {
            fixed_flags(flags, 0, "CONNACK")?;
            let [ack_flags, code] = exact::<2>(body, "CONNACK")?;
            if ack_flags & 0xFE != 0 {
                return err("CONNACK has reserved flag bits set");
            }
            Incoming::ConnAck {
                session_present: ack_flags & 1 == 1,
                code,
            }
        }
        3 => Incoming::Publish(decode_publish(flags, body)?),
        4 => {
            fixed_flags(flags, 0, "PUBACK")?;
            let [hi, lo] = exact::<2>(body, "PUBACK")?;
            Incoming::PubAck {
                packet_id: u16::from_be_bytes([hi, lo]),
            }
        }
        9 => {
            fixed_flags(flags, 0, "SUBACK")?;
            if body.len() < 3 {
                return err("SUBACK shorter than a packet id and one return code");
            }
            let codes = body[2..].to_vec();
            if let Some(bad) = codes.iter().find(|c| !matches!(c, 0 | 1 | 2 | 0x80)) {
                return err(format!("SUBACK return code {bad:#04x} is not defined"));
            }
            Incoming::SubAck {
                packet_id: u16::from_be_bytes([body[0], body[1]]),
                codes,
            }
        }
        13 => {
            fixed_flags(flags, 0, "PINGRESP")?;
            exact::<0>(body, "PINGRESP")?;
            Incoming::PingResp
        }
        5..=7 => return err("QoS 2 flow packets (PUBREC/PUBREL/PUBCOMP) are never requested"),
        11 => return err("UNSUBACK without an UNSUBSCRIBE"),
        other => return err(format!("packet type {other} is not sent by a server")),
    };
    Ok(Decoded::Packet { packet, len })
}

/// 2.2.3: the variable-length "remaining length", and how many bytes it took. `None` if the
/// buffer ends inside it.
fn remaining_length(buf: &[u8]) -> Result<Option<(usize, usize)>, ProtocolError> {
    let mut value = 0usize;
    for (i, &byte) in buf.iter().enumerate().take(4) {
        value |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                // A non-minimal encoding is malformed (1.5.5 "must use the minimum number").
                return err("remaining length is not minimally encoded");
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= 4 {
        return err("remaining length longer than four bytes");
    }
    Ok(None)
}

fn fixed_flags(flags: u8, expected: u8, name: &str) -> Result<(), ProtocolError> {
    if flags == expected {
        Ok(())
    } else {
        err(format!("{name} with fixed-header flags {flags:#x}"))
    }
}

fn exact<const N: usize>(body: &[u8], name: &str) -> Result<[u8; N], ProtocolError> {
    body.try_into()
        .or_else(|_| err(format!("{name} must be {N} bytes long, not {}", body.len())))
}

/// 3.3: topic, packet id when QoS > 0, then the payload.
fn decode_publish(flags: u8, body: &[u8]) -> Result<Message, ProtocolError> {
    let qos = match (flags >> 1) & 0b11 {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        2 => return err("PUBLISH at QoS 2, above the QoS porchlight subscribed with"),
        _ => return err("PUBLISH with QoS 3"),
    };
    let retain = flags & 1 == 1;
    if qos == QoS::AtMostOnce && flags & 0b1000 != 0 {
        return err("PUBLISH at QoS 0 with the DUP flag");
    }
    let (topic, rest) = string(body, "PUBLISH topic")?;
    if topic.is_empty() || topic.contains(['+', '#']) {
        return err(format!(
            "PUBLISH topic {topic:?} is empty or has a wildcard"
        ));
    }
    let (packet_id, payload) = match qos {
        QoS::AtMostOnce => (None, rest),
        QoS::AtLeastOnce => {
            if rest.len() < 2 {
                return err("PUBLISH at QoS 1 without a packet id");
            }
            let id = u16::from_be_bytes([rest[0], rest[1]]);
            if id == 0 {
                return err("PUBLISH with packet id 0");
            }
            (Some(id), &rest[2..])
        }
    };
    Ok(Message {
        topic,
        payload: payload.to_vec(),
        qos,
        retain,
        packet_id,
    })
}

/// 1.5.3: a two-byte length and that many bytes of UTF-8 without NUL.
fn string<'a>(buf: &'a [u8], what: &str) -> Result<(String, &'a [u8]), ProtocolError> {
    if buf.len() < 2 {
        return err(format!("{what} is cut short"));
    }
    let len = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
    let Some(bytes) = buf.get(2..2 + len) else {
        return err(format!("{what} is longer than its packet"));
    };
    let text = std::str::from_utf8(bytes)
        .ok()
        .filter(|t| !t.contains('\0'))
        .map(str::to_owned);
    match text {
        Some(text) => Ok((text, &buf[2 + len..])),
        None => err(format!("{what} is not UTF-8 without NUL")),
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding (client → server)
// ---------------------------------------------------------------------------------------------

/// A string or payload too long for the protocol; nothing was encoded.
#[derive(Debug, PartialEq, Eq)]
pub struct TooLong(pub &'static str);

impl fmt::Display for TooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is too long for an MQTT packet", self.0)
    }
}

/// The Last Will: what the broker publishes for us if we vanish without a DISCONNECT.
#[derive(Clone, Debug)]
pub struct Will<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub qos: QoS,
    pub retain: bool,
}

/// 3.1: what CONNECT says.
#[derive(Clone, Debug)]
pub struct Connect<'a> {
    pub client_id: &'a str,
    pub keep_alive_s: u16,
    pub clean_session: bool,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    pub will: Option<Will<'a>>,
}

fn put_string(out: &mut Vec<u8>, text: &[u8], what: &'static str) -> Result<(), TooLong> {
    let len = u16::try_from(text.len()).map_err(|_| TooLong(what))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(text);
    Ok(())
}

/// A fixed header for `body_len` bytes, then the body, as one vector.
fn packet(first: u8, body_len: usize, what: &'static str) -> Result<Vec<u8>, TooLong> {
    if body_len > MAX_REMAINING {
        return Err(TooLong(what));
    }
    let mut out = Vec::with_capacity(5 + body_len);
    out.push(first);
    let mut rest = body_len;
    loop {
        let digit = (rest % 128) as u8;
        rest /= 128;
        out.push(if rest > 0 { digit | 0x80 } else { digit });
        if rest == 0 {
            break;
        }
    }
    Ok(out)
}

pub fn connect(c: &Connect<'_>) -> Result<Vec<u8>, TooLong> {
    let mut body = Vec::with_capacity(64);
    put_string(&mut body, b"MQTT", "protocol name")?;
    body.push(4); // protocol level: 3.1.1
    let mut flags = 0u8;
    if c.clean_session {
        flags |= 0b10;
    }
    if let Some(will) = &c.will {
        flags |= 0b100 | ((will.qos as u8) << 3);
        if will.retain {
            flags |= 0b10_0000;
        }
    }
    if c.password.is_some() {
        flags |= 0b100_0000;
    }
    if c.username.is_some() {
        flags |= 0b1000_0000;
    }
    body.push(flags);
    body.extend_from_slice(&c.keep_alive_s.to_be_bytes());
    put_string(&mut body, c.client_id.as_bytes(), "client id")?;
    if let Some(will) = &c.will {
        put_string(&mut body, will.topic.as_bytes(), "will topic")?;
        put_string(&mut body, will.payload, "will message")?;
    }
    if let Some(user) = c.username {
        put_string(&mut body, user.as_bytes(), "user name")?;
    }
    if let Some(password) = c.password {
        put_string(&mut body, password.as_bytes(), "password")?;
    }
    let mut out = packet(0x10, body.len(), "CONNECT")?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// 3.3: PUBLISH. `packet_id` must be given exactly when `qos` is 1.
pub fn publish(
    topic: &str,
    payload: &[u8],
    qos: QoS,
    retain: bool,
    packet_id: Option<u16>,
) -> Result<Vec<u8>, TooLong> {
    debug_assert_eq!(packet_id.is_some(), qos == QoS::AtLeastOnce);
    let topic_len = u16::try_from(topic.len()).map_err(|_| TooLong("topic"))?;
    let id_len = if packet_id.is_some() { 2 } else { 0 };
    let body_len = 2 + usize::from(topic_len) + id_len + payload.len();
    let first = 0x30 | ((qos as u8) << 1) | u8::from(retain);
    let mut out = packet(first, body_len, "PUBLISH payload")?;
    out.extend_from_slice(&topic_len.to_be_bytes());
    out.extend_from_slice(topic.as_bytes());
    if let Some(id) = packet_id {
        out.extend_from_slice(&id.to_be_bytes());
    }
    out.extend_from_slice(payload);
    Ok(out)
}

/// 3.4: acknowledges a QoS 1 PUBLISH the broker sent us.
pub fn puback(packet_id: u16) -> [u8; 4] {
    let [hi, lo] = packet_id.to_be_bytes();
    [0x40, 2, hi, lo]
}

/// 3.8: SUBSCRIBE to `filters`, each at its QoS.
pub fn subscribe(packet_id: u16, filters: &[(&str, QoS)]) -> Result<Vec<u8>, TooLong> {
    let mut body = Vec::with_capacity(64);
    body.extend_from_slice(&packet_id.to_be_bytes());
    for (filter, qos) in filters {
        put_string(&mut body, filter.as_bytes(), "topic filter")?;
        body.push(*qos as u8);
    }
    let mut out = packet(0x82, body.len(), "SUBSCRIBE")?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// 3.12
pub const PINGREQ: [u8; 2] = [0xC0, 0];
/// 3.14: a clean goodbye; the broker then discards the Will.
pub const DISCONNECT: [u8; 2] = [0xE0, 0];

/// What a CONNACK refusal code means (3.2.2.3), for the log line that says what to fix.
pub fn connack_refusal(code: u8) -> &'static str {
    match code {
        1 => "the broker does not accept MQTT 3.1.1",
        2 => "the broker refused the client id",
        3 => "the MQTT service is unavailable",
        4 => "bad user name or password (check mqtt_url)",
        5 => "not authorised (check mqtt_url's user and the broker's ACL)",
        _ => "refused with a code MQTT 3.1.1 does not define",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(buf: &[u8]) -> Incoming {
        match decode(buf).unwrap() {
            Decoded::Packet { packet, len } => {
                assert_eq!(len, buf.len());
                packet
            }
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    #[test]
    fn connect_matches_the_spec_layout() {
        let bytes = connect(&Connect {
            client_id: "porchlight-door",
            keep_alive_s: 30,
            clean_session: true,
            username: Some("u"),
            password: Some("p"),
            will: Some(Will {
                topic: "porchlight/door/availability",
                payload: b"offline",
                qos: QoS::AtLeastOnce,
                retain: true,
            }),
        })
        .unwrap();
        assert_eq!(bytes[0], 0x10);
        assert_eq!(usize::from(bytes[1]), bytes.len() - 2);
        assert_eq!(&bytes[2..8], b"\0\x04MQTT");
        assert_eq!(bytes[8], 4, "protocol level 3.1.1");
        // user, password, will retain, will QoS 1, will, clean session.
        assert_eq!(bytes[9], 0b1110_1110);
        assert_eq!(&bytes[10..12], &[0, 30]);
        assert_eq!(&bytes[12..14], &[0, 15]);
        assert_eq!(&bytes[14..29], b"porchlight-door");
        let tail = &bytes[29..];
        assert!(tail.starts_with(b"\0\x1cporchlight/door/availability\0\x07offline"));
        assert!(tail.ends_with(b"\0\x01u\0\x01p"));
    }

    #[test]
    fn connect_without_credentials_or_will_sets_no_flags_for_them() {
        let bytes = connect(&Connect {
            client_id: "c",
            keep_alive_s: 60,
            clean_session: true,
            username: None,
            password: None,
            will: None,
        })
        .unwrap();
        assert_eq!(bytes[9], 0b10);
        assert_eq!(&bytes[12..], b"\0\x01c");
    }

    #[test]
    fn publish_round_trips_at_both_qos_levels() {
        for (qos, id) in [(QoS::AtMostOnce, None), (QoS::AtLeastOnce, Some(513))] {
            let bytes = publish("a/b", b"{\"x\":1}", qos, true, id).unwrap();
            assert_eq!(
                whole(&bytes),
                Incoming::Publish(Message {
                    topic: "a/b".into(),
                    payload: b"{\"x\":1}".to_vec(),
                    qos,
                    retain: true,
                    packet_id: id,
                })
            );
        }
    }

    #[test]
    fn remaining_length_uses_up_to_four_digits() {
        // The spec's boundary values (2.2.3, table 2.4).
        for (len, digits) in [
            (0, 1),
            (127, 1),
            (128, 2),
            (16_383, 2),
            (16_384, 3),
            (2_097_151, 3),
            (2_097_152, 4),
            (MAX_REMAINING, 4),
        ] {
            let header = packet(0x30, len, "test").unwrap();
            assert_eq!(header.len(), 1 + digits, "{len}");
            assert_eq!(remaining_length(&header[1..]).unwrap(), Some((len, digits)));
        }
        assert_eq!(packet(0x30, MAX_REMAINING + 1, "x"), Err(TooLong("x")));
        assert!(remaining_length(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]).is_err());
        assert!(remaining_length(&[0x80, 0x00]).is_err(), "non-minimal");
        assert_eq!(remaining_length(&[0xFF, 0xFF]).unwrap(), None);
    }

    #[test]
    fn every_prefix_of_a_packet_needs_more() {
        let bytes = publish("t", &[7u8; 300], QoS::AtLeastOnce, false, Some(1)).unwrap();
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]).unwrap(), Decoded::NeedMore, "{cut}");
        }
        let mut two = bytes.clone();
        two.extend_from_slice(&[0xD0, 0]);
        match decode(&two).unwrap() {
            Decoded::Packet { len, .. } => {
                assert_eq!(len, bytes.len());
                assert_eq!(whole(&two[len..]), Incoming::PingResp);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn server_packets_decode() {
        assert_eq!(
            whole(&[0x20, 2, 1, 0]),
            Incoming::ConnAck {
                session_present: true,
                code: 0
            }
        );
        assert_eq!(
            whole(&[0x20, 2, 0, 5]),
            Incoming::ConnAck {
                session_present: false,
                code: 5
            }
        );
        assert_eq!(whole(&[0x40, 2, 1, 2]), Incoming::PubAck { packet_id: 258 });
        assert_eq!(
            whole(&[0x90, 4, 0, 9, 1, 0x80]),
            Incoming::SubAck {
                packet_id: 9,
                codes: vec![1, 0x80]
            }
        );
        assert_eq!(whole(&[0xD0, 0]), Incoming::PingResp);
    }

    #[test]
    fn malformed_packets_are_protocol_errors() {
        for bad in [
            &[0x20, 3, 0, 0, 0][..],         // CONNACK too long
            &[0x21, 2, 0, 0],                // reserved flags
            &[0x20, 2, 2, 0],                // reserved ack flag
            &[0x40, 1, 0],                   // PUBACK too short
            &[0x90, 2, 0, 1],                // SUBACK without codes
            &[0x90, 3, 0, 1, 7],             // undefined return code
            &[0xD0, 1, 0],                   // PINGRESP with a body
            &[0x10, 0],                      // CONNECT from a server
            &[0x50, 2, 0, 1],                // PUBREC
            &[0x34, 5, 0, 1, b'a', 0, 1],    // QoS 2
            &[0x36, 5, 0, 1, b'a', 0, 1],    // QoS 3
            &[0x38, 3, 0, 1, b'a'],          // DUP at QoS 0
            &[0x32, 4, 0, 1, b'a', 0],       // QoS 1 without a whole packet id
            &[0x32, 5, 0, 1, b'a', 0, 0],    // packet id 0
            &[0x30, 3, 0, 1, b'#'],          // wildcard in a topic name
            &[0x30, 2, 0, 0],                // empty topic
            &[0x30, 3, 0, 5, b'a'],          // topic longer than the packet
            &[0x30, 4, 0, 2, 0xC3, 0x28],    // invalid UTF-8
            &[0x30, 3, 0, 1, 0],             // NUL
            &[0x00, 0],                      // reserved type 0
            &[0xF0, 0],                      // reserved type 15
            &[0x30, 0x80, 0x80, 0x80, 0x80], // five length digits
        ] {
            assert!(decode(bad).is_err(), "{bad:02x?}");
        }
    }

    #[test]
    fn an_oversized_packet_is_skipped_not_buffered() {
        let len = MAX_INCOMING + 1;
        let header = packet(0x30, len, "x").unwrap();
        assert_eq!(
            decode(&header).unwrap(),
            Decoded::TooLarge {
                len: header.len() + len
            }
        );
    }

    #[test]
    fn subscribe_and_small_packets_match_the_spec() {
        assert_eq!(
            subscribe(10, &[("p/command/+", QoS::AtLeastOnce)]).unwrap(),
            b"\x82\x10\x00\x0a\x00\x0bp/command/+\x01"
        );
        assert_eq!(puback(0x0102), [0x40, 2, 1, 2]);
        assert_eq!(PINGREQ, [0xC0, 0]);
        assert_eq!(DISCONNECT, [0xE0, 0]);
    }

    /// What the fuzz target checks, on a fixed budget of pseudo-random inputs: valid packets
    /// with bytes flipped, cut or appended, and noise. Never a panic; a decoded length never
    /// passes the input.
    #[test]
    fn mangled_input_never_panics() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let valid: Vec<Vec<u8>> = vec![
            publish("a/b", b"payload", QoS::AtLeastOnce, true, Some(7)).unwrap(),
            publish("t", &[0; 200], QoS::AtMostOnce, false, None).unwrap(),
            vec![0x20, 2, 0, 0],
            vec![0x40, 2, 0, 1],
            vec![0x90, 3, 0, 1, 1],
            vec![0xD0, 0],
        ];
        for round in 0..20_000 {
            let mut bytes = valid[round % valid.len()].clone();
            match next() % 4 {
                0 => {
                    let i = (next() as usize) % bytes.len();
                    bytes[i] ^= (next() % 255 + 1) as u8;
                }
                1 => bytes.truncate((next() as usize) % bytes.len()),
                2 => bytes.extend((0..next() % 16).map(|_| next() as u8)),
                _ => bytes = (0..next() % 64).map(|_| next() as u8).collect(),
            }
            if let Ok(Decoded::Packet { len, .. }) = decode(&bytes) {
                assert!(len <= bytes.len(), "{bytes:02x?}");
            }
        }
    }

    #[test]
    fn strings_too_long_for_the_protocol_are_refused() {
        let long = "x".repeat(70_000);
        assert_eq!(
            publish(&long, b"", QoS::AtMostOnce, false, None),
            Err(TooLong("topic"))
        );
        assert!(subscribe(1, &[(&long, QoS::AtMostOnce)]).is_err());
    }
}
