//! The dense towers, `input → hidden… → 1` with ReLU, one for CTR and one for CVR (and, for the
//! kinds that train one, auxiliary towers shaped like the CVR tower), behind one type with two
//! backends (`model.backend`):
//!
//! - `dfdx` ([`dfdx`]): dfdx 0.13 modules, compiled for PaddleRec's shape (23 fields × 12 dims =
//!   276 inputs, `[256, 64]`); the reference.
//! - `gemm` ([`gemm`]): a fused MLP forward/backward on `gemm` 0.19 (AVX-512 where the CPU has
//!   it), preallocated buffers, any embedding dimension (input width `23 × dim`) and hidden sizes.
//!
//! Both hold the same parameters in the same order and layout (ctr w1 b1 w2 b2 w3 b3, then cvr;
//! a weight is `[out × in]` row-major; gemm only: then the auxiliary towers', then the mixture of
//! experts' ([`mmoe`], `model.backbone: mmoe`), then AITM's transfer ([`transfer`]), then, with
//! field interactions ([`pairs`]), every tower's pair weights), start from the same initialization
//! for the same `normal01` stream, and share one Adam (ours, same update as PyTorch's, so its
//! state can be checkpointed and a resumed run continues bit-identically): a checkpoint loads
//! in either.
//!
//! Training: the caller turns logits into logit gradients (the ESMM loss lives in `esmm.rs`,
//! computed stably from logits) and gets back the gradients w.r.t. the inputs, for the
//! embedding scatter, and w.r.t. every parameter.

mod dfdx;
mod gemm;
mod mmoe;
mod pairs;
mod transfer;

pub use mmoe::{Mmoe, TENSORS as MIXTURE_TENSORS};
pub use transfer::TENSORS as TRANSFER_TENSORS;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::schema::FIELDS;

/// The default embedding dimension (PaddleRec's `sparse_feature_dim`), the one the dfdx towers
/// are compiled for; `model.embedding_dim` sets the model's.
pub const DEFAULT_EMB_DIM: usize = 12;
/// Tower input width at embedding dimension `dim`: every field's pooled embedding, concatenated.
pub const fn input_width(dim: usize) -> usize {
    FIELDS.len() * dim
}
/// Tower input width at [`DEFAULT_EMB_DIM`] (the dfdx towers').
pub const INPUT: usize = input_width(DEFAULT_EMB_DIM);
/// Hidden sizes the dfdx towers are compiled for (PaddleRec `ctr_fc_sizes` / `cvr_fc_sizes`).
pub const HIDDEN: [usize; 2] = [256, 64];
/// The gemm towers' hidden sizes when the config gives none: as good as [`HIDDEN`] on every
/// sweep world at 0.75–0.79× the training time, which buys a fifth ensemble member
/// (docs/quality.md, 2026-12-06).
pub const GEMM_HIDDEN: [usize; 2] = [128, 64];

/// Dense Adam hyper-parameters for the tower weights.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DenseAdam {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
}

/// Which implementation runs the towers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// dfdx 0.13 (gemm 0.15 inside, AVX2): the reference, compiled for `[256, 64]`.
    #[default]
    Dfdx,
    /// Fused MLP on gemm 0.19 (AVX-512), run-time hidden sizes.
    Gemm,
}

impl Backend {
    /// Hidden sizes of a tower whose config gives none.
    pub fn default_hidden(self) -> Vec<usize> {
        match self {
            Backend::Dfdx => HIDDEN.to_vec(),
            Backend::Gemm => GEMM_HIDDEN.to_vec(),
        }
    }
}

/// What a tower adds to its MLP's logit (`model.interactions`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interactions {
    /// The MLP alone (PaddleRec).
    #[default]
    None,
    /// `Σ_{i<j} r_ij·⟨x_i, x_j⟩` over the fields' pooled embeddings, `r` per tower (FwFM;
    /// [`pairs`]); gemm only.
    FieldWeighted,
}

impl Interactions {
    pub fn is_none(&self) -> bool {
        *self == Interactions::None
    }
}

