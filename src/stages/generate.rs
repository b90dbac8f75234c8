//! `esmm generate`: synthetic raw Ali-CCP files (the raw format of [`crate::aliccp`]) with the planted truth per sample.
//!
//! Writes `sample_skeleton_{train,test}.csv`, `common_features_{train,test}.csv` and
//! `truth_{train,test}.csv` into the output directory. Chunks of sessions are rendered on
//! worker threads and written in order by one sink, so the bytes depend only on the config
//! (seed included), never on `threads`. The planted model is documented in [`crate::synth`].

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{StageReport, StageRun};
use crate::config::GenerateConfig;
use crate::manifest::AtomicFile;
use crate::parallel::ordered_map;
use crate::schema::{self, Split};
use crate::synth::{render_chunk, ChunkStats, Planner, World};

/// What `generate` needs: where to write, the generator config, threads, and whether to
/// regenerate up-to-date outputs.
pub struct GenerateStage {
    pub out: PathBuf,
    pub params: GenerateConfig,
    pub threads: usize,
    pub force: bool,
}

pub fn run(cfg: &GenerateStage) -> Result<StageReport> {
    let st = StageRun::begin("generate", &cfg.out, &cfg.params, &[])?;
    if !cfg.force && st.up_to_date() {
        return Ok(st.skipped_report());
    }
    cfg.params.validate()?;
    // build (and calibrate) the world before touching the outputs: a bad config leaves a
    // finished directory as it was
    let world = World::build(&cfg.params).context("building the synthetic world")?;
    st.invalidate()?;
    let threads = crate::config::resolve_threads(cfg.threads);
    let mut outputs = Vec::new();
    let mut counts = BTreeMap::new();
    let mut noise = 0;
    for split in Split::SOURCES {
        let rows = match split {
            Split::Test => cfg.params.test_rows,
            _ => cfg.params.train_rows,
        };
        let (files, stats) = write_split(&world, split, rows, &cfg.out, threads)?;
        outputs.extend(files);
        let s = split.name();
        counts.insert(format!("{s}_rows"), stats.rows);
        counts.insert(format!("{s}_clicks"), stats.clicks);
        counts.insert(format!("{s}_buys"), stats.buys);
        counts.insert(format!("{s}_md5s"), stats.md5s);
        counts.insert(format!("{s}_md5s_without_user_id"), stats.md5s_without_user_id);
        counts.insert(format!("{s}_skeleton_features"), stats.skeleton_features);
        counts.insert(format!("{s}_common_features"), stats.common_features);
        noise += stats.click0_buy1;
    }
    counts.insert("click0_buy1_rows".to_string(), noise);
    st.finish(&outputs, counts, BTreeMap::new(), threads)
}

fn create(path: &Path) -> Result<AtomicFile> {
    AtomicFile::create(path).with_context(|| format!("creating {}", path.display()))
}

