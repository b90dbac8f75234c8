//! The two tower backends (`dfdx`, the reference, and `gemm`) agree: logits, input gradients and
//! every parameter gradient on random inputs, Adam steps, results independent of the thread
//! count, and the same test AUC after a short training run on generated data. dfdx is compiled
//! for the default embedding dimension (12); at other dimensions (16, and 5, which no
//! fixed-size path of the pooling covers) gemm is checked against a plain-loop f64 reference
//! and finite differences, and trained end to end.

use crate::common;

use std::path::Path;

use common::*;
use esmm::config::{ModelConfig, TrainConfig};
use esmm::model::towers::{
    input_width, Backend, DenseAdam, TowerGrads, TowerSpec, Towers, DEFAULT_EMB_DIM, HIDDEN, INPUT,
};
use esmm::rng::Rng;
use esmm::schema::Split;

const ADAM: DenseAdam = DenseAdam { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8 };
/// Agreement bound: |a − b| ≤ TOL · max(1, |a|, |b|) (absolute for small values, relative above 1).
const TOL: f32 = 1e-5;

fn towers(backend: Backend, seed: u64) -> Towers {
    towers_at(backend, DEFAULT_EMB_DIM, seed)
}

/// Towers of `backend` (`[256, 64]`) on embeddings of `dim`.
fn towers_at(backend: Backend, dim: usize, seed: u64) -> Towers {
    let mut rng = Rng::new(seed);
    Towers::with_spec(&TowerSpec { backend, ..Default::default() }, dim, ADAM, || rng.normal() as f32).unwrap()
}

/// Pooled-embedding-like inputs: sums of 3 ids of uniform(±1) embeddings, some fields empty.
fn inputs(rng: &mut Rng, n: usize) -> Vec<f32> {
    inputs_of(rng, n, INPUT)
}

/// [`inputs`], `width` wide.
fn inputs_of(rng: &mut Rng, n: usize, width: usize) -> Vec<f32> {
    (0..n * width).map(|_| if rng.chance(0.2) { 0.0 } else { (rng.f64() as f32 * 2.0 - 1.0) * 3.0 }).collect()
}

/// Logit gradients of a batch-mean loss: (p − y) / n.
fn logit_grads(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| (rng.f64() as f32 - rng.chance(0.3) as u8 as f32) / n as f32).collect()
}

/// Largest absolute difference; panics past the agreement bound.
fn agree(what: &str, a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let mut worst = 0.0f32;
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let d = (x - y).abs();
        assert!(d <= TOL * 1f32.max(x.abs()).max(y.abs()), "{what}[{i}]: {x} vs gemm {y}");
        worst = worst.max(d);
    }
    worst
}

/// One backward pass; returns (zc, zv, dxc, dxv, parameter gradients).
#[allow(clippy::type_complexity)]
fn step(
    t: &mut Towers,
    xc: &[f32],
    xv: &[f32],
    gc: &[f32],
    gv: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>, Vec<Vec<f32>>) {
    let n = gc.len();
    let mut z = (Vec::new(), Vec::new());
    let (mut dxc, mut dxv) = (Vec::new(), Vec::new());
    let g = t.backward(xc, xv, n, (&mut dxc, &mut dxv), |zs| {
        z = (zs[0].to_vec(), zs[1].to_vec());
        vec![gc.to_vec(), gv.to_vec()]
    });
    let pg = g.tensors().to_vec();
    t.recycle(g);
    (z.0, z.1, dxc, dxv, pg)
}

