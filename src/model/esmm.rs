//! ESMM forward and backward: per-field pooling of embedding rows (user side through
//! `common_row`), the two towers, the loss computed stably from logits, and the scatter of the
//! input gradient back to the rows the batch touched.
//!
//! pCTR = σ(zc), pCVR = σ(zv), pCTCVR = pCTR·pCVR;
//! esmm / esmm_ns: loss = BCE(pCTR, click) + BCE(pCTCVR, click∧buy), batch means;
//! naive_cvr:      loss = BCE(pCTR, click) over all rows + BCE(pCVR, buy) over clicked rows.

use serde::{Deserialize, Serialize};

use super::embedding::{Embedding, SparseGrad, SparseOptimizer};
use super::towers::{DenseAdam, TowerGrads, TowerSpec, Towers, EMB_DIM, INPUT};
use crate::batches::{Batch, CommonTable, FieldCsr};
use crate::rng::Rng;
use crate::schema::{Side, FIELDS};

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
}

/// How a field's embedding rows are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Plain sum (PaddleRec parity: values ignored).
    Sum,
    /// Sum weighted by the raw values for the weighted fields (histories, combinations).
    Weighted,
    /// `weighted`, with each weighted field divided by its id count: a history of 500 ids then
    /// enters the towers at the scale of a single id (a one-id field, e.g. a combination feature
    /// with its count value, is unchanged).
    Mean,
}

/// Everything that fixes the model's shape and update rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub kind: ModelKind,
    pub hash_buckets: usize,
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
}

/// Where field `f`'s lists live: user side (slot in the common table) or item side (batch).
#[derive(Clone, Copy)]
enum Source {
    User(usize),
    Item(usize),
}

fn sources() -> Vec<Source> {
    let (mut u, mut i) = (0, 0);
    FIELDS
        .iter()
        .map(|f| match f.side {
            Side::User => {
                u += 1;
                Source::User(u - 1)
            }
            Side::Item => {
                i += 1;
                Source::Item(i - 1)
            }
        })
        .collect()
}

/// The user-side fields come first in [`FIELDS`]: their pooled block is `x[.., ..USER_WIDTH]`.
const USER_FIELDS: usize = 13;
const USER_WIDTH: usize = USER_FIELDS * EMB_DIM;
const _: () = {
    let mut f = 0;
    while f < FIELDS.len() {
        assert!(matches!(FIELDS[f].side, Side::User) == (f < USER_FIELDS), "user fields must come first");
        f += 1;
    }
};

/// The distinct common rows of a batch (`rows`) and each sample's index into them (`local`).
struct Users {
    rows: Vec<u32>,
    local: Vec<u32>,
}

impl Users {
    fn of(batch: &Batch) -> Self {
        let mut index = std::collections::HashMap::new();
        let mut rows = Vec::new();
        let mut local = Vec::with_capacity(batch.len());
        let mut last: Option<(u32, u32)> = None;
        for &r in &batch.common_row {
            let l = match last {
                Some((row, l)) if row == r => l,
                _ => *index.entry(r).or_insert_with(|| {
                    rows.push(r);
                    rows.len() as u32 - 1
                }),
            };
            last = Some((r, l));
            local.push(l);
        }
        Self { rows, local }
    }
}

/// Loss of one batch (sum over rows of each term, and the row counts they average over).
#[derive(Clone, Copy, Debug, Default)]
pub struct StepLoss {
    pub ctr: f64,
    pub second: f64,
    pub rows: usize,
    pub second_rows: usize,
}

impl StepLoss {
    /// The optimized objective: mean CTR loss + mean CTCVR (or clicked-CVR) loss.
    pub fn value(&self) -> f64 {
        self.ctr / self.rows.max(1) as f64 + self.second / self.second_rows.max(1) as f64
    }
}

