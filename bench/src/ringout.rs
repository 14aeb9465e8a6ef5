//! The ring-out phase: how long after an invite's ring deadline the sweeper writes it down.
//!
//! The local main job runs as a user starts it (`DATABASE_URL=mysql://…/call_bench_ringout
//! scripts/dev.sh --reset`, its own build, every function under `cargo lambda watch`, the
//! sweeper invoked every SWEEP_INTERVAL_SECONDS=1), in a session of its own so the whole tree
//! can be stopped at the end. The harness creates calls over HTTP, each ringing one invitee
//! for 5 s, staggered so the deadlines fall at every phase of the sweep's second; then polls
//! the invitees' rows from a connection of its own until each shows status 4 (missed).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use call_shared::auth::Auth;
use chrono::NaiveDateTime;
use serde_json::{Value, json};
use sqlx::mysql::MySqlConnection;
use sqlx::{Connection, Row};
use tokio::io::BufReader;
use tokio::net::TcpStream;

use crate::report::RingoutOutcome;
use crate::stats::summarize;
use crate::{Ctx, http, log};

/// Each measured invite rings this long.
pub const RING_TIMEOUT_SECS: u64 = 5;
pub const SWEEP_INTERVAL_SECS: u64 = 1;
/// How often the harness reads the invitees' rows.
pub const POLL: Duration = Duration::from_millis(25);
/// The job's first start builds the workspace (and may wait for another build's lock).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// A function's first invocation under `cargo lambda watch` starts its binary.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Settings that would change what the job does; the phase sets its own (as the HTTP suites
/// scrub them, tests/e2e/conftest.py).
const SCRUBBED_ENV: &[&str] = &[
    "DATABASE_URL",
    "REDIS_URL",
    "LIVEKIT_URL",
    "LIVEKIT_CLIENT_URL",
    "LIVEKIT_API_KEY",
    "LIVEKIT_API_SECRET",
    "AUTH_JWT_SECRET",
    "RING_TIMEOUT_SECONDS",
    "LIVEKIT_TOKEN_TTL_SECONDS",
    "MAX_PARTICIPANTS_LIMIT",
    "MAX_CALL_SECONDS",
    "RATE_LIMIT_CREATE_PER_MIN",
    "RATE_LIMIT_JOIN_PER_MIN",
    "RATE_LIMIT_INVITE_PER_MIN",
    "SECRETS_ARN",
    "AWS_ENDPOINT_URL",
    "SWEEP_INTERVAL_SECONDS",
    "SWEEP_LOOP_SECONDS",
    "HOST",
    "LAMBDA_CONCURRENCY",
    "APP_ENV",
    "EVENT_ENDPOINTS",
];

/// scripts/dev.sh in a session of its own; dropping it stops every process of that session.
struct DevJob {
    child: Child,
    log: std::path::PathBuf,
}

