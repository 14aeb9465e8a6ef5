//! Idempotency-Key on the API's POSTs (draft-ietf-httpapi-idempotency-key-header-09): a
//! client that retries after a lost response gets the first answer again, never a second
//! change or a false refusal.
//!
//! [`keyed`] wraps a POST's work once its caller, input and permissions are checked:
//! - no key: the work runs as it always did;
//! - a key (an RFC 8941 sf-string, 1-255 characters) is scoped to the caller's role and sub
//!   and the route, and claimed in flight with a fingerprint of the request (method, route,
//!   decoded path, the body's canonical JSON) before the work;
//! - the work stores its answer with the key in its change's transaction (a [`Seal`]), so an
//!   answer is on record exactly when the change committed;
//! - a refusal the call's state decided (409, 404, 403 from the transaction) changed nothing
//!   and is stored right after, for retries to hear again; any other failure (rate limit,
//!   outage) gives the key back so a retry can succeed;
//! - a retry with the same fingerprint replays the stored status and body
//!   (`Idempotent-Replayed: true`); another fingerprint is 422 idempotency_key_reused; a retry
//!   while the first is in flight is 409 idempotency_key_in_use with Retry-After.
//!
//! Keys live IDEMPOTENCY_KEY_TTL_SECONDS (24 h by default); the sweeper purges them.

use std::time::Duration;

use lambda_http::Request;
use percent_encoding::percent_decode_str;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::app::App;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::http::{Success, header, render};
use crate::i18n::Lang;
use crate::model::Now;
use crate::store::{Claimed, KeyClaim, KeyTimes, Seal, StoredReply};

pub const HEADER: &str = "idempotency-key";
/// Set on an answer that was replayed from the record.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
pub const MAX_KEY_CHARS: usize = 255;
/// How long a request may hold its key in flight before another request may take it over:
/// longer than any function's timeout (10 s in template.yaml), so only a request that is
/// gone (crashed, timed out) ever loses its key.
pub const LEASE: Duration = Duration::from_secs(30);

/// A request's key, if it sent one: what the work seals its answer with.
pub struct Keyed {
    claim: Option<KeyClaim>,
    lang: Lang,
}

impl Keyed {
    /// What the change's transaction needs to store the answer beside the change; None
    /// without a key.
    pub fn seal<'s, R>(
        &'s self,
        reply: &'s (dyn Fn(&R) -> Result<StoredReply, ApiError> + Sync),
    ) -> Option<Seal<'s, R>> {
        self.claim.as_ref().map(|claim| Seal { claim, reply })
    }

    /// A success as the client will read it (in the request's language).
    pub fn render(&self, success: Result<Success, ApiError>) -> Result<StoredReply, ApiError> {
        render(success?, self.lang)
    }

    /// The answer: the one sealed with the change when there is one, else built now.
    pub fn answer(
        &self,
        sealed: Option<StoredReply>,
        build: impl FnOnce() -> Result<Success, ApiError>,
    ) -> Result<Success, ApiError> {
        match sealed {
            Some(reply) => Ok(Success::Stored {
                reply,
                replayed: false,
            }),
            None => build(),
        }
    }
}

