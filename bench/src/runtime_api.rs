//! A minimal local Lambda Runtime API (the 2018-06-01 interface the lambda_runtime crate
//! polls) and the function processes driven through it: one process, one Runtime API, one
//! invocation at a time, as on Lambda.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::http;

pub const NEXT_PATH: &str = "/2018-06-01/runtime/invocation/next";
const INVOCATION_PREFIX: &str = "/2018-06-01/runtime/invocation/";
const INIT_ERROR_PATH: &str = "/2018-06-01/runtime/init/error";
const INVOKE_TIMEOUT: Duration = Duration::from_secs(15);

/// How an invocation ended, as the function reported it.
#[derive(Debug)]
pub enum Outcome {
    Response(Vec<u8>),
    Error(Vec<u8>),
}

struct Invocation {
    id: String,
    payload: Vec<u8>,
    reply: oneshot::Sender<Outcome>,
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Outcome>>>>;

/// One Runtime API endpoint on 127.0.0.1 for one function process.
pub struct RuntimeApi {
    addr: SocketAddr,
    queue: mpsc::Sender<Invocation>,
    init_error: Arc<Mutex<Option<String>>>,
}

impl RuntimeApi {
    pub async fn start() -> std::io::Result<RuntimeApi> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (queue, rx) = mpsc::channel::<Invocation>(64);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let pending: Pending = Arc::default();
        let init_error: Arc<Mutex<Option<String>>> = Arc::default();
        let errors = init_error.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream, rx.clone(), pending.clone(), errors.clone()));
            }
        });
        Ok(RuntimeApi {
            addr,
            queue,
            init_error,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Hands `payload` to the function's next poll and waits for its answer.
    pub async fn invoke(&self, id: String, payload: Vec<u8>) -> Result<Outcome, String> {
        let (reply, rx) = oneshot::channel();
        self.queue
            .send(Invocation { id, payload, reply })
            .await
            .map_err(|_| "runtime API stopped".to_owned())?;
        match tokio::time::timeout(INVOKE_TIMEOUT, rx).await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(_)) => Err("the invocation was dropped".to_owned()),
            Err(_) => {
                let init = self.init_error.lock().ok().and_then(|e| e.clone());
                Err(match init {
                    Some(e) => format!("function failed to start: {e}"),
                    None => format!("no answer within {INVOKE_TIMEOUT:?}"),
                })
            }
        }
    }
}

async fn serve(
    stream: TcpStream,
    queue: Arc<tokio::sync::Mutex<mpsc::Receiver<Invocation>>>,
    pending: Pending,
    init_error: Arc<Mutex<Option<String>>>,
) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    while let Ok(Some(req)) = http::read_request(&mut read).await {
        let written = if req.method == "GET" && req.target == NEXT_PATH {
            // Long poll: the function waits here until the harness has an event for it.
            let next = queue.lock().await.recv().await;
            let Some(inv) = next else { return };
            if let Ok(mut map) = pending.lock() {
                map.insert(inv.id.clone(), inv.reply);
            }
            let deadline = (chrono::Utc::now().timestamp_millis() + 30_000).to_string();
            http::write_response(
                &mut write,
                200,
                &[
                    ("content-type", "application/json"),
                    ("lambda-runtime-aws-request-id", &inv.id),
                    ("lambda-runtime-deadline-ms", &deadline),
                    (
                        "lambda-runtime-invoked-function-arn",
                        "arn:aws:lambda:us-east-1:123456789012:function:bench",
                    ),
                    (
                        "lambda-runtime-trace-id",
                        "Root=1-00000000-000000000000000000000000",
                    ),
                ],
                &inv.payload,
            )
            .await
        } else if req.method == "POST" && req.target == INIT_ERROR_PATH {
            if let Ok(mut e) = init_error.lock() {
                *e = Some(crate::events::lossy(&req.body));
            }
            http::write_response(&mut write, 202, &[], b"{\"status\":\"OK\"}").await
        } else if let Some((id, kind)) = req
            .target
            .strip_prefix(INVOCATION_PREFIX)
            .and_then(|rest| rest.split_once('/'))
            .filter(|_| req.method == "POST")
        {
            let reply = pending.lock().ok().and_then(|mut map| map.remove(id));
            let known = reply.is_some();
            if let Some(reply) = reply {
                let _ = reply.send(match kind {
                    "response" => Outcome::Response(req.body),
                    _ => Outcome::Error(req.body),
                });
            }
            let status = if known { 202 } else { 404 };
            http::write_response(&mut write, status, &[], b"{\"status\":\"OK\"}").await
        } else {
            http::write_response(&mut write, 404, &[], b"{}").await
        };
        if written.is_err() {
            return;
        }
    }
    let _ = write.shutdown().await;
}

