//! Secrets from AWS Secrets Manager, read once per cold start when SECRETS_ARN is set. The
//! secret is a JSON object whose keys `database_url`, `redis_url`, `livekit_api_key`,
//! `livekit_api_secret`, `auth_jwt_secret` and `event_endpoints` (the EVENT_ENDPOINTS array,
//! as JSON or as a string holding it) override the environment. Values never reach a
//! log line or an error message: errors name the secret, the key and the problem only.

use std::time::Duration;

use aws_sdk_secretsmanager::config::timeout::TimeoutConfig;
use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use serde_json::Value;

use crate::config::{Config, ConfigError, Secrets};

/// The keys read from the secret; any other key is ignored.
pub const KEYS: [&str; 6] = [
    "database_url",
    "redis_url",
    "livekit_api_key",
    "livekit_api_secret",
    "auth_jwt_secret",
    "event_endpoints",
];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SecretsError {
    #[error(
        "AWS_REGION is required to read SECRETS_ARN {secret_id:?}: set AWS_REGION (Lambda sets it) \
         or give SECRETS_ARN as a full ARN, which names its region"
    )]
    NoRegion { secret_id: String },
    #[error(
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are required to read SECRETS_ARN \
         {secret_id:?} (Lambda sets them from the function's role)"
    )]
    NoCredentials { secret_id: String },
    #[error("SECRETS_ARN: secret {secret_id:?} was not found in {region}")]
    NotFound { secret_id: String, region: String },
    #[error(
        "SECRETS_ARN: access to secret {secret_id:?} was denied ({detail}); the function's role \
         needs secretsmanager:GetSecretValue on it (and kms:Decrypt for a customer managed key)"
    )]
    AccessDenied { secret_id: String, detail: String },
    #[error(
        "SECRETS_ARN: Secrets Manager in {region} could not be reached ({detail}); in a VPC the \
         function needs the Secrets Manager interface endpoint or a NAT gateway"
    )]
    Unreachable { region: String, detail: String },
    #[error("SECRETS_ARN: reading secret {secret_id:?} failed: {detail}")]
    Failed { secret_id: String, detail: String },
    #[error("SECRETS_ARN: secret {secret_id:?} is malformed: {reason}")]
    Malformed { secret_id: String, reason: String },
}

/// Why a function could not start: its configuration, or the secret behind it.
#[derive(thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Secrets(#[from] SecretsError),
}

/// `main` returning this prints it with `{:?}`: make that the readable message.
impl std::fmt::Debug for InitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// The configuration from the process environment plus the secret SECRETS_ARN names.
pub async fn config_from_env() -> Result<Config, InitError> {
    config_from_lookup(|name| std::env::var(name).ok()).await
}

