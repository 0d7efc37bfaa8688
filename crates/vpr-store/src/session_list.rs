//! Listing sessions by filter, one page at a time.

use crate::backend::on_pool;
use crate::rows::{SessionFilter, SessionRow};
use crate::sessions::session_columns;
use crate::{Store, StoreError};

/// A value bound to one placeholder of the listing query.
enum Param {
    Text(String),
    Int(i64),
}

/// Builds the listing query for `filter` and the page after `after`, with
/// its parameters in placeholder order.
fn listing_query(
    filter: &SessionFilter,
    limit: i64,
    after: Option<(i64, String)>,
) -> (String, Vec<Param>) {
    let mut conditions: Vec<String> = Vec::new();
    let mut params: Vec<Param> = Vec::new();

    let text_filters = [
        ("state", &filter.state),
        ("incident_id", &filter.incident_id),
        ("disposition", &filter.disposition),
    ];
    for (column, value) in text_filters {
        if let Some(value) = value {
            params.push(Param::Text(value.clone()));
            conditions.push(format!("{column} = ${}", params.len()));
        }
    }
    if let Some(from_ms) = filter.created_from_ms {
        params.push(Param::Int(from_ms));
        conditions.push(format!("created_at_ms >= ${}", params.len()));
    }
    if let Some(to_ms) = filter.created_to_ms {
        params.push(Param::Int(to_ms));
        conditions.push(format!("created_at_ms < ${}", params.len()));
    }

    // Keyset paging: rows strictly after the last (created_at_ms, room_id).
    if let Some((after_ms, after_room_id)) = after {
        params.push(Param::Int(after_ms));
        let ms = params.len();
        params.push(Param::Text(after_room_id));
        let room = params.len();
        conditions.push(format!(
            "(created_at_ms > ${ms} OR (created_at_ms = ${ms} AND room_id > ${room}))"
        ));
    }

    let mut sql = concat!("SELECT ", session_columns!(), " FROM sessions").to_owned();
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    params.push(Param::Int(limit));
    sql.push_str(&format!(
        " ORDER BY created_at_ms, room_id LIMIT ${}",
        params.len()
    ));
    (sql, params)
}

impl Store {
    /// Returns up to `limit` sessions that match `filter`, ordered by
    /// `(created_at_ms, room_id)` ascending. `after` is the last
    /// `(created_at_ms, room_id)` of the previous page, or `None` for the
    /// first page. A `limit` of zero or less returns nothing.
    pub async fn list_sessions(
        &self,
        filter: &SessionFilter,
        limit: i64,
        after: Option<(i64, String)>,
    ) -> Result<Vec<SessionRow>, StoreError> {
        if limit <= 0 {
            return Ok(Vec::new());
        }

        let (sql, params) = listing_query(filter, limit, after);
        let rows = on_pool!(&self.backend, pool => {
            let mut query = sqlx::query_as::<_, SessionRow>(&sql);
            for param in &params {
                query = match param {
                    Param::Text(value) => query.bind(value.as_str()),
                    Param::Int(value) => query.bind(*value),
                };
            }
            query.fetch_all(pool).await?
        });
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_filter_has_no_where_clause() {
        let (sql, params) = listing_query(&SessionFilter::default(), 10, None);
        assert!(!sql.contains("WHERE"), "{sql}");
        assert!(
            sql.ends_with("ORDER BY created_at_ms, room_id LIMIT $1"),
            "{sql}"
        );
        assert_eq!(params.len(), 1);
    }

    #[test]
    fn placeholders_follow_parameter_order() {
        let filter = SessionFilter {
            state: Some("open".to_owned()),
            created_to_ms: Some(5_000),
            ..SessionFilter::default()
        };
        let (sql, params) = listing_query(&filter, 10, Some((1_000, "room-1".to_owned())));
        assert!(sql.contains("WHERE state = $1 AND created_at_ms < $2 AND (created_at_ms > $3 OR (created_at_ms = $3 AND room_id > $4))"), "{sql}");
        assert!(sql.ends_with("LIMIT $5"), "{sql}");
        assert_eq!(params.len(), 5);
    }
}
