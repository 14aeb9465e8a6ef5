//! The event sweeper (the deliver-events function, on a schedule of its own): delivers every
//! event whose first delivery did not finish it, once its retry is due; publishes committed
//! events to the pull feed; purges events nobody is owed any more once they are old. Separate
//! from the call sweeper so a slow endpoint never delays a ring-out.

use serde::Serialize;

use crate::app::App;
use crate::delivery::{DeliveryReport, Mode};
use crate::error::ApiError;
use crate::model::Now;
use crate::sweeper::{before, each_second};

/// Rooms whose due events one pass delivers.
pub const ROOMS_PER_PASS: i64 = 100;
/// Events one pass purges.
pub const PURGE_BATCH: i64 = 1000;

#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct EventSweepReport {
    pub rooms: usize,
    pub delivery: DeliveryReport,
    pub published: u64,
    pub purged: u64,
    pub sweeps: usize,
    pub failed_sweeps: usize,
}

/// One invocation: a pass, then (with SWEEP_LOOP_SECONDS) one every second for that long.
pub async fn run(app: &App) -> EventSweepReport {
    crate::metrics::scope("deliver-events", run_passes(app)).await
}

async fn run_passes(app: &App) -> EventSweepReport {
    let mut total = EventSweepReport::default();
    let (sweeps, failed) = each_second(app, async |now| {
        let report = sweep(app, now).await?;
        total.rooms += report.rooms;
        total.delivery.add(&report.delivery);
        total.published += report.published;
        total.purged += report.purged;
        Ok(())
    })
    .await;
    total.sweeps = sweeps;
    total.failed_sweeps = failed;
    total
}

/// Events owed that one pass reads to find each endpoint's oldest (the oldest due first).
pub const BACKLOG_SAMPLE: i64 = 1000;

/// Records each configured endpoint's oldest owed event's age (0 when none is owed).
async fn record_backlog(app: &App, now: Now) -> Result<(), ApiError> {
    let keys: Vec<String> = app
        .delivery
        .endpoints()
        .iter()
        .map(|e| e.key.clone())
        .collect();
    if keys.is_empty() {
        return Ok(());
    }
    let owed = app.store.owed_events(BACKLOG_SAMPLE).await?;
    let streams = app
        .store
        .streams_of(&keys, &crate::overview::owed_rooms(&owed))
        .await?;
    for (key, oldest) in crate::overview::oldest_owed(&keys, &owed, &streams) {
        let age = oldest.map_or(0.0, |at| {
            (now.at - at).num_milliseconds().max(0) as f64 / 1000.0
        });
        crate::metrics::record(
            &crate::metrics::OLDEST_OWED_EVENT_AGE,
            &[key.to_owned().into()],
            age,
        );
    }
    Ok(())
}

pub async fn sweep(app: &App, now: Now) -> Result<EventSweepReport, ApiError> {
    let mut report = EventSweepReport::default();
    if !app.delivery.endpoints().is_empty() {
        let rooms = app.store.rooms_with_due_events(now, ROOMS_PER_PASS).await?;
        report.rooms = rooms.len();
        // New rooms are not started after this long; those started finish their attempts.
        let budget = app.delivery.settings().timeout * 4;
        report.delivery = app
            .delivery
            .deliver(&app.store, &rooms, Mode::Sweep, budget)
            .await;
    }
    record_backlog(app, now).await?;
    report.published = app.store.publish_feed().await?;
    let retention = app.delivery.settings().retention;
    report.purged = app
        .store
        .purge_events(before(now, retention), PURGE_BATCH)
        .await?;
    if report.rooms > 0 || report.purged > 0 {
        tracing::info!(?report, "event sweep done");
    }
    Ok(report)
}