#[test]
fn backends_agree_on_logits_and_every_gradient() {
    let (mut d, mut g) = (towers(Backend::Dfdx, 3), towers(Backend::Gemm, 3));
    assert_eq!(d.params(), g.params(), "same seed, same initialization");
    let mut rng = Rng::new(11);
    let names = ["w1", "b1", "w2", "b2", "w3", "b3"];
    let mut worst = std::collections::BTreeMap::<String, f32>::new();
    let mut note = |k: String, v: f32| {
        let e = worst.entry(k).or_insert(0.0);
        *e = e.max(v);
    };
    for n in [1usize, 2, 7, 33, 256, 1023, 1024] {
        let (xc, xv) = (inputs(&mut rng, n), inputs(&mut rng, n));
        let (gc, gv) = (logit_grads(&mut rng, n), logit_grads(&mut rng, n));
        let (fc, fv) = d.forward(&xc, &xv, n);
        let (hc, hv) = g.forward(&xc, &xv, n);
        note("forward logits".into(), agree(&format!("n={n} zc"), &fc, &hc).max(agree("zv", &fv, &hv)));
        let a = step(&mut d, &xc, &xv, &gc, &gv);
        let b = step(&mut g, &xc, &xv, &gc, &gv);
        assert_eq!((&a.0, &a.1), (&fc, &fv), "dfdx: training and inference logits");
        assert_eq!((&b.0, &b.1), (&hc, &hv), "gemm: training and inference logits");
        note("dx ctr".into(), agree(&format!("n={n} dxc"), &a.2, &b.2));
        note("dx cvr".into(), agree(&format!("n={n} dxv"), &a.3, &b.3));
        for (k, (pa, pb)) in a.4.iter().zip(&b.4).enumerate() {
            let name = format!("d{} {}", names[k % 6], if k < 6 { "ctr" } else { "cvr" });
            note(name.clone(), agree(&format!("n={n} {name}"), pa, pb));
        }
    }
    eprintln!("max |dfdx − gemm| over batch sizes 1, 2, 7, 33, 256, 1023, 1024:");
    for (k, v) in &worst {
        eprintln!("  {k:<16} {v:.3e}");
    }
}

#[test]
fn adam_steps_agree() {
    let (mut d, mut g) = (towers(Backend::Dfdx, 5), towers(Backend::Gemm, 5));
    let mut rng = Rng::new(12);
    for s in 0..5 {
        let n = 64 + s;
        let (xc, xv) = (inputs(&mut rng, n), inputs(&mut rng, n));
        let (gc, gv) = (logit_grads(&mut rng, n), logit_grads(&mut rng, n));
        let (_, _, _, _, ga) = step(&mut d, &xc, &xv, &gc, &gv);
        step(&mut g, &xc, &xv, &gc, &gv);
        // The same gradients through both optimizers: bit-identical parameters and moments.
        let (mut d2, mut g2) = (towers(Backend::Dfdx, 0), towers(Backend::Gemm, 0));
        for t in [&mut d2, &mut g2] {
            t.set_params(&d.params()).unwrap();
            let (step, m, v) = d.adam_state();
            t.set_adam_state(step, m.to_vec(), v.to_vec()).unwrap();
        }
        let (pa, pb) = (apply_with(&mut d2, &ga), apply_with(&mut g2, &ga));
        assert_eq!(pa, pb, "step {s}: same gradients, same Adam update");
        assert_eq!(d2.adam_state().1, g2.adam_state().1);
        assert_eq!(d2.adam_state().2, g2.adam_state().2);
        // Each backend's own gradients: parameters stay within the agreement bound.
        apply_own(&mut d, &xc, &xv, &gc, &gv);
        apply_own(&mut g, &xc, &xv, &gc, &gv);
        for (k, (a, b)) in d.params().iter().zip(&g.params()).enumerate() {
            agree(&format!("step {s} param {k}"), a, b);
        }
    }
}

/// One Adam step with the given gradients; the parameters after it.
fn apply_with(t: &mut Towers, grads: &[Vec<f32>]) -> Vec<Vec<f32>> {
    t.apply(&TowerGrads::from(grads.to_vec()));
    t.params()
}

fn apply_own(t: &mut Towers, xc: &[f32], xv: &[f32], gc: &[f32], gv: &[f32]) {
    let tg = t.backward(xc, xv, gc.len(), (&mut Vec::new(), &mut Vec::new()), |_| vec![gc.to_vec(), gv.to_vec()]);
    t.apply(&tg);
    t.recycle(tg);
}

