//! The raw Ali-CCP format (DESIGN §1): chunked line reading, line tokenizers, and the skip
//! policy for bad input. Turns raw bytes into hashed, columnar rows; knows nothing of Parquet.

pub mod reader;
pub mod skips;
pub mod tokenizer;

pub use reader::{Chunk, ChunkReader};
pub use skips::{Effect, Issue, Notes, Reason};
pub use tokenizer::{parse_common_chunk, parse_skeleton_chunk, CommonRows, FeatureParser, FieldTable, SampleRows};
