//! The benchmark harness behind `scripts/bench.sh`: measures the function binaries on this
//! machine against the real MariaDB and Redis and writes BENCHMARKS.md.
//!
//! Phases: binary sizes; init time (exec to the first Runtime API poll); warm latency of each
//! endpoint through a local Runtime API, interleaved with the same I/O done raw; database
//! round trips per endpoint; peak memory; a bounded concurrent load through a local gateway,
//! then the transactions still open on the bench database (0: every refusal rolled back);
//! the read endpoints on 1,000,000 rooms beside 1,000 with EXPLAIN of their SQL (scale.rs);
//! the ring-out lag of the local main job's sweeper (ringout.rs); business events (outbox.rs);
//! what an Idempotency-Key adds to a POST and what a replay costs (keys.rs); warm requests with
//! the EMF metrics on and off, and one request's collector work alone (emf.rs).
//! `--smoke` runs every phase with tiny counts and no thresholds (the test command uses it).

mod counting;
mod emf;
mod events;
mod fleet;
mod gateway;
mod http;
mod keys;
mod outbox;
mod raw;
mod report;
mod ringout;
mod runtime_api;
mod scale;
mod stats;
mod year;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use call_shared::auth::Auth;
use call_shared::model::Now;
use serde_json::{Value, json};
use sqlx::Connection;
use sqlx::mysql::MySqlConnection;

use crate::counting::{Commands, CountingProxy, Questions};
use crate::events::{Expect, HttpCall};
use crate::gateway::{Gateway, Instances, LoadPlan};
use crate::raw::Raw;
use crate::report::{Arm64, CountRow, Floors, MemoryRow, Results, SizeRow, WarmRow};
use crate::runtime_api::{FunctionEnv, FunctionProcess};
use crate::stats::{Summary, micros, summarize};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/mysql");

const AUTH_SECRET: &str = "bench-auth-secret-not-for-production";
const LIVEKIT_KEY: &str = "benchkey";
const LIVEKIT_SECRET: &str = "bench-livekit-secret-of-sufficient-length";

/// The endpoints of the warm and round-trip phases, in the order a call uses them.
/// "refused" is a third uid's join into the room "join" filled (max_participants 2): the rule
/// refuses it inside the call transaction (409 room_full), which then rolls back.
pub const STEPS: &[(&str, &str)] = &[
    ("create", "create-room"),
    ("getmiss", "get-room"),
    ("gethit", "get-room"),
    ("join", "join-room"),
    ("refused", "join-room"),
    ("list", "list-rooms"),
    ("leave", "leave-room"),
];

#[derive(Debug, Clone)]
pub struct Options {
    pub smoke: bool,
    pub root: PathBuf,
    pub bin_dir: PathBuf,
    pub out: PathBuf,
    pub command: String,
    pub build_secs: Option<f64>,
    pub starts: usize,
    pub warmup: usize,
    pub rounds: usize,
    pub count_rounds: usize,
    pub workers: usize,
    pub cycles: usize,
    pub time_limit: Duration,
    pub mysql_url: String,
    pub redis_url: String,
    pub database: String,
    /// The phases to run (all by default); with a subset, absent binaries are skipped.
    pub only: Option<Vec<String>>,
    /// Rooms of the scale phase's large and small data sets.
    pub scale_rooms: u64,
    pub small_rooms: u64,
    pub scale_rounds: usize,
    pub scale_warmup: usize,
    /// Timed runs of each list statement sent before migration 0003.
    pub old_runs: usize,
    /// Keep scale databases an earlier run loaded with the same shape instead of reloading.
    pub scale_reuse: bool,
    /// InnoDB buffer pool (MB) for the scale rounds, the data sets read into it first; the
    /// server's own size is restored afterwards. None: the server as configured, cold.
    pub scale_pool_mb: Option<u64>,
    /// Invites of the ring-out phase.
    pub ringout_calls: usize,
}

/// Rounds of each endpoint setting in the events phase (fewer than the warm phase's: four
/// settings, one of them waiting out a budget per request until the endpoint is paused).
const EVENT_ROUNDS: usize = 300;

pub const PHASES: &[&str] = &[
    "sizes", "init", "warm", "counts", "load", "scale", "year", "ringout", "events", "fleet",
    "keys", "metrics",
];

impl Options {
    fn runs(&self, phase: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|p| p == phase))
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: bench [--smoke] [--bin-dir DIR] [--out FILE] [--command TEXT] [--build-secs S]\n\
         \x20            [--starts N] [--rounds N] [--count-rounds N] [--workers N] [--cycles N]\n\
         \x20            [--time-limit SECS] [--scale-rooms N] [--small-rooms N]\n\
         \x20            [--scale-rounds N] [--old-runs N] [--scale-reuse] [--scale-pool-mb N|0]\n\
         \x20            [--ringout-calls N]\n\
         \x20            [--only sizes,init,warm,counts,load,scale,year,ringout,events,fleet,\n\
         \x20                   keys,metrics]\n\
         env: BENCH_MYSQL_URL (server, no database; default mysql://root@127.0.0.1:3306),\n\
         \x20    BENCH_DATABASE (the measuring database; default call_bench, call_bench_smoke),\n\
         \x20    BENCH_REDIS_URL (default redis://127.0.0.1:6379/0)"
    );
    std::process::exit(2)
}

