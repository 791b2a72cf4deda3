//! Registry hive editor (issue 11): random edits of fixture hives (ours and
//! one rewritten by hivexsh) checked against a model with hivex and our reader;
//! service injection read back with hivexget; hostile input refused cleanly.

mod common;

use common::winimg::{hivex_values, hivexsh_ls};
use common::*;
use onramp::fs::regf::editor::HiveEditor;
use onramp::fs::regf::windows::{add_service, azure_settings, ServiceSpec};
use onramp::fs::regf::writer::{build, KeySpec};
use onramp::fs::regf::{checksum, fold, Hive, Key, Value, ValueData};
use std::path::Path;
use std::process::Command;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn base_spec() -> KeySpec {
    let mut root = KeySpec::new("ROOT");
    root.set("Sys", Value::sz("Name", "base"));
    root.set("Sys", Value::dword("Start", 2));
    root.key("Grow");
    let big = root.key("Big");
    for i in 0..600 {
        big.subkeys.push(KeySpec::new(&format!("Item{i:04}")));
    }
    root
}

fn random_value(r: &mut Rng, name: &str) -> Value {
    let len = match r.below(10) {
        0 => 16_344 + 1 + r.below(30_000),
        1..=3 => r.below(5),
        _ => r.below(300),
    };
    let text: String = (0..len.min(200))
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    match r.below(6) {
        0 => Value::sz(name, &text),
        1 => Value::expand_sz(name, &format!("%SystemRoot%\\{text}")),
        2 => Value::dword(name, r.next() as u32),
        3 => Value::qword(name, r.next()),
        4 => Value::multi_sz(name, &["one", &format!("x{text}"), "three"]),
        _ => Value::binary(name, &pattern(r.next(), len)),
    }
}

/// Apply `n` random operations to both the editor and the model.
fn random_ops(ed: &mut HiveEditor, model: &mut KeySpec, r: &mut Rng, n: usize) {
    let parents = ["Sys", "Grow", "Big", "Sys\\Deep\\Er", "Grow\\Ключ"];
    for _ in 0..n {
        let p = parents[r.below(parents.len())];
        match r.below(10) {
            0..=3 => {
                let name = if r.below(8) == 0 {
                    String::new()
                } else {
                    format!("v{}", r.below(6))
                };
                let key = if r.below(3) == 0 {
                    format!("{p}\\K{}", r.below(40))
                } else {
                    p.to_string()
                };
                let v = random_value(r, &name);
                ed.set_value_raw(&key, &name, v.ty, &v.data).unwrap();
                model.set(&key, v);
            }
            4..=6 => {
                let key = format!("{p}\\K{}", r.below(400));
                ed.create_key(&key).unwrap();
                model.key(&key);
            }
            7 => {
                let name = format!("v{}", r.below(6));
                let k = model.key(p);
                let i = k.values.iter().position(|v| fold(&v.name) == fold(&name));
                assert_eq!(ed.delete_value(p, &name).unwrap(), i.is_some());
                if let Some(i) = i {
                    k.values.remove(i);
                }
            }
            _ => {
                // Delete a random leaf child of p.
                let k = model.key(p);
                if k.subkeys.is_empty() {
                    continue;
                }
                let i = r.below(k.subkeys.len());
                if !k.subkeys[i].subkeys.is_empty() {
                    continue;
                }
                let path = format!("{p}\\{}", k.subkeys[i].name);
                k.subkeys.remove(i);
                assert!(ed.delete_key(&path).unwrap());
            }
        }
    }
}

// ------------------------------------------------------------ hivex oracle

fn check_tree(hive: &Path, ours: &Hive<'_>, path: &str, spec: &KeySpec, hivex: bool) {
    let key: Key<'_, '_> = if path.is_empty() {
        ours.root().unwrap()
    } else {
        ours.open_key(path)
            .unwrap()
            .unwrap_or_else(|| panic!("we lack {path}"))
    };
    assert_eq!(key.values().unwrap(), spec.values, "our values of {path}");
    let mut want: Vec<String> = spec.subkeys.iter().map(|k| k.name.clone()).collect();
    want.sort_by_key(|n| n.to_uppercase());
    let ours_names: Vec<String> = key
        .subkeys()
        .unwrap()
        .iter()
        .map(|k| k.name().unwrap())
        .collect();
    assert_eq!(ours_names, want, "our subkeys of {path} (sorted)");
    if hivex {
        let mut hx = hivexsh_ls(hive, path);
        hx.sort_by_key(|n| n.to_uppercase());
        assert_eq!(hx, want, "hivex subkeys of {path}");
        let mut got = hivex_values(hive, path);
        assert_eq!(got.len(), spec.values.len(), "hivex value count of {path}");
        for v in &spec.values {
            let i = got
                .iter()
                .position(|g| g.0 == v.name)
                .unwrap_or_else(|| panic!("hivex lacks value {:?} of {path}", v.name));
            let (_, t, d) = got.remove(i);
            assert_eq!(t, v.ty, "type of {path}\\{}", v.name);
            assert!(
                d == v.data,
                "data of {path}\\{}: hivex {} bytes, want {} (first diff at {:?})",
                v.name,
                d.len(),
                v.data.len(),
                d.iter().zip(&v.data).position(|(a, b)| a != b)
            );
        }
    }
    for k in &spec.subkeys {
        let p = if path.is_empty() {
            k.name.clone()
        } else {
            format!("{path}\\{}", k.name)
        };
        let many = spec.subkeys.len() >= 100;
        check_tree(
            hive,
            ours,
            &p,
            k,
            hivex && (!many || k.subkeys.len() + k.values.len() > 0),
        );
    }
}

