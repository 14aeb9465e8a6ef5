//! A webhook receiver on loopback for the business-event tests: records every request it gets
//! (headers, body, and whether its signature verified with the endpoint's key, checked here
//! with the HMAC crate itself rather than the service's `sign`), answers from a script, and
//! notes two requests for one room in flight at once. It answers as scripted whatever the
//! signature, so a bad one shows in [`Receiver::assert_all_verified`] rather than as a
//! refusal the service would stop retrying on.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::Notify;

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
    /// The signature is Standard Webhooks' over exactly this id, timestamp and body with
    /// [`KEY`], and the timestamp is within the verifiers' 5 minutes of now.
    pub verified: bool,
}

impl Received {
    pub fn event_type(&self) -> &str {
        self.json["type"].as_str().unwrap_or("")
    }

    pub fn uid(&self) -> &str {
        self.json["data"]["uid"].as_str().unwrap_or("")
    }
}

/// A request of one room held unanswered until the test releases it.
#[derive(Clone, Default)]
pub struct Hold {
    reached: Arc<Notify>,
    release: Arc<Notify>,
}

impl Hold {
    /// Waits until the held request has arrived.
    pub async fn reached(&self) {
        self.reached.notified().await;
    }

    /// Lets the held request be answered.
    pub fn release(&self) {
        self.release.notify_one();
    }
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    /// Answers for the next requests, in order, then `default`.
    script: VecDeque<(u16, Duration)>,
    default: Option<(u16, Duration)>,
    /// Requests in flight per room, and every arrival that found another one of its room
    /// still in flight: (room, seq).
    in_flight: HashMap<String, usize>,
    overlaps: Vec<(String, i64)>,
    /// (room, seq) to hold the next time it arrives.
    holds: Vec<(String, i64, Hold)>,
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
                        let header = |name: &str| {
                            headers
                                .iter()
                                .find(|(n, _)| n == name)
                                .map(|(_, v)| v.clone())
                                .unwrap_or_default()
                        };
                        let text = String::from_utf8_lossy(&body).into_owned();
                        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                        let (id, timestamp) = (header("webhook-id"), header("webhook-timestamp"));
                        let signature = header("webhook-signature");
                        let verified = verifies(&id, &timestamp, &signature, &body)
                            && json["id"].as_str() == Some(id.as_str());
                        let room = json["room_name"].as_str().unwrap_or("").to_owned();
                        let seq = json["seq"].as_i64().unwrap_or(0);
                        let (status, delay, hold) = {
                            let mut s = state.lock().expect("receiver");
                            let (status, delay) = s
                                .script
                                .pop_front()
                                .or(s.default)
                                .unwrap_or((200, Duration::ZERO));
                            let in_flight = s.in_flight.entry(room.clone()).or_default();
                            *in_flight += 1;
                            if *in_flight > 1 {
                                s.overlaps.push((room.clone(), seq));
                            }
                            let held = s.holds.iter().position(|(r, q, _)| *r == room && *q == seq);
                            let hold = held.map(|i| s.holds.remove(i).2);
                            (status, delay, hold)
                        };
                        if let Some(hold) = hold {
                            hold.reached.notify_one();
                            hold.release.notified().await;
                        }
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        {
                            let mut s = state.lock().expect("receiver");
                            s.received.push(Received {
                                id,
                                timestamp,
                                signature,
                                json,
                                body: text,
                                status,
                                verified,
                            });
                        }
                        let head = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                        let written = write.write_all(head.as_bytes()).await;
                        if let Some(n) = state.lock().expect("receiver").in_flight.get_mut(&room) {
                            *n -= 1;
                        }
                        if written.is_err() {
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

    /// Every request that arrived, answered or not, failed attempts and retries included,
    /// carried a valid signature over its exact body.
    #[track_caller]
    pub fn assert_all_verified(&self) {
        let all = self.received();
        assert!(!all.is_empty(), "nothing arrived");
        let bad: Vec<(String, String, String)> = all
            .iter()
            .filter(|r| !r.verified)
            .map(|r| (r.id.clone(), r.timestamp.clone(), r.signature.clone()))
            .collect();
        assert!(
            bad.is_empty(),
            "{} of {} arrivals failed verification: {bad:?}",
            bad.len(),
            all.len()
        );
    }

    /// (room, seq) of every request that arrived while another one of its room was in flight.
    pub fn overlaps(&self) -> Vec<(String, i64)> {
        self.state.lock().expect("receiver").overlaps.clone()
    }

    /// Requests being answered right now.
    pub fn in_flight(&self) -> usize {
        self.state
            .lock()
            .expect("receiver")
            .in_flight
            .values()
            .sum()
    }

    /// Holds the next request for event `seq` of `room` unanswered until released.
    pub fn hold(&self, room: &str, seq: i64) -> Hold {
        let hold = Hold::default();
        self.state
            .lock()
            .expect("receiver")
            .holds
            .push((room.to_owned(), seq, hold.clone()));
        hold
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

/// Standard Webhooks verification: one of the space-separated `v1,` signatures is the base64
/// HMAC-SHA256 of `{id}.{timestamp}.{body}` under [`KEY`], and the timestamp is at most 5
/// minutes from now.
fn verifies(id: &str, timestamp: &str, signature: &str, body: &[u8]) -> bool {
    let Ok(ts) = timestamp.parse::<i64>() else {
        return false;
    };
    if (chrono::Utc::now().timestamp() - ts).abs() > 300 {
        return false;
    }
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(KEY) else {
        return false;
    };
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    signature
        .split(' ')
        .any(|s| s.strip_prefix("v1,") == Some(expected.as_str()))
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
