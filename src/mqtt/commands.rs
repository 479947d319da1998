//! Commands over MQTT (with `mqtt_commands = true`): a message on `<prefix>/command/<name>`
//! runs the WebSocket `system_command` of that name (`crate::http::ws::commands`, the same
//! `Control` actions, roles and param checks), and the answer — the WebSocket
//! `command_result` or `error` message — is published to `<prefix>/command/<name>/result`.
//!
//! The payload is the command's params as a JSON object (empty for none), with an optional
//! `request_id` echoed in the answer. The broker's ACL decides who may publish here, so a
//! command runs with the admin role. A retained message is never run: it would run again on
//! every reconnect.

use serde_json::Value;

use crate::http::ws::protocol::{CommandName, ErrorCode, Refusal, RequestId, raw_request_id};

/// Largest command payload read; anything longer is refused unparsed.
const MAX_PAYLOAD: usize = 16 * 1024;

/// Longest command name answered. The answer goes to `<prefix>/command/<name>/result`; a
/// topic level of tens of KiB (MQTT allows 65 535 bytes per topic) would make that topic too
/// long to publish, and the bridge would lose its connection over one message. No command
/// name comes near this.
const MAX_NAME: usize = 64;

/// A command message, understood.
#[derive(Debug, PartialEq)]
pub struct Request {
    pub command: CommandName,
    pub params: Value,
    /// As the payload wrote it (`null` when absent), echoed byte for byte like a WebSocket's.
    pub request_id: RequestId,
}

/// What to do with a message on the command topics.
#[derive(Debug, PartialEq)]
pub enum Parsed {
    /// Not for us (another topic, or a `/result`).
    Ignore,
    /// Run it.
    Run(Request),
    /// Answer on `result_topic` with this refusal.
    Refuse { name: String, refusal: Refusal },
}

/// The filter the bridge subscribes to.
pub fn filter(prefix: &str) -> String {
    format!("{prefix}/command/+")
}

pub fn result_topic(prefix: &str, name: &str) -> String {
    format!("{prefix}/command/{name}/result")
}

/// Reads a message from the command topics.
pub fn parse(prefix: &str, topic: &str, payload: &[u8], retained: bool) -> Parsed {
    let Some(name) = topic
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix("/command/"))
        .filter(|name| !name.is_empty() && !name.contains('/'))
    else {
        return Parsed::Ignore;
    };
    if name.len() > MAX_NAME {
        log::warn!(
            "ignored an MQTT command with a {}-byte name (at most {MAX_NAME}; no command is \
             that long, and its result topic could not be published)",
            name.len()
        );
        return Parsed::Ignore;
    }
    if retained {
        log::warn!(
            "ignored a retained MQTT command on {topic}: a command must not be retained \
             (it would run again on every reconnect); clear it with an empty retained message"
        );
        return Parsed::Ignore;
    }
    let refuse = |code, message: String, request_id: Option<RequestId>| Parsed::Refuse {
        name: name.to_string(),
        refusal: Refusal {
            code,
            message,
            request_id,
        },
    };
    let mut params = if payload.iter().all(u8::is_ascii_whitespace) {
        serde_json::Map::new()
    } else if payload.len() > MAX_PAYLOAD {
        return refuse(
            ErrorCode::BadParams,
            format!("a command payload is at most {MAX_PAYLOAD} bytes"),
            None,
        );
    } else {
        match crate::json::parse_untrusted(payload) {
            Ok(Value::Object(object)) => object,
            Ok(_) => {
                return refuse(
                    ErrorCode::BadJson,
                    "the payload must be a JSON object of params (or empty)".into(),
                    None,
                );
            }
            Err(e) => {
                return refuse(
                    ErrorCode::BadJson,
                    format!("the payload is not valid JSON: {e}"),
                    None,
                );
            }
        }
    };
    // The exact text, not the parsed value: `1.50` or a 2^64+1 integer come back as sent.
    let request_id = std::str::from_utf8(payload)
        .ok()
        .and_then(|text| raw_request_id(text, &params));
    params.remove("request_id");
    let Some(command) = CommandName::parse(name) else {
        return refuse(
            ErrorCode::UnknownCommand,
            format!(
                "unknown command {name:?}; commands: {}",
                CommandName::ALL.map(CommandName::name).join(", ")
            ),
            request_id,
        );
    };
    Parsed::Run(Request {
        command,
        params: if params.is_empty() {
            Value::Null
        } else {
            Value::Object(params)
        },
        request_id: request_id.unwrap_or_else(RequestId::null),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const P: &str = "porchlight/door";

    #[test]
    fn commands_with_and_without_params() {
        assert_eq!(
            parse(P, "porchlight/door/command/trigger_doorbell", b"{}", false),
            Parsed::Run(Request {
                command: CommandName::TriggerDoorbell,
                params: Value::Null,
                request_id: RequestId::null(),
            })
        );
        match parse(
            P,
            "porchlight/door/command/set_quality",
            br#"{"quality":"low","request_id":1.50}"#,
            false,
        ) {
            Parsed::Run(request) => {
                assert_eq!(request.command, CommandName::SetQuality);
                assert_eq!(request.params, json!({"quality": "low"}));
                assert_eq!(request.request_id.text(), "1.50");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(P, "porchlight/door/command/get_system_status", b"", false),
            Parsed::Run(_)
        ));
    }

    #[test]
    fn other_topics_results_and_retained_messages_are_ignored() {
        for (topic, retained) in [
            ("porchlight/door/command/trigger_doorbell/result", false),
            ("porchlight/other/command/trigger_doorbell", false),
            ("porchlight/door/events/x", false),
            ("porchlight/door/command/", false),
            ("porchlight/door/command/trigger_doorbell", true),
            (
                &format!("porchlight/door/command/{}", "x".repeat(65_000)),
                false,
            ),
        ] {
            assert_eq!(parse(P, topic, b"{}", retained), Parsed::Ignore, "{topic}");
        }
    }

    #[test]
    fn bad_messages_are_refused_with_a_code() {
        let code = |topic: &str, payload: &[u8]| match parse(P, topic, payload, false) {
            Parsed::Refuse { refusal, .. } => refusal.code,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            code("porchlight/door/command/reboot", b"{\"request_id\":1}"),
            ErrorCode::UnknownCommand
        );
        assert_eq!(
            code("porchlight/door/command/trigger_doorbell", b"PRESS"),
            ErrorCode::BadJson
        );
        assert_eq!(
            code("porchlight/door/command/trigger_doorbell", b"[1]"),
            ErrorCode::BadJson
        );
        let deep = "[".repeat(10_000);
        assert_eq!(
            code("porchlight/door/command/trigger_doorbell", deep.as_bytes()),
            ErrorCode::BadJson
        );
        let huge = format!("{{\"x\":\"{}\"}}", "a".repeat(MAX_PAYLOAD));
        assert_eq!(
            code("porchlight/door/command/trigger_doorbell", huge.as_bytes()),
            ErrorCode::BadParams
        );
        match parse(
            P,
            "porchlight/door/command/reboot",
            b"{\"request_id\":1}",
            false,
        ) {
            Parsed::Refuse { name, refusal } => {
                assert_eq!(name, "reboot");
                assert_eq!(refusal.request_id.as_ref().map(RequestId::text), Some("1"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            result_topic(P, "reboot"),
            "porchlight/door/command/reboot/result"
        );
    }
}
