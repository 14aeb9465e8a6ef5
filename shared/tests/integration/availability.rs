//! The database going away and coming back: 503 service_unavailable meanwhile, recovery
//! without a restart. A TCP relay in front of MariaDB plays the outage.
#![cfg(not(feature = "embedded"))]

use crate::common;

use std::net::SocketAddr;

use call_shared::App;
use call_shared::handlers::{get_room, health};
use call_shared::store::{DbPool, Store};
use lambda_http::{Body, Request};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Relays connections from `addr` to MariaDB until dropped (which cuts every connection).
struct Relay {
    accept: JoinHandle<()>,
}

impl Relay {
    async fn start(addr: SocketAddr) -> Relay {
        let listener = TcpListener::bind(addr).await.expect("bind relay");
        let accept = tokio::spawn(async move {
            let mut links = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                links.spawn(async move {
                    if let Ok(mut server) = TcpStream::connect("127.0.0.1:3306").await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Relay { accept }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // Aborting the accept task drops the JoinSet, which aborts every relayed connection.
        self.accept.abort();
    }
}

fn request(path: &str, token: Option<&str>) -> Request {
    let mut builder = lambda_http::http::Request::builder().uri(path);
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    builder.body(Body::Empty).expect("request")
}

fn json(body: &Body) -> Value {
    serde_json::from_slice(body.as_ref()).expect("json")
}

async fn free_addr() -> SocketAddr {
    let probe = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    probe.local_addr().expect("addr")
}

#[sqlx::test(migrator = "call_shared::store::MIGRATOR")]
async fn requests_get_503_while_the_database_is_down_and_recover_after(pool: DbPool) {
    let database = pool
        .connect_options()
        .get_database()
        .expect("test database")
        .to_owned();
    let addr = free_addr().await;
    let url = format!("mysql://root@{addr}/{database}");
    let app =
        App::with_store(common::config(&[]), Store::connect_lazy(&url).expect("url")).expect("app");
    let token = common::service_token(&app);

    let relay = Relay::start(addr).await;
    let up = health(&app, request("/health", None))
        .await
        .expect("response");
    assert_eq!(up.status(), 200);
    assert_eq!(json(up.body())["database"], "ok");

    drop(relay);
    let down = health(&app, request("/health", None))
        .await
        .expect("response");
    assert_eq!(down.status(), 503);
    assert_eq!(json(down.body())["status"], "degraded");
    let refused = get_room(&app, request("/api/rooms/r1", Some(&token)))
        .await
        .expect("response");
    assert_eq!(refused.status(), 503);
    assert_eq!(json(refused.body())["error"], "service_unavailable");

    let _relay = Relay::start(addr).await;
    let back = health(&app, request("/health", None))
        .await
        .expect("response");
    assert_eq!(back.status(), 200);
    let missing = get_room(&app, request("/api/rooms/r1", Some(&token)))
        .await
        .expect("response");
    assert_eq!(
        missing.status(),
        404,
        "the same App answers again once MariaDB is back"
    );
}
