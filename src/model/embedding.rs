//! The embedding table, outside dfdx: a flat `f32` buffer of `rows × dim` weights with the
//! optimizer state stored beside each row (one cache line neighbourhood per row), and sparse
//! updates that touch only the rows a batch used. Touched rows are found through a small
//! open-addressing index sized to the batch (no sort), so a step costs O(touched rows × dim),
//! never O(table); the partitions of a step are applied in parallel.

use rayon::prelude::*;
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
    /// The same optimizer with learning rate `lr`.
    pub fn with_lr(self, lr: f32) -> Self {
        match self {
            SparseOptimizer::Adam { beta1, beta2, eps, .. } => SparseOptimizer::Adam { lr, beta1, beta2, eps },
            SparseOptimizer::Adagrad { eps, initial_accumulator, .. } => {
                SparseOptimizer::Adagrad { lr, eps, initial_accumulator }
            }
        }
    }

    pub fn lr(&self) -> f32 {
        match *self {
            SparseOptimizer::Adam { lr, .. } | SparseOptimizer::Adagrad { lr, .. } => lr,
        }
    }

    /// State floats per weight.
    fn slots(&self) -> usize {
        match self {
            SparseOptimizer::Adam { .. } => 2,
            SparseOptimizer::Adagrad { .. } => 1,
        }
    }
}

/// Gradients of the rows a batch touched, in order of first touch.
///
/// Rows are found through a small open-addressing index sized to the batch (twice the touched
/// rows, a power of two), not a slot per table row: it stays in the core's L2 cache while the
/// table streams through memory, and clearing it costs O(touched rows).
pub struct SparseGrad {
    dim: usize,
    /// `(row + 1, slot)`; `row + 1 == 0` marks an empty entry. Linear probing.
    index: Vec<(u32, u32)>,
    /// log2 of `index.len()`.
    bits: u32,
    /// Per touched row: its index position (for clearing).
    at: Vec<u32>,
    touched: Vec<u32>,
    grads: Vec<f32>,
}

const EMPTY: (u32, u32) = (0, 0);

impl SparseGrad {
    pub fn new(dim: usize) -> Self {
        let bits = 12;
        Self { dim, index: vec![EMPTY; 1 << bits], bits, at: Vec::new(), touched: Vec::new(), grads: Vec::new() }
    }

    /// First probe position of `row` (Fibonacci hashing: the high bits of a multiplicative
    /// hash, so rows that share their low bits, as a partition's do, still spread).
    #[inline]
    fn home(&self, row: u32) -> usize {
        ((row as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - self.bits)) as usize
    }

    /// Index position of `row`: its entry, or the empty entry where it would go.
    #[inline]
    fn probe(&self, row: u32) -> usize {
        let mask = self.index.len() - 1;
        let mut h = self.home(row);
        loop {
            let k = self.index[h].0;
            if k == row.wrapping_add(1) || k == 0 {
                return h;
            }
            h = (h + 1) & mask;
        }
    }

    /// Doubles the index and re-inserts the touched rows.
    fn grow(&mut self) {
        self.bits += 1;
        self.index = vec![EMPTY; 1 << self.bits];
        for (s, &row) in self.touched.iter().enumerate() {
            let h = self.probe(row);
            self.index[h] = (row + 1, s as u32);
            self.at[s] = h as u32;
        }
    }