/// gemm: the same results for 1, 2 and 3 threads, and run to run.
#[test]
fn gemm_results_do_not_depend_on_the_thread_count() {
    let mut rng = Rng::new(13);
    let n = 777;
    let (xc, xv) = (inputs(&mut rng, n), inputs(&mut rng, n));
    let (gc, gv) = (logit_grads(&mut rng, n), logit_grads(&mut rng, n));
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut t = towers(Backend::Gemm, 9);
            let mut out = Vec::new();
            for _ in 0..3 {
                let r = step(&mut t, &xc, &xv, &gc, &gv);
                apply_own(&mut t, &xc, &xv, &gc, &gv);
                out.push(r);
            }
            (out, t.params())
        })
    };
    let one = run(1);
    assert!(one == run(1), "run to run");
    assert!(one == run(2), "1 vs 2 threads");
    assert!(one == run(3), "1 vs 3 threads");
}

/// gemm with run-time sizes (hidden widths and embedding dimensions): gradients match finite
/// differences of `Σ z·g`.
#[test]
fn gemm_runtime_sizes_match_finite_differences() {
    for dim in [DEFAULT_EMB_DIM, 16, 5] {
        runtime_sizes_match_finite_differences(dim);
    }
    // The dfdx backend refuses sizes it is not compiled for, and auxiliary towers.
    let spec =
        TowerSpec { backend: Backend::Dfdx, ctr_fc_sizes: vec![40, 9], cvr_fc_sizes: vec![17], ..Default::default() };
    let err = Towers::with_spec(&spec, DEFAULT_EMB_DIM, ADAM, || 0.0).err().unwrap();
    assert!(err.to_string().contains("compiled for"), "{err}");
    let aux = TowerSpec { backend: Backend::Dfdx, aux_towers: 1, ..Default::default() };
    let err = Towers::with_spec(&aux, DEFAULT_EMB_DIM, ADAM, || 0.0).err().unwrap();
    assert!(err.to_string().contains("needs model.backend: gemm"), "{err}");
    let err = Towers::with_spec(&TowerSpec { backend: Backend::Dfdx, ..Default::default() }, 16, ADAM, || 0.0);
    let err = err.err().unwrap().to_string();
    assert!(err.contains("model.embedding_dim") && err.contains("model.backend: dfdx"), "{err}");
}

/// At `dim`, towers `[40, 9]` and `[17]` plus an auxiliary tower (the CVR tower's shape and
/// input, as ESCM²-DR and DCMT train one): every gradient of `Σ z·g` over the three towers
/// against finite differences, the auxiliary tower's input gradient inside the CVR input's.
fn runtime_sizes_match_finite_differences(dim: usize) {
    let spec = TowerSpec {
        backend: Backend::Gemm,
        ctr_fc_sizes: vec![40, 9],
        cvr_fc_sizes: vec![17],
        aux_towers: 1,
        ..Default::default()
    };
    // (seed 21 and 22 put a hidden pre-activation within a step of its ReLU kink: no finite
    // difference across a kink matches a gradient)
    let mut rng = Rng::new(24);
    let mut t = Towers::with_spec(&spec, dim, ADAM, || rng.normal() as f32).unwrap();
    let (n, width) = (5, input_width(dim));
    let (xc, xv) = (inputs_of(&mut rng, n, width), inputs_of(&mut rng, n, width));
    let g = [vec![0.3, -0.2, 0.5, 0.1, -0.4], vec![-0.1, 0.25, 0.2, -0.3, 0.15], vec![0.2, 0.1, -0.35, 0.05, 0.3]];
    let (mut dxc, mut dxv) = (Vec::new(), Vec::new());
    let tg = t.backward(&xc, &xv, n, (&mut dxc, &mut dxv), |z| {
        assert_eq!(z.len(), 3, "the logits of the three towers");
        g.to_vec()
    });
    let pg = tg.tensors().to_vec();
    let surrogate = |t: &Towers, xc: &[f32], xv: &[f32]| {
        let z = t.forward_all(xc, xv, n);
        z.iter().zip(&g).flat_map(|(z, g)| z.iter().zip(g)).map(|(&z, &g)| z as f64 * g as f64).sum::<f64>()
    };
    let all = t.forward_all(&xc, &xv, n);
    assert_eq!(t.forward(&xc, &xv, n), (all[0].clone(), all[1].clone()), "predicting runs the first two");
    let eps = 1e-3f32; // at 1e-2 a step crossed a ReLU kink at dim 16
    let close = |num: f64, ana: f32, what: &str| {
        assert!((num - ana as f64).abs() <= 2e-3 + 2e-2 * (ana as f64).abs(), "{what}: numeric {num} vs {ana}");
    };
    let p0 = t.params();
    assert_eq!(p0.len(), 6 + 4 + 4);
    for (k, p) in p0.iter().enumerate() {
        for idx in [0, p.len() / 2, p.len() - 1] {
            let mut p = p0.clone();
            p[k][idx] += eps;
            t.set_params(&p).unwrap();
            let up = surrogate(&t, &xc, &xv);
            p[k][idx] -= 2.0 * eps;
            t.set_params(&p).unwrap();
            let down = surrogate(&t, &xc, &xv);
            close((up - down) / (2.0 * eps as f64), pg[k][idx], &format!("dim {dim} param {k}[{idx}]"));
        }
    }
    t.set_params(&p0).unwrap();
    // the auxiliary tower's output bias (train starts DR's and DCMT's at their base rate)
    let zero = vec![0.0; n * width];
    let before = t.forward_all(&zero, &zero, n);
    t.set_aux_output_bias(-1.5);
    let after = t.forward_all(&zero, &zero, n);
    assert_eq!((&after[0], &after[1]), (&before[0], &before[1]), "the CTR and CVR towers untouched");
    assert!(after[2].iter().zip(&before[2]).all(|(a, b)| (a - b - (-1.5 - p0[13][0])).abs() < 1e-6));
    t.set_params(&p0).unwrap();
    for (x, dx, ctr) in [(&xc, &dxc, true), (&xv, &dxv, false)] {
        for idx in [0, 100, n * width - 1] {
            let mut xp = x.clone();
            xp[idx] += eps;
            let up = if ctr { surrogate(&t, &xp, &xv) } else { surrogate(&t, &xc, &xp) };
            xp[idx] -= 2.0 * eps;
            let down = if ctr { surrogate(&t, &xp, &xv) } else { surrogate(&t, &xc, &xp) };
            close((up - down) / (2.0 * eps as f64), dx[idx], &format!("dim {dim} dx ctr={ctr} [{idx}]"));
        }
    }
}

