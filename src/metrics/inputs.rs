//! What the metrics are computed from, read and checked: a predictions Parquet (any file with
//! the predictions contract's columns in castable types — ours, or one written by DuckDB, polars
//! or Spark; `scenario`, `user_key` and `md5` optional, older files lack the last two) and the
//! generator's planted-truth CSV. A value the metrics cannot use (a null, a
//! label other than 0/1, a probability outside [0, 1] or NaN, rows of two splits, a truth line
//! that does not parse or disagrees with the predictions' labels) is an error naming the file,
//! the row or line and the column — never a silently skewed AUC.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{bail, Context, Result};
use polars::prelude as pl;

use super::group::Grouping;
use super::Scored;
use crate::schema::{
    BUY, CLICK, MD5, P_CTR, P_CVR, SAMPLE_ID, SCENARIO, SPLIT, TRUTH_COUNTERFACTUAL, TRUTH_GROUP, TRUTH_HEADER,
    TRUTH_SEMI, USER_KEY,
};

/// A predictions file: one split's rows with labels and the two predicted probabilities.
pub struct Predictions {
    pub split: String,
    pub sample_id: Vec<u64>,
    /// The `scenario` column (raw `301` id) when the file has one: the per-scenario slices.
    pub scenario: Option<Vec<u64>>,
    /// The `user_key` and `md5` columns when the file has them: the groups of group AUC.
    pub user_key: Option<Vec<u64>>,
    pub md5: Option<Vec<u64>>,
    pub scored: Scored,
}

impl Predictions {
    /// The keys of `grouping`, when the file has its column.
    pub fn keys(&self, grouping: Grouping) -> Option<&[u64]> {
        match grouping {
            Grouping::User => self.user_key.as_deref(),
            Grouping::Session => self.md5.as_deref(),
        }
    }
}

/// Columns a predictions file may lack, all read as u64.
const OPTIONAL: [&str; 3] = [SCENARIO, USER_KEY, MD5];

/// Reads and checks a predictions Parquet (columns cast to the contract's types).
pub fn read_predictions(path: &Path) -> Result<Predictions> {
    let file = path.display();
    let p = pl::PlRefPath::try_from_path(path)?;
    let lf = pl::LazyFrame::scan_parquet(p, Default::default())
        .with_context(|| format!("{file}: not a readable Parquet file"))?;
    let present = lf.clone().collect_schema().with_context(|| format!("{file}: reading the Parquet schema"))?;
    let mut wanted = vec![
        (SAMPLE_ID, pl::DataType::UInt64),
        (SPLIT, pl::DataType::String),
        (CLICK, pl::DataType::Int64),
        (BUY, pl::DataType::Int64),
        (P_CTR, pl::DataType::Float64),
        (P_CVR, pl::DataType::Float64),
    ];
    if let Some((missing, _)) = wanted.iter().find(|(c, _)| !present.contains(c)) {
        let have: Vec<&str> = present.iter_names().map(|n| n.as_str()).collect();
        bail!("{file}: no column `{missing}` (the file has: {})", have.join(", "));
    }
    wanted.extend(OPTIONAL.iter().filter(|c| present.contains(c)).map(|&c| (c, pl::DataType::UInt64)));
    let raw = lf
        .select(wanted.iter().map(|(c, _)| pl::col(*c)).collect::<Vec<_>>())
        .collect()
        .with_context(|| format!("reading {file}"))?;
    let mut cast = Vec::with_capacity(wanted.len());
    for (name, dtype) in &wanted {
        let c = raw.column(name)?.strict_cast(dtype).map_err(|e| {
            let why = e.to_string();
            anyhow::anyhow!("{file}: column `{name}` cannot be read as {dtype}: {}", why.lines().next().unwrap_or(""))
        })?;
        cast.push(c);
    }
    let df = pl::DataFrame::new(raw.height(), cast)?;
    if df.height() == 0 {
        bail!("{file}: no rows to evaluate");
    }
    for c in df.columns() {
        if c.null_count() > 0 {
            let first = c.is_null().iter().position(|v| v == Some(true)).unwrap_or(0);
            bail!("{file}: column `{}` has {} null values, the first in row {first}", c.name(), c.null_count());
        }
    }
    let u64s = |name: &str| -> Result<Vec<u64>> { Ok(df.column(name)?.u64()?.into_no_null_iter().collect()) };
    let sample_id = u64s(SAMPLE_ID)?;
    let at = |i: usize| format!("{file}: row {i} (sample_id {})", sample_id[i]);
    let splits = df.column(SPLIT)?.str()?;
    let split = splits.get(0).unwrap_or_default().to_string();
    if let Some(i) = splits.iter().position(|s| s != Some(split.as_str())) {
        bail!("{}: split `{}` after `{split}`: evaluate one split at a time", at(i), splits.get(i).unwrap_or_default());
    }
    let labels = |name: &str| -> Result<Vec<u8>> {
        let v = df.column(name)?.i64()?;
        v.into_no_null_iter()
            .enumerate()
            .map(|(i, y)| match y {
                0 | 1 => Ok(y as u8),
                _ => bail!("{}: `{name}` is {y}, expected 0 or 1", at(i)),
            })
            .collect()
    };
    let probs = |name: &str| -> Result<Vec<f32>> {
        let v = df.column(name)?.f64()?;
        v.into_no_null_iter()
            .enumerate()
            .map(|(i, p)| match p {
                p if (0.0..=1.0).contains(&p) => Ok(p as f32),
                _ => bail!("{}: `{name}` is {p}, expected a probability in [0, 1]", at(i)),
            })
            .collect()
    };
    let (click, buy, p_ctr, p_cvr) = (labels(CLICK)?, labels(BUY)?, probs(P_CTR)?, probs(P_CVR)?);
    let mut scored = Scored::default();
    for i in 0..click.len() {
        scored.push(click[i], buy[i], p_ctr[i], p_cvr[i]);
    }
    let optional = |name: &str| present.contains(name).then(|| u64s(name)).transpose();
    let (scenario, user_key, md5) = (optional(SCENARIO)?, optional(USER_KEY)?, optional(MD5)?);
    Ok(Predictions { split, sample_id, scenario, user_key, md5, scored })
}

