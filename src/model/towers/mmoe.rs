//! The multi-gate mixture-of-experts backbone (`model.backbone: mmoe`; Ma et al., KDD 2018), as
//! PaddleRec's escm2 and mmoe models put it under their task towers: `E` experts, each a ReLU
//! layer `input → S`, read the pooled embeddings; every task (CTR, CVR, then any auxiliary
//! tower) has its own gate, a softmax over the experts of a linear map of the same input, and
//! its tower reads the gate-weighted sum of the experts' outputs (`S` wide) instead of the
//! embeddings.
//!
//! All experts are one GEMM (`[E·S × input]` weights), all gates one more (`[T·E × input]`);
//! mixing and the softmax are per-row loops. Backward: `dM_t` (each tower's input gradient)
//! gives the experts' gradient `dH = Σ_t g_t ⊗ dM_t` (ReLU-masked) and the gates' `dg_t[e] =
//! ⟨dM_t, H_e⟩` through the softmax's Jacobian; the weights' gradients and `dX = dH·W_e + dA·W_g`
//! are four GEMMs. The GEMMs split their outputs, never a sum, so any thread count gives the
//! same values.

use gemm::Parallelism;
use serde::{Deserialize, Serialize};

use super::gemm::mm;

/// Parameter tensors of the mixture: experts' W, b, gates' W, b.
pub const TENSORS: usize = 4;

/// The mixture's shape (`model.mmoe`; PaddleRec `expert_num`, `expert_size`, `tower_size`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Mmoe {
    /// Number of experts (PaddleRec `expert_num`).
    pub experts: usize,
    /// Output width of every expert, the task towers' input (PaddleRec `expert_size`).
    pub expert_size: usize,
    /// Hidden widths of every task tower, `expert_size → … → 1` (PaddleRec `tower_size`: one).
    pub tower_sizes: Vec<usize>,
}

impl Default for Mmoe {
    /// PaddleRec escm2's `expert_num: 8`, `expert_size: 16`, `tower_size: 8`.
    fn default() -> Self {
        Self { experts: 8, expert_size: 16, tower_sizes: vec![8] }
    }
}

impl Mmoe {
    /// Lengths of the mixture's parameter tensors for `input` wide rows and `tasks` gates:
    /// experts' weights `[E·S × input]` and biases, gates' weights `[T·E × input]` and biases.
    pub fn lens(&self, input: usize, tasks: usize) -> [usize; TENSORS] {
        let (es, te) = (self.experts * self.expert_size, tasks * self.experts);
        [es * input, es, te * input, te]
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.experts >= 1, "model.mmoe.experts must be >= 1, got {}", self.experts);
        anyhow::ensure!(self.expert_size >= 1, "model.mmoe.expert_size must be >= 1, got {}", self.expert_size);
        anyhow::ensure!(
            !self.tower_sizes.is_empty() && self.tower_sizes.iter().all(|&w| w >= 1),
            "model.mmoe.tower_sizes: needs at least one hidden layer, every width >= 1, got {:?}",
            self.tower_sizes
        );
        Ok(())
    }
}

/// The experts and the gates; `p` = [experts' W, b, gates' W, b].
pub struct Mixture {
    input: usize,
    experts: usize,
    size: usize,
    tasks: usize,
    pub p: Vec<Vec<f32>>,
}

/// The mixture's buffers for one batch (they only grow).
#[derive(Default)]
pub struct MixScratch {
    /// Experts' outputs after ReLU, `[n × E·S]`.
    h: Vec<f32>,
    /// Gate weights, `[n × T·E]` (each task's `E` sum to 1).
    g: Vec<f32>,
    /// Per task: its tower's input `[n × S]`, and that input's gradient.
    pub m: Vec<Vec<f32>>,
    pub dm: Vec<Vec<f32>>,
    /// Gradients of the experts' pre-activations and of the gates' logits.
    dh: Vec<f32>,
    da: Vec<f32>,
}

impl Mixture {
    /// The mixture of `spec` on `input` wide rows with one gate per each of `tasks`, holding `p`
    /// (lengths as [`Mmoe::lens`]).
    pub fn new(spec: &Mmoe, input: usize, tasks: usize, p: &[Vec<f32>]) -> Self {
        Self { input, experts: spec.experts, size: spec.expert_size, tasks, p: p.to_vec() }
    }

    /// The width of the rows it reads.
    pub fn input(&self) -> usize {
        self.input
    }