/// Backend and hidden sizes of the towers (checkpoints without it are dfdx `[256, 64]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TowerSpec {
    pub backend: Backend,
    pub ctr_fc_sizes: Vec<usize>,
    pub cvr_fc_sizes: Vec<usize>,
    /// Auxiliary towers after the two (the CVR tower's shape and input, used in training only:
    /// ESCM²-DR's imputation tower, DCMT's counterfactual tower); gemm only.
    #[serde(skip_serializing_if = "is_zero")]
    pub aux_towers: usize,
    /// Pairwise field interactions added to every tower's logit.
    #[serde(skip_serializing_if = "Interactions::is_none")]
    pub interactions: Interactions,
    /// A mixture of experts under the towers ([`mmoe`]): every tower reads its own gate's
    /// mixture, and its hidden sizes are the mixture's `tower_sizes` (`*_fc_sizes` unused); gemm
    /// only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mmoe: Option<Mmoe>,
    /// AITM's transfer ([`transfer`]): the CVR tower's output layer reads an attention over its
    /// last hidden layer and the CTR tower's, mapped; gemm only.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub transfer: bool,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Default for TowerSpec {
    fn default() -> Self {
        Self {
            backend: Backend::Dfdx,
            ctr_fc_sizes: HIDDEN.to_vec(),
            cvr_fc_sizes: HIDDEN.to_vec(),
            aux_towers: 0,
            interactions: Interactions::None,
            mmoe: None,
            transfer: false,
        }
    }
}

impl TowerSpec {
    /// Towers: CTR, CVR and the auxiliary ones.
    pub fn towers(&self) -> usize {
        2 + self.aux_towers
    }

    /// Hidden widths of the CTR tower and of the CVR tower (and the auxiliary ones).
    pub fn hidden(&self) -> (&[usize], &[usize]) {
        match &self.mmoe {
            Some(m) => (&m.tower_sizes, &m.tower_sizes),
            None => (&self.ctr_fc_sizes, &self.cvr_fc_sizes),
        }
    }

    /// Layer widths of every tower at embedding dimension `dim` (CTR, CVR, then the auxiliary
    /// ones), input first (the embeddings, or the mixture's width), 1 output last.
    fn sizes(&self, dim: usize) -> Vec<Vec<usize>> {
        let input = self.mmoe.as_ref().map_or(input_width(dim), |m| m.expert_size);
        let widths = |hidden: &[usize]| {
            let mut s = vec![input];
            s.extend_from_slice(hidden);
            s.push(1);
            s
        };
        let (ctr, cvr) = self.hidden();
        let mut sizes = vec![widths(ctr), widths(cvr)];
        sizes.extend((0..self.aux_towers).map(|_| widths(cvr)));
        sizes
    }

    /// Parameter tensors of the CTR tower and of the CVR tower (the auxiliary towers' follow).
    pub fn main_tensors(&self) -> (usize, usize) {
        let (ctr, cvr) = self.hidden();
        (2 * (ctr.len() + 1), 2 * (cvr.len() + 1))
    }

    /// Where the mixture's tensors start, where the transfer's start, and where the pair
    /// weights start (each after the ones before, all after every tower's layers).
    fn tensor_offsets(&self) -> [usize; 3] {
        let (ctr, cvr) = self.main_tensors();
        let mixture = ctr + cvr * (self.towers() - 1);
        let transfer = mixture + if self.mmoe.is_some() { mmoe::TENSORS } else { 0 };
        [mixture, transfer, transfer + if self.transfer { transfer::TENSORS } else { 0 }]
    }

    /// The index of the mixture's first tensor, with a mixture.
    pub fn mixture_tensor(&self) -> Option<usize> {
        self.mmoe.as_ref().map(|_| self.tensor_offsets()[0])
    }

    /// The index of the transfer's first tensor, with AITM's transfer.
    pub fn transfer_tensor(&self) -> Option<usize> {
        self.transfer.then(|| self.tensor_offsets()[1])
    }

    /// The index of tower `t`'s pair weights among the parameter tensors, when the towers have
    /// interactions.
    pub fn pair_tensor(&self, t: usize) -> Option<usize> {
        (!self.interactions.is_none() && t < self.towers()).then(|| self.tensor_offsets()[2] + t)
    }

