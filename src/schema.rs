//! The data contract: field list, file and column names, Parquet (arrow) schemas.
//!
//! Every other module takes names from here; no column name is spelled anywhere else.
//! The raw fields and the Parquet tables; docs/data.md's "Data contracts" says the same for users.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

/// Which raw file a field lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// `common_features_*.csv`: user-side features, shared by every sample of one md5.
    User,
    /// `sample_skeleton_*.csv`: item and context features of one impression.
    Item,
}

/// One Ali-CCP feature field.
#[derive(Clone, Copy, Debug)]
pub struct FieldSpec {
    /// The field id as written in the raw files (`101`, `109_14`, ...).
    pub name: &'static str,
    pub side: Side,
    /// Carries log-count values that are kept as a `w_<name>` weight column.
    pub weighted: bool,
}

const fn f(name: &'static str, side: Side, weighted: bool) -> FieldSpec {
    FieldSpec { name, side, weighted }
}

/// The 23 fields, in PaddleRec's order (`models/multitask/esmm`). Field indices below refer to
/// positions in this array.
pub const FIELDS: [FieldSpec; 23] = [
    f("101", Side::User, false),
    f("109_14", Side::User, true),
    f("110_14", Side::User, true),
    f("127_14", Side::User, true),
    f("150_14", Side::User, true),
    f("121", Side::User, false),
    f("122", Side::User, false),
    f("124", Side::User, false),
    f("125", Side::User, false),
    f("126", Side::User, false),
    f("127", Side::User, false),
    f("128", Side::User, false),
    f("129", Side::User, false),
    f("205", Side::Item, false),
    f("206", Side::Item, false),
    f("207", Side::Item, false),
    f("210", Side::Item, false),
    f("216", Side::Item, false),
    f("508", Side::Item, true),
    f("509", Side::Item, true),
    f("702", Side::Item, true),
    f("853", Side::Item, true),
    f("301", Side::Item, false),
];

/// Index of the user id field `101`.
pub const USER_ID_FIELD: usize = 0;
/// Index of the scenario field `301`.
pub const SCENARIO_FIELD: usize = 22;

/// Index into [`FIELDS`] of a raw field id, or `None` for a field outside the contract.
pub fn field_index(name: &[u8]) -> Option<usize> {
    FIELDS.iter().position(|f| f.name.as_bytes() == name)
}

/// Field indices of one side, in [`FIELDS`] order.
pub fn side_fields(side: Side) -> Vec<usize> {
    (0..FIELDS.len()).filter(|&i| FIELDS[i].side == side).collect()
}

/// Column of hashed ids of a field: `f_<name>`, `list<u32>`.
pub fn ids_column(field: usize) -> String {
    format!("f_{}", FIELDS[field].name)
}

/// Column of weights of a weighted field: `w_<name>`, `list<f32>`, parallel to the ids.
pub fn weights_column(field: usize) -> String {
    format!("w_{}", FIELDS[field].name)
}

pub const SAMPLE_ID: &str = "sample_id";
pub const CLICK: &str = "click";
pub const BUY: &str = "buy";
pub const MD5: &str = "md5";
pub const COMMON_ROW: &str = "common_row";
/// Raw (unhashed) id of the sample's first `301` scenario feature, 0 if absent: for slices.
pub const SCENARIO: &str = "scenario";

/// Per-split table files (inside `<ingest or split dir>/<split>/`).
pub const SAMPLES_FILE: &str = "samples.parquet";
pub const COMMON_FILE: &str = "common.parquet";
/// Every stage writes this last, beside its outputs; its presence means "complete".
pub const MANIFEST_FILE: &str = "_manifest.json";
/// Key of the hash-bucket count in the split manifest's counts before the [`DataContract`]
/// (still read, for outputs written then).
pub const HASH_BUCKETS: &str = "hash_buckets";

/// What the bucket ids of every table made from one ingest mean: written by ingest into its
/// manifest (`data`), carried on by split, read by train, checked by predict. A model only
/// scores data hashed the way its training data was.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DataContract {
    /// Raw layout the ids came from (`aliccp` or `paddlerec`).
    pub format: String,
    /// Embedding buckets including the padding bucket 0.
    pub hash_buckets: u64,
    pub hash_seed: u64,
    /// Ids kept per field and row (the first ones), where ingest capped them.
    pub max_ids_per_field: std::collections::BTreeMap<String, usize>,
}

/// Rows per Parquet row group of the common table (its rows hold hundreds of ids each).
pub const COMMON_ROW_GROUP_ROWS: usize = 4096;

/// A split of the source data (raw files come as train and test).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Split {
    Train,
    Valid,
    Test,
}