/// The model: embedding table(s) and towers.
pub struct Model {
    pub spec: ModelSpec,
    pub tables: Vec<Embedding>,
    pub towers: Towers,
    grads: Vec<SparseGrad>,
    sources: Vec<Source>,
}

#[inline]
fn softplus(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

#[inline]
fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// log(e^a + e^b + e^c), stable.
#[inline]
fn log_sum_exp3(a: f64, b: f64, c: f64) -> f64 {
    let m = a.max(b).max(c);
    m + ((a - m).exp() + (b - m).exp() + (c - m).exp()).ln()
}

/// Loss gradients w.r.t. both logits for a batch, and the loss sums.
pub fn loss_grads(kind: ModelKind, zc: &[f32], zv: &[f32], click: &[u8], buy: &[u8]) -> (Vec<f32>, Vec<f32>, StepLoss) {
    let n = zc.len();
    let mut loss = StepLoss { rows: n, ..Default::default() };
    let mut gc = vec![0.0f32; n];
    let mut gv = vec![0.0f32; n];
    let clicked = click.iter().filter(|&&c| c == 1).count();
    loss.second_rows = if kind == ModelKind::NaiveCvr { clicked } else { n };
    let inv_n = 1.0 / n.max(1) as f64;
    let inv_second = 1.0 / loss.second_rows.max(1) as f64;
    for i in 0..n {
        let (a, b) = (zc[i] as f64, zv[i] as f64);
        let y1 = click[i] as f64;
        let (sa, sb) = (sigmoid(a), sigmoid(b));
        loss.ctr += softplus(a) - y1 * a;
        let mut da = (sa - y1) * inv_n;
        let mut db = 0.0;
        match kind {
            ModelKind::NaiveCvr => {
                if click[i] == 1 {
                    let y = buy[i] as f64;
                    loss.second += softplus(b) - y * b;
                    db = (sb - y) * inv_second;
                }
            }
            ModelKind::Esmm | ModelKind::EsmmNs => {
                let y2 = (click[i] & buy[i]) as f64;
                let neg_log_p = softplus(-a) + softplus(-b);
                if y2 == 1.0 {
                    loss.second += neg_log_p;
                    da -= (1.0 - sa) * inv_second;
                    db -= (1.0 - sb) * inv_second;
                } else {
                    // 1 - σa·σb = (e^-a + e^-b + e^-(a+b)) / ((1 + e^-a)(1 + e^-b))
                    loss.second += neg_log_p - log_sum_exp3(-a, -b, -a - b);
                    let p = sa * sb;
                    let odds = p / (1.0 - p).max(f64::MIN_POSITIVE);
                    da += (1.0 - sa) * odds * inv_second;
                    db += (1.0 - sb) * odds * inv_second;
                }
            }
        }
        gc[i] = da as f32;
        gv[i] = db as f32;
    }
    (gc, gv, loss)
}

impl Model {
    pub fn new(spec: ModelSpec) -> anyhow::Result<Self> {
        anyhow::ensure!(spec.max_len.len() == FIELDS.len(), "max_len needs one entry per field");
        let mut rng = Rng::new(spec.seed);
        let n_tables = Self::table_count(spec.kind);
        let tables: Vec<Embedding> = (0..n_tables)
            .map(|_| Embedding::new(spec.hash_buckets, EMB_DIM, spec.sparse, spec.init_scale, || rng.f64() as f32))
            .collect();
        let towers = Towers::with_spec(&spec.towers, spec.dense, || rng.normal() as f32)?;
        Ok(Self::assemble(spec, tables, towers))
    }

    /// A model from existing parts (checkpoints): no random initialization.
    pub fn assemble(spec: ModelSpec, tables: Vec<Embedding>, towers: Towers) -> Self {
        let grads = tables.iter().map(|_| SparseGrad::new(spec.hash_buckets, EMB_DIM)).collect();
        Self { spec, tables, towers, grads, sources: sources() }
    }

    /// Tables this spec needs: ESMM shares one; esmm_ns and naive_cvr keep one per tower.
    pub fn table_count(kind: ModelKind) -> usize {
        match kind {
            ModelKind::Esmm => 1,
            ModelKind::NaiveCvr | ModelKind::EsmmNs => 2,
        }
    }

    /// Calls `visit(field, bucket, weight)` for the ids of `csr` row `r` that the model uses.
    #[inline]
    fn visit_row(&self, f: usize, csr: &FieldCsr, r: usize, mut visit: impl FnMut(u32, f32)) {
        let ids = csr.ids(r);
        let take = ids.len().min(self.spec.max_len[f]);
        match csr.weights(r) {
            Some(w) if self.spec.pooling == Pooling::Weighted => {
                for k in 0..take {
                    visit(ids[k], w[k]);
                }
            }
            Some(w) if self.spec.pooling == Pooling::Mean => {
                let scale = 1.0 / take.max(1) as f32;
                for k in 0..take {
                    visit(ids[k], w[k] * scale);
                }
            }
            _ => {
                for &id in &ids[..take] {
                    visit(id, 1.0);
                }
            }
        }
    }

    /// Calls `visit(row, field, bucket, weight)` for every user-side id of the distinct common
    /// rows `users`, then `visit(i, field, ..)` for every item-side id of sample `i`.
    fn walk(
        &self,
        batch: &Batch,
        common: &CommonTable,
        users: &[u32],
        mut visit_user: impl FnMut(usize, usize, u32, f32),
        mut visit_item: impl FnMut(usize, usize, u32, f32),
    ) {
        for (u, &row) in users.iter().enumerate() {
            for f in 0..USER_FIELDS {
                let Source::User(s) = self.sources[f] else { continue };
                self.visit_row(f, &common.fields[s], row as usize, |id, w| visit_user(u, f, id, w));
            }
        }
        for i in 0..batch.len() {
            for f in USER_FIELDS..FIELDS.len() {
                let Source::Item(s) = self.sources[f] else { continue };
                self.visit_row(f, &batch.items[s], i, |id, w| visit_item(i, f, id, w));
            }
        }
    }

    /// Pooled inputs `[n × INPUT]` from table `t`; the user side is pooled once per distinct
    /// common row of the batch (rows of one session share it).
    fn pool(&self, t: usize, batch: &Batch, common: &CommonTable, users: &Users) -> Vec<f32> {
        let table = &self.tables[t];
        let mut xu = vec![0.0f32; users.rows.len() * USER_WIDTH];
        let mut x = vec![0.0f32; batch.len() * INPUT];
        let add = |dst: &mut [f32], id: u32, w: f32| {
            for (d, &e) in dst.iter_mut().zip(table.weights(id)) {
                *d += w * e;
            }
        };
        self.walk(
            batch,
            common,
            &users.rows,
            |u, f, id, w| add(&mut xu[u * USER_WIDTH + f * EMB_DIM..u * USER_WIDTH + (f + 1) * EMB_DIM], id, w),
            |i, f, id, w| add(&mut x[i * INPUT + f * EMB_DIM..i * INPUT + (f + 1) * EMB_DIM], id, w),
        );
        for (i, &u) in users.local.iter().enumerate() {
            x[i * INPUT..i * INPUT + USER_WIDTH]
                .copy_from_slice(&xu[u as usize * USER_WIDTH..(u as usize + 1) * USER_WIDTH]);
        }
        x
    }

    /// Scatters the input gradient `dx` to table `t`: the user part summed per distinct common
    /// row first, so each user-side id is touched once per batch.
    fn scatter(&mut self, t: usize, batch: &Batch, common: &CommonTable, users: &Users, dx: &[f32]) {
        let mut du = vec![0.0f32; users.rows.len() * USER_WIDTH];
        for (i, &u) in users.local.iter().enumerate() {
            let dst = &mut du[u as usize * USER_WIDTH..(u as usize + 1) * USER_WIDTH];
            for (d, &g) in dst.iter_mut().zip(&dx[i * INPUT..i * INPUT + USER_WIDTH]) {
                *d += g;
            }
        }
        let mut g = std::mem::replace(&mut self.grads[t], SparseGrad::new(0, EMB_DIM));
        let cell = std::cell::RefCell::new(&mut g);
        self.walk(
            batch,
            common,
            &users.rows,
            |u, f, id, w| {
                cell.borrow_mut().add(id, w, &du[u * USER_WIDTH + f * EMB_DIM..u * USER_WIDTH + (f + 1) * EMB_DIM])
            },
            |i, f, id, w| cell.borrow_mut().add(id, w, &dx[i * INPUT + f * EMB_DIM..i * INPUT + (f + 1) * EMB_DIM]),
        );
        self.grads[t] = g;
    }

    /// Logits (zc, zv) of a batch.
    pub fn logits(&self, batch: &Batch, common: &CommonTable) -> (Vec<f32>, Vec<f32>) {
        let users = Users::of(batch);
        let xc = self.pool(0, batch, common, &users);
        let xv = if self.tables.len() == 2 { self.pool(1, batch, common, &users) } else { xc.clone() };
        self.towers.forward(&xc, &xv, batch.len())
    }

    /// (pCTR, pCVR) per row.
    pub fn predict(&self, batch: &Batch, common: &CommonTable) -> (Vec<f32>, Vec<f32>) {
        let (zc, zv) = self.logits(batch, common);
        let s = |z: Vec<f32>| z.into_iter().map(|z| sigmoid(z as f64) as f32).collect();
        (s(zc), s(zv))
    }

    /// Forward, loss and backward: leaves the embedding gradients in the model and returns the
    /// loss, the batch's pCTR and the tower gradients. [`Model::apply`] takes the step.
    pub fn backward(&mut self, batch: &Batch, common: &CommonTable) -> (StepLoss, Vec<f32>, TowerGrads) {
        let n = batch.len();
        let users = Users::of(batch);
        let xc = self.pool(0, batch, common, &users);
        let shared = self.tables.len() == 1;
        let xv = if shared { None } else { Some(self.pool(1, batch, common, &users)) };
        let kind = self.spec.kind;
        let mut out = (StepLoss::default(), Vec::new());
        let (dxc, dxv, tg) = self.towers.backward(&xc, xv.as_deref().unwrap_or(&xc), n, |zc, zv| {
            let (gc, gv, loss) = loss_grads(kind, zc, zv, &batch.click, &batch.buy);
            out = (loss, zc.iter().map(|&z| sigmoid(z as f64) as f32).collect());
            (gc, gv)
        });
        if shared {
            let dx: Vec<f32> = dxc.iter().zip(&dxv).map(|(a, b)| a + b).collect();
            self.scatter(0, batch, common, &users, &dx);
        } else {
            self.scatter(0, batch, common, &users, &dxc);
            self.scatter(1, batch, common, &users, &dxv);
        }
        (out.0, out.1, tg)
    }

    /// Embedding gradient of `row` in table `t` after [`Model::backward`].
    pub fn embedding_grad(&self, t: usize, row: u32) -> Option<&[f32]> {
        self.grads[t].get(row)
    }

    /// One optimizer step with the gradients of the last [`Model::backward`].
    pub fn apply(&mut self, tower_grads: &TowerGrads) {
        for (t, g) in self.tables.iter_mut().zip(self.grads.iter_mut()) {
            t.apply(g);
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

    /// The loss of a batch, without updating anything (gradient checks, validation loss).
    pub fn loss(&self, batch: &Batch, common: &CommonTable) -> f64 {
        let (zc, zv) = self.logits(batch, common);
        loss_grads(self.spec.kind, &zc, &zv, &batch.click, &batch.buy).2.value()
    }
}