/// A stand-in function in the harness itself: polls `/next` and answers every event at once
/// with a fixed reply. Timing invocations against it gives the cost of the Runtime API
/// hand-over alone (two loopback HTTP exchanges and their wake-ups), without any function.
pub async fn spawn_echo_client(api: SocketAddr) -> std::io::Result<()> {
    let stream = TcpStream::connect(api).await?;
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    tokio::spawn(async move {
        let reply = br#"{"statusCode":400,"headers":{},"body":"{}","isBase64Encoded":false}"#;
        loop {
            if http::write_request(&mut write, "GET", NEXT_PATH, &[], b"")
                .await
                .is_err()
            {
                return;
            }
            let Ok(event) = http::read_response(&mut read).await else {
                return;
            };
            let id = http::header(&event.headers, "lambda-runtime-aws-request-id")
                .unwrap_or_default()
                .to_owned();
            let path = format!("{INVOCATION_PREFIX}{id}/response");
            let posted = http::write_request(&mut write, "POST", &path, &[], reply).await;
            if posted.is_err() || http::read_response(&mut read).await.is_err() {
                return;
            }
        }
    });
    Ok(())
}

/// Environment a function gets in the benchmark: production-shaped, no development defaults.
#[derive(Debug, Clone)]
pub struct FunctionEnv {
    pub vars: Vec<(String, String)>,
}

impl FunctionEnv {
    fn apply(&self, cmd: &mut Command, name: &str, runtime_api: SocketAddr) {
        cmd.env_clear();
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
        cmd.env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
            .env("AWS_LAMBDA_RUNTIME_API", runtime_api.to_string());
    }
}

/// A running function binary with its own Runtime API.
pub struct FunctionProcess {
    pub name: String,
    pub log: PathBuf,
    /// Under a profiler, which writes its data on SIGTERM but not on SIGKILL.
    wrapped: bool,
    child: Mutex<Child>,
    api: RuntimeApi,
    next_id: AtomicU64,
}

