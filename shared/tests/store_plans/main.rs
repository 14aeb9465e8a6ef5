//! The store's query plans, in a test binary of its own: the test captures the statements
//! sqlx logs through a tracing subscriber scoped to its thread, and tracing's callsite
//! interest and level filter are process-wide, so the integration tests running beside it
//! on other threads made it miss statements now and then. Alone in its process it sees them
//! all. It borrows the integration tests' helpers as they are.
#![allow(dead_code)]

#[path = "../integration/common.rs"]
mod common;
#[path = "../integration/events.rs"]
mod events;
#[path = "../integration/receiver.rs"]
mod receiver;

mod plans;
