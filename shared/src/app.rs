//! Everything a function needs, built once per cold start and shared by every request.

use crate::auth::{Auth, Caller};
use crate::cache::Cache;
use crate::config::{Config, ConfigError};
use crate::delivery::{Deliverer, DeliveryReport, Mode};
use crate::error::ApiError;
use crate::livekit::LiveKit;
use crate::model::Now;
use crate::store::Store;

pub struct App {
    pub config: Config,
    pub store: Store,
    pub cache: Cache,
    pub livekit: LiveKit,
    pub auth: Auth,
    /// Business events to the configured endpoints.
    pub delivery: Deliverer,
}

/// What a rate limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    Create,
    Join,
    Invite,
}

impl App {
    /// Reads the configuration (and the SECRETS_ARN secret, the one network call of a cold
    /// start when set) and builds clients without touching the network: the database and Redis
    /// connect on first use, so a cold start without a secret stays in the low milliseconds.
    pub async fn from_env() -> Result<App, crate::secrets::InitError> {
        let config = crate::secrets::config_from_env().await?;
        Ok(App::new(config)?)
    }

    pub fn new(config: Config) -> Result<App, ConfigError> {
        let store =
            Store::connect_lazy_with(&config.database_url, config.db_idle, config.db_lifetime)?;
        App::with_store(config, store)
    }

    pub fn with_store(config: Config, store: Store) -> Result<App, ConfigError> {
        crate::livekit::install_tls_provider();
        let store = store
            .with_teardown(config.livekit_url.is_some())
            .with_event_endpoints(
                &config.event_endpoints,
                crate::delivery::grace(&config.delivery),
            );
        let cache =
            Cache::new(config.redis_url.as_deref()).map_err(|e| ConfigError::Malformed {
                name: "REDIS_URL",
                reason: e.to_string(),
            })?;
        Ok(App {
            livekit: LiveKit::new(&config),
            auth: Auth::new(&config.auth_jwt_secret),
            delivery: Deliverer::new(&config),
            store,
            cache,
            config,
        })
    }

    /// Counts one request against the acting uid's per-minute limit (0 = off, no Redis = off).
    pub async fn rate_limit(&self, what: Limited, uid: &str) -> Result<(), ApiError> {
        let limits = &self.config.rate_limits;
        let (bucket, per_min) = match what {
            Limited::Create => ("create", limits.create_per_min),
            Limited::Join => ("join", limits.join_per_min),
            Limited::Invite => ("invite", limits.invite_per_min),
        };
        if per_min == 0 {
            return Ok(());
        }
        match self.cache.count_in_window(bucket, uid).await {
            Some((count, retry_after_secs)) if count > u64::from(per_min) => {
                Err(ApiError::RateLimited { retry_after_secs })
            }
            _ => Ok(()),
        }
    }

    /// After a commit that touched a room: drop its cached copy, deliver the change's events
    /// (within the request's budget) and, when the change made the room final, ask LiveKit
    /// to delete it. A LiveKit or endpoint failure is logged and left to the sweepers; it
    /// never undoes or delays the state change beyond its timeout or budget.
    pub async fn after_change(&self, room_name: &str, changed: bool, finalised: bool) {
        self.after_commit(room_name, changed, finalised).await;
        if changed {
            self.deliver_events(&[room_name.to_owned()]).await;
        }
    }

    /// [`App::after_change`] without the events, for a caller that delivers several rooms'
    /// events under one budget.
    pub async fn after_commit(&self, room_name: &str, changed: bool, finalised: bool) {
        if changed && !self.cache.forget_room(room_name).await {
            // Redis is away: its copy of the room may outlive the outage. The sweeper drops
            // it as soon as Redis answers again, whichever instance that is.
            if let Err(err) = self.store.owe_cache_forget(room_name, Now::current()).await {
                tracing::warn!(room_name, error = %err, "cached room may stay stale until its TTL");
            }
        }
        if finalised {
            self.tear_down(room_name).await;
        }
    }

    /// A change that failed on the database's side (the connection lost around COMMIT, a
    /// timeout) may still have committed, and its retry then changes nothing and forgets
    /// nothing: drop the cached room anyway (a forget is always safe), then hand the outcome
    /// back. Refusals decided inside the transaction rolled back and change nothing.
    pub async fn forget_on_failure<T>(
        &self,
        room_name: &str,
        outcome: Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        if let Err(err) = &outcome
            && err.status() >= 500
        {
            self.after_commit(room_name, true, false).await;
        }
        outcome
    }

    /// After a commit that wrote events: makes them readable in the pull feed, then makes
    /// their first attempts, all within one request's budget. A failed publication is left to
    /// the event sweep, which publishes whatever is committed and unpublished.
    pub async fn deliver_events(&self, rooms: &[String]) -> DeliveryReport {
        if let Err(err) = self.store.publish_feed().await {
            tracing::warn!(error = %err, "feed not published; the event sweep publishes it");
        }
        let budget = self.delivery.settings().inline_budget;
        self.delivery
            .deliver(&self.store, rooms, Mode::Inline, budget)
            .await
    }

    /// DeleteRoom for a final room, then forget its pending teardown.
    pub async fn tear_down(&self, room_name: &str) {
        match self.livekit.delete_room(room_name).await {
            Ok(true) => {
                if let Err(err) = self.store.teardown_done(room_name).await {
                    tracing::warn!(room_name, error = %err, "teardown done but not recorded; it will repeat");
                }
            }
            Ok(false) => {}
            Err(error) => tracing::warn!(
                room_name,
                error,
                "livekit DeleteRoom failed; the sweeper retries"
            ),
        }
    }

    /// RemoveParticipant for a uid taken out of a call, then forget its pending removal. A
    /// failure is logged and left to the sweeper.
    pub async fn remove_from_livekit(&self, room_name: &str, uid: &str) {
        match self.livekit.remove_participant(room_name, uid).await {
            Ok(true) => {
                if let Err(err) = self.store.removal_done(room_name, uid).await {
                    tracing::warn!(room_name, uid, error = %err, "removal done but not recorded; it will repeat");
                }
            }
            Ok(false) => {}
            Err(error) => tracing::warn!(
                room_name,
                uid,
                error,
                "livekit RemoveParticipant failed; the sweeper retries"
            ),
        }
    }

    pub fn caller(&self, req: &lambda_http::Request) -> Result<Caller, ApiError> {
        self.auth.caller(crate::http::header(req, "authorization"))
    }
}