    /// The towers' inputs of `n` rows of `x` into `s.m`.
    pub fn forward(&self, x: &[f32], n: usize, s: &mut MixScratch, par: Parallelism) {
        let (d, e, sz) = (self.input, self.experts, self.size);
        let (es, te) = (e * sz, self.tasks * e);
        s.h.resize(n * es, 0.0);
        s.g.resize(n * te, 0.0);
        s.m.resize_with(self.tasks, Vec::new);
        s.dm.resize_with(self.tasks, Vec::new);
        let x = &x[..n * d];
        mm((n, es, d), &mut s.h[..n * es], es, false, x, (d, 1), &self.p[0], (1, d), par);
        for row in s.h[..n * es].chunks_exact_mut(es) {
            row.iter_mut().zip(&self.p[1]).for_each(|(v, &b)| *v = (*v + b).max(0.0));
        }
        mm((n, te, d), &mut s.g[..n * te], te, false, x, (d, 1), &self.p[2], (1, d), par);
        for row in s.g[..n * te].chunks_exact_mut(te) {
            row.iter_mut().zip(&self.p[3]).for_each(|(v, &b)| *v += b);
            row.chunks_exact_mut(e).for_each(softmax);
        }
        for (t, m) in s.m.iter_mut().enumerate() {
            m.resize(n * sz, 0.0);
            for ((mi, hi), gi) in m.chunks_exact_mut(sz).zip(s.h.chunks_exact(es)).zip(s.g.chunks_exact(te)).take(n) {
                mi.iter_mut().for_each(|v| *v = 0.0);
                for (he, &ge) in hi.chunks_exact(sz).zip(&gi[t * e..(t + 1) * e]) {
                    mi.iter_mut().zip(he).for_each(|(v, &h)| *v += ge * h);
                }
            }
        }
    }

    /// Backward after [`Mixture::forward`] on the same `x`, with every tower's input gradient in
    /// `s.dm`: the input gradient to `dx[..n × input]` and the four parameter gradients to
    /// `grads`, overwritten.
    pub fn backward(
        &self,
        x: &[f32],
        n: usize,
        s: &mut MixScratch,
        dx: &mut [f32],
        grads: &mut [Vec<f32>],
        par: Parallelism,
    ) {
        let (d, e, sz) = (self.input, self.experts, self.size);
        let (es, te) = (e * sz, self.tasks * e);
        s.dh.resize(n * es, 0.0);
        s.da.resize(n * te, 0.0);
        let MixScratch { h, g, dm, dh, da, .. } = s;
        for i in 0..n {
            let (hi, gi) = (&h[i * es..(i + 1) * es], &g[i * te..(i + 1) * te]);
            let (dhi, dai) = (&mut dh[i * es..(i + 1) * es], &mut da[i * te..(i + 1) * te]);
            dhi.iter_mut().for_each(|v| *v = 0.0);
            for t in 0..self.tasks {
                let dmi = &dm[t][i * sz..(i + 1) * sz];
                let (gt, dat) = (&gi[t * e..(t + 1) * e], &mut dai[t * e..(t + 1) * e]);
                for k in 0..e {
                    let he = &hi[k * sz..(k + 1) * sz];
                    dat[k] = dmi.iter().zip(he).map(|(a, b)| a * b).sum();
                    dhi[k * sz..(k + 1) * sz].iter_mut().zip(dmi).for_each(|(v, &dmv)| *v += gt[k] * dmv);
                }
                // softmax backward: dA = g ⊙ (dg − ⟨g, dg⟩)
                let dot: f32 = gt.iter().zip(dat.iter()).map(|(a, b)| a * b).sum();
                dat.iter_mut().zip(gt).for_each(|(v, &gk)| *v = gk * (*v - dot));
            }
            dhi.iter_mut().zip(hi).for_each(|(v, &hv)| *v = if hv <= 0.0 { 0.0 } else { *v });
        }
        let (x, dh, da) = (&x[..n * d], &dh[..n * es], &da[..n * te]);
        mm((es, d, n), &mut grads[0], d, false, dh, (1, es), x, (d, 1), par);
        column_sums(dh, es, &mut grads[1]);
        mm((te, d, n), &mut grads[2], d, false, da, (1, te), x, (d, 1), par);
        column_sums(da, te, &mut grads[3]);
        let dx = &mut dx[..n * d];
        mm((n, d, es), dx, d, false, dh, (es, 1), &self.p[0], (d, 1), par);
        mm((n, d, te), dx, d, true, da, (te, 1), &self.p[2], (d, 1), par);
    }
}

/// In-place softmax of one gate's logits.
fn softmax(z: &mut [f32]) {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    z.iter_mut().for_each(|v| *v = (*v - max).exp());
    let sum: f32 = z.iter().sum();
    z.iter_mut().for_each(|v| *v /= sum);
}

/// `out[j] = Σ_rows a[row, j]` for `a` `[rows × width]`.
fn column_sums(a: &[f32], width: usize, out: &mut [f32]) {
    out.iter_mut().for_each(|v| *v = 0.0);
    for row in a.chunks_exact(width) {
        out.iter_mut().zip(row).for_each(|(o, &v)| *o += v);
    }
}
