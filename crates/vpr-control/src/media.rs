//! Interface of the media plane (the SFU) that the control plane calls.

/// Rooms, participants and tracks in the media plane (the SFU). Calls are
/// synchronous and must not block: an implementation hands the work to its
/// own tasks.
pub trait MediaRooms: Send + Sync + 'static {
    /// Opens a room that accepts up to `max_participants` peer connections.
    /// With `empty_timeout`, the media plane closes the room once it has had
    /// no connected participant for that long.
    fn open_room(&self, room_id: &str, max_participants: u32, empty_timeout: Option<std::time::Duration>);

    /// Disconnects every peer connection in the room.
    fn close_room(&self, room_id: &str, reason: &str);

    /// Disconnects every peer connection of one participant.
    fn remove_participant(&self, room_id: &str, participant_id: &str, reason: &str);

    /// Stops (`muted`) or resumes forwarding one published track to every
    /// subscriber.
    fn set_track_muted(&self, room_id: &str, track_id: &str, muted: bool);

    /// Applies new permissions to a participant's live sessions: revoking
    /// publish ends its publishing sessions, revoking subscribe ends its
    /// receiving sessions.
    fn set_permissions(&self, room_id: &str, participant_id: &str, can_publish: bool, can_subscribe: bool);
}
