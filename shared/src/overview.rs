//! The operator console's overview: the calls of a recent window by how they ended, and each
//! event endpoint's delivery backlog, made from the store's rows by plain functions (tested
//! without a database).

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDateTime;
use serde::Serialize;

use crate::store::{OwedEvent, StreamState};

/// How many calls ended one way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct EndedCount {
    #[schema(value_type = crate::model::EndReason)]
    pub end_reason: String,
    pub count: i64,
}

/// Where one endpoint's deliveries stand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct EndpointBacklog {
    pub endpoint: String,
    /// Its URL in the configuration ("" for an endpoint no longer configured that is still
    /// owed events written while it was).
    pub url: String,
    /// Events owed to it and not delivered yet.
    pub pending: i64,
    /// Rooms whose next event to it failed and waits for a retry.
    pub failing_rooms: i64,
    /// When the longest-failing of those rooms started failing.
    #[serde(with = "crate::model::rfc3339_option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub failing_since: Option<NaiveDateTime>,
    /// Failed attempts in a row (after a few, API requests stop trying it inline).
    pub failures_in_a_row: i64,
}

/// Each endpoint's backlog: every configured endpoint (`(key, url)`, in order), then any other
/// key an owed event names. An owed event is pending for an endpoint it is owed to while that
/// endpoint's stream of its room has not passed its seq.
pub fn backlog(
    endpoints: &[(String, String)],
    owed: &[OwedEvent],
    streams: &[StreamState],
    failures: &[(String, i64)],
) -> Vec<EndpointBacklog> {
    let stream_of: HashMap<(&str, &str), &StreamState> = streams
        .iter()
        .map(|s| ((s.endpoint.as_str(), s.room_name.as_str()), s))
        .collect();
    let mut by_key: BTreeMap<&str, EndpointBacklog> = BTreeMap::new();
    let mut order: Vec<&str> = endpoints.iter().map(|(key, _)| key.as_str()).collect();
    for (key, url) in endpoints {
        by_key.insert(key, empty(key, url));
    }
    for event in owed {
        for key in event.endpoints.split(',').filter(|k| !k.is_empty()) {
            let delivered = stream_of
                .get(&(key, event.room_name.as_str()))
                .map_or(0, |s| s.delivered_seq);
            if delivered >= event.seq {
                continue;
            }
            if !by_key.contains_key(key) {
                order.push(key);
            }
            by_key.entry(key).or_insert_with(|| empty(key, "")).pending += 1;
        }
    }
    for stream in streams {
        let (Some(since), Some(entry)) = (
            stream.failing_since,
            by_key.get_mut(stream.endpoint.as_str()),
        ) else {
            continue;
        };
        entry.failing_rooms += 1;
        entry.failing_since = Some(entry.failing_since.map_or(since, |s| s.min(since)));
    }
    for (key, failures) in failures {
        if let Some(entry) = by_key.get_mut(key.as_str()) {
            entry.failures_in_a_row = *failures;
        }
    }
    order
        .into_iter()
        .filter_map(|key| by_key.remove(key))
        .collect()
}

fn empty(key: &str, url: &str) -> EndpointBacklog {
    EndpointBacklog {
        endpoint: key.to_owned(),
        url: url.to_owned(),
        pending: 0,
        failing_rooms: 0,
        failing_since: None,
        failures_in_a_row: 0,
    }
}

/// For each configured endpoint key, when the oldest event still owed to it was committed
/// (None: nothing owed), by the same rule as [`backlog`]'s pending count.
pub fn oldest_owed<'k>(
    keys: &'k [String],
    owed: &[OwedEvent],
    streams: &[StreamState],
) -> Vec<(&'k str, Option<NaiveDateTime>)> {
    let delivered: HashMap<(&str, &str), i32> = streams
        .iter()
        .map(|s| ((s.endpoint.as_str(), s.room_name.as_str()), s.delivered_seq))
        .collect();
    keys.iter()
        .map(|key| {
            let oldest = owed
                .iter()
                .filter(|e| e.endpoints.split(',').any(|k| k == key))
                .filter(|e| {
                    delivered
                        .get(&(key.as_str(), e.room_name.as_str()))
                        .is_none_or(|seq| *seq < e.seq)
                })
                .map(|e| e.created_at)
                .min();
            (key.as_str(), oldest)
        })
        .collect()
}

