//! The embedding table, outside dfdx: a flat `f32` buffer of `rows × dim` weights with the
//! optimizer state stored beside each row (one cache line neighbourhood per row), and sparse
//! updates that touch only the rows a batch used. Touched rows are found through a slot index
//! (no sort, no hash map), so a step costs O(touched rows × dim), never O(table).

use serde::{Deserialize, Serialize};

/// Sparse optimizers for the table.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SparseOptimizer {
    /// Lazy Adam (PaddleRec `lazy_mode`, PyTorch `SparseAdam`): moments of untouched rows are
    /// left alone; bias correction uses the global step.
    Adam { lr: f32, beta1: f32, beta2: f32, eps: f32 },
    /// Adagrad with per-coordinate accumulators.
    Adagrad { lr: f32, eps: f32, initial_accumulator: f32 },
}

impl SparseOptimizer {
    /// State floats per weight.
    fn slots(&self) -> usize {
        match self {
            SparseOptimizer::Adam { .. } => 2,
            SparseOptimizer::Adagrad { .. } => 1,
        }
    }
}

/// Gradients of the rows a batch touched.
pub struct SparseGrad {
    dim: usize,
    slot: Vec<u32>,
    touched: Vec<u32>,
    grads: Vec<f32>,
}

const UNTOUCHED: u32 = u32::MAX;

impl SparseGrad {
    pub fn new(rows: usize, dim: usize) -> Self {
        Self { dim, slot: vec![UNTOUCHED; rows], touched: Vec::new(), grads: Vec::new() }
    }

    /// Accumulates `scale · g` into the gradient of `row`.
    #[inline]
    pub fn add(&mut self, row: u32, scale: f32, g: &[f32]) {
        let r = row as usize;
        let mut s = self.slot[r];
        if s == UNTOUCHED {
            s = self.touched.len() as u32;
            self.slot[r] = s;
            self.touched.push(row);
            self.grads.resize(self.grads.len() + self.dim, 0.0);
        }
        let dst = &mut self.grads[s as usize * self.dim..(s as usize + 1) * self.dim];
        for (d, &x) in dst.iter_mut().zip(g) {
            *d += scale * x;
        }
    }

    pub fn touched(&self) -> &[u32] {
        &self.touched
    }

    /// Gradient of the `i`-th touched row.
    pub fn grad(&self, i: usize) -> &[f32] {
        &self.grads[i * self.dim..(i + 1) * self.dim]
    }

    /// Gradient of `row`, if touched.
    pub fn get(&self, row: u32) -> Option<&[f32]> {
        match self.slot[row as usize] {
            UNTOUCHED => None,
            s => Some(self.grad(s as usize)),
        }
    }

    pub fn clear(&mut self) {
        for &r in &self.touched {
            self.slot[r as usize] = UNTOUCHED;
        }
        self.touched.clear();
        self.grads.clear();
    }
}

/// The table: row `r` occupies `data[r·stride .. (r+1)·stride]` = weights, then optimizer state.
#[derive(Serialize, Deserialize)]
pub struct Embedding {
    pub rows: usize,
    pub dim: usize,
    stride: usize,
    pub optimizer: SparseOptimizer,
    /// Optimizer steps taken (Adam's bias correction).
    pub step: u64,
    #[serde(skip)]
    data: Vec<f32>,
}

impl Embedding {
    /// Weights uniform in `[-scale, scale]` from `rng` (a `u64 → f32 in [0,1)` stream), state zero
    /// (Adagrad: `initial_accumulator`). Row 0 (padding) is zero.
    pub fn new(
        rows: usize,
        dim: usize,
        optimizer: SparseOptimizer,
        scale: f32,
        mut uniform01: impl FnMut() -> f32,
    ) -> Self {
        let stride = dim * (1 + optimizer.slots());
        let mut data = vec![0.0f32; rows * stride];
        let init = match optimizer {
            SparseOptimizer::Adagrad { initial_accumulator, .. } => initial_accumulator,
            SparseOptimizer::Adam { .. } => 0.0,
        };
        for r in 0..rows {
            let row = &mut data[r * stride..(r + 1) * stride];
            for w in &mut row[..dim] {
                *w = if r == 0 { 0.0 } else { (2.0 * uniform01() - 1.0) * scale };
            }
            row[dim..].fill(init);
        }
        Self { rows, dim, stride, optimizer, step: 0, data }
    }

    /// A copy without the buffer (checkpoint headers).
    pub fn meta(&self) -> Self {
        Self {
            rows: self.rows,
            dim: self.dim,
            stride: self.stride,
            optimizer: self.optimizer,
            step: self.step,
            data: Vec::new(),
        }
    }

    /// Weights of `row`.
    #[inline]
    pub fn weights(&self, row: u32) -> &[f32] {
        let o = row as usize * self.stride;
        &self.data[o..o + self.dim]
    }

