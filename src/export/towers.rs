//! The dense half of the exported graph: both towers as `Gemm` (`X·Wᵀ + b`, the weights' `[out ×
//! in]` row-major layout as stored, `transB = 1`) with `Relu` between layers, the calibration
//! `σ(a·z + b)` per tower ([`Platt`]; the `Mul`/`Add` are left out for the identity), and
//! pCTCVR = pCTR·pCVR. With field interactions, each tower's logit adds `Σ r_ij·⟨x_i, x_j⟩`:
//! the fields' Gram matrix (`Reshape` to `[batch, 23, dim]`, `MatMul` by its `Transpose`)
//! flattened and multiplied by the tower's pair weights as one `[23², 1]` column (0 off the
//! upper triangle, as trained). With a mixture of experts (`model.backbone: mmoe`) the towers
//! read their gate's mixture instead: the experts as one `Gemm` + `Relu` reshaped to `[batch,
//! E, S]`, each exported task's gate a `Gemm` + `Softmax` reshaped to `[batch, 1, E]` and
//! `MatMul`ed with it. The outputs are `p_ctr`, `p_cvr`, `p_ctcvr`, float32 `[batch]`. An
//! ensemble runs every member's towers on its own inputs and calibrates the mean of their
//! logits, summed in [`Model::members`] order as `Model::logits` sums them.

use anyhow::{ensure, Result};

use super::graph::{int, ints, Graph};
use super::pooling::{member_prefix, Consts};
use crate::model::{Mmoe, Model, Platt};
use crate::schema::FIELDS;

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

/// `z + Σ_{i<j} r_ij·⟨x_i, x_j⟩` for logits `z` `[batch, 1]` of input `x` `[batch, input]`.
fn add_pairs(g: &mut Graph, name: &str, x: &str, input: usize, z: &str, r: &[f32]) -> Result<String> {
    let f = FIELDS.len();
    ensure!(r.len() == f * f && input.is_multiple_of(f), "the {name} pair weights: {} for {f} fields", r.len());
    let shape = g.i64s(&format!("{name}_fields_shape"), &[-1, f as i64, (input / f) as i64]);
    let flat = g.i64s(&format!("{name}_pairs_shape"), &[-1, (f * f) as i64]);
    let r = g.f32s(&format!("{name}_pairs"), &[f * f, 1], r.iter().copied());
    let fields = g.op("Reshape", &[x, &shape], vec![]);
    let t = g.op("Transpose", &[&fields], vec![ints("perm", &[0, 2, 1])]);
    let gram = g.op("MatMul", &[&fields, &t], vec![]);
    let gram = g.op("Reshape", &[&gram, &flat], vec![]);
    let term = g.op("MatMul", &[&gram, &r], vec![]);
    Ok(g.op("Add", &[z, &term], vec![]))
}

