//! The HTTP side: routing on tiny_http, and the streaming responses, written straight to the
//! client's socket so that each MJPEG part and each event leaves at once.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tiny_http::{Header, Method, Request, Response, StatusCode};

use super::hub::Hub;

const PAGE: &str = include_str!("page.html");
const BOUNDARY: &str = "ferrite-frame";
/// How often waiting client threads look at the shutdown flag.
const POLL: Duration = Duration::from_millis(500);
/// An `/events` client with nothing to read gets a comment this often, so proxies and the
/// browser see a live connection.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// How long `/snapshot.jpg` waits for a frame when none is recent.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(3);

pub(crate) struct Server {
    http: tiny_http::Server,
    address: Option<SocketAddr>,
}

/// Binds `address` with a send timeout on the listening socket: Linux copies it to every
/// accepted socket, so a client that stops reading makes its writes fail after `write_timeout`
/// instead of blocking its thread for ever (tiny_http has no timeout of its own).
pub(crate) fn bind(address: SocketAddr, write_timeout: Duration) -> std::io::Result<Server> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_write_timeout(Some(write_timeout))?;
    socket.bind(&address.into())?;
    socket.listen(64)?;
    let listener: TcpListener = socket.into();
    let address = listener.local_addr().ok();
    let http = tiny_http::Server::from_listener(listener, None)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(Server { http, address })
}

impl Server {
    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        self.address
    }

    /// Answers requests until the hub shuts down.
    pub(crate) fn serve(self, hub: &Arc<Hub>) {
        while !hub.stopped() {
            match self.http.recv_timeout(POLL) {
                Ok(Some(request)) => route(request, hub),
                Ok(None) => {}
                Err(e) => {
                    log::warn!("web: {e}");
                    std::thread::sleep(POLL);
                }
            }
        }
    }
}

fn header(name: &str, value: &str) -> Header {
    // Only called with the fixed ASCII names and values of this file.
    Header::from_bytes(name.as_bytes(), value.as_bytes())
        .unwrap_or_else(|()| unreachable!("invalid header {name}"))
}

fn text(status: u16, body: &str) -> Response<std::io::Cursor<Vec<u8>>> {
    Response::from_string(format!("{body}\n"))
        .with_status_code(StatusCode(status))
        .with_header(header("Content-Type", "text/plain; charset=utf-8"))
        .with_header(header("Cache-Control", "no-store"))
}

fn respond<R: std::io::Read>(request: Request, response: Response<R>) {
    if let Err(e) = request.respond(response) {
        log::debug!("web: a client went away: {e}");
    }
}

/// The path and the query's `token`.
fn split_url(url: &str) -> (&str, Option<&str>) {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let token = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="));
    (path, token)
}

/// Compares in time independent of where the strings differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorised(request: &Request, query_token: Option<&str>, token: &str) -> bool {
    let bearer = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .and_then(|h| h.value.as_str().strip_prefix("Bearer "));
    [bearer, query_token]
        .into_iter()
        .flatten()
        .any(|given| same(given.trim().as_bytes(), token.as_bytes()))
}

fn route(request: Request, hub: &Arc<Hub>) {
    if !matches!(request.method(), Method::Get | Method::Head) {
        let response = text(405, "only GET").with_header(header("Allow", "GET, HEAD"));
        return respond(request, response);
    }
    let url = request.url().to_string();
    let (path, query_token) = split_url(&url);
    if let Some(token) = &hub.config.token {
        if !authorised(&request, query_token, token) {
            let response = text(
                401,
                "a token is required: ?token=... or Authorization: Bearer",
            )
            .with_header(header("WWW-Authenticate", "Bearer realm=\"ferrite\""));
            return respond(request, response);
        }
    }
    match path {
        "/" | "/index.html" => {
            let response = Response::from_string(PAGE)
                .with_header(header("Content-Type", "text/html; charset=utf-8"))
                .with_header(header("Cache-Control", "no-store"));
            respond(request, response)
        }
        "/status" => match serde_json::to_string_pretty(&hub.status()) {
            Ok(body) => {
                let response = Response::from_string(body + "\n")
                    .with_header(header("Content-Type", "application/json"))
                    .with_header(header("Cache-Control", "no-store"));
                respond(request, response)
            }
            Err(e) => respond(request, text(500, &format!("status: {e}"))),
        },
        "/snapshot.jpg" => snapshot(request, hub),
        "/stream.mjpg" | "/events" => {
            if hub.streams() >= hub.config.max_clients {
                let busy = format!(
                    "{} streaming clients already (max_clients); try again later",
                    hub.streams()
                );
                return respond(
                    request,
                    text(503, &busy).with_header(header("Retry-After", "5")),
                );
            }
            let hub = hub.clone();
            let stream = path == "/stream.mjpg";
            let spawned = std::thread::Builder::new()
                .name("web-client".into())
                .spawn(move || {
                    if stream {
                        mjpeg(request, &hub)
                    } else {
                        events(request, &hub)
                    }
                });
            if let Err(e) = spawned {
                log::warn!("web: cannot start a client thread: {e}");
            }
        }
        "/favicon.ico" => respond(request, Response::empty(StatusCode(204))),
        _ => respond(
            request,
            text(
                404,
                "not found: try /, /stream.mjpg, /snapshot.jpg, /events or /status",
            ),
        ),
    }
}

