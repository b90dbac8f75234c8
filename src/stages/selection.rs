//! Model selection during training: which evaluation's model is the best so far (its score on
//! the valid split), and when to stop (early stopping after `patience` evaluations without a
//! better score). Kept in the trainer's state, so `--resume` continues the same count.

use serde::{Deserialize, Serialize};

/// Best evaluation so far and the evaluations since.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EarlyStopping {
    pub best_score: Option<f64>,
    /// Training step and epoch (1-based) of the best evaluation.
    pub best_step: Option<u64>,
    pub best_epoch: Option<u32>,
    pub since_best: usize,
    pub stopped: bool,
}

impl EarlyStopping {
    /// Records one evaluation; true when it is the best so far (its model is to be kept).
    /// Without a score (an empty valid split) every evaluation counts as the best.
    /// `patience` 0 never stops.
    pub fn observe(&mut self, score: Option<f64>, step: u64, epoch: u32, patience: usize) -> bool {
        let best = match (score, self.best_score) {
            (None, _) | (Some(_), None) => true,
            (Some(s), Some(b)) => s > b,
        };
        if best {
            (self.best_score, self.best_step, self.best_epoch, self.since_best) = (score, Some(step), Some(epoch), 0);
        } else {
            self.since_best += 1;
            self.stopped = patience > 0 && self.since_best >= patience;
        }
        best
    }
}

/// Whether training step `step` (1-based, counted over all epochs) ends with a validation:
/// every `every` steps (0 = only at the end of each epoch, which the trainer adds itself).
pub fn validates_at(step: u64, every: usize) -> bool {
    every > 0 && step % every as u64 == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TrainConfig;

    #[test]
    fn the_best_is_kept_and_patience_counts_evaluations() {
        let mut s = EarlyStopping::default();
        assert!(s.observe(Some(0.70), 10, 1, 2));
        assert!(!s.observe(Some(0.69), 20, 1, 2));
        assert!(!s.stopped && s.since_best == 1);
        // a tie is not better
        assert!(!s.observe(Some(0.70), 30, 2, 2));
        assert!(s.stopped);
        assert_eq!((s.best_score, s.best_step, s.best_epoch), (Some(0.70), Some(10), Some(1)));
        // a new best resets the count
        let mut s = EarlyStopping::default();
        for (i, v) in [0.6, 0.5, 0.7, 0.65].into_iter().enumerate() {
            s.observe(Some(v), i as u64, 1, 2);
        }
        assert_eq!((s.best_step, s.since_best, s.stopped), (Some(2), 1, false));
    }

    #[test]
    fn no_score_is_always_best_and_zero_patience_never_stops() {
        let mut s = EarlyStopping::default();
        assert!(s.observe(None, 1, 1, 1) && s.observe(None, 2, 1, 1));
        assert_eq!(s.best_step, Some(2));
        let mut s = EarlyStopping::default();
        s.observe(Some(0.9), 1, 1, 0);
        for step in 2..50 {
            assert!(!s.observe(Some(0.1), step, 1, 0));
        }
        assert!(!s.stopped);
    }

    #[test]
    fn validation_steps() {
        assert!(!validates_at(5, 0));
        assert!(validates_at(500, 250) && !validates_at(501, 250));
        assert!((1..=10).all(|s| validates_at(s, 1)));
        // evals_per_epoch spaces them over an epoch's steps; eval_every_steps overrides it
        let t = TrainConfig { batch_size: 100, ..Default::default() };
        assert_eq!(t.eval_interval(10_000), 0);
        assert_eq!(TrainConfig { evals_per_epoch: 4, ..t.clone() }.eval_interval(10_000), 25);
        assert_eq!(TrainConfig { evals_per_epoch: 3, ..t.clone() }.eval_interval(10_050), 34);
        assert_eq!(TrainConfig { evals_per_epoch: 4, eval_every_steps: 7, ..t.clone() }.eval_interval(10_000), 7);
        assert_eq!(TrainConfig { evals_per_epoch: 50, ..t }.eval_interval(100), 1);
    }
}
