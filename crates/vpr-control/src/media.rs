//! Interface of the media plane (the SFU) that the control plane calls.

/// Opens and closes rooms in the media plane (the SFU). Calls are
/// synchronous and must not block: an implementation hands the work to its
/// own tasks.
pub trait MediaRooms: Send + Sync + 'static {
    /// Opens a room that accepts up to `max_participants` peer connections.
    fn open_room(&self, room_id: &str, max_participants: u32);

    /// Disconnects every peer connection in the room.
    fn close_room(&self, room_id: &str, reason: &str);
}
