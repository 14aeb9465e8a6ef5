//! The shared crate's integration tests, one module per concern, in one test binary: a
//! single link of the whole dependency graph instead of one per file keeps the build fast
//! and its footprint on disk small.
//!
//! Store, cache, handler and lifecycle tests run on the real MariaDB (a fresh database per
//! `#[sqlx::test]`) or, with the `embedded` feature, on SQLite; Redis is the real one.

mod common;
mod events;
mod livekit;
mod receiver;

mod availability;
mod business_events;
mod cache;
mod calls_on_record;
mod concurrency;
mod delivery_leases;
mod delivery_schedule;
mod handlers_input;
mod handlers_participants;
mod handlers_rooms;
mod idempotency;
mod lifecycle;
mod livekit_lifecycle;
mod migrations;
mod nothing_held;
mod retries;
mod rules_properties;
mod store;
mod store_model;
