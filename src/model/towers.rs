//! The two dense towers in dfdx: `input → 256 → 64 → 1` with ReLU, one for CTR and one for CVR.
//! dfdx 0.13 sizes layers at compile time, so the shape is fixed here (23 fields × 12 dims =
//! 276 inputs, PaddleRec's `[256, 64]`); the config validates against these constants.
//!
//! Training: forward with a tape on a leaky-traced input, the caller turns logits into logit
//! gradients (the ESMM loss lives in `esmm.rs`, computed stably from logits), a surrogate
//! `Σ z·g` is back-propagated, and the gradient w.r.t. the input comes back for the embedding
//! scatter. The towers' Adam is ours (same update as PyTorch's), so its state can be
//! checkpointed and a resumed run continues bit-identically.

use dfdx::nn::modules::{Linear, ReLU};
use dfdx::nn::{DeviceBuildExt, Module, ModuleMut};
use dfdx::shapes::Const;
use dfdx::tensor::{Cpu, Tensor, TensorFromVec, Trace, WithEmptyTape};
use dfdx::tensor_ops::{Backward, SumTo};
use serde::{Deserialize, Serialize};

use crate::schema::FIELDS;

/// Embedding dimension the towers are compiled for (PaddleRec `sparse_feature_dim`).
pub const EMB_DIM: usize = 12;
/// Tower input width: every field's pooled embedding, concatenated.
pub const INPUT: usize = FIELDS.len() * EMB_DIM;
/// Hidden sizes the towers are compiled for (PaddleRec `ctr_fc_sizes` / `cvr_fc_sizes`).
pub const HIDDEN: [usize; 2] = [256, 64];

type Spec = ((builders::Linear<INPUT, 256>, ReLU), (builders::Linear<256, 64>, ReLU), builders::Linear<64, 1>);
use dfdx::nn::builders;
type Tower = ((Linear<INPUT, 256, f32, Cpu>, ReLU), (Linear<256, 64, f32, Cpu>, ReLU), Linear<64, 1, f32, Cpu>);

/// Dense Adam hyper-parameters for the tower weights.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DenseAdam {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
}

/// Both towers, their Adam moments and step count.
pub struct Towers {
    dev: Cpu,
    ctr: Tower,
    cvr: Tower,
    adam: DenseAdam,
    step: u64,
    /// Per parameter tensor (see [`Towers::params`] order): first and second moments.
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

/// Gradients of one step, per parameter tensor in [`Towers::params`] order.
pub struct TowerGrads(Vec<Vec<f32>>);

macro_rules! each_param {
    ($t:expr, $f:expr) => {{
        let t = $t;
        [$f(&t.0 .0.weight), $f(&t.0 .0.bias), $f(&t.1 .0.weight), $f(&t.1 .0.bias), $f(&t.2.weight), $f(&t.2.bias)]
    }};
}

fn tower_params(t: &Tower) -> [Vec<f32>; 6] {
    each_param!(t, |p: &dyn AsVec| p.to_vec())
}

/// Object-safe view of a parameter tensor's values.
trait AsVec {
    fn to_vec(&self) -> Vec<f32>;
}
impl<S: dfdx::shapes::Shape> AsVec for Tensor<S, f32, Cpu> {
    fn to_vec(&self) -> Vec<f32> {
        self.as_vec()
    }
}

fn set_tower(t: &mut Tower, vals: &[Vec<f32>]) {
    t.0 .0.weight.copy_from(&vals[0]);
    t.0 .0.bias.copy_from(&vals[1]);
    t.1 .0.weight.copy_from(&vals[2]);
    t.1 .0.bias.copy_from(&vals[3]);
    t.2.weight.copy_from(&vals[4]);
    t.2.bias.copy_from(&vals[5]);
}

impl Towers {
    /// PaddleRec's initialization: weights normal(0, 1/√fan_in), biases 0, from `normal01`.
    pub fn new(adam: DenseAdam, mut normal01: impl FnMut() -> f32) -> Self {
        let dev = Cpu::seed_from_u64(0);
        let mut ctr = dev.build_module::<Spec, f32>();
        let mut cvr = dev.build_module::<Spec, f32>();
        for t in [&mut ctr, &mut cvr] {
            let shapes = [(256usize, INPUT), (64, 256), (1, 64)];
            let mut vals = Vec::new();
            for (out, inp) in shapes {
                let sd = 1.0 / (inp as f32).sqrt();
                vals.push((0..out * inp).map(|_| normal01() * sd).collect::<Vec<f32>>());
                vals.push(vec![0.0; out]);
            }
            set_tower(t, &vals);
        }
        let mut towers = Self { dev, ctr, cvr, adam, step: 0, m: Vec::new(), v: Vec::new() };
        let sizes: Vec<usize> = towers.params().iter().map(Vec::len).collect();
        towers.m = sizes.iter().map(|&n| vec![0.0; n]).collect();
        towers.v = towers.m.clone();
        towers
    }

