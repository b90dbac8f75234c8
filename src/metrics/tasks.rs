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

    /// AUC, logloss and calibration of the three tasks.
    pub fn metrics(&self) -> Vec<TaskMetric> {
        let (p_ctcvr, ctcvr_label) = self.ctcvr();
        let clicked = self.filter(|i| self.click[i]);
        let mut out = Vec::new();
        for (task, p, y) in [
            ("ctr", &self.p_ctr, &self.click),
            ("cvr", &clicked.p_cvr, &clicked.buy),
            ("ctcvr", &p_ctcvr, &ctcvr_label),
        ] {
            let n = y.len() as u64;
            let positives = y.iter().filter(|&&v| v).count() as u64;
            for (metric, value) in [
                ("auc", auc(p, y)),
                ("logloss", logloss(p, y)),
                ("normalized_entropy", normalized_entropy(p, y)),
                ("calibration", calibration(p, y)),
                ("ece", expected_calibration_error(p, y)),
            ] {
                out.push(TaskMetric { task, metric, value, n, positives });
            }
        }
        out
    }

    /// Shortcut: one task's metric.
    pub fn get(metrics: &[TaskMetric], task: &str, metric: &str) -> Option<f64> {
        metrics.iter().find(|m| m.task == task && m.metric == metric).and_then(|m| m.value)
    }
}
