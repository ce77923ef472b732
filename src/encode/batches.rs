//! Units into length-bucketed batches: units of similar length go together, so padding stays
//! small. Inference sorts all its units by length; training sorts within shuffled pools, in an
//! order fixed by (seed, epoch) so a resumed run sees exactly the batches an uninterrupted one
//! would.

use super::units::Unit;
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};

/// Inference's batches: the units sorted by length (ties in their given order), cut into runs of
/// at most `batch_windows` windows and `max_slots` padded slots (a unit alone may exceed it)
/// where the padded slots plus `overhead_slots` per batch (the fixed cost of a forward pass, in
/// slots) are least. Windows of similar lengths fill their batches; a few short articles among
/// long ones (a server's batch of whatever requests came in) get batches of their own instead of
/// padding.
pub fn inference_batches(
    units: &[Unit],
    batch_windows: usize,
    max_slots: usize,
    overhead_slots: usize,
) -> Vec<Vec<Unit>> {
    let mut order = units.to_vec();
    order.sort_by_key(|u| u.max_len);
    let cap = batch_windows.max(1);
    // best[i]: the least cost of batching order[..i]; cut[i]: where its last batch starts.
    let mut best = vec![0usize; order.len() + 1];
    let mut cut = vec![0usize; order.len() + 1];
    for i in 1..=order.len() {
        let len = order[i - 1].max_len;
        // The last unit alone always fits (a unit larger than a batch goes alone).
        let mut windows = order[i - 1].window_count();
        let (mut least, mut start) = (best[i - 1] + overhead_slots + windows * len, i - 1);
        for j in (0..i - 1).rev() {
            windows += order[j].window_count();
            if windows > cap || windows * len > max_slots {
                break;
            }
            let cost = best[j] + overhead_slots + windows * len;
            // Ties go to the fuller batch.
            if cost <= least {
                (least, start) = (cost, j);
            }
        }
        best[i] = least;
        cut[i] = start;
    }
    let mut batches = Vec::new();
    let mut end = order.len();
    while end > 0 {
        batches.push(order[cut[end]..end].to_vec());
        end = cut[end];
    }
    batches.reverse();
    batches
}

