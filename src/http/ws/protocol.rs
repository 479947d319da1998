//! The WebSocket messages of the contract (`../shared/spec/API.md`, "WebSocket"): what a client
//! may send, parsed and validated here with no I/O (so the parser can be tested and fuzzed on
//! its own), and the text of what the server answers. `live_event` is not here: it is framed
//! once per event on the event writer thread (`PublishedEvent::ws_frame`).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::subscriptions::ALL;
use crate::auth::Role;
use crate::events::event::valid_event_type;
use crate::video::StreamQuality;

/// What the `connected` message says the server can do.
pub const CAPABILITIES: [&str; 6] = [
    "subscribe",
    "live_event",
    "replay",
    "system_command",
    "request_video_stream",
    "ping",
];

/// The `code` of an `error` message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    BadJson,
    UnknownType,
    UnknownCommand,
    Forbidden,
    BadParams,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::UnknownCommand => "unknown_command",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::BadParams => "bad_params",
        }
    }
}

/// A message's `request_id`, kept as the exact JSON text the client sent, so the answer echoes
/// it byte for byte: a 92-digit integer, `2^64+1`, `1.10` or `"\u0041"` come back as written,
/// not as the nearest float or a re-escaped string.
#[derive(Clone, Debug)]
pub struct RequestId(Box<RawValue>);

impl RequestId {
    /// `null`: what a command without a `request_id` is answered with.
    pub fn null() -> RequestId {
        RequestId(RawValue::NULL.to_owned())
    }

    /// The JSON text as sent.
    pub fn text(&self) -> &str {
        self.0.get()
    }

    /// An id that is only at hand as a parsed value: its JSON serialisation.
    pub fn from_value(value: &Value) -> RequestId {
        serde_json::value::to_raw_value(value).map_or_else(|_| RequestId::null(), RequestId)
    }
}

impl PartialEq for RequestId {
    fn eq(&self, other: &RequestId) -> bool {
        self.text() == other.text()
    }
}

impl Serialize for RequestId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

/// Only the `request_id` of a message, as raw text (other keys are skipped unparsed).
#[derive(Deserialize)]
struct RawRequestId {
    #[serde(default, deserialize_with = "present")]
    request_id: Option<Box<RawValue>>,
}

/// A key that is there, `null` included, is `Some`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// The `request_id` of `text` (already checked to be a JSON object within the depth limit,
/// naming no key twice), exactly as written; if the raw read fails anyway, the parsed value
/// re-serialised. MQTT command payloads are read through here too.
pub(crate) fn raw_request_id(text: &str, object: &Map<String, Value>) -> Option<RequestId> {
    match serde_json::from_str::<RawRequestId>(text) {
        Ok(raw) => raw.request_id.map(RequestId),
        Err(_) => object.get("request_id").map(RequestId::from_value),
    }
}

/// A message that cannot be acted on: answered with an `error` message, and the connection
/// stays open.
#[derive(Debug, PartialEq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
    /// The message's `request_id`, echoed when it had one.
    pub request_id: Option<RequestId>,
}

/// The `system_command`s there are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandName {
    TriggerDoorbell,
    GetSystemStatus,
    RestartPipeline,
    SetQuality,
}

impl CommandName {
    pub const ALL: [CommandName; 4] = [
        CommandName::TriggerDoorbell,
        CommandName::GetSystemStatus,
        CommandName::RestartPipeline,
        CommandName::SetQuality,
    ];

    pub fn parse(text: &str) -> Option<CommandName> {
        CommandName::ALL.into_iter().find(|c| c.name() == text)
    }

    pub fn name(self) -> &'static str {
        match self {
            CommandName::TriggerDoorbell => "trigger_doorbell",
            CommandName::GetSystemStatus => "get_system_status",
            CommandName::RestartPipeline => "restart_pipeline",
            CommandName::SetQuality => "set_quality",
        }
    }

    /// The same roles as the matching HTTP routes: ringing and changing quality are `control`
    /// (like `POST /api/trigger-doorbell`), restarting the camera interrupts everyone's video
    /// and is `admin`.
    pub fn required_role(self) -> Role {
        match self {
            CommandName::GetSystemStatus => Role::Viewer,
            CommandName::TriggerDoorbell | CommandName::SetQuality => Role::Control,
            CommandName::RestartPipeline => Role::Admin,
        }
    }
}

