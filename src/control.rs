//! The `Control` handle: the few actions clients may ask of the sources (ring the doorbell,
//! set the default video quality, restart the camera).
//! Connection threads hold this handle and never reach into a source directly.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use serde_json::{Map, Value};

use crate::events::{EventDraft, EventHub, SharedEvent, StoreError};
use crate::video::Quality;

#[derive(Clone)]
pub struct Control {
    events: EventHub,
    /// The preset `/stream/video` uses when the URL names none.
    default_quality: Arc<AtomicU8>,
}

/// Event type of a doorbell press.
pub const DOORBELL_PRESSED: &str = "doorbell_pressed";

impl Control {
    pub fn new(events: EventHub) -> Control {
        Control {
            events,
            default_quality: Arc::new(AtomicU8::new(Quality::Medium.index())),
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

    /// Reopens the camera (its state goes through `starting`). `Err` says why it could not.
    ///
    /// SEAM: the live-video work (issue 4) replaces this body with the real restart of the
    /// capture thread. Until then no camera pipeline runs in this build, so a restart is a
    /// valid request that fails, and callers report that error as it is.
    pub fn restart_camera(&self) -> Result<(), String> {
        Err("no camera pipeline is running in this build".to_string())
    }

    /// A doorbell press from `source` (`"api"`, `"websocket"`, `"gpio"`), stored and fanned
    /// out like a real button press.
    pub fn trigger_doorbell(
        &self,
        source: &str,
        data: Map<String, Value>,
    ) -> Result<SharedEvent, StoreError> {
        let event = self
            .events
            .publish(EventDraft::new(DOORBELL_PRESSED, source, data))?;
        log::info!(
            "doorbell pressed (event {}, source {source})",
            event.event.id
        );
        Ok(event)
    }
}