fn parse_args() -> Options {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let args: Vec<String> = std::env::args().skip(1).collect();
    let smoke = args.iter().any(|a| a == "--smoke");
    let mut o = Options {
        smoke,
        bin_dir: root
            .join("target")
            .join(if smoke { "debug" } else { "release" }),
        out: if smoke {
            std::env::temp_dir().join("BENCHMARKS.smoke.md")
        } else {
            root.join("BENCHMARKS.md")
        },
        root,
        command: "scripts/bench.sh".to_owned(),
        build_secs: None,
        starts: if smoke { 2 } else { 50 },
        warmup: if smoke { 1 } else { 20 },
        rounds: if smoke { 3 } else { 1000 },
        count_rounds: if smoke { 1 } else { 10 },
        workers: if smoke { 2 } else { 8 },
        cycles: if smoke { 4 } else { 1000 },
        time_limit: Duration::from_secs(if smoke { 30 } else { 120 }),
        mysql_url: std::env::var("BENCH_MYSQL_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_owned()),
        redis_url: std::env::var("BENCH_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned()),
        database: std::env::var("BENCH_DATABASE").unwrap_or_else(|_| {
            if smoke {
                "call_bench_smoke"
            } else {
                "call_bench"
            }
            .to_owned()
        }),
        only: None,
        scale_rooms: if smoke { 2_000 } else { 1_000_000 },
        small_rooms: if smoke { 200 } else { 1_000 },
        scale_rounds: if smoke { 3 } else { 200 },
        scale_warmup: if smoke { 1 } else { 10 },
        old_runs: if smoke { 2 } else { 5 },
        scale_reuse: false,
        scale_pool_mb: if smoke { None } else { Some(1024) },
        ringout_calls: if smoke { 4 } else { 40 },
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().cloned().unwrap_or_else(|| usage());
        let number = |v: String| v.parse::<usize>().unwrap_or_else(|_| usage());
        match arg.as_str() {
            "--smoke" => {}
            "--bin-dir" => o.bin_dir = PathBuf::from(value()),
            "--out" => o.out = PathBuf::from(value()),
            "--command" => o.command = value(),
            "--build-secs" => o.build_secs = value().parse().ok(),
            "--starts" => o.starts = number(value()),
            "--rounds" => o.rounds = number(value()),
            "--count-rounds" => o.count_rounds = number(value()),
            "--workers" => o.workers = number(value()),
            "--cycles" => o.cycles = number(value()),
            "--time-limit" => o.time_limit = Duration::from_secs(number(value()) as u64),
            "--scale-rooms" => o.scale_rooms = number(value()) as u64,
            "--small-rooms" => o.small_rooms = number(value()) as u64,
            "--scale-rounds" => o.scale_rounds = number(value()),
            "--old-runs" => o.old_runs = number(value()),
            "--scale-reuse" => o.scale_reuse = true,
            "--scale-pool-mb" => {
                let mb = number(value()) as u64;
                o.scale_pool_mb = (mb > 0).then_some(mb);
            }
            "--ringout-calls" => o.ringout_calls = number(value()),
            "--only" => {
                let phases: Vec<String> = value().split(',').map(str::to_owned).collect();
                if phases.iter().any(|p| !PHASES.contains(&p.as_str())) {
                    usage();
                }
                o.only = Some(phases);
            }
            _ => usage(),
        }
    }
    o.mysql_url = o.mysql_url.trim_end_matches('/').to_owned();
    o
}

/// `scheme://user@host:port` split into the part before the host and `host:port`.
fn split_server_url(url: &str) -> Option<(String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), rest),
    };
    let hostport = hostport.split(['/', '?']).next()?.to_owned();
    (!hostport.is_empty()).then(|| (format!("{scheme}://{userinfo}"), hostport))
}