/// `lookup` reads the environment; when it names SECRETS_ARN, the secret's keys override it.
pub async fn config_from_lookup(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Config, InitError> {
    let secrets = match Source::from_lookup(&lookup)? {
        Some(source) => source.fetch().await?,
        None => Secrets::default(),
    };
    Ok(Config::from_lookup(lookup, secrets)?)
}

/// Where the secret lives and how to reach it, all read through the same lookup as the rest of
/// the configuration, so tests need no process-wide environment.
pub struct Source {
    pub secret_id: String,
    pub region: String,
    pub endpoint_url: Option<String>,
    credentials: Credentials,
}

impl Source {
    /// None when SECRETS_ARN is unset. The region is AWS_REGION (always set in Lambda), else the
    /// one in the ARN; AWS_ENDPOINT_URL points the client at an emulator.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Source>, SecretsError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let Some(secret_id) = get("SECRETS_ARN").map(|v| v.trim().to_owned()) else {
            return Ok(None);
        };
        let region = get("AWS_REGION")
            .or_else(|| get("AWS_DEFAULT_REGION"))
            .or_else(|| region_of_arn(&secret_id).map(str::to_owned))
            .ok_or_else(|| SecretsError::NoRegion {
                secret_id: secret_id.clone(),
            })?;
        // Lambda puts the role's session in these variables. Only they are read: aws-config's
        // provider chain (profiles, STS, SSO, instance metadata) adds about 0.7 MB to every
        // arm64 binary for places these functions never run. Elsewhere, export a session
        // (`aws configure export-credentials --format env`).
        let credentials = match (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")) {
            (Some(key), Some(secret)) => {
                Credentials::new(key, secret, get("AWS_SESSION_TOKEN"), None, "environment")
            }
            _ => return Err(SecretsError::NoCredentials { secret_id }),
        };
        Ok(Some(Source {
            secret_id,
            region,
            endpoint_url: get("AWS_ENDPOINT_URL_SECRETS_MANAGER")
                .or_else(|| get("AWS_ENDPOINT_URL")),
            credentials,
        }))
    }

    /// A Secrets Manager client sending through reqwest on rustls with ring, the one HTTP
    /// client and crypto provider of the build.
    pub fn client(&self) -> aws_sdk_secretsmanager::Client {
        let http = crate::outbound::sdk_http_client();
        // Lambda allows 10 s for init: fail with a clear error well before that.
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(2))
            .operation_attempt_timeout(Duration::from_secs(3))
            .operation_timeout(Duration::from_secs(7))
            .build();
        let mut config = aws_sdk_secretsmanager::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .credentials_provider(self.credentials.clone())
            .http_client(http)
            .timeout_config(timeouts);
        if let Some(url) = &self.endpoint_url {
            config = config.endpoint_url(url);
        }
        aws_sdk_secretsmanager::Client::from_conf(config.build())
    }

    pub async fn fetch(&self) -> Result<Secrets, SecretsError> {
        let output = self
            .client()
            .get_secret_value()
            .secret_id(&self.secret_id)
            .send()
            .await
            .map_err(|err| self.classify(err))?;
        let text = output
            .secret_string()
            .ok_or_else(|| SecretsError::Malformed {
                secret_id: self.secret_id.clone(),
                reason: "it holds binary data, not a JSON object".into(),
            })?;
        let secrets = parse(&self.secret_id, text)?;
        let present: Vec<&str> = KEYS
            .iter()
            .copied()
            .filter(|key| value_of(&secrets, key).is_some())
            .collect();
        if present.is_empty() {
            tracing::warn!(secret = %self.secret_id, "the secret has none of the keys {KEYS:?}");
        } else {
            tracing::info!(secret = %self.secret_id, keys = ?present, "secrets loaded");
        }
        Ok(secrets)
    }

    fn classify<R>(
        &self,
        err: SdkError<aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError, R>,
    ) -> SecretsError
    where
        R: std::fmt::Debug + 'static,
    {
        match &err {
            SdkError::ServiceError(service) => {
                let e = service.err();
                classify_service(self, e.code(), e.message())
            }
            SdkError::TimeoutError(_) => SecretsError::Unreachable {
                region: self.region.clone(),
                detail: "timed out".into(),
            },
            SdkError::DispatchFailure(dispatch) if dispatch.is_io() || dispatch.is_timeout() => {
                SecretsError::Unreachable {
                    region: self.region.clone(),
                    detail: chain(&err),
                }
            }
            _ => SecretsError::Failed {
                secret_id: self.secret_id.clone(),
                detail: chain(&err),
            },
        }
    }
}

/// An error and its sources on one line: "dispatch failure: io error: ...: Connection refused".
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// What an error answered by Secrets Manager means for the operator.
fn classify_service(source: &Source, code: Option<&str>, message: Option<&str>) -> SecretsError {
    let detail = match (code, message) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        (None, Some(message)) => message.to_owned(),
        (None, None) => "no error code".to_owned(),
    };
    match code {
        Some("ResourceNotFoundException") => SecretsError::NotFound {
            secret_id: source.secret_id.clone(),
            region: source.region.clone(),
        },
        Some("AccessDeniedException" | "DecryptionFailure") => SecretsError::AccessDenied {
            secret_id: source.secret_id.clone(),
            detail,
        },
        _ => SecretsError::Failed {
            secret_id: source.secret_id.clone(),
            detail,
        },
    }
}

