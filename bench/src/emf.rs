//! The metrics phase: what the EMF metrics (shared/src/metrics.rs) cost a warm request.
//!
//! Two sets of warm processes of the same build, both with JSON logs as the template sets
//! them: one as deployed, one with `METRICS_ENABLED=false` (no collector, no document). Each
//! round runs the warm phase's call (create, get miss, get hit, join, refused join, list,
//! leave) on both sets, on rooms of their own, each step on one set right after the other,
//! alternating which set goes first. The logs then show that the metrics were on and off as
//! meant: every invocation of the first set printed one document, the second none.
//!
//! Beside it, in this process: one API request's collector work (its count and latency added,
//! then its document rendered and written), without the request around it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write;
use std::time::Instant;

use call_shared::metrics::{self, Invocation};

use crate::runtime_api::FunctionEnv;
use crate::stats::{Summary, micros, summarize};
use crate::{Ctx, STEPS, invoke, proc, spawn_step_functions};

#[derive(Debug, Clone)]
pub struct MetricsOutcome {
    pub rounds: usize,
    /// (step, metrics off, metrics on), latency in µs.
    pub steps: Vec<(String, Summary, Summary)>,
    /// EMF documents the processes with metrics printed, and their bytes.
    pub documents: usize,
    pub document_bytes: usize,
    /// Invocations of the processes with metrics on (each should print one document).
    pub invocations_on: usize,
    /// One request's collector work in this process, µs per request (see [`collector_cost`]).
    pub collector: CollectorCost,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CollectorCost {
    pub iterations: usize,
    /// Counting the request and its latency, and rendering the document to bytes.
    pub render_us: f64,
    /// The same, then writing the line to a file (the function writes it to stdout).
    pub render_write_us: f64,
    /// The document's size.
    pub bytes: usize,
}

/// EMF documents among the lines of a function's log, and their bytes: a JSON object with an
/// `_aws` member (log lines are JSON objects too, without it).
pub fn emf_documents(log: &str) -> (usize, usize) {
    log.lines()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .is_ok_and(|v| v.get("_aws").is_some_and(|aws| aws.is_object()))
        })
        .fold((0, 0), |(n, bytes), line| (n + 1, bytes + line.len() + 1))
}

/// One create-room request's collector work, `iterations` times: a new collector, the request's
/// count (2xx, no error key), its latency and the call it created, then its one document
/// rendered (and, in the second pass, written as a line to `sink`).
pub fn collector_cost(iterations: usize, sink: &mut impl Write) -> Result<CollectorCost, String> {
    let request = |out: &mut Vec<u8>| {
        let mut invocation = Invocation::new("create-room");
        invocation.add(
            &metrics::REQUESTS,
            &[Cow::Borrowed("2xx"), Cow::Borrowed("none")],
            1.0,
        );
        invocation.add(&metrics::LATENCY, &[], 2.5);
        invocation.add(&metrics::CALLS_CREATED, &[], 1.0);
        let now = chrono::Utc::now().timestamp_millis();
        metrics::write_documents(&invocation, metrics::DEFAULT_NAMESPACE, now, out)
            .map_err(|e| e.to_string())
    };
    let mut line = Vec::with_capacity(1024);
    request(&mut line)?;
    let bytes = line.len();
    let started = Instant::now();
    for _ in 0..iterations {
        line.clear();
        request(&mut line)?;
    }
    let render = micros(started.elapsed()) / iterations.max(1) as f64;
    let started = Instant::now();
    for _ in 0..iterations {
        line.clear();
        request(&mut line)?;
        sink.write_all(&line).map_err(|e| e.to_string())?;
        sink.flush().map_err(|e| e.to_string())?;
    }
    let render_write = micros(started.elapsed()) / iterations.max(1) as f64;
    Ok(CollectorCost {
        iterations,
        render_us: render,
        render_write_us: render_write,
        bytes,
    })
}

