//! The call-room service: everything the Lambda functions share.

pub mod app;
pub mod auth;
pub mod cache;
pub mod config;
pub mod database;
pub mod delivery;
pub mod error;
pub mod event_sweeper;
pub mod events;
pub mod handlers;
pub mod http;
pub mod i18n;
pub mod idempotency;
pub mod livekit;
pub mod metrics;
pub mod model;
pub mod openapi;
pub mod outbound;
pub mod overview;
#[cfg(test)]
mod portability;
pub mod rules;
pub mod secrets;
pub mod store;
pub mod sweeper;
pub mod telemetry;
pub mod validate;

pub use app::App;
pub use error::ApiError;