impl Split {
    pub const SOURCES: [Split; 2] = [Split::Train, Split::Test];
    pub const ALL: [Split; 3] = [Split::Train, Split::Valid, Split::Test];

    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Raw Ali-CCP file names of a source split.
pub fn skeleton_file(split: Split) -> String {
    format!("sample_skeleton_{split}.csv")
}
pub fn common_features_file(split: Split) -> String {
    format!("common_features_{split}.csv")
}
/// Planted ground truth written by `generate`: `sample_id,click,buy,p_click,p_buy_given_click`,
/// then the semi-oracle's two probabilities ([`TRUTH_SEMI`]: without the items' own effects)
/// and the group oracle's ([`TRUTH_GROUP`]: without the users' own effects either), then the
/// counterfactual label [`TRUTH_COUNTERFACTUAL`].
pub fn truth_file(split: Split) -> String {
    format!("truth_{split}.csv")
}
pub const TRUTH_HEADER: &str = "sample_id,click,buy,p_click,p_buy_given_click";
/// Model names `evaluate` gives the planted truth, the semi-oracle and the group oracle in the
/// metrics table.
pub const ORACLE: &str = "oracle";
pub const SEMI_ORACLE: &str = "semi_oracle";
pub const GROUP_ORACLE: &str = "group_oracle";

/// Whether a metrics row's model is one of the planted truths rather than a trained model.
pub fn is_planted(model: &str) -> bool {
    [ORACLE, SEMI_ORACLE, GROUP_ORACLE].contains(&model)
}

/// Optional truth columns after [`TRUTH_HEADER`]: the semi-oracle, each row's probabilities
/// without the item's individual bias, clickbait and latent effects (what no model can learn
/// for items seen a few times): every world tells its learnable ceiling.
pub const TRUTH_SEMI: &str = "p_click_semi,p_buy_given_click_semi";
/// Optional truth columns after [`TRUTH_SEMI`]: the group oracle, each row's probabilities from
/// the group-level effects alone (profile, category, shop, brand, scenario, history matches):
/// neither the item's nor the user's own effects, what a model knows that learns nothing per id.
pub const TRUTH_GROUP: &str = "p_click_group,p_buy_given_click_group";
/// Optional truth column after [`TRUTH_GROUP`]: the counterfactual conversion label, whether the
/// impression would have converted had it been clicked (drawn with the same uniform as `buy`, so
/// it equals `buy` on clicked rows): the label real data lacks on the unclicked space.
pub const TRUTH_COUNTERFACTUAL: &str = "buy_if_clicked";

/// The header `generate` writes: every truth column.
pub fn truth_header() -> String {
    [TRUTH_HEADER, TRUTH_SEMI, TRUTH_GROUP, TRUTH_COUNTERFACTUAL].join(",")
}

fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, false)))
}

fn feature_columns(side: Side) -> Vec<Field> {
    let mut cols = Vec::new();
    for i in side_fields(side) {
        cols.push(Field::new(ids_column(i), list_of(DataType::UInt32), false));
        if FIELDS[i].weighted {
            cols.push(Field::new(weights_column(i), list_of(DataType::Float32), false));
        }
    }
    cols
}

/// The samples table: labels, join key, and the item-side feature lists.
pub fn samples_schema() -> SchemaRef {
    let mut cols = vec![
        Field::new(SAMPLE_ID, DataType::UInt64, false),
        Field::new(CLICK, DataType::UInt8, false),
        Field::new(BUY, DataType::UInt8, false),
        Field::new(MD5, DataType::UInt64, false),
        Field::new(COMMON_ROW, DataType::UInt32, false),
        Field::new(SCENARIO, DataType::UInt64, false),
    ];
    cols.extend(feature_columns(Side::Item));
    Arc::new(Schema::new(cols))
}

/// Predictions written by `predict`: one row per sample of the split, in input order.
pub const SPLIT: &str = "split";
pub const P_CTR: &str = "p_ctr";
pub const P_CVR: &str = "p_cvr";
pub const P_CTCVR: &str = "p_ctcvr";
/// The user a prediction's sample belongs to, for group AUC per user: the hashed bucket of the
/// first `101` id of its common row, 0 when that row has none (bucket 0 is padding, never an
/// id's). A hash, not the raw id: users sharing a bucket are one user here.
pub const USER_KEY: &str = "user_key";

/// The predictions table: labels, the three probabilities, and the keys that slice and group
/// them (`scenario`; [`USER_KEY`] and [`MD5`], the session, for group AUC).
pub fn predictions_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(SAMPLE_ID, DataType::UInt64, false),
        Field::new(SPLIT, DataType::Utf8, false),
        Field::new(CLICK, DataType::UInt8, false),
        Field::new(BUY, DataType::UInt8, false),
        Field::new(P_CTR, DataType::Float32, false),
        Field::new(P_CVR, DataType::Float32, false),
        Field::new(P_CTCVR, DataType::Float32, false),
        Field::new(SCENARIO, DataType::UInt64, false),
        Field::new(USER_KEY, DataType::UInt64, false),
        Field::new(MD5, DataType::UInt64, false),
    ]))
}

