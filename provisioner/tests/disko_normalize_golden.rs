//! Golden test: `disk normalize` of every fixture's raw spec equals disko's
//! own evaluated devices JSON.

mod common;

#[test]
fn normalize_matches_disko_for_every_fixture() {
    let mut failures = Vec::new();
    for name in common::fixture_names() {
        let raw = common::read_json(&format!("{name}.input.json"));
        let want = common::read_json(&format!("{name}.normalized.json"));
        match lab_disko::normalize(&raw) {
            Ok(got) if got == want => {}
            Ok(got) => failures.push(format!("{name}: differs\n{}", diff(&want, &got, ""))),
            Err(e) => failures.push(format!("{name}: error {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn normalize_is_idempotent_on_disko_output() {
    for name in common::fixture_names() {
        let want = common::read_json(&format!("{name}.normalized.json"));
        let got = lab_disko::normalize(&want).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, want, "{name}: normalising disko's own output changed it");
    }
}

/// The differing leaves, one per line, to make a failure readable.
fn diff(want: &serde_json::Value, got: &serde_json::Value, path: &str) -> String {
    use serde_json::Value;
    match (want, got) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter()
                .filter_map(|k| {
                    let d = diff(
                        a.get(k).unwrap_or(&Value::Null),
                        b.get(k).unwrap_or(&Value::Null),
                        &format!("{path}.{k}"),
                    );
                    (!d.is_empty()).then_some(d)
                })
                .collect::<Vec<_>>()
                .join("\n")
        }
        _ if want == got => String::new(),
        _ => format!("  {path}: want {want} got {got}"),
    }
}
