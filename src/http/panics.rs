//! What a panic in a connection thread does: it is logged once, with the request being
//! answered, and it ends that one connection. Everything the connection held is owned by a
//! guard whose `Drop` gives it back as the stack unwinds — the connection's registry entry and
//! address count (`server::Admission`), its stream slot (`metrics::ClientSlot`), its hub
//! subscription (`hub::Subscription`), its video registration (`video::Watch`), a
//! WebSocket's fan-out wake-up (`wake::WakeFd`) and upgraded stream (`ws::transport::Upgraded`,
//! which shuts the socket down) and the socket itself — so a handler bug costs one answer,
//! never a slot, a descriptor or a thread for good.
//!
//! The request is remembered in a thread-local while it is answered ([`RequestScope`]), and the
//! process-wide panic hook ([`install_hook`]) writes it into the one log line it makes. Only the
//! method and the path are kept: the query string may carry a token.

use std::cell::RefCell;
use std::net::SocketAddr;

thread_local! {
    static CURRENT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Marks the request this thread is answering until dropped.
pub struct RequestScope(());

impl RequestScope {
    /// `path` is the request target without its query.
    pub fn enter(method: &str, path: &str, peer: &SocketAddr) -> RequestScope {
        // Keep a hostile path from flooding the log line; the start of it says which route.
        let mut shown: String = path.chars().take(200).collect();
        if shown.len() < path.len() {
            shown.push('…');
        }
        CURRENT.with(|c| *c.borrow_mut() = Some(format!("{method} {shown:?} from {peer}")));
        RequestScope(())
    }
}

impl Drop for RequestScope {
    fn drop(&mut self) {
        // During unwinding the hook has already read it; clearing is still right.
        CURRENT.with(|c| {
            if let Ok(mut current) = c.try_borrow_mut() {
                *current = None;
            }
        });
    }
}

/// The request this thread is answering, if any.
pub fn current_request() -> Option<String> {
    CURRENT.with(|c| c.try_borrow().ok().and_then(|c| c.clone()))
}

/// The text of a panic payload.
pub fn message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Replaces the default panic hook (which writes several unformatted lines to stderr) with one
/// log line: in a connection thread it names the request; elsewhere, the thread.
pub fn install_hook() {
    std::panic::set_hook(Box::new(|info| {
        let what = message(info.payload());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        match current_request() {
            Some(request) => log::error!(
                "panic while answering {request}: {what}{at}; that connection is closed and \
                 everything it held released"
            ),
            None => {
                let thread = std::thread::current();
                let name = thread.name().unwrap_or("unnamed");
                log::error!("thread {name} panicked: {what}{at}");
            }
        }
    }));
}

/// Test instrumentation, compiled into debug builds only (the integration tests run the debug
/// binary): with `PORCHLIGHT_TEST_PANIC=POINT:PATH[,POINT:PATH...]` in the environment, the
/// handler for `PATH` panics at `POINT` — `route` before any handler runs, `stream` once a
/// stream holds its slot, subscription and socket. So the tests can prove what a real bug
/// would release. Release builds compile this to nothing.
#[inline]
pub fn injected(point: &str, path: &str) {
    #[cfg(debug_assertions)]
    {
        use std::sync::OnceLock;
        static WANTED: OnceLock<Option<String>> = OnceLock::new();
        let wanted = WANTED.get_or_init(|| std::env::var("PORCHLIGHT_TEST_PANIC").ok());
        if let Some(wanted) = wanted
            && wanted
                .split(',')
                .any(|one| one.split_once(':') == Some((point, path)))
        {
            panic!("injected test panic at {point} for {path}");
        }
    }
    #[cfg(not(debug_assertions))]
    let _ = (point, path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scope_names_the_request_until_dropped() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(current_request(), None);
        {
            let _scope = RequestScope::enter("GET", "/stream/video", &peer);
            assert_eq!(
                current_request().as_deref(),
                Some("GET \"/stream/video\" from 127.0.0.1:5000")
            );
        }
        assert_eq!(current_request(), None);
    }

    #[test]
    fn the_scope_is_cleared_by_a_panic() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let caught = std::panic::catch_unwind(|| {
            let _scope = RequestScope::enter("GET", "/x", &peer);
            panic!("boom");
        });
        assert_eq!(message(&*caught.unwrap_err()), "boom");
        assert_eq!(current_request(), None);
    }

    #[test]
    fn long_paths_are_cut() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let _scope = RequestScope::enter("GET", &"a".repeat(10_000), &peer);
        assert!(current_request().unwrap().len() < 300);
    }
}
