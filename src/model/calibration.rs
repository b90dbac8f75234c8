//! Platt scaling of the towers' logits (`train.calibration: platt`): after training, `p =
//! σ(a·z + b)` per tower, fitted by maximum likelihood on the valid split — pCTR on every
//! row against the click, pCVR on the clicked rows against the buy — with Platt's smoothed
//! targets (`(N₊+1)/(N₊+2)` and `1/(N₋+2)`, finite even when the classes separate). pCTCVR
//! stays pCTR·pCVR of the calibrated factors. With `a > 0` each map is increasing, so the CTR
//! and CVR rankings (and AUCs) are unchanged; only the CTCVR product's ranking can move. Saved
//! in the checkpoint header; identity (`a = 1, b = 0`) in checkpoints without it, where the
//! probabilities are bit for bit the uncalibrated ones.

use serde::{Deserialize, Serialize};

use super::esmm::{sigmoid, softplus};

/// `p = σ(a·z + b)` for a logit `z`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Platt {
    pub a: f64,
    pub b: f64,
}

impl Default for Platt {
    fn default() -> Self {
        Self { a: 1.0, b: 0.0 }
    }
}

impl Platt {
    pub fn is_identity(&self) -> bool {
        *self == Self::default()
    }

    /// The calibrated probability of logit `z`.
    #[inline]
    pub fn prob(&self, z: f32) -> f32 {
        sigmoid(self.a * z as f64 + self.b) as f32
    }

    /// The maximum-likelihood map for logits `z` with labels `y`; `None` without both classes.
    /// Newton's method from the identity with step halving (the problem is convex, two
    /// parameters): deterministic for the same inputs in the same order.
    pub fn fit(z: &[f32], y: &[bool]) -> Option<Platt> {
        let pos = y.iter().filter(|&&y| y).count();
        let neg = y.len() - pos;
        if pos == 0 || neg == 0 {
            return None;
        }
        let targets = [1.0 / (neg as f64 + 2.0), (pos as f64 + 1.0) / (pos as f64 + 2.0)];
        let t = |i: usize| targets[y[i] as usize];
        let loss = |p: Platt| -> f64 {
            (0..z.len())
                .map(|i| {
                    let s = p.a * z[i] as f64 + p.b;
                    softplus(s) - t(i) * s
                })
                .sum()
        };
        let mut cur = Platt::default();
        let mut cur_loss = loss(cur);
        for _ in 0..100 {
            let (mut ga, mut gb, mut haa, mut hab, mut hbb) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for i in 0..z.len() {
                let zi = z[i] as f64;
                let p = sigmoid(cur.a * zi + cur.b);
                let (r, w) = (p - t(i), (p * (1.0 - p)).max(1e-12));
                ga += r * zi;
                gb += r;
                haa += w * zi * zi;
                hab += w * zi;
                hbb += w;
            }
            let det = haa * hbb - hab * hab;
            if !(det > 0.0) {
                break;
            }
            let (da, db) = ((hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det);
            let mut step = 1.0;
            let mut improved = false;
            while step > 1e-6 {
                let next = Platt { a: cur.a - step * da, b: cur.b - step * db };
                let next_loss = loss(next);
                if next_loss <= cur_loss {
                    improved = next_loss < cur_loss;
                    (cur, cur_loss) = (next, next_loss);
                    break;
                }
                step /= 2.0;
            }
            if !improved || (da.abs() + db.abs()) * step < 1e-10 {
                break;
            }
        }
        Some(cur)
    }
}

/// One map per tower.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub ctr: Platt,
    pub cvr: Platt,
}

impl Calibration {
    /// Fits both maps from valid-split logits and labels (pCVR on the clicked rows); a tower
    /// whose rows lack one class keeps the identity (`None` in the second value says which).
    pub fn fit(zc: &[f32], zv: &[f32], click: &[bool], buy: &[bool]) -> (Self, [bool; 2]) {
        let ctr = Platt::fit(zc, click);
        let (zv_clicked, buy_clicked): (Vec<f32>, Vec<bool>) =
            (0..zv.len()).filter(|&i| click[i]).map(|i| (zv[i], buy[i])).unzip();
        let cvr = Platt::fit(&zv_clicked, &buy_clicked);
        let fitted = [ctr.is_some(), cvr.is_some()];
        (Self { ctr: ctr.unwrap_or_default(), cvr: cvr.unwrap_or_default() }, fitted)
    }

    pub fn is_identity(&self) -> bool {
        self.ctr.is_identity() && self.cvr.is_identity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Labels drawn from `σ(2z - 1)`: the fit recovers (2, -1) from logits `z`.
    #[test]
    fn platt_recovers_a_planted_map() {
        let mut rng = crate::rng::Rng::new(3);
        let z: Vec<f32> = (0..200_000).map(|_| rng.normal() as f32).collect();
        let y: Vec<bool> = z.iter().map(|&z| rng.f64() < sigmoid(2.0 * z as f64 - 1.0)).collect();
        let p = Platt::fit(&z, &y).unwrap();
        assert!((p.a - 2.0).abs() < 0.05 && (p.b + 1.0).abs() < 0.05, "{p:?}");
        // At the optimum the intercept's score equation holds: Σ p = Σ targets.
        let sum_p: f64 = z.iter().map(|&z| p.prob(z) as f64).sum();
        let pos = y.iter().filter(|&&y| y).count() as f64;
        assert!((sum_p - pos).abs() < 2.0, "{sum_p} vs {pos}");
        assert_eq!(Platt::fit(&z, &y), Some(p), "deterministic");
    }

    /// Separable classes give a finite map (Platt's targets); one class gives none; the
    /// identity leaves probabilities bit for bit as σ(z).
    #[test]
    fn platt_edge_cases() {
        let z = [-2.0f32, -1.0, 1.0, 2.0];
        let p = Platt::fit(&z, &[false, false, true, true]).unwrap();
        assert!(p.a.is_finite() && p.a > 0.0 && p.b.is_finite(), "{p:?}");
        assert_eq!(Platt::fit(&z, &[true; 4]), None);
        assert_eq!(Platt::fit(&[], &[]), None);
        for z in [-30.0f32, -0.0, 0.3, 17.0] {
            assert_eq!(Platt::default().prob(z), sigmoid(z as f64) as f32);
        }
        let (c, fitted) = Calibration::fit(&z, &z, &[false, true, true, false], &[false, false, false, false]);
        assert_eq!(fitted, [true, false]);
        assert!(c.cvr.is_identity() && !c.ctr.is_identity());
    }
}
