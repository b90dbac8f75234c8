//! Field-weighted pairwise interactions (`model.interactions: field_weighted`, FwFM, Pan et al.,
//! WWW 2018): a tower's logit gains `Σ_{i<j} r_ij·⟨x_i, x_j⟩`, the dot products of every two
//! fields' pooled embeddings, each pair weighted by a learned `r_ij` of its own tower.
//!
//! An MLP fed the concatenated embeddings learns a product of two fields' embeddings (a user
//! group's taste for a category) only approximately and slowly; the dot product hands it over
//! exactly, as DeepFM's and DLRM's interaction layers do.
//!
//! `r` is stored as a `[fields × fields]` row-major tensor of which only `i < j` is read or
//! trained (the rest stays 0). With `R̃` its symmetric completion, the term is `½·xᵀ(R̃ ⊗ I)x`:
//! with each row's block transposed to `[dim × fields]` and the rows stacked, forward and the
//! pair weights' gradient are one GEMM each (~2·23²·dim flops per row and tower), run on the
//! tower's own thread without splitting (the sums' order does not depend on the thread count).

use gemm::Parallelism;

use super::gemm::mm;
use crate::schema::FIELDS;

/// Length of one tower's pair-weight tensor.
pub const LEN: usize = FIELDS.len() * FIELDS.len();

/// The symmetric `[fields × fields]` matrix `R̃` of pair weights `r` (upper triangle): `R̃_ij =
/// R̃_ji = r_ij` for `i < j`, 0 on the diagonal.
fn symmetric(r: &[f32]) -> Vec<f32> {
    let f = FIELDS.len();
    let mut s = vec![0.0; LEN];
    for i in 0..f {
        for j in i + 1..f {
            s[i * f + j] = r[i * f + j];
            s[j * f + i] = r[i * f + j];
        }
    }
    s
}

/// Each row's `[fields × dim]` block of `x` transposed into `xt` (`[n × dim × fields]`), so that
/// the rows' coordinates stack into one `[n·dim × fields]` matrix.
fn transpose(x: &[f32], n: usize, dim: usize, xt: &mut Vec<f32>) {
    let f = FIELDS.len();
    xt.resize(n * f * dim, 0.0);
    for (row, rt) in x.chunks_exact(f * dim).zip(xt.chunks_exact_mut(f * dim)).take(n) {
        for (i, xi) in row.chunks_exact(dim).enumerate() {
            for (d, &v) in xi.iter().enumerate() {
                rt[d * f + i] = v;
            }
        }
    }
}

/// Buffers of the pair term for one tower: `xt` the input transposed per row, `yt` = `Xt·R̃`,
/// `xg` the gradient scratch (all `[n × dim × fields]`).
#[derive(Default)]
pub struct PairScratch {
    xt: Vec<f32>,
    yt: Vec<f32>,
    xg: Vec<f32>,
}

/// Adds every row's interaction term to its logit `z[row]`; `x` is `[n × fields·dim]`. With
/// `Xt` the rows' coordinates stacked (`[n·dim × fields]`), `Yt = Xt·R̃` is one GEMM and a row's
/// term is `½·⟨xt, yt⟩` over its `dim × fields` block; `s` keeps both for [`backward`].
pub fn forward(r: &[f32], x: &[f32], n: usize, s: &mut PairScratch, z: &mut [f32]) {
    let f = FIELDS.len();
    let dim = x.len() / n.max(1) / f;
    transpose(x, n, dim, &mut s.xt);
    s.yt.resize(n * f * dim, 0.0);
    mm((n * dim, f, f), &mut s.yt, f, false, &s.xt, (f, 1), &symmetric(r), (f, 1), Parallelism::None);
    let rows = s.xt.chunks_exact(f * dim).zip(s.yt.chunks_exact(f * dim));
    for (zr, (xr, yr)) in z.iter_mut().zip(rows).take(n) {
        *zr += 0.5 * dot(xr, yr);
    }
}

