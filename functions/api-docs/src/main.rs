//! GET /api/openapi.json, /api/docs and the page's renderer: no database, no token.
//! `api-docs --print` writes the document to stdout instead (for tools and reviews).
use call_shared::{handlers::docs::Docs, openapi, telemetry};
use lambda_http::{Error, run, service_fn};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    if std::env::args().nth(1).as_deref() == Some("--print") {
        println!("{:#}", openapi::document());
        return Ok(());
    }
    telemetry::init();
    let docs = Docs::new(include_str!("../assets/redoc.standalone.js"));
    run(service_fn(|req| docs.serve(req))).await
}
