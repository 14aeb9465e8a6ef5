//! Applies the schema migrations. Run as a command (the local main job) it creates the
//! database when it is missing (`--reset`: empties it first, on this machine only), migrates
//! once and exits. In Lambda it answers two kinds of event:
//! - a CloudFormation custom resource (the stack's deploy step): Create and Update migrate,
//!   Delete leaves the schema alone, and the outcome is PUT to the event's ResponseURL as
//!   SUCCESS or FAILED, so a failed migration fails the deploy instead of hanging it;
//! - anything else (`aws lambda invoke`): migrate and return a JSON report.
//!
//! Migrations are idempotent, so a repeated event is harmless, and on MySQL a run that failed
//! halfway continues where it stopped (see `call_shared::store::migrations`).
//!
//! A custom resource whose properties say `RecountRooms` (or an invoke with
//! `{"recount_rooms": true}`) re-derives the room totals instead: the stack runs it once, after
//! every function has been replaced, on the deploy that brings migration 0006 (see the README's
//! "MySQL 8 / Aurora MySQL 3").

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use call_shared::{outbound, secrets, store::Store, telemetry};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use serde::Deserialize;
use serde_json::{Value, json};

/// CloudFormation refuses a response body over 4096 bytes; the reason is the only free text.
const MAX_REASON_CHARS: usize = 1500;
/// Time kept back from the invocation's deadline to report a migration that ran too long.
const DEADLINE_MARGIN: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize, PartialEq)]
enum RequestType {
    Create,
    Update,
    Delete,
}

/// The fields of a CloudFormation custom resource request this function uses.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CustomResourceRequest {
    request_type: RequestType,
    #[serde(rename = "ResponseURL")]
    response_url: String,
    stack_id: String,
    request_id: String,
    logical_resource_id: String,
    physical_resource_id: Option<String>,
    #[serde(default)]
    resource_properties: Value,
}

impl CustomResourceRequest {
    fn parse(payload: &Value) -> Option<Self> {
        serde_json::from_value(payload.clone()).ok()
    }

    /// The resource that re-derives the room totals rather than migrating.
    fn recounts_rooms(&self) -> bool {
        self.resource_properties.get("RecountRooms").is_some()
    }

    /// How long to wait before recounting: invocations of the replaced code that were running
    /// when CloudFormation swapped it (the sweeper runs for up to a minute) finish meanwhile.
    /// CloudFormation passes properties as strings.
    fn settle(&self) -> Duration {
        let seconds = match self.resource_properties.get("SettleSeconds") {
            Some(Value::String(text)) => text.parse().unwrap_or(0),
            Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
            _ => 0,
        };
        Duration::from_secs(seconds)
    }

    /// Stable across updates, so CloudFormation never replaces (and deletes) the resource.
    fn physical_id(&self) -> String {
        self.physical_resource_id
            .clone()
            .unwrap_or_else(|| format!("{}-schema", self.logical_resource_id))
    }
}

struct Migrator {
    /// The store, or why the configuration could not build one: reported per event rather
    /// than at init, so CloudFormation hears about it instead of waiting for a timeout.
    store: Result<Store, String>,
    http: reqwest::Client,
}

impl Migrator {
    async fn migrate(&self) -> Result<usize, String> {
        let store = self.store.as_ref().map_err(Clone::clone)?;
        store
            .migrate()
            .await
            .map_err(|e| format!("migrations failed: {e}"))?;
        let applied = call_shared::store::MIGRATOR.iter().count();
        tracing::info!(applied, "schema is up to date");
        Ok(applied)
    }

    async fn recount(&self) -> Result<(), String> {
        let store = self.store.as_ref().map_err(Clone::clone)?;
        store
            .recount_rooms()
            .await
            .map_err(|e| format!("recounting the rooms failed: {e}"))?;
        tracing::info!("room totals re-derived from the rooms");
        Ok(())
    }

    async fn handle(&self, event: LambdaEvent<Value>) -> Result<Value, Error> {
        match CustomResourceRequest::parse(&event.payload) {
            Some(request) => {
                let budget = time_left(event.context.deadline).saturating_sub(DEADLINE_MARGIN);
                self.answer(&request, budget.max(Duration::from_secs(1)))
                    .await
            }
            None if event.payload.get("recount_rooms") == Some(&Value::Bool(true)) => {
                self.recount().await?;
                Ok(json!({ "status": "ok", "recounted": true }))
            }
            None => {
                let applied = self.migrate().await?;
                Ok(json!({ "status": "ok", "migrations": applied }))
            }
        }
    }

