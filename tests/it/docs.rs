//! The documents: every relative link in README.md and docs/*.md resolves, docs/configuration.md
//! lists exactly the configuration keys of the code (one row per full dotted key), and the
//! README's set-up commands are Makefile targets, the test one being what `.ci/run` runs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use esmm::config::preset::Preset;
use esmm::config::{Backbone, CalibrationKind, GenerateConfig, OutputBias, PipelineConfig};

/// The repository file `rel`.
fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// README.md and every docs/*.md, as paths relative to the repository.
fn documents() -> Vec<String> {
    let mut docs: Vec<String> = std::fs::read_dir(repo("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    docs.sort();
    docs.insert(0, "README.md".to_string());
    docs
}

/// The lines of a Markdown text outside fenced code blocks, with their 1-based numbers.
fn prose_lines(text: &str) -> Vec<(usize, &str)> {
    let mut fenced = false;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            out.push((i + 1, line));
        }
    }
    out
}

/// The targets of the inline links and images (`[text](target)`) of one line, outside code spans.
fn link_targets(line: &str) -> Vec<String> {
    let prose = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
    let mut out = Vec::new();
    let mut rest = prose.as_str();
    while let Some(i) = rest.find("](") {
        let after = &rest[i + 2..];
        let Some(end) = after.find(')') else { break };
        out.push(after[..end].split_whitespace().next().unwrap_or("").to_string());
        rest = &after[end..];
    }
    out
}

#[test]
fn the_link_parser_sees_links_and_skips_code() {
    assert_eq!(link_targets("see [a](docs/x.md#y) and ![b](c.png), not `[d](e.md)`"), ["docs/x.md#y", "c.png"]);
    let text = "a [x](one.md)\n```\n[y](two.md)\n```\n[z](three.md)\n";
    let found: Vec<String> = prose_lines(text).into_iter().flat_map(|(_, line)| link_targets(line)).collect();
    assert_eq!(found, ["one.md", "three.md"]);
}

/// Every relative link (a file, possibly with a `#fragment`) of README.md and docs/*.md names an
/// existing file; web links and links within the page are not checked.
#[test]
fn every_relative_link_resolves() {
    let (mut broken, mut checked) = (Vec::new(), 0);
    for doc in documents() {
        let text = read(&doc);
        let dir = repo(&doc).parent().unwrap().to_path_buf();
        for (n, line) in prose_lines(&text) {
            for target in link_targets(line) {
                let external = ["http://", "https://", "mailto:"].iter().any(|p| target.starts_with(*p));
                if target.is_empty() || target.starts_with('#') || external {
                    continue;
                }
                checked += 1;
                let file = target.split('#').next().unwrap_or("");
                if !dir.join(file).exists() {
                    broken.push(format!("{doc}:{n}: {target}"));
                }
            }
        }
    }
    assert!(checked >= 20, "only {checked} relative links in README.md and docs/: is the link parser broken?");
    assert!(broken.is_empty(), "links to files that do not exist (document:line: target):\n{}", broken.join("\n"));
}

/// Keys whose values are maps (field name → number): documented as one key, not descended into.
const MAP_KEYS: [&str; 2] = ["ingest.max_ids_per_field", "model.max_len_per_field"];
/// PaddleRec's `config.yaml` sections, documented in docs/paddlerec.md.
const PADDLEREC_SECTIONS: [&str; 2] = ["hyper_parameters", "runner"];

fn flatten(prefix: &str, value: &serde_json::Value, out: &mut BTreeSet<String>) {
    match value {
        serde_json::Value::Object(map) if !map.is_empty() && !MAP_KEYS.contains(&prefix) => {
            for (k, v) in map {
                if prefix.is_empty() && PADDLEREC_SECTIONS.contains(&k.as_str()) {
                    continue;
                }
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, out);
            }
        }
        _ => {
            out.insert(prefix.to_string());
        }
    }
}

/// Every key of the pipeline file as the code knows it: a configuration with every optional
/// part given (a key left out of serialization at its default is set to another value),
/// serialized, flattened to dotted names.
fn code_keys() -> BTreeSet<String> {
    let mut c = PipelineConfig::default();
    c.generate = Some(GenerateConfig::default());
    c.paths.raw_train = Some("train".into());
    c.paths.raw_test = Some("test".into());
    c.predict.batch_size = Some(1024);
    c.model.preset = Some(Preset::Paddlerec);
    c.model.embedding_learning_rate = Some(0.001);
    c.model.output_bias = OutputBias::BaseRate;
    c.model.backbone = Backbone::Mmoe;
    c.model.mmoe.experts = 4;
    c.model.calibrator_w = 0.5;
    (c.model.ctr_fc_sizes, c.model.cvr_fc_sizes) = (Some(vec![64]), Some(vec![64]));
    c.train.reset_embeddings = true;
    c.train.ensemble_epochs = true;
    c.train.calibration = CalibrationKind::Platt;
    c.train.keep_unclicked = 0.5;
    let mut keys = BTreeSet::new();
    flatten("", &serde_json::to_value(&c).unwrap(), &mut keys);
    keys
}

