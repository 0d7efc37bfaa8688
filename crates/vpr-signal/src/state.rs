//! State shared by the signalling handlers.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use dashmap::DashMap;
use vpr_control::JoinTokenSigner;
use vpr_sfu::MediaHandle;
use vpr_store::Store;

/// Owner of a live session. DELETE and PATCH must come from this participant.
#[derive(Debug, Clone)]
pub struct SessionOwner {
    /// Room of the session.
    pub room_id: String,
    /// Participant that created it.
    pub participant_id: String,
}

/// Handles the signalling endpoints share.
#[derive(Clone)]
pub struct SignalState {
    /// The media plane.
    pub media: MediaHandle,
    /// Verifies join tokens.
    pub signer: Arc<JoinTokenSigner>,
    /// Session record: a removed participant's token is rejected.
    pub store: Store,
    /// Live sessions by id.
    // NOTE: an entry stays until DELETE, also when the media plane ended
    // the session on its own (connection failed).
    pub sessions: Arc<DashMap<String, SessionOwner>>,
    /// Set on SIGTERM: no new sessions, not ready.
    pub draining: Arc<AtomicBool>,
    /// Control-plane counters appended to /metrics, when the control plane
    /// runs in this process.
    pub control_metrics: Option<Arc<vpr_control::ControlMetrics>>,
    /// Where officers' snapshots are written.
    pub snapshots: crate::snapshot::SnapshotConfig,
}

impl SignalState {
    /// Creates the state for a media handle, a join-token signer and the
    /// session record.
    pub fn new(media: MediaHandle, signer: JoinTokenSigner, store: Store) -> Self {
        Self {
            media,
            signer: Arc::new(signer),
            store,
            sessions: Arc::new(DashMap::new()),
            draining: Arc::new(AtomicBool::new(false)),
            control_metrics: None,
            snapshots: crate::snapshot::SnapshotConfig {
                dir: std::path::PathBuf::from("snapshots"),
                max_bytes: 4 * 1024 * 1024,
            },
        }
    }
}
