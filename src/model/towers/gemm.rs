//! The fast backend: both towers as a fused MLP on `gemm` 0.19 (AVX-512 kernels with its
//! `x86-v4` feature, chosen at run time), layer sizes at run time.
//!
//! Row-major throughout, the same layout as dfdx: a layer's weight is `[out × in]`, activations
//! `[n × width]`. Per layer, forward is one GEMM `H = A·Wᵀ` followed by one pass adding the bias
//! and applying ReLU in place; backward is `dW = dZᵀ·A` and `dA = dZ·W` (two GEMMs), `db` the
//! column sums of `dZ`, and the ReLU mask applied to `dA` in place. Activations and gradient
//! buffers live in a scratch that only grows (no allocation per step at a fixed batch size);
//! the parameter-gradient buffers come back through [`GemmTowers::recycle`].
//!
//! Under the towers there may be a mixture of experts ([`super::mmoe`]), which every tower reads
//! through its own gate; between the CTR and the CVR tower, AITM's transfer
//! ([`super::transfer`]), which the CVR tower's output layer reads: forward runs the towers' hidden
//! layers, the transfer, then that output layer; backward the reverse, the transfer's gradient
//! entering the CTR tower at its last hidden layer.
//!
//! Threads: with ≥ 2 threads in the current Rayon pool the towers run side by side, each one's
//! GEMMs on half the threads; with one thread, one after the other. The mixture's and the
//! transfer's GEMMs have the whole pool.
//! Every output element is reduced in the same order whatever the thread count (gemm splits the
//! output, never the reduction), so results are identical for any thread count.

use std::sync::Mutex;

use gemm::Parallelism;
use rayon::prelude::*;

use super::mmoe::{self, MixScratch, Mixture, Mmoe};
use super::pairs;
use super::transfer::{self, Transfer, TransferScratch};

/// One tower: `sizes[0]` inputs, hidden widths, 1 output; `p[2l]` = `W_l` `[out × in]`,
/// `p[2l + 1]` = `b_l`; `pairs` its field-pair weights when the towers have interactions.
struct Mlp {
    sizes: Vec<usize>,
    p: Vec<Vec<f32>>,
    pairs: Option<Vec<f32>>,
}

/// Per-tower buffers for a batch of up to `rows` rows.
#[derive(Default)]
struct Scratch {
    rows: usize,
    /// Output of every layer (after ReLU for the hidden ones), `[rows × out_l]`.
    acts: Vec<Vec<f32>>,
    /// Two ping-pong buffers for `dZ` / `dA`, `[rows × max hidden width]`.
    g: [Vec<f32>; 2],
    /// The pair term's buffers (field interactions).
    pairs: pairs::PairScratch,
}

impl Scratch {
    fn fit(&mut self, sizes: &[usize], n: usize) {
        if n <= self.rows && self.acts.len() == sizes.len() - 1 {
            return;
        }
        let rows = n.max(self.rows);
        self.acts = sizes[1..].iter().map(|&w| vec![0.0; rows * w]).collect();
        let widest = sizes[1..].iter().copied().max().unwrap_or(1);
        self.g = [vec![0.0; rows * widest], vec![0.0; rows * widest]];
        self.rows = rows;
    }
}

/// `dst[m × n] (+)= lhs · rhs` with explicit row / column strides (`k` the inner dimension).
/// Safety is checked here: every index the strides reach lies inside its slice.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(super) fn mm(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    dst_rs: usize,
    acc: bool,
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
    par: Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rs: usize, cs: usize, r: usize, c: usize| (r - 1) * rs + (c - 1) * cs;
    assert!(last(dst_rs, 1, m, n) < dst.len());
    if k > 0 {
        assert!(last(lhs_rs, lhs_cs, m, k) < lhs.len());
        assert!(last(rhs_rs, rhs_cs, k, n) < rhs.len());
    }
    // SAFETY: bounds checked above; `dst` does not alias `lhs` / `rhs` (distinct borrows).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            acc,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// Where a tower's backward starts.
