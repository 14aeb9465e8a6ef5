//! Delivering business events to the configured endpoints, signed as the Standard Webhooks
//! specification says, in order per room and endpoint, at least once.
//!
//! The first attempt is made by the invocation that made the change, after its commit and
//! before it answers, within a time budget per request; whatever that leaves undone (a slow or
//! failing endpoint, an endpoint paused after failures in a row, a crash) is picked up from
//! the stored state by the deliver-events function, which retries with exponential backoff and
//! jitter for the retry window, then gives up. Nothing depends on a timer in memory.
//!
//! Order: one room's events reach one endpoint through a stream with a cursor and a lease, so
//! only one deliverer sends them at a time, and a later event is sent only once every earlier
//! one owed to that endpoint was delivered or given up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use chrono::NaiveDateTime;
use hmac::{Hmac, Mac};
use serde::Serialize;

use crate::config::{Config, DeliverySettings, EventEndpoint};
use crate::error::ApiError;
use crate::model::{AttemptOutcome, EventType, Now};
use crate::store::{AttemptRecord, Claim, PendingEvent, Store, StoredEvent, StreamUpdate};

/// Events one stream sends per lease.
const EVENTS_PER_LEASE: i64 = 50;
/// A lease outlives its holder's work by this much, so it is never lost while in use.
const LEASE_MARGIN: Duration = Duration::from_secs(10);
/// Rooms the sweep delivers at once.
const SWEEP_PARALLEL: usize = 4;
/// Below this much budget left, an inline attempt is not started.
const MIN_INLINE_ATTEMPT: Duration = Duration::from_millis(20);

/// Where the attempt is made: inside an API request (bounded by its budget, and never for a
/// paused endpoint) or by the sweep of pending events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Inline,
    Sweep,
}

/// What one delivery pass did.
#[derive(Debug, Default, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DeliveryReport {
    pub delivered: usize,
    pub failed: usize,
    pub gave_up: usize,
    /// Streams another deliverer held, or that wait for a retry or a paused endpoint.
    pub deferred: usize,
}

impl DeliveryReport {
    pub fn add(&mut self, other: &DeliveryReport) {
        self.delivered += other.delivered;
        self.failed += other.failed;
        self.gave_up += other.gave_up;
        self.deferred += other.deferred;
    }
}

/// How one attempt went.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Delivered(u16),
    /// A network error, a timeout, 408, 429 or 5xx: tried again later.
    Retry {
        status: Option<u16>,
        error: String,
        /// Cut short by the request's budget rather than the attempt's own timeout.
        out_of_budget: bool,
    },
    /// Any other answer: the endpoint will not take this event.
    Refused(u16),
}

/// Where delivery reads the time (leases, backoff, the retry window, the records) and the
/// jitter of its retries: the system clock and random bytes, or, in tests, a clock they move,
/// so a schedule of 25 hours runs in a second. Attempts' own timeouts stay in real time.
#[derive(Clone)]
pub struct Clock {
    now: Arc<dyn Fn() -> Now + Send + Sync>,
    jitter: Arc<dyn Fn() -> f64 + Send + Sync>,
}

impl Clock {
    pub fn system() -> Self {
        Clock::new(Now::current, random_jitter)
    }

    /// `jitter` answers in 0..=1: 0 keeps a pause whole, 1 halves it.
    pub fn new(
        now: impl Fn() -> Now + Send + Sync + 'static,
        jitter: impl Fn() -> f64 + Send + Sync + 'static,
    ) -> Self {
        Clock {
            now: Arc::new(now),
            jitter: Arc::new(jitter),
        }
    }

    pub fn now(&self) -> Now {
        (self.now)()
    }

