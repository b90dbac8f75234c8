//! ESMM forward and backward: the pooled embeddings (`gather.rs`), the two towers, the loss
//! computed stably from logits, the input gradient scattered back to the rows the batch touched
//! (`gather.rs`), and the optimizer step. A model may also hold frozen [`Snapshot`]s of earlier
//! epochs (`train.ensemble_epochs`): its logits are then the mean of every member's.
//!
//! pCTR = σ(zc), pCVR = σ(zv), pCTCVR = pCTR·pCVR for every kind; the loss of each kind is
//! in `loss.rs`.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::calibration::Calibration;
use super::embedding::{Embedding, SparseGrad, SparseOptimizer};
use super::gather::{Gather, Pooling, Users};
use super::logistic::{sigmoid, softplus};
use super::loss::{loss_grads, LossWeights, StepLoss};
use super::towers::{DenseAdam, TowerGrads, TowerSpec, Towers, DEFAULT_EMB_DIM};
use super::vocab::Vocab;
use crate::batches::{Batch, CommonTable};
use crate::rng::Rng;
use crate::schema::FIELDS;

/// Which model (the paper's Table 2 comparison).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Shared embeddings, CTR and CTCVR losses over the entire space.
    Esmm,
    /// The paper's BASE: a CVR network (own embeddings and tower) trained on clicked rows only
    /// (label buy), and a separately trained CTR network on all rows; pCTCVR = pCTR·pCVR.
    NaiveCvr,
    /// ESMM without shared embeddings: one table per tower.
    EsmmNs,
    /// ESCM²-IPS: ESMM plus the clicked rows' CVR loss weighted by the inverse propensity
    /// 1/pCTR (no gradient through it), the counterfactual regularizer of ESCM² ([`super::loss`]).
    Escm2Ips,
    /// ESCM²-DR: ESMM plus the doubly robust CVR loss over every row, with an imputation tower.
    Escm2Dr,
    /// DCMT: ESMM plus a counterfactual twin of the CVR tower trained on the unclicked rows.
    Dcmt,
    /// AITM: a conversion tower predicting pCTCVR directly from its own hidden layer and, through
    /// an attention, the CTR tower's ([`super::towers`]' transfer), with the calibrator
    /// pCTCVR ≤ pCTR; pCVR = pCTCVR / pCTR (at most 1).
    Aitm,
}

impl ModelKind {
    /// Every kind, the paper's three first.
    pub const ALL: [ModelKind; 7] = [
        ModelKind::Esmm,
        ModelKind::NaiveCvr,
        ModelKind::EsmmNs,
        ModelKind::Escm2Ips,
        ModelKind::Escm2Dr,
        ModelKind::Dcmt,
        ModelKind::Aitm,
    ];

    /// Whether the objective has a counterfactual CVR term (the ESCM² kinds, DCMT).
    pub fn counterfactual(self) -> bool {
        matches!(self, ModelKind::Escm2Ips | ModelKind::Escm2Dr | ModelKind::Dcmt)
    }

    /// Towers trained beside the CTR and the CVR tower (DR's imputation, DCMT's counterfactual
    /// CVR); they never predict.
    pub fn aux_towers(self) -> usize {
        matches!(self, ModelKind::Escm2Dr | ModelKind::Dcmt) as usize
    }

    /// The two logits that predict, (CTR, CVR), from the CTR tower's and the second tower's. For
    /// every kind but AITM they are the towers'; AITM's second tower is pCTCVR's, and its CVR
    /// logit is that of pCVR = min(pCTCVR / pCTR, 1 − 2⁻²⁴) (pCTCVR above pCTR, which the
    /// calibrator penalizes, reads as pCVR just below 1).
    pub fn predicting(self, zc: Vec<f32>, mut z2: Vec<f32>) -> (Vec<f32>, Vec<f32>) {
        if self == ModelKind::Aitm {
            for (t, &c) in z2.iter_mut().zip(&zc) {
                // log pCTCVR − log pCTR, and the log of its complement, stable in logits
                let (a, b) = (c as f64, *t as f64);
                let log_ratio = (-softplus(-b) + softplus(-a)).min(-(2f64).powi(-24));
                *t = (log_ratio - (-log_ratio.exp()).ln_1p()) as f32;
            }
        }
        (zc, z2)
    }
}

