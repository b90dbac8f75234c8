//! Exact metrics over a whole split: AUC (sort-based, ties averaged), logloss, calibration.

pub mod auc;
pub mod inputs;
pub mod tasks;

pub use auc::{auc, soft_auc};
pub use tasks::{Scored, TaskMetric};

/// Probabilities are clipped to [EPS, 1 − EPS] in the logloss.
pub const EPS: f64 = 1e-7;

/// Binary cross-entropy of one probability, clipped to [EPS, 1 − EPS].
#[inline]
pub fn bce(p: f64, y: bool) -> f64 {
    let p = p.clamp(EPS, 1.0 - EPS);
    if y {
        -p.ln()
    } else {
        -(1.0 - p).ln()
    }
}

/// Mean binary cross-entropy of `p` against `labels`.
pub fn logloss(p: &[f32], labels: &[bool]) -> Option<f64> {
    if p.is_empty() {
        return None;
    }
    let sum: f64 = p.iter().zip(labels).map(|(&p, &y)| bce(p as f64, y)).sum();
    Some(sum / p.len() as f64)
}

/// Mean prediction over observed rate (1.0 = calibrated); `None` without positives.
pub fn calibration(p: &[f32], labels: &[bool]) -> Option<f64> {
    let pos = labels.iter().filter(|&&y| y).count();
    if pos == 0 {
        return None;
    }
    let mean_p: f64 = p.iter().map(|&v| v as f64).sum::<f64>() / p.len() as f64;
    Some(mean_p / (pos as f64 / labels.len() as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logloss_and_calibration() {
        let l = logloss(&[0.5, 0.5], &[true, false]).unwrap();
        assert!((l - std::f64::consts::LN_2).abs() < 1e-12);
        assert!(logloss(&[0.0], &[true]).unwrap().is_finite());
        assert!((calibration(&[0.25, 0.25], &[true, false]).unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(calibration(&[0.1], &[false]), None);
    }
}