/// The functions of the workspace, by package name (the binary name), sorted.
fn function_names(root: &Path) -> Result<Vec<String>, String> {
    let dir = root.join("functions");
    let mut names = Vec::new();
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let manifest = entry.path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        if let Some(name) = text.lines().find_map(|l| {
            l.trim()
                .strip_prefix("name = \"")
                .and_then(|r| r.strip_suffix('"'))
        }) {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

struct Ctx {
    opts: Options,
    /// `scheme://user@host:port` of the server, without a database.
    server: String,
    db_url: String,
    proxy_db_url: Box<dyn Fn(&str) -> String>,
    db_addr: String,
    auth: Auth,
    service_token: String,
    log_dir: PathBuf,
    /// Room and uid prefix, unique per run so no cached copy of an earlier run can answer.
    prefix: String,
}

impl Ctx {
    /// The same bench with `rounds` rounds per measurement (and no proxy).
    fn with_rounds(&self, rounds: usize) -> Ctx {
        Ctx {
            opts: Options {
                rounds,
                ..self.opts.clone()
            },
            server: self.server.clone(),
            db_url: self.db_url.clone(),
            proxy_db_url: Box::new(|_| String::new()),
            db_addr: self.db_addr.clone(),
            auth: Auth::new(AUTH_SECRET),
            service_token: self.service_token.clone(),
            log_dir: self.log_dir.clone(),
            prefix: self.prefix.clone(),
        }
    }

    /// The URL of another database on the bench server (TLS off, as for the bench database).
    fn server_url(&self, database: &str) -> String {
        format!("{}/{database}?ssl-mode=disabled", self.server)
    }

    fn env(&self, database_url: &str, rate_limits: bool) -> FunctionEnv {
        let mut vars: Vec<(String, String)> = [
            ("DATABASE_URL", database_url),
            ("REDIS_URL", self.opts.redis_url.as_str()),
            ("LIVEKIT_CLIENT_URL", "wss://livekit.bench.invalid"),
            ("LIVEKIT_API_KEY", LIVEKIT_KEY),
            ("LIVEKIT_API_SECRET", LIVEKIT_SECRET),
            ("AUTH_JWT_SECRET", AUTH_SECRET),
            ("AWS_REGION", "us-east-1"),
            ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
            ("AWS_LAMBDA_LOG_LEVEL", "INFO"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        if !rate_limits {
            for name in [
                "RATE_LIMIT_CREATE_PER_MIN",
                "RATE_LIMIT_JOIN_PER_MIN",
                "RATE_LIMIT_INVITE_PER_MIN",
            ] {
                vars.push((name.to_owned(), "0".to_owned()));
            }
        }
        FunctionEnv { vars }
    }

    fn user_token(&self, uid: &str) -> String {
        self.auth.mint(uid, false, 3600).expect("mint a user token")
    }

    /// The HTTP API event of one step of the call `room` (creator `room`a, joiner `room`b,
    /// refused third uid `room`c) and the reply it must get.
    fn step_call(&self, step: &str, room: &str) -> (HttpCall, Expect) {
        let creator = format!("{room}a");
        let joiner = format!("{room}b");
        let token = &self.service_token;
        match step {
            "create" => (create_call(token, room, &creator), Expect::OK),
            "getmiss" | "gethit" => (
                HttpCall::new(
                    "GET",
                    "/api/rooms/{room_name}",
                    &format!("/api/rooms/{room}"),
                )
                .bearer(token),
                Expect::OK,
            ),
            "join" => (join_call(token, room, &joiner), Expect::OK),
            "refused" => (
                join_call(token, room, &format!("{room}c")),
                Expect::refused(409, "room_full"),
            ),
            // A user's call history: the uid filter is forced to the caller.
            "list" => (
                HttpCall::new("GET", "/api/rooms", "/api/rooms")
                    .query("limit=10")
                    .bearer(&self.user_token(&creator)),
                Expect::OK,
            ),
            "leave" => (
                HttpCall::new("POST", "/api/participants/leave", "/api/participants/leave")
                    .bearer(token)
                    .json(&json!({ "room_name": room, "uid": joiner })),
                Expect::OK,
            ),
            // No I/O at all: auth, path validation and the error envelope (a blank room name).
            "floor" => (
                HttpCall::new("GET", "/api/rooms/{room_name}", "/api/rooms/bad%20name")
                    .bearer(token),
                Expect::refused(400, "invalid_parameters"),
            ),
            other => panic!("unknown step {other}"),
        }
    }
}

fn create_call(token: &str, room: &str, creator: &str) -> HttpCall {
    HttpCall::new("POST", "/api/rooms", "/api/rooms")
        .bearer(token)
        .json(&json!({ "creator": creator, "room_name": room, "call_type": 1, "invite_on": 0 }))
}

fn join_call(token: &str, room: &str, uid: &str) -> HttpCall {
    HttpCall::new("POST", "/api/participants/join", "/api/participants/join")
        .bearer(token)
        .json(&json!({ "room_name": room, "uid": uid }))
}

/// One invocation through the Runtime API; the reply must be the expected one.
async fn invoke(
    process: &FunctionProcess,
    label: &str,
    call: &HttpCall,
    expect: Expect,
) -> Result<Duration, String> {
    let payload = events::api_gateway_v2(call, label, chrono::Utc::now().timestamp_millis())
        .to_string()
        .into_bytes();
    let started = Instant::now();
    let (_, body) = process.invoke(label, payload).await?;
    let elapsed = started.elapsed();
    let reply = events::parse_reply(&body)?;
    if !expect.matches(reply.status, reply.body.as_bytes()) {
        return Err(format!(
            "{} {label}: expected {expect:?}, got {}: {}",
            process.name, reply.status, reply.body
        ));
    }
    Ok(elapsed)
}

async fn raw_step(raw: &mut Raw, step: &str, room: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let now = Now::current();
    let (creator, joiner) = (format!("{room}a"), format!("{room}b"));
    match step {
        "create" => raw.create(room, &creator, now).await?,
        "getmiss" => raw.get_miss(room).await?,
        "gethit" => raw.get_hit(room).await?,
        "join" => raw.join(room, &joiner, now).await?,
        "refused" => raw.refused_join(room, &format!("{room}c")).await?,
        "list" => raw.list(&creator).await?,
        "leave" => raw.leave(room, &joiner, now).await?,
        other => return Err(format!("no raw step {other}")),
    }
    Ok(started.elapsed())
}

async fn spawn_step_functions(
    ctx: &Ctx,
    env: &FunctionEnv,
    tag: usize,
) -> Result<HashMap<&'static str, FunctionProcess>, String> {
    let mut processes = HashMap::new();
    for (_, function) in STEPS {
        if !processes.contains_key(function) {
            let p =
                FunctionProcess::spawn(&ctx.opts.bin_dir, function, env, &ctx.log_dir, tag).await?;
            processes.insert(*function, p);
        }
    }
    Ok(processes)
}

fn proc<'a>(
    processes: &'a HashMap<&'static str, FunctionProcess>,
    function: &str,
) -> &'a FunctionProcess {
    processes
        .get(function)
        .expect("every step's function was started")
}

fn log(msg: impl AsRef<str>) {
    eprintln!("bench: {}", msg.as_ref());
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let opts = parse_args();
    let started = Instant::now();
    match run(opts).await {
        Ok(out) => log(format!(
            "wrote {} in {:.0} s",
            out.display(),
            started.elapsed().as_secs_f64()
        )),
        Err(e) => {
            log(format!("FAILED: {e}"));
            std::process::exit(1);
        }
    }
}

async fn run(opts: Options) -> Result<PathBuf, String> {
    let mut functions = function_names(&opts.root)?;
    if functions.is_empty() {
        return Err("no functions found under functions/".to_owned());
    }
    let missing: Vec<&String> = functions
        .iter()
        .filter(|f| !opts.bin_dir.join(f).is_file())
        .collect();
    if opts.only.is_none() && !opts.smoke && !missing.is_empty() {
        return Err(format!(
            "{} is missing: build first",
            opts.bin_dir.join(missing[0]).display()
        ));
    }
    // A subset of phases, or a smoke run, measures whichever binaries are there (a profiling
    // build, or the few the smoke run builds).
    functions.retain(|f| opts.bin_dir.join(f).is_file());
    if functions.is_empty() {
        return Err(format!(
            "no function binaries in {}",
            opts.bin_dir.display()
        ));
    }
    let (before_host, db_addr) = split_server_url(&opts.mysql_url)
        .ok_or_else(|| format!("cannot read host:port from {}", opts.mysql_url))?;
    // TLS off: the counting proxy reads the protocol, and loopback TLS would only add noise
    // (the functions and the raw queries use the same URL either way).
    let db_url = format!("{before_host}{db_addr}/{}?ssl-mode=disabled", opts.database);
    let server = format!("{before_host}{db_addr}");
    let database = opts.database.clone();
    let proxy_db_url =
        Box::new(move |proxy: &str| format!("{before_host}{proxy}/{database}?ssl-mode=disabled"));
    let log_dir =
        opts.root
            .join("target")
            .join("bench")
            .join(if opts.smoke { "smoke" } else { "full" });
    let _ = std::fs::remove_dir_all(&log_dir);
    std::fs::create_dir_all(&log_dir).map_err(|e| format!("{}: {e}", log_dir.display()))?;

    log(format!(
        "database {} (recreated), redis {}",
        opts.database, opts.redis_url
    ));
    prepare_database(&opts).await?;

    let auth = Auth::new(AUTH_SECRET);
    let service_token = auth
        .mint("bench-backend", true, 3600)
        .expect("mint the service token");
    let run_id = chrono::Utc::now().timestamp() % 1_000_000;
    let ctx = Ctx {
        prefix: format!("b{run_id}"),
        opts,
        server,
        db_url,
        proxy_db_url,
        db_addr,
        auth,
        service_token,
        log_dir,
    };

    let mut results = Results::new(&ctx.opts, &functions);
    results.mariadb = server_version(&ctx.db_url).await;
    results.redis = redis_version(&ctx.opts.redis_url).await;

    if ctx.opts.runs("sizes") {
        log("binary sizes");
        results.sizes = sizes(&ctx.opts.root, &ctx.opts.bin_dir, &functions, &ctx.log_dir);
    }
    if ctx.opts.runs("init") {
        log(format!(
            "init time: {} starts of each of {} functions",
            ctx.opts.starts,
            functions.len()
        ));
        let (floor, init) = init_times(&ctx, &functions).await?;
        results.spawn_floor = floor;
        results.init = init;
    }
    if ctx.opts.runs("warm") {
        log(format!(
            "warm latency: {} rounds (after {} warm-up rounds), endpoint and raw interleaved",
            ctx.opts.rounds, ctx.opts.warmup
        ));
        let (warm, runtime_floor, memory) = warm_latency(&ctx).await?;
        results.warm = warm;
        results.runtime_floor = runtime_floor;
        results.memory = memory;
    }
    if ctx.opts.runs("counts") {
        log(format!(
            "round trips: {} counted rounds",
            ctx.opts.count_rounds
        ));
        results.counts = round_trips(&ctx).await?;
    }
    if ctx.opts.runs("load") {
        log(format!(
            "concurrency: {} workers, {} cycles, limit {:?}",
            ctx.opts.workers, ctx.opts.cycles, ctx.opts.time_limit
        ));
        let before = event_count(&ctx).await?;
        let outcome = concurrency(&ctx).await?;
        results.load_events = Some(event_count(&ctx).await? - before);
        results.load = Some(outcome.run);
        results.load_memory = outcome.memory;
        results.leftovers = outcome.leftovers;
        results.open_transactions = outcome.open_transactions;
    }
    if ctx.opts.runs("scale") {
        log(format!(
            "scale: {} rooms beside {}",
            ctx.opts.scale_rooms, ctx.opts.small_rooms
        ));
        results.scale = Some(scale::run(&ctx).await?);
    }
    if ctx.opts.runs("year") {
        log(format!(
            "year: the event tables on {} rooms beside {}",
            ctx.opts.scale_rooms, ctx.opts.small_rooms
        ));
        results.year = Some(year::run(&ctx).await?);
    }
    if ctx.opts.runs("ringout") {
        log(format!(
            "ring-out lag: {} invites on the local main job",
            ctx.opts.ringout_calls
        ));
        results.ringout = Some(ringout::run(&ctx).await?);
    }
    // The same suite runs in the test command (at one budget); a smoke run leaves it there.
    if ctx.opts.runs("fleet") && !ctx.opts.smoke {
        log(format!(
            "fleet: a burst at connection budgets {:?}",
            fleet::BUDGETS
        ));
        results.fleet = Some(fleet::run(&ctx.opts.root, &ctx.log_dir)?);
    }
    if ctx.opts.runs("events") {
        log(format!(
            "business events: {} rounds per endpoint setting",
            ctx.opts.rounds.min(EVENT_ROUNDS)
        ));
        let events_ctx = ctx.with_rounds(ctx.opts.rounds.min(EVENT_ROUNDS));
        results.events = Some(outbox::run(&events_ctx).await?);
    }
    if ctx.opts.runs("keys") {
        log(format!(
            "idempotency keys: {} rounds with and without a key",
            ctx.opts.rounds.min(EVENT_ROUNDS)
        ));
        let keys_ctx = ctx.with_rounds(ctx.opts.rounds.min(EVENT_ROUNDS));
        results.keys = Some(keys::run(&keys_ctx).await?);
    }
    if ctx.opts.runs("metrics") {
        log(format!(
            "metrics: {} rounds with the EMF metrics on and off",
            ctx.opts.rounds
        ));
        results.metrics = Some(emf::run(&ctx).await?);
    }
    results.finish();

    let text = report::render(&results);
    std::fs::write(&ctx.opts.out, text).map_err(|e| format!("{}: {e}", ctx.opts.out.display()))?;
    if ctx.opts.smoke {
        log("smoke run: every phase ran (debug build, tiny counts: the figures mean nothing)");
    } else {
        print!("{}", report::summary_text(&results));
    }
    if let Some(load) = &results.load
        && load.errors > 0
    {
        return Err(format!(
            "{} requests failed under load: {:?}",
            load.errors, load.first_errors
        ));
    }
    if results.load.is_some() && results.leftovers != Some(0) {
        return Err(format!(
            "load left {:?} rooms or rows not ended",
            results.leftovers
        ));
    }
    if let Some(open) = &results.open_transactions
        && open.count != 0
    {
        return Err(format!(
            "{} transactions still open on {} after the load: {:?}",
            open.count, ctx.opts.database, open.detail
        ));
    }
    // A full scan on the large data set fails the run; a smoke run's tables are so small that
    // the optimizer may rightly prefer one, so it only reports them.
    if let Some(scale) = &results.scale
        && !ctx.opts.smoke
    {
        let scans = scale.full_scans();
        if !scans.is_empty() {
            return Err(format!(
                "EXPLAIN shows a full table scan on {} rooms: {}",
                scale.big.rooms,
                scans
                    .iter()
                    .map(|e| format!("{} ({}): {}", e.request, e.part, e.sql))
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
    }
    if let Some(year) = &results.year
        && !ctx.opts.smoke
    {
        let scans: Vec<String> = year
            .explains
            .iter()
            .filter(|e| e.full_scan())
            .map(|e| format!("{} ({}): {}", e.request, e.part, e.sql))
            .collect();
        if !scans.is_empty() {
            return Err(format!(
                "EXPLAIN shows a full table scan on the year's {} events: {}",
                year.big.events,
                scans.join("; ")
            ));
        }
    }
    if let Some(ring) = &results.ringout
        && (ring.missing > 0 || !ring.wrong.is_empty())
    {
        return Err(format!(
            "ring-out: {} of {} invites never rung out, {:?} ended otherwise",
            ring.missing, ring.calls, ring.wrong
        ));
    }
    Ok(ctx.opts.out.clone())
}

/// Business events in the bench database (the load's events/s through the outbox).
async fn event_count(ctx: &Ctx) -> Result<i64, String> {
    let mut db = MySqlConnection::connect(&ctx.db_url)
        .await
        .map_err(|e| e.to_string())?;
    sqlx::query_scalar("SELECT COUNT(*) FROM call_event")
        .fetch_one(&mut db)
        .await
        .map_err(|e| e.to_string())
}

async fn prepare_database(opts: &Options) -> Result<(), String> {
    let (before_host, addr) = split_server_url(&opts.mysql_url).ok_or("bad BENCH_MYSQL_URL")?;
    let server = format!("{before_host}{addr}/?ssl-mode=disabled");
    let mut conn = MySqlConnection::connect(&server)
        .await
        .map_err(|e| format!("MariaDB at {addr}: {e}"))?;
    let drop_sql = format!("DROP DATABASE IF EXISTS `{}`", opts.database);
    let create_sql = format!("CREATE DATABASE `{}`", opts.database);
    for sql in [drop_sql, create_sql] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .map_err(|e| format!("prepare {}: {e}", opts.database))?;
    }
    let url = format!("{before_host}{addr}/{}?ssl-mode=disabled", opts.database);
    let mut db = MySqlConnection::connect(&url)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    MIGRATOR
        .run(&mut db)
        .await
        .map_err(|e| format!("migrate {}: {e}", opts.database))?;
    let client = redis::Client::open(opts.redis_url.as_str()).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("Redis at {}: {e}", opts.redis_url))?;
    let _: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .map_err(|e| format!("Redis: {e}"))?;
    Ok(())
}

async fn server_version(url: &str) -> String {
    match MySqlConnection::connect(url).await {
        Ok(mut c) => sqlx::query_scalar::<_, String>("SELECT VERSION()")
            .fetch_one(&mut c)
            .await
            .unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn redis_version(url: &str) -> String {
    let Ok(text) = redis_info(url, "server").await else {
        return String::new();
    };
    info_field(&text, "redis_version").unwrap_or_default()
}

async fn redis_info(url: &str, section: &str) -> Result<String, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    redis::cmd("INFO")
        .arg(section)
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())
}

fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .map(|v| v.trim().to_owned())
}

/// File size and stripped size of every function binary, and the size of its arm64 build
/// when the cross build (`cargo lambda build --release --arm64`) has left one in target/.
fn sizes(root: &Path, bin_dir: &Path, functions: &[String], scratch: &Path) -> Vec<SizeRow> {
    let arm64_dir = root.join("target/aarch64-unknown-linux-gnu/release");
    let common = [
        root.join("Cargo.toml"),
        root.join("Cargo.lock"),
        root.join("shared"),
    ];
    let common_changed = common.iter().filter_map(|p| newest_mtime(p)).max();
    functions
        .iter()
        .map(|f| {
            let bin = bin_dir.join(f);
            let file = std::fs::metadata(&bin).map(|m| m.len()).unwrap_or(0);
            let copy = scratch.join(format!("{f}.stripped"));
            let stripped = std::process::Command::new("strip")
                .arg("--strip-all")
                .arg("-o")
                .arg(&copy)
                .arg(&bin)
                .status()
                .ok()
                .filter(|s| s.success())
                .and_then(|_| std::fs::metadata(&copy).ok())
                .map(|m| m.len());
            let _ = std::fs::remove_file(&copy);
            let changed = common_changed.max(newest_mtime(&root.join("functions").join(f)));
            let arm64 = arm64_binary(root, &arm64_dir, f).and_then(|path| {
                let m = std::fs::metadata(path).ok()?;
                let built = m.modified().ok()?;
                Some(Arm64 {
                    bytes: m.len(),
                    built: chrono::DateTime::<chrono::Utc>::from(built)
                        .format("%Y-%m-%d %H:%M UTC")
                        .to_string(),
                    current: changed.is_none_or(|c| built >= c),
                })
            });
            SizeRow {
                function: f.clone(),
                file,
                stripped,
                arm64,
            }
        })
        .collect()
}

/// Where the last arm64 cross build left `function`: cargo lambda moves each binary to
/// target/lambda/<function>/bootstrap (whatever the architecture of that build, so the ELF
/// header decides); a plain `cargo build --target aarch64-unknown-linux-gnu` leaves it under
/// the target triple.
fn arm64_binary(root: &Path, arm64_dir: &Path, function: &str) -> Option<PathBuf> {
    const EM_AARCH64: u16 = 183;
    let is_arm64 = |path: &Path| {
        let mut header = [0u8; 20];
        std::fs::File::open(path)
            .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut header))
            .is_ok_and(|()| {
                header.starts_with(b"\x7fELF")
                    && u16::from_le_bytes([header[18], header[19]]) == EM_AARCH64
            })
    };
    [
        root.join("target/lambda").join(function).join("bootstrap"),
        arm64_dir.join(function),
    ]
    .into_iter()
    .find(|path| is_arm64(path))
}