/// Parses the secret's JSON. Errors never quote the text: serde_json's syntax errors give only a
/// line and column, and wrong types are reported by key.
pub fn parse(secret_id: &str, text: &str) -> Result<Secrets, SecretsError> {
    let malformed = |reason: String| SecretsError::Malformed {
        secret_id: secret_id.to_owned(),
        reason,
    };
    let value: Value =
        serde_json::from_str(text).map_err(|e| malformed(format!("not valid JSON ({e})")))?;
    let Value::Object(object) = value else {
        return Err(malformed(format!(
            "it must be a JSON object with the keys {KEYS:?}"
        )));
    };
    let field = |key: &str| match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(malformed(format!("{key} must be a string"))),
    };
    Ok(Secrets {
        database_url: field("database_url")?,
        redis_url: field("redis_url")?,
        livekit_api_key: field("livekit_api_key")?,
        livekit_api_secret: field("livekit_api_secret")?,
        auth_jwt_secret: field("auth_jwt_secret")?,
        event_endpoints: match object.get("event_endpoints") {
            // The endpoints' signing keys are secrets too: an array is kept as its JSON text.
            Some(array @ Value::Array(_)) => Some(array.to_string()),
            _ => field("event_endpoints")?,
        },
    })
}

fn value_of<'a>(secrets: &'a Secrets, key: &str) -> Option<&'a str> {
    match key {
        "database_url" => secrets.database_url.as_deref(),
        "redis_url" => secrets.redis_url.as_deref(),
        "livekit_api_key" => secrets.livekit_api_key.as_deref(),
        "livekit_api_secret" => secrets.livekit_api_secret.as_deref(),
        "auth_jwt_secret" => secrets.auth_jwt_secret.as_deref(),
        "event_endpoints" => secrets.event_endpoints.as_deref(),
        _ => None,
    }
}

