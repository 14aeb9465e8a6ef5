//! A stand-in for the LiveKit server's Twirp API (RoomService), recording each call, and
//! webhook bodies signed the way LiveKit signs them.
//!
//! The stub checks every request's credentials as LiveKit does: an HS256 JWT signed with the
//! API secret, issued by the API key, within its validity, carrying the method's grant. A call
//! that fails a check is answered as LiveKit answers it (401 `unauthenticated`, 403
//! `permission_denied`) and recorded with the reason, so a test can tell a call LiveKit acted on
//! from one it refused.

use std::sync::{Arc, Mutex};

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use livekit_api::access_token::{AccessToken, VideoGrants};
use livekit_protocol as proto;
use prost::Message;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::common;

#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// e.g. `DeleteRoom`
    pub method: String,
    /// The room a DeleteRoom or RemoveParticipant named, or the names a ListRooms asked about.
    pub rooms: Vec<String>,
    /// The identity a RemoveParticipant named; empty for the other methods.
    pub identity: String,
    /// Why LiveKit would refuse this call's credentials; None when they pass.
    pub refused: Option<Refusal>,
}

/// A credentials check that failed, as LiveKit reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// 401 or 403
    pub status: u16,
    /// The Twirp code: `unauthenticated` or `permission_denied`.
    pub code: &'static str,
    pub reason: String,
}

struct State {
    key: String,
    secret: String,
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
    /// A stub that accepts tokens of the tests' pair (common::LIVEKIT_KEY and _SECRET).
    pub async fn start() -> LiveKitStub {
        Self::start_with(common::LIVEKIT_KEY, common::LIVEKIT_SECRET).await
    }

    /// A stub that accepts tokens of this API key and secret only.
    pub async fn start_with(key: &str, secret: &str) -> LiveKitStub {
        // jsonwebtoken needs its crypto backend before the first decode.
        call_shared::livekit::install_jwt_backend();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind stub");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(Mutex::new(State {
            key: key.to_owned(),
            secret: secret.to_owned(),
            calls: Vec::new(),
            alive: Vec::new(),
            failing: false,
        }));
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut reader = BufReader::new(read);
                    // Keep-alive: serve requests until the client closes.
                    while let Some((path, authorization, body)) = read_request(&mut reader).await {
                        let (status, content_type, reply) =
                            answer(&state, &path, authorization.as_deref(), &body);
                        let head = format!(
                            "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
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

    /// Every call that reached the stub, refused or not, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().expect("stub state").calls.clone()
    }

    /// The calls whose credentials LiveKit would have refused.
    pub fn refusals(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.refused.is_some())
            .collect()
    }

    /// The calls LiveKit would have acted on (credentials good), in order.
    pub fn accepted(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.refused.is_none())
            .collect()
    }

    /// Rooms of every accepted DeleteRoom, in order.
    pub fn deleted(&self) -> Vec<String> {
        self.accepted()
            .into_iter()
            .filter(|c| c.method == "DeleteRoom")
            .flat_map(|c| c.rooms)
            .collect()
    }

    /// (room, identity) of every accepted RemoveParticipant, in order.
    pub fn removed(&self) -> Vec<(String, String)> {
        self.accepted()
            .into_iter()
            .filter(|c| c.method == "RemoveParticipant")
            .map(|c| (c.rooms.concat(), c.identity))
            .collect()
    }

    /// The room names of every accepted ListRooms, one list a call.
    pub fn listed(&self) -> Vec<Vec<String>> {
        self.accepted()
            .into_iter()
            .filter(|c| c.method == "ListRooms")
            .map(|c| c.rooms)
            .collect()
    }

    /// At least one call of `method` reached the stub and no call at all was refused.
    pub fn assert_accepted(&self, method: &str) {
        let calls = self.calls();
        assert!(
            calls.iter().any(|c| c.method == method),
            "no {method} reached LiveKit: {calls:?}"
        );
        assert_eq!(self.refusals(), Vec::new(), "LiveKit refused calls");
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
) -> Option<(String, Option<String>, Vec<u8>)> {
    let mut line = String::new();
    if reader.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let path = line.split_whitespace().nth(1)?.to_owned();
    let mut length = 0usize;
    let mut authorization = None;
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
            "authorization" => authorization = Some(value.trim().to_owned()),
            _ => {}
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).await.ok()?;
    Some((path, authorization, body))
}

/// The claims of a LiveKit access token the RoomService checks look at (exp, nbf and iss are
/// checked by the decoder).
#[derive(Deserialize)]
struct ServerClaims {
    #[serde(default)]
    video: VideoGrants,
}

/// What LiveKit checks before it acts on a RoomService call: the token (signature with the API
/// secret, HS256, `iss` the API key, `exp` ahead, `nbf` not ahead), then the method's grant
/// (`room` the room a RemoveParticipant names).
fn check(
    key: &str,
    secret: &str,
    authorization: Option<&str>,
    method: &str,
    room: &str,
) -> Result<(), Refusal> {
    let unauthenticated = |reason: String| Refusal {
        status: 401,
        code: "unauthenticated",
        reason,
    };
    let token = authorization
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or_else(|| unauthenticated(format!("no bearer token: {authorization:?}")))?;
    let mut validation = Validation::new(Algorithm::HS256);
    // LiveKit compares the claims with its clock; the stub runs on the same one.
    validation.leeway = 0;
    validation.validate_nbf = true;
    validation.set_issuer(&[key]);
    validation.set_required_spec_claims(&["exp", "iss"]);
    let claims = jsonwebtoken::decode::<ServerClaims>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .map_err(|e| unauthenticated(format!("invalid token: {e}")))?
    .claims;
    let grants = claims.video;
    let granted = match method {
        "DeleteRoom" => grants.room_create,
        "ListRooms" => grants.room_list,
        "RemoveParticipant" => grants.room_admin && grants.room == room,
        _ => true,
    };
    if granted {
        Ok(())
    } else {
        Err(Refusal {
            status: 403,
            code: "permission_denied",
            reason: format!("{method} on {room:?} is not granted by {grants:?}"),
        })
    }
}

fn twirp_error(
    status: &'static str,
    code: &str,
    msg: &str,
) -> (&'static str, &'static str, Vec<u8>) {
    let body = serde_json::json!({ "code": code, "msg": msg }).to_string();
    (status, "application/json", body.into_bytes())
}

fn answer(
    state: &Mutex<State>,
    path: &str,
    authorization: Option<&str>,
    body: &[u8],
) -> (&'static str, &'static str, Vec<u8>) {
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
    let refused = check(
        &state.key,
        &state.secret,
        authorization,
        &method,
        &rooms.concat(),
    )
    .err();
    state.calls.push(Call {
        method: method.clone(),
        rooms: rooms.clone(),
        identity,
        refused: refused.clone(),
    });
    if state.failing {
        return twirp_error("503 Service Unavailable", "unavailable", "down");
    }
    if let Some(refusal) = refused {
        let status = if refusal.status == 401 {
            "401 Unauthorized"
        } else {
            "403 Forbidden"
        };
        return twirp_error(status, refusal.code, &refusal.reason);
    }
    let protobuf = "application/protobuf";
    match method.as_str() {
        "DeleteRoom" => (
            "200 OK",
            protobuf,
            proto::DeleteRoomResponse::default().encode_to_vec(),
        ),
        "RemoveParticipant" => (
            "200 OK",
            protobuf,
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
                protobuf,
                proto::ListRoomsResponse { rooms: open }.encode_to_vec(),
            )
        }
        _ => ("404 Not Found", protobuf, Vec::new()),
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
