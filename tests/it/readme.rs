//! The README's examples, run: what it says a command or a file does, it does.

use std::path::Path;

/// The README, as shipped.
fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README.md")
}

#[test]
fn the_encoding_examples_in_the_readme_are_what_the_scheduler_writes() {
    let text = readme();
    let mut checked = 0;
    // Every "`NAME` becomes `FILE`" and "`NAME` stays readable" of the namespaces section.
    for (i, _) in text.match_indices("` becomes `") {
        let name = text[..i].rsplit('`').next().expect("opening backtick");
        let encoded = text[i + "` becomes `".len()..].split('`').next().expect("closing backtick");
        assert_eq!(vmsh_scheduler::fsname::encode(name), encoded, "README says {name:?} becomes {encoded:?}");
        checked += 1;
    }
    for (i, _) in text.match_indices("` stays readable") {
        let name = text[..i].rsplit('`').next().expect("opening backtick");
        assert_eq!(vmsh_scheduler::fsname::encode(name), name, "README says {name:?} stays readable");
        checked += 1;
    }
    assert!(checked >= 2, "the README's encoding examples were not found");
}
