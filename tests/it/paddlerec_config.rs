//! PaddleRec users with their own files: `esmm run config.yaml` in a copy of PaddleRec's
//! `models/multitask/esmm` directory runs the PaddleRec-format chain and prints the test AUCs;
//! every key of its `config.yaml` / `config_bigdata.yaml` is accepted (mapped, or named once as
//! ignored); a typo is still an error naming key and file. Always with this test's own fixture
//! (`tests/fixtures/paddlerec_esmm_all_keys.yaml`, every key of both files) on PaddleRec-format
//! lines written here; with PaddleRec's real files too when `../shared/peers/paddlerec` exists
//! (skipped with a printed reason otherwise). PaddleRec's `models/multitask/escm2` directory
//! (its two configs and sample data, kept unchanged in `tests/fixtures/paddlerec_escm2`, checked
//! against `../shared` when present) runs the same way: ESCM²-DR over a mixture of experts.

use crate::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::{esmm, read_rows, stderr, temp_dir, Value};
use esmm::config::{Format, PipelineConfig};

const FIXTURE: &str = include_str!("../fixtures/paddlerec_esmm_all_keys.yaml");

/// The fixture's keys without a meaning here, as the notice names them.
const IGNORED: &[&str] = &[
    "runner.train_reader_path",
    "runner.infer_reader_path",
    "runner.use_gpu",
    "runner.use_auc",
    "runner.auc_num",
    "runner.print_interval",
    "runner.model_init_path",
    "runner.infer_load_path",
    "runner.infer_start_epoch",
    "runner.infer_end_epoch",
    "runner.use_inference",
    "runner.save_inference_feed_varnames",
    "runner.save_inference_fetch_varnames",
    "hyper_parameters.optimizer.strategy",
];

/// PaddleRec's copy of the ESMM model directory, if this checkout has `../shared`.
fn paddlerec_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/peers/paddlerec/models/multitask/esmm");
    if dir.join("config.yaml").is_file() {
        Some(dir)
    } else {
        println!("SKIPPED: {} not found (PaddleRec's files live in ../shared)", dir.display());
        None
    }
}