/// A valid client message.
#[derive(Debug, PartialEq)]
pub enum ClientMessage {
    /// Event types, each a valid type or `"*"`, without repeats, at least one.
    Subscribe(Vec<String>),
    Unsubscribe(Vec<String>),
    /// `params` is checked by the command itself, after the role (a forbidden command is
    /// `forbidden` whatever its params).
    SystemCommand {
        command: CommandName,
        params: Value,
        request_id: RequestId,
    },
    /// `None`: the current default quality.
    RequestVideoStream {
        quality: Option<StreamQuality>,
    },
    Ping,
}

/// Parses one text message.
pub fn parse(text: &str) -> Result<ClientMessage, Refusal> {
    parse_with_request_id(text).map(|(message, _)| message)
}

/// Parses one text message, with its `request_id` as sent (when it had one): the contract
/// echoes it on whatever answers the message (`subscribed`, `pong`, ...), not only on
/// `command_result` and `error`, so a client can match every answer to its request.
pub fn parse_with_request_id(text: &str) -> Result<(ClientMessage, Option<RequestId>), Refusal> {
    let refuse = |code, message: String, request_id: Option<&RequestId>| Refusal {
        code,
        message,
        request_id: request_id.cloned(),
    };
    let value = crate::json::parse_untrusted(text.as_bytes()).map_err(|e| {
        refuse(
            ErrorCode::BadJson,
            format!("the message is not valid JSON: {e}"),
            None,
        )
    })?;
    let Value::Object(mut object) = value else {
        return Err(refuse(
            ErrorCode::BadJson,
            "a message must be a JSON object with a \"type\"".into(),
            None,
        ));
    };
    let request_id = raw_request_id(text, &object);
    object.remove("request_id");
    let bad_params = |message: String| refuse(ErrorCode::BadParams, message, request_id.as_ref());
    let kind = match object.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        _ => {
            return Err(refuse(
                ErrorCode::UnknownType,
                "a message needs a string \"type\": subscribe, unsubscribe, system_command, \
                 request_video_stream or ping"
                    .into(),
                request_id.as_ref(),
            ));
        }
    };
    let message = match kind {
        "subscribe" => event_types(&object)
            .map(ClientMessage::Subscribe)
            .map_err(bad_params),
        "unsubscribe" => event_types(&object)
            .map(ClientMessage::Unsubscribe)
            .map_err(bad_params),
        "system_command" => {
            let command = match object.get("command") {
                Some(Value::String(name)) => CommandName::parse(name).ok_or_else(|| {
                    refuse(
                        ErrorCode::UnknownCommand,
                        format!(
                            "unknown command {name:?}; commands: {}",
                            CommandName::ALL.map(CommandName::name).join(", ")
                        ),
                        request_id.as_ref(),
                    )
                })?,
                _ => {
                    return Err(bad_params(
                        "system_command needs a string \"command\"".into(),
                    ));
                }
            };
            Ok(ClientMessage::SystemCommand {
                command,
                params: object.remove("params").unwrap_or(Value::Null),
                request_id: request_id.clone().unwrap_or_else(RequestId::null),
            })
        }
        "request_video_stream" => match object.get("quality") {
            None | Some(Value::Null) => Ok(ClientMessage::RequestVideoStream { quality: None }),
            Some(Value::String(name)) => match StreamQuality::parse(name) {
                Some(quality) => Ok(ClientMessage::RequestVideoStream {
                    quality: Some(quality),
                }),
                None => Err(bad_params(StreamQuality::choices(name))),
            },
            Some(_) => Err(bad_params("quality must be a string".into())),
        },
        "ping" => Ok(ClientMessage::Ping),
        other => Err(refuse(
            ErrorCode::UnknownType,
            format!(
                "unknown message type {other:?}; types: subscribe, unsubscribe, system_command, \
                 request_video_stream, ping"
            ),
            request_id.as_ref(),
        )),
    }?;
    Ok((message, request_id))
}