/// The keys of a configuration table: each row whose first cell starts with a backtick holds
/// exactly one key in backticks; header and separator rows are skipped. Problems (a cell that is
/// not one key, a key with two rows) are returned with their line numbers.
fn table_keys(text: &str, name: &str) -> (BTreeSet<String>, Vec<String>) {
    let (mut keys, mut problems) = (BTreeSet::new(), Vec::new());
    for (n, line) in prose_lines(text) {
        let Some(row) = line.trim().strip_prefix('|') else { continue };
        let first = row.split('|').next().unwrap_or("").trim();
        if !first.starts_with('`') {
            continue;
        }
        match first.strip_prefix('`').and_then(|k| k.strip_suffix('`')) {
            Some(key) if !key.is_empty() && !key.contains('`') && !key.contains(char::is_whitespace) => {
                if !keys.insert(key.to_string()) {
                    problems.push(format!("{name}:{n}: `{key}` has two rows"));
                }
            }
            _ => problems.push(format!("{name}:{n}: the first cell must be one full key in backticks, not {first}")),
        }
    }
    (keys, problems)
}

#[test]
fn the_key_table_parser_takes_one_key_per_row() {
    let (keys, problems) = table_keys("| key | default |\n|---|---|\n| `a.b` | 1 |\n| `c` | `x` |\n", "t.md");
    assert_eq!(keys.into_iter().collect::<Vec<_>>(), ["a.b", "c"]);
    assert!(problems.is_empty(), "{problems:?}");
    let (_, problems) = table_keys("| `a` / `b` | 1 |\n| `c` | 2 |\n| `c` | 3 |\n", "t.md");
    assert_eq!(problems.len(), 2, "{problems:?}");
}

/// docs/configuration.md has a row for every key of the configuration structs and none for a key
/// they do not have.
#[test]
fn configuration_md_lists_exactly_the_config_keys() {
    let code = code_keys();
    let expected =
        ["run_id", "paths.raw_test", "generate.individual_df", "model.kind", "train.seed", "predict.batch_size"];
    for key in expected.into_iter().chain(MAP_KEYS) {
        assert!(code.contains(key), "the serialized configuration lacks {key}: {code:?}");
    }
    assert!(!code.iter().any(|k| k.starts_with("runner") || k.starts_with("hyper_parameters")), "{code:?}");
    let (documented, problems) = table_keys(&read("docs/configuration.md"), "docs/configuration.md");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let missing: Vec<&String> = code.difference(&documented).collect();
    let unknown: Vec<&String> = documented.difference(&code).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "docs/configuration.md: keys of the code without a row: {missing:?}; rows for keys the code does not \
         know: {unknown:?}"
    );
}

/// The README's set-up block shows `make all` and `make test`: both are Makefile targets, `test`
/// runs `cargo test`, and `make test` is what `.ci/run` runs.
#[test]
fn the_readme_set_up_commands_are_what_the_makefile_and_ci_run() {
    let readme = read("README.md");
    let section = readme.split("\n## Set-up").nth(1).expect("README.md: no `## Set-up` section");
    let section = section.split("\n## ").next().unwrap_or("");
    let block = section
        .split("```bash\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("README.md: no ```bash block in the set-up section");
    let commands: Vec<&str> =
        block.lines().map(|l| l.split('#').next().unwrap_or("").trim()).filter(|l| !l.is_empty()).collect();
    assert_eq!(commands, ["make all", "make test"], "README.md's set-up commands");

    let makefile = read("Makefile");
    let targets: BTreeSet<&str> = makefile
        .lines()
        .filter(|l| !l.starts_with('\t') && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .filter(|(target, rest)| !target.contains(char::is_whitespace) && !rest.starts_with('='))
        .map(|(target, _)| target)
        .collect();
    for &c in &commands {
        let target = c.strip_prefix("make ").unwrap_or(c);
        assert!(targets.contains(target), "README.md shows `{c}`, the Makefile has no target {target}: {targets:?}");
    }
    let recipe: Vec<&str> = makefile
        .split("\ntest:")
        .nth(1)
        .expect("Makefile: no test target")
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with('\t'))
        .collect();
    assert!(recipe.iter().any(|l| l.contains("$(CARGO) test")), "Makefile: `make test` runs no cargo test: {recipe:?}");

    let ci = read(".ci/run");
    let ci_make: Vec<&str> = ci.lines().map(str::trim).filter(|l| l.starts_with("make ")).collect();
    assert_eq!(ci_make, ["make test"], ".ci/run's make commands");
    assert!(commands.contains(&"make test"), "README.md's set-up does not show `make test`, which .ci/run runs");
}
