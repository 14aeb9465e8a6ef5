//! The sweeper (the ring-timeout function): writes down every deadline that has passed (ring
//! outs, rooms nobody can answer, solo and longest-call timeouts), ends calls LiveKit no longer
//! has, retries LiveKit teardowns and removals, purges old webhook ids and expired
//! idempotency keys. Bounded work per run, oldest first, each room changed under the same lock
//! and rules as a request, so two overlapping runs are harmless. Reads and actions already see
//! a passed deadline the second it passes; the sweep makes it durable (and, later, tells the
//! app backend).

use std::time::Duration;

use serde::Serialize;

use crate::app::App;
use crate::error::ApiError;
use crate::model::Now;

/// Rooms handled per step and run.
pub const BATCH: i64 = 100;
/// How long a call may sit at 1 before its absence from LiveKit counts as lost webhooks.
pub const RECONCILE_GRACE: Duration = Duration::from_secs(120);
/// LiveKit calls (DeleteRoom, RemoveParticipant) attempted before they are given up.
pub const MAX_TEARDOWN_ATTEMPTS: i32 = 10;
/// How long a queued DeleteRoom or RemoveParticipant is left to the request that queued it.
/// That request tries it right after its commit; taking the row sooner would send LiveKit the
/// same call twice. The API functions' Timeout (a test in http.rs holds this to it): once it
/// has passed, the request that queued the row is over, however it ended.
pub const INLINE_ATTEMPT_GRACE: Duration = Duration::from_secs(10);
pub const WEBHOOK_ID_RETENTION: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct SweepReport {
    /// Rooms whose passed deadlines were written down.
    pub deadlines_applied: usize,
    /// Of those, rooms that became final.
    pub rooms_closed: usize,
    pub ended_vanished: usize,
    pub teardowns_done: usize,
    pub teardowns_failed: usize,
    pub removals_done: usize,
    pub removals_failed: usize,
    pub webhook_ids_purged: u64,
    /// Idempotency keys past their TTL, deleted in batches.
    pub idempotency_keys_purged: u64,
    /// Cached rooms dropped for commits that could not drop them (Redis was away).
    pub cache_forgets_replayed: usize,
    /// Sweeps run (more than one when the sweeper loops) and those that failed.
    pub sweeps: usize,
    pub failed_sweeps: usize,
}

impl SweepReport {
    fn add(&mut self, other: &SweepReport) {
        self.deadlines_applied += other.deadlines_applied;
        self.rooms_closed += other.rooms_closed;
        self.ended_vanished += other.ended_vanished;
        self.teardowns_done += other.teardowns_done;
        self.teardowns_failed += other.teardowns_failed;
        self.removals_done += other.removals_done;
        self.removals_failed += other.removals_failed;
        self.webhook_ids_purged += other.webhook_ids_purged;
        self.idempotency_keys_purged += other.idempotency_keys_purged;
        self.cache_forgets_replayed += other.cache_forgets_replayed;
    }
}

/// Writes down every deadline due at `now` (at most BATCH rooms, the longest overdue first),
/// as the rules already show them on every read: then a list filtered by status counts and
/// shows each room by the status it has now. Returns the rooms changed and those closed.
pub async fn write_down_deadlines(app: &App, now: Now) -> Result<(usize, usize), ApiError> {
    let (mut changed, mut closed) = (0, 0);
    let mut with_events = Vec::new();
    for room in app.store.rooms_due(now, BATCH).await? {
        let applied = app.store.apply_due(&room, now).await;
        let result = app.forget_on_failure(&room, applied).await?;
        changed += usize::from(result.changed);
        closed += usize::from(result.finalised);
        app.after_commit(&room, result.changed, result.finalised)
            .await;
        if result.changed {
            with_events.push(room);
        }
    }
    // The ring-outs' events, first attempts within one budget for the whole sweep.
    app.deliver_events(&with_events).await;
    Ok((changed, closed))
}

/// One invocation of the sweeper: a sweep, then (with SWEEP_LOOP_SECONDS) another at the top
/// of every following second until that long has passed. A failed sweep (the database away)
/// is logged and the next second tries again.
pub async fn run(app: &App) -> SweepReport {
    crate::metrics::scope("ring-timeout", async {
        let mut total = SweepReport::default();
        let (sweeps, failed) = each_second(app, async |now| {
            sweep(app, now).await.map(|report| {
                let settled = report.deadlines_applied + report.ended_vanished;
                crate::metrics::record(&crate::metrics::ROOMS_SETTLED, &[], settled as f64);
                total.add(&report)
            })
        })
        .await;
        total.sweeps = sweeps;
        total.failed_sweeps = failed;
        total
    })
    .await
}

