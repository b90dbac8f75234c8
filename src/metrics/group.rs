//! Group AUC (GAUC): the impression-weighted mean of per-group AUCs over the groups that have
//! both classes, per user (`user_key`) and per session (`md5`) — EasyRec's `gauc` and
//! `session_auc`, torch-rechub's `gauc_score`. A global AUC also rewards ranking users against
//! each other, which serving never does; GAUC scores the ranking within each group only.
//!
//! A group with one class (most users never buy) has no AUC: it is counted, never an error, and
//! its impressions are not covered. Each group's AUC is [`auc`] itself. Rows are sorted once by
//! (key, row) and groups are runs of that order; the weighted sum runs over the groups in key
//! order, so the value is the same bit for bit for any row order and thread count.

use rayon::prelude::*;

use super::{auc, Scored, TaskMetric};
use crate::schema::{MD5, USER_KEY};

/// What the rows are grouped by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grouping {
    /// The hashed user id (`user_key`); rows with key 0 (no `101` id) are in no group.
    User,
    /// The session (`md5`).
    Session,
}

impl Grouping {
    pub const ALL: [Grouping; 2] = [Grouping::User, Grouping::Session];

    pub fn name(self) -> &'static str {
        match self {
            Grouping::User => "user",
            Grouping::Session => "session",
        }
    }

    /// The predictions column holding the key.
    pub fn column(self) -> &'static str {
        match self {
            Grouping::User => USER_KEY,
            Grouping::Session => MD5,
        }
    }

    /// A key that puts a row in no group: user key 0 is a row without a user id.
    pub fn no_group(self) -> Option<u64> {
        match self {
            Grouping::User => Some(0),
            Grouping::Session => None,
        }
    }

    /// Its metric names in the metrics table: the group AUC, then the number of groups, of
    /// groups covered (both classes) and of impressions covered.
    pub fn metrics(self) -> [&'static str; 4] {
        match self {
            Grouping::User => {
                ["gauc_user", "gauc_user_groups", "gauc_user_groups_covered", "gauc_user_impressions_covered"]
            }
            Grouping::Session => [
                "gauc_session",
                "gauc_session_groups",
                "gauc_session_groups_covered",
                "gauc_session_impressions_covered",
            ],
        }
    }
}

/// One task's group AUC under one grouping.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupAuc {
    /// `Σ n_g·AUC_g / Σ n_g` over the covered groups; `None` when no group has both classes.
    pub value: Option<f64>,
    /// The task's rows that are in a group, and their positives.
    pub impressions: u64,
    pub positives: u64,
    /// Groups with at least one row of the task, and those with both classes among them.
    pub groups: u64,
    pub groups_covered: u64,
    /// The task's rows in covered groups.
    pub impressions_covered: u64,
}

/// Rows grouped by key: `rows` sorted by (key, row); group `g` is `rows[starts[g]..starts[g + 1]]`.
pub struct Groups {
    rows: Vec<usize>,
    starts: Vec<usize>,
}

impl Groups {
    /// The groups of `keys` (one key per row); rows whose key is `skip` are in no group.
    pub fn new(keys: &[u64], skip: Option<u64>) -> Self {
        let mut pairs: Vec<(u64, usize)> =
            keys.iter().enumerate().filter(|&(_, &k)| Some(k) != skip).map(|(i, &k)| (k, i)).collect();
        pairs.par_sort_unstable();
        let mut starts: Vec<usize> = (0..pairs.len()).filter(|&i| i == 0 || pairs[i].0 != pairs[i - 1].0).collect();
        starts.push(pairs.len());
        Self { rows: pairs.into_iter().map(|p| p.1).collect(), starts }
    }

    /// The groups of `grouping`'s keys.
    pub fn by(keys: &[u64], grouping: Grouping) -> Self {
        Self::new(keys, grouping.no_group())
    }

