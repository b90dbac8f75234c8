//! Parquet writers for the contract tables: snappy, plain encoding, sized row groups, written
//! under a temporary name and renamed when closed (see [`crate::manifest::AtomicFile`]).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::manifest::AtomicFile;

/// A Parquet file being written; invisible under its final name until [`close`](Self::close).
pub struct ParquetOut {
    writer: ArrowWriter<AtomicFile>,
    rows: u64,
    path: PathBuf,
}

impl ParquetOut {
    pub fn create(path: &Path, schema: SchemaRef, row_group_rows: usize) -> Result<Self> {
        let file = AtomicFile::create(path)?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_dictionary_enabled(false)
            .set_max_row_group_row_count(Some(row_group_rows.max(1)))
            .set_created_by(format!("esmm {}", env!("CARGO_PKG_VERSION")))
            .build();
        let writer = ArrowWriter::try_new(file, schema, Some(props))
            .with_context(|| format!("creating Parquet writer for {}", path.display()))?;
        Ok(Self { writer, rows: 0, path: path.to_path_buf() })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows() as u64;
        self.writer.write(batch).with_context(|| format!("writing {}", self.path.display()))
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Writes the footer and renames the file into place; returns the row count.
    pub fn close(self) -> Result<u64> {
        let file = self.writer.into_inner().with_context(|| format!("finishing {}", self.path.display()))?;
        let dest = file.dest().display().to_string();
        file.commit().with_context(|| format!("committing {dest}"))?;
        Ok(self.rows)
    }
}
