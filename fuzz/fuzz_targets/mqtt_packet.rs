//! MQTT packets from a broker: any bytes, read as the bridge's reader thread reads them (packet
//! after packet, oversized ones skipped), decode to packets or a protocol error, never a panic
//! or a read past the input; a decoded PUBLISH encodes back to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use porchlight::mqtt::codec::{self, Decoded, Incoming};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    loop {
        match codec::decode(rest) {
            Ok(Decoded::Packet { packet, len }) => {
                assert!(len >= 2 && len <= rest.len());
                if let Incoming::Publish(message) = &packet {
                    let again = codec::publish(
                        &message.topic,
                        &message.payload,
                        message.qos,
                        message.retain,
                        message.packet_id,
                    )
                    .expect("a decoded message fits a packet");
                    match codec::decode(&again) {
                        Ok(Decoded::Packet { packet: back, .. }) => assert_eq!(back, packet),
                        other => panic!("re-encoded PUBLISH did not decode: {other:?}"),
                    }
                }
                rest = &rest[len..];
            }
            Ok(Decoded::TooLarge { len }) => {
                assert!(len > codec::MAX_INCOMING);
                return;
            }
            Ok(Decoded::NeedMore) | Err(_) => return,
        }
    }
});
