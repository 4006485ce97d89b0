//! A loopback forwarder in front of a real server that keeps every byte clients send, so a test
//! counts the requests that reach the server on the wire (the servers' own counters are shared
//! with every other test, and OpenBao refuses audit devices through its API).

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What each connection sent, in order of connection.
type Sent = Arc<Mutex<Vec<Vec<u8>>>>;

/// A forwarder on loopback to one server that keeps what clients send (test requests are
/// small); closed when dropped.
pub struct Door {
    /// The address to point clients at, `http://127.0.0.1:port`.
    pub url: String,
    sent: Sent,
    accept: tokio::task::JoinHandle<()>,
}

impl Door {
    /// Opens a door to `target` (`host:port`).
    pub async fn open(target: &str) -> anyhow::Result<Door> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let sent: Sent = Arc::default();
        let shared = Arc::clone(&sent);
        let target = target.to_string();
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let slot = {
                    let mut sent = lock(&shared);
                    sent.push(Vec::new());
                    sent.len() - 1
                };
                tokio::spawn(forward(inbound, target.clone(), Arc::clone(&shared), slot));
            }
        });
        Ok(Door { url, sent, accept })
    }

    /// How often `pattern` occurs in what was sent so far.
    pub fn count(&self, pattern: &str) -> usize {
        let sent = lock(&self.sent);
        let p = pattern.as_bytes();
        sent.iter()
            .map(|bytes| bytes.windows(p.len()).filter(|w| *w == p).count())
            .sum()
    }

    /// The bodies of the requests sent so far (framed by Content-Length).
    fn bodies(&self) -> Vec<String> {
        let sent = lock(&self.sent);
        let mut bodies = Vec::new();
        for bytes in sent.iter() {
            let mut rest: &[u8] = bytes;
            while let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&rest[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                let body_end = (end + 4 + length).min(rest.len());
                bodies.push(String::from_utf8_lossy(&rest[end + 4..body_end]).into_owned());
                rest = &rest[body_end..];
            }
        }
        bodies
    }

    /// Every value of form field `name` in the request bodies sent so far (URL-decoded).
    pub fn form_values(&self, name: &str) -> Vec<String> {
        let key = format!("{name}=");
        self.bodies()
            .iter()
            .flat_map(|body| {
                body.split('&')
                    .filter_map(|pair| pair.strip_prefix(&key).map(url_decode))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

impl Drop for Door {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// The sent bytes even after a panic while they were locked (a test failure elsewhere).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Forwards one connection to `target`, keeping what the client sends in `sent[slot]`.
async fn forward(inbound: TcpStream, target: String, sent: Sent, slot: usize) {
    let Ok(outbound) = TcpStream::connect(target).await else {
        return;
    };
    let (mut in_read, mut in_write) = inbound.into_split();
    let (mut out_read, mut out_write) = outbound.into_split();
    let upstream = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = match in_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Some(kept) = lock(&sent).get_mut(slot) {
                kept.extend_from_slice(&buffer[..n]);
            }
            if out_write.write_all(&buffer[..n]).await.is_err() {
                break;
            }
        }
        let _ = out_write.shutdown().await;
    };
    let downstream = async move {
        let _ = tokio::io::copy(&mut out_read, &mut in_write).await;
    };
    tokio::join!(upstream, downstream);
}

/// `text` with `%XX` escapes and `+` decoded, as in a form body.
fn url_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