    /// Whether the backend can run these sizes on embeddings of `dim`.
    pub fn validate(&self, dim: usize) -> anyhow::Result<()> {
        anyhow::ensure!(dim >= 1, "model.embedding_dim must be >= 1, got {dim}");
        anyhow::ensure!(
            self.backend == Backend::Gemm || dim == DEFAULT_EMB_DIM,
            "model.embedding_dim: model.backend: dfdx is compiled for {DEFAULT_EMB_DIM}, got {dim} (model.backend: gemm takes any size)"
        );
        anyhow::ensure!(
            self.backend == Backend::Gemm || self.aux_towers == 0,
            "model.backend: dfdx has the CTR and the CVR tower only; this model kind needs model.backend: gemm"
        );
        anyhow::ensure!(
            self.backend == Backend::Gemm || !self.transfer,
            "model.backend: dfdx has the two plain towers only; model.kind: aitm needs model.backend: gemm"
        );
        anyhow::ensure!(
            self.backend == Backend::Gemm || self.interactions.is_none(),
            "model.interactions: the dfdx towers are the MLP alone; field interactions need model.backend: gemm"
        );
        if let Some(m) = &self.mmoe {
            anyhow::ensure!(
                self.backend == Backend::Gemm,
                "model.backbone: mmoe runs on model.backend: gemm (dfdx has the two towers only)"
            );
            anyhow::ensure!(
                self.interactions.is_none(),
                "model.interactions: the pair terms read the fields' embeddings, the towers of model.backbone: mmoe read the experts' mixture; use one of the two"
            );
            m.validate()?;
        }
        for (key, hidden) in [("ctr_fc_sizes", &self.ctr_fc_sizes), ("cvr_fc_sizes", &self.cvr_fc_sizes)] {
            match self.backend {
                Backend::Dfdx => anyhow::ensure!(
                    hidden[..] == HIDDEN,
                    "model.{key}: the dfdx towers are compiled for {HIDDEN:?}, got {hidden:?} (model.backend: gemm takes any sizes)"
                ),
                Backend::Gemm => anyhow::ensure!(
                    !hidden.is_empty() && hidden.iter().all(|&w| w >= 1),
                    "model.{key}: needs at least one hidden layer, every width >= 1, got {hidden:?}"
                ),
            }
        }
        Ok(())
    }
}

enum Inner {
    Dfdx(dfdx::DfdxTowers),
    Gemm(gemm::GemmTowers),
}

/// Both towers, their Adam moments and step count.
pub struct Towers {
    spec: TowerSpec,
    /// The embedding dimension of the inputs (`23 × dim` wide).
    dim: usize,
    inner: Inner,
    adam: DenseAdam,
    step: u64,
    /// Parameter tensor lengths, in [`Towers::params`] order.
    lens: Vec<usize>,
    /// Per parameter tensor: first and second moments.
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

/// Gradients of one step, per parameter tensor in [`Towers::params`] order.
pub struct TowerGrads(Vec<Vec<f32>>);

impl TowerGrads {
    pub fn tensors(&self) -> &[Vec<f32>] {
        &self.0
    }
}

/// Gradients given as tensors in [`Towers::params`] order (tests, tools).
impl From<Vec<Vec<f32>>> for TowerGrads {
    fn from(tensors: Vec<Vec<f32>>) -> Self {
        Self(tensors)
    }
}

/// One Adam update of `p` in place (PyTorch's formula; `c1`, `c2` the bias corrections).
#[inline]
fn adam_update(a: &DenseAdam, c1: f32, c2: f32, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    let DenseAdam { lr, beta1, beta2, eps } = *a;
    for k in 0..p.len() {
        m[k] = beta1 * m[k] + (1.0 - beta1) * g[k];
        v[k] = beta2 * v[k] + (1.0 - beta2) * g[k] * g[k];
        p[k] -= lr * (m[k] / c1) / ((v[k] / c2).sqrt() + eps);
    }
}

impl Towers {
    /// Towers `spec` on embeddings of `dim` (input width `23 × dim`), with PaddleRec's
    /// initialization: weights normal(0, 1/√fan_in) from `normal01` (ctr tower then cvr, layer
    /// by layer, row-major), biases 0.
    pub fn with_spec(
        spec: &TowerSpec,
        dim: usize,
        adam: DenseAdam,
        mut normal01: impl FnMut() -> f32,
    ) -> anyhow::Result<Self> {
        spec.validate(dim)?;
        let mut params = Vec::new();
        for sizes in spec.sizes(dim) {
            for w in sizes.windows(2) {
                let (inp, out) = (w[0], w[1]);
                let sd = 1.0 / (inp as f32).sqrt();
                params.push((0..out * inp).map(|_| normal01() * sd).collect::<Vec<f32>>());
                params.push(vec![0.0; out]);
            }
        }
        // pair weights: the CTR tower's start at 1 (a plain FM, so the embeddings learn the
        // pairs' dot products from the first step), the other towers' at 0 (their MLPs alone)
        if let Some(m) = &spec.mmoe {
            // experts' and gates' weights normal(0, 1/√input) like the towers', biases 0
            let input = input_width(dim);
            let sd = 1.0 / (input as f32).sqrt();
            for (k, len) in m.lens(input, spec.towers()).into_iter().enumerate() {
                let weight = k % 2 == 0;
                params.push((0..len).map(|_| if weight { normal01() * sd } else { 0.0 }).collect());
            }
        }
        if spec.transfer {
            let (ctr, cvr) = spec.hidden();
            let (hc, h) = (*ctr.last().expect("a hidden layer"), *cvr.last().expect("a hidden layer"));
            for (k, len) in transfer::lens(hc, h).into_iter().enumerate() {
                let sd = 1.0 / (if k == 0 { hc } else { h } as f32).sqrt();
                params.push((0..len).map(|_| if k == 1 { 0.0 } else { normal01() * sd }).collect());
            }
        }
        let towers = spec.sizes(dim).len();
        let pair_tensors = if spec.interactions.is_none() { 0 } else { towers };
        for t in 0..pair_tensors {
            let r0 = if t == 0 { 1.0 } else { 0.0 };
            let upper = |k: usize| if k % FIELDS.len() > k / FIELDS.len() { r0 } else { 0.0 };
            params.push((0..pairs::LEN).map(upper).collect::<Vec<f32>>());
        }
        let interactions = !spec.interactions.is_none();
        let inner = match spec.backend {
            Backend::Dfdx => Inner::Dfdx(dfdx::DfdxTowers::new(&params)),
            Backend::Gemm => {
                let mix = spec.mmoe.as_ref().map(|m| (m, input_width(dim)));
                Inner::Gemm(gemm::GemmTowers::new(spec.sizes(dim), &params, interactions, mix, spec.transfer))
            }
        };
        let lens: Vec<usize> = params.iter().map(Vec::len).collect();
        let m: Vec<Vec<f32>> = lens.iter().map(|&n| vec![0.0; n]).collect();
        Ok(Self { spec: spec.clone(), dim, inner, adam, step: 0, lens, v: m.clone(), m })
    }

