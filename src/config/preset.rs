//! Named presets (`model.preset`): a set of `model:` / `train:` values that stand in for the
//! keys the file does not give itself (a key the file gives wins). `paddlerec` is PaddleRec's
//! `models/multitask/esmm` as shipped: sum pooling, the first 3 ids per field, embeddings
//! uniform in ±1, every id its own row, one epoch over shuffled rows, no early stopping.

use serde::{Deserialize, Serialize};

use super::{ModelConfig, TrainConfig};
use crate::batches::ShuffleUnit;
use crate::model::Pooling;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    Paddlerec,
}

impl Preset {
    /// Sets the preset's values on `model` and `train` for every key that `given` (the parsed
    /// file) does not hold under `model:` / `train:`.
    pub fn apply(self, given: &serde_yaml::Value, model: &mut ModelConfig, train: &mut TrainConfig) {
        let has = |section: &str, key: &str| given.get(section).and_then(|s| s.get(key)).is_some();
        let m = |key: &str| !has("model", key);
        let t = |key: &str| !has("train", key);
        match self {
            Preset::Paddlerec => {
                if m("pooling") {
                    model.pooling = Pooling::Sum;
                }
                if m("max_len") {
                    model.max_len = 3;
                }
                if m("init_scale") {
                    model.init_scale = 1.0;
                }
                if m("min_sessions") {
                    model.min_sessions = 0;
                }
                if m("shrink_sessions") {
                    model.shrink_sessions = 0.0;
                }
                if t("epochs") {
                    train.epochs = 1;
                }
                if t("shuffle") {
                    train.shuffle = ShuffleUnit::Rows;
                }
                if t("evals_per_epoch") {
                    train.evals_per_epoch = 1;
                }
                if t("early_stopping_patience") {
                    train.early_stopping_patience = 0;
                }
            }
        }
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
        let e = PipelineConfig::parse("model:\n  preset: tensorflow\n").unwrap_err().to_string();
        assert!(e.contains("preset") && e.contains("paddlerec"), "{e}");
    }
}
