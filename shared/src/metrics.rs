//! Metrics as CloudWatch Embedded Metric Format (EMF): JSON log lines that CloudWatch Logs turns
//! into metrics, so nothing on the request path calls a metrics API.
//!
//! Everything an invocation measures goes into one collector ([`scope`]), task-local to the
//! invocation, and is printed once when it ends: an API request prints one document; a sweep
//! prints one document per distinct set of dimension values it touched (EMF gives a dimension
//! one value per document: two end reasons in one sweep need two), never one per event.
//!
//! Dimensions are a closed set ([`Dim`]) and their values come from closed sets (function
//! names, status classes, error keys, end reasons, outcomes) or the configured endpoint keys:
//! never a uid or a room name. Each metric has one dimension set, so each metric-and-values
//! combination is one custom metric (the README prices them).
//!
//! Lines are printed only when logs are JSON (`AWS_LAMBDA_LOG_FORMAT=JSON`, as the template
//! sets it, see [`crate::telemetry`]) and `METRICS_ENABLED` is not `false`; tests and the
//! plain-text local job print none. Switched off, an invocation has no collector at all, so
//! `record` and `count` find none and return: the switch removes the cost, not just the lines.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde_json::{Map, Value, json};

/// The namespace unless `METRICS_NAMESPACE` names another (the template passes its own).
pub const DEFAULT_NAMESPACE: &str = "CallService";
/// The specification's limits per document.
pub const MAX_METRICS_PER_DOCUMENT: usize = 100;
pub const MAX_DIMENSIONS_PER_SET: usize = 30;
/// Values one metric may carry in one document (an array of at most 100).
pub const MAX_VALUES_PER_METRIC: usize = 100;

/// The dimensions this service uses. Never a uid or a room: each value multiplies the metrics
/// CloudWatch bills for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dim {
    /// The function's name (one function per API endpoint).
    Function,
    /// `2xx`, `4xx`, `5xx`.
    StatusClass,
    /// The error key of the envelope, `none` on success.
    ErrorKey,
    /// How a call ended (`model::EndReason`).
    EndReason,
    /// The configured event endpoint's key.
    Endpoint,
    /// An attempt's outcome: delivered, failed, gave_up.
    Outcome,
}

impl Dim {
    pub const fn name(self) -> &'static str {
        match self {
            Dim::Function => "Function",
            Dim::StatusClass => "StatusClass",
            Dim::ErrorKey => "ErrorKey",
            Dim::EndReason => "EndReason",
            Dim::Endpoint => "Endpoint",
            Dim::Outcome => "Outcome",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
    Seconds,
}

impl Unit {
    pub const fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
            Unit::Seconds => "Seconds",
        }
    }
}

/// How an invocation's values of one metric combine: counts are summed into one value,
/// distributions keep every value (CloudWatch computes the percentiles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sum,
    Distribution,
}

/// One metric: its name, unit, how values combine and its one dimension set.
#[derive(Debug, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub unit: Unit,
    pub kind: Kind,
    pub dims: &'static [Dim],
}

const fn sum(name: &'static str, dims: &'static [Dim]) -> Metric {
    Metric {
        name,
        unit: Unit::Count,
        kind: Kind::Sum,
        dims,
    }
}

const fn dist(name: &'static str, unit: Unit, dims: &'static [Dim]) -> Metric {
    Metric {
        name,
        unit,
        kind: Kind::Distribution,
        dims,
    }
}

use Dim::{EndReason, Endpoint, ErrorKey, Function, Outcome, StatusClass};

