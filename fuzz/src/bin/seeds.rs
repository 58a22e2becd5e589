//! Writes each target's seeds into `DIR/<target>/seed-<n>`: `arbor-fuzz-seeds DIR [TARGET]`.
//! `fuzz/run.sh` runs it for a target whose corpus folder is missing.

use std::path::Path;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(dir) = args.next() else {
        eprintln!("usage: arbor-fuzz-seeds DIR [TARGET]");
        std::process::exit(2);
    };
    let only = args.next();
    for target in arbor_fuzz::TARGETS.iter().filter(|t| only.as_deref().is_none_or(|o| o == t.name)) {
        let folder = Path::new(&dir).join(target.name);
        std::fs::create_dir_all(&folder).expect("create the corpus folder");
        for (n, seed) in (target.seeds)().iter().enumerate() {
            std::fs::write(folder.join(format!("seed-{n}")), seed).expect("write a seed");
        }
    }
}