#[derive(Clone, Copy)]
enum Start<'a> {
    /// At the logit (its gradient is the `g` passed along), with a gradient of the last hidden
    /// layer's output to add when something else read it (AITM: the click tower's transfer).
    Logit(Option<&'a [f32]>),
    /// At the last hidden layer's output, with its gradient: the caller did the output layer,
    /// which read something else (AITM: the conversion tower's transfer).
    Hidden(&'a [f32]),
}

impl Mlp {
    fn layers(&self) -> usize {
        self.sizes.len() - 1
    }

    /// The width of the last hidden layer.
    fn last_hidden(&self) -> usize {
        self.sizes[self.layers() - 1]
    }

    /// Forward of `n` rows of `x` into `s.acts`; the logits are `s.acts[last][..n]`.
    fn forward(&self, x: &[f32], n: usize, s: &mut Scratch, par: Parallelism) {
        self.forward_layers(x, None, n, s, 0..self.layers(), par);
        self.add_pairs(x, n, s);
    }

    /// Forward of the layers `range` into `s.acts`: layer 0 reads `x`, the output layer reads
    /// `top` when given, every other layer the one below.
    fn forward_layers(
        &self,
        x: &[f32],
        top: Option<&[f32]>,
        n: usize,
        s: &mut Scratch,
        range: std::ops::Range<usize>,
        par: Parallelism,
    ) {
        s.fit(&self.sizes, n);
        for l in range {
            let (inp, out) = (self.sizes[l], self.sizes[l + 1]);
            let (before, rest) = s.acts.split_at_mut(l);
            let a: &[f32] = match (l, top) {
                (0, _) => &x[..n * inp],
                (l, Some(t)) if l + 1 == self.layers() => &t[..n * inp],
                _ => &before[l - 1][..n * inp],
            };
            let h = &mut rest[0][..n * out];
            mm((n, out, inp), h, out, false, a, (inp, 1), &self.p[2 * l], (1, inp), par);
            let b = &self.p[2 * l + 1];
            let relu = l + 1 < self.layers();
            for row in h.chunks_exact_mut(out) {
                if relu {
                    for (v, &bj) in row.iter_mut().zip(b) {
                        *v = (*v + bj).max(0.0);
                    }
                } else {
                    for (v, &bj) in row.iter_mut().zip(b) {
                        *v += bj;
                    }
                }
            }
        }
    }

    /// Adds the pair term to the logits (field interactions).
    fn add_pairs(&self, x: &[f32], n: usize, s: &mut Scratch) {
        if let Some(r) = &self.pairs {
            let z = &mut s.acts.last_mut().expect("an output layer")[..n];
            pairs::forward(r, &x[..n * self.sizes[0]], n, &mut s.pairs, z);
        }
    }

    /// One layer's backward: `dz` `[n × out]` the gradient of its output (pre-activation), `a`
    /// its input; `dW = dZᵀ·A` to `gw`, `db` to `gb`, and `dA = dZ·W` to `da` when wanted.
    #[allow(clippy::too_many_arguments)]
    fn layer_backward(
        &self,
        l: usize,
        n: usize,
        a: &[f32],
        dz: &[f32],
        (gw, gb): (&mut [f32], &mut [f32]),
        da: Option<&mut [f32]>,
        par: Parallelism,
    ) {
        let (inp, out) = (self.sizes[l], self.sizes[l + 1]);
        // dW = dZᵀ · A   ([out × n] · [n × in])
        mm((out, inp, n), gw, inp, false, dz, (1, out), a, (inp, 1), par);
        gb.iter_mut().for_each(|v| *v = 0.0);
        for row in dz.chunks_exact(out) {
            for (d, &v) in gb.iter_mut().zip(row) {
                *d += v;
            }
        }
        if let Some(da) = da {
            // dA = dZ · W   ([n × out] · [out × in])
            mm((n, inp, out), &mut da[..n * inp], inp, false, dz, (out, 1), &self.p[2 * l], (inp, 1), par);
        }
    }

    /// Backward after [`Mlp::forward`] on the same `x`, from `start`: `g` the loss gradient per
    /// logit; writes the input gradient to `dx[..n × in]` and the parameter gradients to `grads`
    /// and `dr` (the pair weights'), overwritten (with [`Start::Hidden`] the output layer's are
    /// the caller's).
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        x: &[f32],
        n: usize,
        s: &mut Scratch,
        g: &[f32],
        start: Start,
        dx: &mut [f32],
        (grads, dr): ParamGrads,
        par: Parallelism,
    ) {
        let layers = self.layers();
        let Scratch { acts, g: bufs, pairs: pair_scratch, .. } = s;
        let [mut cur, mut next] = {
            let [a, b] = bufs;
            [a, b]
        };
        let top = match start {
            Start::Logit(_) => {
                cur[..n].copy_from_slice(&g[..n]);
                layers
            }
            Start::Hidden(dp) => {
                let h = self.last_hidden();
                let a = &acts[layers - 2][..n * h];
                for ((d, &v), &av) in cur[..n * h].iter_mut().zip(&dp[..n * h]).zip(a) {
                    *d = if av <= 0.0 { 0.0 } else { v };
                }
                layers - 1
            }
        };
        for l in (0..top).rev() {
            let (inp, out) = (self.sizes[l], self.sizes[l + 1]);
            let dz = &cur[..n * out];
            let a: &[f32] = if l == 0 { &x[..n * inp] } else { &acts[l - 1][..n * inp] };
            let (gw, gb) = grads[2 * l..2 * l + 2].split_at_mut(1);
            if l == 0 {
                self.layer_backward(l, n, a, dz, (&mut gw[0], &mut gb[0]), Some(&mut dx[..n * inp]), par);
            } else {
                self.layer_backward(l, n, a, dz, (&mut gw[0], &mut gb[0]), Some(&mut next[..n * inp]), par);
                let da = &mut next[..n * inp];
                if let (Start::Logit(Some(extra)), true) = (start, l + 1 == layers) {
                    da.iter_mut().zip(&extra[..n * inp]).for_each(|(d, &e)| *d += e);
                }
                // A select, not a conditional store: this form vectorizes (same values).
                for (d, &av) in da.iter_mut().zip(a) {
                    *d = if av <= 0.0 { 0.0 } else { *d };
                }
                std::mem::swap(&mut cur, &mut next);
            }
        }
        if let (Some(_), Some(dr)) = (&self.pairs, dr) {
            pairs::backward(n, pair_scratch, &g[..n], &mut dx[..n * self.sizes[0]], dr);
        }
    }
}