impl DevJob {
    fn start(root: &Path, database_url: &str, port: u16, log: &Path) -> Result<DevJob, String> {
        let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new("setsid");
        // setsid(1) runs bash in a new session without forking (the child is not a process
        // group leader), so the child's pid is the session id.
        cmd.arg("bash")
            .arg(root.join("scripts/dev.sh"))
            .arg("--reset")
            .current_dir(root);
        for name in SCRUBBED_ENV {
            cmd.env_remove(name);
        }
        cmd.env("DATABASE_URL", database_url)
            .env("PORT", port.to_string())
            .env("DEV_NO_RELOAD", "1")
            .env("SWEEP_INTERVAL_SECONDS", SWEEP_INTERVAL_SECS.to_string())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = cmd
            .spawn()
            .map_err(|e| format!("start scripts/dev.sh (setsid): {e}"))?;
        Ok(DevJob {
            child,
            log: log.to_owned(),
        })
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// SIGTERM to the session (dev.sh stops `cargo lambda watch` and the sweeper loop on it),
    /// then SIGKILL to whatever is left, as tests/e2e/conftest.py stops the job.
    fn stop(&mut self) {
        let sid = self.child.id();
        for (signal, grace) in [("-TERM", 15), ("-KILL", 10)] {
            let mut targets = session_pids(sid);
            if self.exited().is_none() {
                targets.push(sid);
            }
            if targets.is_empty() {
                break;
            }
            let _ = Command::new("kill")
                .arg(signal)
                .arg("--")
                .arg(format!("-{sid}"))
                .stderr(Stdio::null())
                .status();
            let mut args = vec![signal.to_owned(), "--".to_owned()];
            args.extend(targets.iter().map(u32::to_string));
            let _ = Command::new("kill")
                .args(&args)
                .stderr(Stdio::null())
                .status();
            let until = Instant::now() + Duration::from_secs(grace);
            while Instant::now() < until {
                if self.exited().is_some() && session_pids(sid).is_empty() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        let _ = self.child.wait();
    }
}

impl Drop for DevJob {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Processes in session `sid` (the job's tree, including children that moved to a process
/// group of their own).
fn session_pids(sid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // pid (comm) state ppid pgrp session …; comm may hold spaces or parentheses.
            let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
            (fields.get(3)?.parse::<u32>().ok()? == sid).then_some(pid)
        })
        .collect()
}

fn free_port() -> Result<u16, String> {
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        // Never a developer's running instance.
        if port != 8080 {
            return Ok(port);
        }
    }
}

/// One HTTP/1.1 request to the job; the status and the body.
async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<(u16, Value), String> {
    let exchange = async {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (read, mut write) = stream.into_split();
        let bearer = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("connection", "close")];
        if let Some(b) = &bearer {
            headers.push(("authorization", b.as_str()));
        }
        let payload = body.map(Value::to_string).unwrap_or_default();
        if body.is_some() {
            headers.push(("content-type", "application/json"));
        }
        http::write_request(&mut write, method, path, &headers, payload.as_bytes()).await?;
        http::read_response(&mut BufReader::new(read)).await
    };
    let response = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("{method} {path}: no answer within {REQUEST_TIMEOUT:?}"))?
        .map_err(|e| format!("{method} {path}: {e}"))?;
    let value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
    Ok((response.status, value))
}

async fn wait_healthy(job: &mut DevJob, addr: SocketAddr) -> Result<(), String> {
    let started = Instant::now();
    loop {
        if let Some(status) = job.exited() {
            return Err(format!(
                "scripts/dev.sh exited ({status}) before /health answered; log tail:\n{}",
                job.tail()
            ));
        }
        if started.elapsed() > STARTUP_TIMEOUT {
            return Err(format!(
                "GET /health did not answer 200 within {STARTUP_TIMEOUT:?}; log tail:\n{}",
                job.tail()
            ));
        }
        if let Ok((200, _)) = http_request(addr, "GET", "/health", None, None).await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Creates one call ringing `{room}b` for RING_TIMEOUT_SECS; its ring deadline as stored.
async fn ring(
    addr: SocketAddr,
    token: &str,
    room: &str,
    conn: &mut MySqlConnection,
) -> Result<NaiveDateTime, String> {
    let body = json!({
        "creator": format!("{room}a"),
        "room_name": room,
        "call_type": 1,
        "invite_on": 1,
        "uids": [format!("{room}b")],
        "ring_timeout_seconds": RING_TIMEOUT_SECS,
    });
    let (status, reply) =
        http_request(addr, "POST", "/api/rooms", Some(token), Some(&body)).await?;
    if status != 200 || reply["code"].as_i64() != Some(0) {
        return Err(format!("POST /api/rooms {room}: {status} {reply}"));
    }
    // The stored deadline has milliseconds; the reply's has whole seconds.
    sqlx::query_scalar::<_, Option<NaiveDateTime>>(
        "SELECT ring_deadline FROM call_participant WHERE room_name = ? AND uid = ?",
    )
    .bind(room)
    .bind(format!("{room}b"))
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| e.to_string())?
    .flatten()
    .ok_or_else(|| format!("{room}: the invitee has no ring deadline"))
}

/// The invitee rows of `prefix…` rooms that no longer ring: (room, status, reason).
async fn rung_out(
    conn: &mut MySqlConnection,
    prefix: &str,
) -> Result<Vec<(String, i16, Option<String>)>, String> {
    let rows = sqlx::query(
        "SELECT room_name, status, reason FROM call_participant \
         WHERE room_name LIKE ? AND uid = CONCAT(room_name, 'b') AND status <> 0",
    )
    .bind(format!("{prefix}%"))
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| e.to_string())?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("room_name")?,
                r.try_get("status")?,
                r.try_get("reason")?,
            ))
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(|e| e.to_string())
}

