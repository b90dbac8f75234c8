//! Analytics over a run directory's outputs: the SQL table convention shared by polars SQL
//! (`esmm sql`) and DuckDB, and the evaluation report (`esmm report`) with its PNG figures.
//!
//! Plotting is self-contained (a small canvas, a 5×7 bitmap font and a PNG encoder), so the
//! report needs no plotting crate, no system fonts and no display.

pub mod comparison;
pub mod curves;
pub mod figures;
pub mod font;
pub mod inputs;
pub mod plot;
pub mod png;
pub mod report;
pub mod sql;
pub mod tables;
