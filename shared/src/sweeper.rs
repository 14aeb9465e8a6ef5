//! The ring-timeout sweeper, run every minute: bounded work per run, oldest first, each room
//! changed under the same lock and rules as a request, so two overlapping runs are harmless.

use std::time::Duration;

use serde::Serialize;

use crate::app::App;
use crate::error::ApiError;
use crate::model::{Now, RoomStatus};
use crate::rules;

/// Rooms handled per step and run.
pub const BATCH: i64 = 100;
/// How long a call may sit at 1 before its absence from LiveKit counts as lost webhooks.
pub const RECONCILE_GRACE: Duration = Duration::from_secs(120);
/// DeleteRoom attempts before a teardown is given up.
pub const MAX_TEARDOWN_ATTEMPTS: i32 = 10;
pub const WEBHOOK_ID_RETENTION: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct SweepReport {
    pub rang_out: usize,
    pub closed_unanswerable: usize,
    pub ended_too_long: usize,
    pub ended_vanished: usize,
    pub teardowns_done: usize,
    pub teardowns_failed: usize,
    pub webhook_ids_purged: u64,
}

fn before(now: Now, span: Duration) -> Now {
    let ms = now.ms - i64::try_from(span.as_millis()).unwrap_or(i64::MAX / 2);
    Now::from_millis(ms).unwrap_or(now)
}

pub async fn sweep(app: &App, now: Now) -> Result<SweepReport, ApiError> {
    let mut report = SweepReport::default();
    let ring_cutoff = before(now, app.config.ring_timeout);

    for room in app.store.rooms_ringing_since(ring_cutoff, BATCH).await? {
        let result = app
            .store
            .sweep_room(&room, |s| rules::ring_out(s, ring_cutoff.at, now))
            .await?;
        report.rang_out += usize::from(result.changed);
        app.after_change(&room, result.changed, result.finalised)
            .await;
    }

    let idle = app
        .store
        .idle_rooms(RoomStatus::NotStarted, ring_cutoff, BATCH)
        .await?;
    for room in idle {
        let result = app
            .store
            .sweep_room(&room, |s| rules::ring_out(s, ring_cutoff.at, now))
            .await?;
        report.closed_unanswerable += usize::from(result.finalised);
        app.after_change(&room, result.changed, result.finalised)
            .await;
    }

    if let Some(max_call) = app.config.max_call {
        for room in app
            .store
            .calls_started_before(before(now, max_call), BATCH)
            .await?
        {
            let result = app.store.sweep_room(&room, |s| rules::end(s, now)).await?;
            report.ended_too_long += usize::from(result.finalised);
            app.after_change(&room, result.changed, result.finalised)
                .await;
        }
    }

    if app.livekit.has_server() {
        let running = app
            .store
            .idle_rooms(RoomStatus::InProgress, before(now, RECONCILE_GRACE), BATCH)
            .await?;
        if !running.is_empty() {
            match app.livekit.existing_rooms(running.clone()).await {
                Ok(Some(alive)) => {
                    for room in running.iter().filter(|r| !alive.contains(*r)) {
                        let result = app.store.end_vanished(room, now).await?;
                        report.ended_vanished += usize::from(result.finalised);
                        app.after_change(room, result.changed, false).await;
                    }
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(error, "livekit ListRooms failed; reconciling next run")
                }
            }
        }
        for (room, attempts) in app.store.pending_teardowns(BATCH).await? {
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
    }

    report.webhook_ids_purged = app
        .store
        .purge_webhook_events(before(now, WEBHOOK_ID_RETENTION))
        .await?;
    // Locally the sweep runs every second: only a sweep that did something is worth a line.
    if report == SweepReport::default() {
        tracing::debug!("sweep: nothing to do");
    } else {
        tracing::info!(?report, "sweep done");
    }
    Ok(report)
}
