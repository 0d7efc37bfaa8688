//! Record calls: GetSession, ListSessions and ListAuditEntries.

use super::RoomServiceImpl;
use crate::convert;
use crate::error::ControlError;
use crate::paging;
use crate::pb;
use crate::validate;

impl RoomServiceImpl {
    pub(super) async fn get_session_call(
        &self,
        request: pb::GetSessionRequest,
        _key_id: &str,
    ) -> Result<pb::Session, ControlError> {
        validate::room_id(&request.room_id)?;
        let record = self
            .store
            .session(&request.room_id)
            .await?
            .ok_or_else(|| ControlError::RoomNotFound(request.room_id.clone()))?;
        Ok(convert::session(&record))
    }

    pub(super) async fn list_sessions_call(
        &self,
        request: pb::ListSessionsRequest,
        _key_id: &str,
    ) -> Result<pb::ListSessionsResponse, ControlError> {
        let query = validate::list_sessions(&request)?;
        let after = paging::parse_room_token(&request.page_token)?;

        // Reading one row more than the page shows whether another page follows.
        let page_size = query.page_size as usize;
        let mut rows = self
            .store
            .list_sessions(&query.filter, i64::from(query.page_size) + 1, after)
            .await?;
        let next_page_token = if rows.len() > page_size {
            rows.truncate(page_size);
            rows.last()
                .map(|row| paging::room_token(row.created_at_ms, &row.room_id))
                .unwrap_or_default()
        } else {
            String::new()
        };

        // Sessions are never deleted, so each listed room has a record.
        let mut sessions = Vec::with_capacity(rows.len());
        for row in &rows {
            let record = self
                .store
                .session(&row.room_id)
                .await?
                .ok_or_else(|| ControlError::RoomNotFound(row.room_id.clone()))?;
            sessions.push(convert::session(&record));
        }

        Ok(pb::ListSessionsResponse {
            sessions,
            next_page_token,
        })
    }

    pub(super) async fn list_audit_entries_call(
        &self,
        request: pb::ListAuditEntriesRequest,
        _key_id: &str,
    ) -> Result<pb::ListAuditEntriesResponse, ControlError> {
        let page_size = validate::page_size(request.page_size)?;
        let after_seq = paging::parse_audit_token(&request.page_token)?;

        let mut rows = self
            .store
            .list_audit(after_seq, i64::from(page_size) + 1)
            .await?;
        let next_page_token = if rows.len() > page_size as usize {
            rows.truncate(page_size as usize);
            rows.last()
                .map(|row| paging::audit_token(row.seq))
                .unwrap_or_default()
        } else {
            String::new()
        };

        Ok(pb::ListAuditEntriesResponse {
            entries: rows.iter().map(convert::audit_entry).collect(),
            next_page_token,
        })
    }
}
