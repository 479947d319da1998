//! Events: the object, the durable store, and the hub that stores then fans them out.

pub(crate) mod builtin;
pub(crate) mod clip_rows;
pub(crate) mod delivery;
pub(crate) mod durable;
pub mod event;
pub(crate) mod fanout;
pub(crate) mod feed;
pub(crate) mod hub;
pub(crate) mod replay;
#[cfg(test)]
mod sql_texts;
pub(crate) mod store;

pub use clip_rows::{ClipLocation, ClipPlan, ClipUpdate};
pub use delivery::{DeliveryCursor, DeliveryCursors};
pub use event::{Event, EventDraft, PublishedEvent, SharedEvent};
pub use feed::{Fed, Feed};
pub use hub::EventHub;
pub use replay::{Cursor, ReplayError, Replayed};
pub use store::{EventQuery, Retention, Store, StoreError, StoreReader};

/// A fresh folder for a test's store (unique per process, test and second).
#[cfg(test)]
pub(crate) fn scratch_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "porchlight-{tag}-{}-{}",
        std::process::id(),
        crate::clock::unix_now()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