    /// Accumulates `scale · g` into the gradient of `row`.
    #[inline]
    pub fn add(&mut self, row: u32, scale: f32, g: &[f32]) {
        let g = &g[..self.dim];
        let h = self.probe(row);
        match self.index[h] {
            EMPTY => {
                let s = self.touched.len();
                self.index[h] = (row + 1, s as u32);
                self.at.push(h as u32);
                self.touched.push(row);
                self.grads.extend(g.iter().map(|&x| scale * x));
                if 2 * self.touched.len() > self.index.len() {
                    self.grow();
                }
            }
            (_, s) => {
                let dst = &mut self.grads[s as usize * self.dim..(s as usize + 1) * self.dim];
                for (d, &x) in dst.iter_mut().zip(g) {
                    *d += scale * x;
                }
            }
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
        match self.index[self.probe(row)] {
            EMPTY => None,
            (_, s) => Some(self.grad(s as usize)),
        }
    }

    pub fn clear(&mut self) {
        for &h in &self.at {
            self.index[h as usize] = EMPTY;
        }
        self.at.clear();
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

    /// [`Embedding::meta`] of the table's [`Embedding::frozen`] copy (weights only), without
    /// making the copy.
    pub fn frozen_meta(&self) -> Self {
        Self { stride: self.dim, ..self.meta() }
    }

    /// The weights of every row in order, without optimizer state (what [`Embedding::frozen`]
    /// holds), row by row.
    pub fn weight_rows(&self) -> impl Iterator<Item = &[f32]> {
        (0..self.rows as u32).map(|r| self.weights(r))
    }

    /// A copy of the weights alone (no optimizer state, the step kept): a frozen member of a
    /// snapshot ensemble, read but never trained.
    pub fn frozen(&self) -> Self {
        let mut data = Vec::with_capacity(self.rows * self.dim);
        for r in 0..self.rows as u32 {
            data.extend_from_slice(self.weights(r));
        }
        Self { rows: self.rows, dim: self.dim, stride: self.dim, optimizer: self.optimizer, step: self.step, data }
    }

    /// Weights of `row`.
    #[inline]
    pub fn weights(&self, row: u32) -> &[f32] {
        let o = row as usize * self.stride;
        &self.data[o..o + self.dim]
    }

    /// Asks the cache for `row`'s weights ahead of use (a hint; any `row` is harmless).
    #[inline(always)]
    pub fn prefetch_weights(&self, row: u32) {
        prefetch(self.data.as_ptr().wrapping_add(row as usize * self.stride), self.dim);
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

    /// Sets the raw buffer (checkpoints): `rows × stride` floats, the stride that of a trained
    /// table (weights and optimizer state) or of a [`Embedding::frozen`] one (weights).
    pub fn set_raw(&mut self, data: Vec<f32>) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.dim > 0 && (self.stride == self.dim || self.stride == self.dim * (1 + self.optimizer.slots())),
            "an embedding table of dimension {} with a row stride of {}",
            self.dim,
            self.stride
        );
        anyhow::ensure!(
            data.len() == self.rows * self.stride,
            "embedding buffer has {} floats, expected {}",
            data.len(),
            self.rows * self.stride
        );
        self.data = data;
        Ok(())
    }

    /// One optimizer step on the touched rows of `parts` (row 0, padding, never moves); clears
    /// them. `parts[p]` may only hold rows `≡ p mod parts.len()` (checked): the partitions are
    /// disjoint, so they are applied in parallel, and every row's update is the same for any
    /// partition count.
    pub fn apply(&mut self, parts: &mut [SparseGrad]) {
        self.step += 1;
        let (dim, stride, of) = (self.dim, self.stride, parts.len());
        let update = self.row_update();
        let rows = RowsPtr(self.data.as_mut_ptr());
        let len = self.data.len();
        parts.par_iter_mut().enumerate().for_each(|(p, g)| {
            let rows = &rows;
            for (i, &r) in g.touched.iter().enumerate() {
                if let Some(&ahead) = g.touched.get(i + PREFETCH_AHEAD) {
                    prefetch(rows.0.wrapping_add(ahead as usize * stride), stride);
                }
                let r = r as usize;
                assert!(r % of == p && (r + 1) * stride <= len, "row {r} outside partition {p} of {of}");
                if r == 0 {
                    continue;
                }
                // SAFETY: in bounds (checked above); partitions hold disjoint rows (r mod `of` =
                // p, checked) and a partition's touched rows are distinct (slot index), so no two
                // tasks ever write the same row, and nothing else borrows `data` meanwhile.
                let row = unsafe { std::slice::from_raw_parts_mut(rows.0.add(r * stride), stride) };
                update(row, &g.grads[i * dim..(i + 1) * dim]);
            }
            g.clear();
        });
    }

    /// The update of one row (`[weights | state]`) from its gradient, at the current step.
    fn row_update(&self) -> impl Fn(&mut [f32], &[f32]) + Sync {
        let dim = self.dim;
        let optimizer = self.optimizer;
        // Adam's bias corrections at this step, folded into its step size and epsilon.
        let (step, eps_hat) = match optimizer {
            SparseOptimizer::Adam { lr, beta1, beta2, eps } => {
                let t = self.step as i32;
                let (c1, c2) = (1.0 - beta1.powi(t), 1.0 - beta2.powi(t));
                (lr * c2.sqrt() / c1, eps * c2.sqrt())
            }
            SparseOptimizer::Adagrad { .. } => (0.0, 0.0),
        };
        move |row: &mut [f32], grad: &[f32]| match optimizer {
            SparseOptimizer::Adam { beta1, beta2, .. } => {
                let (w, state) = row.split_at_mut(dim);
                let (m, v) = state.split_at_mut(dim);
                for k in 0..dim {
                    m[k] = beta1 * m[k] + (1.0 - beta1) * grad[k];
                    v[k] = beta2 * v[k] + (1.0 - beta2) * grad[k] * grad[k];
                    w[k] -= step * m[k] / (v[k].sqrt() + eps_hat);
                }
            }
            SparseOptimizer::Adagrad { lr, eps, .. } => {
                let (w, acc) = row.split_at_mut(dim);
                for k in 0..dim {
                    acc[k] += grad[k] * grad[k];
                    w[k] -= lr * grad[k] / (acc[k].sqrt() + eps);
                }
            }
        }
    }
}

/// Rows whose cache lines are requested ahead of their update (the touched rows are scattered
/// over a table far larger than the caches).
const PREFETCH_AHEAD: usize = 8;

/// Asks for the cache lines of `len` floats at `p` (a hint: never faults, may do nothing).
#[inline(always)]
fn prefetch(p: *const f32, len: usize) {
    #[cfg(target_arch = "x86_64")]
    for line in (0..len).step_by(16) {
        // SAFETY: a prefetch is a hint; it never faults, whatever the address.
        #[allow(unused_unsafe)]
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.wrapping_add(line) as *const i8)
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, len);
}

