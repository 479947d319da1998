//! Running a `system_command`: role first, then params, then the real action through the
//! `Control` handle or the status sampler — the same effects as the HTTP routes, never a stand-in.
//! The MQTT bridge runs its `<prefix>/command/<name>` messages through here too.

use serde_json::{Value, json};

use super::protocol::{CommandName, ErrorCode};
use crate::auth::Role;
use crate::ctx::Ctx;
use crate::video::StreamQuality;

/// How a command ended.
#[derive(Debug)]
pub enum Outcome {
    /// It ran: `command_result` with `success: true` and this `result`.
    Done(Value),
    /// It was valid and permitted but failed while running: `success: false`.
    Failed(String),
    /// It could not be run at all: an `error` message with this code.
    Refused(ErrorCode, String),
}

/// What the params of a command say, once checked.
#[derive(Debug, PartialEq)]
enum Params {
    None,
    Quality(StreamQuality),
}

/// Checks `params` (absent, `null` or an object): `set_quality` needs `{"quality": Q}`, the
/// other commands take nothing, and a key a command does not know is refused rather than
/// silently ignored.
fn check_params(command: CommandName, params: &Value) -> Result<Params, String> {
    let empty = serde_json::Map::new();
    let object = match params {
        Value::Null => &empty,
        Value::Object(object) => object,
        _ => return Err("params must be a JSON object".into()),
    };
    let allowed: &[&str] = match command {
        CommandName::SetQuality => &["quality"],
        _ => &[],
    };
    if let Some(unknown) = object.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(match allowed {
            [] => format!("{} takes no params (got {unknown:?})", command.name()),
            _ => format!(
                "unknown param {unknown:?} for {} (allowed: {})",
                command.name(),
                allowed.join(", ")
            ),
        });
    }
    match command {
        CommandName::SetQuality => match object.get("quality") {
            // Whatever a stream URL may ask for, `auto` included.
            Some(Value::String(name)) => StreamQuality::parse(name)
                .map(Params::Quality)
                .ok_or_else(|| StreamQuality::choices(name)),
            Some(_) => Err("quality must be a string".into()),
            None => Err("set_quality needs params {\"quality\": Q}".into()),
        },
        _ => Ok(Params::None),
    }
}

/// Runs `command` for a WebSocket connection whose token grants `role`.
pub fn run(command: CommandName, params: &Value, role: Role, ctx: &Ctx) -> Outcome {
    run_from("websocket", command, params, role, ctx)
}

/// Runs `command` for a client of kind `source` (`websocket`, `mqtt`: the source an event it
/// causes is stored with) whose authority is `role`.
pub fn run_from(
    source: &str,
    command: CommandName,
    params: &Value,
    role: Role,
    ctx: &Ctx,
) -> Outcome {
    let required = command.required_role();
    if role < required {
        return Outcome::Refused(
            ErrorCode::Forbidden,
            format!(
                "{} needs the {required} role; this connection's token has {role}",
                command.name()
            ),
        );
    }
    let params = match check_params(command, params) {
        Ok(params) => params,
        Err(message) => return Outcome::Refused(ErrorCode::BadParams, message),
    };
    match (command, params) {
        (CommandName::TriggerDoorbell, _) => {
            match ctx.control.trigger_doorbell(source, Default::default()) {
                Ok(event) => Outcome::Done(event.event.to_json()),
                Err(err) => Outcome::Failed(err.to_string()),
            }
        }
        (CommandName::GetSystemStatus, _) => Outcome::Done(ctx.status.sample()),
        (CommandName::RestartPipeline, _) => match ctx.control.restart_camera() {
            // The camera part of the status, read after the restart began: `starting`.
            Ok(()) => Outcome::Done(json!({"camera": ctx.status.sample()["camera"]})),
            Err(error) => Outcome::Failed(error),
        },
        (CommandName::SetQuality, Params::Quality(quality)) => {
            ctx.control.set_default_quality(quality);
            Outcome::Done(json!({"quality": quality.name()}))
        }
        (CommandName::SetQuality, Params::None) => {
            unreachable!("check_params requires a quality for set_quality")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_checked_per_command() {
        use CommandName::*;
        assert_eq!(
            check_params(GetSystemStatus, &Value::Null),
            Ok(Params::None)
        );
        assert_eq!(check_params(TriggerDoorbell, &json!({})), Ok(Params::None));
        assert!(check_params(TriggerDoorbell, &json!({"x": 1})).is_err());
        assert!(check_params(RestartPipeline, &json!([])).is_err());
        assert_eq!(
            check_params(SetQuality, &json!({"quality": "high"})),
            Ok(Params::Quality(StreamQuality::Preset(
                crate::video::Quality::High
            )))
        );
        assert_eq!(
            check_params(SetQuality, &json!({"quality": "auto"})),
            Ok(Params::Quality(StreamQuality::Auto))
        );
        for bad in [
            Value::Null,
            json!({}),
            json!({"quality": "ultra"}),
            json!({"quality": 1}),
            json!({"quality": "low", "fps": 5}),
        ] {
            assert!(check_params(SetQuality, &bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn roles_follow_the_contract() {
        use CommandName::*;
        assert_eq!(GetSystemStatus.required_role(), Role::Viewer);
        assert_eq!(TriggerDoorbell.required_role(), Role::Control);
        assert_eq!(SetQuality.required_role(), Role::Control);
        assert_eq!(RestartPipeline.required_role(), Role::Admin);
    }
}
