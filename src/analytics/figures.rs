//! The report's figures: training curves (loss and validation AUC per epoch), ROC curves per
//! task and reliability diagrams per task, the runs of a directory overlaid.

use super::curves::Bin;
use super::inputs::Epochs;
use super::plot::{nice_range, Canvas, Chart, Corner, Series, PALETTE};

/// Series points from an x vector and an optional-y vector (missing values dropped).
fn points(x: &[f64], y: &[Option<f64>]) -> Vec<(f64, f64)> {
    x.iter().zip(y).filter_map(|(&a, b)| b.map(|b| (a, b))).collect()
}

/// Half an epoch of margin around the first and last epoch.
fn epoch_range(e: &Epochs) -> (f64, f64) {
    let lo = e.epoch.iter().copied().filter(|v| v.is_finite()).fold(f64::INFINITY, f64::min);
    let hi = e.epoch.iter().copied().filter(|v| v.is_finite()).fold(f64::NEG_INFINITY, f64::max);
    if lo.is_finite() {
        (lo - 0.5, hi + 0.5)
    } else {
        (0.0, 1.0)
    }
}

/// Two panels: train and valid loss per epoch; valid AUC of the three tasks per epoch.
pub fn training(label: &str, e: &Epochs) -> Canvas {
    let mut cv = Canvas::new(1040, 420);
    let loss = vec![
        Series {
            label: "train loss".into(),
            color: PALETTE[0],
            points: points(&e.epoch, &e.train_loss),
            markers: true,
        },
        Series {
            label: "valid loss".into(),
            color: PALETTE[1],
            points: points(&e.epoch, &e.valid_loss),
            markers: true,
        },
    ];
    let auc = vec![
        Series {
            label: "valid CTR AUC".into(),
            color: PALETTE[0],
            points: points(&e.epoch, &e.auc_ctr),
            markers: true,
        },
        Series {
            label: "valid CVR AUC".into(),
            color: PALETTE[2],
            points: points(&e.epoch, &e.auc_cvr),
            markers: true,
        },
        Series {
            label: "valid CTCVR AUC".into(),
            color: PALETTE[3],
            points: points(&e.epoch, &e.auc_ctcvr),
            markers: true,
        },
    ];
    let ys = |s: &[Series]| s.iter().flat_map(|s| s.points.iter().map(|p| p.1)).collect::<Vec<_>>();
    let chart = |title: String, y_label: &str, series: Vec<Series>, corner| Chart {
        title,
        x_label: "epoch".into(),
        y_label: y_label.into(),
        x_range: epoch_range(e),
        y_range: nice_range(ys(&series), false),
        series,
        diagonal: false,
        legend: corner,
    };
    chart(format!("Loss: {label}"), "loss (BCE CTR + BCE CTCVR)", loss, Corner::TopRight).draw(&mut cv, 0, 0, 520, 420);
    chart(format!("Valid AUC: {label}"), "AUC", auc, Corner::BottomRight).draw(&mut cv, 520, 0, 520, 420);
    cv
}

/// ROC curves of one task: one series per run `(label, AUC, curve)`, labelled with its AUC, and
/// the chance diagonal.
pub fn roc(title: &str, runs: &[(String, f64, Vec<(f64, f64)>)]) -> Canvas {
    let mut cv = Canvas::new(560, 540);
    let series = runs
        .iter()
        .enumerate()
        .map(|(k, (label, auc, pts))| Series {
            label: format!("{label}  AUC {auc:.4}"),
            color: PALETTE[k % PALETTE.len()],
            points: pts.clone(),
            markers: false,
        })
        .collect();
    Chart {
        title: title.into(),
        x_label: "false positive rate".into(),
        y_label: "true positive rate".into(),
        x_range: (0.0, 1.0),
        y_range: (0.0, 1.0),
        series,
        diagonal: true,
        legend: Corner::BottomRight,
    }
    .draw(&mut cv, 0, 0, 560, 540);
    cv
}

/// Reliability diagram of one task: observed rate against mean prediction per equal-count bin,
/// one series per run, and the diagonal of perfect calibration.
pub fn reliability(title: &str, runs: &[(String, Vec<Bin>)]) -> Canvas {
    let mut cv = Canvas::new(560, 540);
    let series: Vec<Series> = runs
        .iter()
        .enumerate()
        .map(|(k, (label, bins))| Series {
            label: label.clone(),
            color: PALETTE[k % PALETTE.len()],
            points: bins.iter().map(|b| (b.mean_predicted, b.observed_rate)).collect(),
            markers: true,
        })
        .collect();
    let all = series.iter().flat_map(|s| s.points.iter().flat_map(|p| [p.0, p.1]));
    let range = nice_range(all.collect::<Vec<_>>(), true);
    Chart {
        title: title.into(),
        x_label: "mean predicted probability (bin)".into(),
        y_label: "observed rate (bin)".into(),
        x_range: range,
        y_range: range,
        series,
        diagonal: true,
        legend: Corner::TopLeft,
    }
    .draw(&mut cv, 0, 0, 560, 540);
    cv
}