/// The batches of one training epoch: units shuffled, sorted by length within pools of many
/// batches, packed up to `batch_windows` windows, then the batches shuffled.
pub fn epoch_batches(
    units: &[Unit],
    batch_windows: usize,
    seed: u64,
    epoch: usize,
) -> Vec<Vec<Unit>> {
    let mut rng =
        StdRng::seed_from_u64(seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut order: Vec<Unit> = units.to_vec();
    order.shuffle(&mut rng);
    let pool = batch_windows.max(1) * 50;
    let mut batches = Vec::new();
    for chunk in order.chunks_mut(pool) {
        chunk.sort_by_key(|u| u.max_len);
        pack(chunk, batch_windows, &mut batches);
    }
    batches.shuffle(&mut rng);
    batches
}

/// Packs `units`, in order, into batches of at most `batch_windows` windows (a unit larger than
/// that alone), appended to `batches`.
fn pack(units: &[Unit], batch_windows: usize, batches: &mut Vec<Vec<Unit>>) {
    let mut current: Vec<Unit> = Vec::new();
    let mut windows = 0;
    for u in units {
        if !current.is_empty() && windows + u.window_count() > batch_windows {
            batches.push(std::mem::take(&mut current));
            windows = 0;
        }
        windows += u.window_count();
        current.push(*u);
    }
    if !current.is_empty() {
        batches.push(current);
    }
}

#[cfg(test)]
mod tests {
    use super::super::subtokens::EncodedArticle;
    use super::super::units::units;
    use super::super::windows::Window;
    use super::*;

    /// Articles with `windows[i]` windows of `len[i]` sub-tokens (special tokens included) each.
    fn articles(windows: &[Vec<usize>]) -> Vec<EncodedArticle> {
        windows
            .iter()
            .map(|lens| EncodedArticle {
                ids: Vec::new(),
                first_token: Vec::new(),
                joined: Vec::new(),
                windows: lens
                    .iter()
                    .map(|&len| Window {
                        tokens: 0..len - 2,
                        owned: 0..0,
                    })
                    .collect(),
                passages: Vec::new(),
            })
            .collect()
    }

    #[test]
    fn batches_cover_every_unit_once_and_are_reproducible() {
        let lens: Vec<Vec<usize>> = (0..40).map(|i| vec![10 + i % 7 * 20; 1 + i % 3]).collect();
        let units = units(&articles(&lens), 2);
        let a = epoch_batches(&units, 4, 42, 0);
        assert_eq!(a, epoch_batches(&units, 4, 42, 0));
        assert_ne!(a, epoch_batches(&units, 4, 42, 1));
        let mut seen: Vec<Unit> = a.iter().flatten().copied().collect();
        assert_eq!(seen.len(), units.len());
        seen.sort_by_key(|u| (u.article, u.windows));
        assert_eq!(seen, units);
        assert!(a
            .iter()
            .all(|b| b.iter().map(Unit::window_count).sum::<usize>() <= 4));
    }

    const OVERHEAD: usize = 64;

    /// Padded slots plus the fixed cost of each batch.
    fn cost(batches: &[Vec<Unit>]) -> usize {
        batches
            .iter()
            .map(|b| {
                let windows: usize = b.iter().map(Unit::window_count).sum();
                let len = b.iter().map(|u| u.max_len).max().unwrap_or(0);
                OVERHEAD + windows * len
            })
            .sum()
    }

    #[test]
    fn inference_batches_are_sorted_by_length_and_within_the_cap() {
        let lens: Vec<Vec<usize>> = (0..30).map(|i| vec![10 + i % 5 * 20; 1 + i % 4]).collect();
        let units = units(&articles(&lens), 3);
        let batches = inference_batches(&units, 3, usize::MAX, OVERHEAD);
        let flat: Vec<Unit> = batches.iter().flatten().copied().collect();
        assert_eq!(flat.len(), units.len());
        assert!(flat.windows(2).all(|p| p[0].max_len <= p[1].max_len));
        assert!(batches
            .iter()
            .all(|b| b.iter().map(Unit::window_count).sum::<usize>() <= 3));
    }

    #[test]
    fn inference_batches_keep_within_the_slot_cap() {
        // Single-window articles of 10 to 100 tokens: at most 200 padded slots a batch, so the
        // long ones go two at a time though 8 windows would fit.
        let lens: Vec<Vec<usize>> = (0..40).map(|i| vec![10 + i % 10 * 10]).collect();
        let units = units(&articles(&lens), 1);
        let batches = inference_batches(&units, 8, 200, OVERHEAD);
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), units.len());
        for b in &batches {
            let len = b.iter().map(|u| u.max_len).max().unwrap();
            assert!(b.len() * len <= 200, "{} windows of {len}", b.len());
        }
        assert!(
            batches.iter().any(|b| b.len() == 8),
            "short ones still fill a batch"
        );
    }

    #[test]
    fn a_unit_larger_than_a_batch_goes_alone() {
        // Units of up to 5 windows against batches of 3: the 5-window ones alone, the rest
        // within the cap.
        let lens: Vec<Vec<usize>> = (0..12).map(|i| vec![20 + i; 1 + i % 5]).collect();
        let units = units(&articles(&lens), 5);
        let batches = inference_batches(&units, 3, usize::MAX, OVERHEAD);
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), units.len());
        for b in &batches {
            let windows: usize = b.iter().map(Unit::window_count).sum();
            assert!(windows <= 3 || b.len() == 1, "{b:?}");
        }
        assert!(batches.iter().any(|b| b[0].window_count() == 5));
    }

    #[test]
    fn windows_of_one_length_fill_their_batches() {
        let units = units(&articles(&vec![vec![40]; 70]), 1);
        let mut sizes: Vec<usize> = inference_batches(&units, 32, usize::MAX, OVERHEAD)
            .iter()
            .map(Vec::len)
            .collect();
        sizes.sort_unstable();
        assert_eq!(sizes, [6, 32, 32]);
    }

    #[test]
    fn short_windows_among_long_ones_get_their_own_batch() {
        // 20 windows of 12 slots and 12 of 120: one batch would pad the short ones to 120.
        let lens: Vec<Vec<usize>> = (0..32)
            .map(|i| vec![if i % 8 < 5 { 12 } else { 120 }])
            .collect();
        let split = units(&articles(&lens), 1);
        let sizes: Vec<usize> = inference_batches(&split, 32, usize::MAX, OVERHEAD)
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, [20, 12]);
        // Never worse than filling each batch in order, on mixed lengths of every kind.
        for seed in 0..20usize {
            let lens: Vec<Vec<usize>> = (0..90)
                .map(|i| vec![4 + (i * 37 + seed * 11) % 97; 1 + (i + seed) % 3])
                .collect();
            let units = units(&articles(&lens), 2);
            let mut sorted = units.clone();
            sorted.sort_by_key(|u| u.max_len);
            let mut greedy = Vec::new();
            pack(&sorted, 8, &mut greedy);
            assert!(cost(&inference_batches(&units, 8, usize::MAX, OVERHEAD)) <= cost(&greedy));
        }
    }
}
