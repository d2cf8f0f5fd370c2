//! The anti-replay window of RFC 6479: a ring of 64-bit blocks, so sliding the window
//! clears whole blocks instead of shifting bits, and extended sequence numbers
//! reconstructed from their low 32 bits (RFC 4303 appendix A2).
//!
//! An SA spread over several workers has one window per worker, each over its own
//! [`Class`] of sequence numbers: every number belongs to exactly one class, so each
//! is checked by one window alone and replay detection stays exact without anything
//! shared. Each window counts the packets of its own class (its blocks laid end to
//! end), so its size says how many of them it remembers, whatever the number of
//! workers, and ESN inference from its own class's highest number works as RFC 4303
//! A2 has it: the class's packets are at most `count` blocks apart, far less than
//! 2^31.

const BLOCK_BITS: u64 = 64;

/// Spread SAs go to workers in blocks of 2^SPREAD_SHIFT (1024) consecutive sequence
/// numbers: a sender's GSO run (at most 64 datagrams) mostly reaches one worker whole,
/// and a TCP flow's segments reach each worker in long runs that its TUN writes
/// coalesce, with few places where the two workers' runs cross. Measured with
/// scripts/bench-tunnel.sh (one TCP stream, spread SA): blocks of 8, 64 and 1024 gave
/// 0.95, 1.35 and 2.95 Gbit/s back to back.
pub const SPREAD_SHIFT: u32 = 10;

/// Packets of its own class that a window of a spread SA remembers beyond its size.
/// A block's first datagrams can end a GRO train led by the block before, whose
/// worker opens its own and relays them: they come as late as that worker is behind,
/// which on a busy host is a preempted thread's time slice or more. With the
/// configured 1024 alone, a real-time hog taking each CPU for 25 ms at a time made
/// tests/e2e's case `spread` refuse hundreds of packets as replays in 4 of 8 runs;
/// with this slack, in none of 8.
const SPREAD_SLACK: u64 = 8 << SPREAD_SHIFT;

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

    /// The place of `seq`, one of this class's numbers, among them in order: the
    /// class's blocks laid end to end, those of each 2^32 (which has at most
    /// 2^22 / `count` rounded up of them) after the one before.
    fn own_number(&self, seq: u64) -> u64 {
        // No division on the path of every SA that is not spread.
        if self.count == 1 {
            return seq;
        }
        let count = u64::from(self.count);
        let low = seq as u32;
        let blocks_per_wrap = (1u64 << (32 - SPREAD_SHIFT)).div_ceil(count);
        let block = (seq >> 32) * blocks_per_wrap + u64::from(low >> SPREAD_SHIFT) / count;
        (block << SPREAD_SHIFT) | u64::from(low & ((1 << SPREAD_SHIFT) - 1))
    }

    /// How far apart, in the SA's numbers, `n` consecutive numbers of the class can
    /// be at most.
    fn span(&self, n: u64) -> u64 {
        if self.count == 1 {
            n
        } else {
            // A block more at each end: the class's blocks are one further apart
            // across 2^32 when `count` does not divide 2^22.
            (n.div_ceil(1 << SPREAD_SHIFT) + 2) * (u64::from(self.count) << SPREAD_SHIFT)
        }
    }
}

/// Which sequence numbers of an inbound SA (or of its [`Class`]) were already accepted.
#[derive(Debug, Clone)]
pub struct ReplayWindow {
    /// The sequence numbers this window checks; it refuses all others.
    class: Class,
    /// Highest sequence number accepted so far (0: none yet).
    top: u64,
    /// `top` in the class's own numbering.
    top_own: u64,
    /// Window size in packets of the class: a multiple of 64.
    size: u64,
    /// How far behind `top`, in the SA's numbers, the window's oldest packet can be.
    span: u64,
    /// One more block than the window needs, so the block being filled never overlaps the oldest.
    blocks: Vec<u64>,
}

impl ReplayWindow {
    /// A window remembering at least `size` packets (rounded up to a multiple of 64, at least 64).
    pub fn new(size: u64) -> Self {
        Self::of_class(size, Class::ALL)
    }

    /// A window as [`ReplayWindow::new`] over the sequence numbers of `class` only,
    /// with `SPREAD_SLACK` more of them if it is one of several.
    pub fn of_class(size: u64, class: Class) -> Self {
        let size = size.max(BLOCK_BITS).div_ceil(BLOCK_BITS) * BLOCK_BITS;
        let size = if class.count > 1 {
            size + SPREAD_SLACK
        } else {
            size
        };
        Self {
            class,
            top: 0,
            top_own: 0,
            size,
            span: class.span(size),
            blocks: vec![0; (size / BLOCK_BITS + 1) as usize],
        }
    }

