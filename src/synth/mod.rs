//! Placeholder: the planted model behind `generate` (being written).
