//! GET /console and its files: the operator console, a static page (no database, no token:
//! the page asks for a service token and calls the API with it).
use call_shared::{
    handlers::console::{Console, ConsoleAssets},
    telemetry,
};
use lambda_http::{Error, run, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    telemetry::init();
    let console = Console::new(ConsoleAssets {
        page: include_str!("../assets/index.html"),
        app_js: include_str!("../assets/app.js"),
        timeline_js: include_str!("../assets/timeline.js"),
        css: include_str!("../assets/console.css"),
    });
    run(service_fn(|req| console.serve(req))).await
}
