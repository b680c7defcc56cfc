//! What task and image lists share: `limit`, sort directions, filter values, and the
//! `first`/`next` links. The pages themselves come from the store's indexes
//! ([`crate::meta::query`]).

use crate::api::endpoint::Query;
use crate::api::error::ApiError;
use crate::api::format_time;
pub use crate::meta::SortDir;

/// Page size when the client gives no `limit` (Glance's `limit_param_default`).
pub const DEFAULT_LIMIT: usize = 25;

/// Largest page served whatever `limit` says (Glance's `api_limit_max`).
pub const MAX_LIMIT: usize = 1000;

impl SortDir {
    /// `asc` or `desc`.
    ///
    /// # Errors
    /// 400 "Invalid sort direction: x" (Glance's text).
    pub fn parse(value: &str) -> Result<SortDir, ApiError> {
        match value {
            "asc" => Ok(SortDir::Asc),
            "desc" => Ok(SortDir::Desc),
            other => Err(ApiError::BadRequest(format!(
                "Invalid sort direction: {other}"
            ))),
        }
    }
}

/// One column value, as filters compare it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SortValue<'a> {
    /// Null.
    Null,
    /// An integer column (timestamps, sizes).
    Int(i128),
    /// A boolean column.
    Bool(bool),
    /// A text column.
    Str(&'a str),
}

/// The `limit` parameter: default [`DEFAULT_LIMIT`], capped at [`MAX_LIMIT`].
///
/// # Errors
/// 400 with Glance's texts for non-integers and negative values.
pub fn parse_limit(value: Option<&str>) -> Result<usize, ApiError> {
    let Some(text) = value else {
        return Ok(DEFAULT_LIMIT);
    };
    let n: i128 = text
        .trim()
        .parse()
        .map_err(|_| ApiError::BadRequest("limit param must be an integer".into()))?;
    if n < 0 {
        return Err(ApiError::BadRequest("limit param must be positive".into()));
    }
    Ok(usize::try_from(n).unwrap_or(MAX_LIMIT).min(MAX_LIMIT))
}

/// The first value of a query parameter.
pub fn param<'q>(query: &'q Query, name: &str) -> Option<&'q str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Every value of a repeated query parameter.
pub fn params<'q>(query: &'q Query, name: &'q str) -> impl Iterator<Item = &'q str> + 'q {
    query
        .iter()
        .filter(move |(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// The `first` and `next` links of a list: `first` repeats the request's parameters without
/// `marker`; `next` (only when the page is full and not empty) adds `marker=<last id>`.
pub fn links(
    base: &str,
    query: &Query,
    page_len: usize,
    limit: usize,
    last_id: Option<&str>,
) -> (String, Option<String>) {
    let kept: Vec<&(String, String)> = query.iter().filter(|(k, _)| k != "marker").collect();
    let encode = |extra: Option<(&str, &str)>| {
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &kept {
            ser.append_pair(k, v);
        }
        if let Some((k, v)) = extra {
            ser.append_pair(k, v);
        }
        ser.finish()
    };
    let first_query = encode(None);
    let first = if first_query.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{first_query}")
    };
    let next = match last_id {
        Some(id) if page_len > 0 && page_len == limit => {
            Some(format!("{base}?{}", encode(Some(("marker", id)))))
        }
        _ => None,
    };
    (first, next)
}

/// A list response, Glance's shape: `{"<kind>": [...], "first": ..., "schema":
/// "/v2/schemas/<kind>", "next": ...}` (`next` only when [`links`] gives one). `last_id` is the
/// id of the page's last item.
pub fn page_json(
    kind: &str,
    items: Vec<serde_json::Value>,
    query: &Query,
    limit: usize,
    last_id: Option<&str>,
) -> serde_json::Value {
    use serde_json::Value;
    let (first, next) = links(&format!("/v2/{kind}"), query, items.len(), limit, last_id);
    let mut body = serde_json::Map::new();
    body.insert(kind.to_owned(), Value::Array(items));
    body.insert("first".into(), Value::String(first));
    body.insert(
        "schema".into(),
        Value::String(format!("/v2/schemas/{kind}")),
    );
    if let Some(next) = next {
        body.insert("next".into(), Value::String(next));
    }
    Value::Object(body)
}

/// Whether a column equals a filter value (timestamps as rendered by the API).
pub fn column_equals(column: SortValue<'_>, value: &str) -> bool {
    match column {
        SortValue::Null => false,
        SortValue::Int(n) => {
            i64::try_from(n).is_ok_and(|ts| format_time(ts) == value) || n.to_string() == value
        }
        SortValue::Bool(b) => value.eq_ignore_ascii_case(if b { "true" } else { "false" }),
        SortValue::Str(s) => s == value,
    }
}

/// Whether a string has the shape of a UUID (Glance's marker check for tasks).
pub fn is_uuid(text: &str) -> bool {
    uuid::Uuid::try_parse(text).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_parse_limit_glance_messages() {
        assert!(matches!(parse_limit(None), Ok(DEFAULT_LIMIT)));
        assert!(matches!(parse_limit(Some("5000")), Ok(MAX_LIMIT)));
        assert!(matches!(
            parse_limit(Some("-1")),
            Err(ApiError::BadRequest(m)) if m == "limit param must be positive"
        ));
        assert!(matches!(
            parse_limit(Some("ten")),
            Err(ApiError::BadRequest(m)) if m == "limit param must be an integer"
        ));
    }

    #[test]
    fn test_links_match_glance_recording() {
        // 45-list-filter-success.json.
        let query: Query = vec![
            ("status".into(), "success".into()),
            ("type".into(), "import".into()),
            ("limit".into(), "3".into()),
        ];
        let (first, next) = links("/v2/tasks", &query, 3, 3, Some("d4f2"));
        assert_eq!(first, "/v2/tasks?status=success&type=import&limit=3");
        assert_eq!(
            next.as_deref(),
            Some("/v2/tasks?status=success&type=import&limit=3&marker=d4f2")
        );
        let (first, next) = links("/v2/tasks", &Vec::new(), 1, 25, Some("x"));
        assert_eq!(first, "/v2/tasks");
        assert!(next.is_none());
    }
}
