//! Exact metrics over a whole split: AUC (sort-based, ties averaged), logloss, normalized
//! entropy, calibration (mean prediction over observed rate), expected calibration error, and
//! group AUC (per user and per session).

pub mod auc;
pub mod group;
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

/// Normalized entropy (He et al., ADKDD 2014): the logloss over the entropy of the observed
/// base rate, i.e. relative to always predicting that rate (< 1 = better than it); `None`
/// without both classes.
pub fn normalized_entropy(p: &[f32], labels: &[bool]) -> Option<f64> {
    let pos = labels.iter().filter(|&&y| y).count();
    if pos == 0 || pos == labels.len() {
        return None;
    }
    let r = pos as f64 / labels.len() as f64;
    let base = -(r * r.ln() + (1.0 - r) * (1.0 - r).ln());
    Some(logloss(p, labels)? / base)
}

/// Bins of [`expected_calibration_error`].
pub const ECE_BINS: usize = 10;

/// Expected calibration error: rows sorted by prediction into [`ECE_BINS`] bins of equal
/// count, then `Σ_b (n_b / n) · |mean prediction_b − observed rate_b|`, an absolute gap in
/// probability (equal-count bins: at rates of a few percent, equal-width bins would put
/// almost every row into the first). `None` for no rows.
pub fn expected_calibration_error(p: &[f32], labels: &[bool]) -> Option<f64> {
    if p.is_empty() {
        return None;
    }
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]).then(a.cmp(&b)));
    let n = p.len();
    let mut ece = 0.0;
    for b in 0..ECE_BINS {
        let bin = &order[b * n / ECE_BINS..(b + 1) * n / ECE_BINS];
        if bin.is_empty() {
            continue;
        }
        let mean_p = bin.iter().map(|&i| p[i] as f64).sum::<f64>() / bin.len() as f64;
        let rate = bin.iter().filter(|&&i| labels[i]).count() as f64 / bin.len() as f64;
        ece += bin.len() as f64 / n as f64 * (mean_p - rate).abs();
    }
    Some(ece)
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

    #[test]
    fn normalized_entropy_and_ece() {
        // predicting the base rate everywhere: NE 1, perfectly calibrated
        let y: Vec<bool> = (0..1000).map(|i| i % 10 == 0).collect();
        let base = vec![0.1f32; 1000];
        assert!((normalized_entropy(&base, &y).unwrap() - 1.0).abs() < 1e-6);
        assert!(expected_calibration_error(&base, &y).unwrap() < 1e-6);
        // informative predictions: NE below 1; twice the right level: ECE = the mean gap
        let good: Vec<f32> = y.iter().map(|&v| if v { 0.6 } else { 0.05 }).collect();
        assert!(normalized_entropy(&good, &y).unwrap() < 0.8);
        let doubled = vec![0.2f32; 1000];
        assert!((expected_calibration_error(&doubled, &y).unwrap() - 0.1).abs() < 1e-6);
        assert_eq!(normalized_entropy(&base, &[true; 1000]), None);
        assert_eq!(expected_calibration_error(&[], &[]), None);
    }
}