/// The mixtures the CTR and the CVR tower read (`[batch, S]` each), of the experts and gates `p`
/// (experts' W, b, gates' W, b; the first two tasks' gates exported) on `x` `[batch, input]`.
fn mixture(g: &mut Graph, name: &str, x: &str, input: usize, m: &Mmoe, p: &[Vec<f32>]) -> Result<[String; 2]> {
    let (e, s) = (m.experts, m.expert_size);
    ensure!(
        p.len() == 4 && p[0].len() == e * s * input && p[1].len() == e * s && p[2].len() >= 2 * e * input,
        "the {name} mixture's tensors do not match {e} experts of {s} on {input} inputs"
    );
    let w = g.f32s(&format!("{name}_experts_w"), &[e * s, input], p[0].iter().copied());
    let b = g.f32s(&format!("{name}_experts_b"), &[e * s], p[1].iter().copied());
    let h = g.op("Gemm", &[x, &w, &b], vec![int("transB", 1)]);
    let h = g.op("Relu", &[&h], vec![]);
    let experts_shape = g.i64s(&format!("{name}_experts_shape"), &[-1, e as i64, s as i64]);
    let h = g.op("Reshape", &[&h, &experts_shape], vec![]);
    let gate_shape = g.i64s(&format!("{name}_gate_shape"), &[-1, 1, e as i64]);
    let mixed_shape = g.i64s(&format!("{name}_mixed_shape"), &[-1, s as i64]);
    let mut out = Vec::new();
    for (t, task) in ["ctr", "cvr"].into_iter().enumerate() {
        let rows = t * e * input..(t + 1) * e * input;
        let w = g.f32s(&format!("{name}_gate_{task}_w"), &[e, input], p[2][rows].iter().copied());
        let b = g.f32s(&format!("{name}_gate_{task}_b"), &[e], p[3][t * e..(t + 1) * e].iter().copied());
        let gate = g.op("Gemm", &[x, &w, &b], vec![int("transB", 1)]);
        let gate = g.op("Softmax", &[&gate], vec![int("axis", -1)]);
        let gate = g.op("Reshape", &[&gate, &gate_shape], vec![]);
        let mixed = g.op("MatMul", &[&gate, &h], vec![]);
        out.push(g.op("Reshape", &[&mixed, &mixed_shape], vec![]));
    }
    Ok(out.try_into().expect("two tasks"))
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

/// The mean of logits `z` (`[batch, 1]` each): the first alone, else their sum over the count.
fn mean(g: &mut Graph, name: &str, z: &[String]) -> String {
    let mut sum = z[0].clone();
    for zk in &z[1..] {
        sum = g.op("Add", &[&sum, zk], vec![]);
    }
    if z.len() == 1 {
        return sum;
    }
    let k = g.f32s(&format!("{name}_members"), &[1], [z.len() as f32]);
    g.op("Div", &[&sum, &k], vec![])
}

/// Every member's towers on its inputs (`inputs[k]`: the CTR tower's and the CVR tower's,
/// `[batch, input]`), the mean logits calibrated, writing the three outputs.
pub fn heads(g: &mut Graph, c: &Consts, model: &Model, inputs: &[(String, String)], input: usize) -> Result<()> {
    let spec = model.towers.spec();
    // the CTR and the CVR tower; auxiliary towers (training only) are not exported
    let (n_ctr, n_cvr) = spec.main_tensors();
    let members: Vec<_> = model.members().map(|(_, towers)| towers).collect();
    ensure!(inputs.len() == members.len(), "{} pooled inputs for {} members", inputs.len(), members.len());
    let (mut zc, mut zv) = (Vec::new(), Vec::new());
    for (k, (towers, (xc, xv))) in members.iter().zip(inputs).enumerate() {
        let params = towers.params();
        ensure!(params.len() >= n_ctr + n_cvr, "the towers hold {} parameter tensors", params.len());
        let (ctr, cvr) = (&params[..n_ctr], &params[n_ctr..n_ctr + n_cvr]);
        let prefix = member_prefix(k, members.len());
        let (hidden_ctr, hidden_cvr) = spec.hidden();
        let (c_in, v_in, width) = match (&spec.mmoe, spec.mixture_tensor()) {
            (Some(m), Some(i)) => {
                ensure!(params.len() >= i + 4, "the towers hold {} parameter tensors", params.len());
                let [c_in, v_in] = mixture(g, &format!("{prefix}mmoe"), xc, input, m, &params[i..i + 4])?;
                (c_in, v_in, m.expert_size)
            }
            _ => (xc.clone(), xv.clone(), input),
        };
        let (mut c, mut v) = (
            mlp(g, &format!("{prefix}ctr"), &c_in, width, hidden_ctr, ctr)?,
            mlp(g, &format!("{prefix}cvr"), &v_in, width, hidden_cvr, cvr)?,
        );
        if let (Some(rc), Some(rv)) = (spec.pair_tensor(0), spec.pair_tensor(1)) {
            ensure!(params.len() > rc.max(rv), "the towers hold {} parameter tensors", params.len());
            c = add_pairs(g, &format!("{prefix}ctr"), xc, input, &c, &params[rc])?;
            v = add_pairs(g, &format!("{prefix}cvr"), xv, input, &v, &params[rv])?;
        }
        zc.push(c);
        zv.push(v);
    }
    let (zc, zv) = (mean(g, "ctr", &zc), mean(g, "cvr", &zv));
    let [p_ctr, p_cvr, p_ctcvr] = OUTPUTS;
    prob(g, c, "ctr", &zc, model.calibration.ctr, p_ctr);
    prob(g, c, "cvr", &zv, model.calibration.cvr, p_cvr);
    g.op_into("Mul", &[p_ctr, p_cvr], vec![], p_ctcvr);
    Ok(())
}