/// Everything that fixes the model's shape and update rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub kind: ModelKind,
    pub hash_buckets: usize,
    /// Embedding dimension of every table (absent in older checkpoints: 12); the towers take
    /// `23 × embedding_dim` inputs.
    #[serde(default = "default_emb_dim")]
    pub embedding_dim: usize,
    pub pooling: Pooling,
    /// Ids kept per field (first ones), indexed like [`FIELDS`]; `usize::MAX` = all.
    pub max_len: Vec<usize>,
    pub sparse: SparseOptimizer,
    pub dense: DenseAdam,
    /// Embeddings start uniform in `[-init_scale, init_scale]` (PaddleRec: 1.0).
    pub init_scale: f32,
    pub seed: u64,
    /// Tower backend and hidden sizes (absent in older checkpoints: dfdx, `[256, 64]`).
    #[serde(default)]
    pub towers: TowerSpec,
    /// Id admission (0 = off, see `vocab`): every id also reads its field's shared row, ids seen
    /// in fewer training sessions read only that.
    #[serde(default)]
    pub min_sessions: u32,
    /// Shrinkage of admitted ids toward their field's shared row (0 = off): an id seen in `n`
    /// training sessions weighs its own row by `n / (n + shrink_sessions)`.
    #[serde(default)]
    pub shrink_sessions: f32,
    /// The weights of the objective's terms (absent in older checkpoints: the defaults).
    #[serde(default)]
    pub loss: LossWeights,
}

fn default_emb_dim() -> usize {
    DEFAULT_EMB_DIM
}

impl ModelSpec {
    /// Embedding rows per table: the hash buckets, plus one shared row per field
    /// when admission is on.
    pub fn table_rows(&self) -> usize {
        self.hash_buckets + Vocab::extra_rows(self.min_sessions)
    }
}

/// A frozen member of the model: an earlier epoch's tables (weights only) and towers.
pub struct Snapshot {
    pub tables: Vec<Embedding>,
    pub towers: Towers,
}

/// The model: embedding table(s) and towers.
pub struct Model {
    pub spec: ModelSpec,
    pub tables: Vec<Embedding>,
    pub towers: Towers,
    /// Earlier epochs kept as ensemble members (oldest first); empty for a single model.
    pub snapshots: Vec<Snapshot>,
    /// Applied by [`Model::predict`] (identity until `train` fits it on the valid split).
    pub calibration: Calibration,
    /// Weight of an unclicked row in the training objective (1, or `1 / keep_unclicked` when
    /// training skips a share of them: set by `train`; validation always weighs every row 1).
    pub unclicked_w: f64,
    /// Per table: the gradient partitions of the last backward (one per thread, see `gather`).
    grads: Vec<Vec<SparseGrad>>,
    gather: Gather,
    scratch: Mutex<Scratch>,
}

/// The summed logits (every tower's) of one batch under the first `members` snapshots of a
/// model: [`Model::evaluate_with`] adds the snapshots kept since instead of scoring them all.
#[derive(Clone, Debug, Default)]
pub struct FrozenSum {
    members: usize,
    sum: Option<Vec<Vec<f32>>>,
}

/// Per-batch buffers, reused from step to step (they only grow).
#[derive(Default)]
struct Scratch {
    /// Tower inputs (one per table) and their gradients (one per tower), `[n × 23·dim]`.
    x: [Vec<f32>; 2],
    dx: [Vec<f32>; 2],
    /// Pooled user side / its gradient, per distinct common row.
    xu: Vec<f32>,
    du: Vec<f32>,
}

impl Model {
    /// A freshly initialized model; `vocab` is the id admission counted for `spec.min_sessions`.
    pub fn new(spec: ModelSpec, vocab: Vocab) -> anyhow::Result<Self> {
        anyhow::ensure!(spec.max_len.len() == FIELDS.len(), "max_len needs one entry per field");
        let mut rng = Rng::new(spec.seed);
        let n_tables = Self::table_count(spec.kind);
        let tables: Vec<Embedding> = (0..n_tables)
            .map(|_| {
                let rows = spec.table_rows();
                Embedding::new(rows, spec.embedding_dim, spec.sparse, spec.init_scale, || rng.f64() as f32)
            })
            .collect();
        let towers = Towers::with_spec(&spec.towers, spec.embedding_dim, spec.dense, || rng.normal() as f32)?;
        Self::assemble(spec, tables, towers, vocab)
    }

    /// Draws every embedding table afresh from `seed` (weights uniform in ±`init_scale`,
    /// optimizer state and step count zero), keeping the towers and the id admission.
    pub fn reset_embeddings(&mut self, seed: u64) {
        let mut rng = Rng::new(seed);
        for t in &mut self.tables {
            let optimizer = t.optimizer;
            *t = Embedding::new(t.rows, t.dim, optimizer, self.spec.init_scale, || rng.f64() as f32);
        }
    }

