//! The training objective of every model kind, computed stably from the two logits (zc for CTR,
//! zv for CVR), with its gradients w.r.t. both logits. One definition: training, validation
//! (`select_on: loss`) and the gradient checks all call [`loss_grads`].
//!
//! With pCTR = σ(zc), pCVR = σ(zv), pCTCVR = pCTR·pCVR, batch of `n` rows, `o` = click,
//! `y` = click ∧ buy, BCE the binary cross-entropy:
//!
//! - `esmm`, `esmm_ns`: mean BCE(pCTR, o) + `global_w` · mean BCE(pCTCVR, y).
//! - `naive_cvr`: mean BCE(pCTR, o) + `global_w` · BCE(pCVR, buy) averaged over the clicked rows.
//! - `escm2_ips` (ESCM², Wang et al., SIGIR 2022): the `esmm` loss + `counterfactual_w` · the
//!   inverse-propensity-weighted CVR loss `(1/n) Σ o·w·BCE(pCVR, y)`, `w = min(1/p̂, max_ips)`
//!   with the propensity p̂ = pCTR taken as a constant (no gradient reaches the CTR tower
//!   through it, as in the paper). Normalized by the batch's rows `n`, not by the clicks nor
//!   by Σ o·w: `E[o/p] = 1`, so the term estimates the CVR loss over the entire space without
//!   tying a row's weight to the rest of its batch (PaddleRec additionally multiplies the
//!   weights by the batch size, its issue #941; here they are not). Clipping: the inverse
//!   propensity is capped at `max_ips` (default 100: a click predicted at 1 % counts 100×, one
//!   at 0.1 % counts 100× too), bounding the variance rare clicks would add.

use serde::{Deserialize, Serialize};

use super::esmm::ModelKind;
use super::logistic::{sigmoid, softplus};

/// The weights of the objective's terms (`model.global_w`, `model.counterfactual_w`,
/// `model.max_inverse_propensity`); absent in older checkpoints: the defaults.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossWeights {
    /// Weight of the second task's loss (CTCVR; clicked-row CVR for `naive_cvr`), PaddleRec's
    /// `global_w`.
    pub global_w: f64,
    /// Weight of the counterfactual CVR loss of the ESCM² kinds, PaddleRec's `counterfactual_w`.
    pub counterfactual_w: f64,
    /// Largest inverse propensity 1/pCTR a clicked row's CVR loss is weighted by.
    pub max_inverse_propensity: f64,
}

impl Default for LossWeights {
    fn default() -> Self {
        Self { global_w: 1.0, counterfactual_w: 0.1, max_inverse_propensity: 100.0 }
    }
}

/// Loss of one batch: the sums over rows of each term, and the row counts they average over.
#[derive(Clone, Copy, Debug, Default)]
pub struct StepLoss {
    pub ctr: f64,
    /// The second task's loss, `global_w` applied.
    pub second: f64,
    /// The counterfactual term's sum, `counterfactual_w` applied (0 unless an ESCM² kind).
    pub counterfactual: f64,
    pub rows: usize,
    pub second_rows: usize,
}

impl StepLoss {
    /// The optimized objective: mean CTR loss + the second task's mean loss + the
    /// counterfactual term (over all rows), each weighted.
    pub fn value(&self) -> f64 {
        let rows = self.rows.max(1) as f64;
        self.ctr / rows + self.second / self.second_rows.max(1) as f64 + self.counterfactual / rows
    }

    /// The sums of two batches together: [`StepLoss::value`] is then the objective over both.
    pub fn add(&mut self, other: &StepLoss) {
        self.ctr += other.ctr;
        self.second += other.second;
        self.counterfactual += other.counterfactual;
        self.rows += other.rows;
        self.second_rows += other.second_rows;
    }
}

/// log(e^a + e^b + e^c), stable.
#[inline]
fn log_sum_exp3(a: f64, b: f64, c: f64) -> f64 {
    let m = a.max(b).max(c);
    m + ((a - m).exp() + (b - m).exp() + (c - m).exp()).ln()
}

