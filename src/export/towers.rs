//! The dense half of the exported graph: both towers as `Gemm` (`X·Wᵀ + b`, the weights' `[out ×
//! in]` row-major layout as stored, `transB = 1`) with `Relu` between layers, the calibration
//! `σ(a·z + b)` per tower ([`Platt`]; the `Mul`/`Add` are left out for the identity), and
//! pCTCVR = pCTR·pCVR. With field interactions, each tower's logit adds `Σ r_ij·⟨x_i, x_j⟩`:
//! the fields' Gram matrix (`Reshape` to `[batch, 23, dim]`, `MatMul` by its `Transpose`)
//! flattened and multiplied by the tower's pair weights as one `[23², 1]` column (0 off the
//! upper triangle, as trained). With a mixture of experts (`model.backbone: mmoe`) the towers
//! read their gate's mixture instead: the experts as one `Gemm` + `Relu` reshaped to `[batch,
//! E, S]`, each exported task's gate a `Gemm` + `Softmax` reshaped to `[batch, 1, E]` and
//! `MatMul`ed with it. AITM's conversion tower's output layer reads the transfer (the CTR
//! tower's last hidden output through `Gemm` + `Relu`, then per input `Gemm`s for Q, K and V,
//! `ReduceSum` of Q⊙K as the scores, `Softmax`, the weighted sum of the V), and its mean logit,
//! pCTCVR's, becomes pCVR's: `logit(min(pCTCVR / pCTR, 1 − 2⁻²⁴))` from `Softplus`es. The outputs are `p_ctr`, `p_cvr`, `p_ctcvr`, float32 `[batch]`. An
//! ensemble runs every member's towers on its own inputs and calibrates the mean of their
//! logits, summed in [`Model::members`] order as `Model::logits` sums them.

use anyhow::{ensure, Context, Result};

use super::graph::{int, ints, Graph};
use super::pooling::{member_prefix, Consts};
use crate::model::{Mmoe, Model, Platt, MIXTURE_TENSORS, TRANSFER_TENSORS};
use crate::schema::FIELDS;

/// The graph output names, in order.
pub const OUTPUTS: [&str; 3] = ["p_ctr", "p_cvr", "p_ctcvr"];

/// The hidden layers of one tower `input → hidden…` on `x` (`p` = `[W₀, b₀, W₁, b₁, …]`, the
/// output layer's last): their last output, `[batch, hidden.last]`.
fn hidden_layers(g: &mut Graph, name: &str, x: &str, input: usize, hidden: &[usize], p: &[Vec<f32>]) -> Result<String> {
    let mut widths = vec![input];
    widths.extend_from_slice(hidden);
    widths.push(1);
    let layers = widths.len() - 1;
    ensure!(p.len() == 2 * layers, "the {name} tower has {} parameter tensors, its sizes need {}", p.len(), 2 * layers);
    let mut h = x.to_string();
    for l in 0..layers - 1 {
        h = dense(g, layer(name, l), &h, (widths[l], widths[l + 1]), (&p[2 * l], &p[2 * l + 1]))?;
        h = g.op("Relu", &[&h], vec![]);
    }
    Ok(h)
}

/// The output layer of a tower whose parameters are `p` (the last two tensors) on `h`: the
/// logits `[batch, 1]`.
fn output_layer(g: &mut Graph, name: &str, h: &str, width: usize, p: &[Vec<f32>]) -> Result<String> {
    let l = p.len() / 2 - 1;
    dense(g, layer(name, l), h, (width, 1), (&p[2 * l], &p[2 * l + 1]))
}

/// The initializer names of layer `l` of tower `name`: (`{name}_w{l}`, `{name}_b{l}`).
fn layer(name: &str, l: usize) -> (String, String) {
    (format!("{name}_w{l}"), format!("{name}_b{l}"))
}

/// The initializer names `{name}_w`, `{name}_b`.
fn named(name: &str) -> (String, String) {
    (format!("{name}_w"), format!("{name}_b"))
}