/// The distinct rooms of the owed events, for reading their streams.
pub fn owed_rooms(owed: &[OwedEvent]) -> Vec<String> {
    let mut rooms: Vec<String> = owed.iter().map(|e| e.room_name.clone()).collect();
    rooms.sort();
    rooms.dedup();
    rooms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owed(room: &str, seq: i32, endpoints: &str) -> OwedEvent {
        OwedEvent {
            room_name: room.into(),
            seq,
            endpoints: endpoints.into(),
            created_at: NaiveDateTime::parse_from_str("2026-01-01 00:00:00", "%Y-%m-%d %H:%M:%S")
                .expect("a time")
                + chrono::Duration::seconds(i64::from(seq)),
        }
    }

    fn stream(endpoint: &str, room: &str, delivered: i32, failing: Option<&str>) -> StreamState {
        StreamState {
            endpoint: endpoint.into(),
            room_name: room.into(),
            delivered_seq: delivered,
            attempts: i32::from(failing.is_some()),
            failing_since: failing
                .map(|t| NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S").expect("a time")),
        }
    }

    fn configured() -> Vec<(String, String)> {
        vec![
            ("main".into(), "http://a/".into()),
            ("crm".into(), "http://b/".into()),
        ]
    }

    #[test]
    fn an_event_is_pending_for_each_endpoint_whose_stream_has_not_passed_it() {
        let events = [
            owed("r1", 1, "main,crm"),
            owed("r1", 2, "main,crm"),
            owed("r2", 1, "crm"),
        ];
        // main has delivered r1 up to 1; crm has nothing yet.
        let streams = [stream("main", "r1", 1, None)];
        let got = backlog(&configured(), &events, &streams, &[]);
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].endpoint.as_str(), got[0].pending), ("main", 1));
        assert_eq!((got[1].endpoint.as_str(), got[1].pending), ("crm", 3));
    }

    #[test]
    fn failing_rooms_count_with_the_oldest_failure_and_the_failures_in_a_row() {
        let events = [owed("r1", 1, "main"), owed("r2", 1, "main")];
        let streams = [
            stream("main", "r1", 0, Some("2026-01-01 10:05:00")),
            stream("main", "r2", 0, Some("2026-01-01 10:01:00")),
        ];
        let got = backlog(&configured(), &events, &streams, &[("main".into(), 4)]);
        assert_eq!(got[0].failing_rooms, 2);
        assert_eq!(
            got[0].failing_since.map(|t| t.to_string()),
            Some("2026-01-01 10:01:00".into())
        );
        assert_eq!(got[0].failures_in_a_row, 4);
        assert_eq!(got[1].pending + got[1].failing_rooms, 0, "crm owes nothing");
    }

    #[test]
    fn an_endpoint_no_longer_configured_still_shows_what_it_is_owed() {
        let got = backlog(&configured(), &[owed("r1", 1, "old")], &[], &[]);
        let old = got.last().expect("a row for it");
        assert_eq!(
            (old.endpoint.as_str(), old.url.as_str(), old.pending),
            ("old", "", 1)
        );
    }

    #[test]
    fn the_oldest_owed_event_skips_what_the_endpoint_already_has() {
        let keys = vec!["main".to_owned(), "crm".to_owned(), "idle".to_owned()];
        let events = [
            owed("a", 1, "main,crm"),
            owed("a", 2, "main"),
            owed("b", 3, "crm"),
        ];
        // main has room a up to 1: its oldest is a#2; crm has nothing of a yet: a#1.
        let streams = [stream("main", "a", 1, None)];
        let oldest = oldest_owed(&keys, &events, &streams);
        assert_eq!(oldest[0], ("main", Some(events[1].created_at)));
        assert_eq!(oldest[1], ("crm", Some(events[0].created_at)));
        assert_eq!(oldest[2], ("idle", None));
    }

    #[test]
    fn owed_rooms_are_distinct() {
        let events = [owed("b", 1, "x"), owed("a", 1, "x"), owed("b", 2, "x")];
        assert_eq!(owed_rooms(&events), vec!["a".to_owned(), "b".to_owned()]);
    }
}