fn snapshot(request: Request, hub: &Hub) {
    let period = Duration::from_secs_f32(2.0 / hub.config.stream_fps);
    let jpeg = hub.recent_jpeg(period).or_else(|| {
        let _viewer = hub.viewer();
        let seen = hub.recent_jpeg(Duration::MAX).map_or(0, |(seq, _)| seq);
        hub.next_jpeg(seen, SNAPSHOT_WAIT)
    });
    match jpeg {
        Some((_, jpeg)) => {
            let response = Response::from_data(jpeg.as_slice())
                .with_header(header("Content-Type", "image/jpeg"))
                .with_header(header("Cache-Control", "no-store"));
            respond(request, response)
        }
        None => respond(
            request,
            text(503, "no frame yet: the camera has delivered nothing in 3 s")
                .with_header(header("Retry-After", "2")),
        ),
    }
}

fn head(content_type: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nCache-Control: no-store\r\n\
         X-Accel-Buffering: no\r\nConnection: close\r\n\r\n"
    )
}

/// `/stream.mjpg`: every encoded frame as one part, until the client or the server goes.
fn mjpeg(request: Request, hub: &Hub) {
    let _viewer = hub.viewer();
    let head_only = request.method() == &Method::Head;
    let mut out = request.into_writer();
    let content_type = format!("multipart/x-mixed-replace; boundary={BOUNDARY}");
    if out
        .write_all(head(&content_type).as_bytes())
        .and_then(|()| out.flush())
        .is_err()
        || head_only
    {
        return;
    }
    let mut seen = 0;
    while !hub.stopped() {
        let Some((seq, jpeg)) = hub.next_jpeg(seen, POLL) else {
            continue;
        };
        seen = seq;
        let part = format!(
            "--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
            jpeg.len()
        );
        let sent = out
            .write_all(part.as_bytes())
            .and_then(|()| out.write_all(&jpeg))
            .and_then(|()| out.write_all(b"\r\n"))
            .and_then(|()| out.flush());
        if let Err(e) = sent {
            log::debug!("web: stream client gone: {e}");
            return;
        }
    }
}

/// `/events`: each JSON line as one `data:` event.
fn events(request: Request, hub: &Hub) {
    let _listener = hub.listener();
    let head_only = request.method() == &Method::Head;
    let mut out = request.into_writer();
    let hello = format!(
        "{}retry: 2000\n: ferrite {}\n\n",
        head("text/event-stream"),
        env!("CARGO_PKG_VERSION")
    );
    if out
        .write_all(hello.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
        || head_only
    {
        return;
    }
    let mut cursor = hub.feed_end();
    let mut quiet_since = Instant::now();
    while !hub.stopped() {
        let (lines, next, skipped) = hub.lines_after(cursor, POLL);
        cursor = next;
        let mut chunk = String::new();
        if skipped > 0 {
            chunk += &format!(": {skipped} lines skipped (this client fell behind)\n\n");
        }
        for line in &lines {
            chunk += "data: ";
            chunk += line;
            chunk += "\n\n";
        }
        if chunk.is_empty() && quiet_since.elapsed() >= KEEPALIVE {
            chunk += ": keepalive\n\n";
        }
        if chunk.is_empty() {
            continue;
        }
        quiet_since = Instant::now();
        if let Err(e) = out.write_all(chunk.as_bytes()).and_then(|()| out.flush()) {
            log::debug!("web: events client gone: {e}");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_read_from_the_query_and_compared_exactly() {
        assert_eq!(
            split_url("/stream.mjpg?kiosk=1&token=abc"),
            ("/stream.mjpg", Some("abc"))
        );
        assert_eq!(split_url("/"), ("/", None));
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"abcd"));
        assert!(!same(b"", b"a"));
    }
}
