//! An interceptor that edits inbound packets in place and passes every
//! packet on, in both directions, in arrival order.

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Interceptor, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

/// Edit applied to each inbound packet by a [`ReadHook`].
pub trait InboundEdit: Send + Sync {
    /// Edits one inbound packet before the next interceptor reads it.
    fn edit(&mut self, packet: &mut TaggedPacket);
}

/// Interceptor that runs an [`InboundEdit`] on every inbound packet.
pub struct ReadHook<E> {
    edit: E,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl<E: InboundEdit> ReadHook<E> {
    /// Wraps `edit` as an interceptor.
    pub fn new(edit: E) -> Self {
        Self { edit, read_queue: VecDeque::new(), write_queue: VecDeque::new() }
    }
}

impl<E: InboundEdit> Protocol<TaggedPacket, TaggedPacket, ()> for ReadHook<E> {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        self.edit.edit(&mut msg);
        self.read_queue.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write_queue.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write_queue.pop_front()
    }

    fn handle_timeout(&mut self, _now: Instant) -> Result<(), Self::Error> {
        Ok(())
    }

    fn poll_timeout(&mut self) -> Option<Self::Time> {
        None
    }
}

impl<E: InboundEdit> Interceptor for ReadHook<E> {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}
