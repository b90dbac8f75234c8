//! Model and training configuration (`model:`, `train:`); PaddleRec's aliases of these keys
//! are resolved in [`super::paddle`].

use std::collections::BTreeMap;

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};

use super::preset::Preset;
use crate::batches::ShuffleUnit;
use crate::error::UsageResult;
use crate::model::{
    Backend, DenseAdam, Interactions, LossWeights, Mmoe, Model, ModelKind, Pooling, SparseOptimizer, TowerSpec,
    DEFAULT_EMB_DIM,
};
use crate::schema::{field_index, FIELDS};

/// Sparse optimizer of the embedding table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SparseKind {
    Adam,
    Adagrad,
}

/// `model:` — the network and its optimizers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// A named set of defaults for the keys the file does not give (`paddlerec`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preset: Option<Preset>,
    /// `esmm`, `naive_cvr`, `esmm_ns`, `escm2_ips`, `escm2_dr`, `dcmt` or `aitm`.
    pub kind: ModelKind,
    /// Tower backend: `gemm` (default, any hidden sizes) or `dfdx` (the reference, compiled for [256, 64]).
    pub backend: Backend,
    /// Embedding dimension, any >= 1 (PaddleRec's 12 by default; `backend: dfdx` is compiled
    /// for 12); the towers' input is 23 × this wide.
    pub embedding_dim: usize,
    /// Hidden sizes of the CTR and the CVR tower; absent: the backend's (gemm `[128, 64]`, dfdx
    /// `[256, 64]`, [`Backend::default_hidden`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ctr_fc_sizes: Option<Vec<usize>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cvr_fc_sizes: Option<Vec<usize>>,
    /// `field_weighted`: every tower's logit adds the dot products of every two fields' pooled
    /// embeddings, each pair weighted by the tower (FwFM; gemm only); `none` (default): the MLP
    /// alone, as PaddleRec's.
    pub interactions: Interactions,
    /// `towers` (default): the CTR and the CVR tower read the pooled embeddings, as ESMM's;
    /// `mmoe`: a multi-gate mixture of experts reads them and every task's tower (shaped by
    /// `mmoe:`, `*_fc_sizes` unused) reads its own gate's mixture, as PaddleRec's escm2 (gemm only).
    #[serde(skip_serializing_if = "Backbone::is_towers")]
    pub backbone: Backbone,
    /// The mixture under `backbone: mmoe`: `experts` (8), `expert_size` (16), `tower_sizes` ([8]).
    #[serde(skip_serializing_if = "is_default_mmoe")]
    pub mmoe: Mmoe,
    /// `weighted` (raw values weight the history and combination fields), `mean` (weighted, then
    /// divided by the field's id count) or `sum` (PaddleRec: values ignored).
    pub pooling: Pooling,
    /// Ids kept per field, first ones (0 = all; PaddleRec parity: 3).
    pub max_len: usize,
    /// Per-field override of `max_len`, e.g. `{"210": 5}`.
    pub max_len_per_field: BTreeMap<String, usize>,
    pub sparse_optimizer: SparseKind,
    /// Adam learning rate of the towers (and of the embeddings unless set below).
    pub learning_rate: f32,
    pub embedding_learning_rate: Option<f32>,
    /// Embeddings start uniform in [-init_scale, init_scale].
    pub init_scale: f32,
    /// Id admission: every field gets a shared row that its ids add to their own; ids seen in
    /// fewer training sessions than this read only the shared row
    /// (0 = off: every id its own row, PaddleRec parity).
    pub min_sessions: u32,
    /// Shrinkage toward the field's shared row (needs `min_sessions >= 1`; 0 = off): an
    /// admitted id seen in `n` training sessions weighs its own row by `n / (n + shrink_sessions)`.
    pub shrink_sessions: f32,
    /// Start of each tower's output bias: `zero` (PaddleRec) or `base_rate` (the logits of the
    /// training split's click rate and buys per click, so the towers start at the right level
    /// instead of learning a 2 % conversion rate from 50 % at Adam's step size).
    #[serde(skip_serializing_if = "OutputBias::is_zero")]
    pub output_bias: OutputBias,
    /// Weight of the second task's loss (CTCVR; naive_cvr: clicked-row CVR), PaddleRec's
    /// `global_w`.
    pub global_w: f64,
    /// Weight of the ESCM² kinds' counterfactual CVR loss, PaddleRec's `counterfactual_w`.
    pub counterfactual_w: f64,
    /// ESCM² kinds and DCMT: the largest inverse propensity 1/pCTR a clicked row is weighted by
    /// (DCMT: 1/(1 − pCTR) an unclicked row).
    pub max_inverse_propensity: f64,
    /// DCMT: weight of the L1 constraint pCVR + counterfactual pCVR = 1.
    pub constraint_w: f64,
    /// AITM: weight of the calibrator max(pCTCVR − pCTR, 0) (AITM's 0.6; left out of the config
    /// hash at that value).
    #[serde(skip_serializing_if = "is_default_calibrator_w")]
    pub calibrator_w: f64,
    pub seed: u64,
}

