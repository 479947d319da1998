//! The `Control` handle: the few actions clients may ask of the sources (ring the doorbell,
//! set the default video quality, restart the camera). Connection threads hold this handle and
//! never reach into a source directly.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use serde_json::{Map, Value};

use crate::camera::Camera;
use crate::events::{EventDraft, EventHub, SharedEvent, StoreError};
use crate::video::Quality;

#[derive(Clone)]
pub struct Control {
    events: EventHub,
    /// The preset `/stream/video` uses when the URL names none.
    default_quality: Arc<AtomicU8>,
    /// The camera, for restarts and for the picture of the moment an event happens.
    camera: Camera,
}

/// Event type of a doorbell press.
pub const DOORBELL_PRESSED: &str = "doorbell_pressed";
/// Event type of motion reported by a producer (posted through the API).
pub const MOTION_DETECTED: &str = "motion_detected";

impl Control {
    pub fn new(events: EventHub, camera: Camera) -> Control {
        Control {
            events,
            default_quality: Arc::new(AtomicU8::new(Quality::Medium.index())),
            camera,
        }
    }

    pub fn default_quality(&self) -> Quality {
        Quality::from_index(self.default_quality.load(Ordering::Relaxed))
    }

    pub fn set_default_quality(&self, quality: Quality) {
        self.default_quality
            .store(quality.index(), Ordering::Relaxed);
        log::info!("default video quality set to {quality}");
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
