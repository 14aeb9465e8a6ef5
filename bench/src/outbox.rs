//! The business-events phase: what delivering events costs the API and how fast they arrive.
//!
//! One warm create-room, join-room and leave-room process each per endpoint setting, invoked
//! through the local Runtime API with the same call cycle (create, a second uid joins, it
//! leaves: 7 events), with EVENT_ENDPOINTS naming
//! - nothing (events are written for the pull feed only),
//! - a receiver in this harness that answers 200 at once (delivered inside the request),
//! - a closed port (every attempt is refused at once), and
//! - a listener that accepts and never answers (each attempt waits out the request's budget
//!   until the endpoint is paused after failures in a row).
//!
//! Delivery lag is the receiver's clock at arrival minus the event's `occurred_at`, the
//! instant of the transaction that wrote it (milliseconds; one machine, one clock). Then the
//! closed port starts answering and the deliver-events function, run as a command, delivers
//! everything the refused attempts left pending: events delivered per second by the retry path.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Connection;
use tokio::io::BufReader;
use tokio::net::TcpListener;

use crate::events::{Expect, HttpCall};
use crate::runtime_api::{FunctionEnv, FunctionProcess};
use crate::stats::{Summary, micros, summarize};
use crate::{Ctx, http, invoke, join_call, log};

const STEPS: [(&str, &str); 3] = [
    ("create", "create-room"),
    ("join", "join-room"),
    ("leave", "leave-room"),
];

/// The API's latency with one endpoint setting.
#[derive(Debug, Clone)]
pub struct Setting {
    pub name: String,
    /// (step, latency in µs)
    pub steps: Vec<(String, Summary)>,
}

#[derive(Debug, Clone)]
pub struct EventsOutcome {
    pub rounds: usize,
    pub settings: Vec<Setting>,
    /// Commit → receiver, µs, over every event of the healthy-receiver rounds.
    pub lag: Summary,
    /// Events the healthy receiver got, and those the rounds wrote.
    pub arrived: usize,
    pub written: usize,
    /// Events the retry path delivered after the closed port recovered, and how long it took.
    pub drained: usize,
    pub drain: Duration,
    pub inline_budget_ms: u64,
}

/// What arrived at a receiver: (arrival, occurred_at), both as Unix µs.
type Arrivals = Arc<Mutex<Vec<(i64, i64)>>>;