/// The table's buffer, shared by the tasks of [`Embedding::apply`] (each writes its own rows).
struct RowsPtr(*mut f32);
// SAFETY: only used in `Embedding::apply`, whose tasks write disjoint rows.
unsafe impl Sync for RowsPtr {}

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
        let mut g = SparseGrad::new(3);
        g.add(4, 1.0, &[1.0, -2.0, 0.5]);
        g.add(4, 1.0, &[1.0, 0.0, 0.5]);
        g.add(0, 1.0, &[1.0, 1.0, 1.0]);
        assert_eq!(g.get(4), Some(&[2.0, -2.0, 1.0][..]));
        e.apply(std::slice::from_mut(&mut g));
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

    /// The index grows past its initial size and keeps every row's sum (against a map), first
    /// touch order, and an empty state after `clear`.
    #[test]
    fn sparse_grad_index_grows_and_clears() {
        let mut g = SparseGrad::new(2);
        let mut want = std::collections::BTreeMap::new();
        let mut order = Vec::new();
        for k in 0..40_000u32 {
            let row = (k * 7919) % 9_973 * 2; // even rows only, like one partition of two
            let v = (k % 13) as f32;
            g.add(row, 0.5, &[v, -v]);
            let e = want.entry(row).or_insert_with(|| {
                order.push(row);
                [0.0f32; 2]
            });
            e[0] += 0.5 * v;
            e[1] += 0.5 * -v;
        }
        assert!(g.index.len() > 1 << 12);
        assert_eq!(g.touched(), &order[..]);
        for (row, sum) in &want {
            assert_eq!(g.get(*row), Some(&sum[..]), "row {row}");
        }
        assert_eq!(g.get(1), None);
        g.clear();
        assert!(g.touched().is_empty() && g.get(order[0]).is_none() && g.index.iter().all(|&e| e == EMPTY));
    }

    #[test]
    fn adagrad_step() {
        let mut e = table(SparseOptimizer::Adagrad { lr: 0.1, eps: 1e-10, initial_accumulator: 0.0 });
        let w0 = e.weights(2).to_vec();
        let mut g = SparseGrad::new(3);
        g.add(2, 2.0, &[1.0, 0.0, -1.0]);
        e.apply(std::slice::from_mut(&mut g));
        let w = e.weights(2);
        assert!((w[0] - (w0[0] - 0.1)).abs() < 1e-6);
        assert!((w[1] - w0[1]).abs() < 1e-9);
        assert!((w[2] - (w0[2] + 0.1)).abs() < 1e-6);
    }
}
