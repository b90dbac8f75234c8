//! ESMM forward and backward: per-field pooling of embedding rows (user side through
//! `common_row`), the two towers, the loss computed stably from logits, and the scatter of the
//! input gradient back to the rows the batch touched.
//!
//! pCTR = σ(zc), pCVR = σ(zv), pCTCVR = pCTR·pCVR;
//! esmm / esmm_ns: loss = BCE(pCTR, click) + BCE(pCTCVR, click∧buy), batch means;
//! naive_cvr:      loss = BCE(pCTR, click) over all rows + BCE(pCVR, buy) over clicked rows.

use serde::{Deserialize, Serialize};

use super::embedding::{Embedding, SparseGrad, SparseOptimizer};
use super::towers::{DenseAdam, TowerGrads, Towers, EMB_DIM, INPUT};
use crate::batches::{Batch, CommonTable, FieldCsr};
use crate::schema::{Side, FIELDS};

/// Which model (the paper's Table 2 comparison).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Shared embeddings, CTR and CTCVR losses over the entire space.
    Esmm,
    /// CVR tower trained on clicked rows only (label buy); CTR tower on all rows.
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

/// SplitMix64 stream for initialization.
pub struct InitRng(pub u64);
impl InitRng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
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
        let mut rng = InitRng(spec.seed);
        let n_tables = if spec.kind == ModelKind::EsmmNs { 2 } else { 1 };
        let tables: Vec<Embedding> = (0..n_tables)
            .map(|_| Embedding::new(spec.hash_buckets, EMB_DIM, spec.sparse, spec.init_scale, || rng.uniform()))
            .collect();
        let towers = Towers::new(spec.dense, || rng.normal());
        let grads = (0..n_tables).map(|_| SparseGrad::new(spec.hash_buckets, EMB_DIM)).collect();
        Ok(Self { spec, tables, towers, grads, sources: sources() })
    }

    fn lists<'a>(&self, f: usize, batch: &'a Batch, common: &'a CommonTable, i: usize) -> (&'a FieldCsr, usize) {
        match self.sources[f] {
            Source::User(s) => (&common.fields[s], batch.common_row[i] as usize),
            Source::Item(s) => (&batch.items[s], i),
        }
    }

    /// Calls `visit(row i, field f, bucket, weight)` for every id the model uses.
    #[inline]
    fn walk(&self, batch: &Batch, common: &CommonTable, mut visit: impl FnMut(usize, usize, u32, f32)) {
        let weighted = self.spec.pooling == Pooling::Weighted;
        for i in 0..batch.len() {
            for f in 0..FIELDS.len() {
                let (csr, r) = self.lists(f, batch, common, i);
                let ids = csr.ids(r);
                let take = ids.len().min(self.spec.max_len[f]);
                match csr.weights(r) {
                    Some(w) if weighted => {
                        for k in 0..take {
                            visit(i, f, ids[k], w[k]);
                        }
                    }
                    _ => {
                        for &id in &ids[..take] {
                            visit(i, f, id, 1.0);
                        }
                    }
                }
            }
        }
    }

    /// Pooled inputs `[n × INPUT]` from table `t`.
    fn pool(&self, t: usize, batch: &Batch, common: &CommonTable) -> Vec<f32> {
        let table = &self.tables[t];
        let mut x = vec![0.0f32; batch.len() * INPUT];
        self.walk(batch, common, |i, f, id, w| {
            let dst = &mut x[i * INPUT + f * EMB_DIM..i * INPUT + (f + 1) * EMB_DIM];
            for (d, &e) in dst.iter_mut().zip(table.weights(id)) {
                *d += w * e;
            }
        });
        x
    }

    fn scatter(&mut self, t: usize, batch: &Batch, common: &CommonTable, dx: &[f32]) {
        let mut g = std::mem::replace(&mut self.grads[t], SparseGrad::new(0, EMB_DIM));
        self.walk(batch, common, |i, f, id, w| {
            g.add(id, w, &dx[i * INPUT + f * EMB_DIM..i * INPUT + (f + 1) * EMB_DIM])
        });
        self.grads[t] = g;
    }

    /// Logits (zc, zv) of a batch.
    pub fn logits(&self, batch: &Batch, common: &CommonTable) -> (Vec<f32>, Vec<f32>) {
        let xc = self.pool(0, batch, common);
        let xv = if self.tables.len() == 2 { self.pool(1, batch, common) } else { xc.clone() };
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
        let xc = self.pool(0, batch, common);
        let shared = self.tables.len() == 1;
        let xv = if shared { None } else { Some(self.pool(1, batch, common)) };
        let kind = self.spec.kind;
        let mut out = (StepLoss::default(), Vec::new());
        let (dxc, dxv, tg) = self.towers.backward(&xc, xv.as_deref().unwrap_or(&xc), n, |zc, zv| {
            let (gc, gv, loss) = loss_grads(kind, zc, zv, &batch.click, &batch.buy);
            out = (loss, zc.iter().map(|&z| sigmoid(z as f64) as f32).collect());
            (gc, gv)
        });
        if shared {
            let dx: Vec<f32> = dxc.iter().zip(&dxv).map(|(a, b)| a + b).collect();
            self.scatter(0, batch, common, &dx);
        } else {
            self.scatter(0, batch, common, &dxc);
            self.scatter(1, batch, common, &dxv);
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
        (loss, p_ctr)
    }

    /// The loss of a batch, without updating anything (gradient checks, validation loss).
    pub fn loss(&self, batch: &Batch, common: &CommonTable) -> f64 {
        let (zc, zv) = self.logits(batch, common);
        loss_grads(self.spec.kind, &zc, &zv, &batch.click, &batch.buy).2.value()
    }
}
