//! Runs every shipped scenario file under `policies/tests/`: the example policies' tests.

use gatehouse_policy::scenario;
use std::path::Path;

#[test]
fn shipped_scenarios_pass() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/tests");
    let results = scenario::run_path(&dir).unwrap();
    let mut failures = Vec::new();
    let mut cases = 0;
    for result in &results {
        for case in &result.cases {
            cases += 1;
            if !case.passed {
                failures.push(format!(
                    "{}: {}: {}",
                    result.file,
                    case.name,
                    case.failure.clone().unwrap_or_default()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every shipped file must have been run.
    let shipped = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "toml")
        })
        .count();
    assert_eq!(
        shipped, 10,
        "a scenario file was added or removed: update this count"
    );
    assert_eq!(results.len(), shipped, "{results:?}");
    assert!(cases >= 40, "only {cases} cases ran");
}

#[test]
fn a_wrong_expectation_fails_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    let text = std::fs::read_to_string(shipped.join("tests/port-forwarding.toml"))
        .unwrap()
        .replace(
            "../base.cedar",
            &shipped.join("base.cedar").display().to_string(),
        )
        .replace(
            "../examples/port-forwarding-admins.cedar",
            &shipped
                .join("examples/port-forwarding-admins.cedar")
                .display()
                .to_string(),
        )
        .replacen("decision = \"allow\"", "decision = \"deny\"", 1);
    let file = dir.path().join("wrong.toml");
    std::fs::write(&file, text).unwrap();
    let results = scenario::run_path(&file).unwrap();
    let failed: Vec<_> = results[0].cases.iter().filter(|c| !c.passed).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(
        failed[0].failure.as_deref(),
        Some("expected deny, got allow"),
        "{failed:?}"
    );
}
