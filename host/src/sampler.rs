//! Drawing training batches from one or more named sets by a data mixer's weights.
//!
//! Each set is read in its own seeded epoch order (see [`data::epoch_order`]); each batch slot first
//! picks a set by the mixer's weights with a draw that is a pure function of (seed, step, slot), then
//! takes that set's next example. The whole sampling state is the per-set cursors, saved in every
//! checkpoint, so a resumed run draws exactly the batches an uninterrupted one would.

use serde::{Deserialize, Serialize};

use crate::data::{self, Dataset};

/// Where one set's reading stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetCursor {
    pub epoch: u64,
    /// Position in the epoch's order.
    pub cursor: usize,
}

pub struct Sampler<'a> {
    sets: &'a [Dataset],
    seed: u64,
    shuffle: bool,
    orders: Vec<Vec<usize>>,
    pub cursors: Vec<SetCursor>,
}

impl<'a> Sampler<'a> {
    /// A sampler at `cursors` (one per set), or at the start.
    pub fn new(sets: &'a [Dataset], seed: u64, shuffle: bool, cursors: Option<Vec<SetCursor>>) -> Self {
        let cursors = cursors.unwrap_or_else(|| vec![SetCursor::default(); sets.len()]);
        let orders = sets
            .iter()
            .zip(&cursors)
            .enumerate()
            .map(|(i, (set, c))| data::epoch_order(set.examples.len(), set_seed(seed, i), c.epoch, shuffle))
            .collect();
        Self { sets, seed, shuffle, orders, cursors }
    }

    /// The `n` examples of `step`'s batch as (set index, example index).
    pub fn draw(&mut self, step: u64, n: usize, weights: &[f64]) -> Vec<(usize, usize)> {
        (0..n)
            .map(|slot| {
                let set = choose(weights, self.seed, step, slot as u64);
                (set, self.next_of(set))
            })
            .collect()
    }

    fn next_of(&mut self, set: usize) -> usize {
        let size = self.sets[set].examples.len();
        let c = &mut self.cursors[set];
        if c.cursor == size {
            c.epoch += 1;
            c.cursor = 0;
            self.orders[set] = data::epoch_order(size, set_seed(self.seed, set), c.epoch, self.shuffle);
        }
        let example = self.orders[set][c.cursor];
        c.cursor += 1;
        example
    }
}

/// Set 0 keeps the run's seed, so a single-set run's order does not depend on mixing.
fn set_seed(seed: u64, set: usize) -> u64 {
    seed.wrapping_add((set as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Picks an index with probability proportional to `weights` (normalised), from a uniform draw that
/// depends only on (seed, step, slot).
pub fn choose(weights: &[f64], seed: u64, step: u64, slot: u64) -> usize {
    if weights.len() <= 1 {
        return 0;
    }
    let mut state = seed ^ step.wrapping_mul(0xA24B_AED4_963E_E407) ^ slot.wrapping_mul(0x9FB2_1C65_1E98_DF25);
    let u = (data::splitmix64(&mut state) >> 11) as f64 / (1u64 << 53) as f64;
    let total: f64 = weights.iter().sum();
    let mut acc = 0.0;
    for (i, w) in weights.iter().enumerate() {
        acc += w / total;
        if u < acc {
            return i;
        }
    }
    weights.iter().rposition(|&w| w > 0.0).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Example;

    fn set(name: &str, n: usize) -> Dataset {
        let examples = (0..n).map(|i| Example::with_prompt_len(vec![1, i as u32 + 2, 0], 1)).collect();
        Dataset { name: name.into(), examples, truncated: 0, dropped: 0 }
    }

    #[test]
    fn fixed_weights_are_drawn_within_three_percent_over_1000_samples() {
        let sets = [set("a", 30), set("b", 70)];
        let mut sampler = Sampler::new(&sets, 11, true, None);
        let mut counts = [0usize; 2];
        for step in 1..=125 {
            for (s, _) in sampler.draw(step, 8, &[0.8, 0.2]) {
                counts[s] += 1;
            }
        }
        let share = counts[0] as f64 / 1000.0;
        assert!((share - 0.8).abs() < 0.03, "share of set a: {share}");
    }

    #[test]
    fn each_set_is_read_through_before_repeating_and_resumes_exactly() {
        let sets = [set("a", 5), set("b", 3)];
        let mut sampler = Sampler::new(&sets, 3, true, None);
        let first: Vec<_> = (1..=4).flat_map(|step| sampler.draw(step, 4, &[0.5, 0.5])).collect();
        let a: Vec<usize> = first.iter().filter(|(s, _)| *s == 0).map(|(_, e)| *e).take(5).collect();
        let mut sorted = a.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), a.len().min(5), "set a repeats within an epoch: {a:?}");
        // Resuming from saved cursors continues identically.
        let saved = sampler.cursors.clone();
        let next: Vec<_> = (5..=6).flat_map(|step| sampler.draw(step, 4, &[0.5, 0.5])).collect();
        let mut resumed = Sampler::new(&sets, 3, true, Some(saved));
        let again: Vec<_> = (5..=6).flat_map(|step| resumed.draw(step, 4, &[0.5, 0.5])).collect();
        assert_eq!(next, again);
    }
}
