//! Operations: `esmm run` as a DAG (`--from`, `--until`, `--force`), output locks between
//! processes, sharded ingest and predict whose parts add up to the unsharded outputs (merged by
//! docs/operations.md's DuckDB CLI line too), exit codes and logs for schedulers, the Airflow example
//! calling only commands and flags that exist and run by real Airflow, and the crontab example's
//! line run the way cron runs it.

use crate::common;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use common::{esmm, read_rows, stderr, temp_dir, Value};

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

/// The additive counts of a manifest: not the shard's own numbers, nor the bucket occupancy (a
/// property of the whole table, which only an unsharded ingest counts).
fn counts(manifest: &serde_json::Value, key: &str) -> BTreeMap<String, u64> {
    let occupancy = ["buckets_used", "ids_estimated", "ids_sharing_a_bucket_permille"];
    manifest[key]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| !k.starts_with("shard_"))
        .filter(|(k, _)| !occupancy.iter().any(|o| k.split('.').nth(1) == Some(o)))
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
    let used = &whole["counts"]["train.buckets_used"];
    assert!(used.as_u64().is_some_and(|u| u > 100), "the unsharded ingest counts the buckets used: {used}");
    assert!(whole["counts"]["train.ids_estimated.205"].as_u64().is_some_and(|n| n > 10));
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
    merge_parts_as_the_readme_says(&dir, n, &whole);
}

/// docs/operations.md's line that merges predict parts with the DuckDB CLI, run as written (but for the
/// number of parts) in a directory holding only the parts in `pred/`: the merged file is the
/// unsharded one row for row, and `esmm evaluate` reads it to the same metrics.
fn merge_parts_as_the_readme_says(dir: &Path, n: u32, whole: &[BTreeMap<String, Value>]) {
    let Some(venv) =
        common::tool_venv("duckdb-cli", "sharded_ingest_and_predict_add_up_to_the_unsharded_outputs (merge)")
    else {
        return;
    };
    let doc = std::fs::read_to_string(repo("docs/operations.md")).unwrap();
    let line =
        doc.split('`').find(|s| s.starts_with("duckdb -c \"COPY")).expect("docs/operations.md: no duckdb COPY line");
    assert!(line.contains("-of-00004"), "the test adapts docs/operations.md's 4 parts: {line}");
    let line = line.replace("-of-00004", &format!("-of-{n:05}"));
    let sh = dir.join("sh");
    std::fs::create_dir_all(sh.join("pred")).unwrap();
    for i in 0..n {
        let part = format!("test.part-{i:05}-of-{n:05}.parquet");
        std::fs::copy(dir.join("d/pred").join(&part), sh.join("pred").join(&part)).unwrap();
    }
    let path = format!("{}:{}", venv.join("bin").display(), std::env::var("PATH").unwrap_or_default());
    let o = Command::new("bash").args(["-c", &line]).current_dir(&sh).env("PATH", path).output().unwrap();
    assert!(o.status.success(), "{line}: {}", stderr(&o));
    assert!(
        read_rows(&sh.join("pred/test.parquet")) == whole,
        "{line}: the merged file differs from the unsharded one"
    );
    let evaluate = |extra: &[&str]| {
        let mut args = vec!["evaluate", "--config", "p.yaml"];
        args.extend(extra);
        let o = esmm(&args, dir);
        assert!(o.status.success(), "esmm {args:?}: {}", stderr(&o));
    };
    evaluate(&[]);
    evaluate(&["--predictions", "sh/pred/test.parquet", "--out", "sh/metrics"]);
    let summary = |d: &str| std::fs::read_to_string(dir.join(d).join("summary.md")).unwrap();
    assert_eq!(summary("d/metrics"), summary("sh/metrics"), "metrics of DuckDB's merged file");
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

/// The repository file `rel`.
fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// The last 60 lines of a long log (Airflow's runs log ~150 lines), for failure messages.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// Runs `cmd` with stdout and stderr into `log` and stdin from /dev/null, in its own process
/// group, which is killed after `limit` (a hung run fails the test instead of stalling the suite);
/// returns the exit status and the log.
fn run_logged(cmd: &mut Command, log: &Path, limit: Duration) -> (ExitStatus, String) {
    let file = File::create(log).unwrap();
    cmd.stdin(Stdio::null()).stdout(file.try_clone().unwrap()).stderr(file).process_group(0);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            let _ = Command::new("kill").args(["-KILL", &format!("-{}", child.id())]).status();
            let _ = child.wait();
            let text = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{cmd:?} still ran after {limit:?} and was killed; its log ends:\n{}", tail(&text));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    (status, std::fs::read_to_string(log).unwrap())
}

/// The esmm JSON events in a log whose lines carry other text around them (Airflow logs each
/// output line of a task inside its own line format): on each line, the first JSON object that
/// has an `event` field.
fn embedded_events(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| {
            l.match_indices('{').find_map(|(at, _)| {
                let mut values = serde_json::Deserializer::from_str(&l[at..]).into_iter::<serde_json::Value>();
                values.next()?.ok().filter(|v| v.get("event").is_some())
            })
        })
        .collect()
}