/// `model.backbone`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backbone {
    #[default]
    Towers,
    Mmoe,
}

impl Backbone {
    pub fn is_towers(&self) -> bool {
        *self == Backbone::Towers
    }
}

fn is_default_calibrator_w(w: &f64) -> bool {
    *w == LossWeights::default().calibrator_w
}

fn is_default_mmoe(m: &Mmoe) -> bool {
    *m == Mmoe::default()
}

/// `model.output_bias`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputBias {
    #[default]
    Zero,
    BaseRate,
}

impl OutputBias {
    pub fn is_zero(&self) -> bool {
        *self == OutputBias::Zero
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            preset: None,
            kind: ModelKind::Esmm,
            backend: Backend::Gemm,
            embedding_dim: DEFAULT_EMB_DIM,
            ctr_fc_sizes: None,
            cvr_fc_sizes: None,
            interactions: Interactions::None,
            backbone: Backbone::Towers,
            mmoe: Mmoe::default(),
            pooling: Pooling::Mean,
            max_len: 0,
            max_len_per_field: BTreeMap::new(),
            sparse_optimizer: SparseKind::Adam,
            learning_rate: 0.001,
            embedding_learning_rate: None,
            init_scale: 0.05,
            min_sessions: 1,
            shrink_sessions: 20.0,
            output_bias: OutputBias::Zero,
            global_w: LossWeights::default().global_w,
            counterfactual_w: LossWeights::default().counterfactual_w,
            max_inverse_propensity: LossWeights::default().max_inverse_propensity,
            constraint_w: LossWeights::default().constraint_w,
            calibrator_w: LossWeights::default().calibrator_w,
            seed: 1,
        }
    }
}

impl ModelConfig {
    /// Checks the values; an error is a configuration error (exit status 2).
    pub fn validate(&self) -> Result<()> {
        self.check().usage()
    }

    fn check(&self) -> Result<()> {
        self.towers().validate(self.embedding_dim)?;
        ensure!(
            self.backbone.is_towers() || Model::table_count(self.kind) == 1,
            "model.backbone: mmoe shares its experts between the tasks: model.kind {:?} keeps a table per tower (use esmm, escm2_ips, escm2_dr, dcmt or aitm)",
            self.kind
        );
        ensure!(self.learning_rate > 0.0 && self.learning_rate.is_finite(), "model.learning_rate must be > 0");
        if let Some(lr) = self.embedding_learning_rate {
            ensure!(lr > 0.0 && lr.is_finite(), "model.embedding_learning_rate must be > 0");
        }
        ensure!(self.init_scale >= 0.0 && self.init_scale.is_finite(), "model.init_scale must be >= 0");
        ensure!(self.shrink_sessions >= 0.0 && self.shrink_sessions.is_finite(), "model.shrink_sessions must be >= 0");
        ensure!(
            self.shrink_sessions == 0.0 || self.min_sessions >= 1,
            "model.shrink_sessions needs id admission (model.min_sessions >= 1)"
        );
        let weights = [
            ("global_w", self.global_w),
            ("counterfactual_w", self.counterfactual_w),
            ("constraint_w", self.constraint_w),
            ("calibrator_w", self.calibrator_w),
        ];
        for (key, w) in weights {
            ensure!(w >= 0.0 && w.is_finite(), "model.{key} must be >= 0, got {w}");
        }
        ensure!(
            self.max_inverse_propensity >= 1.0 && self.max_inverse_propensity.is_finite(),
            "model.max_inverse_propensity must be >= 1 (a weight 1/pCTR), got {}",
            self.max_inverse_propensity
        );
        for (f, &n) in &self.max_len_per_field {
            ensure!(field_index(f.as_bytes()).is_some(), "model.max_len_per_field: unknown field `{f}`");
            ensure!(n > 0, "model.max_len_per_field.{f} must be >= 1");
        }
        Ok(())
    }

