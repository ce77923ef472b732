//! Units into length-bucketed batches: units of similar length go together, so padding stays
//! small. Inference sorts all its units by length; training sorts within shuffled pools, in an
//! order fixed by (seed, epoch) so a resumed run sees exactly the batches an uninterrupted one
//! would.

use super::units::Unit;
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};

/// Inference's batches: the units sorted by length (ties in their given order), packed up to
/// `batch_windows` windows.
pub fn inference_batches(units: &[Unit], batch_windows: usize) -> Vec<Vec<Unit>> {
    let mut order = units.to_vec();
    order.sort_by_key(|u| u.max_len);
    let mut batches = Vec::new();
    pack(&order, batch_windows, &mut batches);
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

    #[test]
    fn inference_batches_are_sorted_by_length_and_full() {
        let lens: Vec<Vec<usize>> = (0..30).map(|i| vec![10 + i % 5 * 20; 1 + i % 4]).collect();
        let units = units(&articles(&lens), 3);
        let batches = inference_batches(&units, 3);
        let flat: Vec<Unit> = batches.iter().flatten().copied().collect();
        assert_eq!(flat.len(), units.len());
        assert!(flat.windows(2).all(|p| p[0].max_len <= p[1].max_len));
        for (b, next) in batches.iter().zip(batches.iter().skip(1)) {
            let count = |b: &[Unit]| b.iter().map(Unit::window_count).sum::<usize>();
            assert!(count(b) <= 3);
            // A batch closes only when the next unit would not fit.
            assert!(count(b) + next[0].window_count() > 3);
        }
    }
}