/// (stage, up_to_date) of the `stage` events among `events`, sorted (the ingest shards may run in
/// either order).
fn stage_events(events: &[serde_json::Value]) -> Vec<(String, bool)> {
    let mut stages: Vec<(String, bool)> = events
        .iter()
        .filter(|e| e["event"] == "stage")
        .map(|e| (e["stage"].as_str().unwrap().to_string(), e["up_to_date"].as_bool().unwrap()))
        .collect();
    stages.sort();
    stages
}

/// A command of the Airflow venv with an Airflow home of its own (sqlite metadata DB, no example
/// DAGs, the DAGs folder `home/dags`) and the DAG's variables: the built esmm, the pipeline and
/// working directory `dir`, two ingest shards, no retries (a failing stage fails the run at once).
fn airflow_cmd(program: &Path, home: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os().filter(|(k, _)| k.to_string_lossy().starts_with("AIRFLOW")) {
        cmd.env_remove(key);
    }
    cmd.env("AIRFLOW_HOME", home)
        .env("AIRFLOW__CORE__DAGS_FOLDER", home.join("dags"))
        .env("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        .env("ESMM_BIN", env!("CARGO_BIN_EXE_esmm"))
        .env("ESMM_PIPELINE", dir.join("p.yaml"))
        .env("ESMM_WORKDIR", dir)
        .env("ESMM_INGEST_SHARDS", "2")
        .env("ESMM_RETRIES", "0")
        .current_dir(home);
    cmd
}

/// tests/airflow_check.py's JSON: the DagBag's view of the DAG and the runs recorded so far,
/// parsed with the DAG's default retries (no ESMM_RETRIES).
fn airflow_check(venv: &Path, home: &Path, dir: &Path) -> serde_json::Value {
    let mut cmd = airflow_cmd(&venv.join("bin/python"), home, dir);
    cmd.env_remove("ESMM_RETRIES").arg(repo("tests/airflow_check.py")).arg(home.join("dags")).arg("esmm_aliccp");
    let (status, log) = run_logged(&mut cmd, &home.join("check.log"), Duration::from_secs(300));
    assert!(status.success(), "tests/airflow_check.py failed:\n{}", tail(&log));
    let line = log
        .lines()
        .find_map(|l| l.strip_prefix("AIRFLOW_CHECK "))
        .unwrap_or_else(|| panic!("no result:\n{}", tail(&log)));
    serde_json::from_str(line).unwrap()
}

/// The checks of one `airflow dags test` run's log: the esmm stage events of every task, all fresh
/// on the first run, all up to date (skipped) on the second.
fn assert_dag_run_stages(log: &str, run: usize) {
    let stages = stage_events(&embedded_events(log));
    let names: Vec<&str> = stages.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(names, ["evaluate", "ingest", "ingest", "predict", "split", "train"], "run {run}:\n{}", tail(log));
    let want_up_to_date = run > 1;
    assert!(
        stages.iter().all(|(_, up)| *up == want_up_to_date),
        "run {run}: up_to_date should be {want_up_to_date}: {stages:?}"
    );
}

/// pipeline/airflow_dag.py run by Airflow itself (the version pinned in
/// tests/requirements-airflow.txt): parsed by its DagBag (no import errors, the task graph
/// ingest_0..1 -> split -> train -> predict -> evaluate), then two `airflow dags test` runs on a
/// tiny pipeline, every task a success; the first writes every output, the second skips every stage.
#[test]
fn the_airflow_dag_runs_in_airflow_and_a_rerun_skips_every_stage() {
    let Some(venv) = common::tool_venv("airflow", "the_airflow_dag_runs_in_airflow_and_a_rerun_skips_every_stage")
    else {
        return;
    };
    let dir = pipeline_dir("ops-airflow");
    // The DAG starts at ingest: the raw files come from elsewhere (here: generate).
    let o = esmm(&["run", "p.yaml", "--until", "generate"], &dir);
    assert!(o.status.success(), "{}", stderr(&o));
    let home = dir.join("airflow");
    std::fs::create_dir_all(home.join("dags")).unwrap();
    std::fs::copy(repo("pipeline/airflow_dag.py"), home.join("dags/airflow_dag.py")).unwrap();
    let airflow = || airflow_cmd(&venv.join("bin/airflow"), &home, &dir);
    let (status, log) =
        run_logged(airflow().args(["db", "migrate"]), &home.join("migrate.log"), Duration::from_secs(300));
    assert!(status.success(), "airflow db migrate failed:\n{}", tail(&log));

    for run in 1..=2 {
        let mut cmd = airflow();
        cmd.args(["dags", "test", "esmm_aliccp"]);
        let log_file = home.join(format!("dags-test-{run}.log"));
        let (status, log) = run_logged(&mut cmd, &log_file, Duration::from_secs(900));
        let errors: Vec<_> =
            embedded_events(&log).into_iter().filter(|e| e["event"] == "error" || e["event"] == "usage").collect();
        assert!(status.success(), "run {run}: airflow dags test failed ({}); esmm said {errors:?}", log_file.display());
        assert_dag_run_stages(&log, run);
        if run == 1 {
            for shard in ["00000", "00001"] {
                let manifest = dir.join(format!("d/ingest/_manifest.part-{shard}-of-00002.json"));
                assert!(manifest.is_file(), "{} is missing", manifest.display());
            }
            for done in ["d/split", "d/model", "d/metrics"] {
                assert!(dir.join(done).join("_manifest.json").is_file(), "{done} has no manifest");
            }
            let scored = read_rows(&dir.join("d/pred/test.parquet")).len();
            assert_eq!(scored, read_rows(&dir.join("d/split/test/samples.parquet")).len());
            assert!(scored > 0);
        }
    }

    let check = airflow_check(&venv, &home, &dir);
    assert_eq!(check["import_errors"], serde_json::json!({}), "{check}");
    assert_eq!(check["dags"], serde_json::json!(["esmm_aliccp"]), "{check}");
    let want = serde_json::json!({"ingest_0": [], "ingest_1": [], "split": ["ingest_0", "ingest_1"],
        "train": ["split"], "predict": ["train"], "evaluate": ["predict"]});
    assert_eq!(check["tasks"], want, "task ids and upstream tasks");
    assert!(check["retries"].as_object().unwrap().values().all(|r| r == 2), "{check}");
    let runs = check["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{check}");
    for r in runs {
        assert_eq!(r["state"], "success", "{r}");
        let tasks = r["tasks"].as_object().unwrap();
        assert_eq!(tasks.len(), 6, "{r}");
        assert!(tasks.values().all(|s| s == "success"), "every task succeeds: {r}");
    }
}

/// pipeline/crontab.example: its variables (`NAME=value` lines) and the command of its first
/// schedule line (what follows the five time fields).
fn crontab_example() -> (BTreeMap<String, String>, String) {
    let text = std::fs::read_to_string(repo("pipeline/crontab.example")).unwrap();
    let (mut vars, mut command) = (BTreeMap::new(), None);
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        match line.split_once('=') {
            Some((k, v)) if k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                vars.insert(k.to_string(), v.to_string());
            }
            _ => {
                let mut rest = line;
                for _ in 0..5 {
                    let field = rest.find(char::is_whitespace).unwrap_or_else(|| panic!("not a cron line: {line}"));
                    rest = rest[field..].trim_start();
                }
                command.get_or_insert(rest.to_string());
            }
        }
    }
    (vars, command.expect("crontab.example has no schedule line"))
}