/// The towers (index 0 = CTR, 1 = CVR, then any auxiliary towers, which read the CVR tower's
/// input, or with a mixture of experts every tower its own gate's mixture), their scratch, and
/// recycled gradient buffers.
pub struct GemmTowers {
    mlps: Vec<Mlp>,
    mix: Option<Mixture>,
    /// AITM: the transfer from the CTR tower into the CVR (conversion) tower's output layer.
    transfer: Option<Transfer>,
    scratch: Mutex<Scratches>,
    /// Input gradients of the auxiliary towers, added into the CVR input's.
    dx_aux: Vec<Vec<f32>>,
    spare: Option<Vec<Vec<f32>>>,
}

/// Every tower's scratch, and the mixture's.
#[derive(Default)]
struct Scratches {
    towers: Vec<Scratch>,
    mix: MixScratch,
    transfer: TransferScratch,
}

impl Scratches {
    fn new(towers: usize) -> Self {
        Self { towers: (0..towers).map(|_| Scratch::default()).collect(), ..Default::default() }
    }
}

/// One tower's parameter gradients: its layers', and its pair weights' (field interactions).
type ParamGrads<'a> = (&'a mut [Vec<f32>], Option<&'a mut Vec<f32>>);

/// The gradient buffers split per tower (its layers', its pair weights'), the mixture's and
/// the transfer's.
type Split<'a> = (Vec<ParamGrads<'a>>, Option<&'a mut [Vec<f32>]>, Option<&'a mut [Vec<f32>]>);

