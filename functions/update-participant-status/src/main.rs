use call_shared::{App, handlers::update_participant_status, telemetry};
use lambda_http::{Error, run, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let app = App::from_env().await?;
    run(service_fn(|req| update_participant_status(&app, req))).await
}
