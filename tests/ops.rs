//! Operations: `esmm run` as a DAG (`--from`, `--until`, `--force`), output locks between
//! processes, sharded ingest and predict whose parts add up to the unsharded outputs, exit codes
//! and logs for schedulers, and the Airflow example calling only commands and flags that exist.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{read_rows, temp_dir, Value};

fn esmm(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_esmm")).args(args).current_dir(cwd).output().expect("running esmm")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const PIPELINE: &str = "paths: {raw: d/raw, ingest: d/ingest, split: d/split, model: d/model, predictions: d/pred, \
                        metrics: d/metrics}\n\
                        generate: {train_rows: 4000, test_rows: 2500, users: 500, items: 2000, history_mean: 30}\n\
                        ingest: {row_group_rows: 700, hash_buckets: 65536}\nsplit: {row_group_rows: 700}\n\
                        train: {epochs: 1, batch_size: 256}\nrun_id: ops\n";

fn pipeline_dir(tag: &str) -> PathBuf {
    let dir = temp_dir(tag);
    std::fs::write(dir.join("p.yaml"), PIPELINE).unwrap();
    dir
}

/// The `stage` fields of the JSON events on stderr, with their `up_to_date` flags.
fn stages(o: &Output) -> Vec<(String, bool)> {
    stderr(o)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .filter_map(|e| Some((e["stage"].as_str()?.to_string(), e["up_to_date"].as_bool()?)))
        .collect()
}

#[test]
fn run_from_until_force_and_scheduler_friendly_logs() {
    let dir = pipeline_dir("ops-dag");
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "p.yaml", "--threads", "2", "--log-format", "json"];
        args.extend(extra);
        esmm(&args, &dir)
    };
    // Starting late on nothing: a clear error naming the missing input and what to run.
    let o = run(&["--from", "train"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("--from train") && stderr(&o).contains("d/split"), "{}", stderr(&o));
    assert!(stderr(&o).contains("--until split"), "{}", stderr(&o));
    // Stage names are validated (usage error).
    let o = run(&["--from", "trian"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("trian"));
    assert_eq!(run(&["--from", "train", "--until", "ingest"]).status.code(), Some(2));

    let o = run(&["--until", "split"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let names: Vec<String> = stages(&o).into_iter().map(|(s, _)| s).collect();
    assert_eq!(names, ["generate", "ingest", "split"]);
    assert!(!dir.join("d/model").exists(), "--until split must not train");
    // No progress bars or terminal control codes when stderr is not a terminal.
    assert!(!stderr(&o).contains('\r') && !stderr(&o).contains('\x1b'), "{:?}", stderr(&o));

    let o = run(&["--from", "train"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stages(&o), [("train".into(), false), ("predict".into(), false), ("evaluate".into(), false)]);

    // Everything up to date: each stage reports so, exit 0.
    let o = run(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stages(&o).iter().all(|(_, up)| *up), "{}", stderr(&o));
    assert_eq!(stages(&o).len(), 6);

    // --force reruns only the selected stages.
    let o = run(&["--from", "predict", "--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stages(&o), [("predict".into(), false), ("evaluate".into(), false)]);
}

#[test]
fn a_locked_output_fails_fast_naming_lock_and_holder() {
    let dir = pipeline_dir("ops-lock");
    assert!(esmm(&["run", "p.yaml", "--until", "generate"], &dir).status.success());
    let ingest = dir.join("d/ingest");
    let held = esmm::lock::exclusive_dir(&ingest, "ingest").unwrap();
    let o = esmm(&["ingest", "--config", "p.yaml"], &dir);
    assert_eq!(o.status.code(), Some(1));
    let msg = stderr(&o);
    assert!(msg.contains("d/ingest/.esmm.lock"), "{msg}");
    assert!(msg.contains(&format!("pid {}", std::process::id())), "holder must be named: {msg}");
    // The whole pipeline stops at the locked stage, before touching anything downstream.
    let o = esmm(&["run", "p.yaml"], &dir);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains(".esmm.lock"), "{}", stderr(&o));
    assert!(!dir.join("d/split").exists());
    drop(held);

    // A reader (split reads d/ingest) is kept out while someone rewrites its input.
    assert!(esmm(&["run", "p.yaml", "--until", "ingest"], &dir).status.success());
    let held = esmm::lock::exclusive_dir(&ingest, "ingest").unwrap();
    let o = esmm(&["split", "--config", "p.yaml"], &dir);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("cannot read"), "{}", stderr(&o));
    drop(held);
    assert!(esmm(&["split", "--config", "p.yaml"], &dir).status.success());
}

/// Every sample of a split as sample_id → (its own columns but `common_row`, the common row it
/// joins to), from whole tables or parts.
fn joined(tables: &[(PathBuf, PathBuf)]) -> BTreeMap<u64, (BTreeMap<String, Value>, BTreeMap<String, Value>)> {
    let mut out = BTreeMap::new();
    for (samples, common) in tables {
        let users = read_rows(common);
        for mut row in read_rows(samples) {
            let r = common::u(&row, "common_row") as usize;
            row.remove("common_row");
            let sid = common::u(&row, "sample_id");
            assert_eq!(row.get("md5"), users[r].get("md5"), "sample {sid} joined to the wrong common row");
            assert!(out.insert(sid, (row, users[r].clone())).is_none(), "sample {sid} in two parts");
        }
    }
    out
}

fn counts(manifest: &serde_json::Value, key: &str) -> BTreeMap<String, u64> {
    manifest[key]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| !k.starts_with("shard_"))
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect()
}

#[test]
fn sharded_ingest_and_predict_add_up_to_the_unsharded_outputs() {
    let dir = pipeline_dir("ops-shard");
    let o = esmm(&["run", "p.yaml", "--threads", "2", "--until", "predict"], &dir);
    assert!(o.status.success(), "{}", stderr(&o));
    let n = 3;
    for i in 0..n {
        let shard = format!("{i}/{n}");
        let o = esmm(&["ingest", "--config", "p.yaml", "--out", "sh/ingest", "--shard", &shard], &dir);
        assert!(o.status.success(), "{}", stderr(&o));
        // Before the last shard is done, split refuses the parts and names what is missing.
        if i == 0 {
            let o = esmm(&["split", "--config", "p.yaml", "--in", "sh/ingest", "--out", "sh/split"], &dir);
            assert_eq!(o.status.code(), Some(1));
            assert!(stderr(&o).contains("1 of 3 shards") && stderr(&o).contains("1/3, 2/3"), "{}", stderr(&o));
        }
    }
    // Rows: the union of the parts is the unsharded table, each sample joined to the same user side.
    for split in ["train", "test"] {
        let whole = dir.join("d/ingest").join(split);
        let parts = dir.join("sh/ingest").join(split);
        let part = |f: &str, i: u32| parts.join(f.replace(".parquet", &format!(".part-{i:05}-of-{n:05}.parquet")));
        let a = joined(&[(whole.join("samples.parquet"), whole.join("common.parquet"))]);
        let b = joined(&(0..n).map(|i| (part("samples.parquet", i), part("common.parquet", i))).collect::<Vec<_>>());
        assert!(a.len() > 1000);
        assert_eq!(a, b, "{split}: sharded union differs");
        // And no common row is written twice or lost.
        let common_rows: usize = (0..n).map(|i| read_rows(&part("common.parquet", i)).len()).sum();
        assert_eq!(common_rows, read_rows(&whole.join("common.parquet")).len());
    }
    // Counts of the shard manifests add up to the unsharded manifest's.
    let whole = common::manifest(&dir.join("d/ingest"));
    for key in ["counts", "skipped"] {
        let mut sum: BTreeMap<String, u64> = BTreeMap::new();
        for i in 0..n {
            let path = dir.join(format!("sh/ingest/_manifest.part-{i:05}-of-{n:05}.json"));
            let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
            for (k, v) in counts(&m, key) {
                *sum.entry(k).or_default() += v;
            }
        }
        assert_eq!(sum, counts(&whole, key), "{key}");
    }
    // split consumes the parts: the same rows per split as from the unsharded ingest.
    let o = esmm(&["split", "--config", "p.yaml", "--in", "sh/ingest", "--out", "sh/split"], &dir);
    assert!(o.status.success(), "{}", stderr(&o));
    for split in ["train", "valid", "test"] {
        let t = |root: &str| {
            let d = dir.join(root).join(split);
            joined(&[(d.join("samples.parquet"), d.join("common.parquet"))])
        };
        assert_eq!(t("d/split"), t("sh/split"), "{split}");
    }
    // Rerunning a finished shard is a no-op; a shard index out of range is a usage error.
    let o =
        esmm(&["ingest", "--config", "p.yaml", "--out", "sh/ingest", "--shard", "1/3", "--log-format", "json"], &dir);
    assert!(stderr(&o).contains("\"up_to_date\":true"), "{}", stderr(&o));
    assert_eq!(esmm(&["ingest", "--config", "p.yaml", "--shard", "3/3"], &dir).status.code(), Some(2));

    // predict: the parts, in name order, are the unsharded predictions row for row.
    let whole = read_rows(&dir.join("d/pred/test.parquet"));
    let mut parts = Vec::new();
    for i in 0..n {
        let shard = format!("{i}/{n}");
        let o = esmm(&["predict", "--config", "p.yaml", "--threads", "2", "--shard", &shard], &dir);
        assert!(o.status.success(), "{}", stderr(&o));
        let rows = read_rows(&dir.join(format!("d/pred/test.part-{i:05}-of-{n:05}.parquet")));
        assert!(!rows.is_empty(), "shard {i} is empty");
        parts.extend(rows);
    }
    assert_eq!(whole.len(), parts.len());
    assert!(whole == parts, "concatenated predict shards differ from the unsharded file");
}

#[test]
fn help_documents_exit_codes_and_new_flags() {
    let o = esmm(&["--help"], Path::new("."));
    let text = String::from_utf8_lossy(&o.stdout);
    for word in ["Exit status: 0", "1 failure", "locked", "2 usage"] {
        assert!(text.contains(word), "--help lacks {word}: {text}");
    }
    for (cmd, flag) in [("run", "--from"), ("run", "--until"), ("ingest", "--shard"), ("predict", "--shard")] {
        let o = esmm(&[cmd, "--help"], Path::new("."));
        assert!(String::from_utf8_lossy(&o.stdout).contains(flag), "esmm {cmd} --help lacks {flag}");
    }
}

/// The commands of `pipeline/airflow_dag.py`, run with stub airflow modules (no Airflow needed),
/// as argument lists.
fn airflow_commands() -> Vec<Vec<String>> {
    let dag = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipeline/airflow_dag.py");
    let script = r#"
import json, shlex, sys, types
calls = []
class Op:
    def __init__(self, task_id=None, bash_command=None, **kw):
        calls.append(bash_command)
    def __rshift__(self, other): return other
    def __rrshift__(self, other): return self
    def __lshift__(self, other): return other
class DAG:
    def __init__(self, *a, **kw): pass
    def __enter__(self): return self
    def __exit__(self, *a): return False
for name in ["airflow", "airflow.operators", "airflow.operators.bash", "airflow.models", "airflow.models.baseoperator"]:
    sys.modules[name] = types.ModuleType(name)
sys.modules["airflow"].DAG = DAG
sys.modules["airflow.operators.bash"].BashOperator = Op
sys.modules["airflow.models.baseoperator"].chain = lambda *a: None
src = open(sys.argv[1]).read()
exec(compile(src, sys.argv[1], "exec"), {"__name__": "dag"})
print(json.dumps([shlex.split(c) for c in calls]))
"#;
    let python = std::env::var("ESMM_PYTHON").unwrap_or_else(|_| "python3".into());
    let o = Command::new(python).arg("-c").arg(script).arg(&dag).output().expect("running python3");
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn airflow_dag_calls_only_existing_commands_and_flags() {
    let commands = airflow_commands();
    assert!(commands.len() >= 6, "{commands:?}");
    let mut subcommands = std::collections::BTreeSet::new();
    for argv in &commands {
        let at = argv.iter().position(|a| a.ends_with("esmm")).unwrap_or_else(|| panic!("no esmm call: {argv:?}"));
        let sub = &argv[at + 1];
        let o = esmm(&[sub, "--help"], Path::new("."));
        assert!(o.status.success(), "`esmm {sub}` does not exist ({argv:?})");
        let help = String::from_utf8_lossy(&o.stdout);
        for flag in argv[at + 2..].iter().filter(|a| a.starts_with("--")) {
            let flag = flag.split('=').next().unwrap();
            assert!(help.contains(&format!("{flag} ")), "`esmm {sub}` has no {flag} ({argv:?})");
        }
        assert!(argv.contains(&"--log-format".to_string()), "{argv:?} should log JSON for the scheduler");
        subcommands.insert(sub.clone());
    }
    for stage in ["ingest", "split", "train", "predict", "evaluate"] {
        assert!(subcommands.contains(stage), "the DAG has no {stage} task");
    }
}