    /// Per-field id limits, indexed like [`FIELDS`].
    pub fn max_len_vec(&self) -> Vec<usize> {
        let global = if self.max_len == 0 { usize::MAX } else { self.max_len };
        FIELDS.iter().map(|f| self.max_len_per_field.get(f.name).copied().unwrap_or(global)).collect()
    }

    pub fn sparse(&self) -> SparseOptimizer {
        let lr = self.embedding_learning_rate.unwrap_or(self.learning_rate);
        match self.sparse_optimizer {
            SparseKind::Adam => SparseOptimizer::Adam { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8 },
            SparseKind::Adagrad => SparseOptimizer::Adagrad { lr, eps: 1e-10, initial_accumulator: 0.0 },
        }
    }

    /// Backend and hidden sizes of the towers.
    pub fn towers(&self) -> TowerSpec {
        TowerSpec {
            backend: self.backend,
            ctr_fc_sizes: self.ctr_fc_sizes.clone().unwrap_or_else(|| self.backend.default_hidden()),
            cvr_fc_sizes: self.cvr_fc_sizes.clone().unwrap_or_else(|| self.backend.default_hidden()),
            aux_towers: self.kind.aux_towers(),
            interactions: self.interactions,
            mmoe: (self.backbone == Backbone::Mmoe).then(|| self.mmoe.clone()),
            transfer: self.kind == ModelKind::Aitm,
        }
    }

    /// The weights of the objective's terms.
    pub fn loss(&self) -> LossWeights {
        LossWeights {
            global_w: self.global_w,
            counterfactual_w: self.counterfactual_w,
            max_inverse_propensity: self.max_inverse_propensity,
            constraint_w: self.constraint_w,
            calibrator_w: self.calibrator_w,
        }
    }

    pub fn dense(&self) -> DenseAdam {
        DenseAdam { lr: self.learning_rate, beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }
}

/// The valid-split score that selects among evaluations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectOn {
    /// The model's objective on the valid split (CTR + CTCVR logloss; lower is better): it
    /// uses every row, so it moves smoothly between evaluations.
    Loss,
    /// Valid CTCVR AUC (higher is better): rests on the few buys of the valid split, so
    /// between close evaluations it mostly measures noise.
    CtcvrAuc,
}

impl SelectOn {
    /// The score (higher is better) of an evaluation with valid `loss` and CTCVR `auc`.
    pub fn score(self, loss: Option<f64>, auc: Option<f64>) -> Option<f64> {
        match self {
            SelectOn::Loss => loss.map(|l| -l),
            SelectOn::CtcvrAuc => auc,
        }
    }
}

/// What maps the towers' outputs to probabilities after training (`train.calibration`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CalibrationKind {
    /// σ(logit), as trained.
    None,
    /// Per tower, the intercept moved so that the valid split's mean prediction is the base
    /// rate of train and valid ([`crate::model::calibration`]).
    #[default]
    Level,
    /// Platt scaling per tower fitted on the valid split, its level then set like `level`.
    Platt,
}

