//! A request as raw bytes, through the same path as the server: the (patched) tiny_http head
//! parser on a real loopback socket, then our target parsing, routing and static-file path
//! checks. Any bytes give requests or a closed connection, never a panic, a hang or a path
//! outside the dashboard root.
#![no_main]

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use porchlight::http::query::Target;
use porchlight::http::router::resolve;
use porchlight::http::static_files::relative_path;
use tiny_http::{ClientConnection, HeadLimits};

fn listener() -> &'static TcpListener {
    static LISTENER: OnceLock<TcpListener> = OnceLock::new();
    LISTENER.get_or_init(|| TcpListener::bind("127.0.0.1:0").expect("bind loopback"))
}

fuzz_target!(|data: &[u8]| {
    if data.len() > 48 * 1024 {
        // Stays within loopback socket buffers so one thread can write, then read.
        return;
    }
    let listener = listener();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    server
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    client.write_all(data).unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let limits = HeadLimits {
        head_deadline: Duration::from_millis(500),
        ..HeadLimits::default()
    };
    for request in ClientConnection::from_tcp_stream(server, limits).take(64) {
        let target = Target::parse(request.url());
        let _ = target.get_u64("limit");
        let _ = resolve(request.method(), &target.path);
        if let Some(relative) = relative_path(&target.path) {
            assert!(
                !relative
                    .split('/')
                    .any(|s| s == ".." || s.is_empty() || s.starts_with('.')),
                "unsafe static path {relative:?} from {:?}",
                target.path
            );
        }
    }
});
