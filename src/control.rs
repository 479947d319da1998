//! The `Control` handle: the few actions clients may ask of the sources (ring the doorbell;
//! restart the camera and set the default quality arrive with the video work). Connection
//! threads hold this handle and never reach into a source directly.

use serde_json::{Map, Value};

use crate::events::{EventDraft, EventHub, SharedEvent, StoreError};

#[derive(Clone)]
pub struct Control {
    events: EventHub,
}

/// Event type of a doorbell press.
pub const DOORBELL_PRESSED: &str = "doorbell_pressed";

impl Control {
    pub fn new(events: EventHub) -> Control {
        Control { events }
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