pub async fn run(ctx: &Ctx) -> Result<MetricsOutcome, String> {
    // Production defaults, as the warm phase: JSON logs, rate limits on (fresh uids).
    let on_env = ctx.env(&ctx.db_url, true);
    let mut off_vars = on_env.vars.clone();
    off_vars.push(("METRICS_ENABLED".to_owned(), "false".to_owned()));
    let off_env = FunctionEnv { vars: off_vars };
    let on = spawn_step_functions(ctx, &on_env, 60).await?;
    let off = spawn_step_functions(ctx, &off_env, 61).await?;

    let mut with: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut without: HashMap<&str, Vec<f64>> = HashMap::new();
    let total = ctx.opts.warmup + ctx.opts.rounds;
    for round in 0..total {
        let measured = round >= ctx.opts.warmup;
        let on_room = format!("{}mon{round}", ctx.prefix);
        let off_room = format!("{}moff{round}", ctx.prefix);
        for (step, function) in STEPS {
            let label = if measured { step } else { "warm" };
            let (on_call, expect) = ctx.step_call(step, &on_room);
            let (off_call, _) = ctx.step_call(step, &off_room);
            let (p_on, p_off) = (proc(&on, function), proc(&off, function));
            // Alternate which side goes first, so neither always follows the other's I/O.
            let (t_on, t_off) = if round % 2 == 0 {
                let t_on = invoke(p_on, label, &on_call, expect).await?;
                (t_on, invoke(p_off, label, &off_call, expect).await?)
            } else {
                let t_off = invoke(p_off, label, &off_call, expect).await?;
                (invoke(p_on, label, &on_call, expect).await?, t_off)
            };
            if measured {
                with.entry(step).or_default().push(micros(t_on));
                without.entry(step).or_default().push(micros(t_off));
            }
        }
    }

    // The switch did what it says: one document per invocation on, none off.
    let mut documents = 0;
    let mut document_bytes = 0;
    let mut seen = Vec::new();
    for (_, function) in STEPS {
        if seen.contains(function) {
            continue;
        }
        seen.push(function);
        let read = |path: &std::path::Path| {
            std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
        };
        let (n, bytes) = emf_documents(&read(&proc(&on, function).log)?);
        documents += n;
        document_bytes += bytes;
        let (stray, _) = emf_documents(&read(&proc(&off, function).log)?);
        if stray > 0 {
            return Err(format!(
                "{function} printed {stray} EMF documents with METRICS_ENABLED=false"
            ));
        }
    }
    let invocations_on = STEPS.len() * total;
    if documents != invocations_on {
        return Err(format!(
            "{documents} EMF documents for {invocations_on} invocations with metrics on"
        ));
    }

    let sink_path = ctx.log_dir.join("metrics-collector.emf");
    let mut sink =
        std::fs::File::create(&sink_path).map_err(|e| format!("{}: {e}", sink_path.display()))?;
    let iterations = if ctx.opts.smoke { 100 } else { 100_000 };
    let collector = collector_cost(iterations, &mut sink)?;

    let summary = |samples: &HashMap<&str, Vec<f64>>, step: &str| {
        summarize(samples.get(step).map(Vec::as_slice).unwrap_or(&[]))
    };
    Ok(MetricsOutcome {
        rounds: ctx.opts.rounds,
        steps: STEPS
            .iter()
            .map(|(step, _)| {
                (
                    step.to_string(),
                    summary(&without, step),
                    summary(&with, step),
                )
            })
            .collect(),
        documents,
        document_bytes,
        invocations_on,
        collector,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lines_with_an_aws_object_count_as_documents() {
        let log = concat!(
            r#"{"level":"INFO","fields":{"status":200},"span":{"function":"get-room"}}"#,
            "\n",
            r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[]},"Requests":1}"#,
            "\n",
            "plain text line with _aws in it\n",
            r#"{"_aws":"not an object"}"#,
            "\n",
            r#"{"_aws":{"Timestamp":2,"CloudWatchMetrics":[]},"Requests":1}"#,
            "\n",
        );
        let (n, bytes) = emf_documents(log);
        assert_eq!(n, 2);
        let emf_line = r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[]},"Requests":1}"#;
        assert_eq!(bytes, 2 * (emf_line.len() + 1));
    }

    #[test]
    fn the_collector_measure_writes_one_valid_document_a_request() {
        let mut sink = Vec::new();
        let cost = collector_cost(3, &mut sink).expect("collector cost");
        let text = String::from_utf8(sink).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        for line in lines {
            assert_eq!(line.len() + 1, cost.bytes);
            let doc: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            assert_eq!(doc["Requests"], 1.0);
            assert_eq!(doc["CallsCreated"], 1.0);
            assert_eq!(doc["Function"], "create-room");
        }
        assert!(cost.render_us > 0.0 && cost.render_write_us > 0.0);
    }
}