    /// Keeps the current tables (weights) and towers as a frozen ensemble member.
    pub fn keep_snapshot(&mut self) -> anyhow::Result<()> {
        let towers =
            Towers::from_params(&self.spec.towers, self.spec.embedding_dim, self.spec.dense, &self.towers.params())?;
        self.snapshots.push(Snapshot { tables: self.tables.iter().map(Embedding::frozen).collect(), towers });
        Ok(())
    }

    /// Ensemble members: the snapshots and the model itself (1: a single model).
    pub fn member_count(&self) -> usize {
        self.snapshots.len() + 1
    }

    /// Every member's tables and towers: the snapshots (oldest first), then the model's own.
    pub fn members(&self) -> impl Iterator<Item = (&[Embedding], &Towers)> {
        (self.snapshots.iter().map(|s| (&s.tables[..], &s.towers)))
            .chain(std::iter::once((&self.tables[..], &self.towers)))
    }

    /// A model from existing parts (checkpoints): no random initialization.
    pub fn assemble(spec: ModelSpec, tables: Vec<Embedding>, towers: Towers, vocab: Vocab) -> anyhow::Result<Self> {
        let dims: Vec<usize> = tables.iter().map(|t| t.dim).collect();
        anyhow::ensure!(
            dims.iter().all(|&d| d == spec.embedding_dim) && towers.dim() == spec.embedding_dim,
            "embedding tables of dimension {dims:?} and towers for dimension {} do not match the model's embedding_dim {}",
            towers.dim(),
            spec.embedding_dim
        );
        anyhow::ensure!(
            towers.spec().aux_towers == spec.kind.aux_towers(),
            "model kind {:?} trains {} auxiliary tower(s), the towers have {}",
            spec.kind,
            spec.kind.aux_towers(),
            towers.spec().aux_towers
        );
        anyhow::ensure!(
            vocab.parts().0 == spec.min_sessions
                && (!vocab.enabled() || vocab.parts().1 as usize == spec.hash_buckets)
                && (!vocab.enabled() || vocab.parts().3.is_empty() == (spec.shrink_sessions <= 0.0))
                && tables.iter().all(|t| t.rows == spec.table_rows()),
            "the embedding tables and the id admission do not match the model spec"
        );
        let grads = tables.iter().map(|_| Vec::new()).collect();
        let gather = Gather::new(spec.pooling, spec.max_len.clone(), vocab, spec.embedding_dim);
        let calibration = Calibration::default();
        Ok(Self {
            spec,
            tables,
            towers,
            snapshots: Vec::new(),
            calibration,
            unclicked_w: 1.0,
            grads,
            gather,
            scratch: Mutex::default(),
        })
    }

    /// The id admission the model was trained with.
    pub fn vocab(&self) -> &Vocab {
        self.gather.vocab()
    }

    /// Tables this spec needs: ESMM shares one; esmm_ns and naive_cvr keep one per tower.
    pub fn table_count(kind: ModelKind) -> usize {
        match kind {
            ModelKind::Esmm | ModelKind::Escm2Ips | ModelKind::Escm2Dr | ModelKind::Dcmt | ModelKind::Aitm => 1,
            ModelKind::NaiveCvr | ModelKind::EsmmNs => 2,
        }
    }

    /// Pools the tower inputs of `batch` from `tables` into `s.x` (one per table).
    fn pool_tables(&self, tables: &[Embedding], s: &mut Scratch, batch: &Batch, users: &Users) {
        let Scratch { x, xu, .. } = s;
        for (table, x) in tables.iter().zip(x.iter_mut()) {
            self.gather.pool(table, batch, users, xu, x);
        }
    }

    fn pool(&self, s: &mut Scratch, batch: &Batch, users: &Users) {
        self.pool_tables(&self.tables, s, batch, users);
    }

    /// The logits of one member (its `tables` and `towers`): of the CTR and the CVR tower, or
    /// with `all` of every tower (the auxiliary ones too).
    fn member_logits(
        &self,
        (tables, towers): (&[Embedding], &Towers),
        s: &mut Scratch,
        batch: &Batch,
        users: &Users,
        all: bool,
    ) -> Vec<Vec<f32>> {
        self.pool_tables(tables, s, batch, users);
        let [xc, xv] = &s.x;
        let xv = if tables.len() == 2 { xv } else { xc };
        if all {
            towers.forward_all(xc, xv, batch.len())
        } else {
            let (zc, zv) = towers.forward(xc, xv, batch.len());
            vec![zc, zv]
        }
    }