/// The latest modification time of a file, or of any file under a directory (skipping
/// `target`), as a build would see its inputs.
fn newest_mtime(path: &Path) -> Option<std::time::SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .flatten()
        .filter(|e| e.file_name() != "target")
        .filter_map(|e| newest_mtime(&e.path()))
        .max()
}

async fn init_times(
    ctx: &Ctx,
    functions: &[String],
) -> Result<(Option<Summary>, Vec<(String, Summary)>), String> {
    let env = ctx.env(&ctx.db_url, true);
    // One unmeasured start each loads the binaries into the page cache, as a warm host has them.
    for f in functions {
        runtime_api::time_init(&ctx.opts.bin_dir.join(f), f, &env).await?;
    }
    // Round robin, with the spawn floor in the rotation: a slow spell of the machine then
    // touches every function alike instead of whichever happened to be running.
    let mut floor = Vec::with_capacity(ctx.opts.starts);
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(ctx.opts.starts); functions.len()];
    for _ in 0..ctx.opts.starts {
        if let Some(t) = runtime_api::time_spawn_floor("true") {
            floor.push(micros(t));
        }
        for (f, out) in functions.iter().zip(samples.iter_mut()) {
            let bin = ctx.opts.bin_dir.join(f);
            out.push(micros(runtime_api::time_init(&bin, f, &env).await?));
        }
    }
    let floor = (!floor.is_empty()).then(|| summarize(&floor));
    let out = functions
        .iter()
        .zip(samples)
        .map(|(f, s)| (f.clone(), summarize(&s)))
        .collect();
    Ok((floor, out))
}

