//! Property test of the spec parser and normaliser, bounded so it runs in
//! every `cargo test` (the fuzz target in provisioner/fuzz goes further):
//! fixture specs with random structural mutations (a value replaced by an
//! awkward one, a key dropped or renamed) and random byte edits never make
//! `normalize_str` panic; a spec it accepts is a fixed point, reads into the
//! model, plans, and resolves on several disk sizes inside the disk.
//! `PROPTEST_CASES=N` runs more.

mod common;

use lab_disko::{plan, Devices};
use proptest::prelude::*;
use serde_json::{json, Value};

fn seeds() -> Vec<Value> {
    common::fixture_names().iter().map(|n| common::read_json(&format!("{n}.input.json"))).collect()
}

fn awkward(i: usize) -> Value {
    let pool = [
        json!("100%"),
        json!("-0"),
        json!("+1G"),
        json!("0"),
        json!("1M"),
        json!("99999999999999999999T"),
        json!("18446744073709551615s"),
        json!("-18446744073709551615"),
        json!(""),
        json!("EF00"),
        json!("zzzz"),
        json!("gpt"),
        json!("table"),
        json!("msdos"),
        json!("luks"),
        json!("filesystem"),
        json!("/"),
        json!("relative"),
        json!("/dev/sda"),
        json!("ä".repeat(40)),
        json!(-1),
        json!(0),
        json!(i64::MAX),
        json!(1.5),
        json!(null),
        json!(true),
        json!([]),
        json!(["x"]),
        json!({}),
        json!({"type": "gpt"}),
        json!({"type": "filesystem", "format": "ext4"}),
    ];
    pool[i % pool.len()].clone()
}

/// Every path (list of keys/indices) in the tree, root first.
fn paths(v: &Value, here: &mut Vec<Value>, out: &mut Vec<Vec<Value>>) {
    out.push(here.clone());
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                here.push(Value::String(k.clone()));
                paths(c, here, out);
                here.pop();
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                here.push(json!(i));
                paths(c, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

fn at<'a>(v: &'a mut Value, path: &[Value]) -> Option<&'a mut Value> {
    let mut cur = v;
    for seg in path {
        cur = match seg {
            Value::String(k) => cur.as_object_mut()?.get_mut(k)?,
            Value::Number(i) => cur.as_array_mut()?.get_mut(i.as_u64()? as usize)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn mutate(v: &mut Value, op: u8, pick: usize, arg: usize) {
    let mut all = Vec::new();
    paths(v, &mut Vec::new(), &mut all);
    let path = all[pick % all.len()].clone();
    match op % 4 {
        0 => {
            if let Some(x) = at(v, &path) {
                *x = awkward(arg);
            }
        }
        1 | 2 => {
            // Drop or rename the key at `path` (or one inside it).
            let (parent, last) = match path.split_last() {
                Some((Value::String(k), parent)) => (parent.to_vec(), k.clone()),
                _ => return,
            };
            if let Some(Value::Object(m)) = at(v, &parent) {
                if let Some(old) = m.remove(&last) {
                    if op % 4 == 2 {
                        let names = [
                            "type",
                            "size",
                            "content",
                            "partitions",
                            "name",
                            "device",
                            "start",
                            "end",
                            "subvolumes",
                            "100%",
                            "/",
                            "_x",
                        ];
                        m.insert(names[arg % names.len()].to_string(), old);
                    }
                }
            }
        }
        _ => {
            // Copy one subtree over another (deep nesting, odd places).
            let src = all[arg % all.len()].clone();
            let copied = at(v, &src).map(|x| x.clone());
            if let (Some(c), Some(x)) = (copied, at(v, &path)) {
                *x = c;
            }
        }
    }
}

fn check(text: &str) {
    let Ok(normalized) = lab_disko::normalize_str(text) else {
        return;
    };
    assert_eq!(
        lab_disko::normalize(&normalized).as_ref(),
        Ok(&normalized),
        "not a fixed point: {text}"
    );
    let devices: Devices =
        serde_json::from_value(normalized).expect("a normalised spec reads into the model");
    let Ok(steps) = plan::plan(&devices) else {
        return;
    };
    for step in &steps {
        if let plan::Step::Partition { table, .. } = step {
            for (ss, sectors) in [(512u64, 2048u64), (512, 8 << 20), (4096, 1 << 20)] {
                if let Ok(parts) = plan::resolve_table(table, ss, sectors, &[]) {
                    for p in &parts {
                        assert!(
                            p.first <= p.last && p.last < sectors,
                            "{text}: partition {} at {}..{} of {sectors}",
                            p.number,
                            p.first,
                            p.last
                        );
                    }
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_specs_never_panic(seed in any::<usize>(), ops in prop::collection::vec((any::<u8>(), any::<usize>(), any::<usize>()), 1..6)) {
        let all = seeds();
        let mut v = all[seed % all.len()].clone();
        for (op, pick, arg) in ops {
            mutate(&mut v, op, pick, arg);
        }
        check(&v.to_string());
    }

    #[test]
    fn byte_edits_never_panic(seed in any::<usize>(), edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let all = seeds();
        let mut bytes = all[seed % all.len()].to_string().into_bytes();
        for (pos, b) in edits {
            let i = pos % bytes.len();
            bytes[i] = b;
        }
        if let Ok(text) = std::str::from_utf8(&bytes) {
            check(text);
        }
    }
}