    /// The members' logits summed in [`Model::members`] order, over their count. `frozen`
    /// carries the sum of the first snapshots' logits of this very batch from an earlier call
    /// (they never change): only the snapshots after them are computed, and the sum is the
    /// same, in the same order, bit for bit.
    fn logits_with(
        &self,
        s: &mut Scratch,
        batch: &Batch,
        common: &CommonTable,
        all: bool,
        frozen: &mut FrozenSum,
    ) -> Vec<Vec<f32>> {
        let users = Users::of(batch, common);
        let add = |sum: &mut Option<Vec<Vec<f32>>>, z: Vec<Vec<f32>>| match sum {
            None => *sum = Some(z),
            Some(sum) => sum.iter_mut().zip(&z).for_each(|(s, z)| s.iter_mut().zip(z).for_each(|(a, b)| *a += b)),
        };
        if frozen.members > self.snapshots.len() {
            *frozen = FrozenSum::default(); // kept for another model: start over
        }
        for snapshot in &self.snapshots[frozen.members..] {
            let z = self.member_logits((&snapshot.tables, &snapshot.towers), s, batch, &users, all);
            add(&mut frozen.sum, z);
        }
        frozen.members = self.snapshots.len();
        // the model's own logits last: `sum + own`, written into `own` (no copy of the sum)
        let mut z = self.member_logits((&self.tables, &self.towers), s, batch, &users, all);
        if let Some(sum) = &frozen.sum {
            z.iter_mut().zip(sum).for_each(|(z, s)| z.iter_mut().zip(s).for_each(|(a, b)| *a = b + *a));
        }
        if !self.snapshots.is_empty() {
            let k = self.member_count() as f32;
            z.iter_mut().flatten().for_each(|z| *z /= k);
        }
        z
    }

    fn logits_of(&self, batch: &Batch, common: &CommonTable, all: bool, frozen: &mut FrozenSum) -> Vec<Vec<f32>> {
        match self.scratch.try_lock() {
            Ok(mut s) => self.logits_with(&mut s, batch, common, all, frozen),
            Err(_) => self.logits_with(&mut Scratch::default(), batch, common, all, frozen),
        }
    }

    /// Logits (zc, zv) of a batch: of pCTR and pCVR ([`ModelKind::predicting`]).
    pub fn logits(&self, batch: &Batch, common: &CommonTable) -> (Vec<f32>, Vec<f32>) {
        let [zc, z2]: [Vec<f32>; 2] =
            self.logits_of(batch, common, false, &mut FrozenSum::default()).try_into().expect("two towers");
        self.spec.kind.predicting(zc, z2)
    }

    /// Logits of every tower of a batch (CTR, CVR, then any auxiliary tower's).
    pub fn all_logits(&self, batch: &Batch, common: &CommonTable) -> Vec<Vec<f32>> {
        self.logits_of(batch, common, true, &mut FrozenSum::default())
    }

    /// (pCTR, pCVR) per row, through [`Model::calibration`].
    pub fn predict(&self, batch: &Batch, common: &CommonTable) -> (Vec<f32>, Vec<f32>) {
        let (zc, zv) = self.logits(batch, common);
        self.calibration.probabilities(zc, zv)
    }

    /// The objective over a batch with the stop-gradient inputs taken from `held` (all the
    /// batch's own logits when `None`; gradient checks hold them while the parameters move).
    fn objective(&self, z: &[Vec<f32>], held: Option<&[Vec<f32>]>, batch: &Batch) -> StepLoss {
        let z: Vec<&[f32]> = z.iter().map(|v| &v[..]).collect();
        let held: Vec<&[f32]> = held.map_or_else(|| z.clone(), |h| h.iter().map(|v| &v[..]).collect());
        loss_grads(self.spec.kind, &self.spec.loss, &z, &held, &batch.click, &batch.buy, 1.0).1
    }

    /// The objective's sums over a batch (the training loss, no update) and its (pCTR, pCVR)
    /// through [`Model::calibration`]: validation.
    pub fn evaluate(&self, batch: &Batch, common: &CommonTable) -> (StepLoss, Vec<f32>, Vec<f32>) {
        self.evaluate_with(batch, common, &mut FrozenSum::default())
    }

