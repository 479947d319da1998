//! Which event types one WebSocket client receives. A new connection receives nothing until it
//! subscribes; `"*"` means every type, and single types can then be unsubscribed again.

use std::collections::BTreeSet;

/// Every event type.
pub const ALL: &str = "*";

/// Most types one client may name at once (subscribed, or excluded from `"*"`): the set lives
/// as long as the connection, so a client must not be able to grow it without bound.
pub const MAX_TYPES: usize = 256;

#[derive(Clone, Debug, Default)]
pub struct Subscriptions {
    /// Subscribed to `"*"`: every type except `excluded`.
    all: bool,
    included: BTreeSet<String>,
    excluded: BTreeSet<String>,
}

impl Subscriptions {
    pub fn wants(&self, event_type: &str) -> bool {
        if self.all {
            !self.excluded.contains(event_type)
        } else {
            self.included.contains(event_type)
        }
    }

    /// Adds `types` (each `"*"` or a valid event type). Changes nothing and says why if the
    /// result would name more than [`MAX_TYPES`] types.
    pub fn subscribe(&mut self, types: &[String]) -> Result<(), String> {
        let mut next = self.clone();
        for event_type in types {
            if event_type == ALL {
                next = Subscriptions {
                    all: true,
                    ..Default::default()
                };
            } else if next.all {
                next.excluded.remove(event_type);
            } else {
                next.included.insert(event_type.clone());
            }
        }
        self.replace_if_small(next)
    }

    /// Removes `types`; `"*"` removes everything. Same limit as [`Subscriptions::subscribe`].
    pub fn unsubscribe(&mut self, types: &[String]) -> Result<(), String> {
        let mut next = self.clone();
        for event_type in types {
            if event_type == ALL {
                next = Subscriptions::default();
            } else if next.all {
                next.excluded.insert(event_type.clone());
            } else {
                next.included.remove(event_type);
            }
        }
        self.replace_if_small(next)
    }

    fn replace_if_small(&mut self, next: Subscriptions) -> Result<(), String> {
        if next.included.len() + next.excluded.len() > MAX_TYPES {
            return Err(format!(
                "a connection may name at most {MAX_TYPES} event types; use \"*\""
            ));
        }
        *self = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(types: &[&str]) -> Vec<String> {
        types.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn a_new_connection_wants_nothing() {
        assert!(!Subscriptions::default().wants("doorbell_pressed"));
    }

    #[test]
    fn single_types_add_and_remove() {
        let mut subs = Subscriptions::default();
        subs.subscribe(&list(&["doorbell_pressed", "motion_detected"]))
            .unwrap();
        assert!(subs.wants("doorbell_pressed") && subs.wants("motion_detected"));
        assert!(!subs.wants("camera_offline"));
        subs.unsubscribe(&list(&["motion_detected"])).unwrap();
        assert!(subs.wants("doorbell_pressed") && !subs.wants("motion_detected"));
    }

    #[test]
    fn star_means_every_type_minus_those_unsubscribed() {
        let mut subs = Subscriptions::default();
        subs.subscribe(&list(&["*"])).unwrap();
        assert!(subs.wants("anything_at_all"));
        subs.unsubscribe(&list(&["motion_detected"])).unwrap();
        assert!(!subs.wants("motion_detected") && subs.wants("doorbell_pressed"));
        subs.subscribe(&list(&["motion_detected"])).unwrap();
        assert!(subs.wants("motion_detected"));
        subs.unsubscribe(&list(&["*"])).unwrap();
        assert!(!subs.wants("doorbell_pressed"));
    }

    #[test]
    fn the_set_is_bounded_and_a_refused_change_changes_nothing() {
        let mut subs = Subscriptions::default();
        let many: Vec<String> = (0..MAX_TYPES).map(|i| format!("type_{i}")).collect();
        subs.subscribe(&many).unwrap();
        assert!(subs.subscribe(&list(&["one_too_many"])).is_err());
        assert!(!subs.wants("one_too_many") && subs.wants("type_0"));
        // "*" always fits.
        subs.subscribe(&list(&["*"])).unwrap();
        assert!(subs.wants("one_too_many"));
    }
}