/// Warm latency of each step, endpoint and raw side by side, then the handlers' own time
/// (from their logs) and the peak memory of each process.
async fn warm_latency(ctx: &Ctx) -> Result<(Vec<WarmRow>, Option<Floors>, Vec<MemoryRow>), String> {
    // Production defaults: rate limits on (fresh uids never reach them).
    let env = ctx.env(&ctx.db_url, true);
    let processes = spawn_step_functions(ctx, &env, 0).await?;
    let mut raw = Raw::connect(&ctx.db_url, &ctx.opts.redis_url, true).await?;
    let echo = runtime_api::RuntimeApi::start()
        .await
        .map_err(|e| format!("echo runtime API: {e}"))?;
    runtime_api::spawn_echo_client(echo.addr())
        .await
        .map_err(|e| format!("echo client: {e}"))?;
    let mut hand_over = Vec::new();
    let mut endpoint: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut baseline: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut floor = Vec::new();
    let total = ctx.opts.warmup + ctx.opts.rounds;
    for round in 0..total {
        let measured = round >= ctx.opts.warmup;
        let room = format!("{}w{round}", ctx.prefix);
        let raw_room = format!("{}x{round}", ctx.prefix);
        let get = proc(&processes, "get-room");
        let (call, expect) = ctx.step_call("floor", &room);
        let t = invoke(get, if measured { "floor" } else { "warm" }, &call, expect).await?;
        if measured {
            floor.push(micros(t));
        }
        let payload = events::api_gateway_v2(&call, "echo", 0)
            .to_string()
            .into_bytes();
        let t = Instant::now();
        match echo.invoke(format!("echo-{round}"), payload).await? {
            runtime_api::Outcome::Response(_) if measured => hand_over.push(micros(t.elapsed())),
            runtime_api::Outcome::Response(_) => {}
            runtime_api::Outcome::Error(_) => return Err("the echo client failed".to_owned()),
        }
        for (step, function) in STEPS {
            let (call, expect) = ctx.step_call(step, &room);
            let label = if measured { step } else { "warm" };
            let p = proc(&processes, function);
            // Alternate which side goes first, so neither always runs on a just-warmed cache.
            let (e, r) = if round % 2 == 0 {
                let e = invoke(p, label, &call, expect).await?;
                (e, raw_step(&mut raw, step, &raw_room).await?)
            } else {
                let r = raw_step(&mut raw, step, &raw_room).await?;
                (invoke(p, label, &call, expect).await?, r)
            };
            if measured {
                endpoint.entry(step).or_default().push(micros(e));
                baseline.entry(step).or_default().push(micros(r));
            }
        }
    }
    let mut handler: HashMap<String, Vec<f64>> = HashMap::new();
    let mut memory = Vec::new();
    let mut seen = Vec::new();
    for (_, function) in STEPS {
        if seen.contains(function) {
            continue;
        }
        seen.push(function);
        let p = proc(&processes, function);
        for (label, v) in handler_times(&p.log) {
            handler.entry(label).or_default().extend(v);
        }
        if let Some((hwm, rss)) = p.memory_kib() {
            // Each step it serves once a round; get-room also serves the no-I/O floor.
            let steps = STEPS.iter().filter(|(_, f)| f == function).count()
                + usize::from(*function == "get-room");
            let invocations = steps * total;
            memory.push(MemoryRow {
                function: function.to_string(),
                hwm_kib: hwm,
                rss_kib: rss,
                invocations,
            });
        }
    }
    let rows = STEPS
        .iter()
        .map(|(step, _)| WarmRow {
            step: step.to_string(),
            endpoint: summarize(endpoint.get(step).map(Vec::as_slice).unwrap_or(&[])),
            raw: summarize(baseline.get(step).map(Vec::as_slice).unwrap_or(&[])),
            handler: handler
                .get(*step)
                .filter(|v| !v.is_empty())
                .map(|v| summarize(v)),
        })
        .collect();
    let floors = Floors {
        end_to_end: summarize(&floor),
        in_handler: handler
            .get("floor")
            .filter(|v| !v.is_empty())
            .map(|v| summarize(v)),
        hand_over: summarize(&hand_over),
    };
    Ok((rows, Some(floors), memory))
}

