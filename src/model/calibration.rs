//! Calibration of the towers' logits (`train.calibration`): after training, `p = σ(a·z + b)`
//! per tower. `level` moves only the intercept (`a = 1`); `platt` (Platt scaling) fits both by
//! maximum likelihood on the valid split — pCTR on every
//! row against the click, pCVR on the clicked rows against the buy — with Platt's smoothed
//! targets (`(N₊+1)/(N₊+2)` and `1/(N₋+2)`, finite even when the classes separate); then the
//! intercept is moved so that the valid split's mean probability equals the base rate of train
//! and valid together (the valid split is a random share of the training sessions, so their
//! pooled rate estimates its rate with ~10× the events: on a world with 143 valid buys the
//! valid rate alone read 15 % below train's and test's). pCTCVR
//! stays pCTR·pCVR of the calibrated factors. With `a > 0` each map is increasing, so the CTR
//! and CVR rankings (and AUCs) are unchanged; only the CTCVR product's ranking can move. Saved
//! in the checkpoint header; identity (`a = 1, b = 0`) in checkpoints without it, where the
//! probabilities are bit for bit the uncalibrated ones.

use serde::{Deserialize, Serialize};

use super::logistic::{sigmoid, softplus};

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
        both_classes(y)?;
        let pos = y.iter().filter(|&&y| y).count();
        let neg = y.len() - pos;
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

    /// This map with its intercept moved so that the mean probability over `z` is `rate`
    /// (the slope kept): Newton's method on `b`, where the mean is increasing.
    pub fn with_mean(self, z: &[f32], rate: f64) -> Platt {
        if z.is_empty() || !(rate > 0.0 && rate < 1.0) {
            return self;
        }
        let mut p = self;
        for _ in 0..100 {
            let (mut mean, mut slope) = (0.0, 0.0);
            for &z in z {
                let q = sigmoid(p.a * z as f64 + p.b);
                mean += q;
                slope += q * (1.0 - q);
            }
            let (mean, slope) = (mean / z.len() as f64, (slope / z.len() as f64).max(1e-12));
            let step = ((mean - rate) / slope).clamp(-5.0, 5.0);
            p.b -= step;
            if step.abs() < 1e-12 {
                break;
            }
        }
        p
    }
}

/// The rate of `y` when it has both classes.
fn both_classes(y: &[bool]) -> Option<f64> {
    let pos = y.iter().filter(|&&y| y).count();
    (pos > 0 && pos < y.len()).then(|| pos as f64 / y.len() as f64)
}

/// One map per tower.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub ctr: Platt,
    pub cvr: Platt,
}

impl Calibration {
    /// (pCTR, pCVR) of the towers' logits.
    pub fn probabilities(&self, zc: Vec<f32>, zv: Vec<f32>) -> (Vec<f32>, Vec<f32>) {
        let map = |z: Vec<f32>, p: Platt| z.into_iter().map(|z| p.prob(z)).collect();
        (map(zc, self.ctr), map(zv, self.cvr))
    }

    /// Fits both maps from valid-split logits and labels (pCVR on the clicked rows); a tower
    /// whose rows lack one class keeps the identity (`false` in the second value says which).
    /// `rates` (click rate, buys per click), when given, set each map's level: the valid
    /// split's mean probability is moved to that rate, slope kept ([`Platt::with_mean`]).
    /// With `slope: false` only the intercept moves (`a = 1`): the rankings of pCTR, pCVR and
    /// nearly that of their product stay as trained, and nothing rests on the few valid buys'
    /// view of the slope.
    pub fn fit(
        zc: &[f32],
        zv: &[f32],
        (click, buy): (&[bool], &[bool]),
        rates: [Option<f64>; 2],
        slope: bool,
    ) -> (Self, [bool; 2]) {
        let one = |z: &[f32], y: &[bool], rate: Option<f64>| {
            let p = match slope {
                true => Platt::fit(z, y)?,
                false => Platt::default().with_mean(z, both_classes(y)?),
            };
            Some(rate.map_or(p, |r| p.with_mean(z, r)))
        };
        let ctr = one(zc, click, rates[0]);
        let (zv_clicked, buy_clicked): (Vec<f32>, Vec<bool>) =
            (0..zv.len()).filter(|&i| click[i]).map(|i| (zv[i], buy[i])).unzip();
        let cvr = one(&zv_clicked, &buy_clicked, rates[1]);
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
        let (c, fitted) = Calibration::fit(&z, &z, (&[false, true, true, false], &[false; 4]), [None; 2], true);
        assert_eq!(fitted, [true, false]);
        assert!(c.cvr.is_identity() && !c.ctr.is_identity());
    }

    /// A given rate moves the level and keeps the slope: the mean probability is that rate.
    #[test]
    fn the_level_follows_a_given_rate() {
        let z: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) / 100.0).collect();
        let p = Platt { a: 0.7, b: -2.0 }.with_mean(&z, 0.05);
        let mean = z.iter().map(|&z| p.prob(z) as f64).sum::<f64>() / z.len() as f64;
        assert!((mean - 0.05).abs() < 1e-6 && p.a == 0.7, "{p:?} {mean}");
        let y: Vec<bool> = (0..1000).map(|i| i % 7 == 0 || i > 900).collect();
        let (c, _) = Calibration::fit(&z, &z, (&y, &y), [Some(0.2), None], true);
        let mean = z.iter().map(|&z| c.ctr.prob(z) as f64).sum::<f64>() / z.len() as f64;
        assert!((mean - 0.2).abs() < 1e-6, "{mean}");
        // intercept only: a = 1, the mean at the rate given, else at the labels' own rate
        let clicked = vec![true; z.len()];
        let (c, _) = Calibration::fit(&z, &z, (&clicked, &y), [None, None], false);
        assert_eq!(c.ctr, Platt::default(), "every row clicked: one class");
        let (c, _) = Calibration::fit(&z, &z, (&y, &y), [Some(0.2), None], false);
        let mean = |p: Platt| z.iter().map(|&z| p.prob(z) as f64).sum::<f64>() / z.len() as f64;
        assert!(c.ctr.a == 1.0 && (mean(c.ctr) - 0.2).abs() < 1e-6, "{c:?}");
        let (c, _) = Calibration::fit(&z, &z, (&clicked, &y), [None, None], false);
        let rate = y.iter().filter(|&&y| y).count() as f64 / 1000.0;
        assert!(c.cvr.a == 1.0 && (mean(c.cvr) - rate).abs() < 1e-6, "{c:?}");
    }
}