impl CalibrationKind {
    pub fn is_none(&self) -> bool {
        *self == CalibrationKind::None
    }
}

/// `train:` — the loop.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// Row groups held in the shuffle pool (sessions or rows are permuted within it).
    pub shuffle_pool_row_groups: usize,
    /// `sessions` (keep the rows of one md5 together: the user side is pooled once per
    /// session) or `rows`.
    pub shuffle: ShuffleUnit,
    /// Validations per epoch, spaced by the rows passed, the last at the epoch's end (1 = only
    /// at each epoch's end); the best evaluation's model is kept.
    pub evals_per_epoch: usize,
    /// Validate every this many training steps (batches) instead, besides each epoch's end
    /// (0 = use `evals_per_epoch`).
    pub eval_every_steps: usize,
    /// What picks the best evaluation (the model kept, the one early stopping waits to beat).
    pub select_on: SelectOn,
    /// Stop after this many evaluations without a better `select_on` score (0 = never).
    pub early_stopping_patience: usize,
    /// Learning rates are multiplied by this at each epoch's start after the first
    /// (epoch `e` trains at `lr · lr_decay^e`; 1 = constant).
    pub lr_decay: f32,
    /// Re-initialize the embedding tables (weights and optimizer state) at each epoch's start
    /// after the first, keeping the towers: every epoch's embeddings see each row once, the
    /// towers train on for several epochs (the "one-epoch" overfitting is the embeddings').
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub reset_embeddings: bool,
    /// With `reset_embeddings`: keep each finished epoch's tables and towers as a frozen member
    /// of the model, whose logits are the mean of its members' (a snapshot ensemble: the
    /// epochs' embeddings are independent draws, their errors average out). Prediction costs
    /// one forward pass per member, `model.bin` one table of weights per member. Left out of
    /// the config hash when false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ensemble_epochs: bool,
    /// Seed of the per-epoch shuffle.
    pub seed: u64,
    /// Calibration of the kept model, fitted on the valid split once training ends (left out
    /// of the config hash when `none`, so files that pin `none` hash as before it existed).
    #[serde(skip_serializing_if = "CalibrationKind::is_none")]
    pub calibration: CalibrationKind,
    /// Share of the unclicked training rows each epoch trains on (1 = all): the rest are
    /// skipped, drawn afresh each epoch, and the kept ones weigh `1 / keep_unclicked` in the
    /// objective, which stays an unbiased estimate of the full one. Left out of the config
    /// hash at 1.
    #[serde(skip_serializing_if = "is_one")]
    pub keep_unclicked: f64,
}

fn is_one(x: &f64) -> bool {
    *x == 1.0
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 5,
            batch_size: 1024,
            shuffle_pool_row_groups: 4,
            shuffle: ShuffleUnit::Sessions,
            evals_per_epoch: 1,
            eval_every_steps: 0,
            select_on: SelectOn::Loss,
            early_stopping_patience: 2,
            lr_decay: 1.0,
            reset_embeddings: true,
            ensemble_epochs: true,
            seed: 1,
            calibration: CalibrationKind::Level,
            keep_unclicked: 1.0,
        }
    }
}

impl TrainConfig {
    /// Checks the values; an error is a configuration error (exit status 2).
    pub fn validate(&self) -> Result<()> {
        self.check().usage()
    }

    fn check(&self) -> Result<()> {
        ensure!(self.epochs >= 1, "train.epochs must be >= 1");
        ensure!(self.batch_size >= 1, "train.batch_size must be >= 1");
        ensure!(self.shuffle_pool_row_groups >= 1, "train.shuffle_pool_row_groups must be >= 1");
        ensure!(self.evals_per_epoch >= 1, "train.evals_per_epoch must be >= 1");
        ensure!(self.lr_decay > 0.0 && self.lr_decay <= 1.0, "train.lr_decay must be in (0, 1]");
        ensure!(self.keep_unclicked > 0.0 && self.keep_unclicked <= 1.0, "train.keep_unclicked must be in (0, 1]");
        Ok(())
    }
}
