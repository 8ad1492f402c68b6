//! A registry server for tests: HTTP/1.1 on a loopback port, canned replies per path (a body, an
//! error status, or silence), requests counted. Plain threads, no runtime: a test serves the
//! registry it needs without the network.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the server answers on a path.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with this JSON body.
    Json(String),
    /// This status, with an empty JSON body.
    Status(u16),
    /// 200 with these bytes, of this content type.
    Bytes(Vec<u8>, &'static str),
    /// 200 with this JSON body and these headers too (e.g. a `Link` for pagination).
    JsonWithHeaders(String, Vec<(String, String)>),
    /// Takes the connection and never answers.
    Silent,
}

/// A tiny HTTP/1.1 server on loopback: a thread per connection, canned replies, hits counted.
/// It serves until the process ends.
#[derive(Debug)]
pub struct Server {
    port: u16,
    replies: Arc<Mutex<HashMap<String, Reply>>>,
    hits: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// A server on a free loopback port; it answers 404 until told otherwise.
    pub fn start() -> std::io::Result<Server> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let replies: Arc<Mutex<HashMap<String, Reply>>> = Arc::default();
        let hits: Arc<Mutex<Vec<String>>> = Arc::default();
        let (r, h) = (replies.clone(), hits.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let (replies, hits) = (r.clone(), h.clone());
                std::thread::spawn(move || {
                    let Ok(reading) = stream.try_clone() else { return };
                    let mut reader = BufReader::new(reading);
                    let mut request = String::new();
                    reader.read_line(&mut request).unwrap_or_default();
                    let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                        line.clear();
                    }
                    hits.lock().unwrap_or_else(|e| e.into_inner()).push(path.clone());
                    // The path with its query, else without it.
                    let reply = {
                        let replies = replies.lock().unwrap_or_else(|e| e.into_inner());
                        let bare = path.split('?').next().unwrap_or_default();
                        replies.get(&path).or_else(|| replies.get(bare)).cloned().unwrap_or(Reply::Status(404))
                    };
                    let mut extra = String::new();
                    let (status, body, content_type) = match reply {
                        Reply::Json(body) => (200, body.into_bytes(), "application/json"),
                        Reply::Status(status) => (status, b"{}".to_vec(), "application/json"),
                        Reply::Bytes(body, content_type) => (200, body, content_type),
                        Reply::JsonWithHeaders(body, headers) => {
                            extra = headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
                            (200, body.into_bytes(), "application/json")
                        }
                        Reply::Silent => {
                            std::thread::sleep(Duration::from_secs(5));
                            return;
                        }
                    };
                    let head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&body));
                });
            }
        });
        Ok(Server { port, replies, hits })
    }

    /// The address of `path` on it.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Answers `reply` on `path` from now on (a path without a query answers for any query).
    pub fn reply(&self, path: &str, reply: Reply) {
        self.replies.lock().unwrap_or_else(|e| e.into_inner()).insert(path.to_owned(), reply);
    }

    /// How many requests came for `path`.
    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap_or_else(|e| e.into_inner()).iter().filter(|p| *p == path).count()
    }
}
