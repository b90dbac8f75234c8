//! The report's comparison tables, from the metrics rows of every run (one `Vec<MetricRow>` per
//! metrics file): the paper's Table 2 (AUC per task) and group AUC per user and per session with
//! its coverage. Per split, one row per model kind in the paper's order, values × 100, mean ±
//! sample standard deviation over the kind's runs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::inputs::MetricRow;
use crate::metrics::group::Grouping;
use crate::schema::{is_planted, GROUP_ORACLE, ORACLE, SEMI_ORACLE};

/// Model kinds in the paper's row order; other kinds follow alphabetically, then the group
/// oracle, the semi-oracle and the oracle.
const KIND_ORDER: [&str; 7] = ["naive_cvr", "esmm_ns", "esmm", "escm2_ips", "escm2_dr", "dcmt", "aitm"];
/// Table 2 columns: (task and metric in the metrics table, header). The last two need the
/// generator's truth: pCVR over every impression against the planted p(buy | click), and
/// against the counterfactual labels (would it have converted had it been clicked).
const TABLE2_TASKS: [(&str, &str, &str); 5] = [
    ("ctr", "auc", "CTR AUC"),
    ("cvr", "auc", "CVR AUC (clicked)"),
    ("ctcvr", "auc", "CTCVR AUC"),
    ("cvr_entire_space", "auc", "CVR AUC (entire space)"),
    ("cvr_entire_space", "auc_counterfactual", "CVR AUC (entire space, counterfactual labels)"),
];
/// The tasks of group AUC: (task, header).
const GROUP_TASKS: [(&str, &str); 3] = [("ctr", "CTR"), ("cvr", "CVR (clicked)"), ("ctcvr", "CTCVR")];

/// A column of a table: (task, metric, header).
type Column = (&'static str, &'static str, String);