/// The `elapsed_ms` a function logged for each request, by the label of its request id.
fn handler_times(log: &Path) -> HashMap<String, Vec<f64>> {
    let mut out: HashMap<String, Vec<f64>> = HashMap::new();
    let Ok(text) = std::fs::read_to_string(log) else {
        return out;
    };
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let Some(ms) = v["fields"]["elapsed_ms"].as_f64() else {
            continue;
        };
        let id = v["span"]["request_id"].as_str().or_else(|| {
            v["spans"]
                .as_array()
                .and_then(|s| s.iter().find_map(|s| s["request_id"].as_str()))
        });
        if let Some(label) = id.and_then(|id| id.split('-').next()) {
            out.entry(label.to_owned()).or_default().push(ms * 1000.0);
        }
    }
    out
}

/// Statements and round trips per step, from MariaDB's Questions and from the counting proxy,
/// for the functions and for the raw mirror of their I/O.
async fn round_trips(ctx: &Ctx) -> Result<Vec<CountRow>, String> {
    let upstream = tokio::net::lookup_host(&ctx.db_addr)
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("cannot resolve {}", ctx.db_addr))?;
    let proxy = CountingProxy::start(upstream)
        .await
        .map_err(|e| format!("counting proxy: {e}"))?;
    let proxied = (ctx.proxy_db_url)(&proxy.addr.to_string());
    let env = ctx.env(&proxied, true);
    let processes = spawn_step_functions(ctx, &env, 1).await?;
    let mut raw = Raw::connect(&proxied, &ctx.opts.redis_url, true).await?;
    let mut questions = Questions::connect(&ctx.db_url)
        .await
        .map_err(|e| format!("Questions: {e}"))?;
    let mut redis_commands = RedisCommands::connect(&ctx.opts.redis_url).await?;
    // Lets a connection's background ping on release land inside the step that caused it.
    let settle = Duration::from_millis(if ctx.opts.smoke { 30 } else { 50 });

    struct Sample {
        questions: u64,
        commands: Commands,
        redis: u64,
    }
    let mut fn_samples: HashMap<&str, Vec<Sample>> = HashMap::new();
    let mut raw_samples: HashMap<&str, Vec<Sample>> = HashMap::new();
    let warm = 2;
    for round in 0..warm + ctx.opts.count_rounds {
        let room = format!("{}q{round}", ctx.prefix);
        let raw_room = format!("{}r{round}", ctx.prefix);
        for (step, function) in STEPS {
            for side in ["fn", "raw"] {
                tokio::time::sleep(settle).await;
                let q0 = questions.read().await.map_err(|e| e.to_string())?;
                let c0 = proxy.snapshot();
                let r0 = redis_commands.read().await?;
                if side == "fn" {
                    let (call, expect) = ctx.step_call(step, &room);
                    invoke(proc(&processes, function), step, &call, expect).await?;
                } else {
                    raw_step(&mut raw, step, &raw_room).await?;
                }
                tokio::time::sleep(settle).await;
                let c1 = proxy.snapshot();
                let r1 = redis_commands.read().await?;
                let q1 = questions.read().await.map_err(|e| e.to_string())?;
                if round < warm {
                    continue;
                }
                let sample = Sample {
                    questions: questions.delta(q0, q1),
                    commands: c1.minus(&c0),
                    redis: redis_commands.delta(r0, r1),
                };
                let into = if side == "fn" {
                    &mut fn_samples
                } else {
                    &mut raw_samples
                };
                into.entry(step).or_default().push(sample);
            }
        }
    }
    let range = |v: Vec<u64>| -> (u64, u64) {
        (
            v.iter().copied().min().unwrap_or(0),
            v.iter().copied().max().unwrap_or(0),
        )
    };
    let mut rows = Vec::new();
    for (step, _) in STEPS {
        let f = fn_samples.remove(step).unwrap_or_default();
        let r = raw_samples.remove(step).unwrap_or_default();
        let mut per_command = [0u64; 256];
        for s in &f {
            for (i, n) in s.commands.0.iter().enumerate() {
                per_command[i] += n;
            }
        }
        let n = f.len().max(1) as u64;
        let commands: Vec<(String, f64)> = per_command
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| {
                (
                    counting::command_name(i as u8).to_owned(),
                    *c as f64 / n as f64,
                )
            })
            .collect();
        rows.push(CountRow {
            step: step.to_string(),
            questions: range(f.iter().map(|s| s.questions).collect()),
            statements: range(f.iter().map(|s| s.commands.statements()).collect()),
            pings: range(f.iter().map(|s| s.commands.pings()).collect()),
            prepares: range(f.iter().map(|s| s.commands.prepares()).collect()),
            round_trips: range(f.iter().map(|s| s.commands.round_trips()).collect()),
            raw_statements: range(r.iter().map(|s| s.commands.statements()).collect()),
            redis: range(f.iter().map(|s| s.redis).collect()),
            raw_redis: range(r.iter().map(|s| s.redis).collect()),
            commands,
            own_cost: questions.own_cost(),
        });
    }
    Ok(rows)
}

