//! Business events: what the app backend hears about a call. Derived in one place, from the
//! change itself: one event per participant row a transaction changed and one per room status
//! it reached (plus `room.created`), in the order the changes happened. The store writes them
//! in the same transaction as the change (an outbox), numbered per room from 1 without gaps,
//! so every path that changes a call (API, LiveKit webhook, sweep) tells the same story.

use chrono::NaiveDateTime;
use serde_json::{Value, json};

pub use crate::model::EventType;
use crate::model::{Participant, ParticipantStatus as P, Room};
use crate::rules::{CallState, Touched};

/// One event before the store numbers it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_type: EventType,
    pub occurred_at: NaiveDateTime,
    pub data: Value,
}

/// The events of what `state` changed since it was loaded, in order (`created`: the state is a
/// new call, which starts with `room.created`). The rows must carry their ids already.
pub fn derive(state: &CallState, created: bool) -> Vec<NewEvent> {
    let room = &state.room;
    let mut events = Vec::with_capacity(state.touched().len() + usize::from(created));
    if created {
        events.push(NewEvent {
            event_type: EventType::RoomCreated,
            occurred_at: room.created_at,
            data: room_data(room, None),
        });
    }
    for touched in state.touched() {
        events.push(match *touched {
            Touched::Row(i) => {
                let row = &state.rows[i];
                NewEvent {
                    event_type: EventType::of_participant(row),
                    occurred_at: row.updated_at,
                    data: participant_data(room, row),
                }
            }
            Touched::Started => NewEvent {
                event_type: EventType::RoomStarted,
                occurred_at: room.started_at.unwrap_or(room.updated_at),
                data: room_data(room, None),
            },
            Touched::Ended => NewEvent {
                event_type: EventType::RoomEnded,
                occurred_at: room.ended_at.unwrap_or(room.updated_at),
                data: room_data(room, Some(&state.rows)),
            },
        });
    }
    events
}

/// What committed changes tell the metrics about calls: created, started, ended (by
/// end_reason, with the talk time of those that started) and rung out (with how long after
/// the ring deadline the ring-out was written down). Gathered per transaction attempt and
/// recorded only once it commits, so a retried transaction counts once.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CallTally {
    created: u32,
    started: u32,
    ended: Vec<(crate::model::EndReason, Option<f64>)>,
    ring_out_lag_ms: Vec<f64>,
}

impl CallTally {
    /// Notes `events`, written for `room` at `now`.
    pub fn note(&mut self, events: &[NewEvent], room: &Room, now: crate::model::Now) {
        for event in events {
            match event.event_type {
                EventType::RoomCreated => self.created += 1,
                EventType::RoomStarted => self.started += 1,
                EventType::RoomEnded => {
                    let Some(reason) = room.end_reason else {
                        continue;
                    };
                    let talk = room
                        .started_at
                        .zip(room.ended_at)
                        .map(|(start, end)| (end - start).num_milliseconds() as f64 / 1000.0);
                    self.ended.push((reason, talk));
                }
                EventType::ParticipantMissed => {
                    let deadline_ms = event.occurred_at.and_utc().timestamp_millis();
                    self.ring_out_lag_ms
                        .push((now.ms - deadline_ms).max(0) as f64);
                }
                _ => {}
            }
        }
    }

    /// Adds what was noted to the invocation's metrics.
    pub fn record(&self) {
        use crate::metrics::{self, CALLS_CREATED, CALLS_ENDED, CALLS_STARTED};
        for _ in 0..self.created {
            metrics::count(&CALLS_CREATED, &[]);
        }
        for _ in 0..self.started {
            metrics::count(&CALLS_STARTED, &[]);
        }
        for (reason, talk) in &self.ended {
            metrics::count(&CALLS_ENDED, &[reason.as_str().into()]);
            if let Some(seconds) = talk {
                metrics::record(&metrics::TALK_DURATION, &[], *seconds);
            }
        }
        for lag in &self.ring_out_lag_ms {
            metrics::record(&metrics::RING_OUT_LAG, &[], *lag);
        }
    }
}

/// How many events [`derive`] gives for `state`, without building them.
pub fn count(state: &CallState, created: bool) -> usize {
    state.touched().len() + usize::from(created)
}

/// A new event id: written once with the event, so stable across retries and redeliveries;
/// random (96 bits), so unique across databases and resets too, which receivers that drop
/// repeated ids rely on.
pub fn new_event_id(room: &Room, seq: i64) -> String {
    let mut bytes = [0u8; 12];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
        return format!("evt_{}_{seq}_{nanos:x}", room.id);
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("evt_{hex}")
}

/// The JSON body every delivery of an event sends (and the feed returns).
pub fn envelope(id: &str, event: &NewEvent, room_name: &str, seq: i64) -> String {
    json!({
        "id": id,
        "type": event.event_type.as_str(),
        "room_name": room_name,
        "seq": seq,
        "occurred_at": rfc3339_ms(event.occurred_at),
        "data": event.data,
    })
    .to_string()
}