    /// All parameter values: ctr (w1 b1 w2 b2 w3 b3) then cvr.
    pub fn params(&self) -> Vec<Vec<f32>> {
        let mut p: Vec<Vec<f32>> = tower_params(&self.ctr).into();
        p.extend(tower_params(&self.cvr));
        p
    }

    pub fn set_params(&mut self, p: &[Vec<f32>]) -> anyhow::Result<()> {
        let want: Vec<usize> = self.params().iter().map(Vec::len).collect();
        let got: Vec<usize> = p.iter().map(Vec::len).collect();
        anyhow::ensure!(want == got, "tower parameter shapes {got:?} differ from the compiled {want:?}");
        set_tower(&mut self.ctr, &p[..6]);
        set_tower(&mut self.cvr, &p[6..]);
        Ok(())
    }

    /// (step, first moments, second moments), for checkpoints.
    pub fn adam_state(&self) -> (u64, &[Vec<f32>], &[Vec<f32>]) {
        (self.step, &self.m, &self.v)
    }

    pub fn set_adam_state(&mut self, step: u64, m: Vec<Vec<f32>>, v: Vec<Vec<f32>>) -> anyhow::Result<()> {
        let want: Vec<usize> = self.m.iter().map(Vec::len).collect();
        anyhow::ensure!(
            m.iter().map(Vec::len).eq(want.iter().copied()) && v.iter().map(Vec::len).eq(want.iter().copied()),
            "Adam state shapes differ"
        );
        self.step = step;
        self.m = m;
        self.v = v;
        Ok(())
    }

    fn input(&self, x: &[f32], n: usize) -> Tensor<(usize, Const<INPUT>), f32, Cpu> {
        self.dev.tensor_from_vec(x.to_vec(), (n, Const::<INPUT>))
    }

    /// Logits of both towers for `n` rows (`xc` feeds the CTR tower, `xv` the CVR tower).
    pub fn forward(&self, xc: &[f32], xv: &[f32], n: usize) -> (Vec<f32>, Vec<f32>) {
        let zc = self.ctr.forward(self.input(xc, n)).as_vec();
        let zv = self.cvr.forward(self.input(xv, n)).as_vec();
        (zc, zv)
    }

    /// One backward pass: `grad(zc, zv)` returns the loss gradients w.r.t. both logits; the
    /// result is the input gradients (for `xc` and `xv`) and the parameter gradients.
    pub fn backward(
        &mut self,
        xc: &[f32],
        xv: &[f32],
        n: usize,
        grad: impl FnOnce(&[f32], &[f32]) -> (Vec<f32>, Vec<f32>),
    ) -> (Vec<f32>, Vec<f32>, TowerGrads) {
        let tc = self.input(xc, n);
        let tv = self.input(xv, n);
        let zc = self.ctr.forward_mut(tc.leaky_trace());
        let zv = self.cvr.forward_mut(tv.leaky_trace().with_empty_tape());
        let (gc, gv) = grad(&zc.as_vec(), &zv.as_vec());
        let gc = self.dev.tensor_from_vec(gc, (n, Const::<1>));
        let gv = self.dev.tensor_from_vec(gv, (n, Const::<1>));
        let surrogate = (zc * gc).sum::<(), _>() + (zv * gv).sum::<(), _>();
        let grads = surrogate.backward();
        let dxc = grads.get(&tc).as_vec();
        let dxv = grads.get(&tv).as_vec();
        let g = |p: &dyn AsVecGrad| p.grad(&grads);
        let mut pg: Vec<Vec<f32>> = each_param!(&self.ctr, g).into();
        pg.extend(each_param!(&self.cvr, g));
        (dxc, dxv, TowerGrads(pg))
    }

    /// Adam on every tower parameter.
    pub fn apply(&mut self, grads: &TowerGrads) {
        self.step += 1;
        let DenseAdam { lr, beta1, beta2, eps } = self.adam;
        let t = self.step as i32;
        let c1 = 1.0 - beta1.powi(t);
        let c2 = 1.0 - beta2.powi(t);
        let mut params = self.params();
        for (((p, g), m), v) in params.iter_mut().zip(&grads.0).zip(&mut self.m).zip(&mut self.v) {
            for k in 0..p.len() {
                m[k] = beta1 * m[k] + (1.0 - beta1) * g[k];
                v[k] = beta2 * v[k] + (1.0 - beta2) * g[k] * g[k];
                p[k] -= lr * (m[k] / c1) / ((v[k] / c2).sqrt() + eps);
            }
        }
        set_tower(&mut self.ctr, &params[..6]);
        set_tower(&mut self.cvr, &params[6..]);
    }
}

impl TowerGrads {
    pub fn tensors(&self) -> &[Vec<f32>] {
        &self.0
    }
}

/// Object-safe gradient lookup of a parameter tensor.
trait AsVecGrad {
    fn grad(&self, grads: &dfdx::tensor::Gradients<f32, Cpu>) -> Vec<f32>;
}
impl<S: dfdx::shapes::Shape> AsVecGrad for Tensor<S, f32, Cpu> {
    fn grad(&self, grads: &dfdx::tensor::Gradients<f32, Cpu>) -> Vec<f32> {
        grads.get(self).as_vec()
    }
}