/// Redis's `total_commands_processed`, read over one connection kept for the purpose.
struct RedisCommands {
    conn: redis::aio::MultiplexedConnection,
    own_cost: u64,
}

impl RedisCommands {
    async fn connect(url: &str) -> Result<RedisCommands, String> {
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        let mut counter = RedisCommands { conn, own_cost: 0 };
        // The INFO itself is a command: the smallest delta of back-to-back reads is its share.
        let mut best = u64::MAX;
        for _ in 0..5 {
            let a = counter.read().await?;
            let b = counter.read().await?;
            best = best.min(b.saturating_sub(a));
        }
        counter.own_cost = best;
        Ok(counter)
    }

    async fn read(&mut self) -> Result<u64, String> {
        let text: String = redis::cmd("INFO")
            .arg("stats")
            .query_async(&mut self.conn)
            .await
            .map_err(|e| e.to_string())?;
        info_field(&text, "total_commands_processed")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| "redis INFO has no total_commands_processed".to_owned())
    }

    fn delta(&self, before: u64, after: u64) -> u64 {
        after.saturating_sub(before).saturating_sub(self.own_cost)
    }
}

/// What the concurrency phase found.
struct LoadOutcome {
    run: gateway::LoadRun,
    memory: Vec<MemoryRow>,
    /// Rooms of the load not ended, plus rows still live in them.
    leftovers: Option<i64>,
    /// Transactions open on the bench database after the load, by the cleanest sample.
    open_transactions: Option<OpenTransactions>,
}

