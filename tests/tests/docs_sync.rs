//! The docs describe the code that runs: docs/shutdown.md embeds the transition table generated
//! from `arbor_core::shutdown::TRANSITIONS`, byte for byte. Regenerate it with
//! `ARBOR_BLESS=1 cargo test -p arbor-tests --test docs_sync`.

use arbor_core::shutdown::render_table;

const BEGIN: &str = "<!-- BEGIN transition table (generated; see tests/tests/docs_sync.rs) -->\n";
const END: &str = "<!-- END transition table -->";

#[test]
fn shutdown_doc_embeds_the_transition_table_the_code_uses() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/shutdown.md");
    let doc = std::fs::read_to_string(path).expect("docs/shutdown.md");
    let start = doc.find(BEGIN).expect("begin marker") + BEGIN.len();
    let end = doc.find(END).expect("end marker");
    let table = render_table();
    if std::env::var_os("ARBOR_BLESS").is_some() {
        let fresh = format!("{}{}{}", &doc[..start], table, &doc[end..]);
        std::fs::write(path, fresh).expect("write docs/shutdown.md");
        return;
    }
    assert_eq!(&doc[start..end], table, "docs/shutdown.md is stale: rerun with ARBOR_BLESS=1");
}
