//! Training units and length-bucketed batches, in an order fixed by (seed, epoch) so a resumed run
//! sees exactly the batches an uninterrupted one would.

use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};

/// A run of consecutive windows of one article: the unit a batch is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unit {
    pub article: usize,
    pub windows: (usize, usize),
    /// Longest window, special tokens included.
    pub max_len: usize,
}

impl Unit {
    pub fn window_count(&self) -> usize {
        self.windows.1 - self.windows.0
    }
}

/// Splits each article's windows into units of at most `max_windows` windows.
pub fn units(window_lens: &[Vec<usize>], max_windows: usize) -> Vec<Unit> {
    let mut out = Vec::new();
    for (article, lens) in window_lens.iter().enumerate() {
        for start in (0..lens.len()).step_by(max_windows.max(1)) {
            let end = (start + max_windows).min(lens.len());
            let max_len = lens[start..end].iter().copied().max().unwrap_or(2);
            out.push(Unit {
                article,
                windows: (start, end),
                max_len,
            });
        }
    }
    out
}

/// The batches of one epoch: units shuffled, sorted by length within pools of many batches (so a
/// batch holds windows of similar length and padding stays small), packed up to `batch_windows`
/// windows, then the batches shuffled.
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
        let mut current: Vec<Unit> = Vec::new();
        let mut windows = 0;
        for u in chunk.iter() {
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
    batches.shuffle(&mut rng);
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_every_unit_once_and_are_reproducible() {
        let lens: Vec<Vec<usize>> = (0..40).map(|i| vec![10 + i % 7 * 20; 1 + i % 3]).collect();
        let units = units(&lens, 2);
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
}
