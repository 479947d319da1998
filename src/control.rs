//! The `Control` handle: the few actions clients may ask of the sources (ring the doorbell,
//! set the default video quality, restart the camera). Connection threads hold this handle and
//! never reach into a source directly.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use serde_json::{Map, Value};

use crate::camera::Camera;
use crate::events::{EventDraft, EventHub, SharedEvent, StoreError};
use crate::video::{Quality, StreamQuality};

#[derive(Clone)]
pub struct Control {
    events: EventHub,
    /// The quality `/stream/video` uses when the URL names none: a preset's index, or
    /// [`AUTO_INDEX`].
    default_quality: Arc<AtomicU8>,
    /// The camera, for restarts and for the picture of the moment an event happens.
    camera: Camera,
}

/// `default_quality`'s value for `auto` (no preset has this index).
const AUTO_INDEX: u8 = u8::MAX;

/// Event type of a doorbell press.
pub const DOORBELL_PRESSED: &str = "doorbell_pressed";
/// Event type of motion reported by a producer (posted through the API) or the detector.
pub use crate::motion::MOTION_DETECTED;

impl Control {
    pub fn new(events: EventHub, camera: Camera) -> Control {
        Control {
            events,
            default_quality: Arc::new(AtomicU8::new(Quality::Medium.index())),
            camera,
        }
    }

    pub fn default_quality(&self) -> StreamQuality {
        match self.default_quality.load(Ordering::Relaxed) {
            AUTO_INDEX => StreamQuality::Auto,
            index => StreamQuality::Preset(Quality::from_index(index)),
        }
    }

    /// Sets what `/stream/video` without `quality=` gets: a preset, or `auto` (each viewer's
    /// preset chosen from how it keeps up), as a stream URL may ask for.
    pub fn set_default_quality(&self, quality: StreamQuality) {
        let index = match quality {
            StreamQuality::Preset(preset) => preset.index(),
            StreamQuality::Auto => AUTO_INDEX,
        };
        self.default_quality.store(index, Ordering::Relaxed);
        log::info!("default video quality set to {}", quality.name());
    }

    /// Closes and reopens the camera. Returns once the capture thread took the request and the
    /// camera state is `starting` (it then goes on to `streaming` or `offline` by itself).
    pub fn restart_camera(&self) -> Result<(), String> {
        self.camera.restart()
    }

    /// Attaches the camera's current frame to an event that should show the moment it
    /// happened (a doorbell press, motion posted without a picture) and has no picture yet.
    /// The frame's bytes are shared, not copied. Nothing is attached while the camera shows
    /// no live video.
    pub fn with_moment(&self, mut draft: EventDraft) -> EventDraft {
        let wants_picture = matches!(
            draft.event_type.as_str(),
            DOORBELL_PRESSED | MOTION_DETECTED
        );
        if wants_picture && draft.snapshot.is_none() {
            draft.snapshot = self
                .camera
                .live_frame()
                .map(|frame| Arc::clone(&frame.jpeg));
        }
        draft
    }

    /// A doorbell press from `source` (`"api"`, `"websocket"`, `"gpio"`), stored and fanned
    /// out like a real button press, with the camera's frame of that moment.
    pub fn trigger_doorbell(
        &self,
        source: &str,
        data: Map<String, Value>,
    ) -> Result<SharedEvent, StoreError> {
        let draft = self.with_moment(EventDraft::new(DOORBELL_PRESSED, source, data));
        let event = self.events.publish(draft)?;
        log::info!(
            "doorbell pressed (event {}, source {source})",
            event.event.id
        );
        Ok(event)
    }
}
