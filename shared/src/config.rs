//! Configuration, read once per cold start. Development defaults exist only for the
//! local main job (APP_ENV=local); anywhere else a missing value stops the function at init.

use std::time::Duration;

use base64::Engine;
use sha2::Digest;

use crate::model::EventType;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("{0} is required (set it, or run the local main job with APP_ENV=local)")]
    Missing(&'static str),
    #[error("{name} is malformed: {reason}")]
    Malformed { name: &'static str, reason: String },
}

/// Values that may come from the environment or, later, from a Secrets Manager secret.
#[derive(Clone, Default, PartialEq)]
pub struct Secrets {
    pub database_url: Option<String>,
    pub redis_url: Option<String>,
    pub livekit_api_key: Option<String>,
    pub livekit_api_secret: Option<String>,
    pub auth_jwt_secret: Option<String>,
    /// The JSON of EVENT_ENDPOINTS (the secret's key `event_endpoints`).
    pub event_endpoints: Option<String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets { .. }")
    }
}

#[derive(Clone, PartialEq)]
pub struct Config {
    pub local: bool,
    pub database_url: String,
    /// How long a database connection may sit unused before the server closes it
    /// (DB_IDLE_SECONDS; README "Database connections").
    pub db_idle: Duration,
    /// How long a function keeps one database connection before it opens another
    /// (DB_CONNECTION_LIFETIME_SECONDS).
    pub db_lifetime: Duration,
    pub redis_url: Option<String>,
    pub livekit_url: Option<String>,
    pub livekit_client_url: String,
    pub livekit_api_key: String,
    pub livekit_api_secret: String,
    pub auth_jwt_secret: String,
    pub ring_timeout: Duration,
    pub token_ttl: Duration,
    pub max_participants_limit: i64,
    pub max_call: Option<Duration>,
    /// How long one participant may stay alone in a running call, by default.
    pub solo_timeout: Option<Duration>,
    /// The sweeper function keeps sweeping, once a second, for this long per invocation
    /// (EventBridge invokes it once a minute); None: one sweep per invocation.
    pub sweep_loop: Option<Duration>,
    pub rate_limits: RateLimits,
    /// How long an Idempotency-Key's answer is kept for retries.
    pub idempotency_ttl: Duration,
    pub secrets_arn: Option<String>,
    /// Where business events are delivered (EVENT_ENDPOINTS); empty: the pull feed only.
    pub event_endpoints: Vec<EventEndpoint>,
    pub delivery: DeliverySettings,
}

/// One receiver of business events: its URL, its Standard Webhooks signing key and the
/// event types it wants (None: all).
#[derive(Clone, PartialEq)]
pub struct EventEndpoint {
    /// A short stable name for the URL (what the delivery tables store).
    pub key: String,
    pub url: String,
    /// The signing key: the base64 after `whsec_`, decoded.
    pub secret: Vec<u8>,
    pub types: Option<Vec<EventType>>,
}

impl EventEndpoint {
    pub fn wants(&self, event_type: EventType) -> bool {
        self.types
            .as_ref()
            .is_none_or(|types| types.contains(&event_type))
    }
}

impl std::fmt::Debug for EventEndpoint {
    // The signing key never reaches logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventEndpoint")
            .field("key", &self.key)
            .field("url", &self.url)
            .field("types", &self.types)
            .finish_non_exhaustive()
    }
}

