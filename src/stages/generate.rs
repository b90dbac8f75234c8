//! Placeholder for the generate stage (being written).
use std::path::PathBuf;
pub struct GenerateStage {
    pub out: PathBuf,
    pub params: crate::config::GenerateConfig,
    pub threads: usize,
    pub force: bool,
}
pub fn run(_cfg: &GenerateStage) -> anyhow::Result<super::StageReport> {
    anyhow::bail!("generate: not built yet")
}
