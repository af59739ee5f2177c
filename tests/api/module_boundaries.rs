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

/// The contents of the string literals in Rust source (where SQL lives), leaving out code and
/// comments, so a variable such as `identity.name` is not mistaken for a schema reference.
fn string_literals(source: &str) -> String {
    let bytes = source.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'/' if bytes.get(i + 1) == Some(&b'/') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'\'' if bytes.get(i + 2) == Some(&b'\'') => i += 3,
            b'r' if bytes.get(i + 1) == Some(&b'#') || bytes.get(i + 1) == Some(&b'"') => {
                let hashes = bytes[i + 1..].iter().take_while(|b| **b == b'#').count();
                if bytes.get(i + 1 + hashes) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let start = i + 2 + hashes;
                let closing = format!("\"{}", "#".repeat(hashes));
                let end = source[start..].find(&closing).map_or(bytes.len(), |offset| start + offset);
                out.push_str(&source[start..end]);
                out.push('\n');
                i = end + closing.len();
            }
            b'"' => {
                let mut j = i + 1;
                while j < bytes.len() && bytes[j] != b'"' {
                    j += if bytes[j] == b'\\' { 2 } else { 1 };
                }
                out.push_str(&source[i + 1..j.min(bytes.len())]);
                out.push('\n');
                i = j + 1;
            }
            _ => i += 1,
        }
    }
    out
}

#[test]
fn the_literal_scanner_sees_sql_but_not_code() {
    let source = "let x = identity.name; // fulfillment.x\nsqlx::query!(r#\"SELECT 1 FROM communications.t\"#); let s = \"a \\\" fulfillment.y\";";
    let literals = string_literals(source);
    assert!(literals.contains("communications.t") && literals.contains("fulfillment.y"), "{literals}");
    assert!(!literals.contains("identity.name") && !literals.contains("fulfillment.x"), "{literals}");
}

#[test]
fn module_sql_names_only_the_module_schema() {
    for (krate, own) in [("identity", "identity"), ("communications", "communications"), ("fulfillment", "fulfillment")]
    {
        let mut files = Vec::new();
        rust_files(&repo_root().join("crates").join(krate).join("src"), &mut files);
        for file in files {
            let text = string_literals(&std::fs::read_to_string(&file).unwrap());
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