/// Runs a POST's `work` under the request's Idempotency-Key (see the module's notes). Call it
/// after the caller, the input and the caller's rights are checked: those refusals (401, 400,
/// 403) never touch a key.
pub async fn keyed(
    app: &App,
    req: &Request,
    route: &'static str,
    caller: &Caller,
    work: impl AsyncFnOnce(&Keyed) -> Result<Success, ApiError>,
) -> Result<Success, ApiError> {
    let lang = Lang::from_accept_language(header(req, "accept-language"));
    // The work (a call transaction and what follows it) is a large future: on the heap, so
    // the handler's own future stays small wherever it is awaited.
    let Some(key) = key_of(req)? else {
        return Box::pin(work(&Keyed { claim: None, lang })).await;
    };
    let times = KeyTimes {
        ttl: app.config.idempotency_ttl,
        lease: LEASE,
    };
    let claimed = app
        .store
        .claim_key(
            &scope(caller, route, &key),
            &fingerprint(req, route),
            times,
            Now::current(),
        )
        .await?;
    let claim = match claimed {
        Claimed::Fresh(claim) => claim,
        Claimed::Replay(reply) => {
            return Ok(Success::Stored {
                reply,
                replayed: true,
            });
        }
        Claimed::InUse => return Err(ApiError::IdempotencyKeyInUse),
        Claimed::Reused => return Err(ApiError::IdempotencyKeyReused),
    };
    let keyed = Keyed {
        claim: Some(claim.clone()),
        lang,
    };
    match Box::pin(work(&keyed)).await {
        // Stored with the change, in its transaction.
        Ok(success @ Success::Stored { .. }) => Ok(success),
        // Work without a call transaction of its own (a redelivery): its answer is stored now.
        Ok(success) => {
            let reply = render(success, lang)?;
            keep(app, &claim, &reply).await;
            Ok(Success::Stored {
                reply,
                replayed: false,
            })
        }
        Err(err) if err.is_stored_for_retries() => {
            let reply = StoredReply {
                status: err.status(),
                body: err.body(lang).to_string(),
            };
            keep(app, &claim, &reply).await;
            Err(err)
        }
        Err(err) => {
            if let Err(release) = app.store.release_key(&claim).await {
                tracing::warn!(error = %release, "idempotency key stays in flight until its lease ends");
            }
            Err(err)
        }
    }
}

async fn keep(app: &App, claim: &KeyClaim, reply: &StoredReply) {
    match app.store.store_key_reply(claim, reply).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!("idempotency key was taken over before its answer was stored"),
        Err(err) => {
            tracing::warn!(error = %err, "idempotency answer not stored; the key frees when its lease ends")
        }
    }
}

/// The request's key: one Idempotency-Key header holding an sf-string of 1-255 characters
/// (printable ASCII, `\"` and `\\` escaped), without parameters. Anything else is 400.
pub fn key_of(req: &Request) -> Result<Option<String>, ApiError> {
    let mut values = req.headers().get_all(HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::invalid("send one Idempotency-Key header"));
    }
    let text = value
        .to_str()
        .map_err(|_| invalid_key())?
        .trim_matches([' ', '\t']);
    parse_sf_string(text).map(Some).ok_or_else(invalid_key)
}

fn invalid_key() -> ApiError {
    ApiError::invalid(
        "Idempotency-Key must be a quoted string of 1-255 printable ASCII characters, \
         e.g. \"8e03978e-40d5-43e8-bc93-6894a57f9324\"",
    )
}

/// An RFC 8941 sf-string (the whole text), unescaped; None when it is not one or is empty or
/// longer than MAX_KEY_CHARS.
fn parse_sf_string(text: &str) -> Option<String> {
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    let mut value = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                escaped @ ('"' | '\\') => value.push(escaped),
                _ => return None,
            },
            '"' => return None,
            ' '..='~' => value.push(c),
            _ => return None,
        }
    }
    (!value.is_empty() && value.len() <= MAX_KEY_CHARS).then_some(value)
}

/// Who may see the key's record: the caller's role and sub, the route and the key, hashed
/// (each part length-prefixed, so no two different triples meet).
fn scope(caller: &Caller, route: &str, key: &str) -> String {
    let (role, sub) = match caller {
        Caller::Service { sub } => ("service", sub.as_str()),
        Caller::User { uid } => ("user", uid.as_str()),
    };
    hash(&[role, sub, route, key])
}

/// What makes two requests the same: method, route, decoded path and the body's canonical
/// JSON (keys sorted, no spaces), or its bytes when it is not JSON.
fn fingerprint(req: &Request, route: &str) -> String {
    let path = percent_decode_str(req.uri().path()).decode_utf8_lossy();
    let bytes: &[u8] = req.body().as_ref();
    let body = match serde_json::from_slice::<Value>(bytes) {
        Ok(value) => {
            let mut text = String::new();
            canonical(&value, &mut text);
            text
        }
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    };
    hash(&[req.method().as_str(), route, &path, &body])
}