    /// Number of groups (of any task).
    pub fn len(&self) -> usize {
        self.starts.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Group AUC of `scores` against `labels` (indexed by row) over the rows where `in_task` holds.
    pub fn auc(&self, scores: &[f32], labels: &[bool], in_task: impl Fn(usize) -> bool + Sync) -> GroupAuc {
        // Per group, in key order: rows of the task, positives, AUC when both classes are there.
        let per_group: Vec<(u64, u64, Option<f64>)> = (0..self.len())
            .into_par_iter()
            .map_init(
                || (Vec::new(), Vec::new()),
                |(s, y): &mut (Vec<f32>, Vec<bool>), g| {
                    s.clear();
                    y.clear();
                    for &r in self.rows[self.starts[g]..self.starts[g + 1]].iter().filter(|&&r| in_task(r)) {
                        s.push(scores[r]);
                        y.push(labels[r]);
                    }
                    let pos = y.iter().filter(|&&v| v).count();
                    let a = if pos > 0 && pos < y.len() { auc(s, y) } else { None };
                    (y.len() as u64, pos as u64, a)
                },
            )
            .collect();
        let mut out = GroupAuc {
            value: None,
            impressions: 0,
            positives: 0,
            groups: 0,
            groups_covered: 0,
            impressions_covered: 0,
        };
        let mut weighted = 0.0f64;
        for (n, pos, a) in per_group.into_iter().filter(|g| g.0 > 0) {
            out.groups += 1;
            out.impressions += n;
            out.positives += pos;
            if let Some(a) = a {
                out.groups_covered += 1;
                out.impressions_covered += n;
                weighted += n as f64 * a;
            }
        }
        out.value = (out.impressions_covered > 0).then(|| weighted / out.impressions_covered as f64);
        out
    }
}

/// The group AUC of the three tasks of `s` — CTR and CTCVR over every row, CVR over the clicked
/// rows — under `grouping`, as metrics-table rows: per task the four [`Grouping::metrics`], each
/// with the task's grouped rows and their positives as `n` and `positives`.
pub fn group_metrics(s: &Scored, groups: &Groups, grouping: Grouping) -> Vec<TaskMetric> {
    let (p_ctcvr, ctcvr) = s.ctcvr();
    let every = |_: usize| true;
    let tasks = [
        ("ctr", groups.auc(&s.p_ctr, &s.click, every)),
        ("cvr", groups.auc(&s.p_cvr, &s.buy, |i| s.click[i])),
        ("ctcvr", groups.auc(&p_ctcvr, &ctcvr, every)),
    ];
    let [gauc, n_groups, covered, impressions_covered] = grouping.metrics();
    let mut out = Vec::with_capacity(12);
    for (task, g) in tasks {
        let row = |metric, value| TaskMetric { task, metric, value, n: g.impressions, positives: g.positives };
        out.extend([
            row(gauc, g.value),
            row(n_groups, Some(g.groups as f64)),
            row(covered, Some(g.groups_covered as f64)),
            row(impressions_covered, Some(g.impressions_covered as f64)),
        ]);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// (key, score, label) rows, keys interleaved: user 1 → AUC 1 (3 rows), user 2 → AUC 0.5
    /// (4 rows), user 3 → one class (2 rows), user 4 → a single row, user 0 → no user id (AUC 0).
    const ROWS: [(u64, f32, bool); 12] = [
        (2, 0.2, true),
        (1, 0.9, true),
        (3, 0.3, false),
        (0, 0.99, false),
        (2, 0.8, false),
        (1, 0.1, false),
        (4, 0.5, true),
        (2, 0.9, true),
        (3, 0.7, false),
        (1, 0.5, false),
        (0, 0.01, true),
        (2, 0.6, false),
    ];

    fn columns(rows: &[(u64, f32, bool)]) -> (Vec<u64>, Vec<f32>, Vec<bool>) {
        (rows.iter().map(|r| r.0).collect(), rows.iter().map(|r| r.1).collect(), rows.iter().map(|r| r.2).collect())
    }

    #[test]
    fn hand_computed_with_one_class_groups_and_a_single_row() {
        let (keys, s, y) = columns(&ROWS);
        let g = Groups::by(&keys, Grouping::User).auc(&s, &y, |_| true);
        // (3 · 1.0 + 4 · 0.5) / 7; users 3 and 4 counted but not covered; user 0 in no group.
        let want = GroupAuc {
            value: Some(5.0 / 7.0),
            impressions: 10,
            positives: 4,
            groups: 4,
            groups_covered: 2,
            impressions_covered: 7,
        };
        assert_eq!(g, want);
        // By session every key is a group, 0 included: (3 · 1 + 4 · 0.5 + 2 · 0) / 9.
        let g = Groups::by(&keys, Grouping::Session).auc(&s, &y, |_| true);
        assert_eq!((g.value, g.groups, g.groups_covered, g.impressions_covered), (Some(5.0 / 9.0), 5, 3, 9));
        // A task on some rows only (CVR on clicked rows): user 1 keeps rows 1 and 9 (AUC 1), user 2
        // keeps rows 0 and 4 (AUC 0); user 3's rows all drop out, so it is no group of the task.
        let g = Groups::by(&keys, Grouping::User).auc(&s, &y, |i| [0, 1, 4, 6, 9].contains(&i));
        assert_eq!((g.value, g.groups, g.groups_covered, g.impressions), (Some(0.5), 3, 2, 5));
        // No group with both classes: no value, nothing covered.
        let g = Groups::by(&keys, Grouping::User).auc(&s, &vec![false; 12], |_| true);
        assert_eq!((g.value, g.groups, g.groups_covered, g.impressions_covered), (None, 4, 0, 0));
        assert!(Groups::new(&[], None).auc(&[], &[], |_| true).value.is_none());
    }

    #[test]
    fn equals_per_group_auc_and_ignores_row_order() {
        let mut state = 7u64;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        let rows: Vec<(u64, f32, bool)> =
            (0..3000).map(|_| ((next() % 60) as u64, (next() % 50) as f32 / 50.0, next() % 4 == 0)).collect();
        let (keys, s, y) = columns(&rows);
        let got = Groups::new(&keys, None).auc(&s, &y, |_| true);
        // Reference: a map of the groups, each scored alone.
        let mut by_key: BTreeMap<u64, (Vec<f32>, Vec<bool>)> = BTreeMap::new();
        for r in &rows {
            let e = by_key.entry(r.0).or_default();
            e.0.push(r.1);
            e.1.push(r.2);
        }
        let (mut num, mut den) = (0.0, 0.0);
        for (s, y) in by_key.values() {
            if let Some(a) = auc(s, y) {
                num += s.len() as f64 * a;
                den += s.len() as f64;
            }
        }
        assert!((got.value.unwrap() - num / den).abs() < 1e-12, "{got:?} vs {}", num / den);
        assert_eq!(got.groups, by_key.len() as u64);
        // Rows reversed: the same bits.
        let rev: Vec<_> = rows.iter().rev().copied().collect();
        let (keys, s, y) = columns(&rev);
        assert_eq!(Groups::new(&keys, None).auc(&s, &y, |_| true), got);
    }

    #[test]
    fn metrics_rows_name_the_grouping() {
        let (keys, p_ctr, click) = columns(&ROWS);
        let s = Scored { buy: click.clone(), p_cvr: p_ctr.clone(), p_ctr, click };
        let m = group_metrics(&s, &Groups::by(&keys, Grouping::User), Grouping::User);
        assert_eq!(m.len(), 12);
        let get = |task: &str, metric: &str| m.iter().find(|r| r.task == task && r.metric == metric).unwrap();
        let ctr = get("ctr", "gauc_user");
        assert_eq!((ctr.value, ctr.n, ctr.positives), (Some(5.0 / 7.0), 10, 4));
        assert_eq!(get("ctr", "gauc_user_groups").value, Some(4.0));
        assert_eq!(get("ctr", "gauc_user_groups_covered").value, Some(2.0));
        assert_eq!(get("ctr", "gauc_user_impressions_covered").value, Some(7.0));
        // CVR on the clicked rows: every clicked row bought, so no group has both classes.
        let cvr = get("cvr", "gauc_user");
        assert_eq!((cvr.value, cvr.n), (None, 4));
        assert_eq!(get("cvr", "gauc_user_groups").value, Some(3.0));
        // CTCVR: click ∧ buy = click here, scores pCTR² keep each group's order.
        assert_eq!(get("ctcvr", "gauc_user").value, Some(5.0 / 7.0));
    }
}