/// The three files of one split; returns their paths and the split's counters.
fn write_split(
    world: &World,
    split: Split,
    rows: u64,
    out: &Path,
    threads: usize,
) -> Result<(Vec<PathBuf>, ChunkStats)> {
    let sk_path = out.join(schema::skeleton_file(split));
    let co_path = out.join(schema::common_features_file(split));
    let tr_path = out.join(schema::truth_file(split));
    let (mut sk, mut co, mut tr) = (create(&sk_path)?, create(&co_path)?, create(&tr_path)?);
    writeln!(tr, "{}", schema::truth_header()).with_context(|| format!("writing {}", tr_path.display()))?;
    let mut stats = ChunkStats::default();
    ordered_map(
        Planner::new(world, split, rows).map(Ok),
        threads,
        2 * threads + 2,
        |plan| Ok(render_chunk(world, &plan)),
        |chunk| {
            sk.write_all(&chunk.skeleton).with_context(|| format!("writing {}", sk_path.display()))?;
            co.write_all(&chunk.common).with_context(|| format!("writing {}", co_path.display()))?;
            tr.write_all(&chunk.truth).with_context(|| format!("writing {}", tr_path.display()))?;
            stats.add(&chunk.stats);
            Ok(())
        },
    )
    .with_context(|| format!("generating the {split} split"))?;
    for f in [sk, co, tr] {
        let dest = f.dest().to_path_buf();
        f.commit().with_context(|| format!("finishing {}", dest.display()))?;
    }
    Ok((vec![sk_path, co_path, tr_path], stats))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::fs;

    use super::*;
    use crate::schema::{field_index, Side, FIELDS};

    fn small(train_rows: u64, test_rows: u64) -> GenerateConfig {
        GenerateConfig {
            train_rows,
            test_rows,
            users: 2000,
            items: 3000,
            rows_per_md5: 20.0,
            history_mean: 60.0,
            ..GenerateConfig::default()
        }
    }

    fn gen(out: &Path, params: GenerateConfig, threads: usize, force: bool) -> StageReport {
        run(&GenerateStage { out: out.to_path_buf(), params, threads, force }).unwrap()
    }

    fn files(split: Split) -> [String; 3] {
        [schema::skeleton_file(split), schema::common_features_file(split), schema::truth_file(split)]
    }

    #[test]
    fn generate_same_bytes_for_one_and_two_threads() {
        let (a, b, c) =
            (crate::testutil::temp_dir("gen1"), crate::testutil::temp_dir("gen2"), crate::testutil::temp_dir("gen3"));
        let ra = gen(&a, small(3000, 1500), 1, false);
        let rb = gen(&b, small(3000, 1500), 2, false);
        assert_eq!(ra.counts, rb.counts);
        assert_eq!(ra.counts["train_rows"], 3000);
        assert_eq!(ra.counts["test_rows"], 1500);
        for split in Split::SOURCES {
            for name in files(split) {
                let (x, y) = (fs::read(a.join(&name)).unwrap(), fs::read(b.join(&name)).unwrap());
                assert!(x == y && !x.is_empty(), "{name} differs between 1 and 2 threads");
            }
        }
        assert!(gen(&b, small(3000, 1500), 2, false).up_to_date);
        let forced = gen(&b, small(3000, 1500), 3, true);
        assert!(!forced.up_to_date);
        assert_eq!(
            fs::read(a.join(schema::skeleton_file(Split::Train))).unwrap(),
            fs::read(b.join(schema::skeleton_file(Split::Train))).unwrap()
        );
        gen(&c, GenerateConfig { seed: 7, ..small(3000, 1500) }, 2, false);
        assert_ne!(
            fs::read(a.join(schema::skeleton_file(Split::Train))).unwrap(),
            fs::read(c.join(schema::skeleton_file(Split::Train))).unwrap()
        );
        // no temporaries left behind (the output lock file `.esmm.lock` stays)
        assert!(fs::read_dir(&b).unwrap().all(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            !name.starts_with('.') || name == crate::lock::DIR_LOCK
        }));
    }

    #[test]
    fn generate_rejects_bad_config_without_panicking() {
        let d = crate::testutil::temp_dir("genbad");
        for params in
            [GenerateConfig { ctr: 0.0, ..small(10, 10) }, GenerateConfig { items: u64::MAX, ..small(10, 10) }]
        {
            assert!(run(&GenerateStage { out: d.clone(), params, threads: 1, force: false }).is_err());
        }
    }

    /// Parses a feature list, checking the separators; returns (field index, id, value).
    fn features(list: &str, side: Side) -> Vec<(usize, u64, f64)> {
        list.split('\x01')
            .map(|f| {
                let (field, rest) = f.split_once('\x02').unwrap_or_else(|| panic!("no \\x02 in {f:?}"));
                let (id, value) = rest.split_once('\x03').unwrap_or_else(|| panic!("no \\x03 in {f:?}"));
                let fi = field_index(field.as_bytes()).unwrap_or_else(|| panic!("field {field}"));
                assert_eq!(FIELDS[fi].side, side, "field {field} on the wrong side");
                let value: f64 = value.parse().unwrap();
                assert!(value > 0.0 && (FIELDS[fi].weighted || value == 1.0), "{f:?}");
                (fi, id.parse().unwrap(), value)
            })
            .collect()
    }

    fn is_md5(s: &str) -> bool {
        s.len() == 16 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    /// Checks one split's three files; returns its md5 set.
    fn check_split(dir: &Path, split: Split) -> HashSet<String> {
        let [sk, co, tr] = files(split).map(|n| fs::read_to_string(dir.join(n)).unwrap());
        let mut order = Vec::new();
        let mut rows = Vec::new();
        for (i, line) in sk.lines().enumerate() {
            let cols: Vec<&str> = line.split(',').collect();
            assert_eq!(cols.len(), 6, "{line:?}");
            assert_eq!(cols[0].parse::<u64>().unwrap(), i as u64 + 1);
            assert!(["0", "1"].contains(&cols[1]) && ["0", "1"].contains(&cols[2]));
            assert!(is_md5(cols[3]), "{}", cols[3]);
            let feats = features(cols[5], Side::Item);
            assert_eq!(cols[4].parse::<usize>().unwrap(), feats.len());
            if order.last() != Some(&cols[3]) {
                order.push(cols[3]);
            }
            rows.push((cols[1], cols[2]));
        }
        let runs = order.len();
        let md5s: HashSet<String> = order.iter().map(|s| s.to_string()).collect();
        assert_eq!(md5s.len(), runs, "an md5 appears in two runs");
        let mut common = Vec::new();
        for line in co.lines() {
            let cols: Vec<&str> = line.split(',').collect();
            assert_eq!(cols.len(), 3);
            assert!(is_md5(cols[0]));
            let feats = features(cols[2], Side::User);
            assert_eq!(cols[1].parse::<usize>().unwrap(), feats.len());
            assert!(feats.iter().filter(|f| f.0 == 0).count() <= 1);
            common.push(cols[0]);
        }
        assert_eq!(common, order, "common lines must follow md5 first appearance");
        let mut lines = tr.lines();
        assert_eq!(lines.next(), Some(schema::truth_header().as_str()));
        let truth: Vec<&str> = lines.collect();
        assert_eq!(truth.len(), rows.len());
        for (i, (line, (click, buy))) in truth.iter().zip(&rows).enumerate() {
            let cols: Vec<&str> = line.split(',').collect();
            assert_eq!(cols.len(), 10);
            assert_eq!((cols[0].parse::<u64>().unwrap(), cols[1], cols[2]), (i as u64 + 1, *click, *buy));
            for p in &cols[3..9] {
                let p: f64 = p.parse().unwrap();
                assert!(p > 0.0 && p < 1.0);
            }
            // buy_if_clicked: the observed buy wherever there was a click
            assert!(["0", "1"].contains(&cols[9]));
            if *click == "1" {
                assert_eq!(cols[9], *buy, "line {}", i + 2);
            }
        }
        md5s
    }

    #[test]
    fn generate_writes_the_raw_format() {
        let d = crate::testutil::temp_dir("genfmt");
        let report = gen(&d, small(3000, 1500), 2, false);
        let train = check_split(&d, Split::Train);
        let test = check_split(&d, Split::Test);
        assert!(train.is_disjoint(&test), "md5 shared by train and test");
        assert_eq!(report.counts["train_md5s"], train.len() as u64);
        assert_eq!(report.counts["test_md5s"], test.len() as u64);
        assert!(crate::manifest::read(&d).unwrap().is_some());
    }

    #[test]
    fn generate_handles_degenerate_worlds() {
        let d = crate::testutil::temp_dir("gentiny");
        let params = GenerateConfig { users: 1, items: 1, rows_per_md5: 1.0, history_mean: 0.0, ..small(300, 200) };
        let r = gen(&d, params, 2, false);
        assert_eq!((r.counts["train_md5s"], r.counts["test_md5s"]), (300, 200));
        check_split(&d, Split::Train);
        check_split(&d, Split::Test);
        let params = GenerateConfig { ctr: 0.9, cvr: 0.001, history_mean: 3000.0, ..small(500, 0) };
        let r = gen(&d, params, 1, false);
        assert!(r.counts["train_clicks"] > 400);
        check_split(&d, Split::Train);
        assert_eq!(fs::read_to_string(d.join(schema::truth_file(Split::Test))).unwrap().lines().count(), 1);
    }

    #[test]
    fn generate_hits_target_rates_and_plants_selection_bias() {
        let d = crate::testutil::temp_dir("genrates");
        let params = GenerateConfig { train_rows: 200_000, test_rows: 0, ..GenerateConfig::default() };
        let r = gen(&d, params.clone(), 2, false);
        let c = &r.counts;
        let rows = c["train_rows"] as f64;
        let ctr = c["train_clicks"] as f64 / rows;
        let cvr = (c["train_buys"] - c["click0_buy1_rows"]) as f64 / c["train_clicks"] as f64;
        let no_uid = c["train_md5s_without_user_id"] as f64 / c["train_md5s"] as f64;
        let sk_feats = c["train_skeleton_features"] as f64 / rows;
        let co_feats = c["train_common_features"] as f64 / c["train_md5s"] as f64;
        let rows_per_md5 = rows / c["train_md5s"] as f64;
        eprintln!("ctr {ctr:.4} cvr {cvr:.4} no_uid {no_uid:.3} skeleton feats {sk_feats:.1} common feats {co_feats:.0} rows/md5 {rows_per_md5:.1}");
        assert!((ctr / params.ctr - 1.0).abs() < 0.15, "ctr {ctr}");
        assert!((cvr / params.cvr - 1.0).abs() < 0.35, "cvr {cvr}");
        assert!((0.10..0.18).contains(&no_uid), "{no_uid}");
        assert!((9.0..17.0).contains(&sk_feats), "{sk_feats}");
        assert!((co_feats / (params.history_mean + 9.0) - 1.0).abs() < 0.3, "{co_feats}");
        assert!((rows_per_md5 / params.rows_per_md5 - 1.0).abs() < 0.3, "{rows_per_md5}");

        // selection bias: the clicked population converts worse than the entire space would
        let (mean_all, mean_clicked, mean_p_click) = planted_means(&d);
        eprintln!("mean p_buy|click: all {mean_all:.4} clicked {mean_clicked:.4}; mean p_click {mean_p_click:.4}");
        assert!(mean_all > 1.2 * mean_clicked, "no selection bias: {mean_all} vs {mean_clicked}");
        assert!((mean_p_click / ctr - 1.0).abs() < 0.1);
        // generate.selection_bias: 3x the clickbait's pull on the buy logit widens the drift
        let strong = crate::testutil::temp_dir("genbias");
        gen(&strong, GenerateConfig { selection_bias: 3.0, ..params }, 2, false);
        let (all3, clicked3, _) = planted_means(&strong);
        eprintln!("selection_bias 3: all {all3:.4} clicked {clicked3:.4}");
        assert!(all3 / clicked3 > 1.1 * (mean_all / mean_clicked), "{all3} / {clicked3}");
    }

    /// Over the train truth of `dir`: mean planted p(buy | click) over every row and over the
    /// clicked rows, and the mean planted p(click).
    fn planted_means(dir: &Path) -> (f64, f64, f64) {
        let truth = fs::read_to_string(dir.join(schema::truth_file(Split::Train))).unwrap();
        let (mut all, mut clicked, mut n_clicked, mut p_click_sum, mut rows) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for line in truth.lines().skip(1) {
            let cols: Vec<&str> = line.split(',').collect();
            let (pc, pv): (f64, f64) = (cols[3].parse().unwrap(), cols[4].parse().unwrap());
            all += pv;
            p_click_sum += pc;
            rows += 1.0;
            if cols[1] == "1" {
                clicked += pv;
                n_clicked += 1.0;
            }
        }
        (all / rows, clicked / n_clicked, p_click_sum / rows)
    }
}