fn hash(parts: &[&str]) -> String {
    let mut digest = Sha256::new();
    for part in parts {
        digest.update((part.len() as u64).to_be_bytes());
        digest.update(part.as_bytes());
    }
    digest
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// JSON with object keys in sorted order at every level, whatever order the client sent.
fn canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*key).clone()).to_string());
                out.push(':');
                canonical(&map[key.as_str()], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lambda_http::Body;

    fn request(key: Option<&str>, path: &str, body: &str) -> Request {
        let mut builder = http::Request::builder().method("POST").uri(path);
        if let Some(key) = key {
            builder = builder.header(HEADER, key);
        }
        builder.body(Body::from(body)).expect("request")
    }

    #[test]
    fn keys_follow_the_sf_string_syntax() {
        let long = format!("\"{}\"", "k".repeat(MAX_KEY_CHARS));
        let too_long = format!("\"{}\"", "k".repeat(MAX_KEY_CHARS + 1));
        let cases: &[(&str, Option<&str>)] = &[
            ("\"abc-123\"", Some("abc-123")),
            (" \"a b\" ", Some("a b")),
            (r#""say \"hi\" \\ bye""#, Some(r#"say "hi" \ bye"#)),
            (&long, Some(long.trim_matches('"'))),
            ("abc", None),
            ("\"\"", None),
            ("\"abc", None),
            ("\"a\"b\"", None),
            (r#""a\n""#, None),
            ("\"caf\u{e9}\"", None),
            ("\"a\";p=1", None),
            (&too_long, None),
        ];
        for (text, want) in cases {
            let got = key_of(&request(Some(text), "/api/rooms", "{}"));
            match want {
                Some(want) => assert_eq!(got, Ok(Some((*want).to_owned())), "{text}"),
                None => assert_eq!(
                    got.map_err(|e| e.key()),
                    Err("invalid_parameters"),
                    "{text}"
                ),
            }
        }
        assert_eq!(key_of(&request(None, "/api/rooms", "{}")), Ok(None));
    }

    #[test]
    fn two_key_headers_are_invalid_parameters() {
        let mut req = request(Some("\"a\""), "/api/rooms", "{}");
        req.headers_mut()
            .append(HEADER, http::HeaderValue::from_static("\"b\""));
        assert_eq!(key_of(&req).map_err(|e| e.key()), Err("invalid_parameters"));
    }

    #[test]
    fn the_fingerprint_ignores_key_order_and_spacing_but_not_values_or_paths() {
        let route = "/api/rooms/{room_name}/end";
        let fp = |path: &str, body: &str| fingerprint(&request(None, path, body), route);
        let a = fp("/api/rooms/r1/end", r#"{"a":1,"b":[1,{"y":2,"x":3}]}"#);
        let b = fp(
            "/api/rooms/r1/end",
            r#"{ "b": [1, {"x":3, "y":2}], "a": 1 }"#,
        );
        assert_eq!(a, b);
        let other_value = fp("/api/rooms/r1/end", r#"{"a":2,"b":[1,{"y":2,"x":3}]}"#);
        let other_path = fp("/api/rooms/r2/end", r#"{"a":1,"b":[1,{"y":2,"x":3}]}"#);
        assert_ne!(a, other_value);
        assert_ne!(a, other_path);
        // The same name, percent-encoded or not.
        assert_eq!(
            fp("/api/rooms/caf%C3%A9/end", ""),
            fp("/api/rooms/%63af%C3%A9/end", ""),
        );
    }

    #[test]
    fn a_key_is_scoped_to_the_caller_and_route() {
        let alice = Caller::User {
            uid: "alice".into(),
        };
        let service = Caller::Service {
            sub: "alice".into(),
        };
        let base = scope(&alice, "/api/rooms", "k");
        assert_ne!(base, scope(&service, "/api/rooms", "k"));
        assert_ne!(
            base,
            scope(&Caller::User { uid: "bob".into() }, "/api/rooms", "k")
        );
        assert_ne!(base, scope(&alice, "/api/participants/join", "k"));
        assert_eq!(base, scope(&alice, "/api/rooms", "k"));
    }
}