/// The inverse propensity weight of a clicked row whose CTR logit is `a`: min(1/σ(a), `max`).
#[inline]
pub fn inverse_propensity(a: f64, max: f64) -> f64 {
    (1.0 / sigmoid(a)).min(max)
}

/// −log p(y | pCTCVR) for the entire-space task and its gradients (da, db), stable in logits.
#[inline]
fn ctcvr_term(a: f64, b: f64, y: bool) -> (f64, f64, f64) {
    let (sa, sb) = (sigmoid(a), sigmoid(b));
    let neg_log_p = softplus(-a) + softplus(-b);
    if y {
        (neg_log_p, -(1.0 - sa), -(1.0 - sb))
    } else {
        // 1 - σa·σb = (e^-a + e^-b + e^-(a+b)) / ((1 + e^-a)(1 + e^-b))
        let p = sa * sb;
        let odds = p / (1.0 - p).max(f64::MIN_POSITIVE);
        (neg_log_p - log_sum_exp3(-a, -b, -a - b), (1.0 - sa) * odds, (1.0 - sb) * odds)
    }
}

/// Loss gradients w.r.t. both logits for a batch, and the loss sums. `zp` are the CTR logits
/// the propensities come from, an input of the loss and never differentiated: in training the
/// batch's own `zc`; a gradient check holds them while it moves `zc`.
pub fn loss_grads(
    kind: ModelKind,
    w: &LossWeights,
    (zc, zv, zp): (&[f32], &[f32], &[f32]),
    click: &[u8],
    buy: &[u8],
) -> (Vec<f32>, Vec<f32>, StepLoss) {
    let n = zc.len();
    let mut loss = StepLoss { rows: n, ..Default::default() };
    let mut gc = vec![0.0f32; n];
    let mut gv = vec![0.0f32; n];
    let clicked = click.iter().filter(|&&c| c == 1).count();
    loss.second_rows = if kind == ModelKind::NaiveCvr { clicked } else { n };
    let inv_n = 1.0 / n.max(1) as f64;
    let second_w = w.global_w / loss.second_rows.max(1) as f64;
    for i in 0..n {
        let (a, b) = (zc[i] as f64, zv[i] as f64);
        let o = click[i] == 1;
        loss.ctr += softplus(a) - o as u8 as f64 * a;
        let mut da = (sigmoid(a) - o as u8 as f64) * inv_n;
        let mut db = 0.0;
        if kind == ModelKind::NaiveCvr {
            if o {
                let y = buy[i] as f64;
                loss.second += w.global_w * (softplus(b) - y * b);
                db = (sigmoid(b) - y) * second_w;
            }
        } else {
            let y = o && buy[i] == 1;
            let (l, ga, gb) = ctcvr_term(a, b, y);
            loss.second += w.global_w * l;
            da += ga * second_w;
            db += gb * second_w;
            if kind == ModelKind::Escm2Ips && o {
                // the propensity is an input: nothing flows back into `a`
                let weight = w.counterfactual_w * inverse_propensity(zp[i] as f64, w.max_inverse_propensity);
                let y = y as u8 as f64;
                loss.counterfactual += weight * (softplus(b) - y * b);
                db += weight * (sigmoid(b) - y) * inv_n;
            }
        }
        gc[i] = da as f32;
        gv[i] = db as f32;
    }
    (gc, gv, loss)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZC: [f32; 6] = [0.3, -1.2, 2.0, 0.1, 9.0, -9.0];
    const ZV: [f32; 6] = [-0.5, 0.7, -2.0, 1.1, 9.0, 3.0];
    const CLICK: [u8; 6] = [1, 0, 1, 0, 0, 1];
    const BUY: [u8; 6] = [1, 0, 0, 1, 0, 1];
    const KINDS: [ModelKind; 4] = [ModelKind::Esmm, ModelKind::NaiveCvr, ModelKind::EsmmNs, ModelKind::Escm2Ips];

    fn bump(z: &[f32], i: usize, d: f32) -> Vec<f32> {
        let mut z = z.to_vec();
        z[i] += d;
        z
    }

    /// The logit gradients of every kind's loss against finite differences of its value
    /// (weights away from 1 so a misplaced one shows), including saturated logits where a
    /// naive log(1 - p) would lose all precision; the propensities held where they were (the
    /// method's gradient: none flows into them).
    #[test]
    fn loss_gradients_match_finite_differences() {
        let w = LossWeights { global_w: 0.7, counterfactual_w: 0.3, max_inverse_propensity: 4.0 };
        for kind in KINDS {
            let (gc, gv, loss) = loss_grads(kind, &w, (&ZC, &ZV, &ZC), &CLICK, &BUY);
            assert!(loss.value().is_finite());
            // the propensities held at ZC's
            let l = |a: &[f32], b: &[f32]| loss_grads(kind, &w, (a, b, &ZC), &CLICK, &BUY).2.value();
            for i in 0..ZC.len() {
                let h = 1.0f32 / 1024.0; // exact in f32 around these logits
                let num_c = (l(&bump(&ZC, i, h), &ZV) - l(&bump(&ZC, i, -h), &ZV)) / (2.0 * h as f64);
                let num_v = (l(&ZC, &bump(&ZV, i, h)) - l(&ZC, &bump(&ZV, i, -h))) / (2.0 * h as f64);
                assert!((num_c - gc[i] as f64).abs() < 1e-4, "{kind:?} zc[{i}]: {num_c} vs {}", gc[i]);
                assert!((num_v - gv[i] as f64).abs() < 1e-4, "{kind:?} zv[{i}]: {num_v} vs {}", gv[i]);
            }
        }
    }

    /// ESCM²-IPS: no gradient reaches the propensity (the CTR logits get exactly ESMM's
    /// gradient, though the loss value does depend on them), the CVR logits get ESMM's plus the
    /// weighted clicked-row term, the weights are capped, and `counterfactual_w: 0` is ESMM.
    #[test]
    fn ips_leaves_the_propensity_without_gradient() {
        let w = LossWeights { global_w: 1.0, counterfactual_w: 0.5, max_inverse_propensity: 4.0 };
        let (gc_e, gv_e, esmm) = loss_grads(ModelKind::Esmm, &w, (&ZC, &ZV, &ZC), &CLICK, &BUY);
        let (gc_i, gv_i, ips) = loss_grads(ModelKind::Escm2Ips, &w, (&ZC, &ZV, &ZC), &CLICK, &BUY);
        assert_eq!(gc_i, gc_e);
        assert!(ips.counterfactual > 0.0 && esmm.counterfactual == 0.0);
        let zp = bump(&ZC, 0, 0.5);
        let shifted = loss_grads(ModelKind::Escm2Ips, &w, (&ZC, &ZV, &zp), &CLICK, &BUY).2;
        assert!(shifted.counterfactual != ips.counterfactual, "the value does depend on pCTR");
        for i in 0..ZC.len() {
            let y = (CLICK[i] & BUY[i]) as f64;
            let extra = if CLICK[i] == 1 {
                0.5 * inverse_propensity(ZC[i] as f64, 4.0) * (sigmoid(ZV[i] as f64) - y) / 6.0
            } else {
                0.0
            };
            assert!((gv_i[i] as f64 - gv_e[i] as f64 - extra).abs() < 1e-6, "zv[{i}]");
        }
        // row 5 is a click at pCTR σ(-9) ≈ 1.2e-4: its weight is the cap
        assert_eq!(inverse_propensity(-9.0, 4.0), 4.0);
        assert!((inverse_propensity(0.3, 100.0) - 1.0 / sigmoid(0.3)).abs() < 1e-12);
        let off = LossWeights { counterfactual_w: 0.0, ..w };
        let (gc0, gv0, l0) = loss_grads(ModelKind::Escm2Ips, &off, (&ZC, &ZV, &ZC), &CLICK, &BUY);
        assert_eq!((gc0, gv0, l0.value()), (gc_e, gv_e, esmm.value()));
    }
}