fn split_grads<'a>(grads: &'a mut [Vec<f32>], mlps: &[Mlp], mix: bool, transfer: bool) -> Split<'a> {
    let mut parts: Vec<ParamGrads> = Vec::with_capacity(mlps.len());
    let mut rest = grads;
    for m in mlps {
        let (p, r) = rest.split_at_mut(2 * m.layers());
        parts.push((p, None));
        rest = r;
    }
    let mut take = |k: usize| {
        let (p, r) = std::mem::take(&mut rest).split_at_mut(k);
        rest = r;
        p
    };
    let mix_grads = mix.then(|| take(mmoe::TENSORS));
    let transfer_grads = transfer.then(|| take(transfer::TENSORS));
    for ((_, dr), r) in parts.iter_mut().zip(rest.iter_mut()) {
        *dr = Some(r);
    }
    (parts, mix_grads, transfer_grads)
}

/// How to spread the work over the current Rayon pool: run the towers side by side, and the
/// parallelism of each GEMM.
fn plan() -> (bool, Parallelism) {
    let t = rayon::current_num_threads();
    let per_tower = if t >= 2 { t / 2 } else { 1 };
    (t >= 2, if per_tower > 1 { Parallelism::Rayon(per_tower) } else { Parallelism::None })
}

/// Runs `f` on every item, side by side when `join` (each item's work is its own: the results do
/// not depend on it).
fn each<T: Send>(join: bool, items: Vec<T>, f: impl Fn(T) + Sync + Send) {
    if join {
        items.into_par_iter().for_each(f);
    } else {
        items.into_iter().for_each(f);
    }
}

/// The parallelism of a GEMM that has the whole pool (the mixture's).
fn whole_pool() -> Parallelism {
    let t = rayon::current_num_threads();
    if t > 1 {
        Parallelism::Rayon(t)
    } else {
        Parallelism::None
    }
}

impl GemmTowers {
    /// `sizes[t]`: layer widths of tower `t`, input first, 1 output last; `params` in the order
    /// of [`super::Towers::params`] (lengths already checked): every tower's layers, then with
    /// `mix` (its shape, the embeddings' width) the mixture's four tensors, with `transfer` the
    /// transfer's five (AITM), then with `interactions` every tower's pair weights.
    pub fn new(
        sizes: Vec<Vec<usize>>,
        params: &[Vec<f32>],
        interactions: bool,
        mix: Option<(&Mmoe, usize)>,
        transfer: bool,
    ) -> Self {
        let mut rest = params;
        let mut mlps: Vec<Mlp> = sizes
            .into_iter()
            .map(|sizes| {
                let (p, r) = rest.split_at(2 * (sizes.len() - 1));
                rest = r;
                Mlp { sizes, p: p.to_vec(), pairs: None }
            })
            .collect();
        let mix = mix.map(|(spec, input)| {
            let (p, r) = rest.split_at(mmoe::TENSORS);
            rest = r;
            Mixture::new(spec, input, mlps.len(), p)
        });
        let transfer = transfer.then(|| {
            let (p, r) = rest.split_at(transfer::TENSORS);
            rest = r;
            Transfer::new(mlps[0].last_hidden(), mlps[1].last_hidden(), p)
        });
        if interactions {
            mlps.iter_mut().zip(rest).for_each(|(m, r)| m.pairs = Some(r.clone()));
        }
        let scratch = Mutex::new(Scratches::new(mlps.len()));
        let dx_aux = mlps.iter().skip(2).map(|_| Vec::new()).collect();
        Self { mlps, mix, transfer, scratch, dx_aux, spare: None }
    }

