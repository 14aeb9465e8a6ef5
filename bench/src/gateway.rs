//! A local stand-in for API Gateway in front of warm function instances, and the bounded load
//! driver that runs create/join/refused join/leave cycles through it over HTTP on 127.0.0.1.
//!
//! Like Lambda, an instance serves one request at a time and the gateway picks an idle one;
//! unlike `cargo lambda watch`, it adds no build watcher or scheduler of its own, so the
//! figure is about the functions, not the development tool.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::events::{self, Expect, HttpCall};
use crate::http;
use crate::runtime_api::FunctionProcess;
use crate::stats::micros;

/// The routes of the functions the harness drives, as in the workspace router.
pub const ROUTES: &[(&str, &str, &str)] = &[
    ("POST", "/api/rooms", "create-room"),
    ("GET", "/api/rooms", "list-rooms"),
    ("GET", "/api/rooms/{room_name}", "get-room"),
    ("POST", "/api/participants/join", "join-room"),
    ("POST", "/api/participants/leave", "leave-room"),
];

/// Which function serves `method path`, with the route it matched.
pub fn route(method: &str, path: &str) -> Option<(&'static str, &'static str)> {
    ROUTES
        .iter()
        .find(|(m, pattern, _)| *m == method && events::path_parameters(pattern, path).is_some())
        .map(|(_, pattern, function)| (*pattern, *function))
}

/// Warm instances of one function; a request waits for an idle one.
pub struct Instances {
    idle: Mutex<VecDeque<Arc<FunctionProcess>>>,
    available: Semaphore,
    all: Vec<Arc<FunctionProcess>>,
}

impl Instances {
    pub fn new(all: Vec<FunctionProcess>) -> Instances {
        let all: Vec<Arc<FunctionProcess>> = all.into_iter().map(Arc::new).collect();
        Instances {
            idle: Mutex::new(all.iter().cloned().collect()),
            available: Semaphore::new(all.len()),
            all,
        }
    }

    pub fn all(&self) -> &[Arc<FunctionProcess>] {
        &self.all
    }

    pub async fn invoke(&self, label: &str, payload: Vec<u8>) -> Result<Vec<u8>, String> {
        let _permit = self
            .available
            .acquire()
            .await
            .map_err(|_| "instances closed".to_owned())?;
        let instance = self
            .idle
            .lock()
            .ok()
            .and_then(|mut q| q.pop_front())
            .ok_or_else(|| "no idle instance".to_owned())?;
        let result = instance.invoke(label, payload).await;
        if let Ok(mut q) = self.idle.lock() {
            q.push_back(instance);
        }
        result.map(|(_, body)| body)
    }
}

pub struct Gateway {
    pub addr: SocketAddr,
}

impl Gateway {
    pub async fn start(
        functions: HashMap<&'static str, Arc<Instances>>,
    ) -> std::io::Result<Gateway> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let functions = Arc::new(functions);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream, functions.clone()));
            }
        });
        Ok(Gateway { addr })
    }
}

async fn serve(stream: TcpStream, functions: Arc<HashMap<&'static str, Arc<Instances>>>) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    while let Ok(Some(req)) = http::read_request(&mut read).await {
        let (status, body) = match forward(&req, &functions).await {
            Ok(reply) => (reply.status, reply.body.into_bytes()),
            Err(e) => (502, json!({ "gateway_error": e }).to_string().into_bytes()),
        };
        let headers = [("content-type", "application/json")];
        if http::write_response(&mut write, status, &headers, &body)
            .await
            .is_err()
        {
            return;
        }
    }
}