/// Runs `pass` once, then (with SWEEP_LOOP_SECONDS) at the top of every following second until
/// that long has passed since the start. Returns the passes run and those that failed.
pub async fn each_second(
    app: &App,
    mut pass: impl AsyncFnMut(Now) -> Result<(), ApiError>,
) -> (usize, usize) {
    let started = std::time::Instant::now();
    let (mut passes, mut failed) = (0, 0);
    loop {
        passes += 1;
        let pass_started = std::time::Instant::now();
        let outcome = pass(Now::current()).await;
        crate::metrics::sweep_pass(pass_started, outcome.is_err());
        if let Err(err) = outcome {
            failed += 1;
            tracing::warn!(error = %err, "sweep failed; trying again");
        }
        let Some(span) = app.config.sweep_loop else {
            break;
        };
        let elapsed = started.elapsed();
        // The next whole second of the loop; stop when it would end past the span.
        let next = Duration::from_secs(elapsed.as_secs() + 1);
        if next >= span {
            break;
        }
        tokio::time::sleep(next - elapsed).await;
    }
    (passes, failed)
}

pub fn before(now: Now, span: Duration) -> Now {
    let ms = now.ms - i64::try_from(span.as_millis()).unwrap_or(i64::MAX / 2);
    Now::from_millis(ms).unwrap_or(now)
}

/// Drops the cached copies that commits could not drop while Redis was away (at most BATCH
/// rooms a pass): every sweep tries, so a stale copy outlives the outage by about one sweep.
pub async fn replay_cache_forgets(app: &App) -> Result<usize, ApiError> {
    if !app.cache.is_enabled() {
        return Ok(0);
    }
    let owed = app.store.owed_cache_forgets(BATCH).await?;
    if owed.is_empty() {
        return Ok(0);
    }
    let rooms: Vec<&str> = owed.iter().map(|(room, _)| room.as_str()).collect();
    if !app.cache.forget_rooms(&rooms).await {
        return Ok(0);
    }
    app.store.cache_forgets_paid(&owed).await?;
    Ok(owed.len())
}

pub async fn sweep(app: &App, now: Now) -> Result<SweepReport, ApiError> {
    let mut report = SweepReport {
        cache_forgets_replayed: replay_cache_forgets(app).await?,
        ..SweepReport::default()
    };
    (report.deadlines_applied, report.rooms_closed) = write_down_deadlines(app, now).await?;

    if app.livekit.has_server() {
        let running = app
            .store
            .quiet_running_rooms(before(now, RECONCILE_GRACE), BATCH)
            .await?;
        if !running.is_empty() {
            match app.livekit.existing_rooms(running.clone()).await {
                Ok(Some(alive)) => {
                    let mut ended = Vec::new();
                    for room in running.iter().filter(|r| !alive.contains(*r)) {
                        let ended_now = app.store.end_vanished(room, now).await;
                        let result = app.forget_on_failure(room, ended_now).await?;
                        report.ended_vanished += usize::from(result.finalised);
                        app.after_commit(room, result.changed, false).await;
                        if result.changed {
                            ended.push(room.clone());
                        }
                    }
                    app.deliver_events(&ended).await;
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(error, "livekit ListRooms failed; reconciling next run")
                }
            }
        }
        for (room, attempts) in app
            .store
            .pending_teardowns(before(now, INLINE_ATTEMPT_GRACE), BATCH)
            .await?
        {
            if attempts >= MAX_TEARDOWN_ATTEMPTS {
                tracing::error!(room_name = %room, attempts, "giving up LiveKit DeleteRoom");
                app.store.teardown_done(&room).await?;
                report.teardowns_failed += 1;
                continue;
            }
            match app.livekit.delete_room(&room).await {
                Ok(_) => {
                    app.store.teardown_done(&room).await?;
                    report.teardowns_done += 1;
                }
                Err(error) => {
                    tracing::warn!(room_name = %room, error, "livekit DeleteRoom failed again");
                    app.store.teardown_failed(&room).await?;
                    report.teardowns_failed += 1;
                }
            }
        }
        for (room, uid, attempts) in app
            .store
            .pending_removals(before(now, INLINE_ATTEMPT_GRACE), BATCH)
            .await?
        {
            if attempts >= MAX_TEARDOWN_ATTEMPTS {
                tracing::error!(room_name = %room, uid, attempts, "giving up LiveKit RemoveParticipant");
                app.store.removal_done(&room, &uid).await?;
                report.removals_failed += 1;
                continue;
            }
            match app.livekit.remove_participant(&room, &uid).await {
                Ok(_) => {
                    app.store.removal_done(&room, &uid).await?;
                    report.removals_done += 1;
                }
                Err(error) => {
                    tracing::warn!(room_name = %room, uid, error, "livekit RemoveParticipant failed again");
                    app.store.removal_failed(&room, &uid).await?;
                    report.removals_failed += 1;
                }
            }
        }
    }

    report.webhook_ids_purged = app
        .store
        .purge_webhook_events(before(now, WEBHOOK_ID_RETENTION))
        .await?;
    report.idempotency_keys_purged = app.store.purge_idempotency_keys(now).await?;
    // Locally the sweep runs every second: only a sweep that did something is worth a line.
    if report == SweepReport::default() {
        tracing::debug!("sweep: nothing to do");
    } else {
        tracing::info!(?report, "sweep done");
    }
    Ok(report)
}