/// `x·Wᵀ + b` as a `Gemm` (`W` `[out × in]` as stored, `b` absent when empty), the initializers
/// named `names` (weights, biases).
fn dense(
    g: &mut Graph,
    (w_name, b_name): (String, String),
    x: &str,
    (inp, out): (usize, usize),
    (w, b): (&[f32], &[f32]),
) -> Result<String> {
    ensure!(
        w.len() == out * inp && (b.is_empty() || b.len() == out),
        "{w_name}: {} weights and {} biases for {inp} → {out}",
        w.len(),
        b.len()
    );
    let wn = g.f32s(&w_name, &[out, inp], w.iter().copied());
    let mut inputs = vec![x.to_string(), wn];
    if !b.is_empty() {
        inputs.push(g.f32s(&b_name, &[out], b.iter().copied()));
    }
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    Ok(g.op("Gemm", &inputs, vec![int("transB", 1)]))
}

/// AITM's transfer: what the conversion tower's output layer reads, from its last hidden output
/// `p` (`[batch, h]`) and the CTR tower's `hid` (`[batch, hc]`); `t` = [W_i, b_i, W_q, W_k, W_v].
fn transfer(
    g: &mut Graph,
    name: &str,
    (hid, hc): (&str, usize),
    (p, h): (&str, usize),
    t: &[Vec<f32>],
) -> Result<String> {
    ensure!(t.len() == TRANSFER_TENSORS, "the {name} transfer holds {} tensors", t.len());
    let info = dense(g, named(&format!("{name}_info")), hid, (hc, h), (&t[0], &t[1]))?;
    let info = g.op("Relu", &[&info], vec![]);
    let axis = g.i64s(&format!("{name}_axis"), &[1]);
    let scale = g.f32s(&format!("{name}_scale"), &[1], [1.0 / (h as f32).sqrt()]);
    let (mut scores, mut values) = (Vec::new(), Vec::new());
    for (u, x) in [("p", p), ("info", info.as_str())] {
        let [q, k, v] = [("q", 2), ("k", 3), ("v", 4)]
            .map(|(m, i)| dense(g, named(&format!("{name}_{u}_{m}")), x, (h, h), (&t[i], &[])));
        let qk = g.op("Mul", &[&q?, &k?], vec![]);
        let score = g.op("ReduceSum", &[&qk, &axis], vec![int("keepdims", 1)]);
        scores.push(g.op("Mul", &[&score, &scale], vec![]));
        values.push(v?);
    }
    let scores = g.op("Concat", &[&scores[0], &scores[1]], vec![int("axis", 1)]);
    let a = g.op("Softmax", &[&scores], vec![int("axis", 1)]);
    let mut q = String::new();
    for (i, v) in values.iter().enumerate() {
        let (start, end) =
            (g.i64s(&format!("{name}_a{i}_start"), &[i as i64]), g.i64s(&format!("{name}_a{i}_end"), &[i as i64 + 1]));
        let ai = g.op("Slice", &[&a, &start, &end, &axis], vec![]);
        let term = g.op("Mul", &[&ai, v], vec![]);
        q = if i == 0 { term } else { g.op("Add", &[&q, &term], vec![]) };
    }
    Ok(q)
}

