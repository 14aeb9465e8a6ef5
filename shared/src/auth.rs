//! Bearer-token auth: HS256 JWTs with `exp`, for trusted services or single users.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// Who is calling: a trusted backend acting for any uid, or one user acting as itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Service { sub: String },
    User { uid: String },
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub exp: u64,
}

#[derive(Clone)]
pub struct Auth {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
}

impl Auth {
    pub fn new(secret: &str) -> Self {
        crate::livekit::install_jwt_backend();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 5;
        Auth {
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// The caller behind `Authorization: Bearer <jwt>`; anything wrong is 401.
    pub fn caller(&self, authorization: Option<&str>) -> Result<Caller, ApiError> {
        let token = authorization
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| ApiError::Unauthorized)?;
        let claims = data.claims;
        match claims.role.as_deref() {
            Some("service") => Ok(Caller::Service { sub: claims.sub }),
            None | Some("user") if crate::validate::name("sub", &claims.sub).is_ok() => {
                Ok(Caller::User { uid: claims.sub })
            }
            _ => Err(ApiError::Unauthorized),
        }
    }

    /// Mint a token; used by the local main job, tests and the benchmark.
    pub fn mint(&self, sub: &str, service: bool, ttl_secs: u64) -> Result<String, ApiError> {
        let exp = chrono::Utc::now().timestamp().max(0) as u64 + ttl_secs;
        let claims = Claims {
            sub: sub.to_owned(),
            role: service.then(|| "service".to_owned()),
            exp,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| ApiError::Internal(format!("mint token: {e}")))
    }
}

impl Caller {
    pub fn is_service(&self) -> bool {
        matches!(self, Caller::Service { .. })
    }

    /// The uid a user token stands for; None for services.
    pub fn uid(&self) -> Option<&str> {
        match self {
            Caller::User { uid } => Some(uid),
            Caller::Service { .. } => None,
        }
    }

    /// Services act for anyone; a user only as itself.
    pub fn may_act_as(&self, uid: &str) -> Result<(), ApiError> {
        match self {
            Caller::Service { .. } => Ok(()),
            Caller::User { uid: me } if me == uid => Ok(()),
            Caller::User { .. } => Err(ApiError::Forbidden),
        }
    }

    /// Invite, end and the room status PUT belong to the room's creator.
    /// Service callers only (the event feed, event details, redelivery).
    pub fn must_be_service(&self) -> Result<(), ApiError> {
        match self {
            Caller::Service { .. } => Ok(()),
            Caller::User { .. } => Err(ApiError::Forbidden),
        }
    }

    pub fn may_manage(&self, creator: &str) -> Result<(), ApiError> {
        self.may_act_as(creator)
    }

    /// Reading a room needs a row in it (or being a service).
    pub fn may_read(&self, creator: &str, members: &[String]) -> Result<(), ApiError> {
        match self {
            Caller::Service { .. } => Ok(()),
            Caller::User { uid } if uid == creator || members.iter().any(|m| m == uid) => Ok(()),
            Caller::User { .. } => Err(ApiError::Forbidden),
        }
    }

    /// The uid rate limits count against: the uid acted for.
    pub fn acting_uid<'a>(&'a self, acting_for: &'a str) -> &'a str {
        match self {
            Caller::Service { .. } => acting_for,
            Caller::User { uid } => uid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new("test-secret")
    }

    #[test]
    fn service_and_user_tokens_are_told_apart() {
        let a = auth();
        let service = a.mint("backend", true, 60).expect("mint");
        let user = a.mint("alice", false, 60).expect("mint");
        assert_eq!(
            a.caller(Some(&format!("Bearer {service}"))),
            Ok(Caller::Service {
                sub: "backend".into()
            })
        );
        assert_eq!(
            a.caller(Some(&format!("Bearer {user}"))),
            Ok(Caller::User {
                uid: "alice".into()
            })
        );
    }

    #[test]
    fn bad_tokens_are_unauthorized() {
        let a = auth();
        let other = Auth::new("another-secret")
            .mint("alice", false, 60)
            .expect("mint");
        assert_eq!(a.caller(None), Err(ApiError::Unauthorized));
        assert_eq!(a.caller(Some("Basic abc")), Err(ApiError::Unauthorized));
        assert_eq!(
            a.caller(Some("Bearer not.a.jwt")),
            Err(ApiError::Unauthorized)
        );
        assert_eq!(
            a.caller(Some(&format!("Bearer {other}"))),
            Err(ApiError::Unauthorized)
        );
    }

    #[test]
    fn expired_tokens_are_unauthorized() {
        let a = auth();
        let claims = Claims {
            sub: "alice".into(),
            role: None,
            exp: 1_000,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &a.encoding)
            .expect("encode");
        assert_eq!(
            a.caller(Some(&format!("Bearer {token}"))),
            Err(ApiError::Unauthorized)
        );
    }

    #[test]
    fn tokens_without_exp_or_with_another_alg_are_unauthorized() {
        let a = auth();
        let no_exp = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({ "sub": "alice" }),
            &a.encoding,
        )
        .expect("encode");
        assert_eq!(
            a.caller(Some(&format!("Bearer {no_exp}"))),
            Err(ApiError::Unauthorized)
        );
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &Claims {
                sub: "alice".into(),
                role: None,
                exp: u64::MAX / 2,
            },
            &a.encoding,
        )
        .expect("encode");
        assert_eq!(
            a.caller(Some(&format!("Bearer {hs512}"))),
            Err(ApiError::Unauthorized)
        );
    }

    #[test]
    fn users_act_only_as_themselves() {
        let user = Caller::User {
            uid: "alice".into(),
        };
        assert_eq!(user.may_act_as("alice"), Ok(()));
        assert_eq!(user.may_act_as("bob"), Err(ApiError::Forbidden));
        assert_eq!(user.may_read("bob", &["alice".into()]), Ok(()));
        assert_eq!(
            user.may_read("bob", &["carol".into()]),
            Err(ApiError::Forbidden)
        );
        let service = Caller::Service { sub: "im".into() };
        assert_eq!(service.may_act_as("anyone"), Ok(()));
    }
}
