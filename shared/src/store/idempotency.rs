//! Idempotency-Key rows: claimed in flight before a keyed POST's work, sealed with the answer
//! in the same transaction as the change, released when the request is refused before any
//! change. The request-side rules (header syntax, scope, fingerprint) live in
//! [`crate::idempotency`].
//!
//! Why a row in flight first: a retry that arrives while the first request is still running
//! must see it from any instance, so the claim is its own committed statement. A request that
//! dies mid-way (a crash, a function timeout) leaves its row in flight; its lease (longer
//! than the function timeout) then runs out and the next request with the key takes it over.
//! The seal names the lease it holds, so a request that outlived its lease cannot also commit:
//! exactly one change per key.

use std::time::Duration;

use super::*;

/// The answer a keyed request gave, as the client read it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredReply {
    pub status: u16,
    pub body: String,
}

/// A request's hold on its key row, in flight until sealed or released.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyClaim {
    pub scope: String,
    pub lease: String,
}

/// What claiming a key found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claimed {
    /// The key is this request's: do the work, then seal or release.
    Fresh(KeyClaim),
    /// A request with this key and fingerprint finished: its answer.
    Replay(StoredReply),
    /// A request with this key is still running (and its lease has not run out).
    InUse,
    /// The key was used for another request (another fingerprint).
    Reused,
}

/// The answer to store beside a change, in its transaction: the claim it finishes and how to
/// render the answer from the change's result.
pub struct Seal<'a, R> {
    pub claim: &'a KeyClaim,
    pub reply: &'a (dyn Fn(&R) -> Result<StoredReply, ApiError> + Sync),
}

// Two references: copied into each attempt of a retried transaction.
impl<R> Clone for Seal<'_, R> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<R> Copy for Seal<'_, R> {}

/// How long a key row lives and how long a request may hold it in flight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeyTimes {
    pub ttl: Duration,
    pub lease: Duration,
}

/// Rows the sweeper deletes per statement, and statements per run.
pub const PURGE_BATCH: i64 = 500;
pub const PURGE_BATCHES: usize = 10;

impl Store {
    /// Claims `scope` for a request with `fingerprint`, or says why it may not run.
    pub async fn claim_key(
        &self,
        scope: &str,
        fingerprint: &str,
        times: KeyTimes,
        now: Now,
    ) -> Result<Claimed, ApiError> {
        let lease = new_lease()?;
        let lease_until = later(now, times.lease);
        let expires_at = later(now, times.ttl);
        let claimed = self
            .with_conn(async |conn: &mut DbConnection| {
                // Twice at most: a row found expired, or a lease taken over by someone else
                // between our read and our update, is looked at once more.
                for _ in 0..3 {
                    let inserted = sqlx::query(backend::CLAIM_KEY)
                        .bind(scope)
                        .bind(fingerprint)
                        .bind(&lease)
                        .bind(lease_until)
                        .bind(now.at)
                        .bind(expires_at)
                        .execute(&mut *conn)
                        .await?;
                    if inserted.rows_affected() == 1 {
                        return Ok(Some(Claimed::Fresh(KeyClaim {
                            scope: scope.to_owned(),
                            lease: lease.clone(),
                        })));
                    }
                    let row = sqlx::query(
                        "SELECT fingerprint, lease_token, lease_until, status, body, expires_at \
                         FROM idempotency_key WHERE scope = ?",
                    )
                    .bind(scope)
                    .fetch_optional(&mut *conn)
                    .await?;
                    let Some(row) = row else {
                        continue; // purged in between: insert again
                    };
                    let expired: NaiveDateTime = row.try_get("expires_at")?;
                    let held: Option<NaiveDateTime> = row.try_get("lease_until")?;
                    let holder: String = row.try_get("lease_token")?;
                    let takeover = if expired <= now.at {
                        // Past its TTL, not purged yet: the key is new again.
                        Takeover::Expired
                    } else if row.try_get::<String, _>("fingerprint")? != fingerprint {
                        return Ok(Some(Claimed::Reused));
                    } else if let Some(status) = row.try_get::<Option<i16>, _>("status")? {
                        let body: Option<String> = row.try_get("body")?;
                        return Ok(Some(Claimed::Replay(StoredReply {
                            status: u16::try_from(status).unwrap_or(500),
                            body: body.unwrap_or_default(),
                        })));
                    } else if held.is_some_and(|until| until > now.at) {
                        return Ok(Some(Claimed::InUse));
                    } else {
                        // In flight past its lease: the request that held it is gone.
                        Takeover::Abandoned
                    };
                    let took = match takeover {
                        Takeover::Expired => {
                            sqlx::query(
                                "UPDATE idempotency_key SET fingerprint = ?, lease_token = ?, \
                                 lease_until = ?, status = NULL, body = NULL, created_at = ?, \
                                 expires_at = ? WHERE scope = ? AND expires_at <= ?",
                            )
                            .bind(fingerprint)
                            .bind(&lease)
                            .bind(lease_until)
                            .bind(now.at)
                            .bind(expires_at)
                            .bind(scope)
                            .bind(now.at)
                            .execute(&mut *conn)
                            .await?
                        }
                        Takeover::Abandoned => {
                            sqlx::query(
                                "UPDATE idempotency_key SET lease_token = ?, lease_until = ? \
                                 WHERE scope = ? AND lease_token = ? AND status IS NULL",
                            )
                            .bind(&lease)
                            .bind(lease_until)
                            .bind(scope)
                            .bind(&holder)
                            .execute(&mut *conn)
                            .await?
                        }
                    };
                    if took.rows_affected() == 1 {
                        return Ok(Some(Claimed::Fresh(KeyClaim {
                            scope: scope.to_owned(),
                            lease: lease.clone(),
                        })));
                    }
                }
                Ok::<_, sqlx::Error>(None)
            })
            .await?;
        // Three races lost in a row: someone else holds the key now.
        Ok(claimed.unwrap_or(Claimed::InUse))
    }