/// Requests answered, by function, status class and error key.
pub const REQUESTS: Metric = sum("Requests", &[Function, StatusClass, ErrorKey]);
/// From the request reaching the handler to its answer.
pub const LATENCY: Metric = dist("Latency", Unit::Milliseconds, &[Function]);
/// Requests (and sweep passes) refused with 503 because no database connection was had.
pub const DB_UNAVAILABLE: Metric = sum("DbUnavailable", &[Function]);
/// Transactions tried again (deadlock, lock wait, broken connection) and connections asked
/// for again because the server had none free.
pub const DB_RETRIES: Metric = sum("DbRetries", &[Function]);
pub const CALLS_CREATED: Metric = sum("CallsCreated", &[]);
/// Calls answered (the room reached "in call").
pub const CALLS_STARTED: Metric = sum("CallsStarted", &[]);
pub const CALLS_ENDED: Metric = sum("CallsEnded", &[EndReason]);
/// From an invitee's ring deadline to the commit that wrote the ring-out down.
pub const RING_OUT_LAG: Metric = dist("RingOutLag", Unit::Milliseconds, &[]);
/// From a call's start to its end, for calls that started.
pub const TALK_DURATION: Metric = dist("TalkDuration", Unit::Seconds, &[]);
/// Delivery attempts of business events, by endpoint and outcome.
pub const EVENT_ATTEMPTS: Metric = sum("EventAttempts", &[Endpoint, Outcome]);
/// From the event's commit to its delivery.
pub const DELIVERY_LAG: Metric = dist("DeliveryLag", Unit::Milliseconds, &[Endpoint]);
/// The age of the oldest event still owed to the endpoint (0: none), each event sweep pass.
pub const OLDEST_OWED_EVENT_AGE: Metric = dist("OldestOwedEventAge", Unit::Seconds, &[Endpoint]);
pub const EVENTS_GIVEN_UP: Metric = sum("EventsGivenUp", &[Endpoint]);
/// One sweep pass, by sweeper (ring-timeout, deliver-events).
pub const SWEEP_DURATION: Metric = dist("SweepDuration", Unit::Milliseconds, &[Function]);
/// Rooms a sweep settled: deadlines written down, vanished calls ended.
pub const ROOMS_SETTLED: Metric = sum("RoomsSettled", &[Function]);
pub const SWEEP_FAILURES: Metric = sum("SweepFailures", &[Function]);

/// Every metric the code emits (the template's dashboard and alarms may name only these; a
/// test in tests/deploy reads this list through `metric_names`).
pub const ALL: &[&Metric] = &[
    &REQUESTS,
    &LATENCY,
    &DB_UNAVAILABLE,
    &DB_RETRIES,
    &CALLS_CREATED,
    &CALLS_STARTED,
    &CALLS_ENDED,
    &RING_OUT_LAG,
    &TALK_DURATION,
    &EVENT_ATTEMPTS,
    &DELIVERY_LAG,
    &OLDEST_OWED_EVENT_AGE,
    &EVENTS_GIVEN_UP,
    &SWEEP_DURATION,
    &ROOMS_SETTLED,
    &SWEEP_FAILURES,
];

/// A dimension value: a static name, or a configured endpoint key.
pub type DimValue = Cow<'static, str>;

/// One invocation's measurements, aggregated by metric and dimension values.
#[derive(Debug, Default)]
pub struct Invocation {
    function: &'static str,
    /// (metric name, the values of its dimensions but Function) -> its values.
    samples: BTreeMap<(&'static str, Vec<DimValue>), Vec<f64>>,
    /// A database connection could not be had during this invocation.
    db_unavailable: bool,
}

impl Invocation {
    pub fn new(function: &'static str) -> Self {
        Invocation {
            function,
            ..Invocation::default()
        }
    }