fn mean_std(v: &[f64]) -> (f64, Option<f64>) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let std = (v.len() > 1).then(|| (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    (mean, std)
}

fn kind_rank(kind: &str) -> (usize, String) {
    let pos = KIND_ORDER.iter().position(|k| *k == kind);
    let last = match kind {
        GROUP_ORACLE => usize::MAX - 2,
        SEMI_ORACLE => usize::MAX - 1,
        ORACLE => usize::MAX,
        _ => KIND_ORDER.len(),
    };
    (pos.unwrap_or(last), kind.to_string())
}

/// One split's values of some columns: per model kind and column, one value per run; and the
/// runs (file, run_id) of each kind.
#[derive(Default)]
struct Values {
    kinds: BTreeMap<String, BTreeMap<usize, Vec<f64>>>,
    runs: BTreeMap<String, BTreeSet<(usize, String)>>,
}

/// The values of `cols` in the `all` rows of every metrics file, per split.
fn values(metrics: &[Vec<MetricRow>], cols: &[Column]) -> BTreeMap<String, Values> {
    let mut out: BTreeMap<String, Values> = BTreeMap::new();
    for (file, rows) in metrics.iter().enumerate() {
        for r in rows.iter().filter(|r| r.slice == "all") {
            let col = cols.iter().position(|c| c.0 == r.task && c.1 == r.metric);
            let (Some(c), Some(v)) = (col, r.value) else { continue };
            let split = out.entry(r.split.clone()).or_default();
            split.kinds.entry(r.model.clone()).or_default().entry(c).or_default().push(v);
            split.runs.entry(r.model.clone()).or_default().insert((file, r.run_id.clone()));
        }
    }
    out
}

impl Values {
    fn mean(&self, kind: &str, col: usize) -> Option<f64> {
        self.kinds.get(kind)?.get(&col).map(|v| mean_std(v).0)
    }

    /// A row per kind, a column per entry of `cols` that some kind has.
    fn table(&self, cols: &[Column]) -> String {
        let shown: Vec<usize> = (0..cols.len()).filter(|c| self.kinds.values().any(|k| k.contains_key(c))).collect();
        let headers: Vec<&str> = shown.iter().map(|&c| cols[c].2.as_str()).collect();
        let mut s = format!("| model | runs | {} |\n|---|---:|{}\n", headers.join(" | "), "---:|".repeat(shown.len()));
        let mut order: Vec<&String> = self.kinds.keys().collect();
        order.sort_by_key(|k| kind_rank(k));
        for kind in order {
            // The oracles (the planted truth) are the same in every run's table: one value, no spread.
            let oracle = is_planted(kind);
            let n = if oracle { "–".to_string() } else { self.runs.get(kind).map_or(0, |r| r.len()).to_string() };
            let cells: Vec<String> = shown
                .iter()
                .map(|c| match self.kinds[kind].get(c) {
                    Some(v) if !v.is_empty() => match mean_std(v) {
                        (m, Some(sd)) if !oracle => format!("{:.2} ± {:.2}", m * 100.0, sd * 100.0),
                        (m, _) => format!("{:.2}", m * 100.0),
                    },
                    _ => "–".into(),
                })
                .collect();
            let _ = writeln!(s, "| {kind} | {n} | {} |", cells.join(" | "));
        }
        s
    }
}

/// The paper-style table: AUC × 100 of each model kind per task.
pub fn table2(metrics: &[Vec<MetricRow>]) -> String {
    let cols: Vec<Column> = TABLE2_TASKS.iter().map(|&(task, metric, h)| (task, metric, h.to_string())).collect();
    let col = |task: &str| cols.iter().position(|c| c.0 == task).expect("a Table 2 task");
    let mut s = String::new();
    for (split, v) in values(metrics, &cols) {
        let _ = write!(s, "Split `{split}`, AUC × 100 (mean ± standard deviation over runs):\n\n{}", v.table(&cols));
        let gains: Vec<String> = ["cvr", "ctcvr"]
            .iter()
            .filter_map(|task| {
                let (e, b) = (v.mean("esmm", col(task))?, v.mean("naive_cvr", col(task))?);
                Some(format!("{} {:+.2}", task.to_uppercase(), (e - b) * 100.0))
            })
            .collect();
        if !gains.is_empty() {
            let _ = writeln!(s, "\nESMM − naive CVR (AUC points): {}.", gains.join(", "));
        }
        s.push('\n');
    }
    if s.is_empty() {
        s.push_str("No metrics tables (`metrics*/metrics.parquet`) found.\n");
    }
    s
}

/// Group AUC × 100 of each model kind per task and grouping, then its coverage; empty when no
/// metrics table has group AUC.
pub fn group_auc(metrics: &[Vec<MetricRow>]) -> String {
    let cols: Vec<Column> = GROUP_TASKS
        .iter()
        .flat_map(|&(task, h)| Grouping::ALL.map(|g| (task, g.metrics()[0], format!("{h} {}", g.name()))))
        .collect();
    let mut s = String::new();
    for (split, v) in values(metrics, &cols) {
        let _ =
            write!(s, "Split `{split}`, group AUC × 100 (mean ± standard deviation over runs):\n\n{}", v.table(&cols));
        s.push_str(&coverage(metrics, &split));
        s.push('\n');
    }
    s
}

/// The report's section: [`group_auc`] and what it means, or why there is none.
pub fn group_auc_section(metrics: &[Vec<MetricRow>]) -> String {
    let tables = group_auc(metrics);
    if tables.is_empty() {
        return "## Group AUC\n\nNot computed: the predictions lack the `user_key` and `md5` columns (files \
                written before `esmm predict` wrote them).\n\n"
            .into();
    }
    format!(
        "## Group AUC\n\n{tables}The impression-weighted mean of per-group AUCs over the groups with both \
         classes: ranking is judged within one user's or one session's impressions, never across them. User = \
         the hashed user id `101` (users sharing a hash bucket count as one; rows without the id are in no \
         group), session = md5. Groups with one class (most users never buy) are counted, not scored.\n\n"
    )
}

/// Per task and grouping of `split`: groups with both classes / groups, and the share of the
/// task's grouped impressions in them — from the first run that has them (the data decide
/// them, not the model).
fn coverage(metrics: &[Vec<MetricRow>], split: &str) -> String {
    let find = |task: &str, metric: &str| {
        metrics.iter().flatten().find(|r| r.split == split && r.slice == "all" && r.task == task && r.metric == metric)
    };
    let names: Vec<&str> = Grouping::ALL.iter().map(|g| g.name()).collect();
    let mut s = format!(
        "\nGroups with both classes / groups (the share of the task's impressions in them):\n\n| task | {} |\n|---|{}\n",
        names.join(" | "),
        "---:|".repeat(names.len())
    );
    for (task, header) in GROUP_TASKS {
        let cells: Vec<String> = Grouping::ALL
            .iter()
            .map(|g| {
                let [_, groups, covered, impressions] = g.metrics();
                let v = |metric: &str| find(task, metric).and_then(|r| r.value.map(|v| (v, r.n)));
                match (v(groups), v(covered), v(impressions)) {
                    (Some((g, _)), Some((c, _)), Some((i, n))) => {
                        format!("{c:.0} / {g:.0} ({:.1} %)", 100.0 * i / n.max(1) as f64)
                    }
                    _ => "–".into(),
                }
            })
            .collect();
        let _ = writeln!(s, "| {header} | {} |", cells.join(" | "));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(run: &str, model: &str, task: &str, metric: &str, v: f64, n: u64) -> MetricRow {
        MetricRow {
            run_id: run.into(),
            split: "test".into(),
            slice: "all".into(),
            model: model.into(),
            task: task.into(),
            metric: metric.into(),
            value: Some(v),
            n,
        }
    }

    fn auc(run: &str, model: &str, task: &str, v: f64) -> MetricRow {
        row(run, model, task, "auc", v, 100)
    }

    #[test]
    fn table2_orders_kinds_and_gives_mean_and_std() {
        let m = vec![
            vec![auc("a", "esmm", "cvr", 0.70), auc("a", "esmm", "ctcvr", 0.66), auc("a", ORACLE, "cvr", 0.8)],
            vec![auc("b", "esmm", "cvr", 0.72), auc("b", "esmm", "ctcvr", 0.68)],
            vec![auc("c", "naive_cvr", "cvr", 0.68), auc("c", "naive_cvr", "ctcvr", 0.65)],
        ];
        let t = table2(&m);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[2], "| model | runs | CVR AUC (clicked) | CTCVR AUC |");
        assert_eq!(lines[4], "| naive_cvr | 1 | 68.00 | 65.00 |");
        assert_eq!(lines[5], "| esmm | 2 | 71.00 ± 1.41 | 67.00 ± 1.41 |");
        assert_eq!(lines[6], "| oracle | – | 80.00 | – |");
        assert!(t.contains("ESMM − naive CVR (AUC points): CVR +3.00, CTCVR +2.00."), "{t}");
        assert!(table2(&[]).starts_with("No metrics tables"));
        assert_eq!(group_auc(&m), "");
    }

    #[test]
    fn group_auc_gives_each_grouping_and_its_coverage() {
        let gauc = |run: &str, model: &str, v: f64| {
            vec![
                row(run, model, "ctr", "gauc_user", v, 900),
                row(run, model, "ctr", "gauc_user_groups", 40.0, 900),
                row(run, model, "ctr", "gauc_user_groups_covered", 30.0, 900),
                row(run, model, "ctr", "gauc_user_impressions_covered", 720.0, 900),
                row(run, model, "ctr", "gauc_session", v - 0.1, 1000),
                auc(run, model, "ctr", 0.9),
            ]
        };
        let m = vec![gauc("a", "esmm", 0.60), gauc("b", "esmm", 0.62), gauc("c", ORACLE, 0.7)];
        let t = group_auc(&m);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[2], "| model | runs | CTR user | CTR session |");
        assert_eq!(lines[4], "| esmm | 2 | 61.00 ± 1.41 | 51.00 ± 1.41 |");
        assert_eq!(lines[5], "| oracle | – | 70.00 | 60.00 |");
        assert_eq!(lines[9], "| task | user | session |");
        assert_eq!(lines[11], "| CTR | 30 / 40 (80.0 %) | – |");
        assert_eq!(lines[12], "| CVR (clicked) | – | – |");
    }
}
