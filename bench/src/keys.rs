//! The Idempotency-Key phase: what a key adds to a POST, and what a replay costs.
//!
//! One warm create-room, join-room and leave-room process each, invoked through the local
//! Runtime API. Each round runs the call cycle (create, a second uid joins, it leaves) twice,
//! interleaved so both see the same machine: once without a key and once with a fresh key on
//! every POST (the claim statement before the work, the answer stored in the change's
//! transaction). Then the keyed create is sent again with its key: the replay (the claim finds
//! the stored answer; no transaction, no token minted).

use std::collections::HashMap;

use serde_json::json;

use crate::events::{Expect, HttpCall};
use crate::runtime_api::FunctionProcess;
use crate::stats::{Summary, micros, summarize};
use crate::{Ctx, invoke, join_call};

const STEPS: [(&str, &str); 3] = [
    ("create", "create-room"),
    ("join", "join-room"),
    ("leave", "leave-room"),
];

#[derive(Debug, Clone)]
pub struct KeysOutcome {
    pub rounds: usize,
    /// (step, without a key, with a key), latency in µs.
    pub steps: Vec<(String, Summary, Summary)>,
    /// The keyed create sent again: the stored answer replayed.
    pub replay: Summary,
}

fn step_call(ctx: &Ctx, step: &str, room: &str, key: Option<&str>) -> HttpCall {
    let (creator, joiner) = (format!("{room}a"), format!("{room}b"));
    let token = &ctx.service_token;
    let call = match step {
        "create" => HttpCall::new("POST", "/api/rooms", "/api/rooms")
            .bearer(token)
            .json(&json!({ "creator": creator, "room_name": room, "invite_on": 0 })),
        "join" => join_call(token, room, &joiner),
        _ => HttpCall::new("POST", "/api/participants/leave", "/api/participants/leave")
            .bearer(token)
            .json(&json!({ "room_name": room, "uid": joiner })),
    };
    match key {
        Some(key) => call.header("idempotency-key", &format!("\"{room}-{step}-{key}\"")),
        None => call,
    }
}

pub async fn run(ctx: &Ctx) -> Result<KeysOutcome, String> {
    let env = ctx.env(&ctx.db_url, false);
    let mut processes = HashMap::new();
    for (_, function) in STEPS {
        let p = FunctionProcess::spawn(&ctx.opts.bin_dir, function, &env, &ctx.log_dir, 50).await?;
        processes.insert(function, p);
    }
    let mut plain: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut keyed: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut replay = Vec::new();
    let total = ctx.opts.warmup + ctx.opts.rounds;
    for round in 0..total {
        let measured = round >= ctx.opts.warmup;
        for (variant, key) in [("u", None), ("k", Some("key"))] {
            let room = format!("{}k{variant}{round}", ctx.prefix);
            for (step, function) in STEPS {
                let call = step_call(ctx, step, &room, key);
                let took = invoke(&processes[function], step, &call, Expect::OK).await?;
                if measured {
                    let samples = if key.is_some() {
                        &mut keyed
                    } else {
                        &mut plain
                    };
                    samples.entry(step).or_default().push(micros(took));
                }
            }
            if key.is_some() {
                let call = step_call(ctx, "create", &room, key);
                let took = invoke(&processes["create-room"], "replay", &call, Expect::OK).await?;
                if measured {
                    replay.push(micros(took));
                }
            }
        }
    }
    let summary = |samples: &HashMap<&str, Vec<f64>>, step: &str| {
        summarize(samples.get(step).map(Vec::as_slice).unwrap_or(&[]))
    };
    Ok(KeysOutcome {
        rounds: ctx.opts.rounds,
        steps: STEPS
            .iter()
            .map(|(step, _)| {
                (
                    step.to_string(),
                    summary(&plain, step),
                    summary(&keyed, step),
                )
            })
            .collect(),
        replay: summarize(&replay),
    })
}
