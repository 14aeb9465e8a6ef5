//! A webhook receiver on loopback for the business-event tests: records every request it gets
//! (headers and body, verified with the endpoint's key) and answers from a script.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// The key every test endpoint signs with, and its `whsec_` form.
pub const KEY: &[u8] = b"test-webhook-signing-key-32bytes";

pub fn secret() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(KEY)
    )
}

#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
    pub json: Value,
    /// What the receiver answered.
    pub status: u16,
}

impl Received {
    pub fn event_type(&self) -> &str {
        self.json["type"].as_str().unwrap_or("")
    }

    pub fn uid(&self) -> &str {
        self.json["data"]["uid"].as_str().unwrap_or("")
    }
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    /// Answers for the next requests, in order, then `default`.
    script: VecDeque<(u16, Duration)>,
    default: Option<(u16, Duration)>,
}

#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let url = format!("http://{}/hooks", listener.local_addr().expect("addr"));
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut reader = BufReader::new(read);
                    while let Some((headers, body)) = read_request(&mut reader).await {
                        let (status, delay) = {
                            let mut s = state.lock().expect("receiver");
                            s.script
                                .pop_front()
                                .or(s.default)
                                .unwrap_or((200, Duration::ZERO))
                        };
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        let header = |name: &str| {
                            headers
                                .iter()
                                .find(|(n, _)| n == name)
                                .map(|(_, v)| v.clone())
                                .unwrap_or_default()
                        };
                        let text = String::from_utf8_lossy(&body).into_owned();
                        state.lock().expect("receiver").received.push(Received {
                            id: header("webhook-id"),
                            timestamp: header("webhook-timestamp"),
                            signature: header("webhook-signature"),
                            json: serde_json::from_str(&text).unwrap_or(Value::Null),
                            body: text,
                            status,
                        });
                        let head = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                        if write.write_all(head.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        Receiver { url, state }
    }

    /// The next answers, in order (status, delay before answering).
    pub fn script(&self, answers: &[(u16, Duration)]) {
        self.state
            .lock()
            .expect("receiver")
            .script
            .extend(answers.iter().copied());
    }

    /// The answer once the script is used up.
    pub fn answer_with(&self, status: u16, delay: Duration) {
        self.state.lock().expect("receiver").default = Some((status, delay));
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().expect("receiver").received.clone()
    }

    /// The events it accepted (2xx), in arrival order.
    pub fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .collect()
    }

    /// (type, uid) of every accepted event.
    pub fn story(&self) -> Vec<(String, String)> {
        self.accepted()
            .iter()
            .map(|r| (r.event_type().to_owned(), r.uid().to_owned()))
            .collect()
    }

    /// The EVENT_ENDPOINTS value naming this receiver.
    pub fn endpoints(&self, types: Option<&[&str]>) -> String {
        let mut entry = serde_json::json!({ "url": self.url, "secret": secret() });
        if let Some(types) = types {
            entry["types"] = serde_json::json!(types);
        }
        serde_json::json!([entry]).to_string()
    }
}

async fn read_request<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
) -> Option<(Vec<(String, String)>, Vec<u8>)> {
    let mut line = String::new();
    if reader.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let mut headers = Vec::new();
    let mut length = 0usize;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).await.ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        let name = name.to_ascii_lowercase();
        if name == "content-length" {
            length = value.trim().parse().ok()?;
        }
        headers.push((name, value.trim().to_owned()));
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).await.ok()?;
    Some((headers, body))
}