    /// Towers `spec` holding the parameters `p` (a frozen copy, a loaded checkpoint), Adam fresh.
    pub fn from_params(spec: &TowerSpec, dim: usize, adam: DenseAdam, p: &[Vec<f32>]) -> anyhow::Result<Self> {
        let mut towers = Self::with_spec(spec, dim, adam, || 0.0)?;
        towers.set_params(p)?;
        Ok(towers)
    }

    pub fn spec(&self) -> &TowerSpec {
        &self.spec
    }

    /// The embedding dimension the towers take (their input is `23 × dim` wide).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Parameter tensor lengths, in [`Towers::params`] order.
    pub fn lens(&self) -> &[usize] {
        &self.lens
    }

    /// All parameter values: ctr (w1 b1 w2 b2 w3 b3) then cvr (then the auxiliary towers', then
    /// the pair weights).
    pub fn params(&self) -> Vec<Vec<f32>> {
        match &self.inner {
            Inner::Dfdx(t) => t.params(),
            Inner::Gemm(t) => t.params(),
        }
    }

    pub fn set_params(&mut self, p: &[Vec<f32>]) -> anyhow::Result<()> {
        let got: Vec<usize> = p.iter().map(Vec::len).collect();
        anyhow::ensure!(got == self.lens, "tower parameter shapes {got:?} differ from the model's {:?}", self.lens);
        match &mut self.inner {
            Inner::Dfdx(t) => t.set_params(p),
            Inner::Gemm(t) => t.set_params(p),
        }
        Ok(())
    }

    /// Sets the output bias of the ctr and the cvr tower (logits).
    pub fn set_output_biases(&mut self, [ctr, cvr]: [f32; 2]) {
        let mut p = self.params();
        let (ctr_tensors, cvr_tensors) = self.spec.main_tensors();
        p[ctr_tensors - 1][0] = ctr;
        p[ctr_tensors + cvr_tensors - 1][0] = cvr;
        self.set_params(&p).expect("the towers' own shapes");
    }

    /// Sets the output bias (logit) of every auxiliary tower.
    pub fn set_aux_output_bias(&mut self, bias: f32) {
        let mut p = self.params();
        let (ctr, cvr) = self.spec.main_tensors();
        for t in 0..self.spec.aux_towers {
            p[ctr + cvr * (t + 2) - 1][0] = bias;
        }
        self.set_params(&p).expect("the towers' own shapes");
    }