/// `arn:aws:secretsmanager:<region>:<account>:secret:<name>` names its region.
fn region_of_arn(id: &str) -> Option<&str> {
    let mut parts = id.split(':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("arn"), Some(_), Some("secretsmanager"), Some(region)) if !region.is_empty() => {
            Some(region)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::{Ipv4Addr, TcpListener, TcpStream};
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};
    use std::time::Instant;

    use super::*;

    const ARN: &str = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:call-AbCdEf";

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn without_credentials_the_error_names_them() {
        let err = Source::from_lookup(lookup(&[("SECRETS_ARN", ARN)]))
            .err()
            .expect("no credentials");
        assert!(matches!(err, SecretsError::NoCredentials { .. }));
        assert!(err.to_string().contains("AWS_ACCESS_KEY_ID"), "{err}");
    }

    #[test]
    fn no_secrets_arn_means_no_source() {
        let source = Source::from_lookup(lookup(&[("AWS_REGION", "eu-west-1")]));
        assert!(matches!(source, Ok(None)));
    }

    /// What Lambda sets: the role's session.
    const SESSION: [(&str, &str); 3] = [
        ("AWS_ACCESS_KEY_ID", "ASIA-test"),
        ("AWS_SECRET_ACCESS_KEY", "test-secret"),
        ("AWS_SESSION_TOKEN", "test-token"),
    ];

    fn source(vars: &[(&str, &str)]) -> Source {
        let all: Vec<(&str, &str)> = vars.iter().chain(SESSION.iter()).copied().collect();
        Source::from_lookup(lookup(&all))
            .expect("valid")
            .expect("set")
    }

    #[test]
    fn the_region_comes_from_the_arn_when_aws_region_is_unset() {
        assert_eq!(source(&[("SECRETS_ARN", ARN)]).region, "eu-west-1");
        let source = source(&[("SECRETS_ARN", ARN), ("AWS_REGION", "us-east-2")]);
        assert_eq!(source.region, "us-east-2");
    }

    #[test]
    fn a_secret_name_without_aws_region_names_aws_region() {
        let err = Source::from_lookup(lookup(&[("SECRETS_ARN", "call/prod")]))
            .err()
            .expect("no region");
        assert!(
            err.to_string().starts_with("AWS_REGION is required"),
            "{err}"
        );
    }

    #[test]
    fn parse_reads_the_known_keys_and_ignores_the_rest() {
        let secrets = parse(
            ARN,
            r#"{"database_url":"mysql://u:p@db/call","auth_jwt_secret":"jwt","redis_url":"",
                "livekit_api_key":null,"username":"ignored"}"#,
        )
        .expect("valid");
        assert_eq!(secrets.database_url.as_deref(), Some("mysql://u:p@db/call"));
        assert_eq!(secrets.auth_jwt_secret.as_deref(), Some("jwt"));
        assert_eq!(secrets.redis_url, None);
        assert_eq!(secrets.livekit_api_key, None);
    }

    #[test]
    fn malformed_secrets_are_named_without_their_values() {
        for (text, expected) in [
            ("hunter2-not-json", "not valid JSON"),
            (r#""hunter2-a-string""#, "must be a JSON object"),
            (
                r#"{"auth_jwt_secret":["hunter2-in-a-list"]}"#,
                "auth_jwt_secret must be a string",
            ),
            (r#"{"auth_jwt_secret":"hunter2""#, "not valid JSON"),
        ] {
            let err = parse(ARN, text).expect_err(text).to_string();
            assert!(err.contains(expected), "{err}");
            assert!(err.contains(ARN), "{err}");
            assert!(!err.contains("hunter2"), "the value leaked: {err}");
        }
    }

    #[test]
    fn access_denied_says_what_the_role_needs() {
        let source = source(&[("SECRETS_ARN", ARN)]);
        let err = classify_service(
            &source,
            Some("AccessDeniedException"),
            Some("not authorized"),
        );
        assert!(matches!(err, SecretsError::AccessDenied { .. }));
        assert!(err.to_string().contains("secretsmanager:GetSecretValue"));
        let err = classify_service(&source, Some("ResourceNotFoundException"), None);
        assert!(matches!(err, SecretsError::NotFound { .. }));
    }

    /// A moto server (Secrets Manager emulator) on a free loopback port, stopped on drop.
    struct Moto {
        child: Child,
        url: String,
    }

    impl Moto {
        /// Fails the test (never skips it) when moto cannot start.
        fn start() -> Moto {
            let program = std::env::var_os("MOTO_SERVER")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/moto_server")
                });
            assert!(
                program.exists(),
                "{} not found: scripts/test.sh installs moto[server] from requirements-dev.txt \
                 into .venv (or set MOTO_SERVER)",
                program.display()
            );
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|listener| listener.local_addr())
                .expect("a free loopback port")
                .port();
            let mut child = Command::new(&program)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
            let started = Instant::now();
            while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("moto_server exited ({status}) before it answered on port {port}");
                }
                if started.elapsed() > Duration::from_secs(60) {
                    let _ = child.kill();
                    panic!("moto_server did not answer on port {port} within 60 s");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Moto {
                child,
                url: format!("http://127.0.0.1:{port}"),
            }
        }

        /// The environment of a function pointed at this emulator with dummy credentials.
        fn env(&self, secret_id: &str) -> Vec<(&'static str, String)> {
            vec![
                ("SECRETS_ARN", secret_id.to_owned()),
                ("AWS_REGION", "us-east-1".to_owned()),
                ("AWS_ENDPOINT_URL", self.url.clone()),
                ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
                ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
                ("DATABASE_URL", crate::database::TEST_URL_EXAMPLE.to_owned()),
                ("LIVEKIT_URL", "https://lk.internal:7880".to_owned()),
                ("LIVEKIT_API_KEY", "env-key".to_owned()),
                ("LIVEKIT_API_SECRET", "env-secret".to_owned()),
                ("AUTH_JWT_SECRET", "env-jwt".to_owned()),
            ]
        }

        /// Stores a secret in the emulator and returns its ARN.
        async fn put(&self, name: &str, text: &str) -> String {
            let env = self.env(name);
            let vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let source = Source::from_lookup(lookup(&vars))
                .expect("valid")
                .expect("set");
            let created = source
                .client()
                .create_secret()
                .name(name)
                .secret_string(text)
                .send()
                .await
                .unwrap_or_else(|e| panic!("creating {name} in moto: {}", chain(&e)));
            created.arn().expect("moto returns the ARN").to_owned()
        }

        async fn config(&self, secret_id: &str) -> Result<Config, InitError> {
            let env = self.env(secret_id);
            let vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            config_from_lookup(lookup(&vars)).await
        }
    }

    impl Drop for Moto {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[tokio::test]
    async fn secrets_from_the_emulator_override_the_environment() {
        let moto = Moto::start();
        // Differs from the environment's DATABASE_URL, with the scheme this build speaks.
        let database_url = format!("{}_from_secret", crate::database::TEST_URL_EXAMPLE);
        let text = serde_json::json!({
            "database_url": database_url,
            "redis_url": "redis://cache.internal:6379/0",
            "livekit_api_key": "secret-key",
            "livekit_api_secret": "secret-secret",
            "auth_jwt_secret": "secret-jwt",
            "username": "ignored",
        })
        .to_string();
        let arn = moto.put("call/prod", &text).await;
        let config = moto.config(&arn).await.expect("config from the secret");
        assert_eq!(config.database_url, database_url);
        assert_eq!(
            config.redis_url.as_deref(),
            Some("redis://cache.internal:6379/0")
        );
        assert_eq!(config.livekit_api_key, "secret-key");
        assert_eq!(config.livekit_api_secret, "secret-secret");
        assert_eq!(config.auth_jwt_secret, "secret-jwt");
        assert_eq!(config.secrets_arn.as_deref(), Some(arn.as_str()));
        // Keys the secret leaves out keep their environment values.
        let partial = moto
            .put("call/partial", r#"{"auth_jwt_secret":"only-jwt"}"#)
            .await;
        let config = moto.config(&partial).await.expect("partial secret");
        assert_eq!(config.auth_jwt_secret, "only-jwt");
        assert_eq!(config.livekit_api_key, "env-key");
        assert!(!format!("{config:?}").contains("only-jwt"));
    }

    #[tokio::test]
    async fn a_missing_secret_stops_init_naming_it() {
        let moto = Moto::start();
        let missing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:absent-AbCdEf";
        let err = moto.config(missing).await.expect_err("no such secret");
        assert!(
            matches!(err, InitError::Secrets(SecretsError::NotFound { .. })),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("SECRETS_ARN") && text.contains(missing),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_malformed_secret_stops_init_without_echoing_it() {
        let moto = Moto::start();
        let arn = moto.put("call/broken", "database_url=hunter2").await;
        let err = moto.config(&arn).await.expect_err("not JSON");
        assert!(
            matches!(err, InitError::Secrets(SecretsError::Malformed { .. })),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("not valid JSON") && text.contains(&arn),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[tokio::test]
    async fn an_unreachable_secrets_manager_is_reported_as_such() {
        // A port nobody listens on: bound, then released.
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let vars = [
            ("SECRETS_ARN", ARN),
            ("AWS_ENDPOINT_URL", url.as_str()),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ];
        let err = config_from_lookup(lookup(&vars))
            .await
            .expect_err("refused");
        assert!(
            matches!(err, InitError::Secrets(SecretsError::Unreachable { .. })),
            "{err:?}"
        );
        assert!(err.to_string().contains("could not be reached"), "{err}");
    }

    #[tokio::test]
    async fn a_silent_secrets_manager_times_out_within_the_init_budget() {
        // Accepts connections and never answers: the SDK's attempt and operation timeouts
        // must end init with a clear error well inside Lambda's 10 s.
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("its address"));
        std::thread::spawn(move || {
            let mut open = Vec::new();
            while let Ok((stream, _)) = listener.accept() {
                open.push(stream);
                if open.len() >= 8 {
                    break;
                }
            }
        });
        let vars = [
            ("SECRETS_ARN", ARN),
            ("AWS_ENDPOINT_URL", url.as_str()),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ];
        let started = Instant::now();
        let err = config_from_lookup(lookup(&vars))
            .await
            .expect_err("timed out");
        let elapsed = started.elapsed();
        assert!(
            matches!(err, InitError::Secrets(SecretsError::Unreachable { .. })),
            "{err:?}"
        );
        assert!(elapsed < Duration::from_secs(9), "took {elapsed:?}");
    }
}