/// How business events are delivered and kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeliverySettings {
    /// One attempt's time limit (connect, send, answer).
    pub timeout: Duration,
    /// What one API request may spend on first attempts after its commit, all endpoints
    /// together; what does not fit is left to the sweeper.
    pub inline_budget: Duration,
    /// The pause after the first failure; it doubles with each further one, up to `retry_max`,
    /// and each pause is jittered down by up to half.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// How long an event is retried before it is given up.
    pub retry_window: Duration,
    /// Failures in a row after which an endpoint gets no attempts inside API requests, until
    /// a retry by the sweeper succeeds.
    pub failures_before_pause: u32,
    /// Delivered (or given-up) events are purged after this long.
    pub retention: Duration,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            timeout: Duration::from_secs(5),
            inline_budget: Duration::from_millis(300),
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(3600),
            retry_window: Duration::from_secs(25 * 3600),
            failures_before_pause: 3,
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl std::fmt::Debug for Config {
    // Secrets never reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("local", &self.local)
            .field("livekit_url", &self.livekit_url)
            .field("livekit_client_url", &self.livekit_client_url)
            .field("ring_timeout", &self.ring_timeout)
            .field("token_ttl", &self.token_ttl)
            .field("max_participants_limit", &self.max_participants_limit)
            .field("max_call", &self.max_call)
            .field("solo_timeout", &self.solo_timeout)
            .field("sweep_loop", &self.sweep_loop)
            .field("rate_limits", &self.rate_limits)
            .field("idempotency_ttl", &self.idempotency_ttl)
            .finish_non_exhaustive()
    }
}

/// Requests per minute per acting uid; 0 switches a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub create_per_min: u32,
    pub join_per_min: u32,
    pub invite_per_min: u32,
}

