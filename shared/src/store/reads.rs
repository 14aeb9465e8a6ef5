//! Reads without locks: one call, the room list, a uid's ringing invites and its call
//! history. Each shows calls as of `now`: a deadline that has passed is applied in memory by
//! the same rules a transaction would apply (the sweeper writes it down within seconds).

use serde::Serialize;

use super::*;
use crate::model::{Direction, Page, cursor_of};

/// One page of the room list; `next_cursor` continues it by keyset (None: the last page).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ListedRooms {
    pub rooms: Vec<Room>,
    /// How many rooms match the filter (the seed's total), whatever the page.
    pub total: i64,
    pub next_cursor: Option<String>,
}

/// A live invite of a uid, as an app shows its incoming call screen.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Ringing {
    pub room_name: String,
    pub caller: String,
    pub call_type: i16,
    pub source_channel_id: String,
    pub source_channel_type: i16,
    #[serde(with = "crate::model::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub invited_at: NaiveDateTime,
    #[serde(with = "crate::model::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub ring_deadline: NaiveDateTime,
}

/// One call in a uid's history.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    pub room_name: String,
    pub direction: Direction,
    pub call_type: i16,
    pub creator: String,
    /// Everyone else with a row in the call.
    pub others: Vec<String>,
    /// The room's status (final, or still ringing/running).
    pub status: RoomStatus,
    pub end_reason: Option<EndReason>,
    /// The uid's own row: its status and why.
    pub participant_status: ParticipantStatus,
    pub reason: Option<Reason>,
    #[serde(with = "crate::model::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: NaiveDateTime,
    #[serde(with = "crate::model::rfc3339_option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<NaiveDateTime>,
    #[serde(with = "crate::model::rfc3339_option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ended_at: Option<NaiveDateTime>,
    pub duration_seconds: i64,
    pub ring_seconds: i64,
    pub talk_seconds: i64,
}

/// `room_count` keeps the exact number of rooms per status (see migrations 0003).
const COUNT_ALL: &str = "SELECT CAST(COALESCE(SUM(n), 0) AS SIGNED) FROM room_count";
const COUNT_STATUS: &str =
    "SELECT CAST(COALESCE(SUM(n), 0) AS SIGNED) FROM room_count WHERE status = ?";

impl Store {
    /// A room with its rows as of `now`, without locks; None when the room does not exist.
    pub async fn load(&self, room_name: &str, now: Now) -> Result<Option<CallState>, ApiError> {
        retrying(|| {
            self.with_conn(async |conn: &mut DbConnection| Ok(load_on(conn, room_name, now).await?))
        })
        .await
    }

    /// A page of rooms, newest first, and how many match the filter. The unfiltered and
    /// status-only totals come from `room_count` (exact, kept in each writing transaction).
    pub async fn list_rooms(
        &self,
        filter: &RoomFilter,
        page: Page,
        now: Now,
    ) -> Result<ListedRooms, ApiError> {
        retrying(|| {
            self.with_conn(async |conn: &mut DbConnection| {
                list_rooms_on(conn, filter, page, now).await
            })
        })
        .await
    }

    /// The uid's live invite, if it rings somewhere (a uid is live in one call at most).
    pub async fn ringing(&self, uid: &str, now: Now) -> Result<Vec<Ringing>, ApiError> {
        retrying(|| {
            self.with_conn(async |conn: &mut DbConnection| {
                let query = concat!(
                    "SELECT r.room_name FROM call_participant p JOIN call_room r ",
                    "ON r.room_name = p.room_name WHERE ",
                    live_row_of!(),
                    " AND p.status = 0"
                );
                let room: Option<String> = sqlx::query_scalar(query)
                    .bind(uid)
                    .fetch_optional(&mut *conn)
                    .await?;
                let Some(room) = room else {
                    return Ok(Vec::new());
                };
                let Some(state) = load_on(conn, &room, now).await? else {
                    return Ok(Vec::new());
                };
                let ringing = state.row(uid).and_then(|row| {
                    Some(Ringing {
                        room_name: state.room.room_name.clone(),
                        caller: state.room.creator.clone(),
                        call_type: state.room.call_type,
                        source_channel_id: state.room.source_channel_id.clone(),
                        source_channel_type: state.room.source_channel_type,
                        invited_at: row.invited_at?,
                        ring_deadline: row.ring_deadline?,
                    })
                    .filter(|_| row.status == ParticipantStatus::Ringing)
                });
                Ok(ringing.into_iter().collect())
            })
        })
        .await
    }

