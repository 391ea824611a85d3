//! Generates the list of embedded migrations from the files in
//! `migrations/`, so adding `V<n>__<name>.sql` is all a migration takes and
//! none can be left out of the binary.

#[path = "src/migration_files.rs"]
mod migration_files;

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let dir = manifest.join("migrations");
    // A directory makes cargo rerun this when any file in it is added,
    // removed or changed.
    println!("cargo:rerun-if-changed={}", dir.display());
    println!("cargo:rerun-if-changed=src/migration_files.rs");
    let files = migration_files::scan(&dir).unwrap_or_else(|e| panic!("migrations: {e}"));
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo")).join("migrations.rs");
    std::fs::write(&out, migration_files::render(&files))
        .unwrap_or_else(|e| panic!("{}: {e}", out.display()));
}
