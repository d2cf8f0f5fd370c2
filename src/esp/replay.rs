//! The anti-replay window of RFC 6479: a ring of 64-bit blocks, so sliding the window
//! clears whole blocks instead of shifting bits, and extended sequence numbers
//! reconstructed from their low 32 bits (RFC 4303 appendix A2).

const BLOCK_BITS: u64 = 64;

/// Which sequence numbers of an inbound SA were already accepted.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// Highest sequence number accepted so far (0: none yet).
    top: u64,
    /// Window size in packets: a multiple of 64.
    size: u64,
    /// One more block than the window needs, so the block being filled never overlaps the oldest.
    blocks: Vec<u64>,
}

impl ReplayWindow {
    /// A window remembering at least `size` packets (rounded up to a multiple of 64, at least 64).
    pub fn new(size: u64) -> Self {
        let size = size.max(BLOCK_BITS).div_ceil(BLOCK_BITS) * BLOCK_BITS;
        Self {
            top: 0,
            size,
            blocks: vec![0; (size / BLOCK_BITS + 1) as usize],
        }
    }

    /// The window size in packets.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The full 64-bit sequence number of a packet carrying `low` (RFC 4303 A2.1): the
    /// candidate closest to the window, so packets around a 2^32 wrap land right.
    pub fn infer_esn(&self, low: u32) -> u64 {
        let top_low = self.top as u32;
        let top_high = self.top >> 32;
        let bottom = self.top.saturating_sub(self.size - 1) as u32;
        let high = if top_low >= self.size as u32 - 1 {
            // Window within one 2^32 block: below its bottom means the next block.
            if low >= bottom {
                top_high
            } else {
                top_high + 1
            }
        } else if low >= bottom {
            // Window straddles a wrap and `low` is in its older half.
            top_high.saturating_sub(1)
        } else {
            top_high
        };
        (high << 32) | u64::from(low)
    }

    fn bit(&self, seq: u64) -> (usize, u64) {
        let block = (seq / BLOCK_BITS) as usize % self.blocks.len();
        (block, 1 << (seq % BLOCK_BITS))
    }

    /// True if `seq` is new and inside (or ahead of) the window; sequence number 0 never is.
    pub fn check(&self, seq: u64) -> bool {
        if seq == 0 {
            return false;
        }
        if seq > self.top {
            return true;
        }
        if seq + self.size <= self.top {
            return false;
        }
        let (block, bit) = self.bit(seq);
        self.blocks[block] & bit == 0
    }

    /// Records `seq` once its packet authenticated; false if it was a replay after all.
    pub fn accept(&mut self, seq: u64) -> bool {
        if !self.check(seq) {
            return false;
        }
        if seq > self.top {
            let old_block = self.top / BLOCK_BITS;
            let new_block = seq / BLOCK_BITS;
            let stale = (new_block - old_block).min(self.blocks.len() as u64);
            for i in 1..=stale {
                let b = ((old_block + i) % self.blocks.len() as u64) as usize;
                self.blocks[b] = 0;
            }
            self.top = seq;
        }
        let (block, bit) = self.bit(seq);
        self.blocks[block] |= bit;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against a model (a set of everything accepted): never a duplicate, never
        /// anything at or behind top - size, and everything else inside the window once.
        #[test]
        fn window_matches_a_set_model(seqs in proptest::collection::vec(1u64..5000, 1..400), size in 64u64..600) {
            let mut w = ReplayWindow::new(size);
            let size = w.size();
            let mut seen = std::collections::HashSet::new();
            let mut top = 0u64;
            for seq in seqs {
                let fresh = !seen.contains(&seq) && (seq > top || seq + size > top);
                prop_assert_eq!(w.accept(seq), fresh, "seq {} top {} size {}", seq, top, size);
                if fresh {
                    seen.insert(seq);
                    top = top.max(seq);
                }
            }
        }
    }

    #[test]
    fn accepts_each_number_once_and_nothing_behind_the_window() {
        let mut w = ReplayWindow::new(1024);
        assert!(!w.accept(0));
        assert!(w.accept(1));
        assert!(!w.accept(1));
        assert!(w.accept(5000));
        assert!(!w.accept(5000 - 1024));
        assert!(w.accept(5000 - 1023));
        assert!(w.accept(4000));
        assert!(!w.accept(4000));
        assert!(w.accept(100_000));
        assert!(w.accept(99_000));
        assert!(!w.accept(5000 - 1023), "far behind now");
    }

    #[test]
    fn sizes_round_up_to_blocks() {
        assert_eq!(ReplayWindow::new(0).size(), 64);
        assert_eq!(ReplayWindow::new(1000).size(), 1024);
        assert_eq!(ReplayWindow::new(1024).size(), 1024);
    }

    #[test]
    fn extended_sequence_numbers_follow_the_wrap() {
        let mut w = ReplayWindow::new(128);
        assert_eq!(w.infer_esn(7), 7);
        assert!(w.accept((1 << 32) - 10));
        assert_eq!(w.infer_esn(u32::MAX - 20), (1 << 32) - 21);
        assert_eq!(w.infer_esn(3), (1 << 32) + 3, "just after the wrap");
        assert!(w.accept((1 << 32) + 50));
        assert_eq!(
            w.infer_esn(u32::MAX - 5),
            (1 << 32) - 6,
            "late packet from before the wrap"
        );
        assert_eq!(w.infer_esn(60), (1 << 32) + 60);
    }
}
