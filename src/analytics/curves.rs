//! The numbers behind the report's plots: ROC curves (with tied scores as one step, so the area
//! under the drawn curve is the tie-averaged AUC of `crate::metrics::auc`) and reliability bins
//! (equal-count bins of the predicted probability, as `sql/calibration.sql` cuts them).

/// Points (false positive rate, true positive rate) from the highest threshold down, starting at
/// (0, 0) and ending at (1, 1), thinned to about `max_points`; `None` when a class is empty.
pub fn roc(scores: &[f32], labels: &[bool], max_points: usize) -> Option<Vec<(f64, f64)>> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_unstable_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let pos = labels.iter().filter(|&&l| l).count() as f64;
    let neg = labels.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return None;
    }
    let mut pts = vec![(0.0, 0.0)];
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut i = 0;
    while i < order.len() {
        let s = scores[order[i]];
        while i < order.len() && scores[order[i]].total_cmp(&s).is_eq() {
            if labels[order[i]] {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            i += 1;
        }
        pts.push((fp / neg, tp / pos));
    }
    Some(thin(pts, max_points))
}

/// Keeps about `max_points` points, always the first and the last: consecutive points closer
/// than 1/max_points along both axes are merged.
fn thin(pts: Vec<(f64, f64)>, max_points: usize) -> Vec<(f64, f64)> {
    let gap = 1.0 / max_points.max(2) as f64;
    let mut out: Vec<(f64, f64)> = Vec::with_capacity(max_points + 1);
    let last = pts.len() - 1;
    for (k, p) in pts.into_iter().enumerate() {
        let keep = match out.last() {
            None => true,
            Some(q) => k == last || (p.0 - q.0).abs() >= gap || (p.1 - q.1).abs() >= gap,
        };
        if keep {
            out.push(p);
        }
    }
    out
}

/// One reliability bin.
#[derive(Clone, Debug, PartialEq)]
pub struct Bin {
    pub rows: usize,
    pub mean_predicted: f64,
    pub observed_rate: f64,
}

/// `bins` equal-count bins of the rows sorted by prediction (ties in input order): bin of the
/// r-th row (0-based) is ⌊r·bins/n⌋. Empty bins are left out.
pub fn reliability(scores: &[f32], labels: &[bool], bins: usize) -> Vec<Bin> {
    let n = scores.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut acc = vec![(0usize, 0.0f64, 0.0f64); bins];
    for (r, &i) in order.iter().enumerate() {
        let b = &mut acc[(r as f64 * bins as f64 / n as f64).floor() as usize];
        b.0 += 1;
        b.1 += scores[i] as f64;
        b.2 += labels[i] as u8 as f64;
    }
    acc.into_iter()
        .filter(|b| b.0 > 0)
        .map(|(rows, p, y)| Bin { rows, mean_predicted: p / rows as f64, observed_rate: y / rows as f64 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roc_area_is_the_tie_averaged_auc() {
        let scores = [0.1f32, 0.4, 0.35, 0.8, 0.4, 0.2, 0.9, 0.05];
        let labels = [false, false, true, true, true, false, true, false];
        let pts = roc(&scores, &labels, 1000).unwrap();
        assert_eq!(pts.first(), Some(&(0.0, 0.0)));
        assert_eq!(pts.last(), Some(&(1.0, 1.0)));
        let want = crate::metrics::auc(&scores, &labels).unwrap();
        let area: f64 = pts.windows(2).map(|w| (w[1].0 - w[0].0) * (w[0].1 + w[1].1) / 2.0).sum();
        assert!((area - want).abs() < 1e-12, "{area} vs {want}");
        assert!(roc(&scores, &[false; 8], 10).is_none());
    }

    #[test]
    fn roc_is_thinned_but_keeps_its_ends() {
        let scores: Vec<f32> = (0..10_000).map(|i| i as f32).collect();
        let labels: Vec<bool> = (0..10_000).map(|i| i % 3 == 0).collect();
        let pts = roc(&scores, &labels, 100).unwrap();
        assert!(pts.len() <= 202 && pts.len() > 50, "{}", pts.len());
        assert_eq!((pts[0], *pts.last().unwrap()), ((0.0, 0.0), (1.0, 1.0)));
    }

    #[test]
    fn reliability_bins_have_equal_counts() {
        let scores: Vec<f32> = (0..100).map(|i| i as f32 / 100.0).collect();
        let labels: Vec<bool> = (0..100).map(|i| i >= 90).collect();
        let bins = reliability(&scores, &labels, 10);
        assert_eq!(bins.len(), 10);
        assert!(bins.iter().all(|b| b.rows == 10));
        assert!((bins[0].mean_predicted - 0.045).abs() < 1e-6);
        assert_eq!((bins[8].observed_rate, bins[9].observed_rate), (0.0, 1.0));
        assert_eq!(reliability(&scores[..3], &labels[..3], 10).len(), 3);
    }
}