/// Model directory files written by `train`.
pub const MODEL_FILE: &str = "model.bin";
pub const CHECKPOINT_FILE: &str = "checkpoint.bin";
pub const EPOCHS_FILE: &str = "epochs.parquet";

/// Long-format metrics written by `evaluate`.
pub const METRICS_FILE: &str = "metrics.parquet";
pub const SUMMARY_FILE: &str = "summary.md";

/// Columns of the metrics table (besides [`SPLIT`]).
pub const RUN_ID: &str = "run_id";
pub const SLICE: &str = "slice";
pub const MODEL: &str = "model";
pub const TASK: &str = "task";
pub const METRIC: &str = "metric";
pub const VALUE: &str = "value";
pub const N: &str = "n";
pub const POSITIVES: &str = "positives";

pub fn metrics_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(RUN_ID, DataType::Utf8, false),
        Field::new(SPLIT, DataType::Utf8, false),
        Field::new(SLICE, DataType::Utf8, false),
        Field::new(MODEL, DataType::Utf8, false),
        Field::new(TASK, DataType::Utf8, false),
        Field::new(METRIC, DataType::Utf8, false),
        Field::new(VALUE, DataType::Float64, true),
        Field::new(N, DataType::UInt64, false),
        Field::new(POSITIVES, DataType::UInt64, false),
    ]))
}

/// Columns of the per-epoch training log.
pub const EPOCH: &str = "epoch";
/// Training steps done at an evaluation, and epochs done (fractional) at it.
pub const STEP: &str = "step";
pub const EPOCH_PROGRESS: &str = "epoch_progress";
pub const TRAIN_LOSS: &str = "train_loss";
pub const VALID_LOSS: &str = "valid_loss";
pub const VALID_AUC_CTR: &str = "valid_auc_ctr";
pub const VALID_AUC_CVR: &str = "valid_auc_cvr";
pub const VALID_AUC_CTCVR: &str = "valid_auc_ctcvr";
/// CTR + CTCVR logloss on valid, from pCTR and pCTCVR: comparable across model kinds.
pub const VALID_ES_LOGLOSS: &str = "valid_es_logloss";

pub fn epochs_schema() -> SchemaRef {
    let f = |n: &str, t: DataType| Field::new(n, t, true);
    Arc::new(Schema::new(vec![
        Field::new(EPOCH, DataType::UInt32, false),
        Field::new(STEP, DataType::UInt64, false),
        Field::new(EPOCH_PROGRESS, DataType::Float64, false),
        f(TRAIN_LOSS, DataType::Float64),
        f(VALID_LOSS, DataType::Float64),
        f(VALID_AUC_CTR, DataType::Float64),
        f(VALID_AUC_CVR, DataType::Float64),
        f(VALID_AUC_CTCVR, DataType::Float64),
        f(VALID_ES_LOGLOSS, DataType::Float64),
        f("seconds", DataType::Float64),
        f("samples_per_second", DataType::Float64),
    ]))
}

/// The common (user-side) table: one row per md5, referenced by `common_row`.
pub fn common_schema() -> SchemaRef {
    let mut cols = vec![Field::new(MD5, DataType::UInt64, false)];
    cols.extend(feature_columns(Side::User));
    Arc::new(Schema::new(cols))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_sides_match_design() {
        assert_eq!(side_fields(Side::User).len(), 13);
        assert_eq!(side_fields(Side::Item).len(), 10);
        assert_eq!(FIELDS[USER_ID_FIELD].name, "101");
        assert_eq!(FIELDS[SCENARIO_FIELD].name, "301");
        assert_eq!(field_index(b"109_14"), Some(1));
        assert_eq!(field_index(b"999"), None);
        assert_eq!(FIELDS.iter().filter(|f| f.weighted).count(), 8);
    }

    #[test]
    fn schemas_have_unique_names() {
        for s in [samples_schema(), common_schema(), predictions_schema()] {
            let mut names: Vec<_> = s.fields().iter().map(|f| f.name().clone()).collect();
            let n = names.len();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), n);
        }
        // 6 key columns + 10 item id lists + 4 weight lists
        assert_eq!(samples_schema().fields().len(), 20);
        // md5 + 13 user id lists + 4 weight lists
        assert_eq!(common_schema().fields().len(), 18);
        // the user id field is the first user-side field: its ids are `CommonTable::fields[0]`
        assert_eq!(side_fields(Side::User)[0], USER_ID_FIELD);
    }
}