    /// Stores a refusal decided by the call's state (a 409, a 404…), which changed nothing,
    /// so a retry hears the same. Nothing is stored when the lease was lost meanwhile.
    pub async fn store_key_reply(
        &self,
        claim: &KeyClaim,
        reply: &StoredReply,
    ) -> Result<bool, ApiError> {
        let done = self
            .with_conn(async |conn: &mut DbConnection| finish(&mut *conn, claim, reply).await)
            .await?;
        Ok(done)
    }

    /// Gives the key back: the request was refused before any change (400, 429, 503), so a
    /// retry may succeed.
    pub async fn release_key(&self, claim: &KeyClaim) -> Result<(), ApiError> {
        self.with_conn(async |conn: &mut DbConnection| {
            sqlx::query(
                "DELETE FROM idempotency_key WHERE scope = ? AND lease_token = ? \
                 AND status IS NULL",
            )
            .bind(&claim.scope)
            .bind(&claim.lease)
            .execute(conn)
            .await
        })
        .await?;
        Ok(())
    }

    /// Deletes rows expired before `now`, in batches of PURGE_BATCH (oldest first), at most
    /// PURGE_BATCHES per run.
    pub async fn purge_idempotency_keys(&self, now: Now) -> Result<u64, ApiError> {
        let mut purged = 0;
        for _ in 0..PURGE_BATCHES {
            let done = self
                .with_conn(async |conn: &mut DbConnection| {
                    sqlx::query(backend::PURGE_KEYS)
                        .bind(now.at)
                        .bind(PURGE_BATCH)
                        .execute(conn)
                        .await
                })
                .await?
                .rows_affected();
            purged += done;
            if done < PURGE_BATCH as u64 {
                break;
            }
        }
        Ok(purged)
    }
}

/// Inside a change's transaction: renders the answer from its result and stores it with the
/// key.
pub(super) async fn seal<R>(
    tx: &mut Tx<'_>,
    seal: Option<Seal<'_, R>>,
    result: &R,
) -> Result<Option<StoredReply>, TxError> {
    let Some(seal) = seal else {
        return Ok(None);
    };
    let reply = (seal.reply)(result)?;
    store_in(tx, seal.claim, &reply).await?;
    Ok(Some(reply))
}

/// Stores `reply` with the key inside the change's transaction. Refused (the change rolls
/// back) when the request lost its lease to a later one, which will do the work instead.
pub(super) async fn store_in(
    tx: &mut Tx<'_>,
    claim: &KeyClaim,
    reply: &StoredReply,
) -> Result<(), TxError> {
    if !finish(tx, claim, reply).await? {
        return Err(ApiError::IdempotencyKeyInUse.into());
    }
    Ok(())
}

async fn finish(
    conn: &mut DbConnection,
    claim: &KeyClaim,
    reply: &StoredReply,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE idempotency_key SET status = ?, body = ?, lease_until = NULL \
         WHERE scope = ? AND lease_token = ? AND status IS NULL",
    )
    .bind(reply.status as i16)
    .bind(&reply.body)
    .bind(&claim.scope)
    .bind(&claim.lease)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Why a row found by a claim may be taken over.
enum Takeover {
    Expired,
    Abandoned,
}

/// `now` plus `by` (the configuration keeps both far from the calendar's end).
fn later(now: Now, by: Duration) -> NaiveDateTime {
    chrono::TimeDelta::from_std(by)
        .ok()
        .and_then(|by| now.at.checked_add_signed(by))
        .unwrap_or(now.at)
}

/// 32 random hex digits naming one request's hold on a key.
fn new_lease() -> Result<String, ApiError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::Internal(format!("random: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