/// Bounded parallel create/join/refused join/leave cycles through the gateway, rate limits
/// off; then the peak memory of the instances, a check that every room the load made has
/// ended, and the transactions still open on the bench database while the instances live.
async fn concurrency(ctx: &Ctx) -> Result<LoadOutcome, String> {
    let env = ctx.env(&ctx.db_url, false);
    let workers = ctx.opts.workers.max(1);
    let mut pools: HashMap<&'static str, Arc<Instances>> = HashMap::new();
    let warm_creator = format!("{}k", ctx.prefix);
    let token = ctx.service_token.clone();
    for function in ["create-room", "join-room", "leave-room"] {
        let mut all = Vec::new();
        for i in 0..workers {
            all.push(
                FunctionProcess::spawn(&ctx.opts.bin_dir, function, &env, &ctx.log_dir, 10 + i)
                    .await?,
            );
        }
        // Warm every instance (its database connection open) with refusals that still reach
        // the database, so nothing is left live that the load could meet: create-room is
        // refused for a creator already in a call, join and leave for a room that does not exist.
        if function == "create-room" {
            let room = format!("{}k", ctx.prefix);
            let call = create_call(&token, &room, &warm_creator);
            invoke(&all[0], "warm", &call, Expect::OK).await?;
        }
        for (i, p) in all.iter().enumerate() {
            let call = match function {
                "create-room" => create_call(&token, &format!("{}k{i}", ctx.prefix), &warm_creator),
                _ => {
                    let path = if function == "join-room" {
                        "/api/participants/join"
                    } else {
                        "/api/participants/leave"
                    };
                    HttpCall::new("POST", path, path).bearer(&token).json(
                        &json!({ "room_name": format!("{}none", ctx.prefix), "uid": warm_creator }),
                    )
                }
            };
            let expect = if function == "create-room" {
                Expect::refused(409, "creator_in_another_call")
            } else {
                Expect::refused(404, "room_not_found")
            };
            invoke(p, "warm", &call, expect).await?;
        }
        pools.insert(function, Arc::new(Instances::new(all)));
    }
    let gw = Gateway::start(pools.clone())
        .await
        .map_err(|e| format!("gateway: {e}"))?;
    let plan = LoadPlan {
        workers,
        cycles: ctx.opts.cycles,
        time_limit: ctx.opts.time_limit,
        token,
        prefix: ctx.prefix.clone(),
    };
    let run = gateway::drive(gw.addr, &plan).await;
    let mut memory = Vec::new();
    for (function, pool) in &pools {
        let mut worst: Option<MemoryRow> = None;
        for p in pool.all() {
            if let Some((hwm, rss)) = p.memory_kib()
                && worst.as_ref().is_none_or(|w| hwm > w.hwm_kib)
            {
                worst = Some(MemoryRow {
                    function: function.to_string(),
                    hwm_kib: hwm,
                    rss_kib: rss,
                    invocations: 0,
                });
            }
        }
        memory.extend(worst);
    }
    memory.sort_by(|a, b| a.function.cmp(&b.function));
    let leftovers = leftovers(ctx).await.ok();
    // Checked while every instance still holds its kept connection: one that a refusal left
    // inside a transaction would show here.
    let open_transactions = match open_transactions(ctx).await {
        Ok(open) => Some(open),
        Err(e) => {
            log(format!("open transactions: not checked: {e}"));
            None
        }
    };
    Ok(LoadOutcome {
        run,
        memory,
        leftovers,
        open_transactions,
    })
}

/// The transactions open on the bench database, seen from `information_schema` (InnoDB's
/// transactions joined with the sessions that hold them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpenTransactions {
    /// In the cleanest sample (0 as soon as one sample is clean).
    pub count: i64,
    /// Samples taken (one every 100 ms for up to 2 s).
    pub samples: usize,
    /// What the open ones were doing, when some stayed open.
    pub detail: Vec<String>,
}

/// Polls for up to 2 s until no session on the bench database (other than this one) has an
/// InnoDB transaction: one in flight at the moment of a check is not a leak, one that stays
/// open through every sample is.
async fn open_transactions(ctx: &Ctx) -> Result<OpenTransactions, sqlx::Error> {
    // One text column per transaction, so no column type of information_schema matters.
    const SQL: &str = "SELECT CAST(CONCAT('thread ', t.trx_mysql_thread_id, ': ', \
         t.trx_state, ' since ', t.trx_started, ', ', t.trx_rows_locked, ' rows locked, ', \
         'session ', p.command, ' for ', p.time, ' s') AS CHAR) \
         FROM information_schema.innodb_trx t \
         JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id \
         WHERE p.db = ? AND p.id <> CONNECTION_ID()";
    let mut c = MySqlConnection::connect(&ctx.db_url).await?;
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut best: Option<OpenTransactions> = None;
    let mut samples = 0;
    loop {
        let open: Vec<String> = sqlx::query_scalar(SQL)
            .bind(&ctx.opts.database)
            .fetch_all(&mut c)
            .await?;
        samples += 1;
        let sample = OpenTransactions {
            count: open.len() as i64,
            samples,
            detail: open,
        };
        if best.as_ref().is_none_or(|b| sample.count < b.count) {
            best = Some(sample);
        }
        if best.as_ref().is_some_and(|b| b.count == 0) || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = c.close().await;
    let mut best = best.unwrap_or_default();
    best.samples = samples;
    Ok(best)
}

/// Rooms of the load that did not end, plus rows still ringing or joined in them.
async fn leftovers(ctx: &Ctx) -> Result<i64, sqlx::Error> {
    let mut c = MySqlConnection::connect(&ctx.db_url).await?;
    let pattern = format!("{}c%", ctx.prefix);
    let rooms: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM call_room WHERE room_name LIKE ? AND status <> 2")
            .bind(&pattern)
            .fetch_one(&mut c)
            .await?;
    let rows: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM call_participant WHERE room_name LIKE ? AND status IN (0, 1)",
    )
    .bind(&pattern)
    .fetch_one(&mut c)
    .await?;
    Ok(rooms + rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_split_into_credentials_and_address() {
        assert_eq!(
            split_server_url("mysql://root@127.0.0.1:3306"),
            Some(("mysql://root@".to_owned(), "127.0.0.1:3306".to_owned()))
        );
        assert_eq!(
            split_server_url("mysql://u:p@w@db:3307/x?y=1"),
            Some(("mysql://u:p@w@".to_owned(), "db:3307".to_owned()))
        );
        assert_eq!(split_server_url("127.0.0.1:3306"), None);
    }

    #[test]
    fn handler_times_are_read_from_json_log_lines() {
        let dir = std::env::temp_dir().join(format!("bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let log = dir.join("f.log");
        std::fs::write(
            &log,
            concat!(
                r#"{"level":"INFO","fields":{"message":"ok","status":200,"elapsed_ms":1.5},"span":{"function":"join-room","request_id":"join-000001-42","name":"request"}}"#,
                "\n",
                r#"{"level":"WARN","fields":{"message":"refused","status":400,"elapsed_ms":0.25},"spans":[{"request_id":"floor-000002-42"}]}"#,
                "\nnot json\n"
            ),
        )
        .expect("write log");
        let times = handler_times(&log);
        assert_eq!(times.get("join"), Some(&vec![1500.0]));
        assert_eq!(times.get("floor"), Some(&vec![250.0]));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_workspace_functions_are_found() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let names = function_names(&root).expect("functions");
        for (_, function) in STEPS {
            assert!(
                names.iter().any(|n| n == function),
                "{function} is not a function"
            );
        }
    }
}
