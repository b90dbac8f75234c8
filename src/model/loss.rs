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
//!   weights by the batch size; here they are not). Clipping: the inverse
//!   propensity is capped at `max_ips` (default 100: a click predicted at 1 % counts 100×, one
//!   at 0.1 % counts 100× too), bounding the variance rare clicks would add.
//! - `aitm` (Xi et al., KDD 2021): the second logit is pCTCVR's own (the conversion tower reads
//!   the CTR tower through the transfer): mean BCE(pCTR, o) + `global_w` · mean BCE(pCTCVR, y) +
//!   `calibrator_w` · (1/n) Σ max(pCTCVR − pCTR, 0), the calibrator as a batch mean (AITM's code
//!   sums it over the batch, which ties its weight to the batch size); no gradient is held.

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
    /// Largest inverse propensity 1/pCTR a clicked row's CVR loss is weighted by (DCMT: also
    /// 1/(1 − pCTR) an unclicked row's).
    pub max_inverse_propensity: f64,
    /// DCMT: weight of the constraint pCVR + counterfactual pCVR = 1 (an L1 penalty).
    pub constraint_w: f64,
    /// AITM: weight of the calibrator max(pCTCVR − pCTR, 0) (AITM's 0.6).
    pub calibrator_w: f64,
}

impl Default for LossWeights {
    fn default() -> Self {
        Self {
            global_w: 1.0,
            counterfactual_w: 0.1,
            max_inverse_propensity: 100.0,
            constraint_w: 0.1,
            calibrator_w: 0.6,
        }
    }
}

