//! The event sweeper, on a schedule of its own (every minute; with SWEEP_LOOP_SECONDS it keeps
//! going once a second for that long): retries due event deliveries, publishes the pull feed,
//! purges old events. Run as a command outside Lambda it sweeps once and prints its report:
//! `cargo run -p deliver-events`.

use call_shared::{App, event_sweeper, telemetry};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::Value;

async fn sweep(app: &App) -> Result<Value, Error> {
    let report = event_sweeper::run(app).await;
    Ok(serde_json::to_value(report)?)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let app = App::from_env().await?;
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none() {
        println!("{}", sweep(&app).await?);
        return Ok(());
    }
    run(service_fn(|_: LambdaEvent<Value>| sweep(&app))).await
}
