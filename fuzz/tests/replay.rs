//! Every input the fuzzers keep, replayed through the same functions they run (docs/fuzzing.md):
//! the crashes once found (`fuzz/regressions/<target>/`, each fixed in the crate at fault), the
//! minimised corpora (`fuzz/corpus/<target>/`) and the seeds. A regression that comes back fails
//! here, under `cargo test`, without a fuzzer.

use std::path::{Path, PathBuf};

use arbor_fuzz::{Target, TARGETS};

fn inputs(folder: &str, target: &Target) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(folder).join(target.name);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    files.sort();
    files.into_iter().filter(|p| p.is_file()).map(|p| (p.clone(), std::fs::read(&p).expect("read"))).collect()
}

fn replay(folder: &str) -> usize {
    let mut n = 0;
    for target in TARGETS {
        for (path, data) in inputs(folder, target) {
            eprintln!("{}: {}", target.name, path.display());
            (target.run)(&data);
            n += 1;
        }
    }
    n
}

#[test]
fn every_crash_once_found_stays_fixed() {
    replay("regressions");
}

#[test]
fn every_kept_corpus_input_still_passes() {
    replay("corpus");
}

#[test]
fn every_seed_passes() {
    for target in TARGETS {
        for seed in (target.seeds)() {
            (target.run)(&seed);
        }
    }
}