/// Backward of [`forward`] (whose buffers `s` it reads) for logit gradients `g`: adds the input
/// gradient `g·Y` to `dx` (`[n × fields·dim]`) and writes the pair weights' gradient
/// `Σ_rows g·⟨x_i, x_j⟩ = Xtᵀ·(g ⊙ Xt)` to `dr` (overwritten; 0 off the upper triangle).
pub fn backward(n: usize, s: &mut PairScratch, g: &[f32], dx: &mut [f32], dr: &mut [f32]) {
    let f = FIELDS.len();
    let dim = s.xt.len() / n.max(1) / f;
    s.xg.resize(n * f * dim, 0.0);
    let rows = s.xt.chunks_exact(f * dim).zip(s.yt.chunks_exact(f * dim));
    let out = s.xg.chunks_exact_mut(f * dim).zip(dx.chunks_exact_mut(f * dim));
    for (((xr, yr), (xgr, dxr)), &gr) in rows.zip(out).zip(g).take(n) {
        xgr.iter_mut().zip(xr).for_each(|(a, b)| *a = gr * b);
        for (i, dxi) in dxr.chunks_exact_mut(dim).enumerate() {
            for (d, v) in dxi.iter_mut().enumerate() {
                *v += gr * yr[d * f + i];
            }
        }
    }
    mm((f, f, n * dim), dr, f, false, &s.xt, (1, f), &s.xg, (f, 1), Parallelism::None);
    for i in 0..f {
        for j in 0..=i {
            dr[i * f + j] = 0.0;
        }
    }
}

/// A dot product summed in 8 lanes (vectorizes; the order is fixed, so is the result).
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Finite differences of `Σ_rows c_row · z_row` w.r.t. inputs and pair weights.
    #[test]
    fn gradients_match_finite_differences() {
        let (f, dim, n) = (FIELDS.len(), 3, 4);
        let mut s = 7u64;
        let mut next = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        let x: Vec<f32> = (0..n * f * dim).map(|_| next()).collect();
        let mut r: Vec<f32> = (0..LEN).map(|_| next()).collect();
        let c: Vec<f32> = (0..n).map(|_| next()).collect();
        let objective = |r: &[f32], x: &[f32]| {
            let mut z = vec![0.0f32; n];
            forward(r, x, n, &mut PairScratch::default(), &mut z);
            z.iter().zip(&c).map(|(z, c)| (z * c) as f64).sum::<f64>()
        };
        let (mut s, mut z) = (PairScratch::default(), vec![0.0f32; n]);
        forward(&r, &x, n, &mut s, &mut z);
        let mut dx = vec![0.0f32; x.len()];
        let mut dr = vec![1.0f32; LEN];
        backward(n, &mut s, &c, &mut dx, &mut dr);
        // the lower triangle and the diagonal are never trained
        for i in 0..f {
            for j in 0..=i {
                assert_eq!(dr[i * f + j], 0.0);
            }
        }
        let h = 1e-2f32;
        for k in [1, f + 5, 3 * f + 20, (f - 2) * f + f - 1] {
            let (mut up, mut down) = (r.clone(), r.clone());
            up[k] += h;
            down[k] -= h;
            let fd = (objective(&up, &x) - objective(&down, &x)) / (2.0 * h as f64);
            assert!((fd - dr[k] as f64).abs() < 1e-3, "r[{k}]: {fd} vs {}", dr[k]);
        }
        for k in [0, 5, dim * 7 + 1, x.len() - 1] {
            let (mut up, mut down) = (x.clone(), x.clone());
            up[k] += h;
            down[k] -= h;
            let fd = (objective(&r, &up) - objective(&r, &down)) / (2.0 * h as f64);
            assert!((fd - dx[k] as f64).abs() < 1e-3, "x[{k}]: {fd} vs {}", dx[k]);
        }
        // zero weights: the term is zero and only the weights learn
        r.iter_mut().for_each(|v| *v = 0.0);
        assert_eq!(objective(&r, &x), 0.0);
    }
}