/// `event_types`: a non-empty array of event types or `"*"`, repeats dropped.
fn event_types(object: &Map<String, Value>) -> Result<Vec<String>, String> {
    let Some(Value::Array(items)) = object.get("event_types") else {
        return Err("event_types must be an array of event types, or [\"*\"] for all".into());
    };
    let mut types: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::String(t) if t == ALL || valid_event_type(t) => {
                if !types.contains(t) {
                    types.push(t.clone());
                }
            }
            _ => {
                return Err(format!(
                    "event type {} must be \"*\" or match [a-z0-9_]{{1,64}}",
                    crate::json::text(item)
                ));
            }
        }
    }
    if types.is_empty() {
        return Err("event_types must name at least one type, or \"*\" for all".into());
    }
    Ok(types)
}

// ---------------------------------------------------------------------------------------------
// Server → client
// ---------------------------------------------------------------------------------------------

/// A reply of `kind` with `fields` (a JSON object), carrying the `request_id` of the message it
/// answers when that message had one, exactly as it was sent.
fn reply(kind: &str, request_id: Option<&RequestId>, fields: &Value) -> String {
    #[derive(Serialize)]
    struct Reply<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        request_id: Option<&'a RequestId>,
        #[serde(flatten)]
        fields: &'a Value,
    }
    serde_json::to_string(&Reply {
        kind,
        request_id,
        fields,
    })
    .expect("a reply serialises")
}

pub fn connected(client_id: &str) -> String {
    crate::json::text(
        &json!({"type": "connected", "client_id": client_id, "server_capabilities": CAPABILITIES}),
    )
}

/// `subscribed` or `unsubscribed`, echoing the types the client named (and its `request_id`).
pub fn subscription_changed(
    kind: &str,
    types: &[String],
    request_id: Option<&RequestId>,
) -> String {
    reply(kind, request_id, &json!({"event_types": types}))
}

/// `command_result`: `Ok(result)` is a success, `Err(error)` a command that failed while
/// running.
pub fn command_result(
    command: CommandName,
    request_id: &RequestId,
    outcome: Result<Value, String>,
) -> String {
    /// The message, in the contract's key order, with the `request_id` as sent.
    #[derive(Serialize)]
    struct CommandResult<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        command: &'static str,
        request_id: &'a RequestId,
        success: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        result: Option<Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    }
    let (success, result, error) = match outcome {
        Ok(result) => (true, Some(result), None),
        Err(error) => (false, None, Some(error)),
    };
    serde_json::to_string(&CommandResult {
        kind: "command_result",
        command: command.name(),
        request_id,
        success,
        result,
        error,
    })
    .expect("a command result serialises")
}

pub fn error(refusal: &Refusal) -> String {
    #[derive(Serialize)]
    struct Error<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        code: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        request_id: Option<&'a RequestId>,
        message: &'a str,
    }
    serde_json::to_string(&Error {
        kind: "error",
        code: refusal.code.as_str(),
        request_id: refusal.request_id.as_ref(),
        message: &refusal.message,
    })
    .expect("an error message serialises")
}

/// Where this client's MJPEG stream is: `/stream/video/<client_id>?quality=Q`.
pub fn video_stream_ready(
    client_id: &str,
    quality: StreamQuality,
    request_id: Option<&RequestId>,
) -> String {
    let quality = quality.name();
    reply(
        "video_stream_ready",
        request_id,
        &json!({
            "stream_url": format!("/stream/video/{client_id}?quality={quality}"),
            "quality": quality,
        }),
    )
}

pub fn pong(timestamp: f64, request_id: Option<&RequestId>) -> String {
    reply("pong", request_id, &json!({"timestamp": timestamp}))
}

/// Like SSE's `event: gap`: events after `from` were deleted by retention before this client
/// saw them; `to` is the first one still stored.
pub fn gap(from: u64, to: u64) -> String {
    crate::json::text(&json!({"type": "gap", "from": from, "to": to}))
}

