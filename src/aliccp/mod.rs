//! The raw Ali-CCP format: chunked line reading, line tokenizers, and the skip
//! policy for bad input. Turns raw bytes into hashed, columnar rows; knows nothing of Parquet.

pub mod reader;
pub mod skips;
pub mod tokenizer;

pub use reader::{Chunk, ChunkReader};
pub use skips::{Effect, Issue, Notes, Reason};
pub use tokenizer::{
    common_key, parse_common_chunk, parse_common_chunk_where, parse_skeleton_chunk, parse_skeleton_chunk_where,
    skeleton_key, CommonRows, FeatureParser, FieldTable, SampleRows,
};