/// One tower in plain f64 loops, for `n` rows of `x` (layer widths `sizes`, parameters `p` in
/// [`Towers::params`] order): the logits, and the gradients of `Σ z·g` w.r.t. `x` and `p`.
#[allow(clippy::type_complexity)]
fn reference(sizes: &[usize], p: &[Vec<f32>], x: &[f32], g: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<Vec<f32>>) {
    let layers = sizes.len() - 1;
    let (mut z, mut dx) = (Vec::new(), Vec::new());
    let mut grads: Vec<Vec<f64>> = p.iter().map(|t| vec![0.0; t.len()]).collect();
    for (row, &gi) in x.chunks_exact(sizes[0]).zip(g) {
        let mut acts = vec![row.iter().map(|&v| v as f64).collect::<Vec<f64>>()];
        for l in 0..layers {
            let (inp, w, b) = (&acts[l], &p[2 * l], &p[2 * l + 1]);
            let out: Vec<f64> = (0..sizes[l + 1])
                .map(|o| {
                    let h = b[o] as f64 + (0..sizes[l]).map(|k| w[o * sizes[l] + k] as f64 * inp[k]).sum::<f64>();
                    if l + 1 < layers {
                        h.max(0.0)
                    } else {
                        h
                    }
                })
                .collect();
            acts.push(out);
        }
        z.push(acts[layers][0] as f32);
        let mut dz = vec![gi as f64];
        for l in (0..layers).rev() {
            let (a, w) = (&acts[l], &p[2 * l]);
            let mut da = vec![0.0f64; sizes[l]];
            for (o, &d) in dz.iter().enumerate() {
                grads[2 * l + 1][o] += d;
                for k in 0..sizes[l] {
                    grads[2 * l][o * sizes[l] + k] += d * a[k];
                    da[k] += d * w[o * sizes[l] + k] as f64;
                }
            }
            if l > 0 {
                da.iter_mut().zip(a).for_each(|(d, &av)| *d = if av <= 0.0 { 0.0 } else { *d });
            }
            dz = da;
        }
        dx.extend(dz.iter().map(|&v| v as f32));
    }
    (z, dx, grads.into_iter().map(|t| t.into_iter().map(|v| v as f32).collect()).collect())
}