    /// Mutable weights of `row` (gradient checks, tests).
    pub fn weights_mut(&mut self, row: u32) -> &mut [f32] {
        let o = row as usize * self.stride;
        &mut self.data[o..o + self.dim]
    }

    /// The raw buffer (weights and state interleaved per row), for checkpoints.
    pub fn raw(&self) -> &[f32] {
        &self.data
    }

    pub fn set_raw(&mut self, data: Vec<f32>) -> anyhow::Result<()> {
        anyhow::ensure!(
            data.len() == self.rows * self.stride,
            "embedding buffer has {} floats, expected {}",
            data.len(),
            self.rows * self.stride
        );
        self.data = data;
        Ok(())
    }

    /// One optimizer step on the touched rows of `g` (row 0, padding, never moves); clears `g`.
    pub fn apply(&mut self, g: &mut SparseGrad) {
        self.step += 1;
        let dim = self.dim;
        match self.optimizer {
            SparseOptimizer::Adam { lr, beta1, beta2, eps } => {
                let t = self.step as i32;
                let c1 = 1.0 - beta1.powi(t);
                let c2 = 1.0 - beta2.powi(t);
                let step = lr * c2.sqrt() / c1;
                let eps_hat = eps * c2.sqrt();
                for (i, &r) in g.touched.iter().enumerate() {
                    if r == 0 {
                        continue;
                    }
                    let row = &mut self.data[r as usize * self.stride..(r as usize + 1) * self.stride];
                    let (w, state) = row.split_at_mut(dim);
                    let (m, v) = state.split_at_mut(dim);
                    let grad = &g.grads[i * dim..(i + 1) * dim];
                    for k in 0..dim {
                        m[k] = beta1 * m[k] + (1.0 - beta1) * grad[k];
                        v[k] = beta2 * v[k] + (1.0 - beta2) * grad[k] * grad[k];
                        w[k] -= step * m[k] / (v[k].sqrt() + eps_hat);
                    }
                }
            }
            SparseOptimizer::Adagrad { lr, eps, .. } => {
                for (i, &r) in g.touched.iter().enumerate() {
                    if r == 0 {
                        continue;
                    }
                    let row = &mut self.data[r as usize * self.stride..(r as usize + 1) * self.stride];
                    let (w, acc) = row.split_at_mut(dim);
                    let grad = &g.grads[i * dim..(i + 1) * dim];
                    for k in 0..dim {
                        acc[k] += grad[k] * grad[k];
                        w[k] -= lr * grad[k] / (acc[k].sqrt() + eps);
                    }
                }
            }
        }
        g.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(opt: SparseOptimizer) -> Embedding {
        let mut x = 0.0f32;
        Embedding::new(10, 3, opt, 0.1, move || {
            x = (x + 0.37) % 1.0;
            x
        })
    }

    #[test]
    fn adam_moves_only_touched_rows_like_dense_adam() {
        let adam = SparseOptimizer::Adam { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8 };
        let mut e = table(adam);
        let before = e.raw().to_vec();
        let mut g = SparseGrad::new(10, 3);
        g.add(4, 1.0, &[1.0, -2.0, 0.5]);
        g.add(4, 1.0, &[1.0, 0.0, 0.5]);
        g.add(0, 1.0, &[1.0, 1.0, 1.0]);
        assert_eq!(g.get(4), Some(&[2.0, -2.0, 1.0][..]));
        e.apply(&mut g);
        assert!(g.touched().is_empty() && g.get(4).is_none());
        for r in 0..10u32 {
            let moved = e.weights(r) != &before[r as usize * 9..r as usize * 9 + 3];
            assert_eq!(moved, r == 4, "row {r}");
        }
        // First Adam step moves each coordinate by lr · sign(g) (up to eps).
        for (k, &s) in [1.0f32, -1.0, 1.0].iter().enumerate() {
            let delta = e.weights(4)[k] - before[4 * 9 + k];
            assert!((delta + 0.01 * s).abs() < 1e-6, "{delta}");
        }
        assert_eq!(e.weights(0), &[0.0, 0.0, 0.0]);
    }

    #[test]
    fn adagrad_step() {
        let mut e = table(SparseOptimizer::Adagrad { lr: 0.1, eps: 1e-10, initial_accumulator: 0.0 });
        let w0 = e.weights(2).to_vec();
        let mut g = SparseGrad::new(10, 3);
        g.add(2, 2.0, &[1.0, 0.0, -1.0]);
        e.apply(&mut g);
        let w = e.weights(2);
        assert!((w[0] - (w0[0] - 0.1)).abs() < 1e-6);
        assert!((w[1] - w0[1]).abs() < 1e-9);
        assert!((w[2] - (w0[2] + 0.1)).abs() < 1e-6);
    }
}
