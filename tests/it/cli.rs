//! The command-line contract (README "Command line", docs/operations.md "Scheduling and exit codes"): subcommands, exit statuses, config errors naming the
//! key and the file, `--strict` failures naming file and line, reruns skipping up-to-date stages.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::{esmm, stderr, temp_dir};

#[test]
fn help_lists_the_stages_and_exit_codes() {
    let o = esmm(&["--help"], Path::new("."));
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    for word in ["generate", "ingest", "split", "run", "Exit status", "--threads", "--config", "--log-format"] {
        assert!(text.contains(word), "--help lacks {word}");
    }
    let o = esmm(&["ingest", "--help"], Path::new("."));
    assert!(String::from_utf8_lossy(&o.stdout).contains("--strict"));
}

#[test]
fn usage_and_config_errors_exit_2() {
    let dir = temp_dir("cli-usage");
    assert_eq!(esmm(&["frobnicate"], &dir).status.code(), Some(2));
    assert_eq!(esmm(&["ingest", "--out", "x"], &dir).status.code(), Some(2), "missing --raw");
    std::fs::write(dir.join("bad.yaml"), "ingest:\n  hash_bucketz: 5\n").unwrap();
    let o = esmm(&["run", "bad.yaml"], &dir);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("hash_bucketz") && stderr(&o).contains("bad.yaml"), "{}", stderr(&o));
    std::fs::write(dir.join("bad2.yaml"), "split:\n  valid_fraction: 2\n").unwrap();
    let o = esmm(&["split", "--config", "bad2.yaml"], &dir);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("split.valid_fraction"), "{}", stderr(&o));
    // A limit of the generator's world is a configuration error too.
    std::fs::write(dir.join("big.yaml"), "generate: {users: 30000000}\n").unwrap();
    let o = esmm(&["generate", "--config", "big.yaml"], &dir);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("generate.users"), "{}", stderr(&o));
}

/// `esmm sql … | head`: a reader that closes stdout early ends the command with exit 0 and no
/// message (no panic, no error).
#[test]
fn a_closed_stdout_exits_0_silently() {
    use std::process::Stdio;
    let dir = temp_dir("cli-epipe");
    for args in [&["sql", "--duckdb-views", "--table", "t=x.parquet"][..], &["--help"][..]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_esmm"))
            .args(args)
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the reader goes away before esmm writes
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert_eq!(stderr(&o), "", "{args:?}");
    }
}

#[test]
fn strict_failure_exits_1_naming_file_and_line() {
    let dir = temp_dir("cli-strict");
    let raw = dir.join("raw");
    std::fs::create_dir_all(&raw).unwrap();
    let common = "0123456789abcdef,1,101\x021\x031.0\n";
    let skel = "1,0,0,0123456789abcdef,1,205\x021\x031.0\n2,0,0,0123456789abcdef,1,205\x021\x03oops\n";
    for s in ["train", "test"] {
        std::fs::write(raw.join(format!("common_features_{s}.csv")), common).unwrap();
        std::fs::write(raw.join(format!("sample_skeleton_{s}.csv")), skel).unwrap();
    }
    let o = esmm(&["ingest", "--raw", "raw", "--out", "out", "--strict"], &dir);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("sample_skeleton_train.csv:2: bad_value"), "{}", stderr(&o));
    assert!(!dir.join("out/_manifest.json").exists(), "a failed stage must leave no manifest");
    let o = esmm(&["ingest", "--raw", "raw", "--out", "out", "--log-format", "json"], &dir);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let event: serde_json::Value = serde_json::from_str(stderr(&o).lines().last().unwrap()).unwrap();
    assert_eq!(event["stage"], "ingest");
    assert_eq!(event["skipped"]["train.skeleton.bad_value"], 1);
}

#[test]
fn run_chains_the_stages_and_skips_them_when_up_to_date() {
    let dir = temp_dir("cli-run");
    let yaml = "paths: {raw: d/raw, ingest: d/ingest, split: d/split, model: d/model, predictions: d/pred, metrics: d/metrics}\n\
                generate: {train_rows: 3000, test_rows: 1000, users: 500, items: 2000, history_mean: 30}\n\
                train: {epochs: 1}\nrun_id: clitest\n";
    std::fs::write(dir.join("p.yaml"), yaml).unwrap();
    let o = esmm(&["run", "p.yaml", "--threads", "2"], &dir);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in [
        "d/raw/truth_train.csv",
        "d/ingest/train/samples.parquet",
        "d/split/valid/samples.parquet",
        "d/split/_manifest.json",
    ] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    let o = esmm(&["run", "p.yaml", "--log-format", "json"], &dir);
    assert!(o.status.success(), "{}", stderr(&o));
    let events: Vec<serde_json::Value> = stderr(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let stages: Vec<&str> = events.iter().filter_map(|e| e["stage"].as_str()).collect();
    assert_eq!(stages, ["generate", "ingest", "split", "train", "predict", "evaluate"]);
    assert!(events.iter().all(|e| e["up_to_date"] == true), "{events:?}");
}
