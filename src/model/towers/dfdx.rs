//! The reference backend: both towers in dfdx 0.13, `INPUT → 256 → 64 → 1` with ReLU, sized at
//! compile time (the config validates against [`HIDDEN`](super::HIDDEN)).
//!
//! Training: forward with a tape on a leaky-traced input, the caller turns logits into logit
//! gradients, a surrogate `Σ z·g` is back-propagated, and the gradient w.r.t. the input comes
//! back for the embedding scatter (a plain `trace` would drop non-parameter gradients).

use dfdx::nn::builders;
use dfdx::nn::modules::{Linear, ReLU};
use dfdx::nn::{DeviceBuildExt, Module, ModuleMut};
use dfdx::shapes::Const;
use dfdx::tensor::{Cpu, Tensor, TensorFromVec, Trace, WithEmptyTape};
use dfdx::tensor_ops::{Backward, SumTo};

use super::INPUT;

type Spec = ((builders::Linear<INPUT, 256>, ReLU), (builders::Linear<256, 64>, ReLU), builders::Linear<64, 1>);
type Tower = ((Linear<INPUT, 256, f32, Cpu>, ReLU), (Linear<256, 64, f32, Cpu>, ReLU), Linear<64, 1, f32, Cpu>);

/// Both towers as dfdx modules.
pub struct DfdxTowers {
    dev: Cpu,
    ctr: Tower,
    cvr: Tower,
}

macro_rules! each_param {
    ($t:expr, $f:expr) => {{
        let t = $t;
        [$f(&t.0 .0.weight), $f(&t.0 .0.bias), $f(&t.1 .0.weight), $f(&t.1 .0.bias), $f(&t.2.weight), $f(&t.2.bias)]
    }};
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

/// Object-safe gradient lookup of a parameter tensor.
trait AsVecGrad {
    fn grad(&self, grads: &dfdx::tensor::Gradients<f32, Cpu>) -> Vec<f32>;
}
impl<S: dfdx::shapes::Shape> AsVecGrad for Tensor<S, f32, Cpu> {
    fn grad(&self, grads: &dfdx::tensor::Gradients<f32, Cpu>) -> Vec<f32> {
        grads.get(self).as_vec()
    }
}

fn tower_params(t: &Tower) -> [Vec<f32>; 6] {
    each_param!(t, |p: &dyn AsVec| p.to_vec())
}

fn set_tower(t: &mut Tower, vals: &[Vec<f32>]) {
    t.0 .0.weight.copy_from(&vals[0]);
    t.0 .0.bias.copy_from(&vals[1]);
    t.1 .0.weight.copy_from(&vals[2]);
    t.1 .0.bias.copy_from(&vals[3]);
    t.2.weight.copy_from(&vals[4]);
    t.2.bias.copy_from(&vals[5]);
}

impl DfdxTowers {
    /// Towers holding `params` (ctr w1 b1 w2 b2 w3 b3, then cvr; lengths already checked).
    pub fn new(params: &[Vec<f32>]) -> Self {
        let dev = Cpu::seed_from_u64(0);
        let mut ctr = dev.build_module::<Spec, f32>();
        let mut cvr = dev.build_module::<Spec, f32>();
        set_tower(&mut ctr, &params[..6]);
        set_tower(&mut cvr, &params[6..]);
        Self { dev, ctr, cvr }
    }

    pub fn params(&self) -> Vec<Vec<f32>> {
        let mut p: Vec<Vec<f32>> = tower_params(&self.ctr).into();
        p.extend(tower_params(&self.cvr));
        p
    }

    pub fn set_params(&mut self, p: &[Vec<f32>]) {
        set_tower(&mut self.ctr, &p[..6]);
        set_tower(&mut self.cvr, &p[6..]);
    }

    fn input(&self, x: &[f32], n: usize) -> Tensor<(usize, Const<INPUT>), f32, Cpu> {
        self.dev.tensor_from_vec(x.to_vec(), (n, Const::<INPUT>))
    }

    pub fn forward(&self, xc: &[f32], xv: &[f32], n: usize) -> (Vec<f32>, Vec<f32>) {
        let zc = self.ctr.forward(self.input(xc, n)).as_vec();
        let zv = self.cvr.forward(self.input(xv, n)).as_vec();
        (zc, zv)
    }

    pub fn backward(
        &mut self,
        xc: &[f32],
        xv: &[f32],
        n: usize,
        (dxc, dxv): (&mut Vec<f32>, &mut Vec<f32>),
        grad: impl FnOnce(&[&[f32]]) -> Vec<Vec<f32>>,
    ) -> Vec<Vec<f32>> {
        let tc = self.input(xc, n);
        let tv = self.input(xv, n);
        let zc = self.ctr.forward_mut(tc.leaky_trace());
        let zv = self.cvr.forward_mut(tv.leaky_trace().with_empty_tape());
        let [gc, gv]: [Vec<f32>; 2] =
            grad(&[&zc.as_vec(), &zv.as_vec()]).try_into().expect("two towers, two logit gradients");
        let gc = self.dev.tensor_from_vec(gc, (n, Const::<1>));
        let gv = self.dev.tensor_from_vec(gv, (n, Const::<1>));
        let surrogate = (zc * gc).sum::<(), _>() + (zv * gv).sum::<(), _>();
        let grads = surrogate.backward();
        *dxc = grads.get(&tc).as_vec();
        *dxv = grads.get(&tv).as_vec();
        let g = |p: &dyn AsVecGrad| p.grad(&grads);
        let mut pg: Vec<Vec<f32>> = each_param!(&self.ctr, g).into();
        pg.extend(each_param!(&self.cvr, g));
        pg
    }
}