    pub fn params(&self) -> Vec<Vec<f32>> {
        let layers = self.mlps.iter().flat_map(|m| m.p.iter());
        let mix = self.mix.iter().flat_map(|m| m.p.iter()).chain(self.transfer.iter().flat_map(|t| t.p.iter()));
        layers.chain(mix).chain(self.mlps.iter().filter_map(|m| m.pairs.as_ref())).cloned().collect()
    }

    /// Every parameter tensor, mutable, in [`super::Towers::params`] order.
    pub fn params_mut(&mut self) -> impl Iterator<Item = &mut Vec<f32>> {
        let (layers, pairs): (Vec<_>, Vec<_>) = self.mlps.iter_mut().map(|m| (&mut m.p, &mut m.pairs)).unzip();
        let transfer = self.transfer.iter_mut().flat_map(|t| t.p.iter_mut());
        let mix = self.mix.iter_mut().flat_map(|m| m.p.iter_mut()).chain(transfer);
        let layers = layers.into_iter().flat_map(|p| p.iter_mut());
        layers.chain(mix).chain(pairs.into_iter().filter_map(Option::as_mut))
    }

    pub fn set_params(&mut self, p: &[Vec<f32>]) {
        for (dst, src) in self.params_mut().zip(p) {
            dst.copy_from_slice(src);
        }
    }