    /// Adds a value: `values` are the metric's dimensions' values in order, Function left out
    /// (the invocation's own).
    pub fn add(&mut self, metric: &'static Metric, values: &[DimValue], value: f64) {
        let entry = self
            .samples
            .entry((metric.name, values.to_vec()))
            .or_default();
        match metric.kind {
            Kind::Sum if !entry.is_empty() => entry[0] += value,
            _ => entry.push(value),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The EMF documents for these measurements at `timestamp_ms`: as few as the one value per
    /// dimension per document allows (first fit), each within the specification's limits.
    pub fn documents(&self, namespace: &str, timestamp_ms: i64) -> Vec<Value> {
        let mut docs: Vec<Doc> = Vec::new();
        for ((name, values), samples) in &self.samples {
            let Some(metric) = by_name(name) else {
                continue;
            };
            let mut dims: Vec<(Dim, DimValue)> = Vec::with_capacity(metric.dims.len());
            let mut given = values.iter();
            for dim in metric.dims {
                let value = if *dim == Dim::Function {
                    Cow::Borrowed(self.function)
                } else {
                    given.next().cloned().unwrap_or(Cow::Borrowed("unknown"))
                };
                // CloudWatch refuses an empty dimension value.
                let value = if value.is_empty() {
                    Cow::Borrowed("none")
                } else {
                    value
                };
                dims.push((*dim, value));
            }
            for chunk in samples.chunks(MAX_VALUES_PER_METRIC) {
                match docs.iter_mut().find(|d| d.fits(metric, &dims)) {
                    Some(doc) => doc.put(metric, &dims, chunk),
                    None => {
                        let mut doc = Doc::default();
                        doc.put(metric, &dims, chunk);
                        docs.push(doc);
                    }
                }
            }
        }
        docs.iter()
            .map(|doc| {
                let mut rendered = doc.render(namespace, timestamp_ms);
                // Every document says which function printed it, a dimension or not (a plain
                // member: free, and how a reader of the logs tells invocations apart).
                if let Some(root) = rendered.as_object_mut() {
                    root.entry("Function")
                        .or_insert_with(|| Value::String(self.function.to_owned()));
                }
                rendered
            })
            .collect()
    }
}

pub fn by_name(name: &str) -> Option<&'static Metric> {
    ALL.iter().copied().find(|m| m.name == name)
}

/// The names of every metric the code emits, one a line (read by the deploy checks).
pub fn metric_names() -> Vec<&'static str> {
    ALL.iter().map(|m| m.name).collect()
}

/// One document being packed: its dimension values and metrics.
#[derive(Default)]
struct Doc {
    dims: BTreeMap<Dim, DimValue>,
    metrics: Vec<(&'static Metric, Vec<f64>)>,
}

impl Doc {
    fn fits(&self, metric: &Metric, dims: &[(Dim, DimValue)]) -> bool {
        self.metrics.len() < MAX_METRICS_PER_DOCUMENT
            && self.metrics.iter().all(|(m, _)| m.name != metric.name)
            && dims
                .iter()
                .all(|(dim, value)| self.dims.get(dim).is_none_or(|v| v == value))
    }

    fn put(&mut self, metric: &'static Metric, dims: &[(Dim, DimValue)], values: &[f64]) {
        for (dim, value) in dims {
            self.dims.insert(*dim, value.clone());
        }
        self.metrics.push((metric, values.to_vec()));
    }