impl FunctionProcess {
    pub async fn spawn(
        bin_dir: &Path,
        name: &str,
        env: &FunctionEnv,
        log_dir: &Path,
        instance: usize,
    ) -> Result<FunctionProcess, String> {
        let api = RuntimeApi::start()
            .await
            .map_err(|e| format!("runtime API for {name}: {e}"))?;
        let log = log_dir.join(format!("{name}-{instance}.log"));
        let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("{}: {e}", log.display()))?;
        // BENCH_FUNCTION_WRAPPER runs the warm processes under a profiler, e.g.
        // "/usr/bin/valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p".
        let wrapper = std::env::var("BENCH_FUNCTION_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let wrapped = !wrapper.trim().is_empty();
        let mut cmd = match words.next() {
            Some(program) => {
                let mut cmd = Command::new(program);
                cmd.args(words).arg(bin_dir.join(name));
                cmd
            }
            None => Command::new(bin_dir.join(name)),
        };
        env.apply(&mut cmd, name, api.addr());
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .map_err(|e| format!("start {}: {e}", bin_dir.join(name).display()))?;
        Ok(FunctionProcess {
            name: name.to_owned(),
            log,
            wrapped,
            child: Mutex::new(child),
            api,
            next_id: AtomicU64::new(0),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.lock().map(|c| c.id()).unwrap_or(0)
    }

    /// One invocation; the request id is `<label>-<n>` so log lines can be traced back.
    pub async fn invoke(&self, label: &str, payload: Vec<u8>) -> Result<(String, Vec<u8>), String> {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let id = format!("{label}-{n:06}-{}", self.pid());
        match self.api.invoke(id.clone(), payload).await {
            Ok(Outcome::Response(body)) => Ok((id, body)),
            Ok(Outcome::Error(body)) => Err(format!(
                "{} reported an invocation error: {}",
                self.name,
                crate::events::lossy(&body)
            )),
            Err(e) => Err(format!("{}: {e}{}", self.name, self.exit_note())),
        }
    }

    fn exit_note(&self) -> String {
        let status = self
            .child
            .lock()
            .ok()
            .and_then(|mut c| c.try_wait().ok().flatten());
        let tail = std::fs::read_to_string(&self.log)
            .map(|t| {
                let lines: Vec<&str> = t.lines().collect();
                lines[lines.len().saturating_sub(5)..].join("\n")
            })
            .unwrap_or_default();
        match status {
            Some(s) => format!(" (process exited: {s}; log tail:\n{tail})"),
            None => String::new(),
        }
    }

    /// Peak and current resident set size in KiB, from /proc.
    pub fn memory_kib(&self) -> Option<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        };
        Some((field("VmHWM:")?, field("VmRSS:")?))
    }
}

impl Drop for FunctionProcess {
    fn drop(&mut self) {
        if let Ok(mut child) = self.child.lock() {
            let terminated = self.wrapped
                && Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status()
                    .is_ok_and(|s| s.success());
            if !terminated {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// Process start to the first `GET …/invocation/next`: one fresh process and one fresh
/// listener per start, so nothing from an earlier start can answer for this one.
pub async fn time_init(bin: &Path, name: &str, env: &FunctionEnv) -> Result<Duration, String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let mut first_poll = tokio::spawn(async move {
        let (stream, _) = listener.accept().await?;
        let mut read = BufReader::new(stream);
        let req = http::read_request(&mut read).await?;
        let at = Instant::now();
        Ok::<_, std::io::Error>((at, req.map(|r| format!("{} {}", r.method, r.target))))
    });
    let mut cmd = Command::new(bin);
    env.apply(&mut cmd, name, addr);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("start {}: {e}", bin.display()))?;
    // Wait for the poll, but notice at once a process that stops at init (bad configuration).
    let polled = loop {
        tokio::select! {
            polled = &mut first_poll => break Some(polled),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {
                let exited = matches!(child.try_wait(), Ok(Some(_)));
                if exited || started.elapsed() > Duration::from_secs(10) {
                    first_poll.abort();
                    break None;
                }
            }
        }
    };
    let _ = child.kill();
    let stderr = child
        .wait_with_output()
        .map(|o| crate::events::lossy(&o.stderr))
        .unwrap_or_default();
    match polled {
        Some(Ok(Ok((at, Some(line))))) if line == format!("GET {NEXT_PATH}") => {
            Ok(at.duration_since(started))
        }
        Some(Ok(Ok((_, line)))) => Err(format!("{name}: first request was {line:?}, not a poll")),
        Some(Ok(Err(e))) => Err(format!("{name}: {e}; stderr: {stderr}")),
        Some(Err(e)) => Err(format!("{name}: {e}")),
        None => Err(format!(
            "{name}: stopped or hung before its first poll; stderr: {stderr}"
        )),
    }
}

/// Spawn to exit of a trivial program: what process creation alone costs on this machine.
pub fn time_spawn_floor(program: &str) -> Option<Duration> {
    let started = Instant::now();
    let status = Command::new(program)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?;
    status.success().then(|| started.elapsed())
}