/// gemm against [`reference`] at the default embedding dimension, another one the pooling has
/// a fixed-size path for (16) and one it has not (5): logits, input and parameter gradients.
#[test]
fn gemm_agrees_with_a_plain_reference_at_several_embedding_dims() {
    for dim in [DEFAULT_EMB_DIM, 16, 5] {
        let mut t = towers_at(Backend::Gemm, dim, 4);
        let mut rng = Rng::new(40 + dim as u64);
        let sizes = [input_width(dim), 256, 64, 1];
        for n in [1usize, 7, 33] {
            let (xc, xv) = (inputs_of(&mut rng, n, sizes[0]), inputs_of(&mut rng, n, sizes[0]));
            let (gc, gv) = (logit_grads(&mut rng, n), logit_grads(&mut rng, n));
            let (zc, zv, dxc, dxv, pg) = step(&mut t, &xc, &xv, &gc, &gv);
            let p = t.params();
            for (tower, x, g, z, dx, pg, p) in
                [("ctr", &xc, &gc, &zc, &dxc, &pg[..6], &p[..6]), ("cvr", &xv, &gv, &zv, &dxv, &pg[6..], &p[6..])]
            {
                let (rz, rdx, rpg) = reference(&sizes, p, x, g);
                let what = |k: &str| format!("dim {dim} n={n} {tower} {k}: reference");
                agree(&what("z"), &rz, z);
                agree(&what("dx"), &rdx, dx);
                for (k, (a, b)) in rpg.iter().zip(pg).enumerate() {
                    agree(&what(&format!("param {k}")), a, b);
                }
            }
            apply_own(&mut t, &xc, &xv, &gc, &gv);
        }
    }
}

/// Trains on small generated data with each backend; returns the test CTR and CTCVR AUCs.
fn train_and_score(data: &Path, out: &Path, backend: Backend) -> (f64, f64) {
    // the same towers on both: dfdx's compiled [256, 64]
    let hidden = Some(HIDDEN.to_vec());
    let model = ModelConfig { backend, ctr_fc_sizes: hidden.clone(), cvr_fc_sizes: hidden, ..Default::default() };
    let params = TrainConfig { epochs: 2, batch_size: 256, early_stopping_patience: 0, ..Default::default() };
    train_with(data, out, model, params, false);
    let pred = out.join("p.parquet");
    predict_split(out, data, Split::Test, &pred);
    let rows = read_rows(&pred);
    let col = |name: &str| -> Vec<f32> {
        rows.iter()
            .map(|r| match r.get(name) {
                Some(Value::F32(v)) => *v,
                other => panic!("{name}: {other:?}"),
            })
            .collect()
    };
    let click: Vec<bool> = rows.iter().map(|r| u(r, "click") == 1).collect();
    let ctcvr: Vec<bool> = rows.iter().map(|r| u(r, "click") == 1 && u(r, "buy") == 1).collect();
    (esmm::metrics::auc(&col("p_ctr"), &click).unwrap(), esmm::metrics::auc(&col("p_ctcvr"), &ctcvr).unwrap())
}

#[test]
fn both_backends_reach_the_same_test_auc() {
    let root = temp_dir("backends");
    generate(&root, small_world());
    let data = ingest_and_split_small(&root);
    let (dc, dv) = train_and_score(&data, &root.join("dfdx"), Backend::Dfdx);
    let (gc, gv) = train_and_score(&data, &root.join("gemm"), Backend::Gemm);
    eprintln!("test AUC ctr: dfdx {dc:.5} gemm {gc:.5}; ctcvr: dfdx {dv:.5} gemm {gv:.5}");
    assert!(dc > 0.6, "the run learns: ctr auc {dc}");
    assert!((dc - gc).abs() < 0.002, "ctr auc: dfdx {dc} vs gemm {gc}");
    assert!((dv - gv).abs() < 0.002, "ctcvr auc: dfdx {dv} vs gemm {gv}");
    let _ = std::fs::remove_dir_all(&root);
}