    fn render(&self, namespace: &str, timestamp_ms: i64) -> Value {
        let mut root = Map::new();
        // One directive per dimension set, in the order the metrics first name it.
        let mut directives: Vec<(&'static [Dim], Vec<Value>)> = Vec::new();
        for (metric, values) in &self.metrics {
            let definition = json!({"Name": metric.name, "Unit": metric.unit.as_str()});
            match directives.iter_mut().find(|(dims, _)| *dims == metric.dims) {
                Some((_, list)) => list.push(definition),
                None => directives.push((metric.dims, vec![definition])),
            }
            let value = match values.as_slice() {
                [one] => json!(one),
                many => json!(many),
            };
            root.insert(metric.name.to_owned(), value);
        }
        for (dim, value) in &self.dims {
            root.insert(dim.name().to_owned(), Value::String(value.to_string()));
        }
        let directives: Vec<Value> = directives
            .into_iter()
            .map(|(dims, metrics)| {
                let set: Vec<&str> = dims.iter().map(|d| d.name()).collect();
                json!({"Namespace": namespace, "Dimensions": [set], "Metrics": metrics})
            })
            .collect();
        root.insert(
            "_aws".to_owned(),
            json!({"Timestamp": timestamp_ms, "CloudWatchMetrics": directives}),
        );
        Value::Object(root)
    }
}

/// Whether invocations collect and print documents (logs are JSON and `METRICS_ENABLED` is
/// not `false`); set once at start-up.
static EMIT: AtomicBool = AtomicBool::new(false);

pub fn set_enabled(enabled: bool) {
    EMIT.store(enabled, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    EMIT.load(Ordering::Relaxed)
}

tokio::task_local! {
    static CURRENT: RefCell<Invocation>;
}

/// Runs one invocation of `function` with a collector, then prints what it measured; when
/// metrics are off, runs it without one. A nested scope (a handler run inside another's) adds
/// to the outer one.
pub async fn scope<F: Future>(function: &'static str, work: F) -> F::Output {
    if !enabled() || CURRENT.try_with(|_| ()).is_ok() {
        return work.await;
    }
    let (output, invocation) = CURRENT
        .scope(RefCell::new(Invocation::new(function)), async {
            let output = work.await;
            let invocation = CURRENT.with(|current| current.take());
            (output, invocation)
        })
        .await;
    flush(&invocation);
    output
}

/// The namespace, read from the environment once per process rather than per invocation.
fn namespace() -> &'static str {
    static NAMESPACE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAMESPACE.get_or_init(|| {
        std::env::var("METRICS_NAMESPACE")
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned())
    })
}

fn flush(invocation: &Invocation) {
    let namespace = namespace();
    let now_ms = chrono::Utc::now().timestamp_millis();
    // Metrics are best effort: a closed stdout loses them, never the request.
    let _ = write_documents(invocation, namespace, now_ms, &mut std::io::stdout().lock());
}

/// Writes the invocation's documents, one a line (nothing when it measured nothing).
pub fn write_documents(
    invocation: &Invocation,
    namespace: &str,
    timestamp_ms: i64,
    out: &mut impl Write,
) -> std::io::Result<()> {
    if invocation.is_empty() {
        return Ok(());
    }
    for doc in invocation.documents(namespace, timestamp_ms) {
        writeln!(out, "{doc}")?;
    }
    out.flush()
}

/// Adds a value to the current invocation's metrics (nothing outside a [`scope`]).
pub fn record(metric: &'static Metric, values: &[DimValue], value: f64) {
    let _ = CURRENT.try_with(|current| {
        if let Ok(mut current) = current.try_borrow_mut() {
            current.add(metric, values, value);
        }
    });
}

/// Counts one.
pub fn count(metric: &'static Metric, values: &[DimValue]) {
    record(metric, values, 1.0);
}

/// Notes that the database could not be reached in this invocation (see [`DB_UNAVAILABLE`]).
pub fn note_db_unavailable() {
    let _ = CURRENT.try_with(|current| {
        if let Ok(mut current) = current.try_borrow_mut() {
            current.db_unavailable = true;
        }
    });
}

fn db_was_unavailable() -> bool {
    CURRENT
        .try_with(|current| current.try_borrow().is_ok_and(|c| c.db_unavailable))
        .unwrap_or(false)
}

/// `2xx`, `4xx`, `5xx` (and `1xx`, `3xx`, never answered by this service).
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// What every API request records: its count by status class and error key, its latency,
/// and a 503 for lack of a database connection.
pub fn request(status: u16, error_key: Option<&'static str>, elapsed_ms: f64) {
    let key = Cow::Borrowed(error_key.unwrap_or("none"));
    count(&REQUESTS, &[Cow::Borrowed(status_class(status)), key]);
    record(&LATENCY, &[], elapsed_ms);
    if status == 503 && db_was_unavailable() {
        count(&DB_UNAVAILABLE, &[]);
    }
}

/// A static page's request (the docs, the console): its own invocation, printed at once.
pub fn static_request(function: &'static str, status: u16, started: Instant) {
    if !enabled() {
        return;
    }
    let mut invocation = Invocation::new(function);
    let s = |v: &'static str| Cow::Borrowed(v);
    invocation.add(&REQUESTS, &[s(status_class(status)), s("none")], 1.0);
    invocation.add(&LATENCY, &[], started.elapsed().as_secs_f64() * 1000.0);
    flush(&invocation);
}

/// What one sweep pass records: its duration, or its failure (and a failure for lack of a
/// database connection). The rooms it settled are the sweeper's to record.
pub fn sweep_pass(started: Instant, failed: bool) {
    record(
        &SWEEP_DURATION,
        &[],
        started.elapsed().as_secs_f64() * 1000.0,
    );
    if failed {
        count(&SWEEP_FAILURES, &[]);
        if db_was_unavailable() {
            count(&DB_UNAVAILABLE, &[]);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Checks a document against the specification's rules; returns what is wrong.
    pub(crate) fn violations(doc: &Value) -> Vec<String> {
        let mut wrong = Vec::new();
        let Some(root) = doc.as_object() else {
            return vec!["not an object".into()];
        };
        let aws = &root["_aws"];
        match aws["Timestamp"].as_i64() {
            // Milliseconds since the epoch: after 2001 and before 2286 in ms, not seconds.
            Some(ts) if ts > 1_000_000_000_000 && ts < 10_000_000_000_000 => {}
            other => wrong.push(format!("Timestamp {other:?} is not epoch milliseconds")),
        }
        let Some(directives) = aws["CloudWatchMetrics"].as_array() else {
            wrong.push("CloudWatchMetrics is not an array".into());
            return wrong;
        };
        if directives.is_empty() {
            wrong.push("no directive".into());
        }
        let mut names = BTreeSet::new();
        for directive in directives {
            let Some(object) = directive.as_object() else {
                wrong.push("a directive is not an object".into());
                continue;
            };
            for key in object.keys() {
                if !["Namespace", "Dimensions", "Metrics"].contains(&key.as_str()) {
                    wrong.push(format!("directive member {key}"));
                }
            }
            match directive["Namespace"].as_str() {
                Some(ns) if !ns.is_empty() && ns.len() <= 255 && !ns.starts_with("AWS/") => {}
                other => wrong.push(format!("Namespace {other:?}")),
            }
            let sets = directive["Dimensions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if sets.is_empty() {
                wrong.push("Dimensions is not a non-empty array of sets".into());
            }
            for set in &sets {
                let Some(keys) = set.as_array() else {
                    wrong.push("a dimension set is not an array".into());
                    continue;
                };
                if keys.len() > MAX_DIMENSIONS_PER_SET {
                    wrong.push(format!("{} dimensions in a set", keys.len()));
                }
                for key in keys {
                    let key = key.as_str().unwrap_or_default();
                    match root.get(key).and_then(Value::as_str) {
                        Some(value) if !value.is_empty() && value.len() <= 1024 => {}
                        other => wrong.push(format!("dimension {key}: root member {other:?}")),
                    }
                }
            }
            let metrics = directive["Metrics"].as_array().cloned().unwrap_or_default();
            if metrics.is_empty() || metrics.len() > MAX_METRICS_PER_DOCUMENT {
                wrong.push(format!("{} metrics in a directive", metrics.len()));
            }
            for metric in &metrics {
                let name = metric["Name"].as_str().unwrap_or_default();
                if name.is_empty() || name.len() > 1024 {
                    wrong.push(format!("metric name {name:?}"));
                }
                if !names.insert(name.to_owned()) {
                    wrong.push(format!("{name} defined twice"));
                }
                match metric["Unit"].as_str() {
                    Some("Count" | "Milliseconds" | "Seconds") => {}
                    other => wrong.push(format!("{name}: unit {other:?}")),
                }
                match &root.get(name) {
                    Some(Value::Number(_)) => {}
                    Some(Value::Array(values))
                        if !values.is_empty()
                            && values.len() <= MAX_VALUES_PER_METRIC
                            && values.iter().all(Value::is_number) => {}
                    other => wrong.push(format!("{name}: value {other:?}")),
                }
            }
        }
        if names.len() > MAX_METRICS_PER_DOCUMENT {
            wrong.push(format!("{} metrics in the document", names.len()));
        }
        wrong
    }

    const TS: i64 = 1_767_000_000_000;

    fn one_of_everything(inv: &mut Invocation) {
        let s = |v: &'static str| Cow::Borrowed(v);
        inv.add(&REQUESTS, &[s("2xx"), s("none")], 1.0);
        inv.add(&LATENCY, &[], 12.5);
        inv.add(&DB_UNAVAILABLE, &[], 1.0);
        inv.add(&DB_RETRIES, &[], 1.0);
        inv.add(&CALLS_CREATED, &[], 1.0);
        inv.add(&CALLS_STARTED, &[], 1.0);
        inv.add(&CALLS_ENDED, &[s("completed")], 1.0);
        inv.add(&RING_OUT_LAG, &[], 300.0);
        inv.add(&TALK_DURATION, &[], 42.0);
        inv.add(
            &EVENT_ATTEMPTS,
            &[Cow::Owned("app".into()), s("delivered")],
            1.0,
        );
        inv.add(&DELIVERY_LAG, &[Cow::Owned("app".into())], 8.0);
        inv.add(&OLDEST_OWED_EVENT_AGE, &[Cow::Owned("app".into())], 0.0);
        inv.add(&EVENTS_GIVEN_UP, &[Cow::Owned("app".into())], 1.0);
        inv.add(&SWEEP_DURATION, &[], 3.0);
        inv.add(&ROOMS_SETTLED, &[], 2.0);
        inv.add(&SWEEP_FAILURES, &[], 1.0);
    }

    #[test]
    fn every_metric_fits_one_document_that_follows_the_specification() {
        let mut inv = Invocation::new("create-room");
        one_of_everything(&mut inv);
        let docs = inv.documents("CallService", TS);
        assert_eq!(docs.len(), 1, "{docs:#?}");
        let doc = &docs[0];
        assert_eq!(violations(doc), Vec::<String>::new(), "{doc:#}");
        assert_eq!(doc["_aws"]["Timestamp"], TS);
        for metric in ALL {
            assert!(doc.get(metric.name).is_some(), "{} missing", metric.name);
        }
        assert_eq!(doc["Function"], "create-room");
        assert_eq!(doc["EndReason"], "completed");
        assert_eq!(doc["Requests"], 1.0);
    }

    #[test]
    fn a_request_sums_its_counts_and_keeps_every_latency() {
        let mut inv = Invocation::new("join-room");
        for _ in 0..3 {
            inv.add(&DB_RETRIES, &[], 1.0);
            inv.add(&DELIVERY_LAG, &[Cow::Borrowed("app")], 5.0);
        }
        let docs = inv.documents("CallService", TS);
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0]["DbRetries"], 3.0);
        assert_eq!(docs[0]["DeliveryLag"], json!([5.0, 5.0, 5.0]));
    }

    #[test]
    fn two_values_of_one_dimension_go_to_two_documents_each_valid() {
        let mut inv = Invocation::new("ring-timeout");
        let s = |v: &'static str| Cow::Borrowed(v);
        inv.add(&CALLS_ENDED, &[s("timeout")], 1.0);
        inv.add(&CALLS_ENDED, &[s("timeout")], 1.0);
        inv.add(&CALLS_ENDED, &[s("completed")], 1.0);
        inv.add(&ROOMS_SETTLED, &[], 3.0);
        inv.add(&EVENT_ATTEMPTS, &[s("a"), s("failed")], 1.0);
        inv.add(&EVENT_ATTEMPTS, &[s("b"), s("delivered")], 1.0);
        let docs = inv.documents("CallService", TS);
        assert_eq!(docs.len(), 2, "{docs:#?}");
        for doc in &docs {
            assert_eq!(violations(doc), Vec::<String>::new(), "{doc:#}");
        }
        let ended: BTreeMap<String, Value> = docs
            .iter()
            .map(|d| {
                (
                    d["EndReason"].as_str().unwrap_or("").to_owned(),
                    d["CallsEnded"].clone(),
                )
            })
            .collect();
        assert_eq!(ended["timeout"], 2.0);
        assert_eq!(ended["completed"], 1.0);
    }

    #[test]
    fn more_than_a_hundred_values_are_split_across_documents() {
        let mut inv = Invocation::new("ring-timeout");
        for i in 0..250 {
            inv.add(&RING_OUT_LAG, &[], f64::from(i));
        }
        let docs = inv.documents("CallService", TS);
        assert_eq!(docs.len(), 3);
        let mut total = 0;
        for doc in &docs {
            assert_eq!(violations(doc), Vec::<String>::new());
            total += doc["RingOutLag"].as_array().map_or(1, Vec::len);
        }
        assert_eq!(total, 250);
    }

    #[test]
    fn the_validator_catches_what_the_specification_forbids() {
        let mut inv = Invocation::new("get-room");
        inv.add(
            &REQUESTS,
            &[Cow::Borrowed("2xx"), Cow::Borrowed("none")],
            1.0,
        );
        let good = inv.documents("CallService", TS).remove(0);
        let mut seconds = good.clone();
        seconds["_aws"]["Timestamp"] = json!(TS / 1000);
        let mut missing_dim = good.clone();
        missing_dim.as_object_mut().map(|o| o.remove("ErrorKey"));
        let mut string_value = good.clone();
        string_value["Requests"] = json!("1");
        let mut many_dims = good.clone();
        let keys: Vec<String> = (0..31).map(|i| format!("D{i}")).collect();
        for k in &keys {
            many_dims[k] = json!("x");
        }
        many_dims["_aws"]["CloudWatchMetrics"][0]["Dimensions"] = json!([keys]);
        for (what, doc) in [
            ("seconds", seconds),
            ("missing dimension", missing_dim),
            ("string value", string_value),
            ("31 dimensions", many_dims),
        ] {
            assert!(!violations(&doc).is_empty(), "{what} passed");
        }
        assert!(violations(&good).is_empty());
    }

    /// Every dimension is one of the closed set; the values the code records are checked
    /// for uids and room names in events.rs and delivery.rs, where they are recorded.
    #[test]
    fn every_dimension_is_one_of_the_closed_set() {
        let allowed: BTreeSet<&str> = ALLOWED_DIMENSIONS.iter().copied().collect();
        for metric in ALL {
            assert!(metric.dims.len() <= MAX_DIMENSIONS_PER_SET);
            for dim in metric.dims {
                assert!(allowed.contains(dim.name()), "{}: {dim:?}", metric.name);
            }
        }
    }

    /// The dimension names a document may carry.
    pub(crate) const ALLOWED_DIMENSIONS: &[&str] = &[
        "Function",
        "StatusClass",
        "ErrorKey",
        "EndReason",
        "Endpoint",
        "Outcome",
    ];

    /// Runs `work` in a collector for `function` and returns the documents it would print.
    pub(crate) fn documents_of(function: &'static str, work: impl FnOnce()) -> Vec<Value> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(
            CURRENT.scope(RefCell::new(Invocation::new(function)), async {
                work();
                CURRENT.with(|c| c.take()).documents("CallService", TS)
            }),
        )
    }

