//! The migration files, as the build script finds them: `V<n>__<name>.sql`
//! in `crates/db/migrations`, in version order.
//!
//! Shared by `build.rs` (which generates [`crate::migrate`]'s list from it,
//! so a new file cannot be forgotten) and this crate's unit tests (so the
//! rules a file name must follow are tested like any other code).

use std::path::{Path, PathBuf};

/// One migration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationFile {
    pub version: i32,
    pub name: String,
    pub path: PathBuf,
}

/// Reads a file name: `Some((version, name))` for `V<n>__<name>.sql`, `None`
/// for a file that is not SQL (a note beside the migrations), an error for
/// an SQL file named otherwise, which would silently never be applied.
pub fn parse_name(file: &str) -> Result<Option<(i32, String)>, String> {
    let Some(stem) = file.strip_suffix(".sql") else {
        return Ok(None);
    };
    let bad = || format!("{file}: a migration is named V<n>__<name>.sql");
    let (version, name) = stem
        .strip_prefix('V')
        .and_then(|rest| rest.split_once("__"))
        .ok_or_else(bad)?;
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let version: i32 = version.parse().map_err(|_| bad())?;
    if version <= 0 {
        return Err(bad());
    }
    // The name is recorded in tenantry_migrations and shown in logs.
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(format!(
            "{file}: a migration's name is lowercase letters, digits and _"
        ));
    }
    Ok(Some((version, name.to_owned())))
}

/// Every migration in `dir`, in version order. Two files with one version
/// are an error: which one applied would depend on the directory order.
pub fn scan(dir: &Path) -> Result<Vec<MigrationFile>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        let file = entry.file_name();
        let file = file
            .to_str()
            .ok_or_else(|| format!("{}: a file name that is not UTF-8", dir.display()))?;
        if let Some((version, name)) = parse_name(file)? {
            files.push(MigrationFile {
                version,
                name,
                path: entry.path(),
            });
        }
    }
    files.sort_by_key(|f| f.version);
    if let Some(pair) = files.windows(2).find(|w| w[0].version == w[1].version) {
        return Err(format!(
            "V{} twice: {} and {}",
            pair[0].version,
            pair[0].path.display(),
            pair[1].path.display()
        ));
    }
    Ok(files)
}

/// The Rust source of the list: `(version, name, sql)` in order, each SQL
/// text embedded with `include_str!` from its absolute path.
pub fn render(files: &[MigrationFile]) -> String {
    let mut out = String::from("&[\n");
    for f in files {
        // Debug formatting of a str is a valid Rust string literal.
        out.push_str(&format!(
            "    ({}, {:?}, include_str!({:?})),\n",
            f.version,
            f.name,
            f.path.display().to_string()
        ));
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_migration_file_name_gives_its_version_and_name() {
        assert_eq!(parse_name("V1__core.sql"), Ok(Some((1, "core".to_owned()))));
        assert_eq!(
            parse_name("V52__isolate.sql"),
            Ok(Some((52, "isolate".to_owned())))
        );
        assert_eq!(
            parse_name("V7__two__parts.sql"),
            Ok(Some((7, "two__parts".to_owned())))
        );
        assert_eq!(parse_name("README.md"), Ok(None));
    }

    #[test]
    fn an_sql_file_named_otherwise_is_refused_not_skipped() {
        for file in [
            "V53_isolate.sql",
            "53__isolate.sql",
            "v53__isolate.sql",
            "V__isolate.sql",
            "V0__zero.sql",
            "V-1__negative.sql",
            "V53__.sql",
            "V53__Isolate.sql",
            "V53__with space.sql",
            "V99999999999__too_big.sql",
        ] {
            assert!(parse_name(file).is_err(), "{file}");
        }
    }

    #[test]
    fn scanning_orders_by_version_and_refuses_a_version_twice() {
        let dir = tempfile::tempdir().expect("tempdir");
        for file in ["V10__ten.sql", "V2__two.sql", "V1__one.sql", "notes.txt"] {
            std::fs::write(dir.path().join(file), "SELECT 1;").expect("write");
        }
        let files = scan(dir.path()).expect("scan");
        let versions: Vec<(i32, &str)> = files.iter().map(|f| (f.version, &*f.name)).collect();
        assert_eq!(versions, [(1, "one"), (2, "two"), (10, "ten")]);

        let rendered = render(&files);
        assert!(rendered.starts_with("&[\n    (1, \"one\", include_str!("));
        assert!(rendered.contains("V10__ten.sql\")),\n]"), "{rendered}");

        std::fs::write(dir.path().join("V2__again.sql"), "SELECT 2;").expect("write");
        let err = scan(dir.path()).expect_err("two V2");
        assert!(err.starts_with("V2 twice"), "{err}");
    }
}
