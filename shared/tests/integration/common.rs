//! Test fixtures shared by the integration tests: a configuration, an App over the pool
//! `#[sqlx::test]` hands out, and tokens signed with the test secret.
#![allow(dead_code)]

use std::collections::HashMap;

use call_shared::App;
use call_shared::config::{Config, Secrets};
use call_shared::store::{DbPool, Store, TEST_URL_EXAMPLE};

pub const AUTH_SECRET: &str = "test-auth-secret";
pub const LIVEKIT_KEY: &str = "test-key";
pub const LIVEKIT_SECRET: &str = "test-livekit-secret-of-enough-length";

/// A production-shaped configuration (no local defaults) with rate limits off.
pub fn config(extra: &[(&str, &str)]) -> Config {
    let mut vars: HashMap<String, String> = [
        ("DATABASE_URL", TEST_URL_EXAMPLE),
        ("LIVEKIT_CLIENT_URL", "wss://livekit.example.test"),
        ("LIVEKIT_API_KEY", LIVEKIT_KEY),
        ("LIVEKIT_API_SECRET", LIVEKIT_SECRET),
        ("AUTH_JWT_SECRET", AUTH_SECRET),
        ("RATE_LIMIT_CREATE_PER_MIN", "0"),
        ("RATE_LIMIT_JOIN_PER_MIN", "0"),
        ("RATE_LIMIT_INVITE_PER_MIN", "0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    for (k, v) in extra {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    Config::from_lookup(|k| vars.get(k).cloned(), Secrets::default()).expect("test config")
}

pub fn app(pool: DbPool) -> App {
    app_with(pool, &[])
}

pub fn app_with(pool: DbPool, extra: &[(&str, &str)]) -> App {
    App::with_store(config(extra), Store::from_pool(pool)).expect("test app")
}

pub fn service_token(app: &App) -> String {
    app.auth.mint("test-backend", true, 600).expect("mint")
}

pub fn user_token(app: &App, uid: &str) -> String {
    app.auth.mint(uid, false, 600).expect("mint")
}

/// Redis for the cache tests; REDIS_URL overrides the machine's default.
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned())
}
