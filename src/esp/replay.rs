//! The anti-replay window of RFC 6479: a ring of 64-bit blocks, so sliding the window
//! clears whole blocks instead of shifting bits, and extended sequence numbers
//! reconstructed from their low 32 bits (RFC 4303 appendix A2).
//!
//! An SA spread over several workers has one window per worker, each over its own
//! [`Class`] of sequence numbers: every number belongs to exactly one class, so each
//! is checked by one window alone and replay detection stays exact without anything
//! shared. Each window numbers packets as the SA does, so its size still measures
//! how far behind the newest a packet may arrive, and ESN inference from its own
//! class's highest number works as RFC 4303 A2 has it: the class's packets are at
//! most `count` blocks apart, far less than 2^31.

const BLOCK_BITS: u64 = 64;

/// Spread SAs go to workers in blocks of 2^SPREAD_SHIFT (1024) consecutive sequence
/// numbers: a sender's GSO run (at most 64 datagrams) mostly reaches one worker whole,
/// and a TCP flow's segments reach each worker in long runs that its TUN writes
/// coalesce, with few places where the two workers' runs cross. Measured with
/// scripts/bench-tunnel.sh (one TCP stream, spread SA): blocks of 8, 64 and 1024 gave
/// 0.95, 1.35 and 2.95 Gbit/s back to back.
pub const SPREAD_SHIFT: u32 = 10;

/// Which sequence numbers one window checks: those whose low 32 bits (all a steering
/// program sees of them) fall, in blocks of 2^[`SPREAD_SHIFT`], to class `index` of
/// `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Class {
    index: u32,
    count: u32,
}

impl Class {
    /// Every sequence number: an SA that is not spread.
    pub const ALL: Class = Class { index: 0, count: 1 };

    /// Class `index` of `count` (at least 1; `index` is taken modulo `count`).
    pub fn new(index: u32, count: u32) -> Self {
        let count = count.max(1);
        Self {
            index: index % count,
            count,
        }
    }

    /// The class of `count` a packet with sequence number bits `low` belongs to.
    pub fn of(low: u32, count: u32) -> u32 {
        (low >> SPREAD_SHIFT) % count.max(1)
    }

    /// True if `seq` is in this class.
    pub fn holds(&self, seq: u64) -> bool {
        self.count == 1 || Self::of(seq as u32, self.count) == self.index
    }
}

/// Which sequence numbers of an inbound SA (or of its [`Class`]) were already accepted.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// The sequence numbers this window checks; it refuses all others.
    class: Class,
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
        Self::of_class(size, Class::ALL)
    }

    /// A window as [`ReplayWindow::new`] over the sequence numbers of `class` only.
    pub fn of_class(size: u64, class: Class) -> Self {
        let size = size.max(BLOCK_BITS).div_ceil(BLOCK_BITS) * BLOCK_BITS;
        Self {
            class,
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

    /// True if `seq` is of the window's class, new and inside (or ahead of) the
    /// window; sequence number 0 never is.
    pub fn check(&self, seq: u64) -> bool {
        if seq == 0 || !self.class.holds(seq) {
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

    proptest! {
        /// An SA spread over `count` windows, each packet checked by its class's: no
        /// number is ever accepted twice; each window is exact for its class (a set
        /// model with the class's own top); and whatever one window over the whole
        /// stream accepts, the class windows accept too; more only what is behind
        /// that window but not behind its class's.
        #[test]
        fn class_windows_are_exact_and_accept_what_one_window_would(
            // Near block edges, where classes change hands, and within a window's reach.
            near in proptest::collection::vec((1u64..8, 0u64..400), 1..600),
            size in 64u64..400,
            count in 1u32..5,
        ) {
            let mut whole = ReplayWindow::new(size);
            let size = whole.size();
            let mut parts: Vec<ReplayWindow> =
                (0..count).map(|i| ReplayWindow::of_class(size, Class::new(i, count))).collect();
            let mut seen = std::collections::HashSet::new();
            let mut tops = vec![0u64; count as usize];
            let mut top = 0u64;
            for (edge, off) in near {
                let seq = (edge << SPREAD_SHIFT) + off - 200;
                let class = Class::of(seq as u32, count) as usize;
                let fresh = !seen.contains(&seq) && seq + size > tops[class];
                let reference = whole.accept(seq);
                for (i, w) in parts.iter().enumerate() {
                    if i != class {
                        prop_assert!(!w.check(seq), "class {} took {} of class {}", i, seq, class);
                    }
                }
                let accepted = parts[class].accept(seq);
                prop_assert_eq!(accepted, fresh, "seq {} class {} top {}", seq, class, tops[class]);
                if reference {
                    prop_assert!(accepted, "seq {}: one window took it", seq);
                } else if accepted {
                    prop_assert!(seq + size <= top, "seq {}: refused by one window yet fresh", seq);
                }
                if accepted {
                    seen.insert(seq);
                    tops[class] = tops[class].max(seq);
                    top = top.max(seq);
                }
            }
        }
    }

    #[test]
    fn a_class_window_takes_its_blocks_only_and_keeps_its_edge() {
        let block = 1u64 << SPREAD_SHIFT;
        let mut w = ReplayWindow::of_class(128, Class::new(1, 2));
        assert!(!w.check(1), "block 0 is class 0's");
        assert!(w.accept(block));
        assert!(w.accept(2 * block - 1));
        assert!(!w.check(2 * block), "block 2 is class 0's again");
        let top = 5 * block + 200;
        assert!(w.accept(top));
        assert!(!w.accept(top));
        // Its edge is its own top less the size, counted in the SA's numbers.
        assert!(!w.check(top - 128), "behind the window");
        assert!(w.accept(top - 127), "its oldest number");
        assert!(w.accept(top - 50), "late, within the window");
        assert!(
            !w.check(3 * block + 10),
            "an older block of class 1: behind"
        );
    }

    #[test]
    fn each_class_infers_extended_numbers_across_the_wrap() {
        for count in [2u32, 3] {
            let mut windows: Vec<ReplayWindow> = (0..count)
                .map(|i| ReplayWindow::of_class(256, Class::new(i, count)))
                .collect();
            // The sender's numbers across 2^32, with a few late packets; every class
            // sees blocks before the wrap, as it does from an SA's first numbers on.
            let block = 1u64 << SPREAD_SHIFT;
            let start = (1u64 << 32) - 2 * u64::from(count) * block;
            let mut seqs: Vec<u64> = (start..start + 4 * u64::from(count) * block).collect();
            for i in (100..seqs.len()).step_by(97) {
                seqs.swap(i - 50, i);
            }
            for seq in seqs {
                let w = &mut windows[Class::of(seq as u32, count) as usize];
                let inferred = w.infer_esn(seq as u32);
                assert_eq!(inferred, seq, "count {count}");
                assert!(w.accept(inferred), "count {count} seq {seq}");
                assert!(!w.accept(w.infer_esn(seq as u32)), "replayed {seq}");
            }
        }
    }

    #[test]
    fn classes_split_the_numbers_in_blocks() {
        let block = 1u32 << SPREAD_SHIFT;
        assert_eq!(Class::of(0, 2), 0);
        assert_eq!(Class::of(block - 1, 2), 0);
        assert_eq!(Class::of(block, 2), 1);
        assert_eq!(Class::of(3 * block, 3), 0);
        assert_eq!(Class::of(u32::MAX, 1), 0);
        assert!(Class::ALL.holds(12345));
        assert_eq!(Class::new(5, 2), Class::new(1, 2));
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