fn verify(dir: &Path, bytes: &[u8], model: &KeySpec, tag: &str) {
    let h = Hive::parse(bytes).unwrap();
    assert!(!h.pending_log(), "{tag}: sequences equal");
    assert_eq!(h.base_block().checksum, checksum(&bytes[..4096]));
    assert_eq!(bytes.len(), 4096 + h.base_block().hive_bins_size as usize);
    let p = dir.join(format!("{tag}.hive"));
    std::fs::write(&p, bytes).unwrap();
    check_tree(&p, &h, "", model, true);
}

fn hivexsh_rewrite(dir: &Path, bytes: &[u8], model: &mut KeySpec) -> Vec<u8> {
    let p = dir.join("hx.hive");
    std::fs::write(&p, bytes).unwrap();
    let script = "cd \\Sys\nadd FromHivex\ncd FromHivex\nsetval 3\nText\nstring:made by hivex\nNum\ndword:0x1234\nBlob\nhex:3:01,02,03,04,05,06\ncommit\n";
    let mut c = Command::new("hivexsh");
    c.args(["-w", s(&p)]).stdin(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
    }
    assert!(child.wait().unwrap().success(), "hivexsh -w");
    model.set("Sys\\FromHivex", Value::sz("Text", "made by hivex"));
    model.set("Sys\\FromHivex", Value::dword("Num", 0x1234));
    model.set("Sys\\FromHivex", Value::binary("Blob", &[1, 2, 3, 4, 5, 6]));
    let out = std::fs::read(&p).unwrap();
    assert_ne!(out, bytes, "hivexsh rewrote the hive");
    out
}

#[test]
fn random_edits_read_back_by_hivex_and_by_us() {
    if !require(&["hivexget", "hivexsh"]) {
        return;
    }
    let dir = tempdir();
    for (round, through_hivex) in [(0u64, false), (1, true)] {
        let mut model = base_spec();
        let mut bytes = build(&model, "SYSTEM").unwrap();
        if through_hivex {
            bytes = hivexsh_rewrite(dir.path(), &bytes, &mut model);
        }
        let mut r = Rng(0x9E37_79B9_7F4A_7C15 ^ (round + 1));
        for seq in 0..3 {
            let mut ed = HiveEditor::open(bytes).unwrap();
            random_ops(&mut ed, &mut model, &mut r, 120);
            bytes = ed.finish().unwrap();
            verify(dir.path(), &bytes, &model, &format!("r{round}s{seq}"));
        }
    }
}