    /// Runs the request and reports it. Only a failure to deliver the report is an invocation
    /// error, so that Lambda's retry of the asynchronous invoke delivers it again.
    async fn answer(
        &self,
        request: &CustomResourceRequest,
        budget: Duration,
    ) -> Result<Value, Error> {
        let outcome = match request.request_type {
            // The schema outlives the stack: deleting or rolling back never drops data.
            RequestType::Delete => Ok(json!({})),
            RequestType::Create | RequestType::Update if request.recounts_rooms() => {
                let recount = async {
                    tokio::time::sleep(request.settle()).await;
                    self.recount().await
                };
                match tokio::time::timeout(budget, recount).await {
                    Ok(Ok(())) => Ok(json!({ "Recounted": true })),
                    Ok(Err(reason)) => Err(reason),
                    Err(_) => Err(format!(
                        "recounting did not finish within {} s",
                        budget.as_secs()
                    )),
                }
            }
            RequestType::Create | RequestType::Update => {
                match tokio::time::timeout(budget, self.migrate()).await {
                    Ok(Ok(applied)) => Ok(json!({ "Migrations": applied })),
                    Ok(Err(reason)) => Err(reason),
                    Err(_) => Err(format!(
                        "migrations did not finish within {} s",
                        budget.as_secs()
                    )),
                }
            }
        };
        let response = response_body(request, &outcome);
        match &outcome {
            Ok(_) => {
                tracing::info!(request_type = ?request.request_type, "custom resource: SUCCESS")
            }
            Err(reason) => {
                tracing::error!(request_type = ?request.request_type, reason, "custom resource: FAILED")
            }
        }
        self.send(&request.response_url, &response).await?;
        Ok(response)
    }

    /// PUT to the presigned S3 URL, with no Content-Type: the URL was signed without one.
    async fn send(&self, url: &str, body: &Value) -> Result<(), Error> {
        let body = body.to_string();
        let mut last_error = String::new();
        for attempt in 0..3u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
            }
            match self.http.put(url).body(body.clone()).send().await {
                Ok(reply) if reply.status().is_success() => return Ok(()),
                Ok(reply) => last_error = format!("HTTP {}", reply.status()),
                Err(e) => last_error = e.to_string(),
            }
            tracing::warn!(attempt, error = %last_error, "sending the custom resource response failed");
        }
        Err(format!("could not deliver the custom resource response: {last_error}").into())
    }
}

fn response_body(request: &CustomResourceRequest, outcome: &Result<Value, String>) -> Value {
    let (status, reason, data) = match outcome {
        Ok(data) => ("SUCCESS", "schema is up to date".to_owned(), data.clone()),
        Err(reason) => (
            "FAILED",
            reason.chars().take(MAX_REASON_CHARS).collect(),
            json!({}),
        ),
    };
    json!({
        "Status": status,
        "Reason": reason,
        "PhysicalResourceId": request.physical_id(),
        "StackId": request.stack_id,
        "RequestId": request.request_id,
        "LogicalResourceId": request.logical_resource_id,
        "NoEcho": false,
        "Data": data,
    })
}

fn time_left(deadline_ms: u64) -> Duration {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Duration::from_millis(deadline_ms.saturating_sub(now_ms))
}