    fn jitter(&self) -> f64 {
        (self.jitter)().clamp(0.0, 1.0)
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

pub struct Deliverer {
    endpoints: Vec<EventEndpoint>,
    settings: DeliverySettings,
    client: Result<reqwest::Client, String>,
    clock: Clock,
}

impl Deliverer {
    pub fn new(config: &Config) -> Self {
        let settings = config.delivery;
        let client = crate::outbound::https_builder()
            .map_err(|e| e.to_string())
            .and_then(|builder| {
                builder
                    // A signed body goes to the configured URL only.
                    .redirect(reqwest::redirect::Policy::none())
                    .connect_timeout(settings.timeout)
                    .pool_idle_timeout(Duration::from_secs(55))
                    .user_agent(concat!("call-service/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| e.to_string())
            });
        Deliverer {
            endpoints: config.event_endpoints.clone(),
            settings,
            client,
            clock: Clock::system(),
        }
    }

    /// The same deliverer on another clock (tests).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn endpoints(&self) -> &[EventEndpoint] {
        &self.endpoints
    }

    pub fn settings(&self) -> &DeliverySettings {
        &self.settings
    }

    /// Delivers what the rooms owe, every endpoint in turn, within `budget` (inline) or the
    /// attempts' own timeouts (sweep). Store failures are logged: the events stay due and the
    /// sweep takes them up.
    pub async fn deliver(
        &self,
        store: &Store,
        rooms: &[String],
        mode: Mode,
        budget: Duration,
    ) -> DeliveryReport {
        let mut report = DeliveryReport::default();
        if self.endpoints.is_empty() {
            return report;
        }
        let deadline = Instant::now() + budget;
        if mode == Mode::Sweep {
            // Rooms are independent streams: a slow endpoint in one does not hold up the rest.
            for chunk in rooms.chunks(SWEEP_PARALLEL) {
                if Instant::now() >= deadline {
                    break;
                }
                let passes = chunk
                    .iter()
                    .map(|room| self.deliver_room_logged(store, room, mode, deadline));
                for room_report in futures_util::future::join_all(passes).await {
                    report.add(&room_report);
                }
            }
            return report;
        }
        for room in rooms {
            if Instant::now() + MIN_INLINE_ATTEMPT > deadline {
                break;
            }
            let room_report = self.deliver_room_logged(store, room, mode, deadline).await;
            report.add(&room_report);
        }
        report
    }

    async fn deliver_room_logged(
        &self,
        store: &Store,
        room: &str,
        mode: Mode,
        deadline: Instant,
    ) -> DeliveryReport {
        match self.deliver_room(store, room, mode, deadline).await {
            Ok(report) => report,
            Err(err) => {
                tracing::warn!(room_name = %room, error = %err, "event delivery stopped; the sweep retries");
                DeliveryReport::default()
            }
        }
    }

    async fn deliver_room(
        &self,
        store: &Store,
        room: &str,
        mode: Mode,
        deadline: Instant,
    ) -> Result<DeliveryReport, ApiError> {
        let mut report = DeliveryReport::default();
        let mut wake: Option<NaiveDateTime> = None;
        let mut all_done = true;
        if mode == Mode::Sweep {
            report.gave_up += self.give_up_unconfigured(store, room).await?;
        }
        for endpoint in &self.endpoints {
            let outcome = self
                .deliver_stream(store, endpoint, room, mode, deadline, &mut report)
                .await?;
            if let Some(at) = outcome {
                all_done = false;
                wake = Some(wake.map_or(at, |w| w.min(at)));
            }
        }
        if !all_done && let Some(at) = wake {
            store.reschedule_events(room, at).await?;
        }
        Ok(report)
    }

    /// Sends one room's events owed to one endpoint, in order. Returns when the sweep should
    /// look at this stream again, or None when nothing is left for it.
    async fn deliver_stream(
        &self,
        store: &Store,
        endpoint: &EventEndpoint,
        room: &str,
        mode: Mode,
        deadline: Instant,
        report: &mut DeliveryReport,
    ) -> Result<Option<NaiveDateTime>, ApiError> {
        let started = Instant::now();
        let now = self.clock.now();
        let lease_len = match mode {
            Mode::Inline => deadline.saturating_duration_since(started) + LEASE_MARGIN,
            Mode::Sweep => self.settings.timeout * 4 + LEASE_MARGIN,
        };
        let token = lease_token();
        let pause_after = (mode == Mode::Inline).then_some(self.settings.failures_before_pause);
        let claim = store
            .claim_stream(
                &endpoint.key,
                room,
                &token,
                now.at + to_chrono(lease_len),
                now,
                pause_after,
            )
            .await?;
        let stream = match claim {
            Claim::Claimed(stream) => stream,
            Claim::Refused { until } => {
                report.deferred += 1;
                // A paused endpoint inline: the sweep's grace already has the event due.
                return Ok(Some(until.unwrap_or(now.at + to_chrono(self.grace()))));
            }
        };
        let events = store
            .pending_events(room, stream.delivered_seq, EVENTS_PER_LEASE)
            .await?;
        let mut update = StreamUpdate {
            delivered_seq: stream.delivered_seq,
            attempts: stream.attempts,
            failing_since: stream.failing_since,
            next_attempt_at: now.at,
        };
        let mut finished = Vec::new();
        let mut records = Vec::new();
        let mut failed = false;
        let mut recovered = false;
        let mut left: Option<NaiveDateTime> = None;
        // The sweep stops sending before the lease could run out under it.
        let sweep_until = started + lease_len.saturating_sub(LEASE_MARGIN + self.settings.timeout);
        for event in &events {
            if !event.is_owed_to(&endpoint.key) {
                update.delivered_seq = event.seq;
                continue;
            }
            let timeout = match mode {
                Mode::Inline => {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    if remaining < MIN_INLINE_ATTEMPT {
                        left = Some(self.clock.now().at);
                        break;
                    }
                    remaining.min(self.settings.timeout)
                }
                Mode::Sweep => {
                    if Instant::now() > sweep_until {
                        left = Some(self.clock.now().at);
                        break;
                    }
                    self.settings.timeout
                }
            };
            let sent = Instant::now();
            let answer = self.attempt(endpoint, event, timeout).await;
            let at = self.clock.now();
            let mut record = AttemptRecord {
                event_id: event.event_id.clone(),
                endpoint: endpoint.key.clone(),
                url: endpoint.url.clone(),
                attempt: update.attempts + 1,
                outcome: AttemptOutcome::Delivered,
                http_status: None,
                latency_ms: sent.elapsed().as_millis() as i64,
                error: None,
                inline: mode == Mode::Inline,
                at: at.at,
            };
            let lag_ms = event
                .created_at
                .map(|committed| (at.at - committed).num_milliseconds().max(0) as f64);
            match answer {
                Answer::Delivered(status) => {
                    record_attempt(&endpoint.key, AttemptOutcome::Delivered, lag_ms);
                    record.http_status = Some(status.into());
                    recovered |= update.attempts > 0 || mode == Mode::Sweep;
                    report.delivered += 1;
                    update = finish(event.seq, at);
                    finished.push(event.id);
                    records.push(record);
                }
                Answer::Refused(status) => {
                    record_attempt(&endpoint.key, AttemptOutcome::GaveUp, None);
                    record.http_status = Some(status.into());
                    record.outcome = AttemptOutcome::GaveUp;
                    record.error = Some(format!("HTTP {status}: not retried"));
                    report.gave_up += 1;
                    update = finish(event.seq, at);
                    finished.push(event.id);
                    records.push(record);
                }
                Answer::Retry {
                    status,
                    error,
                    out_of_budget,
                } => {
                    failed = true;
                    record.http_status = status.map(i32::from);
                    record.error = Some(error);
                    let since = update.failing_since.unwrap_or(at.at);
                    let failures = update.attempts + 1;
                    let jitter = self.clock.jitter();
                    let Some(retry_at) =
                        next_attempt_at(&self.settings, since, at.at, failures, jitter)
                    else {
                        record_attempt(&endpoint.key, AttemptOutcome::GaveUp, None);
                        record.outcome = AttemptOutcome::GaveUp;
                        report.gave_up += 1;
                        update = finish(event.seq, at);
                        finished.push(event.id);
                        records.push(record);
                        continue;
                    };
                    record_attempt(&endpoint.key, AttemptOutcome::Failed, None);
                    record.outcome = AttemptOutcome::Failed;
                    report.failed += 1;
                    update.failing_since = Some(since);
                    update.next_attempt_at = if out_of_budget {
                        // Not this endpoint's fault alone: the sweep tries again at once,
                        // with the attempt's whole timeout.
                        at.at
                    } else {
                        update.attempts = failures;
                        retry_at
                    };
                    left = Some(update.next_attempt_at);
                    records.push(record);
                    break;
                }
            }
        }
        if left.is_none() && events.len() as i64 == EVENTS_PER_LEASE {
            // A full page: there may be more.
            left = Some(self.clock.now().at);
        }
        let kept = store
            .release_stream(&endpoint.key, room, &token, &update)
            .await?;
        store.record_attempts(&records).await?;
        if kept {
            store.events_finished(&finished).await?;
        } else {
            tracing::warn!(room_name = %room, endpoint = %endpoint.key, "delivery lease lost; another deliverer repeats these events");
        }
        if failed {
            store.endpoint_health(&endpoint.key, true, now).await?;
        } else if recovered {
            store.endpoint_health(&endpoint.key, false, now).await?;
        }
        Ok(left)
    }

    /// Sends a stored event again to every configured endpoint that wants its type. Where it is
    /// still pending, its stream's backoff ends and the stream delivers in order from its head;
    /// where it was delivered or given up, one more signed attempt is made now and recorded.
    pub async fn redeliver(
        &self,
        store: &Store,
        event: &StoredEvent,
    ) -> Result<DeliveryReport, ApiError> {
        let mut report = DeliveryReport::default();
        let Some(event_type) = EventType::parse(&event.event_type) else {
            return Ok(report);
        };
        let cursors = store.stream_cursors(&event.room_name).await?;
        let pending = event.pending();
        let mut in_order = false;
        let mut records = Vec::new();
        for endpoint in self.endpoints.iter().filter(|e| e.wants(event_type)) {
            let cursor = cursors
                .iter()
                .find(|(key, _)| *key == endpoint.key)
                .map_or(0, |(_, seq)| *seq);
            if pending.is_owed_to(&endpoint.key) && cursor < event.seq && event.owed > 0 {
                in_order = true;
                continue;
            }
            let sent = Instant::now();
            let answer = self
                .attempt(endpoint, &pending, self.settings.timeout)
                .await;
            let (outcome, http_status, error) = match answer {
                Answer::Delivered(status) => {
                    report.delivered += 1;
                    (AttemptOutcome::Delivered, Some(status), None)
                }
                Answer::Refused(status) => {
                    report.gave_up += 1;
                    (
                        AttemptOutcome::GaveUp,
                        Some(status),
                        Some(format!("HTTP {status}: not retried")),
                    )
                }
                Answer::Retry { status, error, .. } => {
                    report.failed += 1;
                    (AttemptOutcome::Failed, status, Some(error))
                }
            };
            // A repeat the operator asked for: counted as an attempt, never as given up.
            crate::metrics::count(
                &crate::metrics::EVENT_ATTEMPTS,
                &[endpoint.key.clone().into(), outcome.as_str().into()],
            );
            records.push(AttemptRecord {
                event_id: event.event_id.clone(),
                endpoint: endpoint.key.clone(),
                url: endpoint.url.clone(),
                attempt: 0,
                outcome,
                http_status: http_status.map(i32::from),
                latency_ms: sent.elapsed().as_millis() as i64,
                error,
                inline: false,
                at: self.clock.now().at,
            });
        }
        store.record_attempts(&records).await?;
        if in_order {
            store.retry_now(&event.room_name, self.clock.now()).await?;
            let rooms = [event.room_name.clone()];
            let streamed = self
                .deliver(store, &rooms, Mode::Sweep, self.settings.timeout)
                .await;
            report.add(&streamed);
        }
        Ok(report)
    }

    /// Events owed to an endpoint that is no longer configured are given up for it.
    async fn give_up_unconfigured(&self, store: &Store, room: &str) -> Result<usize, ApiError> {
        let events = store.pending_events(room, 0, EVENTS_PER_LEASE).await?;
        let now = self.clock.now();
        let mut records = Vec::new();
        let mut finished = Vec::new();
        for event in &events {
            for key in event.endpoints.split(',').filter(|k| !k.is_empty()) {
                if self.endpoints.iter().all(|e| e.key != key) {
                    record_attempt(key, AttemptOutcome::GaveUp, None);
                    finished.push(event.id);
                    records.push(AttemptRecord {
                        event_id: event.event_id.clone(),
                        endpoint: key.to_owned(),
                        url: String::new(),
                        attempt: 0,
                        outcome: AttemptOutcome::GaveUp,
                        http_status: None,
                        latency_ms: 0,
                        error: Some("the endpoint is no longer configured".into()),
                        inline: false,
                        at: now.at,
                    });
                }
            }
        }
        store.record_attempts(&records).await?;
        store.events_finished(&finished).await?;
        Ok(records.len())
    }

    /// One signed POST of an event's stored body.
    async fn attempt(
        &self,
        endpoint: &EventEndpoint,
        event: &PendingEvent,
        timeout: Duration,
    ) -> Answer {
        let client = match &self.client {
            Ok(client) => client,
            Err(reason) => {
                return Answer::Retry {
                    status: None,
                    error: format!("no HTTP client: {reason}"),
                    out_of_budget: false,
                };
            }
        };
        let timestamp = chrono::Utc::now().timestamp();
        let signature = sign(&endpoint.secret, &event.event_id, timestamp, &event.payload);
        let cut_by_budget = timeout < self.settings.timeout;
        let sent = client
            .post(&endpoint.url)
            .timeout(timeout)
            .header("content-type", "application/json")
            .header("webhook-id", &event.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(event.payload.clone())
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                // Read the answer so the connection can be kept for the next event.
                let _ = response.bytes().await;
                classify(status)
            }
            Err(err) => Answer::Retry {
                status: None,
                out_of_budget: err.is_timeout() && cut_by_budget,
                error: describe(&err, timeout),
            },
        }
    }

    /// How long an event waits for its first delivery before the sweep takes it over.
    pub fn grace(&self) -> Duration {
        grace(&self.settings)
    }
}

/// See [`Deliverer::grace`]: the inline budget and a second.
pub fn grace(settings: &DeliverySettings) -> Duration {
    settings.inline_budget + Duration::from_secs(1)
}

/// One attempt in the invocation's metrics: by endpoint key and outcome, the lag from commit
/// of a delivered event, and a given-up event. Endpoint keys are configuration (a handful),
/// never a room or a uid.
pub fn record_attempt(endpoint: &str, outcome: AttemptOutcome, lag_ms: Option<f64>) {
    use crate::metrics::{self, DELIVERY_LAG, EVENT_ATTEMPTS, EVENTS_GIVEN_UP};
    metrics::count(
        &EVENT_ATTEMPTS,
        &[endpoint.to_owned().into(), outcome.as_str().into()],
    );
    if let Some(lag) = lag_ms {
        metrics::record(&DELIVERY_LAG, &[endpoint.to_owned().into()], lag);
    }
    if outcome == AttemptOutcome::GaveUp {
        metrics::count(&EVENTS_GIVEN_UP, &[endpoint.to_owned().into()]);
    }
}

/// The stream after `seq` was finished (delivered or given up): its failures are over.
fn finish(seq: i64, at: Now) -> StreamUpdate {
    StreamUpdate {
        delivered_seq: seq,
        attempts: 0,
        failing_since: None,
        next_attempt_at: at.at,
    }
}

fn classify(status: u16) -> Answer {
    match status {
        200..=299 => Answer::Delivered(status),
        408 | 429 | 500..=599 => Answer::Retry {
            status: Some(status),
            error: format!("HTTP {status}"),
            out_of_budget: false,
        },
        _ => Answer::Refused(status),
    }
}

fn describe(err: &reqwest::Error, timeout: Duration) -> String {
    let what = if err.is_timeout() {
        format!("no answer within {} ms", timeout.as_millis())
    } else if err.is_connect() {
        "connection failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    // The error's source chain says why (refused, reset, DNS, TLS); never a header or body.
    let mut detail = String::new();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        detail = cause.to_string();
        source = cause.source();
    }
    let text = if detail.is_empty() {
        what
    } else {
        format!("{what}: {detail}")
    };
    text.chars().take(300).collect()
}

/// The pause before attempt `attempts + 1`: the base doubled per failure, capped, jittered
/// down by up to half so receivers coming back are not hit by every retry at once.
pub fn backoff(settings: &DeliverySettings, attempts: i32) -> Duration {
    backoff_with(settings, attempts, random_jitter())
}

/// [`backoff`] with a chosen `jitter` in 0..=1 (0: the whole pause, 1: half of it).
pub fn backoff_with(settings: &DeliverySettings, attempts: i32, jitter: f64) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(0)
        .min(30);
    let full = settings
        .retry_base
        .saturating_mul(1u32 << doublings)
        .min(settings.retry_max);
    full.mul_f64(1.0 - jitter.clamp(0.0, 1.0) / 2.0)
}

/// After the `failures`th failed attempt in a row of an event (made at `failed_at`, the first
/// at `failing_since`): when to try it again, or None once the retry window has passed since
/// the first failure (the event is then given up).
pub fn next_attempt_at(
    settings: &DeliverySettings,
    failing_since: NaiveDateTime,
    failed_at: NaiveDateTime,
    failures: i32,
    jitter: f64,
) -> Option<NaiveDateTime> {
    if failed_at - failing_since >= to_chrono(settings.retry_window) {
        return None;
    }
    Some(failed_at + to_chrono(backoff_with(settings, failures, jitter)))
}

/// A number in [0, 1] from the system's randomness (0.5 if there is none).
pub(crate) fn random_jitter() -> f64 {
    let mut bytes = [0u8; 4];
    match getrandom::fill(&mut bytes) {
        Ok(()) => f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX),
        Err(_) => 0.5,
    }
}