    /// The uid's calls, newest first, `limit` at a time from `before_id` (a keyset on the
    /// uid's rows, so a page stays the same while new calls are added).
    pub async fn history(
        &self,
        uid: &str,
        limit: i64,
        before_id: Option<i64>,
        now: Now,
    ) -> Result<(Vec<HistoryEntry>, Option<String>), ApiError> {
        retrying(|| {
            self.with_conn(async |conn: &mut DbConnection| {
                history_on(conn, uid, limit, before_id, now).await
            })
        })
        .await
    }

    /// How many calls ended (or were cancelled) at or after `since`, per end_reason, by
    /// `ix_room_ended`.
    pub async fn ended_since(&self, since: NaiveDateTime) -> Result<Vec<(String, i64)>, ApiError> {
        let rows: Vec<(Option<String>, i64)> = self
            .with_conn(async |conn: &mut DbConnection| {
                sqlx::query_as(
                    "SELECT end_reason, COUNT(*) FROM call_room WHERE ended_at >= ? \
                     AND end_reason IS NOT NULL GROUP BY end_reason ORDER BY COUNT(*) DESC, end_reason",
                )
                .bind(since)
                .fetch_all(conn)
                .await
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|(reason, n)| (reason.unwrap_or_default(), n))
            .collect())
    }
}

async fn load_on(
    conn: &mut DbConnection,
    room_name: &str,
    now: Now,
) -> Result<Option<CallState>, sqlx::Error> {
    let rows = sqlx::query(LOAD_CALL)
        .bind(room_name)
        .fetch_all(conn)
        .await?;
    let mut state = decode_call(&rows)?;
    if let Some(state) = &mut state {
        rules::apply_deadlines(state, now);
    }
    Ok(state)
}

/// The room as of `now`: reloaded with its rows only when one of its deadlines has passed.
async fn as_of_now(conn: &mut DbConnection, room: Room, now: Now) -> Result<Room, sqlx::Error> {
    if room.deadline.is_none_or(|d| d > now.at) {
        return Ok(room);
    }
    Ok(load_on(conn, &room.room_name, now)
        .await?
        .map_or(room, |state| state.room))
}

async fn list_rooms_on(
    conn: &mut DbConnection,
    filter: &RoomFilter,
    page: Page,
    now: Now,
) -> Result<ListedRooms, TxError> {
    let total = room_total(conn, filter).await?;
    let mut select =
        QueryBuilder::<Db>::new(concat!("SELECT ", room_columns!(), " FROM call_room r"));
    push_filter(&mut select, filter);
    if let Some(before) = page.before_id {
        select.push(" AND r.id < ").push_bind(before);
    }
    select
        .push(" ORDER BY r.id DESC LIMIT ")
        .push_bind(page.limit + 1);
    if page.offset > 0 {
        select.push(" OFFSET ").push_bind(page.offset);
    }
    let rows = select.build().fetch_all(&mut *conn).await?;
    let mut rooms = Vec::with_capacity(rows.len());
    for row in &rows {
        rooms.push(decode_room(row)?);
    }
    let more = rooms.len() as i64 > page.limit;
    rooms.truncate(usize::try_from(page.limit).unwrap_or(0));
    let next_cursor = more
        .then(|| rooms.last().map(|r| cursor_of(r.id)))
        .flatten();
    let mut current = Vec::with_capacity(rooms.len());
    for room in rooms {
        current.push(as_of_now(conn, room, now).await?);
    }
    Ok(ListedRooms {
        rooms: current,
        total,
        next_cursor,
    })
}

