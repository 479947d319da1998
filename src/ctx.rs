//! [`Ctx`]: what every connection thread (and the MQTT bridge, which answers the same
//! commands) can reach. `app` builds it once the sources run; http and mqtt only read it, so
//! neither imports `app`.

use std::sync::Arc;

use crate::camera::Camera;
use crate::clips::Recorder;
use crate::control::Control;
use crate::events::EventHub;
use crate::http::settings::HttpSettings;
use crate::http::throttle::AuthThrottle;
use crate::metrics::Metrics;
use crate::outbound::Outbound;
use crate::shutdown::Shutdown;
use crate::status::StatusHub;
use crate::video::Video;

/// The HTTP settings, the hubs, and the Control handle.
pub struct Ctx {
    /// The config keys http reads, converted once.
    pub http: HttpSettings,
    pub events: EventHub,
    pub status: StatusHub,
    pub control: Control,
    pub metrics: Arc<Metrics>,
    pub shutdown: Shutdown,
    /// The capture thread's handle: live frames, state, snapshots.
    pub camera: Camera,
    /// The shared per-preset encoders.
    pub video: Video,
    /// Failed authentications per client address (429 after too many).
    pub auth_throttle: AuthThrottle,
    /// The clip recorder, when clips are recorded.
    pub clips: Option<Recorder>,
    /// The MQTT bridge and webhooks, for status and metrics.
    pub outbound: Outbound,
}