/// `section.key` for every leaf key of a YAML file (lists are leaves).
fn keys(yaml: &str) -> BTreeSet<String> {
    fn walk(prefix: &str, v: &serde_yaml::Value, out: &mut BTreeSet<String>) {
        match v.as_mapping() {
            Some(m) => {
                for (k, v) in m {
                    let k = k.as_str().unwrap_or_default();
                    walk(&if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") }, v, out);
                }
            }
            None => {
                out.insert(prefix.to_string());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk("", &serde_yaml::from_str(yaml).unwrap(), &mut out);
    out
}

/// A small PaddleRec-format world: `sample_id,click,buy,<key>,field:id,...`, users with their own
/// user side (several rows each, so there are sessions to validate on), labels from a simple rule
/// on the user's and the item's ids plus noise.
fn paddle_lines(rows: u64, first_id: u64, seed: u64) -> String {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut out = String::new();
    for i in 0..rows {
        let (user, item) = (next() % 60, next() % 300);
        let score = (user % 5) as f64 * 0.12 + (item % 7) as f64 * 0.08 + (next() % 100) as f64 / 250.0;
        let click = u8::from(score > 0.75);
        let buy = click & u8::from(item % 3 == 0 && next() % 2 == 0);
        let mut feats = vec![
            format!("101:{}", 1000 + user),
            format!("121:{}", user % 7),
            format!("122:{}", user % 4),
            format!("124:{}", user % 2),
            format!("129:{}", user % 3),
        ];
        feats.extend((0..3).map(|k| format!("150_14:{}", 2000 + (user * 3 + k) % 90)));
        feats.extend([format!("205:{}", 5000 + item), format!("206:{}", 6000 + item % 7), "301:1".into()]);
        feats.extend((0..2).map(|k| format!("210:{}", 7000 + (item + k) % 40)));
        out.push_str(&format!("{},{click},{buy},{:016x},{}\n", first_id + i, user, feats.join(",")));
    }
    out
}

fn write_paddle_data(dir: &Path) {
    for (split, rows, first, seed) in [("train", 1200, 1, 7), ("test", 400, 100_001, 8)] {
        std::fs::create_dir_all(dir.join(split)).unwrap();
        std::fs::write(dir.join(split).join("part-0"), paddle_lines(rows, first, seed)).unwrap();
    }
}

/// The stage outputs under `root`, each finished (its manifest written).
fn assert_outputs(dir: &Path, root: &str) {
    for m in ["ingest/_manifest.json", "split/_manifest.json", "model/_manifest.json", "model/model.bin"] {
        assert!(dir.join(root).join(m).is_file(), "{root}/{m} missing");
    }
    for m in ["predictions/test.parquet.manifest.json", "metrics/_manifest.json", "metrics/metrics.parquet"] {
        assert!(dir.join(root).join(m).is_file(), "{root}/{m} missing");
    }
}

/// The closing AUC line, e.g. `infer: epoch: 2 done, auc_ctr: 0.612345, auc_cvr: …, auc_ctcvr: …`.
fn auc_line(err: &str) -> &str {
    let line = err.lines().find(|l| l.starts_with("infer: epoch: ")).unwrap_or_else(|| panic!("no AUC line: {err}"));
    assert!(line.contains(" done, auc_ctr: ") && line.contains(", auc_ctcvr: "), "{line}");
    line
}

#[test]
fn the_fixture_maps_every_key_or_names_it_ignored() {
    let c = PipelineConfig::parse(FIXTURE).unwrap();
    assert_eq!(c.paddle.ignored, IGNORED);
    assert!(c.paddle.chain);
    assert_eq!(c.ingest.format, Format::Paddlerec);
    assert_eq!(c.paths.raw_dirs(), Some((PathBuf::from("pr/train"), PathBuf::from("pr/test"))));
    for (path, dir) in [(&c.paths.ingest, "ingest"), (&c.paths.split, "split"), (&c.paths.model, "model")] {
        assert_eq!(*path, Path::new("pr_out").join(dir));
    }
    assert_eq!((&c.paths.predictions, &c.paths.metrics), (&"pr_out/predictions".into(), &"pr_out/metrics".into()));
    assert_eq!((c.train.batch_size, c.train.epochs, c.predict.batch_size), (64, 2, Some(32)));
    assert_eq!((c.ingest.hash_buckets, c.model.embedding_dim), (65537, 12));
    assert_eq!((c.model.ctr_fc_sizes.clone(), c.model.cvr_fc_sizes.clone()), (Some(vec![32, 16]), Some(vec![32, 16])));
    assert_eq!(c.model.learning_rate, 0.002);
    // Every key of the fixture is either mapped or in the ignored list: removing a mapped key
    // changes the config, and no key is left unaccounted.
    let mapped = keys(FIXTURE).into_iter().filter(|k| !IGNORED.contains(&k.as_str())).count();
    assert_eq!(mapped, 13, "runner: 6 mapped keys, hyper_parameters: 7");
}

#[test]
fn the_fixture_covers_every_key_of_paddlerecs_files() {
    let Some(dir) = paddlerec_dir() else { return };
    let ours = keys(FIXTURE);
    for name in ["config.yaml", "config_bigdata.yaml"] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        let missing: Vec<_> = keys(&text).into_iter().filter(|k| !ours.contains(k)).collect();
        assert!(missing.is_empty(), "{name} has keys the fixture lacks: {missing:?}");
        let c = PipelineConfig::parse(&text).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert!(c.paddle.ignored.iter().any(|k| k == "runner.auc_num"), "{name}: {:?}", c.paddle.ignored);
    }
}

#[test]
fn run_with_the_fixture_chains_the_paddlerec_stages_and_prints_the_aucs() {
    let dir = temp_dir("paddle-fixture");
    write_paddle_data(&dir.join("pr"));
    std::fs::write(dir.join("config.yaml"), FIXTURE).unwrap();
    let o = esmm(&["run", "config.yaml", "--threads", "2"], &dir);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert_eq!(err.matches("runner.auc_num").count(), 1, "named once: {err}");
    assert!(err.contains("config config.yaml: ignored (no meaning here): runner.train_reader_path, "), "{err}");
    assert_outputs(&dir, "pr_out");
    let line = auc_line(&err);
    assert!(!line.contains("auc_ctr: -"), "the test split has both classes: {line}");
    // Up to date: the stages are skipped, the notice and the AUCs come again, as JSON.
    let o = esmm(&["run", "config.yaml", "--log-format", "json"], &dir);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let events: Vec<serde_json::Value> = stderr(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let of = |name: &str| events.iter().filter(|e| e["event"] == name).collect::<Vec<_>>();
    assert_eq!(of("config_ignored").len(), 1);
    assert_eq!(of("config_ignored")[0]["keys"].as_array().unwrap().len(), IGNORED.len());
    assert!(of("stage").iter().all(|e| e["up_to_date"] == true), "{events:?}");
    assert!(of("test_auc")[0]["auc_ctr"].is_f64(), "{events:?}");
    // `esmm train --config` reads the same file (the error of old: unknown key runner.auc_num).
    let o = esmm(&["train", "--config", "config.yaml"], &dir);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_typo_is_still_an_error_naming_key_and_file() {
    let dir = temp_dir("paddle-typo");
    std::fs::write(dir.join("typo.yaml"), FIXTURE.replace("  epochs: 2", "  epoch: 2")).unwrap();
    for args in [&["run", "typo.yaml"][..], &["train", "--config", "typo.yaml"]] {
        let o = esmm(args, &dir);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains("runner.epoch`") && err.contains("typo.yaml"), "{err}");
    }
    std::fs::write(dir.join("typo2.yaml"), FIXTURE.replace("    strategy:", "    stratgy:")).unwrap();
    let err = stderr(&esmm(&["run", "typo2.yaml"], &dir));
    assert!(err.contains("stratgy") && err.contains("typo2.yaml"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// PaddleRec's quick start: `esmm run config.yaml` in its model directory, on its `small.txt`
/// (10 rows, one user side: one session, so the valid split is empty).
#[test]
fn paddlerecs_config_yaml_runs_in_its_model_directory() {
    let Some(src) = paddlerec_dir() else { return };
    let dir = temp_dir("paddle-real");
    copy_dir(&src, &dir);
    let o = esmm(&["run", "config.yaml", "--threads", "2"], &dir);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert_eq!(err.matches("runner.auc_num").count(), 1, "{err}");
    assert!(err.contains("the valid split") && err.contains("is empty"), "{err}");
    assert_outputs(&dir, "output_model_esmm");
    auc_line(&err);
    let split = common::manifest(&dir.join("output_model_esmm/split"));
    assert_eq!((split["counts"]["train.rows"].as_u64(), split["counts"]["valid.rows"].as_u64()), (Some(10), Some(0)));
    let epochs = read_rows(&dir.join("output_model_esmm/model/epochs.parquet"));
    assert_eq!(epochs.len(), 3, "one row per epoch (runner.epochs: 3)");
    assert!(epochs.iter().all(|r| matches!(r["valid_loss"], Value::F64(v) if v.is_nan())), "null valid metrics");
    let model = common::manifest(&dir.join("output_model_esmm/model"));
    assert_eq!(model["counts"]["best_epoch"].as_u64(), Some(3), "the last epoch's model is kept");
    std::fs::remove_dir_all(dir).ok();
}

/// `esmm run config_bigdata.yaml` in the model directory `dir`, its data dirs pointed at
/// PaddleRec-format files written here: its stderr, after checking it succeeded.
fn run_bigdata(dir: &Path) -> String {
    write_paddle_data(&dir.join("gen"));
    let text = std::fs::read_to_string(dir.join("config_bigdata.yaml")).unwrap();
    let text = text
        .replace("../../../datasets/ali-ccp/train_data", "gen/train")
        .replace("../../../datasets/ali-ccp/test_data", "gen/test");
    assert_eq!(text.matches("gen/").count(), 2, "config_bigdata.yaml's data dirs changed upstream");
    std::fs::write(dir.join("config_bigdata.yaml"), text).unwrap();
    let o = esmm(&["run", "config_bigdata.yaml", "--threads", "2"], dir);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    err
}

/// `config_bigdata.yaml` with its data dirs pointed at PaddleRec-format files written here.
#[test]
fn paddlerecs_config_bigdata_yaml_runs_on_paddlerec_format_files() {
    let Some(src) = paddlerec_dir() else { return };
    let dir = temp_dir("paddle-bigdata");
    copy_dir(&src, &dir);
    let err = run_bigdata(&dir);
    println!("{err}");
    assert!(err.contains("runner.use_gpu") && err.contains("runner.auc_num"), "{err}");
    assert_outputs(&dir, "output_model_esmm_all");
    let line = auc_line(&err);
    assert!(!line.contains("auc_ctr: -"), "{line}");
    std::fs::remove_dir_all(dir).ok();
}

/// One session only, and a split seed that sends it to valid: it stays in train instead, valid
/// is empty, and training (with `train.calibration: platt`) keeps its last epoch and skips the
/// calibration, each said in a notice.
#[test]
fn a_lone_session_stays_in_train_and_training_runs_without_validation() {
    let dir = temp_dir("paddle-lone");
    let lines: String = (1..=12u64)
        .map(|i| format!("{i},{},{},k,101:7,121:3,205:{},206:{},301:1\n", i % 3 % 2, u64::from(i == 3), 100 + i, i % 4))
        .collect();
    for split in ["train", "test"] {
        std::fs::create_dir_all(dir.join("raw").join(split)).unwrap();
        std::fs::write(dir.join("raw").join(split).join("part-0"), &lines).unwrap();
    }
    let o = esmm(&["ingest", "--format", "paddlerec", "--raw", "raw", "--out", "ingest"], &dir);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let md5 = common::u(&read_rows(&dir.join("ingest/train/samples.parquet"))[0], "md5");
    let seed = (0..1000).find(|&s| esmm::stages::split::ValidRule::new(0.1, s).is_valid(md5)).unwrap();
    let yaml = format!(
        "paths: {{raw: raw, ingest: ingest, split: split, model: model, predictions: pred, metrics: metrics}}\n\
         ingest: {{format: paddlerec}}\nsplit: {{seed: {seed}}}\n\
         train: {{epochs: 2, batch_size: 4, calibration: platt}}\nmodel: {{ctr_fc_sizes: [8], cvr_fc_sizes: [8]}}\n"
    );
    std::fs::write(dir.join("lone.yaml"), yaml).unwrap();
    let o = esmm(&["run", "lone.yaml", "--threads", "1"], &dir);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("every train session fell in valid (12 rows): they stay in train"), "{err}");
    assert!(err.contains("no validation, no early stopping") && err.contains("train.calibration skipped"), "{err}");
    let split = common::manifest(&dir.join("split"));
    let c = |k: &str| split["counts"][k].as_u64();
    assert_eq!((c("train.rows"), c("valid.rows"), c("valid_moved_to_train")), (Some(12), Some(0), Some(12)));
    let model = common::manifest(&dir.join("model"));
    assert_eq!((model["counts"]["best_epoch"].as_u64(), model["counts"]["epochs"].as_u64()), (Some(2), Some(2)));
    assert!(!err.contains("infer: epoch"), "the AUC line is for PaddleRec configs");
    std::fs::remove_dir_all(dir).ok();
}

/// PaddleRec's escm2 directory: the fixture's copy, checked byte for byte against `../shared`'s
/// when this checkout has it.
fn escm2_dir() -> PathBuf {
    let ours = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/paddlerec_escm2");
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/peers/paddlerec/models/multitask/escm2");
    for f in ["config.yaml", "config_bigdata.yaml", "data/train/small.txt", "data/test/small.txt"] {
        if shared.join(f).is_file() {
            assert!(std::fs::read(shared.join(f)).unwrap() == std::fs::read(ours.join(f)).unwrap(), "{f} differs");
        }
    }
    ours
}

/// `esmm run config.yaml` in PaddleRec's escm2 directory: ESCM²-DR (`counterfact_mode: DR`) on a
/// mixture of 8 experts of 16 with towers of 8, every key mapped or named once as ignored, the
/// AUC line at the end; `config_bigdata.yaml` likewise on PaddleRec-format files written here.
#[test]
fn paddlerecs_escm2_directory_runs_unchanged() {
    let dir = temp_dir("paddle-escm2");
    copy_dir(&escm2_dir(), &dir);
    let o = esmm(&["run", "config.yaml", "--threads", "2"], &dir);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert_eq!(err.matches("hyper_parameters.gate_num").count(), 1, "named once: {err}");
    assert_outputs(&dir, "output_model_escm");
    auc_line(&err);
    let model = common::manifest(&dir.join("output_model_escm/model"));
    let m = &model["config"]["model"];
    assert_eq!((m["kind"].as_str(), m["backbone"].as_str()), (Some("escm2_dr"), Some("mmoe")), "{model}");
    assert_eq!((m["global_w"].as_f64(), m["counterfactual_w"].as_f64()), (Some(1.0), Some(0.01)));
    let epochs = read_rows(&dir.join("output_model_escm/model/epochs.parquet"));
    assert_eq!(epochs.len(), 3, "runner.epochs: 3");

    let err = run_bigdata(&dir);
    let line = auc_line(&err);
    assert!(!line.contains("auc_ctr: -"), "{line}");
    let model = common::manifest(&dir.join("output_model_escm_all/model"));
    let m = &model["config"]["model"];
    assert_eq!((m["global_w"].as_f64(), m["counterfactual_w"].as_f64()), (Some(0.5), Some(0.5)), "{model}");
    std::fs::remove_dir_all(dir).ok();
}
