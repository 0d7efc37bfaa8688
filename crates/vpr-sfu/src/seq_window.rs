//! The last [`SEQUENCE_WINDOW`] RTP sequence numbers of one stream, each
//! with a one-bit mark, in a fixed array indexed by sequence number.

/// Sequence numbers remembered per stream: about 1 s of a 1000 packet/s
/// stream.
pub const SEQUENCE_WINDOW: usize = 1024;

/// Flag bit of a slot, above the 16 bits of the sequence number.
const MARK: u32 = 1 << 16;
/// An empty slot: no sequence number with or without the mark equals it.
const EMPTY: u32 = u32::MAX;

/// Record of the recent sequence numbers of a stream and the mark each was
/// recorded with. A sequence number is forgotten when the one
/// [`SEQUENCE_WINDOW`] later takes its slot.
#[derive(Debug)]
pub struct SequenceWindow {
    slots: Box<[u32; SEQUENCE_WINDOW]>,
}

impl Default for SequenceWindow {
    fn default() -> Self {
        Self { slots: Box::new([EMPTY; SEQUENCE_WINDOW]) }
    }
}

impl SequenceWindow {
    /// Records `sequence_number` with `mark`; returns the mark it had when
    /// it was already in the window.
    pub fn insert(&mut self, sequence_number: u16, mark: bool) -> Option<bool> {
        let slot = &mut self.slots[usize::from(sequence_number) % SEQUENCE_WINDOW];
        let previous = decode(*slot, sequence_number);
        *slot = u32::from(sequence_number) | if mark { MARK } else { 0 };
        previous
    }

    /// Returns the mark of `sequence_number`, or `None` when it is not in
    /// the window.
    pub fn get(&self, sequence_number: u16) -> Option<bool> {
        decode(self.slots[usize::from(sequence_number) % SEQUENCE_WINDOW], sequence_number)
    }
}

fn decode(slot: u32, sequence_number: u16) -> Option<bool> {
    (slot != EMPTY && slot & 0xffff == u32::from(sequence_number)).then_some(slot & MARK != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_marks_until_the_slot_is_reused() {
        let mut window = SequenceWindow::default();
        assert_eq!(window.get(7), None);
        assert_eq!(window.insert(7, true), None);
        assert_eq!(window.get(7), Some(true));
        assert_eq!(window.insert(7, false), Some(true));
        assert_eq!(window.get(7), Some(false));

        let later = 7 + SEQUENCE_WINDOW as u16;
        assert_eq!(window.insert(later, false), None);
        assert_eq!(window.get(7), None);
        assert_eq!(window.get(later), Some(false));
    }

    #[test]
    fn wraps_at_the_end_of_the_sequence_space() {
        let mut window = SequenceWindow::default();
        assert_eq!(window.insert(u16::MAX, false), None);
        assert_eq!(window.insert(0, true), None);
        assert_eq!(window.get(u16::MAX), Some(false));
        assert_eq!(window.get(0), Some(true));
    }
}