async fn forward(
    req: &http::Request,
    functions: &HashMap<&'static str, Arc<Instances>>,
) -> Result<events::Reply, String> {
    let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
    let (pattern, function) =
        route(&req.method, path).ok_or_else(|| format!("no route for {} {path}", req.method))?;
    let instances = functions
        .get(function)
        .ok_or_else(|| format!("{function} is not running"))?;
    let mut call = HttpCall::new(&req.method, pattern, path).query(query);
    call.headers = req
        .headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("content-length"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    if !req.body.is_empty() {
        call.body = Some(String::from_utf8_lossy(&req.body).into_owned());
    }
    let payload = events::api_gateway_v2(&call, "gw", chrono::Utc::now().timestamp_millis())
        .to_string()
        .into_bytes();
    let body = instances.invoke("gw", payload).await?;
    events::parse_reply(&body)
}

/// What one bounded load run saw.
#[derive(Debug, Default)]
pub struct LoadRun {
    pub cycles: usize,
    pub requests: usize,
    pub errors: usize,
    /// Requests refused as the cycle expected (the third uid's join: 409 room_full).
    pub refusals: usize,
    pub first_errors: Vec<String>,
    pub wall: Duration,
    /// Per request kind (create, join, refused, leave), microseconds.
    pub latencies: HashMap<&'static str, Vec<f64>>,
    pub cycle_latencies: Vec<f64>,
    pub timed_out: bool,
}

#[derive(Debug, Clone)]
pub struct LoadPlan {
    pub workers: usize,
    pub cycles: usize,
    pub time_limit: Duration,
    pub token: String,
    /// Room and uid prefix; every cycle uses a fresh room and fresh uids.
    pub prefix: String,
}

struct Shared {
    next: AtomicUsize,
    run: Mutex<LoadRun>,
}

/// `workers` connections, each running whole cycles until `cycles` were started or the time
/// limit passed: both bounds hold whatever the service does.
pub async fn drive(gateway: SocketAddr, plan: &LoadPlan) -> LoadRun {
    let shared = Arc::new(Shared {
        next: AtomicUsize::new(0),
        run: Mutex::new(LoadRun::default()),
    });
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..plan.workers {
        let shared = shared.clone();
        let plan = plan.clone();
        tasks.push(tokio::spawn(async move {
            worker(gateway, &plan, &shared, started).await;
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    let wall = started.elapsed();
    let mut run = shared
        .run
        .lock()
        .map(|mut r| std::mem::take(&mut *r))
        .unwrap_or_default();
    run.wall = wall;
    run
}

async fn worker(gateway: SocketAddr, plan: &LoadPlan, shared: &Shared, started: Instant) {
    let mut conn: Option<BufReader<TcpStream>> = None;
    loop {
        if started.elapsed() > plan.time_limit {
            if let Ok(mut run) = shared.run.lock() {
                run.timed_out = true;
            }
            return;
        }
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if i >= plan.cycles {
            return;
        }
        let room = format!("{}c{i}", plan.prefix);
        let steps = cycle(&room);
        let cycle_start = Instant::now();
        let mut ok = true;
        for (kind, path, body, expect) in steps {
            let t = Instant::now();
            let outcome = request(&mut conn, gateway, path, &plan.token, &body, expect).await;
            let us = micros(t.elapsed());
            let Ok(mut run) = shared.run.lock() else {
                return;
            };
            run.requests += 1;
            match outcome {
                Ok(()) => {
                    if expect.is_refusal() {
                        run.refusals += 1;
                    }
                    run.latencies.entry(kind).or_default().push(us);
                }
                Err(e) => {
                    run.errors += 1;
                    if run.first_errors.len() < 5 {
                        run.first_errors.push(format!("{kind} {room}: {e}"));
                    }
                    ok = false;
                }
            }
            if !ok {
                break;
            }
        }
        if let Ok(mut run) = shared.run.lock() {
            run.cycles += 1;
            if ok {
                run.cycle_latencies.push(micros(cycle_start.elapsed()));
            }
        }
    }
}

/// One cycle in a fresh room `room` (creator `room`a, joiner `room`b): create, join, a third
/// uid `room`c refused as room_full (max_participants is 2, so the rule refuses it inside the
/// call transaction, which rolls back), leave (the call ends).
pub fn cycle(room: &str) -> [(&'static str, &'static str, Value, Expect); 4] {
    let (creator, joiner, third) = (format!("{room}a"), format!("{room}b"), format!("{room}c"));
    [
        (
            "create",
            "/api/rooms",
            json!({ "creator": creator, "room_name": room, "call_type": 1, "invite_on": 0 }),
            Expect::OK,
        ),
        (
            "join",
            "/api/participants/join",
            json!({ "room_name": room, "uid": joiner }),
            Expect::OK,
        ),
        (
            "refused",
            "/api/participants/join",
            json!({ "room_name": room, "uid": third }),
            Expect::refused(409, "room_full"),
        ),
        (
            "leave",
            "/api/participants/leave",
            json!({ "room_name": room, "uid": joiner }),
            Expect::OK,
        ),
    ]
}

/// One POST over the worker's keep-alive connection; any reply but the expected one is an
/// error.
async fn request(
    conn: &mut Option<BufReader<TcpStream>>,
    gateway: SocketAddr,
    path: &str,
    token: &str,
    body: &Value,
    expect: Expect,
) -> Result<(), String> {
    if conn.is_none() {
        let stream = TcpStream::connect(gateway)
            .await
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        *conn = Some(BufReader::new(stream));
    }
    let Some(stream) = conn.as_mut() else {
        return Err("no connection".to_owned());
    };
    let auth = format!("Bearer {token}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let body = body.to_string();
    let sent = http::write_request(stream.get_mut(), "POST", path, &headers, body.as_bytes()).await;
    let reply = match sent {
        Ok(()) => http::read_response(stream).await,
        Err(e) => Err(e),
    };
    let reply = match reply {
        Ok(r) => r,
        Err(e) => {
            *conn = None;
            return Err(format!("transport: {e}"));
        }
    };
    if expect.matches(reply.status, &reply.body) {
        Ok(())
    } else {
        Err(format!(
            "expected {expect:?}, got HTTP {}: {}",
            reply.status,
            events::lossy(&reply.body)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_pick_the_function_by_method_and_shape() {
        assert_eq!(
            route("POST", "/api/rooms"),
            Some(("/api/rooms", "create-room"))
        );
        assert_eq!(
            route("GET", "/api/rooms"),
            Some(("/api/rooms", "list-rooms"))
        );
        assert_eq!(
            route("GET", "/api/rooms/r1"),
            Some(("/api/rooms/{room_name}", "get-room"))
        );
        assert_eq!(route("DELETE", "/api/rooms/r1"), None);
        assert_eq!(route("POST", "/api/rooms/r1/end"), None);
    }

    #[test]
    fn a_cycle_fills_the_room_then_is_refused_once_then_ends_it() {
        let steps = cycle("r1");
        let kinds: Vec<&str> = steps.iter().map(|s| s.0).collect();
        assert_eq!(kinds, ["create", "join", "refused", "leave"]);
        let uids: Vec<&str> = steps[1..]
            .iter()
            .filter_map(|s| s.2["uid"].as_str())
            .collect();
        assert_eq!(uids, ["r1b", "r1c", "r1b"]);
        assert_eq!(
            steps.iter().filter(|s| s.3.is_refusal()).count(),
            1,
            "one refusal per cycle"
        );
        for (_, path, _, _) in &steps {
            assert!(route("POST", path).is_some(), "{path} has a route");
        }
    }
}
