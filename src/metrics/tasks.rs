//! The three ESMM tasks scored together: CTR (all rows, label click), CVR (clicked rows, label
//! buy), CTCVR (all rows, label click∧buy, score pCTR·pCVR) — AUC, logloss, normalized entropy,
//! calibration and expected calibration error each.

use super::{auc, calibration, expected_calibration_error, logloss, normalized_entropy};

/// Labels and scores of a split (or a slice of it).
#[derive(Clone, Debug, Default)]
pub struct Scored {
    pub click: Vec<bool>,
    pub buy: Vec<bool>,
    pub p_ctr: Vec<f32>,
    pub p_cvr: Vec<f32>,
}

/// One metric of one task.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskMetric {
    pub task: &'static str,
    pub metric: &'static str,
    /// `None` when undefined (no positives, or no negatives for AUC).
    pub value: Option<f64>,
    pub n: u64,
    pub positives: u64,
}

impl Scored {
    pub fn push(&mut self, click: u8, buy: u8, p_ctr: f32, p_cvr: f32) {
        self.click.push(click == 1);
        self.buy.push(buy == 1);
        self.p_ctr.push(p_ctr);
        self.p_cvr.push(p_cvr);
    }

    pub fn len(&self) -> usize {
        self.click.len()
    }

    pub fn is_empty(&self) -> bool {
        self.click.is_empty()
    }

    /// The rows where `keep` holds.
    pub fn filter(&self, keep: impl Fn(usize) -> bool) -> Scored {
        let mut s = Scored::default();
        for i in (0..self.len()).filter(|&i| keep(i)) {
            s.click.push(self.click[i]);
            s.buy.push(self.buy[i]);
            s.p_ctr.push(self.p_ctr[i]);
            s.p_cvr.push(self.p_cvr[i]);
        }
        s
    }

    /// The CTCVR task of every row: scores pCTR·pCVR (in f32, as `predict` writes `p_ctcvr`)
    /// and labels click ∧ buy.
    pub fn ctcvr(&self) -> (Vec<f32>, Vec<bool>) {
        let p = self.p_ctr.iter().zip(&self.p_cvr).map(|(a, b)| a * b).collect();
        (p, self.click.iter().zip(&self.buy).map(|(&c, &b)| c && b).collect())
    }

    /// The three tasks as (task, scores, labels): CTR on every row, CVR on the clicked rows,
    /// CTCVR (pCTR·pCVR against click∧buy) on every row.
    pub fn tasks(&self) -> [(&'static str, Vec<f32>, Vec<bool>); 3] {
        let clicked = self.filter(|i| self.click[i]);
        let (p_ctcvr, ctcvr) = self.ctcvr();
        [
            ("ctr", self.p_ctr.clone(), self.click.clone()),
            ("cvr", clicked.p_cvr, clicked.buy),
            ("ctcvr", p_ctcvr, ctcvr),
        ]
    }

    /// AUC, logloss and calibration of the three tasks.
    pub fn metrics(&self) -> Vec<TaskMetric> {
        let mut out = Vec::new();
        for (task, p, y) in self.tasks() {
            let n = y.len() as u64;
            let positives = y.iter().filter(|&&v| v).count() as u64;
            for (metric, value) in [
                ("auc", auc(&p, &y)),
                ("logloss", logloss(&p, &y)),
                ("normalized_entropy", normalized_entropy(&p, &y)),
                ("calibration", calibration(&p, &y)),
                ("ece", expected_calibration_error(&p, &y)),
            ] {
                out.push(TaskMetric { task, metric, value, n, positives });
            }
        }
        out
    }

    /// Per task, the mean prediction over the mean planted probability of the same rows
    /// (`truth`: these rows, same labels, scored by the planted probabilities): the level error of the
    /// model itself, free of the labels' sampling noise that `calibration` carries. Metric
    /// `calibration_truth`; CVR over the clicked rows, like `calibration`.
    pub fn calibration_to(&self, truth: &Scored) -> Vec<TaskMetric> {
        let sum = |p: &[f32]| p.iter().map(|&v| v as f64).sum::<f64>();
        self.tasks()
            .into_iter()
            .zip(truth.tasks())
            .map(|((task, p, _), (_, q, _))| {
                let value = (sum(&q) > 0.0).then(|| sum(&p) / sum(&q));
                TaskMetric { task, metric: "calibration_truth", value, n: p.len() as u64, positives: 0 }
            })
            .collect()
    }

    /// Shortcut: one task's metric.
    pub fn get(metrics: &[TaskMetric], task: &str, metric: &str) -> Option<f64> {
        metrics.iter().find(|m| m.task == task && m.metric == metric).and_then(|m| m.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the planted probabilities: CTR over every row, CVR over the clicked rows only,
    /// CTCVR over the products; undefined when the truth sums to 0.
    #[test]
    fn calibration_to_truth_compares_the_same_rows() {
        let mut model = Scored::default();
        let mut truth = Scored::default();
        for (click, buy, p, q) in [(1, 1, 0.2, 0.5), (0, 0, 0.1, 0.9), (1, 0, 0.3, 0.1), (0, 0, 0.4, 0.2)] {
            model.push(click, buy, p, q);
            truth.push(click, buy, p / 2.0, q * 2.0);
        }
        let m = model.calibration_to(&truth);
        let got = |task| Scored::get(&m, task, "calibration_truth").unwrap();
        assert!((got("ctr") - 2.0).abs() < 1e-6);
        // clicked rows: (0.5 + 0.1) / (1.0 + 0.2); the unclicked rows' 0.9 and 0.2 do not count
        assert!((got("cvr") - 0.5).abs() < 1e-6);
        assert!((got("ctcvr") - 1.0).abs() < 1e-6);
        assert_eq!(m.iter().find(|t| t.task == "cvr").unwrap().n, 2);
        let zero = Scored { p_ctr: vec![0.0; 4], ..truth };
        assert_eq!(Scored::get(&model.calibration_to(&zero), "ctr", "calibration_truth"), None);
    }
}