pub const LOCAL_DATABASE_URL: &str = "sqlite://.local/call.db?mode=rwc";
pub const LOCAL_LIVEKIT_URL: &str = "http://localhost:7880";
pub const LOCAL_LIVEKIT_API_KEY: &str = "devkey";
pub const LOCAL_LIVEKIT_API_SECRET: &str = "secret-for-local-development-only-0001";
pub const LOCAL_AUTH_JWT_SECRET: &str = "local-development-auth-secret-do-not-deploy";

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok(), Secrets::default())
    }

    /// `lookup` reads the environment; `secrets` (from SECRETS_ARN) override it.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        secrets: Secrets,
    ) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let local = get("APP_ENV").is_some_and(|v| v == "local");
        let required = |name: &'static str, secret: Option<String>, dev: &str| {
            secret
                .or_else(|| get(name))
                .or_else(|| local.then(|| dev.to_owned()))
                .ok_or(ConfigError::Missing(name))
        };
        let number = |name: &'static str, default: u64| -> Result<u64, ConfigError> {
            match get(name) {
                None => Ok(default),
                Some(v) => v.trim().parse::<u64>().map_err(|e| ConfigError::Malformed {
                    name,
                    reason: format!("{e} (got {v:?})"),
                }),
            }
        };
        let rate = |name: &'static str, default: u64| -> Result<u32, ConfigError> {
            u32::try_from(number(name, default)?).map_err(|e| ConfigError::Malformed {
                name,
                reason: e.to_string(),
            })
        };

        let database_url = required("DATABASE_URL", secrets.database_url, LOCAL_DATABASE_URL)?;
        check_database_url(&database_url)?;
        let db_idle = number("DB_IDLE_SECONDS", crate::store::DEFAULT_IDLE.as_secs())?;
        if !(3..=3600).contains(&db_idle) {
            return Err(ConfigError::Malformed {
                name: "DB_IDLE_SECONDS",
                reason: "must be between 3 and 3600".into(),
            });
        }
        let db_lifetime = number(
            "DB_CONNECTION_LIFETIME_SECONDS",
            crate::store::DEFAULT_LIFETIME.as_secs(),
        )?;
        if !(1..=86_400).contains(&db_lifetime) {
            return Err(ConfigError::Malformed {
                name: "DB_CONNECTION_LIFETIME_SECONDS",
                reason: "must be between 1 and 86400".into(),
            });
        }
        let livekit_url = get("LIVEKIT_URL");
        let livekit_client_url = get("LIVEKIT_CLIENT_URL")
            .or_else(|| livekit_url.clone())
            .or_else(|| local.then(|| LOCAL_LIVEKIT_URL.to_owned()))
            .ok_or(ConfigError::Missing("LIVEKIT_CLIENT_URL"))?;
        let max_participants_limit = number("MAX_PARTICIPANTS_LIMIT", 50)?;
        if !(2..=10_000).contains(&max_participants_limit) {
            return Err(ConfigError::Malformed {
                name: "MAX_PARTICIPANTS_LIMIT",
                reason: "must be between 2 and 10000".into(),
            });
        }
        let ring_timeout = number("RING_TIMEOUT_SECONDS", 60)?;
        if ring_timeout == 0 {
            return Err(ConfigError::Malformed {
                name: "RING_TIMEOUT_SECONDS",
                reason: "must be at least 1".into(),
            });
        }
        let token_ttl = number("LIVEKIT_TOKEN_TTL_SECONDS", 3600)?;
        if token_ttl == 0 {
            return Err(ConfigError::Malformed {
                name: "LIVEKIT_TOKEN_TTL_SECONDS",
                reason: "must be at least 1".into(),
            });
        }
        let max_call = number("MAX_CALL_SECONDS", 0)?;
        let solo_timeout = number("SOLO_TIMEOUT_SECONDS", 0)?;
        let sweep_loop = number("SWEEP_LOOP_SECONDS", 0)?;
        let idempotency_ttl = number("IDEMPOTENCY_KEY_TTL_SECONDS", 86_400)?;
        if !(1..=2_592_000).contains(&idempotency_ttl) {
            return Err(ConfigError::Malformed {
                name: "IDEMPOTENCY_KEY_TTL_SECONDS",
                reason: "must be between 1 and 2592000 (30 days)".into(),
            });
        }
        if sweep_loop > 840 {
            return Err(ConfigError::Malformed {
                name: "SWEEP_LOOP_SECONDS",
                reason: "must be at most 840 (a Lambda runs 15 minutes at most)".into(),
            });
        }

        let event_endpoints = match secrets.event_endpoints.or_else(|| get("EVENT_ENDPOINTS")) {
            Some(json) => parse_event_endpoints(&json)?,
            None => Vec::new(),
        };
        let millis =
            |name: &'static str, default: Duration, min: u64| -> Result<Duration, ConfigError> {
                let ms = number(name, u64::try_from(default.as_millis()).unwrap_or(u64::MAX))?;
                if ms < min {
                    return Err(ConfigError::Malformed {
                        name,
                        reason: format!("must be at least {min}"),
                    });
                }
                Ok(Duration::from_millis(ms))
            };
        let defaults = DeliverySettings::default();
        let delivery = DeliverySettings {
            timeout: millis("EVENT_TIMEOUT_MS", defaults.timeout, 10)?,
            inline_budget: millis("EVENT_INLINE_BUDGET_MS", defaults.inline_budget, 0)?,
            retry_base: millis("EVENT_RETRY_BASE_MS", defaults.retry_base, 1)?,
            retry_max: millis("EVENT_RETRY_MAX_MS", defaults.retry_max, 1)?,
            retry_window: Duration::from_secs(number(
                "EVENT_RETRY_WINDOW_SECONDS",
                defaults.retry_window.as_secs(),
            )?),
            failures_before_pause: rate(
                "EVENT_FAILURES_BEFORE_PAUSE",
                defaults.failures_before_pause.into(),
            )?,
            retention: Duration::from_secs(
                number(
                    "EVENT_RETENTION_DAYS",
                    defaults.retention.as_secs() / 86_400,
                )?
                .saturating_mul(86_400),
            ),
        };

        Ok(Config {
            local,
            database_url,
            db_idle: Duration::from_secs(db_idle),
            db_lifetime: Duration::from_secs(db_lifetime),
            redis_url: secrets.redis_url.or_else(|| get("REDIS_URL")),
            livekit_url,
            livekit_client_url,
            livekit_api_key: required(
                "LIVEKIT_API_KEY",
                secrets.livekit_api_key,
                LOCAL_LIVEKIT_API_KEY,
            )?,
            livekit_api_secret: required(
                "LIVEKIT_API_SECRET",
                secrets.livekit_api_secret,
                LOCAL_LIVEKIT_API_SECRET,
            )?,
            auth_jwt_secret: required(
                "AUTH_JWT_SECRET",
                secrets.auth_jwt_secret,
                LOCAL_AUTH_JWT_SECRET,
            )?,
            ring_timeout: Duration::from_secs(ring_timeout),
            token_ttl: Duration::from_secs(token_ttl),
            max_participants_limit: max_participants_limit as i64,
            max_call: (max_call > 0).then(|| Duration::from_secs(max_call)),
            solo_timeout: (solo_timeout > 0).then(|| Duration::from_secs(solo_timeout)),
            sweep_loop: (sweep_loop > 0).then(|| Duration::from_secs(sweep_loop)),
            rate_limits: RateLimits {
                create_per_min: rate("RATE_LIMIT_CREATE_PER_MIN", 30)?,
                join_per_min: rate("RATE_LIMIT_JOIN_PER_MIN", 120)?,
                invite_per_min: rate("RATE_LIMIT_INVITE_PER_MIN", 60)?,
            },
            idempotency_ttl: Duration::from_secs(idempotency_ttl),
            secrets_arn: get("SECRETS_ARN"),
            event_endpoints,
            delivery,
        })
    }
}