    /// [`Model::evaluate`] of a batch scored before, `frozen` kept from then: training's
    /// validation scores only the snapshots added since (and the model itself), not every
    /// member again.
    pub fn evaluate_with(
        &self,
        batch: &Batch,
        common: &CommonTable,
        frozen: &mut FrozenSum,
    ) -> (StepLoss, Vec<f32>, Vec<f32>) {
        let mut z = self.logits_of(batch, common, true, frozen);
        let loss = self.objective(&z, None, batch);
        z.truncate(2);
        let [zc, z2]: [Vec<f32>; 2] = z.try_into().expect("two towers");
        let (zc, zv) = self.spec.kind.predicting(zc, z2);
        let (p_ctr, p_cvr) = self.calibration.probabilities(zc, zv);
        (loss, p_ctr, p_cvr)
    }

    /// The objective of a batch with the stop-gradient inputs (propensities, imputed labels)
    /// taken from the logits `held` instead of the batch's own: gradient checks.
    pub fn loss_held(&self, batch: &Batch, common: &CommonTable, held: &[Vec<f32>]) -> f64 {
        self.objective(&self.all_logits(batch, common), Some(held), batch).value()
    }

    /// Forward, loss and backward: leaves the embedding gradients in the model and returns the
    /// loss, the batch's pCTR and the tower gradients. [`Model::apply`] takes the step.
    pub fn backward(&mut self, batch: &Batch, common: &CommonTable) -> (StepLoss, Vec<f32>, TowerGrads) {
        let n = batch.len();
        let users = Users::of(batch, common);
        let mut scratch = std::mem::take(self.scratch.get_mut().unwrap_or_else(|e| e.into_inner()));
        self.pool(&mut scratch, batch, &users);
        let Scratch { x: [xc, xv], dx: [dxc, dxv], du, .. } = &mut scratch;
        let shared = self.tables.len() == 1;
        let (kind, weights, unclicked_w) = (self.spec.kind, self.spec.loss, self.unclicked_w);
        let mut out = (StepLoss::default(), Vec::new());
        let xv: &[f32] = if shared { xc } else { xv };
        let tg = self.towers.backward(xc, xv, n, (dxc, dxv), |z| {
            let (g, loss) = loss_grads(kind, &weights, z, z, &batch.click, &batch.buy, unclicked_w);
            out = (loss, z[0].iter().map(|&z| sigmoid(z as f64) as f32).collect());
            g
        });
        let parts = rayon::current_num_threads();
        for g in &mut self.grads {
            if g.len() != parts {
                *g = (0..parts).map(|_| SparseGrad::new(self.spec.embedding_dim)).collect();
            }
        }
        let (dxc, dxv): (&[f32], &[f32]) = (dxc, dxv);
        if shared {
            self.gather.scatter(&mut self.grads[0], batch, &users, &[dxc, dxv], du);
        } else {
            self.gather.scatter(&mut self.grads[0], batch, &users, &[dxc], du);
            self.gather.scatter(&mut self.grads[1], batch, &users, &[dxv], du);
        }
        *self.scratch.get_mut().unwrap_or_else(|e| e.into_inner()) = scratch;
        (out.0, out.1, tg)
    }

    /// Embedding gradient of `row` in table `t` after [`Model::backward`].
    pub fn embedding_grad(&self, t: usize, row: u32) -> Option<&[f32]> {
        let parts = &self.grads[t];
        parts.get(row as usize % parts.len().max(1))?.get(row)
    }

    /// Scales every learning rate of the spec by `scale` (a schedule's factor; 1 = the spec's).
    pub fn set_lr_scale(&mut self, scale: f32) {
        for t in &mut self.tables {
            t.optimizer = self.spec.sparse.with_lr(self.spec.sparse.lr() * scale);
        }
        self.towers.set_lr(self.spec.dense.lr * scale);
    }

    /// One optimizer step with the gradients of the last [`Model::backward`].
    pub fn apply(&mut self, tower_grads: &TowerGrads) {
        for (t, parts) in self.tables.iter_mut().zip(self.grads.iter_mut()) {
            t.apply(parts);
        }
        self.towers.apply(tower_grads);
    }

    /// Forward, backward and step; returns the loss and the batch's pCTR.
    pub fn train_step(&mut self, batch: &Batch, common: &CommonTable) -> (StepLoss, Vec<f32>) {
        let (loss, p_ctr, tg) = self.backward(batch, common);
        self.apply(&tg);
        self.towers.recycle(tg);
        (loss, p_ctr)
    }

    /// The loss of a batch, without updating anything (gradient checks).
    pub fn loss(&self, batch: &Batch, common: &CommonTable) -> f64 {
        self.evaluate(batch, common).0.value()
    }
}
