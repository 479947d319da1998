//! Events: the object, the durable store, and the hub that stores then fans them out.

pub mod event;
pub mod fanout;
pub mod hub;
pub mod replay;
pub mod store;

pub use event::{Event, EventDraft, PublishedEvent, SharedEvent};
pub use hub::EventHub;
pub use replay::{Cursor, Replayed};
pub use store::{EventQuery, Retention, Store, StoreError, StoreReader};
