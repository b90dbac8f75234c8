//! AITM's adaptive information transfer (Xi et al., KDD 2021; `model.kind: aitm`): the
//! conversion tower's last hidden output `p` is not fed to its output layer directly; the click
//! tower's last hidden output `h` is mapped into the same space, `i = ReLU(W_i·h + b_i)`, and an
//! attention over the two chooses how much of each to pass on:
//!
//! `q = Σ_{u ∈ {p, i}} a_u · W_v·u`, `a = softmax_u(⟨W_q·u, W_k·u⟩ / √H)`.
//!
//! The conversion tower's output layer reads `q`. The gradient flows back into both towers (the
//! click tower learns what it passes on, as in the paper). Per batch the two inputs are stacked
//! as `U = [P; I]` (`[2n × H]`), so `Q`, `K` and `V` are three GEMMs sharing `U`, and their
//! weights' gradients three more; the scores and the softmax are per-row loops.

use gemm::Parallelism;

use super::gemm::mm;

/// The transfer between a click tower whose last hidden layer is `hc` wide and a conversion tower
/// whose last hidden layer is `h` wide; `p` = [W_i `[h × hc]`, b_i, W_q, W_k, W_v (each `[h × h]`)].
pub struct Transfer {
    hc: usize,
    h: usize,
    pub p: Vec<Vec<f32>>,
}

/// Parameter tensors of the transfer: W_i, b_i, W_q, W_k, W_v.
pub const TENSORS: usize = 5;

/// Lengths of the transfer's parameter tensors.
pub fn lens(hc: usize, h: usize) -> [usize; TENSORS] {
    [h * hc, h, h * h, h * h, h * h]
}

/// The transfer's buffers for one batch (they only grow).
#[derive(Default)]
pub struct TransferScratch {
    /// `[P; I]`: the conversion tower's hidden output, then the transferred click information.
    u: Vec<f32>,
    /// `[Q | K | V]` per row of `u`, `[2n × 3h]`.
    qkv: Vec<f32>,
    /// The attention weights of `p` and `i` per row, `[n × 2]`.
    a: Vec<f32>,
    /// The output, what the conversion tower's output layer reads, `[n × h]`.
    pub q: Vec<f32>,
    /// Gradients: of `q` (set by the caller), of `[Q | K | V]`, of `U`; then of the click
    /// tower's hidden output.
    pub dq: Vec<f32>,
    dqkv: Vec<f32>,
    du: Vec<f32>,
    pub dh: Vec<f32>,
}

impl TransferScratch {
    /// The gradient w.r.t. the conversion tower's hidden output `p`, after [`Transfer::backward`].
    pub fn dp(&self, n: usize, h: usize) -> &[f32] {
        &self.du[..n * h]
    }
}

impl Transfer {
    pub fn new(hc: usize, h: usize, p: &[Vec<f32>]) -> Self {
        Self { hc, h, p: p.to_vec() }
    }

    /// `q` of `n` rows from the click tower's hidden output `hid` (`[n × hc]`) and the conversion
    /// tower's `p` (`[n × h]`).
    pub fn forward(&self, hid: &[f32], p: &[f32], n: usize, s: &mut TransferScratch, par: Parallelism) {
        let (hc, h) = (self.hc, self.h);
        s.u.resize(2 * n * h, 0.0);
        s.qkv.resize(2 * n * 3 * h, 0.0);
        s.a.resize(2 * n, 0.0);
        s.q.resize(n * h, 0.0);
        let (up, ui) = s.u[..2 * n * h].split_at_mut(n * h);
        up.copy_from_slice(&p[..n * h]);
        mm((n, h, hc), ui, h, false, &hid[..n * hc], (hc, 1), &self.p[0], (1, hc), par);
        for row in ui.chunks_exact_mut(h) {
            row.iter_mut().zip(&self.p[1]).for_each(|(v, &b)| *v = (*v + b).max(0.0));
        }
        for k in 0..3 {
            let dst = &mut s.qkv[k * h..2 * n * 3 * h];
            mm((2 * n, h, h), dst, 3 * h, false, &s.u[..2 * n * h], (h, 1), &self.p[2 + k], (1, h), par);
        }
        let scale = 1.0 / (h as f32).sqrt();
        for i in 0..n {
            let score = |r: usize| {
                let row = &s.qkv[r * 3 * h..(r + 1) * 3 * h];
                row[..h].iter().zip(&row[h..2 * h]).map(|(a, b)| a * b).sum::<f32>() * scale
            };
            let (s0, s1) = (score(i), score(n + i));
            let m = s0.max(s1);
            let (e0, e1) = ((s0 - m).exp(), (s1 - m).exp());
            let (a0, a1) = (e0 / (e0 + e1), e1 / (e0 + e1));
            s.a[2 * i] = a0;
            s.a[2 * i + 1] = a1;
            let (v0, v1) =
                (&s.qkv[i * 3 * h + 2 * h..(i + 1) * 3 * h], &s.qkv[(n + i) * 3 * h + 2 * h..(n + i + 1) * 3 * h]);
            for ((q, &x0), &x1) in s.q[i * h..(i + 1) * h].iter_mut().zip(v0).zip(v1) {
                *q = a0 * x0 + a1 * x1;
            }
        }
    }

