//! The fleet phase: the local main job on MariaDB with four instances per function as a
//! database user allowed only a few connections, under a burst of clients that honour
//! Retry-After (tests/e2e/test_fleet.py, the same run the test command makes at 14), once per
//! budget. The suite writes its figures as JSON; this reads them back for the report.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Connection budgets the phase runs at (MAX_USER_CONNECTIONS of the job's database user).
pub const BUDGETS: [u32; 3] = [14, 30, 60];

/// One burst's figures, as the suite wrote them.
#[derive(Clone, Debug)]
pub struct FleetRun {
    pub budget: u64,
    pub instances_per_function: u64,
    pub clients: u64,
    pub seconds: f64,
    pub answers: u64,
    pub refused_503: u64,
    pub other_5xx: u64,
    pub success_rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub step_p99_ms: f64,
    pub calls_finished: u64,
    pub calls_per_s: f64,
    pub connections_held_max: u64,
    pub connections_per_instance_max: u64,
}

impl FleetRun {
    fn from_json(v: &Value) -> Option<Self> {
        let n = |k: &str| v.get(k).and_then(Value::as_u64);
        let f = |k: &str| v.get(k).and_then(Value::as_f64);
        let by_status = v.get("by_status")?.as_object()?;
        let count = |pred: &dyn Fn(u64) -> bool| {
            by_status
                .iter()
                .filter(|(s, _)| s.parse::<u64>().is_ok_and(pred))
                .filter_map(|(_, n)| n.as_u64())
                .sum()
        };
        Some(FleetRun {
            budget: n("budget")?,
            instances_per_function: n("instances_per_function")?,
            clients: n("clients")?,
            seconds: f("seconds")?,
            answers: n("answers")?,
            refused_503: count(&|s| s == 503),
            other_5xx: count(&|s| s >= 500 && s != 503),
            success_rate: f("success_rate")?,
            p50_ms: f("p50_ms")?,
            p99_ms: f("p99_ms")?,
            step_p99_ms: f("step_p99_ms")?,
            calls_finished: n("calls_finished")?,
            calls_per_s: f("calls_per_s")?,
            connections_held_max: n("connections_held_max")?,
            connections_per_instance_max: n("connections_per_instance_max")?,
        })
    }
}

/// Runs the fleet suite once per budget and returns each burst's figures.
pub fn run(root: &Path, scratch: &Path) -> Result<Vec<FleetRun>, String> {
    let report = scratch.join("fleet.json");
    let _ = std::fs::remove_file(&report);
    let budgets: Vec<String> = BUDGETS.iter().map(u32::to_string).collect();
    let status = Command::new(root.join(".venv/bin/python"))
        .args([
            "-m",
            "pytest",
            "tests/e2e/test_fleet.py",
            "-k",
            "burst",
            "-q",
        ])
        .args(["-p", "no:cacheprovider"])
        .current_dir(root)
        .env("E2E_BACKENDS", "mariadb")
        .env("FLEET_BUDGETS", budgets.join(","))
        .env("FLEET_REPORT", &report)
        .status()
        .map_err(|e| format!("fleet: starting pytest: {e}"))?;
    if !status.success() {
        return Err(format!("fleet: the suite failed ({status})"));
    }
    let text = std::fs::read_to_string(&report).map_err(|e| format!("fleet: {e}"))?;
    let runs: Value = serde_json::from_str(&text).map_err(|e| format!("fleet: {e}"))?;
    runs.as_array()
        .map(|a| a.iter().filter_map(FleetRun::from_json).collect::<Vec<_>>())
        .filter(|runs| runs.len() == BUDGETS.len())
        .ok_or_else(|| {
            format!(
                "fleet: {} does not hold one run per budget",
                report.display()
            )
        })
}
