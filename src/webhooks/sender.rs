//! The sender thread of one hook: takes events after its cursor from the store (then live),
//! skips the types the hook does not want, POSTs the others one at a time, in id order, and
//! moves its cursor only past an event the receiver accepted with a 2xx. A failure (no
//! answer, or any other status) is retried with backoff — 1 s doubling to 60 s, or the
//! receiver's `Retry-After` — for as long as it takes; meanwhile the hook holds one event and
//! one page of the store, never the backlog, and other hooks go on.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{RecvTimeoutError, select};

use super::client::{self, Answer};
use super::format::{self, Context};
use super::{HookStatus, WebhookSettings};
use crate::events::{EventHub, Feed};
use crate::shutdown::Shutdown;

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Live events queued for a hook before the hub drops it to catch up from the store.
const LIVE_QUEUE: usize = 64;
/// Events read from the store at a time.
const PAGE: u64 = 32;
const STACK: usize = 128 * 1024;

/// Where links in notifications point and which door this is, shared by every hook.
#[derive(Clone)]
pub struct Identity {
    pub public_url: Option<String>,
    pub device_id: String,
}

/// Starts hook number `index`'s thread; it runs until shutdown.
pub fn start(
    index: usize,
    hook: WebhookSettings,
    status: Arc<HookStatus>,
    identity: Identity,
    events: &EventHub,
    shutdown: Shutdown,
) -> std::io::Result<JoinHandle<()>> {
    let feed = Feed::new(events, LIVE_QUEUE, PAGE);
    std::thread::Builder::new()
        .name(format!("webhook-{index}"))
        .stack_size(STACK)
        .spawn(move || run(index, hook, status, identity, feed, shutdown))
}

fn run(
    index: usize,
    hook: WebhookSettings,
    status: Arc<HookStatus>,
    identity: Identity,
    mut feed: Feed,
    shutdown: Shutdown,
) {
    let stop = shutdown.signal();
    let context = Context {
        public_url: identity.public_url.as_deref(),
        device_id: &identity.device_id,
    };
    let name = format!("webhook {index} ({})", status.target);
    log::info!(
        "{name}: sending {} events after {} as {}",
        if hook.types.is_empty() {
            "all".to_string()
        } else {
            hook.types.join(", ")
        },
        status.cursor.position(),
        hook.format.name()
    );
    loop {
        let fed = match feed.next(status.cursor.position()) {
            Ok(Some(fed)) => fed,
            Ok(None) => {
                let live = feed.live();
                select! {
                    recv(live) -> event => feed.took(event),
                    recv(stop) -> _ => return,
                }
                continue;
            }
            Err(err) => {
                log::warn!("{name}: cannot read events from the store: {err}");
                if wait(&stop, FIRST_BACKOFF) {
                    return;
                }
                continue;
            }
        };
        let event = fed.event();
        if !hook.wants(&event.event_type) {
            status.cursor.advance(event.id);
            continue;
        }
        let request = format::build(hook.format, event, &fed.json(), &context);
        let mut backoff = FIRST_BACKOFF;
        loop {
            let failure = match client::post(&hook.url, &request.headers, &request.body) {
                Ok(Answer { status: code, .. }) if (200..300).contains(&code) => None,
                Ok(Answer {
                    status: code,
                    retry_after,
                }) => Some((format!("answered {code}"), retry_after)),
                Err(why) => Some((why, None)),
            };
            let Some((why, retry_after)) = failure else {
                status.cursor.advance(event.id);
                status.delivered.fetch_add(1, Ordering::Relaxed);
                if status.failing.swap(false, Ordering::Relaxed) {
                    log::info!("{name}: delivering again (event {})", event.id);
                }
                break;
            };
            status.failures.fetch_add(1, Ordering::Relaxed);
            // A `Retry-After` shorter than the first backoff (`0`, which some proxies send
            // with every 503) would make this a loop of connections as fast as the receiver
            // answers: the first backoff is the floor.
            let delay = retry_delay(retry_after, backoff);
            if status.failing.swap(true, Ordering::Relaxed) {
                log::debug!("{name}: event {} still not delivered: {why}", event.id);
            } else {
                log::warn!(
                    "{name}: event {} not delivered: {why}; retrying in {} s and with backoff \
                     up to {} s (later events wait, in order)",
                    event.id,
                    delay.as_secs(),
                    MAX_BACKOFF.as_secs()
                );
            }
            *status.last_error.lock().expect("hook status") = Some(why);
            // Nothing can be delivered meanwhile: let no live queue fill up for this hook.
            feed.pause();
            if wait(&stop, delay) {
                return;
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// How long to wait before trying again: the receiver's `Retry-After` if it gave one, else
/// our backoff; never less than [`FIRST_BACKOFF`].
fn retry_delay(retry_after: Option<Duration>, backoff: Duration) -> Duration {
    retry_after.unwrap_or(backoff).max(FIRST_BACKOFF)
}

/// Sleeps `delay` unless shutdown comes first (then `true`).
fn wait(stop: &crossbeam_channel::Receiver<()>, delay: Duration) -> bool {
    matches!(
        stop.recv_timeout(delay),
        Err(RecvTimeoutError::Disconnected)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_honoured_but_never_below_the_first_backoff() {
        let backoff = Duration::from_secs(8);
        assert_eq!(retry_delay(None, backoff), backoff);
        assert_eq!(
            retry_delay(Some(Duration::from_secs(30)), backoff),
            Duration::from_secs(30)
        );
        assert_eq!(retry_delay(Some(Duration::ZERO), backoff), FIRST_BACKOFF);
    }
}