/// Loss of one batch: the sums over rows of each term, and the row counts they average over.
#[derive(Clone, Copy, Debug, Default)]
pub struct StepLoss {
    pub ctr: f64,
    /// The second task's loss, `global_w` applied.
    pub second: f64,
    /// The kind's own term's sum, its weight applied: the counterfactual CVR loss of the ESCM²
    /// kinds and DCMT, AITM's calibrator (0 for the others).
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

/// The counterfactual term of one row for the ESCM² and DCMT kinds: its value and the
/// gradients w.r.t. the CVR logit `b` and the auxiliary tower's logit `c` (`n` the batch's
/// rows). `held`: the stop-gradient inputs, (propensity logit, CVR logit, auxiliary logit).
fn counterfactual_row(kind: ModelKind, w: &LossWeights, b: f64, c: f64, held: [f64; 3], o: bool, y: f64) -> [f64; 3] {
    let [zp, hb, hc] = held;
    let ips = if o { inverse_propensity(zp, w.max_inverse_propensity) } else { 0.0 };
    let cw = w.counterfactual_w;
    match kind {
        ModelKind::Escm2Ips => [cw * ips * (softplus(b) - y * b), cw * ips * (sigmoid(b) - y), 0.0],
        ModelKind::Escm2Dr => {
            // the imputed label r̃ (held here) stands in for y; the clicked rows correct it
            let r = sigmoid(hc);
            let dr = softplus(b) - r * b + ips * (r - y) * b;
            let d_dr = sigmoid(b) - r + ips * (r - y);
            // the imputation tower learns the clicked rows' error e − ê = (r̃ − y)·z, z held
            let rc = sigmoid(c);
            let imp = ips * ((rc - y) * hb).powi(2);
            let d_imp = ips * 2.0 * (rc - y) * hb * hb * rc * (1.0 - rc);
            [cw * (dr + imp), cw * d_dr, cw * d_imp]
        }
        ModelKind::Dcmt => {
            // factual tower on the clicked rows, counterfactual tower on the unclicked rows
            // (label 1 − buy = 1, weight 1 / (1 − p̂)), and pCVR + pCVR* = 1 as an L1 constraint
            let non =
                if o { 0.0 } else { (1.0 / (1.0 - sigmoid(zp)).max(f64::MIN_POSITIVE)).min(w.max_inverse_propensity) };
            let (r, rs) = (sigmoid(b), sigmoid(c));
            let gap = 1.0 - r - rs;
            let lc = w.constraint_w;
            let value = cw * (ips * (softplus(b) - y * b) + non * softplus(-c)) + lc * gap.abs();
            let sign = gap.signum();
            [value, cw * ips * (r - y) - lc * sign * r * (1.0 - r), cw * non * (rs - 1.0) - lc * sign * rs * (1.0 - rs)]
        }
        _ => [0.0; 3],
    }
}

/// Loss gradients w.r.t. every tower's logits `z` (CTR, CVR, then the auxiliary tower's when the
/// kind has one) for a batch, and the loss sums. `held` are the same logits where the method
/// stops the gradient (the propensity pCTR, DR's imputed label and its CVR error, DCMT's): an
/// input of the loss, never differentiated. Training passes `z` twice; a gradient check holds
/// `held` while it moves `z`.
///
/// `unclicked_w` weighs each unclicked row against a clicked one (1 = every row alike; training
/// with a share `k` of the unclicked rows passes `1 / k`, so the batch stands for the rows it
/// was drawn from). Every term of a row is multiplied by its weight, the weights normalized to
/// sum to the batch's rows (the means stay means); `naive_cvr`'s CVR term, over clicked rows
/// only, is not weighted.
pub fn loss_grads(
    kind: ModelKind,
    w: &LossWeights,
    z: &[&[f32]],
    held: &[&[f32]],
    click: &[u8],
    buy: &[u8],
    unclicked_w: f64,
) -> (Vec<Vec<f32>>, StepLoss) {
    let (zc, zv) = (z[0], z[1]);
    let n = zc.len();
    let mut loss = StepLoss { rows: n, ..Default::default() };
    let mut g: Vec<Vec<f32>> = z.iter().map(|_| vec![0.0f32; n]).collect();
    let clicked = click.iter().filter(|&&c| c == 1).count();
    let total = clicked as f64 + unclicked_w * (n - clicked) as f64;
    // the row weights sum to n: at unclicked_w 1 the scale is exactly 1 (n / n)
    let scale = if total > 0.0 { n as f64 / total } else { 1.0 };
    let (w_clicked, w_unclicked) = (scale, scale * unclicked_w);
    loss.second_rows = if kind == ModelKind::NaiveCvr { clicked } else { n };
    let inv_n = 1.0 / n.max(1) as f64;
    let second_w = w.global_w / loss.second_rows.max(1) as f64;
    for i in 0..n {
        let (a, b) = (zc[i] as f64, zv[i] as f64);
        let o = click[i] == 1;
        let rw = if o { w_clicked } else { w_unclicked };
        loss.ctr += rw * (softplus(a) - o as u8 as f64 * a);
        let mut da = rw * (sigmoid(a) - o as u8 as f64) * inv_n;
        let mut db = 0.0;
        if kind == ModelKind::NaiveCvr {
            if o {
                let y = buy[i] as f64;
                loss.second += w.global_w * (softplus(b) - y * b);
                db = (sigmoid(b) - y) * second_w;
            }
        } else if kind == ModelKind::Aitm {
            let y = (o && buy[i] == 1) as u8 as f64;
            loss.second += rw * w.global_w * (softplus(b) - y * b);
            db = rw * (sigmoid(b) - y) * second_w;
            let (pc, pt) = (sigmoid(a), sigmoid(b));
            if pt > pc {
                let cw = rw * w.calibrator_w;
                loss.counterfactual += cw * (pt - pc);
                da -= cw * pc * (1.0 - pc) * inv_n;
                db += cw * pt * (1.0 - pt) * inv_n;
            }
        } else {
            let y = o && buy[i] == 1;
            let (l, ga, gb) = ctcvr_term(a, b, y);
            loss.second += rw * w.global_w * l;
            da += rw * ga * second_w;
            db += rw * gb * second_w;
            if kind.counterfactual() {
                let aux = |t: &[&[f32]]| t.get(2).map_or(0.0, |v| v[i] as f64);
                let hold = [held[0][i] as f64, held[1][i] as f64, aux(held)];
                let [l, gb, gc] = counterfactual_row(kind, w, b, aux(z), hold, o, y as u8 as f64);
                loss.counterfactual += rw * l;
                db += rw * gb * inv_n;
                if let Some(ga) = g.get_mut(2) {
                    ga[i] = (rw * gc * inv_n) as f32;
                }
            }
        }
        g[0][i] = da as f32;
        g[1][i] = db as f32;
    }
    (g, loss)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZC: [f32; 6] = [0.3, -1.2, 2.0, 0.1, 9.0, -9.0];
    const ZV: [f32; 6] = [-0.5, 0.7, -2.0, 1.1, 9.0, 3.0];
    const ZA: [f32; 6] = [-1.5, 0.2, 0.9, -0.4, 2.5, -2.5];
    const CLICK: [u8; 6] = [1, 0, 1, 0, 0, 1];
    const BUY: [u8; 6] = [1, 0, 0, 1, 0, 1];
    const W: LossWeights = LossWeights {
        global_w: 0.7,
        counterfactual_w: 0.3,
        max_inverse_propensity: 4.0,
        constraint_w: 0.2,
        calibrator_w: 0.9,
    };

    fn bump(z: &[f32], i: usize, d: f32) -> Vec<f32> {
        let mut z = z.to_vec();
        z[i] += d;
        z
    }

    /// The logits of `kind`: CTR, CVR, and the auxiliary tower's when it has one.
    fn logits(kind: ModelKind) -> Vec<Vec<f32>> {
        [&ZC[..], &ZV, &ZA][..2 + kind.aux_towers()].iter().map(|z| z.to_vec()).collect()
    }

    fn run(kind: ModelKind, w: &LossWeights, z: &[Vec<f32>], held: &[Vec<f32>]) -> (Vec<Vec<f32>>, StepLoss) {
        let (z, held): (Vec<&[f32]>, Vec<&[f32]>) =
            (z.iter().map(|v| &v[..]).collect(), held.iter().map(|v| &v[..]).collect());
        loss_grads(kind, w, &z, &held, &CLICK, &BUY, 1.0)
    }

    /// Weighing the unclicked rows 2 is, for every kind, the plain loss of the batch in which
    /// each unclicked row appears twice: the same value, and each row's gradient the sum of its
    /// copies' (what training on half the unclicked rows at weight 2 stands for).
    #[test]
    fn weighing_unclicked_rows_is_repeating_them() {
        let copies: Vec<usize> = (0..ZC.len()).flat_map(|i| vec![i; if CLICK[i] == 1 { 1 } else { 2 }]).collect();
        let pick = |v: &[f32]| copies.iter().map(|&i| v[i]).collect::<Vec<f32>>();
        let (click, buy): (Vec<u8>, Vec<u8>) = copies.iter().map(|&i| (CLICK[i], BUY[i])).unzip();
        for kind in ModelKind::ALL {
            let z = logits(kind);
            let zr: Vec<&[f32]> = z.iter().map(|v| &v[..]).collect();
            let (g, loss) = loss_grads(kind, &W, &zr, &zr, &CLICK, &BUY, 2.0);
            let rep: Vec<Vec<f32>> = z.iter().map(|v| pick(v)).collect();
            let repr: Vec<&[f32]> = rep.iter().map(|v| &v[..]).collect();
            let (gr, lr) = loss_grads(kind, &W, &repr, &repr, &click, &buy, 1.0);
            assert!((loss.value() - lr.value()).abs() < 1e-12, "{kind:?}: {} vs {}", loss.value(), lr.value());
            assert_ne!(loss.value(), run(kind, &W, &z, &z).1.value(), "{kind:?}: the weight matters");
            for t in 0..z.len() {
                for i in 0..ZC.len() {
                    let summed: f64 = copies.iter().zip(&gr[t]).filter(|(&c, _)| c == i).map(|(_, &g)| g as f64).sum();
                    assert!((g[t][i] as f64 - summed).abs() < 1e-6, "{kind:?} tower {t} row {i}");
                }
            }
        }
    }

    /// The logit gradients of every kind's loss against finite differences of its value
    /// (weights away from 1 so a misplaced one shows), including saturated logits where a
    /// naive log(1 - p) would lose all precision; the stop-gradient inputs held where they
    /// were (the method's gradient: none flows into them).
    #[test]
    fn loss_gradients_match_finite_differences() {
        for kind in ModelKind::ALL {
            let z0 = logits(kind);
            let (g, loss) = run(kind, &W, &z0, &z0);
            assert!(loss.value().is_finite());
            assert_eq!(g.len(), z0.len());
            for t in 0..z0.len() {
                for i in 0..ZC.len() {
                    let h = 1.0f32 / 1024.0; // exact in f32 around these logits
                    let at = |d: f32| {
                        let mut z = z0.clone();
                        z[t] = bump(&z0[t], i, d);
                        run(kind, &W, &z, &z0).1.value()
                    };
                    let num = (at(h) - at(-h)) / (2.0 * h as f64);
                    assert!((num - g[t][i] as f64).abs() < 1e-4, "{kind:?} tower {t} row {i}: {num} vs {}", g[t][i]);
                }
            }
        }
    }

    /// ESCM²-IPS: no gradient reaches the propensity (the CTR logits get exactly ESMM's
    /// gradient, though the loss value does depend on them), the CVR logits get ESMM's plus the
    /// weighted clicked-row term, the weights are capped, and `counterfactual_w: 0` is ESMM.
    #[test]
    fn ips_leaves_the_propensity_without_gradient() {
        let w =
            LossWeights { counterfactual_w: 0.5, max_inverse_propensity: 4.0, constraint_w: 0.0, ..Default::default() };
        let z = logits(ModelKind::Esmm);
        let (g_e, esmm) = run(ModelKind::Esmm, &w, &z, &z);
        let (g_i, ips) = run(ModelKind::Escm2Ips, &w, &z, &z);
        assert_eq!(g_i[0], g_e[0]);
        assert!(ips.counterfactual > 0.0 && esmm.counterfactual == 0.0);
        let moved = vec![bump(&ZC, 0, 0.5), ZV.to_vec()];
        assert!(run(ModelKind::Escm2Ips, &w, &z, &moved).1.counterfactual != ips.counterfactual, "pCTR sets the value");
        for i in 0..ZC.len() {
            let y = (CLICK[i] & BUY[i]) as f64;
            let extra = if CLICK[i] == 1 {
                0.5 * inverse_propensity(ZC[i] as f64, 4.0) * (sigmoid(ZV[i] as f64) - y) / 6.0
            } else {
                0.0
            };
            assert!((g_i[1][i] as f64 - g_e[1][i] as f64 - extra).abs() < 1e-6, "zv[{i}]");
        }
        // row 5 is a click at pCTR σ(-9) ≈ 1.2e-4: its weight is the cap
        assert_eq!(inverse_propensity(-9.0, 4.0), 4.0);
        assert!((inverse_propensity(0.3, 100.0) - 1.0 / sigmoid(0.3)).abs() < 1e-12);
        let off = LossWeights { counterfactual_w: 0.0, ..w };
        let (g0, l0) = run(ModelKind::Escm2Ips, &off, &z, &z);
        assert_eq!((g0, l0.value()), (g_e, esmm.value()));
    }

    /// ESCM²-DR and DCMT: the CTR tower gets ESMM's gradient (the propensity is held); DR's CVR
    /// gradient on an unclicked row pulls pCVR toward the imputed label, and its imputation tower
    /// learns on clicked rows only; DCMT's counterfactual tower learns on unclicked rows (toward 1)
    /// and the constraint, its factual tower on clicked rows and the constraint.
    #[test]
    fn dr_and_dcmt_send_each_row_where_the_methods_say() {
        let w = LossWeights { constraint_w: 0.0, ..W };
        let esmm = run(ModelKind::Esmm, &w, &logits(ModelKind::Esmm), &logits(ModelKind::Esmm)).0;
        for kind in [ModelKind::Escm2Dr, ModelKind::Dcmt] {
            let z = logits(kind);
            let (g, _) = run(kind, &w, &z, &z);
            assert_eq!(g[0], esmm[0], "{kind:?}: the CTR logits get ESMM's gradient");
            for i in 0..ZC.len() {
                let (o, extra) = (CLICK[i] == 1, g[1][i] - esmm[1][i]);
                match kind {
                    ModelKind::Escm2Dr if !o => {
                        let toward = (sigmoid(ZV[i] as f64) - sigmoid(ZA[i] as f64)) * 0.3 / 6.0;
                        assert!((extra as f64 - toward).abs() < 1e-6, "row {i}");
                        assert_eq!(g[2][i], 0.0, "row {i}: no imputation loss without a label");
                    }
                    ModelKind::Dcmt if !o => assert!(extra == 0.0 && g[2][i] < 0.0, "row {i}"),
                    ModelKind::Dcmt => assert!(extra != 0.0 && g[2][i] == 0.0, "row {i}"),
                    _ => assert!(extra != 0.0 && g[2][i] != 0.0, "row {i}"),
                }
            }
        }
    }

    /// AITM: the second logit is pCTCVR's, trained on click ∧ buy over every row; the
    /// calibrator moves both logits only on the rows whose pCTCVR exceeds pCTR, and
    /// `calibrator_w: 0` leaves the two tasks' plain losses.
    #[test]
    fn aitm_calibrates_only_where_pctcvr_exceeds_pctr() {
        let z = logits(ModelKind::Aitm);
        let (g, loss) = run(ModelKind::Aitm, &W, &z, &z);
        let (g0, loss0) = run(ModelKind::Aitm, &LossWeights { calibrator_w: 0.0, ..W }, &z, &z);
        let mut above = 0;
        for i in 0..ZC.len() {
            let y = (CLICK[i] & BUY[i]) as f64;
            let plain = (sigmoid(ZV[i] as f64) - y) * 0.7 / 6.0;
            assert!((g0[1][i] as f64 - plain).abs() < 1e-6, "row {i}: BCE(pCTCVR, click ∧ buy)");
            let exceeds = sigmoid(ZV[i] as f64) > sigmoid(ZC[i] as f64);
            assert_eq!(g[0][i] != g0[0][i], exceeds, "row {i}");
            assert_eq!(g[1][i] > g0[1][i], exceeds, "row {i}: the calibrator pulls pCTCVR down");
            above += exceeds as usize;
        }
        assert!(above >= 2 && above < ZC.len());
        assert!(loss.counterfactual > 0.0 && loss0.counterfactual == 0.0);
        assert!((loss.value() - loss0.value() - loss.counterfactual / 6.0).abs() < 1e-12);
    }
}
