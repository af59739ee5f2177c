//! ARCHITECTURE.md's module rules, checked on the source: a module's SQL names only its own
//! schema, and each migration touches one schema.

use std::path::Path;

use crate::helpers::repo_root;

const SCHEMAS: &[&str] = &["identity", "communications", "fulfillment", "apalis"];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn schemas_named(text: &str) -> Vec<&'static str> {
    SCHEMAS
        .iter()
        .copied()
        .filter(|schema| {
            let lower = text.to_lowercase();
            lower.contains(&format!("{schema}."))
                && lower.match_indices(&format!("{schema}.")).any(|(i, _)| {
                    i == 0 || !lower.as_bytes()[i - 1].is_ascii_alphanumeric() && lower.as_bytes()[i - 1] != b'_'
                })
                || lower.contains(&format!("schema if not exists {schema}"))
        })
        .collect()
}

#[test]
fn module_sql_names_only_the_module_schema() {
    for (krate, own) in [("identity", "identity"), ("communications", "communications"), ("fulfillment", "fulfillment")]
    {
        let mut files = Vec::new();
        rust_files(&repo_root().join("crates").join(krate).join("src"), &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let foreign: Vec<_> = schemas_named(&text).into_iter().filter(|schema| *schema != own).collect();
            assert!(foreign.is_empty(), "{} names schema(s) {foreign:?}", file.display());
        }
    }
}

#[test]
fn each_migration_touches_one_schema() {
    for entry in std::fs::read_dir(repo_root().join("migrations")).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let schemas = schemas_named(&text);
        assert_eq!(schemas.len(), 1, "{} touches {schemas:?}", entry.path().display());
    }
}