fn http_client() -> Result<reqwest::Client, Error> {
    Ok(outbound::https_builder()?
        .timeout(Duration::from_secs(10))
        .build()?)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    telemetry::init();
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none() {
        // The local main job: `migrate [--reset]` creates the database when it is missing,
        // empties it first with --reset (a database on this machine only), then migrates.
        let config = secrets::config_from_env().await?;
        let reset = std::env::args().skip(1).any(|a| a == "--reset");
        Store::prepare_local(&config.database_url, reset).await?;
        tracing::info!(
            applied = call_shared::store::MIGRATOR.iter().count(),
            "schema is up to date"
        );
        return Ok(());
    }
    let store = match secrets::config_from_env().await {
        Ok(config) => Store::connect_lazy(&config.database_url).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(reason) = &store {
        tracing::error!(reason, "configuration error; every event will report it");
    }
    let migrator = Migrator {
        store,
        http: http_client()?,
    };
    run(service_fn(|event| migrator.handle(event))).await
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// What the fake response URL received.
    struct Received {
        request_line: String,
        headers: String,
        body: Value,
    }

    /// A one-shot HTTP server standing in for CloudFormation's presigned response URL.
    async fn response_url() -> (String, tokio::task::JoinHandle<Received>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!(
            "http://{}/cloudformation-response?X-Amz-Signature=abc",
            listener.local_addr().expect("addr")
        );
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.expect("accept");
            let mut raw = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = socket.read(&mut chunk).await.expect("read");
                raw.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&raw).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| {
                            let (name, value) = l.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length")
                                .then(|| value.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if body.len() >= length || n == 0 {
                        socket
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                            .await
                            .expect("reply");
                        let (request_line, headers) = head.split_once("\r\n").unwrap_or((head, ""));
                        return Received {
                            request_line: request_line.to_owned(),
                            headers: headers.to_lowercase(),
                            body: serde_json::from_str(body).expect("a JSON body"),
                        };
                    }
                }
                assert!(n > 0, "connection closed before the body arrived");
            }
        });
        (url, server)
    }

    fn request(request_type: &str, url: &str) -> CustomResourceRequest {
        CustomResourceRequest::parse(&json!({
            "RequestType": request_type,
            "ResponseURL": url,
            "StackId": "arn:aws:cloudformation:eu-west-1:123456789012:stack/call/guid",
            "RequestId": "request-1",
            "ResourceType": "Custom::SchemaMigrations",
            "LogicalResourceId": "SchemaMigrations",
            "ServiceToken": "arn:aws:lambda:eu-west-1:123456789012:function:migrate",
            "ResourceProperties": {}
        }))
        .expect("a custom resource request")
    }

    fn migrator(store: Result<Store, String>) -> Migrator {
        Migrator {
            store,
            http: http_client().expect("client"),
        }
    }

    /// A store nobody answers: a loopback port bound and released.
    fn unreachable_store() -> Store {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let url = if call_shared::database::URL_SCHEMES.contains(&"sqlite:") {
            "sqlite:///nonexistent-dir/call.db".to_owned()
        } else {
            format!("mysql://root@127.0.0.1:{port}/test")
        };
        Store::connect_lazy(&url).expect("lazy store")
    }

    /// A database of its own on the test MariaDB (DATABASE_URL, started by scripts/test.sh), or
    /// a fresh SQLite file in the embedded build.
    async fn empty_database_url() -> String {
        empty_database_url_named("call_migrate_custom_resource").await
    }

    async fn empty_database_url_named(name: &str) -> String {
        if call_shared::database::URL_SCHEMES.contains(&"sqlite:") {
            let path =
                std::env::temp_dir().join(format!("call-migrate-{name}-{}.db", std::process::id()));
            let _ = std::fs::remove_file(&path);
            return format!("sqlite://{}?mode=rwc", path.display());
        }
        let admin = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| call_shared::database::TEST_URL_EXAMPLE.to_owned());
        let store = Store::connect_lazy(&admin).expect("DATABASE_URL");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name}"
        )))
        .execute(store.pool())
        .await
        .expect("MariaDB at DATABASE_URL (scripts/test.sh starts it)");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(store.pool())
            .await
            .expect("create the test database");
        let (server, _) = admin.rsplit_once('/').expect("a database in DATABASE_URL");
        format!("{server}/{name}")
    }

    #[tokio::test]
    async fn create_migrates_and_reports_success() {
        let url = empty_database_url().await;
        let (response, server) = response_url().await;
        let migrator = migrator(Ok(Store::connect_lazy(&url).expect("store")));
        migrator
            .answer(&request("Create", &response), Duration::from_secs(60))
            .await
            .expect("delivered");
        let received = server.await.expect("server");
        assert_eq!(received.body["Status"], "SUCCESS", "{}", received.body);
        let applied = call_shared::store::MIGRATOR.iter().count();
        assert_eq!(received.body["Data"]["Migrations"], applied);
        // Applying them again (an Update, or a retried event) changes nothing and succeeds.
        assert_eq!(migrator.migrate().await, Ok(applied));
    }

    /// The resource the stack creates after every function on the deploy that drops the old
    /// room_count triggers: totals that drifted meanwhile are exact again.
    #[tokio::test]
    async fn the_recount_resource_re_derives_the_room_totals() {
        let url = empty_database_url_named("call_migrate_recount").await;
        let store = Store::connect_lazy(&url).expect("store");
        store.migrate().await.expect("migrate");
        let now = call_shared::model::Now::current();
        for name in ["r1", "r2", "r3"] {
            let room = call_shared::store::NewRoom {
                source_channel_id: String::new(),
                source_channel_type: 0,
                creator: format!("{name}-a"),
                room_name: name.to_owned(),
                call_type: 1,
                invite_on: 0,
                max_participants: 2,
                limits: call_shared::model::CallLimits::default(),
            };
            store.create_room(&room, &[], now).await.expect("create");
        }
        // Rooms that old code moved while nobody counted them.
        sqlx::query("UPDATE call_room SET status = 2 WHERE room_name = 'r2'")
            .execute(store.pool())
            .await
            .expect("an uncounted move");
        let totals = async || -> Vec<i64> {
            let mut totals = Vec::new();
            for status in 0i16..4 {
                let kept: i64 = sqlx::query_scalar(
                    "SELECT CAST(COALESCE(SUM(n), 0) AS SIGNED) FROM room_count WHERE status = ?",
                )
                .bind(status)
                .fetch_one(store.pool())
                .await
                .expect("room_count");
                totals.push(kept);
            }
            totals
        };
        assert_eq!(totals().await, vec![3, 0, 0, 0], "drifted");

        let (response, server) = response_url().await;
        let mut recount = request("Create", &response);
        recount.resource_properties = json!({ "RecountRooms": "0006" });
        migrator(Ok(store.clone()))
            .answer(&recount, Duration::from_secs(60))
            .await
            .expect("delivered");
        let received = server.await.expect("server");
        assert_eq!(received.body["Status"], "SUCCESS", "{}", received.body);
        assert_eq!(received.body["Data"]["Recounted"], true);
        assert_eq!(totals().await, vec![2, 0, 1, 0], "exact again");
    }

    #[test]
    fn other_events_are_not_custom_resource_requests() {
        assert!(CustomResourceRequest::parse(&json!({})).is_none());
        assert!(CustomResourceRequest::parse(&json!({"source": "aws.events"})).is_none());
    }

    #[tokio::test]
    async fn delete_succeeds_without_touching_the_database() {
        let (url, server) = response_url().await;
        let migrator = migrator(Err("DATABASE_URL is required".into()));
        let mut delete = request("Delete", &url);
        delete.physical_resource_id = Some("SchemaMigrations-schema".into());
        migrator
            .answer(&delete, Duration::from_secs(5))
            .await
            .expect("delivered");
        let received = server.await.expect("server");
        assert!(
            received
                .request_line
                .starts_with("PUT /cloudformation-response?X-Amz-Signature=abc")
        );
        assert!(
            !received.headers.contains("content-type"),
            "{}",
            received.headers
        );
        assert_eq!(received.body["Status"], "SUCCESS");
        assert_eq!(
            received.body["PhysicalResourceId"],
            "SchemaMigrations-schema"
        );
        assert_eq!(received.body["RequestId"], "request-1");
        assert_eq!(received.body["LogicalResourceId"], "SchemaMigrations");
    }

    #[tokio::test]
    async fn a_configuration_error_reports_failed_with_the_reason() {
        let (url, server) = response_url().await;
        let migrator = migrator(Err("DATABASE_URL is required".into()));
        migrator
            .answer(&request("Create", &url), Duration::from_secs(5))
            .await
            .expect("delivered");
        let received = server.await.expect("server");
        assert_eq!(received.body["Status"], "FAILED");
        assert_eq!(received.body["Reason"], "DATABASE_URL is required");
        assert_eq!(
            received.body["PhysicalResourceId"],
            "SchemaMigrations-schema"
        );
    }

    #[tokio::test]
    async fn an_unreachable_database_reports_failed() {
        let (url, server) = response_url().await;
        let migrator = migrator(Ok(unreachable_store()));
        migrator
            .answer(&request("Update", &url), Duration::from_secs(20))
            .await
            .expect("delivered");
        let received = server.await.expect("server");
        assert_eq!(received.body["Status"], "FAILED");
        let reason = received.body["Reason"].as_str().unwrap_or_default();
        assert!(reason.starts_with("migrations failed"), "{reason}");
    }

    #[tokio::test]
    async fn an_undeliverable_response_is_an_invocation_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let migrator = migrator(Err("DATABASE_URL is required".into()));
        let url = format!("http://127.0.0.1:{port}/gone");
        let result = migrator
            .answer(&request("Delete", &url), Duration::from_secs(5))
            .await;
        assert!(result.is_err(), "Lambda must retry the invocation");
    }
}
