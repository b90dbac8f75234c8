//! Named presets (`model.preset`): a set of `model:` / `train:` values that stand in for the
//! keys the file does not give itself (a key the file gives wins). `paddlerec` is PaddleRec's
//! `models/multitask/esmm` as shipped: sum pooling, the first 3 ids per field, embeddings
//! uniform in ±1, every id its own row, the MLP towers alone at [256, 64] (no field
//! interactions), one epoch over shuffled rows, no early stopping, no calibration.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    Paddlerec,
}

impl Preset {
    /// The preset's keys, as a pipeline file would give them.
    fn keys(self) -> &'static str {
        match self {
            Preset::Paddlerec => {
                "model: {pooling: sum, max_len: 3, init_scale: 1.0, min_sessions: 0, shrink_sessions: 0, interactions: none, \
                 ctr_fc_sizes: [256, 64], cvr_fc_sizes: [256, 64]}\n\
                 train: {epochs: 1, shuffle: rows, evals_per_epoch: 1, early_stopping_patience: 0, calibration: none, \
                 reset_embeddings: false, ensemble_epochs: false}"
            }
        }
    }

    /// `file` (a parsed pipeline file) with the preset's keys added where its `model:` /
    /// `train:` sections lack them.
    pub fn fill(self, mut file: Value) -> Result<Value> {
        let preset: Value = serde_yaml::from_str(self.keys()).context("preset keys")?;
        let Value::Mapping(top) = &mut file else { return Ok(file) };
        for (section, keys) in preset.as_mapping().into_iter().flatten() {
            let target = top.entry(section.clone()).or_insert_with(|| Value::Mapping(Mapping::new()));
            if let (Value::Mapping(target), Value::Mapping(keys)) = (target, keys) {
                for (k, v) in keys {
                    target.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use crate::batches::ShuffleUnit;
    use crate::config::PipelineConfig;
    use crate::model::Pooling;

    #[test]
    fn a_preset_fills_the_keys_the_file_does_not_give() {
        let c = PipelineConfig::parse("model:\n  preset: paddlerec\n  max_len: 5\ntrain:\n  epochs: 2\n").unwrap();
        assert_eq!((c.model.pooling, c.model.max_len, c.model.init_scale), (Pooling::Sum, 5, 1.0));
        assert_eq!((c.model.min_sessions, c.model.shrink_sessions), (0, 0.0));
        assert_eq!((c.train.epochs, c.train.shuffle, c.train.evals_per_epoch), (2, ShuffleUnit::Rows, 1));
        assert_eq!(c.train.early_stopping_patience, 0);
        assert_eq!(c.train.calibration, crate::config::CalibrationKind::None);
        let e = PipelineConfig::parse("model:\n  preset: tensorflow\n").unwrap_err().to_string();
        assert!(e.contains("preset") && e.contains("paddlerec"), "{e}");
    }
}
