//! A stand-in for the LiveKit server's Twirp API (RoomService), recording each call, and
//! webhook bodies signed the way LiveKit signs them.

use std::sync::{Arc, Mutex};

use base64::Engine;
use livekit_api::access_token::AccessToken;
use livekit_protocol as proto;
use prost::Message;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// e.g. `DeleteRoom`
    pub method: String,
    /// The room a DeleteRoom or RemoveParticipant named, or the names a ListRooms asked about.
    pub rooms: Vec<String>,
    /// The identity a RemoveParticipant named; empty for the other methods.
    pub identity: String,
    pub authorized: bool,
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    alive: Vec<String>,
    failing: bool,
}

/// Answers RoomService DeleteRoom, ListRooms and RemoveParticipant over HTTP/1.1 with protobuf
/// bodies; any other method is a bare 404.
#[derive(Clone)]
pub struct LiveKitStub {
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl LiveKitStub {
    pub async fn start() -> LiveKitStub {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind stub");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut reader = BufReader::new(read);
                    // Keep-alive: serve requests until the client closes.
                    while let Some((path, authorized, body)) = read_request(&mut reader).await {
                        let (status, reply) = answer(&state, &path, authorized, &body);
                        let head = format!(
                            "HTTP/1.1 {status}\r\ncontent-type: application/protobuf\r\ncontent-length: {}\r\n\r\n",
                            reply.len()
                        );
                        if write.write_all(head.as_bytes()).await.is_err()
                            || write.write_all(&reply).await.is_err()
                        {
                            break;
                        }
                    }
                });
            }
        });
        LiveKitStub { url, state }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().expect("stub state").calls.clone()
    }

    pub fn deleted(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == "DeleteRoom")
            .flat_map(|c| c.rooms)
            .collect()
    }

    /// (room, identity) of every RemoveParticipant, in order.
    pub fn removed(&self) -> Vec<(String, String)> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == "RemoveParticipant")
            .map(|c| (c.rooms.concat(), c.identity))
            .collect()
    }

    /// Rooms ListRooms reports as still open.
    pub fn set_alive(&self, rooms: &[&str]) {
        self.state.lock().expect("stub state").alive =
            rooms.iter().map(|r| r.to_string()).collect();
    }

    /// Make every call fail with a Twirp 503, as an unreachable LiveKit would.
    pub fn set_failing(&self, failing: bool) {
        self.state.lock().expect("stub state").failing = failing;
    }
}

async fn read_request<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
) -> Option<(String, bool, Vec<u8>)> {
    let mut line = String::new();
    if reader.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let path = line.split_whitespace().nth(1)?.to_owned();
    let mut length = 0usize;
    let mut authorized = false;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).await.ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().ok()?,
            "authorization" => authorized = value.trim().starts_with("Bearer "),
            _ => {}
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).await.ok()?;
    Some((path, authorized, body))
}

fn answer(
    state: &Mutex<State>,
    path: &str,
    authorized: bool,
    body: &[u8],
) -> (&'static str, Vec<u8>) {
    let mut state = state.lock().expect("stub state");
    let method = path.rsplit('/').next().unwrap_or_default().to_owned();
    let (rooms, identity) = match method.as_str() {
        "DeleteRoom" => proto::DeleteRoomRequest::decode(body)
            .map(|r| (vec![r.room], String::new()))
            .unwrap_or_default(),
        "ListRooms" => proto::ListRoomsRequest::decode(body)
            .map(|r| (r.names, String::new()))
            .unwrap_or_default(),
        "RemoveParticipant" => proto::RoomParticipantIdentity::decode(body)
            .map(|r| (vec![r.room], r.identity))
            .unwrap_or_default(),
        _ => Default::default(),
    };
    state.calls.push(Call {
        method: method.clone(),
        rooms: rooms.clone(),
        identity,
        authorized,
    });
    if state.failing {
        return (
            "503 Service Unavailable",
            br#"{"code":"unavailable","msg":"down"}"#.to_vec(),
        );
    }
    match method.as_str() {
        "DeleteRoom" => (
            "200 OK",
            proto::DeleteRoomResponse::default().encode_to_vec(),
        ),
        "RemoveParticipant" => (
            "200 OK",
            proto::RemoveParticipantResponse::default().encode_to_vec(),
        ),
        "ListRooms" => {
            let open = rooms
                .into_iter()
                .filter(|r| state.alive.contains(r))
                .map(|name| proto::Room {
                    name,
                    ..Default::default()
                })
                .collect();
            (
                "200 OK",
                proto::ListRoomsResponse { rooms: open }.encode_to_vec(),
            )
        }
        _ => ("404 Not Found", Vec::new()),
    }
}

/// A webhook body as LiveKit sends it (protobuf JSON) and its Authorization token, which
/// carries the body's sha256.
pub fn signed_webhook(
    key: &str,
    secret: &str,
    event: &str,
    room: &str,
    uid: Option<&str>,
    id: &str,
    created_at: i64,
) -> (String, String) {
    let event = proto::WebhookEvent {
        event: event.to_owned(),
        room: Some(proto::Room {
            name: room.to_owned(),
            ..Default::default()
        }),
        participant: uid.map(|identity| proto::ParticipantInfo {
            identity: identity.to_owned(),
            ..Default::default()
        }),
        id: id.to_owned(),
        created_at,
        ..Default::default()
    };
    let body = serde_json::to_string(&event).expect("event json");
    (body.clone(), sign(key, secret, &body))
}

pub fn sign(key: &str, secret: &str, body: &str) -> String {
    let digest = Sha256::digest(body.as_bytes());
    let sha = base64::engine::general_purpose::STANDARD.encode(digest);
    AccessToken::with_api_key(key, secret)
        .with_sha256(&sha)
        .to_jwt()
        .expect("sign")
}
