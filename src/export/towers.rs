//! The dense half of the exported graph: both towers as `Gemm` (`X·Wᵀ + b`, the weights' `[out ×
//! in]` row-major layout as stored, `transB = 1`) with `Relu` between layers, the calibration
//! `σ(a·z + b)` per tower ([`Platt`]; the `Mul`/`Add` are left out for the identity), and
//! pCTCVR = pCTR·pCVR. The outputs are `p_ctr`, `p_cvr`, `p_ctcvr`, float32 `[batch]`.

use anyhow::{ensure, Result};

use super::graph::{int, Graph};
use super::pooling::Consts;
use crate::model::{Model, Platt};

/// The graph output names, in order.
pub const OUTPUTS: [&str; 3] = ["p_ctr", "p_cvr", "p_ctcvr"];

/// One tower `input → hidden… → 1` on `x`; `p` = `[W₀, b₀, W₁, b₁, …]`. Returns the logits `[batch, 1]`.
fn mlp(g: &mut Graph, name: &str, x: &str, input: usize, hidden: &[usize], p: &[Vec<f32>]) -> Result<String> {
    let mut widths = vec![input];
    widths.extend_from_slice(hidden);
    widths.push(1);
    let layers = widths.len() - 1;
    ensure!(p.len() == 2 * layers, "the {name} tower has {} parameter tensors, its sizes need {}", p.len(), 2 * layers);
    let mut h = x.to_string();
    for l in 0..layers {
        let (inp, out) = (widths[l], widths[l + 1]);
        let (w, b) = (&p[2 * l], &p[2 * l + 1]);
        ensure!(
            w.len() == out * inp && b.len() == out,
            "{name} layer {l}: {} weights and {} biases for {inp} → {out}",
            w.len(),
            b.len()
        );
        let w = g.f32s(&format!("{name}_w{l}"), &[out, inp], w.iter().copied());
        let b = g.f32s(&format!("{name}_b{l}"), &[out], b.iter().copied());
        h = g.op("Gemm", &[&h, &w, &b], vec![int("transB", 1)]);
        if l + 1 < layers {
            h = g.op("Relu", &[&h], vec![]);
        }
    }
    Ok(h)
}

/// `σ(a·z + b)` of logits `[batch, 1]`, as `[batch]` named `out`.
fn prob(g: &mut Graph, c: &Consts, name: &str, z: &str, p: Platt, out: &str) {
    let mut z = z.to_string();
    if !p.is_identity() {
        let a = g.f32s(&format!("{name}_calibration_a"), &[1], [p.a as f32]);
        let b = g.f32s(&format!("{name}_calibration_b"), &[1], [p.b as f32]);
        z = g.op("Mul", &[&z, &a], vec![]);
        z = g.op("Add", &[&z, &b], vec![]);
    }
    let s = g.op("Sigmoid", &[&z], vec![]);
    g.op_into("Squeeze", &[&s, &c.axis1], vec![], out);
}

/// Both towers on their inputs (`xc` the CTR tower's, `xv` the CVR tower's, `[batch, input]`),
/// writing the three outputs.
pub fn heads(g: &mut Graph, c: &Consts, model: &Model, xc: &str, xv: &str, input: usize) -> Result<()> {
    let spec = model.towers.spec();
    let params = model.towers.params();
    let n_ctr = 2 * (spec.ctr_fc_sizes.len() + 1);
    ensure!(params.len() >= n_ctr, "the towers hold {} parameter tensors", params.len());
    let (ctr, cvr) = params.split_at(n_ctr);
    let zc = mlp(g, "ctr", xc, input, &spec.ctr_fc_sizes, ctr)?;
    let zv = mlp(g, "cvr", xv, input, &spec.cvr_fc_sizes, cvr)?;
    let [p_ctr, p_cvr, p_ctcvr] = OUTPUTS;
    prob(g, c, "ctr", &zc, model.calibration.ctr, p_ctr);
    prob(g, c, "cvr", &zv, model.calibration.cvr, p_cvr);
    g.op_into("Mul", &[p_ctr, p_cvr], vec![], p_ctcvr);
    Ok(())
}