    /// The window size in packets of its class.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The full 64-bit sequence number of a packet carrying `low` (RFC 4303 A2.1): the
    /// candidate closest to the window, so packets around a 2^32 wrap land right.
    pub fn infer_esn(&self, low: u32) -> u64 {
        let top_low = self.top as u32;
        let top_high = self.top >> 32;
        let bottom = self.top.saturating_sub(self.span - 1) as u32;
        let high = if top_low >= self.span as u32 - 1 {
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

    /// The ring's block and bit of `own`, a number in the class's own numbering.
    fn bit(&self, own: u64) -> (usize, u64) {
        let block = (own / BLOCK_BITS) as usize % self.blocks.len();
        (block, 1 << (own % BLOCK_BITS))
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
        let own = self.class.own_number(seq);
        if own + self.size <= self.top_own {
            return false;
        }
        let (block, bit) = self.bit(own);
        self.blocks[block] & bit == 0
    }

    /// Records `seq` once its packet authenticated; false if it was a replay after all.
    pub fn accept(&mut self, seq: u64) -> bool {
        if !self.check(seq) {
            return false;
        }
        let own = self.class.own_number(seq);
        if seq > self.top {
            let old_block = self.top_own / BLOCK_BITS;
            let new_block = own / BLOCK_BITS;
            let stale = (new_block - old_block).min(self.blocks.len() as u64);
            for i in 1..=stale {
                let b = ((old_block + i) % self.blocks.len() as u64) as usize;
                self.blocks[b] = 0;
            }
            self.top = seq;
            self.top_own = own;
        }
        let (block, bit) = self.bit(own);
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
                let own = |seq| Class::new(class as u32, count).own_number(seq);
                let fresh = !seen.contains(&seq)
                    && (seq > tops[class] || own(seq) + parts[class].size() > own(tops[class]));
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
        assert_eq!(w.size(), 128 + SPREAD_SLACK);
        assert!(!w.check(1), "block 0 is class 0's");
        assert!(w.accept(block));
        assert!(w.accept(2 * block - 1));
        assert!(!w.check(2 * block), "block 2 is class 0's again");
        // Its edge is its own top less its size, counted in its own numbers: blocks
        // 1, 3, 5, ... laid end to end.
        let top = 21 * block + 200;
        assert!(w.accept(top));
        assert!(!w.accept(top));
        let own_top = 10 * block + 200;
        let edge = own_top - w.size();
        let seq_of = |own: u64| (own / block * 2 + 1) * block + own % block;
        assert!(!w.check(seq_of(edge)), "behind the window");
        assert!(w.accept(seq_of(edge + 1)), "its oldest number");
        assert!(w.accept(top - 50), "late, within the window");
        assert!(!w.check(block + 10), "an older block of class 1: behind");
    }

    #[test]
    fn a_relayed_block_head_is_taken_after_its_class_moved_blocks_on() {
        // A GRO train led by block 0's last datagrams reaches class 0's worker, which
        // relays block 1's first ones to class 1's; by then that worker opened the
        // rest of block 1 and blocks 3 and 5 straight from its socket.
        let block = 1u64 << SPREAD_SHIFT;
        let mut w = ReplayWindow::of_class(1024, Class::new(1, 2));
        for seq in (block + 40..2 * block)
            .chain(3 * block..4 * block)
            .chain(5 * block..5 * block + 9)
        {
            assert!(w.accept(seq));
        }
        for seq in block..block + 40 {
            assert!(w.accept(seq), "relayed {seq}");
            assert!(!w.accept(seq), "replayed {seq}");
        }
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
    fn own_numbers_keep_order_across_the_wrap() {
        let block = 1u64 << SPREAD_SHIFT;
        assert_eq!(Class::ALL.own_number((7 << 32) + 5), (7 << 32) + 5);
        for count in 2u32..=5 {
            for index in 0..count {
                let class = Class::new(index, count);
                let around = (1u64 << 32) - 3 * u64::from(count) * block;
                let own: Vec<u64> = (around..around + 6 * u64::from(count) * block)
                    .filter(|&seq| class.holds(seq))
                    .map(|seq| class.own_number(seq))
                    .collect();
                assert!(
                    own.windows(2).all(|p| p[0] < p[1]),
                    "count {count} class {index}"
                );
                // No more than a block lost to the wrap, so spans hold.
                assert!(own[own.len() - 1] - own[0] < own.len() as u64 + block);
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
