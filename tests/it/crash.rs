//! Crash safety: `esmm run` SIGKILLed at many points of ingest and train (when a temporary file
//! appears, when an output or a checkpoint appears, after fixed delays), then rerun to the end,
//! gives byte for byte the outputs of an uninterrupted run, and leaves no temporaries behind.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::temp_dir;

const PIPELINE: &str = "paths: {raw: d/raw, ingest: d/ingest, split: d/split, model: d/model, predictions: d/pred, \
                        metrics: d/metrics}\n\
                        generate: {train_rows: 20000, test_rows: 5000, users: 800, items: 3000, history_mean: 40}\n\
                        ingest: {row_group_rows: 4000, hash_buckets: 65536}\nsplit: {row_group_rows: 4000}\n\
                        train: {epochs: 2, batch_size: 512, early_stopping_patience: 0}\nrun_id: crash\n";

fn spawn_run(dir: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_esmm"))
        .args(["run", "p.yaml", "--threads", "2", "--log-format", "json"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning esmm")
}

fn finish(dir: &Path) {
    let o = spawn_run(dir).wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Every file below `dir`, relative.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// When to kill: a predicate on the files present, plus a delay once it holds.
struct Point {
    what: &'static str,
    when: fn(&[PathBuf]) -> bool,
    delay_ms: u64,
}

fn tmp(name: &str) -> bool {
    name.contains(".tmp-")
}

fn has(files: &[PathBuf], f: impl Fn(&str) -> bool) -> bool {
    files.iter().any(|p| f(&p.to_string_lossy()))
}

/// Starts a run and SIGKILLs it at `point`; returns whether the kill happened before the run ended.
fn kill_at(dir: &Path, point: &Point) -> bool {
    let mut child = spawn_run(dir);
    let started = Instant::now();
    let mut hit: Option<Instant> = None;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{}: the run failed on its own (exit {status})", point.what);
            return false;
        }
        if hit.is_none() && (point.when)(&files(&dir.join("d"))) {
            hit = Some(Instant::now());
        }
        if hit.is_some_and(|t| t.elapsed() >= Duration::from_millis(point.delay_ms)) {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            return true;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "{}: never reached", point.what);
        std::thread::sleep(Duration::from_micros(500));
    }
}

#[test]
fn killed_runs_rerun_to_byte_identical_outputs() {
    let reference = temp_dir("crash-ref");
    let crashed = temp_dir("crash-kill");
    for d in [&reference, &crashed] {
        std::fs::write(d.join("p.yaml"), PIPELINE).unwrap();
    }
    finish(&reference);

    let points = [
        Point { what: "generate writing", when: |f| has(f, |p| p.starts_with("raw/") && tmp(p)), delay_ms: 0 },
        Point {
            what: "ingest writing train",
            when: |f| has(f, |p| p.starts_with("ingest/train/") && tmp(p)),
            delay_ms: 0,
        },
        Point {
            what: "ingest, train common done",
            when: |f| has(f, |p| p == "ingest/train/common.parquet"),
            delay_ms: 0,
        },
        Point {
            what: "ingest writing test",
            when: |f| has(f, |p| p.starts_with("ingest/test/") && tmp(p)),
            delay_ms: 0,
        },
        Point { what: "ingest outputs renamed", when: |f| has(f, |p| p == "ingest/test/samples.parquet"), delay_ms: 0 },
        Point {
            what: "split writing",
            when: |f| has(f, |p| (p.starts_with("split/") && tmp(p)) || p == "split/train/samples.parquet"),
            delay_ms: 0,
        },
        Point { what: "train started", when: |f| has(f, |p| p.starts_with("model/")), delay_ms: 150 },
        Point {
            what: "checkpoint being written",
            when: |f| has(f, |p| p.starts_with("model/.checkpoint.bin.tmp") || p == "model/checkpoint.bin"),
            delay_ms: 0,
        },
        Point { what: "after epoch 1", when: |f| has(f, |p| p == "model/epochs.parquet"), delay_ms: 0 },
        Point { what: "mid epoch 2", when: |f| has(f, |p| p == "model/epochs.parquet"), delay_ms: 400 },
        Point {
            what: "predict writing",
            when: |f| has(f, |p| (p.starts_with("pred/") && tmp(p)) || p == "pred/test.parquet"),
            delay_ms: 0,
        },
    ];
    let mut kills = 0;
    for point in &points {
        // Each attempt resumes the pipeline where the previous kill left it.
        kills += kill_at(&crashed, point) as usize;
    }
    assert!(kills >= 8, "only {kills} of {} kill points were reached", points.len());
    finish(&crashed);

    let (a, b) = (reference.join("d"), crashed.join("d"));
    let leftovers: Vec<_> = files(&b).into_iter().filter(|p| p.to_string_lossy().contains(".tmp-")).collect();
    assert!(leftovers.is_empty(), "temporaries left behind: {leftovers:?}");
    let mut compared = 0;
    for f in files(&a) {
        let name = f.to_string_lossy();
        // The data: raw CSVs and every Parquet file but the epoch log (which holds timings).
        // Manifests and checkpoints hold timings and file mtimes, lock files pids.
        if !(name.ends_with(".csv") || name.ends_with(".parquet")) || name.ends_with("epochs.parquet") {
            continue;
        }
        let (x, y) = (std::fs::read(a.join(&f)).unwrap(), std::fs::read(b.join(&f)).unwrap_or_default());
        assert!(x == y, "{name} differs after the crashes");
        compared += 1;
    }
    assert!(compared >= 14, "{compared}");
    assert!(b.join("pred/test.parquet").is_file() && b.join("metrics/_manifest.json").is_file());
}