/// The log of the crontab line as JSON events: every line one JSON object.
fn jsonl_events(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("not a JSON line: {e}: {l:?}")))
        .inspect(|e| assert!(e.is_object(), "not a JSON object: {e}"))
        .collect()
}

/// The crontab example's command run the way cron runs it: `SHELL -c COMMAND` with the crontab's
/// SHELL and PATH, HOME and nothing else in the environment (`env -i`), no terminal (a session of
/// its own), stdin from /dev/null; /srv/esmm and /var/log/esmm are directories of the test, and
/// esmm is installed in the directory that stands for /usr/local/bin on the crontab's PATH.
/// Checked: no output for cron to mail, one JSON object per log line, the whole chain on the
/// first night, every stage skipped on the second, and a failure reported with its exit status.
#[test]
fn the_crontab_line_runs_as_cron_runs_it() {
    let (vars, command) = crontab_example();
    assert!(!command.contains('%'), "cron would turn % into a newline: {command}");
    for path in ["/srv/esmm", "/var/log/esmm"] {
        assert!(command.contains(path), "the test maps {path}, which the line no longer names: {command}");
    }
    let root = temp_dir("ops-cron");
    let (srv, log_dir, bin) = (root.join("srv/esmm"), root.join("var/log/esmm"), root.join("usr/local/bin"));
    for d in [srv.join("pipeline"), log_dir.clone(), bin.clone()] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(srv.join("pipeline/aliccp.yaml"), PIPELINE).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_esmm"), bin.join("esmm")).unwrap();
    let command =
        command.replace("/srv/esmm", srv.to_str().unwrap()).replace("/var/log/esmm", log_dir.to_str().unwrap());
    let path = vars.get("PATH").expect("the crontab sets PATH");
    assert!(path.split(':').any(|p| p == "/usr/local/bin"), "PATH={path}");
    let path =
        path.split(':').map(|p| if p == "/usr/local/bin" { bin.to_str().unwrap() } else { p }).collect::<Vec<_>>();
    let shell = vars.get("SHELL").map_or("/bin/sh", String::as_str);
    let cron = || {
        Command::new("env")
            .arg("-i")
            .arg(format!("HOME={}", root.display()))
            .arg(format!("PATH={}", path.join(":")))
            .arg(format!("SHELL={shell}"))
            .args(["setsid", "--wait", shell, "-c", &command])
            .stdin(Stdio::null())
            .current_dir(&root)
            .output()
            .expect("running env -i")
    };
    let log = log_dir.join("run.jsonl");
    for (night, up_to_date) in [(1, false), (2, true)] {
        let before = std::fs::read_to_string(&log).map_or(0, |t| t.lines().count());
        let o = cron();
        assert!(o.status.success(), "night {night}: {o:?}");
        assert!(o.stdout.is_empty() && o.stderr.is_empty(), "night {night}: cron would mail {o:?}");
        let text = std::fs::read_to_string(&log).unwrap();
        let events = jsonl_events(&text);
        let night_events = &events[before..];
        let stages: Vec<(String, bool)> = night_events
            .iter()
            .filter(|e| e["event"] == "stage")
            .map(|e| (e["stage"].as_str().unwrap().to_string(), e["up_to_date"].as_bool().unwrap()))
            .collect();
        let names: Vec<&str> = stages.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(names, ["generate", "ingest", "split", "train", "predict", "evaluate"], "night {night}: {text}");
        assert!(stages.iter().all(|(_, up)| *up == up_to_date), "night {night}: up_to_date should be {up_to_date}");
        assert!(srv.join("d/metrics/_manifest.json").is_file() && srv.join("d/pred/test.parquet").is_file());
    }
    // A failing night: the line's own message (what cron mails) names the status; the log ends
    // with the error as a JSON object.
    let mut yaml = PIPELINE.to_string();
    yaml.push_str("no_such_key: 1\n");
    std::fs::write(srv.join("pipeline/aliccp.yaml"), yaml).unwrap();
    let o = cron();
    assert_eq!(String::from_utf8_lossy(&o.stderr).trim(), "esmm run failed with status 2", "{o:?}");
    let events = jsonl_events(&std::fs::read_to_string(&log).unwrap());
    let last = events.last().unwrap();
    assert_eq!(last["event"], "usage", "{last}");
    assert!(last["message"].as_str().unwrap().contains("no_such_key"), "{last}");
}
