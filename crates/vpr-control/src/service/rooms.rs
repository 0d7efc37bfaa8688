//! Room calls: CreateRoom, GetRoom, ListRooms and CloseRoom.

use serde_json::json;
use vpr_store::{NewSession, SessionFilter};

use super::{new_id, room_error, unix_now_ms, EventRecord, RoomServiceImpl, CLOSED_BY_API_REASON};
use crate::convert;
use crate::error::ControlError;
use crate::paging;
use crate::pb;
use crate::room_settings::{self, RoomSettings};
use crate::validate;

impl RoomServiceImpl {
    pub(super) async fn create_room_call(
        &self,
        request: pb::CreateRoomRequest,
        key_id: &str,
    ) -> Result<pb::CreateRoomResponse, ControlError> {
        self.reject_if_draining()?;
        validate::create_room(&request, self.config.max_participants_limit)?;

        let max_participants = match request.max_participants {
            0 => self.config.default_max_participants,
            requested => requested,
        };
        let settings = RoomSettings {
            empty_timeout_s: request.empty_timeout_seconds,
        };
        let now_ms = unix_now_ms();
        let (row, created) = self
            .store
            .create_session(NewSession {
                room_id: new_id("rm_"),
                incident_id: request.incident_id.clone(),
                request_id: request.request_id.clone(),
                call_type: request.call_type.clone(),
                max_participants: i64::from(max_participants),
                metadata: room_settings::encode(&request.metadata, settings),
                created_at_ms: now_ms,
            })
            .await?;

        // A retry returns the room of the first call, open or closed, and
        // opens nothing in the media plane.
        if created {
            let empty_timeout = (settings.empty_timeout_s > 0)
                .then(|| std::time::Duration::from_secs(u64::from(settings.empty_timeout_s)));
            self.media.open_room(&row.room_id, max_participants, empty_timeout);
            let detail = json!({
                "incident_id": row.incident_id,
                "call_type": row.call_type,
                "max_participants": max_participants,
                "empty_timeout_seconds": settings.empty_timeout_s,
            });
            self.record_event(EventRecord::room(&row.room_id, "room_created"), detail, now_ms)
                .await;
            tracing::info!(room_id = %row.room_id, incident_id = %row.incident_id, max_participants, "room created");
        }

        let arguments = json!({
            "incident_id": request.incident_id,
            "request_id": request.request_id,
            "call_type": request.call_type,
            "max_participants": request.max_participants,
            "empty_timeout_seconds": request.empty_timeout_seconds,
            "metadata_bytes": request.metadata.len(),
            "room_id": row.room_id,
            "created": created,
        });
        self.audit(key_id, "CreateRoom", arguments, now_ms).await;

        Ok(pb::CreateRoomResponse {
            room: Some(convert::room(&row)),
            created,
        })
    }

    pub(super) async fn get_room_call(
        &self,
        request: pb::GetRoomRequest,
        _key_id: &str,
    ) -> Result<pb::Room, ControlError> {
        validate::room_id(&request.room_id)?;
        let row = self.room_row(&request.room_id).await?;
        Ok(convert::room(&row))
    }

    pub(super) async fn list_rooms_call(
        &self,
        request: pb::ListRoomsRequest,
        _key_id: &str,
    ) -> Result<pb::ListRoomsResponse, ControlError> {
        let query = validate::list_rooms(&request)?;
        let after = paging::parse_room_token(&request.page_token)?;
        let filter = SessionFilter {
            state: query.state.map(str::to_owned),
            incident_id: query.incident_id,
            ..SessionFilter::default()
        };

        // Reading one row more than the page shows whether another page follows.
        let page_size = query.page_size as usize;
        let mut rows = self
            .store
            .list_sessions(&filter, i64::from(query.page_size) + 1, after)
            .await?;
        let next_page_token = if rows.len() > page_size {
            rows.truncate(page_size);
            rows.last()
                .map(|row| paging::room_token(row.created_at_ms, &row.room_id))
                .unwrap_or_default()
        } else {
            String::new()
        };

        Ok(pb::ListRoomsResponse {
            rooms: rows.iter().map(convert::room).collect(),
            next_page_token,
        })
    }

    pub(super) async fn close_room_call(
        &self,
        request: pb::CloseRoomRequest,
        key_id: &str,
    ) -> Result<pb::Room, ControlError> {
        let disposition = validate::close_room(&request)?;

        let now_ms = unix_now_ms();
        let notes = Some(request.notes.as_str()).filter(|notes| !notes.is_empty());
        let row = self
            .store
            .close_session(
                &request.room_id,
                CLOSED_BY_API_REASON,
                Some(disposition),
                notes,
                now_ms,
            )
            .await
            .map_err(|error| room_error(error, &request.room_id))?;

        self.media.close_room(&row.room_id, CLOSED_BY_API_REASON);
        let detail = json!({ "disposition": disposition, "reason": CLOSED_BY_API_REASON });
        self.record_event(EventRecord::room(&row.room_id, "room_closed"), detail, now_ms)
            .await;
        tracing::info!(room_id = %row.room_id, disposition, "room closed");

        let arguments = json!({
            "room_id": request.room_id,
            "disposition": disposition,
            "notes": request.notes,
        });
        self.audit(key_id, "CloseRoom", arguments, now_ms).await;

        Ok(convert::room(&row))
    }
}