fn lag_us(at: NaiveDateTime, deadline: NaiveDateTime) -> f64 {
    (at - deadline).num_microseconds().unwrap_or(i64::MAX) as f64
}

pub async fn run(ctx: &Ctx) -> Result<RingoutOutcome, String> {
    let database = if ctx.opts.smoke {
        "call_bench_ringout_smoke"
    } else {
        "call_bench_ringout"
    };
    let calls = ctx.opts.ringout_calls.max(1);
    // The deadlines spread over most of the ring timeout, all created before the first passes.
    let stagger = Duration::from_millis(if ctx.opts.smoke { 1000 } else { 4000 });
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let job_url = format!("{}/{database}", ctx.server);
    log(format!(
        "ringout: DATABASE_URL={job_url} PORT={port} scripts/dev.sh --reset (builds the workspace first)"
    ));
    let started = Instant::now();
    let mut job = DevJob::start(
        &ctx.opts.root,
        &job_url,
        port,
        &ctx.log_dir.join("ringout-dev.log"),
    )?;
    let outcome = measure(ctx, &mut job, addr, database, calls, stagger, started).await;
    job.stop();
    outcome
}

async fn measure(
    ctx: &Ctx,
    job: &mut DevJob,
    addr: SocketAddr,
    database: &str,
    calls: usize,
    stagger: Duration,
    started: Instant,
) -> Result<RingoutOutcome, String> {
    wait_healthy(job, addr).await?;
    let startup_secs = started.elapsed().as_secs_f64();
    log(format!(
        "ringout: the job answers after {startup_secs:.0} s"
    ));
    let auth = Auth::new(call_shared::config::LOCAL_AUTH_JWT_SECRET);
    let token = auth
        .mint("bench-ringout", true, 3600)
        .map_err(|e| format!("mint: {e:?}"))?;
    let mut conn = MySqlConnection::connect(&ctx.server_url(database))
        .await
        .map_err(|e| format!("{database}: {e}"))?;
    let prefix = format!("{}o", ctx.prefix);

    // One unmeasured invite first: create-room's and ring-timeout's first invocations start
    // their binaries under `cargo lambda watch`; the measured ones meet a running job.
    let warm = format!("{prefix}w");
    ring(addr, &token, &warm, &mut conn).await?;
    let until = Instant::now() + REQUEST_TIMEOUT;
    while rung_out(&mut conn, &warm).await?.is_empty() {
        if Instant::now() > until || job.exited().is_some() {
            return Err(format!(
                "ringout: the warm-up invite was not rung out; log tail:\n{}",
                job.tail()
            ));
        }
        tokio::time::sleep(POLL).await;
    }

    log(format!(
        "ringout: {calls} invites of {RING_TIMEOUT_SECS} s over {:.1} s, rows polled every {} ms",
        stagger.as_secs_f64(),
        POLL.as_millis()
    ));
    let measured = format!("{prefix}m");
    let spacing = stagger / calls as u32;
    let mut deadlines = Vec::with_capacity(calls);
    let t0 = Instant::now();
    for i in 0..calls {
        let at = t0 + spacing * i as u32;
        tokio::time::sleep_until(at.into()).await;
        let room = format!("{measured}{i:03}");
        let deadline = ring(addr, &token, &room, &mut conn).await?;
        deadlines.push((room, deadline));
    }
    let last = deadlines.iter().map(|(_, d)| *d).max();
    // Per invite: (upper, lower) bound of the lag. The sweep stamps the row with the deadline
    // itself (the instant the rule took effect), so only reading it tells when it was written:
    // after the previous read was sent (that one did not see it), before this one answered.
    let mut observed: Vec<Option<(f64, f64)>> = vec![None; calls];
    let mut wrong = Vec::new();
    let give_up = Duration::from_secs(30);
    let mut previous = chrono::Utc::now().naive_utc();
    loop {
        let sent = chrono::Utc::now().naive_utc();
        let rows = rung_out(&mut conn, &measured).await?;
        let now = chrono::Utc::now().naive_utc();
        for (room, status, reason) in rows {
            let Some(i) = deadlines.iter().position(|(r, _)| *r == room) else {
                continue;
            };
            if observed[i].is_some() {
                continue;
            }
            let deadline = deadlines[i].1;
            observed[i] = Some((lag_us(now, deadline), lag_us(previous, deadline)));
            if status != 4 || reason.as_deref() != Some("timeout") {
                wrong.push(format!("{room}: status {status}, reason {reason:?}"));
            }
        }
        let done = observed.iter().all(Option::is_some);
        let late = last.is_some_and(|l| now > l + give_up);
        if done || late || job.exited().is_some() {
            break;
        }
        previous = sent;
        tokio::time::sleep(POLL).await;
    }
    let _ = conn.close().await;
    let seen: Vec<(f64, f64)> = observed.iter().flatten().copied().collect();
    Ok(RingoutOutcome {
        database: database.to_owned(),
        calls,
        ring_timeout_secs: RING_TIMEOUT_SECS,
        sweep_interval_secs: SWEEP_INTERVAL_SECS,
        poll_ms: POLL.as_millis() as u64,
        stagger_secs: stagger.as_secs_f64(),
        startup_secs,
        observed: summarize(&seen.iter().map(|s| s.0).collect::<Vec<_>>()),
        lower: summarize(&seen.iter().map(|s| s.1).collect::<Vec<_>>()),
        missing: calls - seen.len(),
        wrong,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_harness_belongs_to_its_own_session() {
        // The test process is in some session; its own pid is among that session's processes.
        let stat = std::fs::read_to_string("/proc/self/stat").expect("stat");
        let fields: Vec<&str> = stat[stat.rfind(')').expect(")") + 2..]
            .split_whitespace()
            .collect();
        let sid: u32 = fields[3].parse().expect("session id");
        assert!(session_pids(sid).contains(&std::process::id()));
    }

    #[test]
    fn lags_are_signed_microseconds() {
        let d = chrono::DateTime::from_timestamp_millis(1_000_000)
            .expect("t")
            .naive_utc();
        assert_eq!(lag_us(d + chrono::Duration::milliseconds(1500), d), 1.5e6);
        assert_eq!(lag_us(d - chrono::Duration::milliseconds(2), d), -2000.0);
    }

    #[test]
    fn the_token_is_signed_with_the_secret_the_local_job_uses() {
        let config = call_shared::config::Config::from_lookup(
            |name| match name {
                "APP_ENV" => Some("local".to_owned()),
                "DATABASE_URL" => Some("mysql://root@127.0.0.1:3306/x".to_owned()),
                _ => None,
            },
            Default::default(),
        )
        .expect("the local configuration");
        assert_eq!(
            config.auth_jwt_secret,
            call_shared::config::LOCAL_AUTH_JWT_SECRET
        );
        let dev = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/dev.sh"),
        )
        .expect("dev.sh");
        assert!(dev.contains("export APP_ENV=local"));
    }
}