/// AITM's CVR logit from the mean CTR and pCTCVR logits: `logit(min(pCTCVR / pCTR, 1 − 2⁻²⁴))`,
/// as [`crate::model::ModelKind::predicting`] computes it.
fn aitm_cvr_logit(g: &mut Graph, zc: &str, zt: &str) -> String {
    let log_sigmoid = |g: &mut Graph, z: &str| {
        let neg = g.op("Neg", &[z], vec![]);
        g.op("Softplus", &[&neg], vec![])
    };
    let (nc, nt) = (log_sigmoid(g, zc), log_sigmoid(g, zt));
    let ratio = g.op("Sub", &[&nc, &nt], vec![]);
    let cap = g.f32s("aitm_ratio_cap", &[1], [-(2f32).powi(-24)]);
    let ratio = g.op("Min", &[&ratio, &cap], vec![]);
    let e = g.op("Exp", &[&ratio], vec![]);
    let one = g.f32s("aitm_one", &[1], [1.0]);
    let rest = g.op("Sub", &[&one, &e], vec![]);
    let log_rest = g.op("Log", &[&rest], vec![]);
    g.op("Sub", &[&ratio, &log_rest], vec![])
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
        p.len() == MIXTURE_TENSORS && p[2].len() >= 2 * e * input && p[3].len() >= 2 * e,
        "the {name} mixture's tensors do not match {e} experts of {s} on {input} inputs"
    );
    let h = dense(g, named(&format!("{name}_experts")), x, (input, e * s), (&p[0], &p[1]))?;
    let h = g.op("Relu", &[&h], vec![]);
    let experts_shape = g.i64s(&format!("{name}_experts_shape"), &[-1, e as i64, s as i64]);
    let h = g.op("Reshape", &[&h, &experts_shape], vec![]);
    let gate_shape = g.i64s(&format!("{name}_gate_shape"), &[-1, 1, e as i64]);
    let mixed_shape = g.i64s(&format!("{name}_mixed_shape"), &[-1, s as i64]);
    let mut out = Vec::new();
    for (t, task) in ["ctr", "cvr"].into_iter().enumerate() {
        let (w, b) = (&p[2][t * e * input..(t + 1) * e * input], &p[3][t * e..(t + 1) * e]);
        let gate = dense(g, named(&format!("{name}_gate_{task}")), x, (input, e), (w, b))?;
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
                let mix = params.get(i..i + MIXTURE_TENSORS).context("the towers lack the mixture's tensors")?;
                let [c_in, v_in] = mixture(g, &format!("{prefix}mmoe"), xc, input, m, mix)?;
                (c_in, v_in, m.expert_size)
            }
            _ => (xc.clone(), xv.clone(), input),
        };
        let (name_c, name_v) = (format!("{prefix}ctr"), format!("{prefix}cvr"));
        let hc = hidden_layers(g, &name_c, &c_in, width, hidden_ctr, ctr)?;
        let hv = hidden_layers(g, &name_v, &v_in, width, hidden_cvr, cvr)?;
        let (wc, wv) = (*hidden_ctr.last().expect("a hidden layer"), *hidden_cvr.last().expect("a hidden layer"));
        let top = match spec.transfer_tensor() {
            Some(j) => {
                let t = params.get(j..j + TRANSFER_TENSORS).context("the towers lack the transfer's tensors")?;
                transfer(g, &format!("{prefix}aitm"), (&hc, wc), (&hv, wv), t)?
            }
            None => hv,
        };
        let mut c = output_layer(g, &name_c, &hc, wc, ctr)?;
        let mut v = output_layer(g, &name_v, &top, wv, cvr)?;
        if let (Some(rc), Some(rv)) = (spec.pair_tensor(0), spec.pair_tensor(1)) {
            ensure!(params.len() > rc.max(rv), "the towers hold {} parameter tensors", params.len());
            c = add_pairs(g, &format!("{prefix}ctr"), xc, input, &c, &params[rc])?;
            v = add_pairs(g, &format!("{prefix}cvr"), xv, input, &v, &params[rv])?;
        }
        zc.push(c);
        zv.push(v);
    }
    let (zc, mut zv) = (mean(g, "ctr", &zc), mean(g, "cvr", &zv));
    if spec.transfer {
        zv = aitm_cvr_logit(g, &zc, &zv);
    }
    let [p_ctr, p_cvr, p_ctcvr] = OUTPUTS;
    prob(g, c, "ctr", &zc, model.calibration.ctr, p_ctr);
    prob(g, c, "cvr", &zv, model.calibration.cvr, p_cvr);
    g.op_into("Mul", &[p_ctr, p_cvr], vec![], p_ctcvr);
    Ok(())
}