/// `2026-12-02T10:30:00.123Z`: events of one second keep their order when read back.
pub fn rfc3339_ms(at: NaiveDateTime) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// A room event's data: the room as the API shows it, and for `room.ended` every row with
/// its final status, reason and times.
fn room_data(room: &Room, rows: Option<&[Participant]>) -> Value {
    let mut data = serde_json::to_value(room).unwrap_or(Value::Null);
    if let (Some(rows), Some(map)) = (rows, data.as_object_mut()) {
        let participants: Vec<Value> = rows
            .iter()
            .map(|p| {
                json!({
                    "uid": p.uid,
                    "status": p.status,
                    "reason": p.reason,
                    "ring_seconds": p.ring_seconds,
                    "talk_seconds": p.talk_seconds,
                })
            })
            .collect();
        map.insert("participants".into(), Value::Array(participants));
    }
    data
}

/// A participant event's data, push-ready: the row as the API shows it, who calls and how.
fn participant_data(room: &Room, row: &Participant) -> Value {
    let mut data = serde_json::to_value(row).unwrap_or(Value::Null);
    if let Some(map) = data.as_object_mut() {
        map.insert("caller".into(), json!(room.creator));
        map.insert("call_type".into(), json!(room.call_type));
        map.insert("source_channel_id".into(), json!(room.source_channel_id));
        map.insert(
            "source_channel_type".into(),
            json!(room.source_channel_type),
        );
        map.insert("room_status".into(), json!(room.status));
        if row.status == P::Ringing {
            map.insert("invitee".into(), json!(row.uid));
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EndReason, Now, RoomStatus};
    use crate::rules::{self, Action};

    fn at(secs: i64) -> Now {
        Now::from_millis(1_700_000_000_000 + secs * 1000).expect("instant")
    }

    fn room(max: i32) -> Room {
        Room {
            id: 7,
            creator: "a".into(),
            room_name: "r".into(),
            call_type: 1,
            max_participants: max,
            status: RoomStatus::NotStarted,
            created_at: at(0).at,
            updated_at: at(0).at,
            ring_timeout_seconds: 30,
            ..Room::default()
        }
    }

    /// (type, uid) of each event, as a reader would list them.
    fn story(events: &[NewEvent]) -> Vec<(String, String)> {
        events
            .iter()
            .map(|e| {
                let who = e.data.get("uid").and_then(Value::as_str).unwrap_or("");
                (e.event_type.as_str().to_owned(), who.to_owned())
            })
            .collect()
    }

    fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
        expected
            .iter()
            .map(|(t, u)| (t.to_string(), u.to_string()))
            .collect()
    }

    /// One transaction: the events of what `change` does to a state as loaded.
    fn after(
        state: &mut rules::CallState,
        change: impl FnOnce(&mut rules::CallState),
    ) -> Vec<NewEvent> {
        state.forget_touched();
        change(state);
        derive(state, false)
    }

    #[test]
    fn a_one_to_one_call_tells_its_story_in_order() {
        let mut state = rules::new_call(room(2), &["b".into()], at(0));
        let mut all = derive(&state, true);
        all.extend(after(&mut state, |s| {
            rules::apply_action(s, "b", Action::Join, at(5)).expect("answer");
        }));
        all.extend(after(&mut state, |s| {
            rules::apply_action(s, "b", Action::Leave, at(65)).expect("hang up");
        }));
        assert_eq!(
            story(&all),
            pairs(&[
                ("room.created", ""),
                ("participant.joined", "a"),
                ("participant.invited", "b"),
                ("participant.joined", "b"),
                ("room.started", ""),
                ("participant.left", "b"),
                ("participant.left", "a"),
                ("room.ended", ""),
            ])
        );
        let ended = &all[7].data;
        assert_eq!(ended["status"], 2);
        assert_eq!(ended["end_reason"], "completed");
        assert_eq!(ended["duration_seconds"], 60);
        assert_eq!(ended["participants"][1]["talk_seconds"], 60);
        assert_eq!(ended["participants"][1]["reason"], "hung_up");
        let invited = &all[2].data;
        assert_eq!(
            (
                &invited["caller"],
                &invited["invitee"],
                &invited["call_type"]
            ),
            (&json!("a"), &json!("b"), &json!(1))
        );
        assert!(invited["ring_deadline"].is_string(), "{invited}");
        assert_eq!(count(&state, false), 3, "count agrees with derive");
    }

    #[test]
    fn a_group_call_reports_each_row_once_with_its_final_status() {
        let mut state = rules::new_call(room(5), &["b".into(), "c".into(), "d".into()], at(0));
        let _ = derive(&state, true);
        let rejected = after(&mut state, |s| {
            rules::apply_action(s, "b", Action::Reject, at(2)).expect("reject");
        });
        assert_eq!(story(&rejected), pairs(&[("participant.rejected", "b")]));
        let joined = after(&mut state, |s| {
            rules::apply_action(s, "c", Action::Join, at(3)).expect("join");
        });
        assert_eq!(
            story(&joined),
            pairs(&[("participant.joined", "c"), ("room.started", "")])
        );
        // d's ring deadline (30 s) passes; the rules apply it where the call is loaded.
        let rang_out = after(&mut state, |s| {
            rules::apply_deadlines(s, at(31));
        });
        assert_eq!(story(&rang_out), pairs(&[("participant.missed", "d")]));
        assert_eq!(
            rang_out[0].occurred_at,
            at(30).at,
            "when the deadline passed"
        );
        let removed = after(&mut state, |s| {
            rules::apply_action(s, "c", Action::Remove, at(40)).expect("remove");
        });
        assert_eq!(
            story(&removed),
            pairs(&[
                ("participant.removed", "c"),
                ("participant.left", "a"),
                ("room.ended", ""),
            ])
        );
        assert_eq!(removed[2].data["end_reason"], "completed");
    }

    #[test]
    fn a_busy_ring_again_is_one_busy_event_never_an_invite() {
        let mut state = rules::new_call(room(2), &[], at(0));
        let _ = derive(&state, true);
        let busy = after(&mut state, |s| {
            rules::ring_again(s, "b", true, at(1)).expect("ring again");
        });
        assert_eq!(
            story(&busy),
            pairs(&[
                ("participant.busy", "b"),
                ("participant.left", "a"),
                ("room.ended", ""),
            ])
        );
        assert_eq!(busy[2].data["end_reason"], json!(EndReason::Busy.as_str()));
    }

    #[test]
    fn nothing_changed_is_no_event() {
        let mut state = rules::new_call(room(2), &["b".into()], at(0));
        let none = after(&mut state, |s| {
            let again = rules::apply_action(s, "b", Action::RingAgain, at(1));
            assert!(again.is_ok_and(|a| !a.changed));
        });
        assert!(none.is_empty());
    }

    #[test]
    fn envelopes_carry_id_type_room_seq_and_time() {
        let state = rules::new_call(room(2), &[], at(0));
        let events = derive(&state, true);
        let id = new_event_id(&state.room, 1);
        assert!(id.starts_with("evt_") && id.len() == 28, "{id}");
        assert_ne!(id, new_event_id(&state.room, 1), "ids never repeat");
        let body = envelope(&id, &events[0], "r", 1);
        let parsed: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(parsed["id"], id.as_str());
        assert_eq!(parsed["type"], "room.created");
        assert_eq!(parsed["room_name"], "r");
        assert_eq!(parsed["seq"], 1);
        assert_eq!(parsed["occurred_at"], "2023-11-14T22:13:20.000Z");
        assert_eq!(parsed["data"]["room_name"], "r");
    }

    /// A call with a ring-out, as the invocations that change it record it: every document
    /// follows the EMF rules, the values are the call's, and no dimension names the room or a
    /// uid.
    #[test]
    fn a_calls_metrics_are_its_own_and_name_no_room_or_uid() {
        let mut first = room(3);
        first.room_name = "room_secret_42".into();
        let invitees = ["user_bob_9".to_owned(), "user_carol_7".to_owned()];
        let mut state = rules::new_call(first, &invitees, at(0));
        let mut tally = CallTally::default();
        tally.note(&derive(&state, true), &state.room, at(0));
        let answered = after(&mut state, |s| {
            rules::apply_action(s, "user_bob_9", Action::Join, at(5)).expect("answer");
        });
        tally.note(&answered, &state.room, at(5));
        // Carol's ring deadline is at 30 s; a sweep writes it down 2.5 s later.
        let rung_out = after(&mut state, |s| {
            rules::apply_deadlines(s, Now::from_millis(at(32).ms + 500).expect("instant"));
        });
        tally.note(
            &rung_out,
            &state.room,
            Now::from_millis(at(32).ms + 500).expect("instant"),
        );
        let hung_up = after(&mut state, |s| {
            rules::apply_action(s, "user_bob_9", Action::Leave, at(65)).expect("hang up");
        });
        tally.note(&hung_up, &state.room, at(65));
        let docs = crate::metrics::tests::documents_of("ring-timeout", || {
            tally.record();
            crate::delivery::record_attempt(
                "app",
                crate::model::AttemptOutcome::Delivered,
                Some(12.0),
            );
        });
        crate::metrics::tests::assert_valid_without(
            &docs,
            &[
                "room_secret_42",
                "secret",
                "user_bob_9",
                "user_carol_7",
                "user_",
            ],
        );
        assert_eq!(docs.len(), 1, "{docs:#?}");
        let doc = &docs[0];
        assert_eq!(doc["CallsCreated"], 1.0);
        assert_eq!(doc["CallsStarted"], 1.0);
        assert_eq!(doc["CallsEnded"], 1.0);
        assert_eq!(doc["EndReason"], "completed");
        assert_eq!(doc["TalkDuration"], 60.0);
        assert_eq!(doc["RingOutLag"], 2500.0);
        assert_eq!(doc["EventAttempts"], 1.0);
        assert_eq!(doc["Endpoint"], "app");
        assert_eq!(doc["Outcome"], "delivered");
        assert_eq!(doc["DeliveryLag"], 12.0);
    }
}
