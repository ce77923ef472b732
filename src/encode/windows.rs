//! Sub-tokens into windows. No article is ever truncated: a long one is cut into overlapping
//! windows, and each sub-token belongs to the one window where it is most central.

use serde::{Deserialize, Serialize};
use std::ops::Range;

/// How long articles are cut into overlapping windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowConfig {
    /// Sub-tokens per window, including `[CLS]` and `[SEP]`.
    pub max_tokens: usize,
    /// Sub-tokens shared by neighbouring windows.
    pub overlap: usize,
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            max_tokens: 256,
            overlap: 64,
        }
    }
}

impl WindowConfig {
    /// The default window, shrunk to fit an encoder with `max_positions` token positions (overlap
    /// a quarter of the content): the window of a model saved without newstag's section.
    pub fn within(max_positions: usize) -> Self {
        let default = WindowConfig::default();
        if max_positions >= default.max_tokens {
            return default;
        }
        WindowConfig {
            max_tokens: max_positions,
            overlap: max_positions.saturating_sub(2) / 4,
        }
    }

    pub fn validate(&self, max_positions: usize) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.max_tokens >= 8,
            "window of {} sub-tokens is too small (at least 8)",
            self.max_tokens
        );
        anyhow::ensure!(
            self.max_tokens <= max_positions,
            "window of {} sub-tokens exceeds the model's {} positions",
            self.max_tokens,
            max_positions
        );
        anyhow::ensure!(
            self.overlap * 2 <= self.max_tokens - 2,
            "window overlap {} must be at most half of the window's {} content tokens",
            self.overlap,
            self.max_tokens - 2
        );
        Ok(())
    }
}

/// A window: the sub-tokens `tokens` of the article, of which it owns `owned`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    pub tokens: Range<usize>,
    pub owned: Range<usize>,
}

impl Window {
    /// Length with `[CLS]` and `[SEP]`.
    pub fn len(&self) -> usize {
        self.tokens.len() + 2
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Cuts `n` sub-tokens into windows of at most `max_tokens - 2` content tokens overlapping by
/// `overlap`; the last window is aligned to the end so it is full. Ownership changes hands in the
/// middle of each overlap, which makes every token's owner the window where it is most central.
pub fn plan_windows(n: usize, cfg: WindowConfig) -> Vec<Window> {
    let content = cfg.max_tokens - 2;
    if n <= content {
        return vec![Window {
            tokens: 0..n,
            owned: 0..n,
        }];
    }
    let stride = content - cfg.overlap;
    let mut starts: Vec<usize> = (0..)
        .map(|i| i * stride)
        .take_while(|&s| s + content < n)
        .collect();
    starts.push(n - content);
    let mut windows = Vec::with_capacity(starts.len());
    let mut owned_from = 0;
    for (i, &s) in starts.iter().enumerate() {
        let end = s + content;
        let owned_to = match starts.get(i + 1) {
            Some(&next) => (next + end).div_ceil(2),
            None => n,
        };
        windows.push(Window {
            tokens: s..end,
            owned: owned_from..owned_to,
        });
        owned_from = owned_to;
    }
    windows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_window_shrinks_to_the_positions_an_encoder_has() {
        assert_eq!(WindowConfig::within(512), WindowConfig::default());
        let small = WindowConfig::within(64);
        assert_eq!((small.max_tokens, small.overlap), (64, 15));
        small.validate(64).unwrap();
        WindowConfig::within(8).validate(8).unwrap();
    }

    #[test]
    fn short_articles_get_one_window() {
        let w = plan_windows(
            10,
            WindowConfig {
                max_tokens: 16,
                overlap: 4,
            },
        );
        assert_eq!(
            w,
            [Window {
                tokens: 0..10,
                owned: 0..10
            }]
        );
        assert_eq!(plan_windows(0, WindowConfig::default()).len(), 1);
    }

    #[test]
    fn every_token_is_owned_once_by_its_most_central_window() {
        for n in [15, 27, 100, 1000] {
            let cfg = WindowConfig {
                max_tokens: 16,
                overlap: 6,
            };
            let windows = plan_windows(n, cfg);
            let mut owner = vec![usize::MAX; n];
            for (i, w) in windows.iter().enumerate() {
                assert!(w.tokens.len() == 14 && w.tokens.end <= n);
                assert!(w.tokens.start <= w.owned.start && w.owned.end <= w.tokens.end);
                for t in w.owned.clone() {
                    assert_eq!(owner[t], usize::MAX);
                    owner[t] = i;
                }
            }
            for (t, &o) in owner.iter().enumerate() {
                let dist = |w: &Window| (2 * t + 1).abs_diff(w.tokens.start + w.tokens.end);
                let best = windows
                    .iter()
                    .filter(|w| w.tokens.contains(&t))
                    .map(dist)
                    .min()
                    .unwrap();
                assert!(dist(&windows[o]) <= best + 1, "n={n} token {t}");
            }
        }
    }
}