/// `webhook-signature` as the Standard Webhooks specification defines it: `v1,` and the
/// base64 HMAC-SHA256 of `{id}.{timestamp}.{body}` under the decoded `whsec_` key.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = match Hmac::<sha2::Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        // HMAC takes a key of any length; this cannot happen.
        Err(_) => return String::new(),
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let digest = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

fn lease_token() -> String {
    let mut bytes = [0u8; 12];
    if getrandom::fill(&mut bytes).is_err() {
        // Unique enough for a lease: the clock.
        return format!("t{}", chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0));
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_the_standard_webhooks_test_vector() {
        // From the specification's reference libraries.
        let key = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .expect("key");
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            sign(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn answers_are_classified_as_the_contract_says() {
        assert_eq!(classify(204), Answer::Delivered(204));
        for retried in [408, 429, 500, 502, 503] {
            assert!(
                matches!(classify(retried), Answer::Retry { .. }),
                "{retried}"
            );
        }
        for refused in [301, 400, 401, 404, 410, 422] {
            assert_eq!(classify(refused), Answer::Refused(refused));
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_below_it() {
        let settings = DeliverySettings::default();
        for (attempts, full) in [(1, 5), (2, 10), (3, 20), (10, 2560), (11, 3600), (40, 3600)] {
            let pause = backoff(&settings, attempts);
            let full = Duration::from_secs(full);
            assert!(pause <= full && pause >= full / 2, "{attempts}: {pause:?}");
        }
    }
}
