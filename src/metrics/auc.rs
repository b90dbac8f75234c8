//! Exact ROC AUC over a whole split: sort by score, average the ranks of tied scores
//! (Mann–Whitney U). Never an average of per-batch AUCs.

use rayon::prelude::*;

/// AUC of `scores` against `labels`; `None` when one class is empty (AUC undefined).
pub fn auc(scores: &[f32], labels: &[bool]) -> Option<f64> {
    assert_eq!(scores.len(), labels.len(), "scores and labels differ in length");
    let mut pairs: Vec<(f32, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    pairs.par_sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    let positives = pairs.iter().filter(|p| p.1).count() as f64;
    let negatives = pairs.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return None;
    }
    // Sum of the (1-based, tie-averaged) ranks of the positives.
    let mut rank_sum = 0.0f64;
    let mut i = 0usize;
    while i < pairs.len() {
        let mut j = i;
        let mut pos_in_group = 0u64;
        while j < pairs.len() && pairs[j].0.total_cmp(&pairs[i].0).is_eq() {
            pos_in_group += pairs[j].1 as u64;
            j += 1;
        }
        let avg_rank = (i + 1 + j) as f64 / 2.0; // mean of ranks i+1 ..= j
        rank_sum += avg_rank * pos_in_group as f64;
        i = j;
    }
    Some((rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives))
}

/// AUC against probabilistic labels: row `i` counts as a positive with weight `q[i]` and as a
/// negative with weight `1 − q[i]` (the expected AUC over label draws, without sampling noise).
/// Used to score CVR over the entire space against the planted p(buy | click).
pub fn soft_auc(scores: &[f32], q: &[f32]) -> Option<f64> {
    assert_eq!(scores.len(), q.len(), "scores and labels differ in length");
    let mut pairs: Vec<(f32, f64)> = scores.iter().copied().zip(q.iter().map(|&v| v as f64)).collect();
    pairs.par_sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
    let (mut neg_below, mut num) = (0.0f64, 0.0f64);
    let (pos_total, neg_total): (f64, f64) = pairs.iter().fold((0.0, 0.0), |(p, n), &(_, q)| (p + q, n + 1.0 - q));
    if pos_total <= 0.0 || neg_total <= 0.0 {
        return None;
    }
    let mut i = 0;
    while i < pairs.len() {
        let mut j = i;
        let (mut pos, mut neg) = (0.0, 0.0);
        while j < pairs.len() && pairs[j].0.total_cmp(&pairs[i].0).is_eq() {
            pos += pairs[j].1;
            neg += 1.0 - pairs[j].1;
            j += 1;
        }
        num += pos * (neg_below + 0.5 * neg);
        neg_below += neg;
        i = j;
    }
    Some(num / (pos_total * neg_total))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// O(n²) definition: P(score_pos > score_neg) + ½ P(tie).
    fn brute(scores: &[f32], labels: &[bool]) -> f64 {
        let (mut num, mut den) = (0.0, 0.0);
        for (i, &li) in labels.iter().enumerate() {
            for (j, &lj) in labels.iter().enumerate() {
                if li && !lj {
                    den += 1.0;
                    num += if scores[i] > scores[j] {
                        1.0
                    } else if scores[i] == scores[j] {
                        0.5
                    } else {
                        0.0
                    };
                }
            }
        }
        num / den
    }

    #[test]
    fn matches_brute_force_with_ties() {
        let mut state = 12345u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        for n in [2usize, 7, 50, 400] {
            for levels in [2u32, 5, 1000] {
                let scores: Vec<f32> = (0..n).map(|_| (next() % levels) as f32 / levels as f32).collect();
                let labels: Vec<bool> = (0..n).map(|i| i == 0 || (i != 1 && next() % 3 == 0)).collect();
                let got = auc(&scores, &labels).unwrap();
                assert!((got - brute(&scores, &labels)).abs() < 1e-12, "n={n} levels={levels}");
            }
        }
    }

    #[test]
    fn soft_auc_equals_hard_auc_on_hard_labels_and_expectation_otherwise() {
        let scores = [0.1f32, 0.4, 0.4, 0.8, 0.9, 0.2];
        let labels = [false, true, false, true, false, true];
        let q: Vec<f32> = labels.iter().map(|&l| l as u8 as f32).collect();
        assert!((soft_auc(&scores, &q).unwrap() - auc(&scores, &labels).unwrap()).abs() < 1e-12);
        // Two rows: P(pos) = 0.5 each; expected AUC over the 2 mixed draws = 0.5 · (1 + 0) / 1.
        let s = soft_auc(&[0.2, 0.7], &[0.5, 0.5]).unwrap();
        assert!((s - 0.5).abs() < 1e-12, "{s}");
        assert_eq!(soft_auc(&[0.1, 0.2], &[0.0, 0.0]), None);
    }

    #[test]
    fn edge_cases() {
        assert_eq!(auc(&[0.1, 0.2], &[true, true]), None);
        assert_eq!(auc(&[0.1, 0.9], &[false, true]), Some(1.0));
        assert_eq!(auc(&[0.5, 0.5, 0.5], &[false, true, false]), Some(0.5));
        assert_eq!(auc(&[0.9, 0.1], &[false, true]), Some(0.0));
    }
}
