//! Calibrating the world's intercepts: the target click rate and buys per click are met in
//! expectation over a fixed stream of simulated impressions ([`session::calibration_sample`]),
//! for the planted logits, the semi-oracle's and the group oracle's.

use anyhow::Result;

use super::world::{sigmoid, World};
use super::{model, session};
use crate::config::GenerateConfig;

impl World {
    /// Builds the world of `params` and calibrates its intercepts to the target rates.
    pub fn build(params: &GenerateConfig) -> Result<Self> {
        let mut world = Self::build_uncalibrated(params)?;
        let [sample, semi, group] = session::calibration_sample(&world, model::CALIBRATION_ROWS);
        (world.b_click, world.b_buy) = calibrate(&sample, params.ctr, params.cvr);
        (world.b_click_semi, world.b_buy_semi) = calibrate(&semi, params.ctr, params.cvr);
        (world.b_click_group, world.b_buy_group) = calibrate(&group, params.ctr, params.cvr);
        Ok(world)
    }
}

/// Monotone bisection of `f(b) = target` over `[-40, 40]`.
fn bisect(target: f64, f: impl Fn(f64) -> f64) -> f64 {
    let (mut lo, mut hi) = (-40.0, 40.0);
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if f(mid) < target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Intercepts so that the expected click rate over the sample is `ctr` and the click-weighted
/// expected buy rate is `cvr`. `sample` holds the logits without intercepts.
pub fn calibrate(sample: &[(f64, f64)], ctr: f64, cvr: f64) -> (f64, f64) {
    if sample.is_empty() {
        return (0.0, 0.0);
    }
    let n = sample.len() as f64;
    let b_click = bisect(ctr, |b| sample.iter().map(|&(zc, _)| sigmoid(b + zc)).sum::<f64>() / n);
    let w: Vec<f64> = sample.iter().map(|&(zc, _)| sigmoid(b_click + zc)).collect();
    let total: f64 = w.iter().sum();
    let b_buy = bisect(cvr, |b| sample.iter().zip(&w).map(|(&(_, zv), &wc)| wc * sigmoid(b + zv)).sum::<f64>() / total);
    (b_click, b_buy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn calibration_hits_the_targets_in_expectation() {
        let mut r = Rng::new(9);
        let sample: Vec<(f64, f64)> = (0..20_000).map(|_| (r.normal(), r.normal())).collect();
        let (bc, bv) = calibrate(&sample, 0.04, 0.02);
        let ctr: f64 = sample.iter().map(|s| sigmoid(bc + s.0)).sum::<f64>() / 20_000.0;
        let clicks: f64 = sample.iter().map(|s| sigmoid(bc + s.0)).sum();
        let buys: f64 = sample.iter().map(|s| sigmoid(bc + s.0) * sigmoid(bv + s.1)).sum();
        assert!((ctr - 0.04).abs() < 1e-6 && (buys / clicks - 0.02).abs() < 1e-6);
    }
}