/// How many rooms match: exact, and cheap for the unfiltered and status-only lists.
async fn room_total(conn: &mut DbConnection, filter: &RoomFilter) -> Result<i64, sqlx::Error> {
    let only_status =
        filter.creator.is_none() && filter.uid.is_none() && filter.source_channel_id.is_none();
    match (only_status, filter.status) {
        (true, None) => sqlx::query_scalar(COUNT_ALL).fetch_one(conn).await,
        (true, Some(status)) => {
            sqlx::query_scalar(COUNT_STATUS)
                .bind(status.code())
                .fetch_one(conn)
                .await
        }
        (false, _) => {
            let mut count = QueryBuilder::<Db>::new("SELECT COUNT(*) FROM call_room r");
            push_filter(&mut count, filter);
            count.build_query_scalar().fetch_one(conn).await
        }
    }
}

async fn history_on(
    conn: &mut DbConnection,
    uid: &str,
    limit: i64,
    before_id: Option<i64>,
    now: Now,
) -> Result<(Vec<HistoryEntry>, Option<String>), TxError> {
    let mut select = QueryBuilder::<Db>::new(concat!(
        "SELECT ",
        room_columns!(),
        ", ",
        participant_columns!(),
        " FROM call_participant p JOIN call_room r ON r.room_name = p.room_name WHERE p.uid = "
    ));
    select.push_bind(uid.to_owned());
    if let Some(before) = before_id {
        select.push(" AND p.id < ").push_bind(before);
    }
    select
        .push(" ORDER BY p.id DESC LIMIT ")
        .push_bind(limit + 1);
    let rows = select.build().fetch_all(&mut *conn).await?;
    let mut calls = Vec::with_capacity(rows.len());
    for row in &rows {
        let room = decode_room(row)?;
        let own = decode_participant(row, &room.room_name)?
            .ok_or_else(|| sqlx::Error::Decode("a history row without its participant".into()))?;
        calls.push((room, own));
    }
    let more = calls.len() as i64 > limit;
    calls.truncate(usize::try_from(limit).unwrap_or(0));
    let next_cursor = more
        .then(|| calls.last().map(|(_, own)| cursor_of(own.id)))
        .flatten();
    let others = others_in(conn, &calls, uid).await?;
    let mut entries = Vec::with_capacity(calls.len());
    for (room, own) in calls {
        // A call whose deadline passed is shown as the rules settle it.
        let (room, own) = if room.deadline.is_some_and(|d| d <= now.at) {
            match load_on(conn, &room.room_name, now).await? {
                Some(state) => {
                    let own = state.row(uid).cloned().unwrap_or(own);
                    (state.room, own)
                }
                None => (room, own),
            }
        } else {
            (room, own)
        };
        entries.push(HistoryEntry {
            direction: if room.creator == uid {
                Direction::Outgoing
            } else {
                Direction::Incoming
            },
            others: others.get(&room.room_name).cloned().unwrap_or_default(),
            room_name: room.room_name,
            call_type: room.call_type,
            creator: room.creator,
            status: room.status,
            end_reason: room.end_reason,
            participant_status: own.status,
            reason: own.reason,
            created_at: own.created_at,
            started_at: room.started_at,
            ended_at: room.ended_at,
            duration_seconds: room.duration_seconds,
            ring_seconds: own.ring_seconds,
            talk_seconds: own.talk_seconds,
        });
    }
    Ok((entries, next_cursor))
}

/// Everyone but `uid` in each of the page's calls, in one query.
async fn others_in(
    conn: &mut DbConnection,
    calls: &[(Room, Participant)],
    uid: &str,
) -> Result<std::collections::HashMap<String, Vec<String>>, sqlx::Error> {
    let mut others: std::collections::HashMap<String, Vec<String>> = Default::default();
    if calls.is_empty() {
        return Ok(others);
    }
    let mut query =
        QueryBuilder::<Db>::new("SELECT room_name, uid FROM call_participant WHERE room_name IN (");
    let mut list = query.separated(", ");
    for (room, _) in calls {
        list.push_bind(room.room_name.clone());
    }
    query.push(") AND uid <> ").push_bind(uid.to_owned());
    query.push(" ORDER BY id");
    let rows: Vec<(String, String)> = query.build_query_as().fetch_all(conn).await?;
    for (room, other) in rows {
        others.entry(room).or_default().push(other);
    }
    Ok(others)
}