/// One line of a truth file: the labels and the planted probabilities.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Truth {
    pub click: bool,
    pub buy: bool,
    pub p_click: f32,
    pub p_buy_given_click: f32,
    /// The semi-oracle's `(p_click, p_buy_given_click)` when the file has [`TRUTH_SEMI`].
    pub semi: Option<(f32, f32)>,
    /// The group oracle's when it also has [`TRUTH_GROUP`].
    pub group: Option<(f32, f32)>,
    /// The counterfactual conversion label when it also has [`TRUTH_COUNTERFACTUAL`].
    pub buy_if_clicked: Option<bool>,
}

/// Reads a `truth_<split>.csv` (header [`TRUTH_HEADER`], optionally followed by [`TRUTH_SEMI`],
/// then [`TRUTH_GROUP`], then [`TRUTH_COUNTERFACTUAL`]; extra columns allowed) by sample id.
pub fn read_truth(path: &Path) -> Result<HashMap<u64, Truth>> {
    let file = path.display();
    let reader = BufReader::new(File::open(path).with_context(|| format!("opening {file}"))?);
    let mut lines = reader.lines();
    // how many of the optional column groups follow the required ones, in order
    let groups = [TRUTH_SEMI, TRUTH_GROUP, TRUTH_COUNTERFACTUAL];
    let optional = match lines.next().transpose().with_context(|| format!("reading {file}"))? {
        Some(h) if h.starts_with(TRUTH_HEADER) => {
            let mut rest = h.trim_end_matches('\r')[TRUTH_HEADER.len()..].to_string();
            groups
                .iter()
                .take_while(|g| match rest.strip_prefix(&format!(",{g}")) {
                    Some(r) if r.is_empty() || r.starts_with(',') => {
                        rest = r.to_string();
                        true
                    }
                    _ => false,
                })
                .count()
        }
        _ => bail!("{file}: expected the header `{TRUTH_HEADER}`"),
    };
    let header = std::iter::once(TRUTH_HEADER).chain(groups[..optional].iter().copied()).collect::<Vec<_>>().join(",");
    let names: Vec<&str> = header.split(',').collect();
    let mut out = HashMap::new();
    for (i, line) in lines.enumerate() {
        let lineno = i + 2;
        let line = line.with_context(|| format!("reading {file}:{lineno}"))?;
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let c: Vec<&str> = line.split(',').collect();
        if c.len() < names.len() {
            bail!("{file}:{lineno}: {} fields, expected at least {} ({header})", c.len(), names.len());
        }
        let bad =
            |k: usize, want: &str| anyhow::anyhow!("{file}:{lineno}: field `{}`: `{}` is not {want}", names[k], c[k]);
        let sid: u64 = c[0].parse().map_err(|_| bad(0, "an unsigned integer"))?;
        let label = |k: usize| match c[k] {
            "0" => Ok(false),
            "1" => Ok(true),
            _ => Err(bad(k, "0 or 1")),
        };
        let prob = |k: usize| match c[k].parse::<f32>() {
            Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
            _ => Err(bad(k, "a probability in [0, 1]")),
        };
        let pair = |k: usize| -> Result<Option<(f32, f32)>> {
            if optional > k {
                Ok(Some((prob(5 + 2 * k)?, prob(6 + 2 * k)?)))
            } else {
                Ok(None)
            }
        };
        let (semi, group) = (pair(0)?, pair(1)?);
        let buy_if_clicked = if optional > 2 { Some(label(9)?) } else { None };
        let t = Truth {
            click: label(1)?,
            buy: label(2)?,
            p_click: prob(3)?,
            p_buy_given_click: prob(4)?,
            semi,
            group,
            buy_if_clicked,
        };
        if out.insert(sid, t).is_some() {
            bail!("{file}:{lineno}: sample_id {sid} appears a second time");
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray, UInt64Array};
    use arrow::datatypes::{Field, Schema};

    use super::*;
    use crate::parquet_out::ParquetOut;
    use crate::testutil::temp_dir;

    /// Predictions as another tool might write them: i64 ids, i32 labels, f64 probabilities,
    /// no `scenario` column; `edit` changes one column before writing.
    fn write(dir: &Path, name: &str, edit: impl FnOnce(&mut Vec<(&'static str, ArrayRef)>)) -> std::path::PathBuf {
        let mut cols: Vec<(&'static str, ArrayRef)> = vec![
            (SAMPLE_ID, Arc::new(Int64Array::from(vec![10, 11, 12, 13]))),
            (SPLIT, Arc::new(StringArray::from(vec!["test"; 4]))),
            (CLICK, Arc::new(Int32Array::from(vec![1, 0, 1, 0]))),
            (BUY, Arc::new(Int32Array::from(vec![1, 0, 0, 0]))),
            (P_CTR, Arc::new(Float64Array::from(vec![0.9, 0.1, 0.6, 0.2]))),
            (P_CVR, Arc::new(Float64Array::from(vec![0.5, 0.0, 1.0, 0.25]))),
        ];
        edit(&mut cols);
        let schema = Arc::new(Schema::new(
            cols.iter().map(|(n, a)| Field::new(*n, a.data_type().clone(), true)).collect::<Vec<_>>(),
        ));
        let path = dir.join(name);
        let mut out = ParquetOut::create(&path, schema.clone(), 16).unwrap();
        out.write(&RecordBatch::try_new(schema, cols.into_iter().map(|c| c.1).collect()).unwrap()).unwrap();
        out.close().unwrap();
        path
    }

    fn set(cols: &mut [(&'static str, ArrayRef)], name: &str, a: ArrayRef) {
        cols.iter_mut().find(|c| c.0 == name).unwrap().1 = a;
    }

    fn err(r: Result<impl Sized>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn predictions_of_other_tools_are_cast_and_bad_values_named() {
        let dir = temp_dir("pred-inputs");
        let p = read_predictions(&write(&dir, "ok.parquet", |_| {})).unwrap();
        assert_eq!((p.split.as_str(), p.sample_id.clone(), p.scenario.is_none()), ("test", vec![10, 11, 12, 13], true));
        assert_eq!(
            (p.scored.click.clone(), p.scored.buy.clone()),
            (vec![true, false, true, false], vec![true, false, false, false])
        );
        assert_eq!(p.scored.p_cvr, vec![0.5, 0.0, 1.0, 0.25]);
        assert!(p.user_key.is_none() && p.keys(Grouping::Session).is_none());
        // the group keys, when there
        let p = read_predictions(&write(&dir, "keys.parquet", |c| {
            c.push((USER_KEY, Arc::new(Int64Array::from(vec![5, 5, 6, 0]))));
            c.push((MD5, Arc::new(UInt64Array::from(vec![1, 2, 2, u64::MAX]))));
        }))
        .unwrap();
        assert_eq!(p.keys(Grouping::User), Some(&[5, 5, 6, 0][..]));
        assert_eq!(p.keys(Grouping::Session), Some(&[1, 2, 2, u64::MAX][..]));

        let cases: Vec<(&str, Box<dyn FnOnce(&mut Vec<(&'static str, ArrayRef)>)>, &str)> = vec![
            (
                "nan",
                Box::new(|c| set(c, P_CTR, Arc::new(Float64Array::from(vec![0.9, f64::NAN, 0.6, 0.2])))),
                "row 1 (sample_id 11): `p_ctr` is NaN",
            ),
            (
                "above1",
                Box::new(|c| set(c, P_CVR, Arc::new(Float64Array::from(vec![0.5, 0.0, 1.5, 0.25])))),
                "row 2 (sample_id 12): `p_cvr` is 1.5",
            ),
            (
                "null",
                Box::new(|c| set(c, P_CVR, Arc::new(Float64Array::from(vec![Some(0.5), None, None, Some(0.1)])))),
                "column `p_cvr` has 2 null values, the first in row 1",
            ),
            (
                "nullkey",
                Box::new(|c| c.push((USER_KEY, Arc::new(Int64Array::from(vec![Some(1), Some(2), None, Some(3)]))))),
                "column `user_key` has 1 null values, the first in row 2",
            ),
            (
                "negkey",
                Box::new(|c| c.push((MD5, Arc::new(Int64Array::from(vec![1, -2, 3, 4]))))),
                "column `md5` cannot be read as u64",
            ),
            (
                "label2",
                Box::new(|c| set(c, BUY, Arc::new(Int32Array::from(vec![1, 0, 0, 2])))),
                "row 3 (sample_id 13): `buy` is 2, expected 0 or 1",
            ),
            (
                "splits",
                Box::new(|c| set(c, SPLIT, Arc::new(StringArray::from(vec!["test", "test", "valid", "test"])))),
                "row 2 (sample_id 12): split `valid` after `test`",
            ),
            (
                "negative",
                Box::new(|c| set(c, SAMPLE_ID, Arc::new(Int64Array::from(vec![10, -1, 12, 13])))),
                "column `sample_id` cannot be read as u64",
            ),
            (
                "text",
                Box::new(|c| set(c, P_CTR, Arc::new(StringArray::from(vec!["a"; 4])))),
                "column `p_ctr` cannot be read as f64",
            ),
            (
                "missing",
                Box::new(|c| c.retain(|c| c.0 != CLICK)),
                "no column `click` (the file has: sample_id, split, buy",
            ),
        ];
        for (name, edit, want) in cases {
            let file = format!("{name}.parquet");
            let e = err(read_predictions(&write(&dir, &file, edit)));
            assert!(e.contains(&file) && e.contains(want), "{name}: {e}");
        }
        let e = err(read_predictions(&write(&dir, "empty.parquet", |c| {
            for (_, a) in c.iter_mut() {
                *a = a.slice(0, 0);
            }
        })));
        assert!(e.contains("empty.parquet: no rows"), "{e}");
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn truth_lines_are_checked_field_by_field() {
        let dir = temp_dir("truth-inputs");
        let file = |name: &str, body: &str| {
            let p = dir.join(name);
            std::fs::write(&p, format!("{TRUTH_HEADER},extra\r\n{body}")).unwrap();
            p
        };
        let t = read_truth(&file("ok.csv", "7,1,0,0.25,0.5,x\r\n8,0,1,1,0\r\n\r\n")).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(
            t[&7],
            Truth {
                click: true,
                buy: false,
                p_click: 0.25,
                p_buy_given_click: 0.5,
                semi: None,
                group: None,
                buy_if_clicked: None
            }
        );
        assert!(t[&8].buy && !t[&8].click);
        // the semi-oracle's columns, when the header names them
        let p = dir.join("semi.csv");
        std::fs::write(&p, format!("{TRUTH_HEADER},{TRUTH_SEMI}\n7,1,0,0.25,0.5,0.2,0.4\n")).unwrap();
        assert_eq!(read_truth(&p).unwrap()[&7].semi, Some((0.2, 0.4)));
        std::fs::write(&p, format!("{TRUTH_HEADER},{TRUTH_SEMI}\n7,1,0,0.25,0.5,0.2\n")).unwrap();
        assert!(err(read_truth(&p)).contains("semi.csv:2: 6 fields, expected at least 7"));
        std::fs::write(&p, format!("{TRUTH_HEADER},{TRUTH_SEMI}\n7,1,0,0.25,0.5,0.2,2\n")).unwrap();
        assert!(err(read_truth(&p)).contains("field `p_buy_given_click_semi`: `2` is not a probability"));
        // the group oracle's after them (and only after them)
        std::fs::write(&p, format!("{TRUTH_HEADER},{TRUTH_SEMI},{TRUTH_GROUP}\n7,1,0,0.25,0.5,0.2,0.4,0.1,0.3\n"))
            .unwrap();
        let t = read_truth(&p).unwrap()[&7];
        assert_eq!((t.semi, t.group), (Some((0.2, 0.4)), Some((0.1, 0.3))));
        std::fs::write(&p, format!("{TRUTH_HEADER},{TRUTH_GROUP}\n7,1,0,0.25,0.5,0.1,0.3\n")).unwrap();
        assert_eq!(read_truth(&p).unwrap()[&7].group, None);
        std::fs::write(&p, format!("{TRUTH_HEADER},{TRUTH_SEMI},{TRUTH_GROUP}\n7,1,0,0.25,0.5,0.2,0.4,0.1\n")).unwrap();
        assert!(err(read_truth(&p)).contains("semi.csv:2: 8 fields, expected at least 9"));
        // the counterfactual label after all four (as generate writes them), a 0 or a 1
        let all = crate::schema::truth_header();
        std::fs::write(&p, format!("{all}\n7,0,0,0.25,0.5,0.2,0.4,0.1,0.3,1\n")).unwrap();
        assert_eq!(read_truth(&p).unwrap()[&7].buy_if_clicked, Some(true));
        std::fs::write(&p, format!("{all}\n7,0,0,0.25,0.5,0.2,0.4,0.1,0.3,0.5\n")).unwrap();
        assert!(err(read_truth(&p)).contains("field `buy_if_clicked`: `0.5` is not 0 or 1"));
        std::fs::write(&p, format!("{TRUTH_HEADER},{TRUTH_SEMI},{TRUTH_COUNTERFACTUAL}\n7,0,0,0.25,0.5,0.2,0.4,1\n"))
            .unwrap();
        assert_eq!(read_truth(&p).unwrap()[&7].buy_if_clicked, None, "only after the group oracle's");
        for (body, want) in [
            ("7,1,0,0.25,0.5\n8,0,0\n", "short.csv:3: 3 fields, expected at least 5"),
            ("7,1,0,0.25,0.5\nx,0,0,0.1,0.1\n", "sid.csv:3: field `sample_id`: `x` is not an unsigned integer"),
            ("7,2,0,0.25,0.5\n", "label.csv:2: field `click`: `2` is not 0 or 1"),
            ("7,1,0,nan,0.5\n", "prob.csv:2: field `p_click`: `nan` is not a probability"),
            ("7,1,0,0.25,-0.5\n", "neg.csv:2: field `p_buy_given_click`: `-0.5` is not a probability"),
            ("7,1,0,0.25,0.5\n7,1,0,0.25,0.5\n", "dup.csv:3: sample_id 7 appears a second time"),
        ] {
            let name = want.split(':').next().unwrap();
            let e = err(read_truth(&file(name, body)));
            assert!(e.contains(want), "{e}");
        }
        std::fs::write(dir.join("nohead.csv"), "7,1,0,0.25,0.5\n").unwrap();
        assert!(err(read_truth(&dir.join("nohead.csv"))).contains("expected the header"));
        std::fs::remove_dir_all(dir).ok();
    }
}