#[test]
fn lists_grow_past_hundreds_of_subkeys() {
    if !require(&["hivexsh"]) {
        return;
    }
    let dir = tempdir();
    let mut model = base_spec();
    let mut ed = HiveEditor::open(build(&model, "SYSTEM").unwrap()).unwrap();
    for i in (0..200).rev() {
        ed.create_key(&format!("Grow\\Sub{i:03}")).unwrap();
        model.key(&format!("Grow\\Sub{i:03}"));
        ed.create_key(&format!("Big\\Extra{i:03}")).unwrap();
        model.key(&format!("Big\\Extra{i:03}"));
    }
    for i in (0..200).step_by(3) {
        ed.delete_key(&format!("Big\\Item{i:04}")).unwrap();
        let big = model.key("Big");
        big.subkeys.retain(|k| k.name != format!("Item{i:04}"));
    }
    let bytes = ed.finish().unwrap();
    let p = dir.path().join("grow.hive");
    std::fs::write(&p, &bytes).unwrap();
    for key in ["Grow", "Big"] {
        let mut hx = hivexsh_ls(&p, key);
        hx.sort_by_key(|n| n.to_uppercase());
        let mut want: Vec<String> = model
            .key(key)
            .subkeys
            .iter()
            .map(|k| k.name.clone())
            .collect();
        want.sort_by_key(|n| n.to_uppercase());
        assert_eq!(hx, want, "{key}");
    }
    let h = Hive::parse(&bytes).unwrap();
    check_tree(&p, &h, "", &model, false);
    check_sk_refcounts_and_base_block(&bytes);
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Every security cell's reference count equals the number of keys using it;
/// the base block is clean (primary == secondary sequence) with a valid checksum.
fn check_sk_refcounts_and_base_block(bytes: &[u8]) {
    assert_eq!(u32_at(bytes, 4), u32_at(bytes, 8), "sequence numbers");
    assert_eq!(u32_at(bytes, 508), checksum(&bytes[..4096]), "checksum");
    let h = Hive::parse(bytes).unwrap();
    let mut uses: std::collections::BTreeMap<u32, u32> = Default::default();
    let mut stack = vec![h.root().unwrap()];
    while let Some(k) = stack.pop() {
        // nk cell data at 4096 + offset + 4; its security offset at +44.
        let sk = u32_at(bytes, 4096 + k.offset() as usize + 4 + 44);
        *uses.entry(sk).or_default() += 1;
        stack.extend(k.subkeys().unwrap());
    }
    for (sk, n) in uses {
        let cell = 4096 + sk as usize + 4;
        assert_eq!(&bytes[cell..cell + 2], b"sk");
        assert_eq!(u32_at(bytes, cell + 12), n, "refcount of sk {sk:#x}");
    }
}

fn system_spec(select: (u32, u32, u32)) -> KeySpec {
    let mut root = KeySpec::new("ROOT");
    root.set("Select", Value::dword("Current", select.0));
    root.set("Select", Value::dword("Default", select.1));
    root.set("Select", Value::dword("LastKnownGood", select.2));
    root.set("ControlSet001\\Services\\Tcpip", Value::dword("Start", 1));
    root.set("ControlSet002\\Services\\Tcpip", Value::dword("Start", 1));
    root
}

#[test]
fn service_injection_and_azure_settings() {
    if !require(&["hivexget"]) {
        return;
    }
    let dir = tempdir();
    for (select, sets) in [
        ((1, 1, 2), vec!["ControlSet001", "ControlSet002"]),
        ((1, 1, 1), vec!["ControlSet001"]),
    ] {
        let mut ed = HiveEditor::open(build(&system_spec(select), "SYSTEM").unwrap()).unwrap();
        let svc = ServiceSpec {
            name: "RdAgent".into(),
            image_path: "C:\\WindowsAzure\\Packages\\WaAppAgent.exe".into(),
            start: 2,
            service_type: 0x10,
            object_name: Some("LocalSystem".into()),
            display_name: Some("RdAgent".into()),
            depends_on: vec!["RpcSs".into()],
        };
        assert_eq!(add_service(&mut ed, &svc).unwrap(), sets);
        assert_eq!(azure_settings(&mut ed).unwrap(), sets);
        let bytes = ed.finish().unwrap();
        let p = dir.path().join("system");
        std::fs::write(&p, &bytes).unwrap();
        for cs in ["ControlSet001", "ControlSet002"] {
            let get = |k: &str, v: &str| {
                let o = run_output("hivexget", &[s(&p), &format!("{cs}\\{k}"), v]);
                String::from_utf8_lossy(&o.stdout).trim().to_string()
            };
            let injected = sets.contains(&cs);
            let want = |x: &str| {
                if injected {
                    x.to_string()
                } else {
                    String::new()
                }
            };
            assert_eq!(
                get("Services\\RdAgent", "ImagePath"),
                want("C:\\WindowsAzure\\Packages\\WaAppAgent.exe")
            );
            assert_eq!(get("Services\\RdAgent", "Start"), want("2"));
            assert_eq!(get("Services\\RdAgent", "Type"), want("16"));
            assert_eq!(
                get("Control\\Terminal Server", "fDenyTSConnections"),
                want("0")
            );
            assert_eq!(get("Services\\partmgr\\Parameters", "SanPolicy"), want("1"));
            assert_eq!(
                get("Control\\TimeZoneInformation", "RealTimeIsUniversal"),
                want("1")
            );
            assert_eq!(get("Services\\Tcpip", "Start"), "1");
        }
    }
}

#[test]
fn pending_log_refused_and_hostile_input_gives_errors() {
    let good = build(&base_spec(), "SYSTEM").unwrap();
    let mut pending = good.clone();
    pending[8] = pending[8].wrapping_add(1);
    let c = checksum(&pending[..4096]);
    pending[508..512].copy_from_slice(&c.to_le_bytes());
    let e = HiveEditor::open(pending).unwrap_err().to_string();
    assert!(e.contains("pending transaction log"), "{e}");
    let mut r = Rng(12345);
    for _ in 0..300 {
        let mut b = good.clone();
        for _ in 0..1 + r.below(4) {
            let at = 4096 + r.below(b.len() - 4096);
            b[at] = r.next() as u8;
        }
        if let Ok(mut ed) = HiveEditor::open(b) {
            let _ = ed.set_value("Sys\\New", "x", &ValueData::Dword(1));
            let _ = ed.create_key("Big\\Item0300x");
            let _ = ed.delete_key("Big\\Item0001");
            let _ = ed.delete_value("Sys", "Name");
            if let Ok(out) = ed.finish() {
                Hive::parse(&out).unwrap();
            }
        }
    }
}
