//! An interceptor that edits packets in place and passes them on, in both
//! directions, in arrival order; an edit may drop an inbound packet.

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Interceptor, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;
use rtc::shared::error::Error;

/// Edits applied to the packets passing a [`PacketHook`].
pub trait PacketEdit: Send + Sync {
    /// Edits one inbound packet before the next interceptor reads it;
    /// returns false to drop it.
    fn inbound(&mut self, _packet: &mut TaggedPacket) -> bool {
        true
    }

    /// Edits one outbound packet before the next interceptor toward the
    /// wire writes it.
    fn outbound(&mut self, _packet: &mut TaggedPacket) {}

    /// Learns a local stream the peer connection bound.
    fn local_stream_bound(&mut self, _info: &StreamInfo) {}

    /// Forgets a local stream the peer connection unbound.
    fn local_stream_unbound(&mut self, _info: &StreamInfo) {}

    /// Learns a remote stream the peer connection bound.
    fn remote_stream_bound(&mut self, _info: &StreamInfo) {}

    /// Forgets a remote stream the peer connection unbound.
    fn remote_stream_unbound(&mut self, _info: &StreamInfo) {}
}

/// Interceptor that runs a [`PacketEdit`] on every packet.
pub struct PacketHook<E> {
    edit: E,
    read_queue: VecDeque<TaggedPacket>,
    write_queue: VecDeque<TaggedPacket>,
}

impl<E: PacketEdit> PacketHook<E> {
    /// Wraps `edit` as an interceptor.
    pub fn new(edit: E) -> Self {
        Self { edit, read_queue: VecDeque::new(), write_queue: VecDeque::new() }
    }
}

impl<E: PacketEdit> Protocol<TaggedPacket, TaggedPacket, ()> for PacketHook<E> {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if self.edit.inbound(&mut msg) {
            self.read_queue.push_back(msg);
        }
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read_queue.pop_front()
    }

    fn handle_write(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        self.edit.outbound(&mut msg);
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

impl<E: PacketEdit> Interceptor for PacketHook<E> {
    fn bind_local_stream(&mut self, info: &StreamInfo) {
        self.edit.local_stream_bound(info);
    }
    fn unbind_local_stream(&mut self, info: &StreamInfo) {
        self.edit.local_stream_unbound(info);
    }
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        self.edit.remote_stream_bound(info);
    }
    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.edit.remote_stream_unbound(info);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::Packet;
    use rtc::shared::TransportContext;

    /// Drops inbound RTCP and counts outbound packets.
    #[derive(Default)]
    struct DropRtcp {
        outbound: usize,
    }

    impl PacketEdit for DropRtcp {
        fn inbound(&mut self, packet: &mut TaggedPacket) -> bool {
            !matches!(packet.message.packet, Packet::Rtcp(_))
        }

        fn outbound(&mut self, _packet: &mut TaggedPacket) {
            self.outbound += 1;
        }
    }

    fn tagged(packet: Packet) -> TaggedPacket {
        TaggedPacket { now: Instant::now(), transport: TransportContext::default(), message: packet.into() }
    }

    #[test]
    fn dropped_inbound_never_reaches_next() {
        let mut hook = PacketHook::new(DropRtcp::default());
        hook.handle_read(tagged(Packet::Rtcp(Vec::new()))).unwrap();
        assert!(hook.poll_read().is_none());

        hook.handle_read(tagged(Packet::Rtp(Default::default()))).unwrap();
        assert!(hook.poll_read().is_some());

        hook.handle_write(tagged(Packet::Rtcp(Vec::new()))).unwrap();
        assert!(hook.poll_write().is_some());
        assert_eq!(hook.edit.outbound, 1);
    }
}