    /// (step, first moments, second moments), for checkpoints.
    pub fn adam_state(&self) -> (u64, &[Vec<f32>], &[Vec<f32>]) {
        (self.step, &self.m, &self.v)
    }

    pub fn set_adam_state(&mut self, step: u64, m: Vec<Vec<f32>>, v: Vec<Vec<f32>>) -> anyhow::Result<()> {
        anyhow::ensure!(
            m.iter().map(Vec::len).eq(self.lens.iter().copied())
                && v.iter().map(Vec::len).eq(self.lens.iter().copied()),
            "Adam state shapes differ"
        );
        self.step = step;
        self.m = m;
        self.v = v;
        Ok(())
    }

    /// Logits of the CTR and the CVR tower for `n` rows (`xc` feeds the CTR tower, `xv` the
    /// CVR tower): what predicts.
    pub fn forward(&self, xc: &[f32], xv: &[f32], n: usize) -> (Vec<f32>, Vec<f32>) {
        match &self.inner {
            Inner::Dfdx(t) => t.forward(xc, xv, n),
            Inner::Gemm(t) => {
                let [zc, zv]: [Vec<f32>; 2] = t.forward(xc, xv, n, 2).try_into().expect("two towers");
                (zc, zv)
            }
        }
    }

    /// Logits of every tower (CTR, CVR, then the auxiliary ones, which read `xv`): what the
    /// objective needs.
    pub fn forward_all(&self, xc: &[f32], xv: &[f32], n: usize) -> Vec<Vec<f32>> {
        match &self.inner {
            Inner::Dfdx(t) => {
                let (zc, zv) = t.forward(xc, xv, n);
                vec![zc, zv]
            }
            Inner::Gemm(t) => t.forward(xc, xv, n, 2 + self.spec.aux_towers),
        }
    }

    /// One backward pass: `grad(logits)` returns the loss gradients w.r.t. every tower's logits
    /// (the order of [`Towers::forward_all`]); the input gradients (for `xc` and `xv`, `[n × input
    /// width]`, the auxiliary towers' added to `xv`'s) go to `dx` (buffers reused from step to
    /// step), the parameter gradients are returned.
    pub fn backward(
        &mut self,
        xc: &[f32],
        xv: &[f32],
        n: usize,
        dx: (&mut Vec<f32>, &mut Vec<f32>),
        grad: impl FnOnce(&[&[f32]]) -> Vec<Vec<f32>>,
    ) -> TowerGrads {
        TowerGrads(match &mut self.inner {
            Inner::Dfdx(t) => t.backward(xc, xv, n, dx, grad),
            Inner::Gemm(t) => t.backward(xc, xv, n, dx, grad),
        })
    }

    /// Adam on every tower parameter (in place for gemm; dfdx's are copied out and back).
    /// Sets the Adam learning rate (schedules); moments and step count are kept.
    pub fn set_lr(&mut self, lr: f32) {
        self.adam.lr = lr;
    }

    pub fn apply(&mut self, grads: &TowerGrads) {
        self.step += 1;
        let t = self.step as i32;
        let c1 = 1.0 - self.adam.beta1.powi(t);
        let c2 = 1.0 - self.adam.beta2.powi(t);
        let adam = &self.adam;
        let moments = self.m.iter_mut().zip(self.v.iter_mut());
        match &mut self.inner {
            Inner::Dfdx(tw) => {
                let mut params = tw.params();
                for ((p, g), (m, v)) in params.iter_mut().zip(&grads.0).zip(moments) {
                    adam_update(adam, c1, c2, p, g, m, v);
                }
                tw.set_params(&params);
            }
            Inner::Gemm(tw) => {
                // Element-wise, so splitting it over threads changes no result.
                const CHUNK: usize = 1 << 14;
                let tensors: Vec<_> = tw.params_mut().zip(&grads.0).zip(moments).collect();
                tensors.into_par_iter().for_each(|((p, g), (m, v))| {
                    let chunks = p.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK));
                    chunks.zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK))).for_each(|((p, g), (m, v))| {
                        adam_update(adam, c1, c2, p, g, m, v);
                    });
                });
            }
        }
    }

    /// Hands the gradient buffers of an applied step back, so the next step reuses them (gemm).
    pub fn recycle(&mut self, grads: TowerGrads) {
        if let Inner::Gemm(t) = &mut self.inner {
            t.recycle(grads.0);
        }
    }
}
