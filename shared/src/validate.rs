//! Input rules shared by every endpoint: names, ranges and pagination.

use crate::error::ApiError;

pub const NAME_MAX_CHARS: usize = 40;
pub const SOURCE_CHANNEL_ID_MAX_CHARS: usize = 100;
pub const LIMIT_MAX: i64 = 100;
pub const LIMIT_DEFAULT: i64 = 10;

/// room_name and uid: 1–40 characters, no whitespace, no control characters, no `/`, and not
/// `.` or `..`, which a URL path cannot carry as a segment (they are resolved away).
pub fn name(field: &str, value: &str) -> Result<(), ApiError> {
    if value == "." || value == ".." {
        return Err(ApiError::invalid(format!(
            "{field} must not be '.' or '..'"
        )));
    }
    let chars = value.chars().count();
    if chars == 0 || chars > NAME_MAX_CHARS {
        return Err(ApiError::invalid(format!(
            "{field} must be 1-{NAME_MAX_CHARS} characters"
        )));
    }
    if value
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        return Err(ApiError::invalid(format!(
            "{field} must not contain whitespace, control characters or '/'"
        )));
    }
    Ok(())
}

pub fn names(field: &str, values: &[String]) -> Result<(), ApiError> {
    values.iter().try_for_each(|v| name(field, v))
}

pub fn source_channel_id(value: &str) -> Result<(), ApiError> {
    if value.chars().count() > SOURCE_CHANNEL_ID_MAX_CHARS {
        return Err(ApiError::invalid(format!(
            "source_channel_id must be at most {SOURCE_CHANNEL_ID_MAX_CHARS} characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "source_channel_id must not contain control characters",
        ));
    }
    Ok(())
}

pub fn in_range(field: &str, value: i64, min: i64, max: i64) -> Result<i64, ApiError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ApiError::invalid(format!(
            "{field} must be between {min} and {max}"
        )))
    }
}

/// max_participants: absent or 0 means 2, as in the original service.
pub fn max_participants(value: Option<i64>, limit: i64) -> Result<i32, ApiError> {
    match value.unwrap_or(0) {
        0 => Ok(2),
        n => in_range("max_participants", n, 2, limit).map(|n| n as i32),
    }
}

pub use crate::model::Page;

/// A call's limits on create, in seconds.
pub const RING_TIMEOUT_RANGE: (i64, i64) = (5, 180);
pub const MAX_DURATION_RANGE: (i64, i64) = (60, 86_400);
pub const SOLO_TIMEOUT_RANGE: (i64, i64) = (10, 3_600);

/// An optional number of seconds within `range`; None when absent.
pub fn optional_seconds(
    field: &str,
    value: Option<i64>,
    (min, max): (i64, i64),
) -> Result<Option<i32>, ApiError> {
    value
        .map(|v| in_range(field, v, min, max).map(|v| v as i32))
        .transpose()
}

/// limit (1–100, default 10) with either an offset (the seed's paging) or a cursor from a
/// previous page's `next_cursor` (deep pages without counting past the skipped rows).
pub fn page(
    limit: Option<&str>,
    offset: Option<&str>,
    cursor: Option<&str>,
) -> Result<Page, ApiError> {
    let limit = match limit {
        None => LIMIT_DEFAULT,
        Some(text) => in_range("limit", integer("limit", text)?, 1, LIMIT_MAX)?,
    };
    let offset_given = offset.is_some();
    let offset = match offset {
        None => 0,
        Some(text) => in_range("offset", integer("offset", text)?, 0, i64::from(i32::MAX))?,
    };
    let before_id = cursor
        .map(|text| {
            crate::model::parse_cursor(text)
                .ok_or_else(|| ApiError::invalid("cursor is not one this service gave out"))
        })
        .transpose()?;
    if before_id.is_some() && offset_given {
        return Err(ApiError::invalid("use either offset or cursor, not both"));
    }
    Ok(Page {
        limit,
        offset,
        before_id,
    })
}

pub fn integer(field: &str, text: &str) -> Result<i64, ApiError> {
    text.trim()
        .parse::<i64>()
        .map_err(|_| ApiError::invalid(format!("{field} must be an integer")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_input_rules() {
        assert!(name("uid", "user_001").is_ok());
        assert!(name("uid", "张三").is_ok());
        assert!(name("uid", &"x".repeat(40)).is_ok());
        assert!(name("uid", &"字".repeat(40)).is_ok());
        assert!(name("uid", &"x".repeat(41)).is_err());
        assert!(name("uid", "").is_err());
        assert!(name("uid", "a b").is_err());
        assert!(name("uid", "a/b").is_err());
        assert!(name("uid", "a\u{0}b").is_err());
        assert!(name("room_name", "tab\there").is_err());
        assert!(name("room_name", "..").is_err());
        assert!(name("room_name", ".").is_err());
        assert!(name("room_name", "...").is_ok());
    }

    #[test]
    fn pages_default_and_reject_out_of_range_values() {
        let plain = |limit, offset| Page {
            limit,
            offset,
            before_id: None,
        };
        assert_eq!(page(None, None, None), Ok(plain(10, 0)));
        assert_eq!(page(Some("100"), Some("5"), None), Ok(plain(100, 5)));
        assert!(page(Some("-1"), None, None).is_err());
        assert!(page(Some("0"), None, None).is_err());
        assert!(page(Some("101"), None, None).is_err());
        assert!(page(None, Some("-3"), None).is_err());
        assert!(page(Some("ten"), None, None).is_err());
    }

    #[test]
    fn a_cursor_continues_a_page_and_excludes_an_offset() {
        let cursor = crate::model::cursor_of(42);
        assert_eq!(
            page(Some("5"), None, Some(&cursor)),
            Ok(Page {
                limit: 5,
                offset: 0,
                before_id: Some(42)
            })
        );
        assert!(page(None, Some("10"), Some(&cursor)).is_err());
        assert!(page(None, Some("0"), Some(&cursor)).is_err());
        assert!(page(None, None, Some("42")).is_err(), "not one we gave out");
        assert!(page(None, None, Some("i-1")).is_err());
    }

    #[test]
    fn max_participants_defaults_to_two() {
        assert_eq!(max_participants(None, 50), Ok(2));
        assert_eq!(max_participants(Some(0), 50), Ok(2));
        assert_eq!(max_participants(Some(50), 50), Ok(50));
        assert!(max_participants(Some(1), 50).is_err());
        assert!(max_participants(Some(51), 50).is_err());
    }
}