    /// The input of every tower: with a mixture its gate's mixture, else `xc` for the CTR tower
    /// and `xv` for every other.
    fn inputs<'a>(&self, mix: &'a MixScratch, xc: &'a [f32], xv: &'a [f32]) -> Vec<&'a [f32]> {
        match self.mix {
            Some(_) => mix.m.iter().map(|m| &m[..]).collect(),
            None => (0..self.mlps.len()).map(|t| if t == 0 { xc } else { xv }).collect(),
        }
    }

    /// Forward of the mixture (if any) and of the first `towers` of `mlps` into their scratch.
    fn run(&self, s: &mut Scratches, towers: usize, xc: &[f32], xv: &[f32], n: usize) {
        if let Some(mix) = &self.mix {
            mix.forward(xc, n, &mut s.mix, whole_pool());
        }
        let (join, par) = plan();
        let inputs = self.inputs(&s.mix, xc, xv);
        let aitm = self.transfer.is_some();
        let work: Vec<_> =
            self.mlps.iter().zip(s.towers.iter_mut()).zip(inputs.iter()).take(towers).enumerate().collect();
        each(join, work, |(t, ((m, s), x))| match aitm && t == 1 {
            // the conversion tower's output layer waits for the transfer
            true => m.forward_layers(x, None, n, s, 0..m.layers() - 1, par),
            false => m.forward(x, n, s, par),
        });
        if let Some(tr) = &self.transfer {
            let (c, v) = s.towers.split_at_mut(1);
            let (mc, mv) = (&self.mlps[0], &self.mlps[1]);
            tr.forward(&c[0].acts[mc.layers() - 2], &v[0].acts[mv.layers() - 2], n, &mut s.transfer, whole_pool());
            let last = mv.layers() - 1;
            mv.forward_layers(inputs[1], Some(&s.transfer.q), n, &mut v[0], last..last + 1, whole_pool());
            mv.add_pairs(inputs[1], n, &mut v[0]);
        }
    }

    /// Logits of the first `towers` towers; uses the shared scratch unless another thread holds it.
    pub fn forward(&self, xc: &[f32], xv: &[f32], n: usize, towers: usize) -> Vec<Vec<f32>> {
        let logits = |s: &mut Scratches| {
            self.run(s, towers, xc, xv, n);
            s.towers[..towers].iter().map(|s| s.acts.last().unwrap()[..n].to_vec()).collect()
        };
        match self.scratch.try_lock() {
            Ok(mut s) => logits(&mut s),
            Err(_) => logits(&mut Scratches::new(self.mlps.len())),
        }
    }

    pub fn backward(
        &mut self,
        xc: &[f32],
        xv: &[f32],
        n: usize,
        (dxc, dxv): (&mut Vec<f32>, &mut Vec<f32>),
        grad: impl FnOnce(&[&[f32]]) -> Vec<Vec<f32>>,
    ) -> Vec<Vec<f32>> {
        let (join, par) = plan();
        let mut grads = match self.spare.take() {
            Some(g) => g,
            None => self.params().iter().map(|t| vec![0.0; t.len()]).collect(),
        };
        let towers = self.mlps.len();
        let mut scratch = std::mem::take(self.scratch.get_mut().unwrap_or_else(|e| e.into_inner()));
        self.run(&mut scratch, towers, xc, xv, n);
        let g = {
            let logits: Vec<&[f32]> = scratch.towers.iter().map(|s| &s.acts.last().unwrap()[..n]).collect();
            grad(&logits)
        };
        assert_eq!(g.len(), towers, "one logit gradient per tower");
        let Scratches { towers: s, mix: ms, transfer: ts } = &mut scratch;
        let mut dm = std::mem::take(&mut ms.dm);
        let inputs = self.inputs(ms, xc, xv);
        let mlps = &self.mlps;
        // Every element is overwritten by the input-gradient GEMM: no need to clear.
        let width = self.mix.as_ref().map_or(mlps[0].sizes[0], Mixture::input);
        dxc.resize(n * width, 0.0);
        dxv.resize(n * width, 0.0);
        let mut dx: Vec<&mut Vec<f32>> = match self.mix {
            Some(_) => dm.iter_mut().collect(),
            None => [&mut *dxc, &mut *dxv].into_iter().chain(self.dx_aux.iter_mut()).collect(),
        };
        for (d, m) in dx.iter_mut().zip(mlps) {
            d.resize(n * m.sizes[0], 0.0);
        }
        let (mut parts, mix_grads, transfer_grads) =
            split_grads(&mut grads, mlps, self.mix.is_some(), self.transfer.is_some());
        let mut starts = vec![Start::Logit(None); towers];
        if let (Some(tr), Some(tg)) = (&self.transfer, transfer_grads) {
            // the conversion tower's output layer read the transfer's output: its backward, then
            // the transfer's, give the gradients both towers' last hidden layers start from
            let (mc, mv) = (&mlps[0], &mlps[1]);
            let last = mv.layers() - 1;
            ts.dq.resize(n * mv.last_hidden(), 0.0);
            let (gw, gb) = parts[1].0[2 * last..2 * last + 2].split_at_mut(1);
            mv.layer_backward(last, n, &ts.q, &g[1], (&mut gw[0], &mut gb[0]), Some(&mut ts.dq), whole_pool());
            tr.backward(&s[0].acts[mc.layers() - 2], n, ts, tg, whole_pool());
            starts[0] = Start::Logit(Some(&ts.dh));
            starts[1] = Start::Hidden(ts.dp(n, mv.last_hidden()));
        }
        let work: Vec<_> = mlps
            .iter()
            .zip(s.iter_mut())
            .zip(g.iter().zip(dx))
            .zip(parts.drain(..))
            .zip(inputs.into_iter().zip(starts))
            .collect();
        each(join, work, |((((m, s), (g, dx)), p), (x, start))| m.backward(x, n, s, g, start, dx, p, par));
        ms.dm = dm;
        match (&self.mix, mix_grads) {
            (Some(mix), Some(mg)) => {
                mix.backward(xc, n, ms, dxc, mg, whole_pool());
                // every tower read the one mixture of `xc`: nothing flows to `xv`
                dxv.iter_mut().for_each(|v| *v = 0.0);
            }
            // the auxiliary towers read the CVR input: their input gradients add to its, in order
            _ => self.dx_aux.iter().for_each(|d| dxv.iter_mut().zip(d).for_each(|(a, b)| *a += b)),
        }
        *self.scratch.get_mut().unwrap_or_else(|e| e.into_inner()) = scratch;
        grads
    }

    /// Gives the gradient buffers of a finished step back for the next one.
    pub fn recycle(&mut self, grads: Vec<Vec<f32>>) {
        self.spare = Some(grads);
    }
}
