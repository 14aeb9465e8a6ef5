//! Applies the schema migrations. Run as a command (the local main job, a deploy step) it
//! migrates once and exits; inside Lambda it migrates on every invocation (idempotent).

use call_shared::{config::Config, store::Store, telemetry};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde_json::{Value, json};

async fn migrate(store: &Store) -> Result<Value, Error> {
    store.migrate().await?;
    let applied = call_shared::store::MIGRATOR.iter().count();
    tracing::info!(applied, "schema is up to date");
    Ok(json!({ "status": "ok", "migrations": applied }))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let config = Config::from_env()?;
    let store = Store::connect_lazy(&config.database_url)?;
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none() {
        migrate(&store).await?;
        return Ok(());
    }
    run(service_fn(|_: LambdaEvent<Value>| migrate(&store))).await
}
