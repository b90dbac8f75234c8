//! Model selection during training: which evaluation's model is the best so far (its score on
//! the valid split), and when to stop (early stopping after `patience` evaluations without a
//! better score). Kept in the trainer's state, so `--resume` continues the same count.

use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;

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

/// Whether the training step that took an epoch of `rows` rows from `before` to `after` rows
/// (global step `step`, 1-based) ends with a validation: every `train.eval_every_steps` steps,
/// else each time the epoch passes another `1/evals_per_epoch` of its rows. The epoch's end is
/// not due here (the trainer validates it itself).
pub fn validation_due(train: &TrainConfig, step: u64, (before, after): (u64, u64), rows: u64) -> bool {
    if after >= rows {
        return false;
    }
    match train.eval_every_steps {
        0 => {
            let k = train.evals_per_epoch as u64;
            k > 1 && after * k / rows > before * k / rows
        }
        every => step % every as u64 == 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let t = TrainConfig { evals_per_epoch: 1, ..Default::default() };
        let due = |t: &TrainConfig, step, rows: (u64, u64)| validation_due(t, step, rows, 1000);
        // one evaluation an epoch: only the end, which the trainer adds
        assert!((1..10).all(|s| !due(&t, s, (s * 100 - 100, s * 100))));
        // four an epoch: when a quarter of the rows is passed, whatever the batch sizes
        let four = TrainConfig { evals_per_epoch: 4, ..t.clone() };
        let steps: Vec<u64> = (1..=13).filter(|&s| due(&four, s, ((s - 1) * 77, (s * 77).min(1000)))).collect();
        assert_eq!(steps, [4, 7, 10]);
        // every N steps, counted over epochs, never at an epoch's end
        let every = TrainConfig { eval_every_steps: 250, evals_per_epoch: 4, ..t };
        assert!(due(&every, 500, (10, 20)) && !due(&every, 501, (20, 30)) && !due(&every, 750, (900, 1000)));
    }
}
