//! Micro-benchmarks of the dense towers (used by `make bench`, tests/bench.sh).
//!
//! ```text
//! towers_bench towers --backend dfdx|gemm [--threads N] [--batch 1024] [--seconds 3] [--interactions]
//!     one training step of both towers (forward, backward incl. the input gradient, Adam) in a loop
//!     (--interactions: with the field-weighted pair terms, gemm only)
//! towers_bench peak [--threads N] [--batch 1024] [--seconds 3]
//!     only the GEMMs of that step, on gemm 0.19: the machine's sgemm rate on the tower shapes,
//!     and the samples/s ceiling it puts on training at this model's FLOPs per sample
//! ```
//! Prints one JSON object on stdout.

use std::time::{Duration, Instant};

use esmm::model::towers::{Backend, DenseAdam, Interactions, TowerSpec, Towers, DEFAULT_EMB_DIM, HIDDEN, INPUT};
use esmm::rng::Rng;

struct Args {
    mode: String,
    backend: Backend,
    threads: usize,
    batch: usize,
    seconds: f64,
    interactions: Interactions,
}

fn args() -> Args {
    let mut a = Args {
        mode: String::new(),
        backend: Backend::Gemm,
        threads: 1,
        batch: 1024,
        seconds: 3.0,
        interactions: Interactions::None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--backend" => {
                a.backend = match v().as_str() {
                    "dfdx" => Backend::Dfdx,
                    "gemm" => Backend::Gemm,
                    b => panic!("unknown backend {b}"),
                }
            }
            "--threads" => a.threads = v().parse().unwrap(),
            "--batch" => a.batch = v().parse().unwrap(),
            "--seconds" => a.seconds = v().parse().unwrap(),
            "--interactions" => a.interactions = Interactions::FieldWeighted,
            m if !m.starts_with('-') && a.mode.is_empty() => a.mode = m.into(),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// Layer widths of one tower, input first.
fn sizes() -> Vec<usize> {
    let mut s = vec![INPUT];
    s.extend(HIDDEN);
    s.push(1);
    s
}

/// FLOPs per sample of a training step: both towers, forward + dW + dX (input gradient included).
fn flops_per_sample() -> f64 {
    let s = sizes();
    2.0 * s.windows(2).map(|w| 6.0 * (w[0] * w[1]) as f64).sum::<f64>()
}

/// Runs `f` (one step of `batch` samples) for about `seconds` after a warm-up, in 3 rounds;
/// the best round's samples/s (the least disturbed by other load) and the steps run.
fn rate(batch: usize, seconds: f64, mut f: impl FnMut()) -> (f64, usize) {
    for _ in 0..3 {
        f();
    }
    let (mut best, mut total) = (0.0f64, 0);
    for _ in 0..3 {
        let start = Instant::now();
        let mut steps = 0;
        while steps < 2 || start.elapsed() < Duration::from_secs_f64(seconds / 3.0) {
            f();
            steps += 1;
        }
        best = best.max((steps * batch) as f64 / start.elapsed().as_secs_f64());
        total += steps;
    }
    (best, total)
}

fn towers(a: &Args) {
    let mut rng = Rng::new(1);
    let spec = TowerSpec { backend: a.backend, interactions: a.interactions, ..Default::default() };
    let adam = DenseAdam { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8 };
    let mut t = Towers::with_spec(&spec, DEFAULT_EMB_DIM, adam, || rng.normal() as f32).unwrap();
    let n = a.batch;
    let x: Vec<f32> = (0..n * INPUT).map(|_| rng.f64() as f32 * 2.0 - 1.0).collect();
    let g: Vec<f32> = (0..n).map(|_| (rng.f64() as f32 - 0.5) / n as f32).collect();
    let (mut dxc, mut dxv) = (Vec::new(), Vec::new());
    let (sps, steps) = rate(n, a.seconds, || {
        let tg = t.backward(&x, &x, n, (&mut dxc, &mut dxv), |_| vec![g.clone(), g.clone()]);
        std::hint::black_box(&dxc);
        t.apply(&tg);
        t.recycle(tg);
    });
    println!(
        "{{\"mode\":\"towers\",\"backend\":\"{:?}\",\"threads\":{},\"batch\":{n},\"steps\":{steps},\"samples_per_s\":{sps:.1},\"gflops\":{:.2},\"interactions\":\"{:?}\"}}",
        a.backend,
        a.threads,
        sps * flops_per_sample() / 1e9,
        a.interactions
    );
}

/// `dst[m × n] = lhs · rhs`, row-major with the given (row, column) strides.
#[allow(clippy::too_many_arguments)]
fn mm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    lhs: &[f32],
    ls: (isize, isize),
    rhs: &[f32],
    rs: (isize, isize),
    par: gemm::Parallelism,
) {
    assert!(dst.len() >= m * n);
    // SAFETY: the buffers are sized for these shapes by the caller (checked in `peak`).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            ls.1,
            ls.0,
            rhs.as_ptr(),
            rs.1,
            rs.0,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

fn peak(a: &Args) {
    let n = a.batch;
    let s = sizes();
    let par = if a.threads > 1 { gemm::Parallelism::Rayon(a.threads) } else { gemm::Parallelism::None };
    let widest = *s.iter().max().unwrap();
    let buf = |len: usize| vec![0.5f32; len];
    let (x, mut h, mut dx, dz) = (buf(n * widest), buf(n * widest), buf(n * widest), buf(n * widest));
    let w: Vec<Vec<f32>> = s.windows(2).map(|l| buf(l[0] * l[1])).collect();
    let mut dw: Vec<Vec<f32>> = s.windows(2).map(|l| buf(l[0] * l[1])).collect();
    let (sps, steps) = rate(n, a.seconds, || {
        for _tower in 0..2 {
            for (l, sz) in s.windows(2).enumerate() {
                let (i, o) = (sz[0], sz[1]);
                mm(n, o, i, &mut h, &x, (i as isize, 1), &w[l], (1, i as isize), par); // H = X·Wᵀ
                mm(o, i, n, &mut dw[l], &dz, (1, o as isize), &x, (i as isize, 1), par); // dW = dZᵀ·X
                mm(n, i, o, &mut dx, &dz, (o as isize, 1), &w[l], (i as isize, 1), par);
                // dX = dZ·W
            }
        }
        std::hint::black_box((&h, &dx, &dw));
    });
    println!(
        "{{\"mode\":\"peak\",\"threads\":{},\"batch\":{n},\"steps\":{steps},\"gflops\":{:.2},\"flops_per_sample\":{:.0},\"ceiling_samples_per_s\":{sps:.1}}}",
        a.threads,
        sps * flops_per_sample() / 1e9,
        flops_per_sample()
    );
}

fn main() {
    let a = args();
    rayon::ThreadPoolBuilder::new().num_threads(a.threads.max(1)).build_global().unwrap();
    match a.mode.as_str() {
        "towers" => towers(&a),
        "peak" => peak(&a),
        m => panic!("mode must be `towers` or `peak`, got `{m}`"),
    }
}