async fn receiver(listener: TcpListener, arrivals: Arrivals) {
    while let Ok((stream, _)) = listener.accept().await {
        let arrivals = arrivals.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut read = BufReader::new(read);
            while let Ok(Some(request)) = http::read_request(&mut read).await {
                let at = chrono::Utc::now().timestamp_micros();
                let occurred = serde_json::from_slice::<Value>(&request.body)
                    .ok()
                    .and_then(|v| v["occurred_at"].as_str().map(str::to_owned))
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
                    .map_or(at, |t| t.timestamp_micros());
                arrivals.lock().expect("arrivals").push((at, occurred));
                if http::write_response(&mut write, 200, &[], b"")
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
    }
}

/// Accepts connections and never answers (holds them until the harness ends).
async fn black_hole(listener: TcpListener) {
    let mut held = Vec::new();
    while let Ok((stream, _)) = listener.accept().await {
        held.push(stream);
    }
}

/// `whsec_` and the base64 of "bench-webhook-signing-key-32byte".
const SECRET: &str = "whsec_YmVuY2gtd2ViaG9vay1zaWduaW5nLWtleS0zMmJ5dGU=";

fn endpoints(url: &str) -> String {
    json!([{ "url": url, "secret": SECRET }]).to_string()
}

fn with(env: &FunctionEnv, extra: &[(&str, &str)]) -> FunctionEnv {
    let mut vars = env.vars.clone();
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    FunctionEnv { vars }
}

fn step_call(ctx: &Ctx, step: &str, room: &str) -> HttpCall {
    let (creator, joiner) = (format!("{room}a"), format!("{room}b"));
    let token = &ctx.service_token;
    match step {
        "create" => HttpCall::new("POST", "/api/rooms", "/api/rooms")
            .bearer(token)
            .json(&json!({ "creator": creator, "room_name": room, "invite_on": 0 })),
        "join" => join_call(token, room, &joiner),
        _ => HttpCall::new("POST", "/api/participants/leave", "/api/participants/leave")
            .bearer(token)
            .json(&json!({ "room_name": room, "uid": joiner })),
    }
}

async fn measure(
    ctx: &Ctx,
    name: &str,
    env: &FunctionEnv,
    tag: usize,
    rooms: &str,
) -> Result<Setting, String> {
    let mut processes = HashMap::new();
    for (_, function) in STEPS {
        let p = FunctionProcess::spawn(&ctx.opts.bin_dir, function, env, &ctx.log_dir, tag).await?;
        processes.insert(function, p);
    }
    let mut samples: HashMap<&str, Vec<f64>> = HashMap::new();
    let total = ctx.opts.warmup + ctx.opts.rounds;
    for round in 0..total {
        let room = format!("{}{rooms}{round}", ctx.prefix);
        for (step, function) in STEPS {
            let call = step_call(ctx, step, &room);
            let took = invoke(&processes[function], step, &call, Expect::OK).await?;
            if round >= ctx.opts.warmup {
                samples.entry(step).or_default().push(micros(took));
            }
        }
    }
    Ok(Setting {
        name: name.to_owned(),
        steps: STEPS
            .iter()
            .map(|(step, _)| {
                let v = samples.get(step).map(Vec::as_slice).unwrap_or(&[]);
                (step.to_string(), summarize(v))
            })
            .collect(),
    })
}

pub async fn run(ctx: &Ctx) -> Result<EventsOutcome, String> {
    let env = ctx.env(&ctx.db_url, false);
    let inline_budget_ms = 300;
    let arrivals: Arrivals = Arc::default();
    let live = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("receiver: {e}"))?;
    let live_url = format!("http://{}/events", local(&live)?);
    tokio::spawn(receiver(live, arrivals.clone()));
    let hole = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("black hole: {e}"))?;
    let hole_url = format!("http://{}/events", local(&hole)?);
    tokio::spawn(black_hole(hole));
    // A port nothing listens on until the drain step.
    let closed_addr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        probe.local_addr().map_err(|e| e.to_string())?
    };
    let closed_url = format!("http://{closed_addr}/events");
    // Retries due at once, so the drain below finds everything due.
    let retry_now = ("EVENT_RETRY_BASE_MS", "1");

    let mut settings = Vec::new();
    log("events: no endpoint");
    settings.push(measure(ctx, "no endpoint (feed only)", &env, 40, "en").await?);
    log("events: a local receiver");
    let live_env = with(&env, &[("EVENT_ENDPOINTS", &endpoints(&live_url))]);
    let live_rooms = "el";
    settings.push(
        measure(
            ctx,
            "a local receiver (200 at once)",
            &live_env,
            41,
            live_rooms,
        )
        .await?,
    );
    log("events: a closed port");
    let closed_env = with(
        &env,
        &[("EVENT_ENDPOINTS", &endpoints(&closed_url)), retry_now],
    );
    settings.push(
        measure(
            ctx,
            "a closed port (refused at once)",
            &closed_env,
            42,
            "ec",
        )
        .await?,
    );
    log("events: an endpoint that never answers");
    let hole_env = with(&env, &[("EVENT_ENDPOINTS", &endpoints(&hole_url))]);
    settings.push(measure(ctx, "an endpoint that never answers", &hole_env, 43, "eh").await?);

    let mut db = sqlx::mysql::MySqlConnection::connect(&ctx.db_url)
        .await
        .map_err(|e| e.to_string())?;
    let written: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM call_event WHERE room_name LIKE ?")
        .bind(format!("{}{live_rooms}%", ctx.prefix))
        .fetch_one(&mut db)
        .await
        .map_err(|e| e.to_string())?;
    let lag: Vec<f64> = {
        let got = arrivals.lock().expect("arrivals");
        got.iter()
            .map(|(at, occurred)| (at - occurred) as f64)
            .collect()
    };

    // The closed port comes up; the retry path delivers what it refused.
    log("events: the closed port recovers; deliver-events drains it");
    let recovered = TcpListener::bind(closed_addr)
        .await
        .map_err(|e| format!("recovered receiver on {closed_addr}: {e}"))?;
    let drained_arrivals: Arrivals = Arc::default();
    tokio::spawn(receiver(recovered, drained_arrivals.clone()));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(120);
    loop {
        sweep_events(ctx, &closed_env).await?;
        let due: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM call_event WHERE due_at IS NOT NULL AND room_name LIKE ?",
        )
        .bind(format!("{}ec%", ctx.prefix))
        .fetch_one(&mut db)
        .await
        .map_err(|e| e.to_string())?;
        if due == 0 || Instant::now() > deadline {
            break;
        }
    }
    let drain = started.elapsed();
    let drained = drained_arrivals.lock().expect("arrivals").len();
    Ok(EventsOutcome {
        rounds: ctx.opts.rounds,
        settings,
        arrived: lag.len(),
        lag: summarize(&lag),
        written: usize::try_from(written).unwrap_or(0),
        drained,
        drain,
        inline_budget_ms,
    })
}

fn local(listener: &TcpListener) -> Result<SocketAddr, String> {
    listener.local_addr().map_err(|e| e.to_string())
}

/// One run of the deliver-events function as a command (one pass, then it exits), on a
/// blocking thread so the harness's receivers keep answering meanwhile.
async fn sweep_events(ctx: &Ctx, env: &FunctionEnv) -> Result<(), String> {
    let binary = ctx.opts.bin_dir.join("deliver-events");
    let vars = env.vars.clone();
    let shown = binary.display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(&binary);
        cmd.env_clear();
        for (k, v) in &vars {
            cmd.env(k, v);
        }
        cmd.output()
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("{shown}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "deliver-events failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}