    /// Fails when a document breaks the specification or a dimension value contains one of
    /// `forbidden` (uids, room names).
    pub(crate) fn assert_valid_without(docs: &[Value], forbidden: &[&str]) {
        assert!(!docs.is_empty());
        for doc in docs {
            assert_eq!(violations(doc), Vec::<String>::new(), "{doc:#}");
            for directive in doc["_aws"]["CloudWatchMetrics"]
                .as_array()
                .into_iter()
                .flatten()
            {
                for key in directive["Dimensions"][0].as_array().into_iter().flatten() {
                    let key = key.as_str().unwrap_or_default();
                    assert!(ALLOWED_DIMENSIONS.contains(&key), "dimension {key}");
                    let value = doc[key].as_str().unwrap_or_default();
                    for bad in forbidden {
                        assert!(!value.contains(bad), "{key} = {value} carries {bad}");
                    }
                }
            }
        }
    }

    /// The deploy check reads the names from these definitions; each must also be in ALL.
    #[test]
    fn every_metric_defined_is_listed_in_all() {
        let defined: Vec<&str> = include_str!("metrics.rs")
            .lines()
            .filter(|line| line.starts_with("pub const ") && line.contains(": Metric = "))
            .filter_map(|line| line.split('"').nth(1))
            .collect();
        assert_eq!(defined, metric_names());
    }

    #[test]
    fn metric_names_are_unique() {
        let mut names = metric_names();
        let all = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all);
    }
}