/// EVENT_ENDPOINTS: `[{"url": "https://…", "secret": "whsec_…", "types": ["room.ended", …]}]`.
pub fn parse_event_endpoints(json: &str) -> Result<Vec<EventEndpoint>, ConfigError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Entry {
        url: String,
        secret: String,
        types: Option<Vec<String>>,
    }
    let bad = |reason: String| ConfigError::Malformed {
        name: "EVENT_ENDPOINTS",
        reason,
    };
    let entries: Vec<Entry> = serde_json::from_str(json).map_err(|e| {
        bad(format!(
            "a JSON array of {{url, secret, types}} is expected: {e}"
        ))
    })?;
    let mut endpoints: Vec<EventEndpoint> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let url = entry.url.trim().to_owned();
        if !(url.starts_with("https://") || url.starts_with("http://")) || url.len() > 1000 {
            return Err(bad(format!(
                "endpoint {i}: url must be http(s)://…, at most 1000 characters"
            )));
        }
        let secret = entry
            .secret
            .strip_prefix("whsec_")
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .filter(|key| (16..=128).contains(&key.len()))
            .ok_or_else(|| {
                bad(format!(
                    "endpoint {i}: secret must be whsec_ followed by base64 of 16 to 128 bytes"
                ))
            })?;
        let types = entry
            .types
            .map(|names| {
                names
                    .iter()
                    .map(|name| {
                        EventType::parse(name).ok_or_else(|| {
                            bad(format!("endpoint {i}: unknown event type {name:?}"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        let key = endpoint_key(&url);
        if endpoints.iter().any(|e| e.key == key) {
            return Err(bad(format!("endpoint {i}: {url} is listed twice")));
        }
        endpoints.push(EventEndpoint {
            key,
            url,
            secret,
            types,
        });
    }
    Ok(endpoints)
}

/// `ep_` and 16 hex digits of the URL's SHA-256: stable while the URL is, whatever the secret.
fn endpoint_key(url: &str) -> String {
    let digest = sha2::Sha256::digest(url.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("ep_{hex}")
}

impl Config {
    /// A new call's timeouts when create does not name them.
    pub fn default_limits(&self) -> crate::model::CallLimits {
        let secs =
            |d: Option<Duration>| d.map_or(0, |d| i32::try_from(d.as_secs()).unwrap_or(i32::MAX));
        crate::model::CallLimits {
            ring_timeout_seconds: secs(Some(self.ring_timeout)),
            max_duration_seconds: secs(self.max_call),
            solo_timeout_seconds: secs(self.solo_timeout),
        }
    }
}

/// METRICS_ENABLED: unset, `true` or `1` keep the EMF metrics (printed with JSON logs);
/// `false` or `0` switch them off, collector and all (a stack that does not want the custom
/// metrics' cost, or a measurement of what they cost). Read at start-up by `telemetry::init`,
/// before the rest of the configuration.
pub fn metrics_enabled(value: Option<&str>) -> Result<bool, ConfigError> {
    match value.map(str::trim) {
        None | Some("") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => Ok(false),
        Some(_) => Err(ConfigError::Malformed {
            name: "METRICS_ENABLED",
            reason: "expected true or false".to_owned(),
        }),
    }
}

/// The scheme must match the backend this build was compiled for.
fn check_database_url(url: &str) -> Result<(), ConfigError> {
    let expected = crate::database::URL_SCHEMES;
    if expected.iter().any(|scheme| url.starts_with(scheme)) {
        Ok(())
    } else {
        Err(ConfigError::Malformed {
            name: "DATABASE_URL",
            reason: format!("this build speaks {}", expected.join(" or ")),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned(), Secrets::default())
    }

    fn production() -> Vec<(&'static str, &'static str)> {
        vec![
            ("DATABASE_URL", crate::database::TEST_URL_EXAMPLE),
            ("LIVEKIT_URL", "https://lk.internal:7880"),
            ("LIVEKIT_API_KEY", "key"),
            ("LIVEKIT_API_SECRET", "secret"),
            ("AUTH_JWT_SECRET", "jwt"),
        ]
    }

    #[test]
    fn production_refuses_to_start_without_secrets() {
        let err = config(&[("DATABASE_URL", crate::database::TEST_URL_EXAMPLE)]);
        assert_eq!(err, Err(ConfigError::Missing("LIVEKIT_CLIENT_URL")));
        let mut vars = production();
        vars.retain(|(k, _)| *k != "AUTH_JWT_SECRET");
        assert_eq!(config(&vars), Err(ConfigError::Missing("AUTH_JWT_SECRET")));
    }

    #[test]
    fn local_mode_has_development_defaults() {
        let cfg = config(&[("APP_ENV", "local")]);
        // The default database is SQLite, which only the embedded build speaks.
        if cfg!(feature = "embedded") {
            let cfg = cfg.expect("local defaults");
            assert_eq!(cfg.livekit_client_url, LOCAL_LIVEKIT_URL);
            assert_eq!(cfg.ring_timeout, Duration::from_secs(60));
        } else {
            assert!(matches!(
                cfg,
                Err(ConfigError::Malformed {
                    name: "DATABASE_URL",
                    ..
                })
            ));
        }
    }

    #[test]
    fn client_url_defaults_to_the_server_url() {
        let cfg = config(&production()).expect("valid");
        assert_eq!(cfg.livekit_client_url, "https://lk.internal:7880");
        assert_eq!(cfg.rate_limits.join_per_min, 120);
        assert_eq!(cfg.max_call, None);
    }

    #[test]
    fn metrics_are_on_unless_switched_off_and_a_typo_names_the_variable() {
        for (value, expected) in [
            (None, true),
            (Some(""), true),
            (Some("true"), true),
            (Some("TRUE"), true),
            (Some("1"), true),
            (Some("false"), false),
            (Some(" False "), false),
            (Some("0"), false),
        ] {
            assert_eq!(metrics_enabled(value), Ok(expected), "{value:?}");
        }
        let err = metrics_enabled(Some("off")).expect_err("off is not a boolean here");
        assert!(err.to_string().contains("METRICS_ENABLED"), "{err}");
    }

    #[test]
    fn malformed_numbers_name_the_variable() {
        let mut vars = production();
        vars.push(("RING_TIMEOUT_SECONDS", "soon"));
        let err = config(&vars).expect_err("malformed");
        assert!(err.to_string().contains("RING_TIMEOUT_SECONDS"));
    }

    #[test]
    fn secrets_override_the_environment_and_never_print() {
        let map: HashMap<String, String> = production()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let secrets = Secrets {
            auth_jwt_secret: Some("from-secret".into()),
            ..Secrets::default()
        };
        let cfg = Config::from_lookup(|k| map.get(k).cloned(), secrets).expect("valid");
        assert_eq!(cfg.auth_jwt_secret, "from-secret");
        assert!(!format!("{cfg:?}").contains("from-secret"));
    }
}
