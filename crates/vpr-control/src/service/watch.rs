//! WatchEvents: streams the event log from the store.
//!
//! A task per stream reads the events after the last one sent, in batches,
//! then waits until the store's committed event sequence moves past what it
//! has read, and reads again. Every streamed event is read from the store,
//! so it is stored before it is sent. Reads resume strictly after the last
//! seq sent, so no event is sent twice.

use std::pin::Pin;

use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::Status;
use vpr_store::Store;

use super::RoomServiceImpl;
use crate::convert;
use crate::error::ControlError;
use crate::pb;
use crate::validate;

/// Events read from the store in one query.
const BATCH_SIZE: i64 = 256;

/// Events buffered between the reading task and the gRPC stream.
const STREAM_BUFFER: usize = 64;

/// The response stream of WatchEvents.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

impl RoomServiceImpl {
    pub(super) async fn watch_events_call(
        &self,
        request: pb::WatchEventsRequest,
        _key_id: &str,
    ) -> Result<EventStream, ControlError> {
        validate::watch_events(&request)?;
        let room_id = Some(request.room_id).filter(|room_id| !room_id.is_empty());
        if let Some(room_id) = &room_id {
            self.room_row(room_id).await?;
        }

        let (sender, receiver) = mpsc::channel(STREAM_BUFFER);
        let watcher = Watcher {
            store: self.store.clone(),
            room_id,
            last_seq: request.after_seq,
            sender,
            stopped: self.streams_stopped.subscribe(),
            metrics: self.metrics.clone(),
        };
        tokio::spawn(watcher.run());
        Ok(Box::pin(ReceiverStream::new(receiver)))
    }
}

/// The task behind one WatchEvents stream.
struct Watcher {
    store: Store,
    room_id: Option<String>,
    /// Seq of the last event sent, or the request's after_seq.
    last_seq: i64,
    sender: mpsc::Sender<Result<pb::Event, Status>>,
    stopped: watch::Receiver<bool>,
    metrics: std::sync::Arc<crate::ControlMetrics>,
}

impl Watcher {
    async fn run(mut self) {
        self.metrics.event_streams.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(room_id = ?self.room_id, after_seq = self.last_seq, "event stream started");
        let result = self.forward().await;
        self.metrics.event_streams.fetch_sub(1, Ordering::Relaxed);
        if let Err(error) = &result {
            tracing::error!(room_id = ?self.room_id, last_seq = self.last_seq, %error,
                "event stream failed");
            let _ = self.sender.send(Err(Status::internal("reading events failed; resume with the last seq received"))).await;
        }
        tracing::debug!(room_id = ?self.room_id, last_seq = self.last_seq, "event stream ended");
    }

    /// Sends events until the client goes away, the service stops streams or
    /// the store's sequence channel closes.
    // This relies on events committing in seq order: SQLite has one writer at
    // a time, and on PostgreSQL the store serialises appends with an advisory
    // transaction lock.
    async fn forward(&mut self) -> Result<(), ControlError> {
        let mut committed = self.store.event_sequence();
        // Sequence value up to which the store has been read; the first read
        // happens unconditionally.
        let mut read_through = i64::MIN;

        loop {
            // Marking the value seen before reading makes a commit that
            // lands during the read wake the wait below.
            let head = *committed.borrow_and_update();
            if head > read_through {
                if !self.send_stored_events().await? {
                    return Ok(());
                }
                read_through = head;
            }

            tokio::select! {
                changed = committed.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                }
                _ = self.stopped.wait_for(|stopped| *stopped) => return Ok(()),
                _ = self.sender.closed() => return Ok(()),
            }
        }
    }

    /// Sends every stored event after `last_seq`. Returns false when the
    /// client has gone away.
    async fn send_stored_events(&mut self) -> Result<bool, ControlError> {
        loop {
            let rows = self
                .store
                .events_after(self.room_id.as_deref(), self.last_seq, BATCH_SIZE)
                .await?;
            let batch_len = rows.len();

            for row in rows {
                self.last_seq = row.seq;
                if self.sender.send(Ok(convert::event(&row))).await.is_err() {
                    return Ok(false);
                }
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(row.at_ms);
                self.metrics.events_streamed.fetch_add(1, Ordering::Relaxed);
                self.metrics.event_stream_lag_ms.store(now_ms - row.at_ms, Ordering::Relaxed);
            }
            if batch_len < BATCH_SIZE as usize {
                return Ok(true);
            }
        }
    }
}
