//! A packet buffer with a length of its own, so the fast path never zeroes memory.
//!
//! A `Vec<u8>` truncated to a packet must be `resize`d back before the next read,
//! and that memset of the whole 64 KiB buffer after every packet once cost half a
//! worker's CPU. The storage here is zeroed once, at allocation; afterwards only the
//! length moves, and growing it exposes earlier packets' bytes, which every user
//! writes over before they go anywhere (reads fill the buffer, sealing writes the
//! header, padding, trailer and ICV).

/// Fixed storage and the length of the packet in it; never reallocates.
pub struct PacketBuf {
    bytes: Box<[u8]>,
    len: usize,
}

impl PacketBuf {
    /// A buffer of `capacity` bytes, all of them in use (ready for a read).
    pub fn new(capacity: usize) -> Self {
        Self {
            bytes: vec![0; capacity].into_boxed_slice(),
            len: capacity,
        }
    }

    /// The length of the packet.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the packet is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The size of the storage, which never changes.
    pub fn capacity(&self) -> usize {
        self.bytes.len()
    }

    /// Sets the packet's length; panics beyond the capacity (a caller's bug: the
    /// storage cannot grow).
    pub fn set_len(&mut self, len: usize) {
        assert!(len <= self.bytes.len(), "packet buffer overrun");
        self.len = len;
    }

    /// Makes the whole storage the packet, for a read to fill: no bytes are written.
    pub fn reset(&mut self) {
        self.len = self.bytes.len();
    }

    /// The whole storage, whatever the length: sealing works in it and then sets
    /// the length to the ESP packet's end.
    pub fn storage_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }
}

impl AsRef<[u8]> for PacketBuf {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl AsMut<[u8]> for PacketBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_length_moves() {
        let mut b = PacketBuf::new(64);
        b.storage_mut().fill(0xaa);
        b.set_len(10);
        assert_eq!(b.as_ref(), &[0xaa; 10]);
        b.reset();
        assert_eq!((b.len(), b.capacity()), (64, 64));
        assert_eq!(b.as_mut()[5], 0xaa, "a reset writes nothing");
    }

    #[test]
    #[should_panic(expected = "packet buffer overrun")]
    fn the_storage_never_grows() {
        PacketBuf::new(8).set_len(9);
    }
}