    /// Backward after [`Transfer::forward`] on the same inputs, with `s.dq` the gradient of `q`:
    /// the parameter gradients to `grads` (overwritten), the gradient of `p` to
    /// [`TransferScratch::dp`] and of the click tower's hidden output to `s.dh`.
    pub fn backward(&self, hid: &[f32], n: usize, s: &mut TransferScratch, grads: &mut [Vec<f32>], par: Parallelism) {
        let (hc, h) = (self.hc, self.h);
        let w = 3 * h;
        s.dqkv.resize(2 * n * w, 0.0);
        s.du.resize(2 * n * h, 0.0);
        s.dh.resize(n * hc, 0.0);
        let scale = 1.0 / (h as f32).sqrt();
        let TransferScratch { qkv, a, dq, dqkv, .. } = s;
        for i in 0..n {
            let dqi = &dq[i * h..(i + 1) * h];
            let rows = [i, n + i];
            let au = [a[2 * i], a[2 * i + 1]];
            // d a_u = ⟨dq, V_u⟩, then through the softmax: d s_u = a_u (d a_u − Σ a·da)
            let da = rows.map(|r| dqi.iter().zip(&qkv[r * w + 2 * h..(r + 1) * w]).map(|(x, y)| x * y).sum::<f32>());
            let mean = au[0] * da[0] + au[1] * da[1];
            for (u, &r) in rows.iter().enumerate() {
                let ds = au[u] * (da[u] - mean) * scale;
                let (src, dst) = (&qkv[r * w..(r + 1) * w], &mut dqkv[r * w..(r + 1) * w]);
                for j in 0..h {
                    dst[j] = ds * src[h + j];
                    dst[h + j] = ds * src[j];
                    dst[2 * h + j] = au[u] * dqi[j];
                }
            }
        }
        let (u, dqkv) = (&s.u[..2 * n * h], &s.dqkv[..2 * n * w]);
        for k in 0..3 {
            // dW = dZᵀ · U   ([h × 2n] · [2n × h]), dZ the k-th block of every row of dqkv
            mm((h, h, 2 * n), &mut grads[2 + k], h, false, &dqkv[k * h..], (1, w), u, (h, 1), par);
            // dU (+)= dZ · W
            mm((2 * n, h, h), &mut s.du[..2 * n * h], h, k > 0, &dqkv[k * h..], (w, 1), &self.p[2 + k], (h, 1), par);
        }
        let (ui, dui) = (&s.u[n * h..2 * n * h], &mut s.du[n * h..2 * n * h]);
        dui.iter_mut().zip(ui).for_each(|(d, &v)| *d = if v <= 0.0 { 0.0 } else { *d });
        let dui = &s.du[n * h..2 * n * h];
        mm((h, hc, n), &mut grads[0], hc, false, dui, (1, h), &hid[..n * hc], (hc, 1), par);
        grads[1].iter_mut().for_each(|v| *v = 0.0);
        for row in dui.chunks_exact(h) {
            grads[1].iter_mut().zip(row).for_each(|(g, &v)| *g += v);
        }
        mm((n, hc, h), &mut s.dh[..n * hc], hc, false, dui, (h, 1), &self.p[0], (hc, 1), par);
    }
}