/// Like SSE's `event: reset`: `last_event_id` is beyond every id the store ever assigned (it
/// was wiped or replaced); live events after `newest_id` follow.
pub fn reset(last_event_id: u64, newest_id: u64) -> String {
    crate::json::text(
        &json!({"type": "reset", "last_event_id": last_event_id, "newest_id": newest_id}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::video::Quality;

    fn refused(text: &str) -> Refusal {
        parse(text).unwrap_err()
    }

    #[test]
    fn parses_every_message_of_the_contract() {
        assert_eq!(
            parse(r#"{"type":"subscribe","event_types":["doorbell_pressed","doorbell_pressed"]}"#),
            Ok(ClientMessage::Subscribe(vec!["doorbell_pressed".into()]))
        );
        assert_eq!(
            parse(r#"{"type":"unsubscribe","event_types":["*"]}"#),
            Ok(ClientMessage::Unsubscribe(vec!["*".into()]))
        );
        assert_eq!(
            parse(
                r#"{"type":"system_command","command":"set_quality","params":{"quality":"low"},"request_id":"r1"}"#
            ),
            Ok(ClientMessage::SystemCommand {
                command: CommandName::SetQuality,
                params: json!({"quality": "low"}),
                request_id: RequestId(RawValue::from_string("\"r1\"".into()).unwrap()),
            })
        );
        assert_eq!(
            parse(r#"{"type":"system_command","command":"get_system_status"}"#),
            Ok(ClientMessage::SystemCommand {
                command: CommandName::GetSystemStatus,
                params: Value::Null,
                request_id: RequestId::null(),
            })
        );
        assert_eq!(
            parse(r#"{"type":"request_video_stream","quality":"high"}"#),
            Ok(ClientMessage::RequestVideoStream {
                quality: Some(StreamQuality::Preset(Quality::High))
            })
        );
        assert_eq!(
            parse(r#"{"type":"request_video_stream","quality":"auto"}"#),
            Ok(ClientMessage::RequestVideoStream {
                quality: Some(StreamQuality::Auto)
            })
        );
        assert_eq!(
            parse(r#"{"type":"request_video_stream"}"#),
            Ok(ClientMessage::RequestVideoStream { quality: None })
        );
        assert_eq!(parse(r#"{"type":"ping"}"#), Ok(ClientMessage::Ping));
    }

    #[test]
    fn every_bad_message_gets_its_code() {
        for (text, code) in [
            ("not json", ErrorCode::BadJson),
            ("[1,2]", ErrorCode::BadJson),
            ("\"ping\"", ErrorCode::BadJson),
            (&"[".repeat(100_000), ErrorCode::BadJson),
            ("{}", ErrorCode::UnknownType),
            (r#"{"type":7}"#, ErrorCode::UnknownType),
            (r#"{"type":"launch"}"#, ErrorCode::UnknownType),
            (r#"{"type":"subscribe"}"#, ErrorCode::BadParams),
            (
                r#"{"type":"subscribe","event_types":[]}"#,
                ErrorCode::BadParams,
            ),
            (
                r#"{"type":"subscribe","event_types":"*"}"#,
                ErrorCode::BadParams,
            ),
            (
                r#"{"type":"subscribe","event_types":["Bad-Type"]}"#,
                ErrorCode::BadParams,
            ),
            (
                r#"{"type":"unsubscribe","event_types":[1]}"#,
                ErrorCode::BadParams,
            ),
            (r#"{"type":"system_command"}"#, ErrorCode::BadParams),
            (
                r#"{"type":"system_command","command":"reboot"}"#,
                ErrorCode::UnknownCommand,
            ),
            (
                r#"{"type":"request_video_stream","quality":"ultra"}"#,
                ErrorCode::BadParams,
            ),
            (
                r#"{"type":"request_video_stream","quality":3}"#,
                ErrorCode::BadParams,
            ),
        ] {
            assert_eq!(refused(text).code, code, "{}", &text[..text.len().min(60)]);
        }
    }

    #[test]
    fn a_refusal_echoes_the_request_id_it_was_given() {
        let refusal = refused(r#"{"type":"system_command","command":"reboot","request_id":42}"#);
        assert_eq!(refusal.request_id.as_ref().map(RequestId::text), Some("42"));
        let message: Value = serde_json::from_str(&error(&refusal)).unwrap();
        assert_eq!(message["type"], "error");
        assert_eq!(message["code"], "unknown_command");
        assert_eq!(message["request_id"], 42);
        assert!(message["message"].as_str().unwrap().contains("reboot"));
        let without: Value = serde_json::from_str(&error(&refused("nope"))).unwrap();
        assert!(without.get("request_id").is_none());
    }

    /// Found by fuzzing (ws_message): a huge numeric request_id came back one ulp off; a hostile
    /// probe then found a 92-digit integer echoed as `1e+92`. The id is echoed as its text.
    #[test]
    fn a_request_id_is_echoed_exactly_as_sent() {
        for id in [
            "4".repeat(91) + "3",
            "1".to_string() + &"0".repeat(91),
            "18446744073709551617".to_string(),
            "-0".to_string(),
            "1.10".to_string(),
            "1E+2".to_string(),
            r#""\u0041\/""#.to_string(),
            r#"{"b": [1, 2.50], "a": null}"#.to_string(),
            "null".to_string(),
        ] {
            let unknown = format!(r#"{{"type":"system_command","command":"x","request_id":{id}}}"#);
            let sent = error(&refused(&unknown));
            assert!(sent.contains(&format!(r#""request_id":{id},"#)), "{sent}");
            let text = format!(
                r#"{{"request_id" : {id} , "type":"system_command","command":"get_system_status"}}"#
            );
            let Ok(ClientMessage::SystemCommand { request_id, .. }) = parse(&text) else {
                panic!("{text}");
            };
            let answer = command_result(CommandName::GetSystemStatus, &request_id, Ok(json!(1)));
            assert!(
                answer.contains(&format!(r#""request_id":{id},"#)),
                "{answer}"
            );
        }
    }

    #[test]
    fn a_repeated_request_id_is_bad_json_and_echoes_neither() {
        // Which of two ids a client meant cannot be known: the message is refused whole.
        let refusal = refused(r#"{"type":"ping","request_id":1,"request_id":2}"#);
        assert_eq!(refusal.code, ErrorCode::BadJson);
        assert!(refusal.request_id.is_none());
    }

    #[test]
    fn command_results_have_the_contract_shape() {
        let r = RequestId(RawValue::from_string("\"r\"".into()).unwrap());
        let ok: Value = serde_json::from_str(&command_result(
            CommandName::SetQuality,
            &r,
            Ok(json!({"quality": "low"})),
        ))
        .unwrap();
        assert_eq!(
            ok,
            json!({"type": "command_result", "command": "set_quality", "request_id": "r",
                   "success": true, "result": {"quality": "low"}})
        );
        let failed: Value = serde_json::from_str(&command_result(
            CommandName::RestartPipeline,
            &RequestId::null(),
            Err("no camera".into()),
        ))
        .unwrap();
        assert_eq!(failed["success"], false);
        assert_eq!(failed["error"], "no camera");
        assert!(failed.get("result").is_none());
    }

    #[test]
    fn video_stream_url_names_the_client_and_quality() {
        let ready: Value = serde_json::from_str(&video_stream_ready(
            "phone-1",
            StreamQuality::Preset(Quality::Low),
            None,
        ))
        .unwrap();
        assert_eq!(ready["stream_url"], "/stream/video/phone-1?quality=low");
        assert_eq!(ready["quality"], "low");
        let ready: Value =
            serde_json::from_str(&video_stream_ready("phone-1", StreamQuality::Auto, None))
                .unwrap();
        assert_eq!(ready["stream_url"], "/stream/video/phone-1?quality=auto");
        assert_eq!(ready["quality"], "auto");
        assert!(ready.get("request_id").is_none());
    }

    #[test]
    fn every_answer_echoes_the_request_id_it_was_given() {
        for (text, kind) in [
            (r#"{"type":"ping","request_id":1.50}"#, "pong"),
            (
                r#"{"type":"subscribe","event_types":["*"],"request_id":1.50}"#,
                "subscribed",
            ),
            (
                r#"{"type":"request_video_stream","request_id":1.50}"#,
                "video_stream_ready",
            ),
        ] {
            let (message, request_id) = parse_with_request_id(text).unwrap();
            let id = request_id.as_ref();
            let answer = match message {
                ClientMessage::Ping => pong(1.0, id),
                ClientMessage::Subscribe(types) => subscription_changed("subscribed", &types, id),
                ClientMessage::RequestVideoStream { .. } => {
                    video_stream_ready("c", StreamQuality::Auto, id)
                }
                other => panic!("{other:?}"),
            };
            assert!(
                answer.starts_with(&format!(r#"{{"type":"{kind}","request_id":1.50,"#)),
                "{answer}"
            );
        }
        let (_, none) = parse_with_request_id(r#"{"type":"ping"}"#).unwrap();
        assert!(none.is_none());
        assert_eq!(pong(2.0, None), r#"{"type":"pong","timestamp":2.0}"#);
    }
}
