#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::as_conversions,
    clippy::expect_used
)]

use super::writer::{build, KeySpec};
use super::*;

pub(crate) fn sample() -> KeySpec {
    let mut r = KeySpec::new("ROOT");
    r.set("ControlSet001\\Services\\RdAgent", Value::dword("Start", 2))
        .set(
            "ControlSet001\\Services\\RdAgent",
            Value::expand_sz("ImagePath", "%SystemRoot%\\x.exe"),
        )
        .set(
            "ControlSet001\\Services\\RdAgent",
            Value::sz("DisplayName", "Remote Desktop Agent"),
        )
        .set("Types", Value::multi_sz("Multi", &["a", "bé", "ccc"]))
        .set("Types", Value::dword_be("BE", 0x0102_0304))
        .set("Types", Value::qword("Q", 0x1122_3344_5566_7788))
        .set("Types", Value::binary("Bin", &[1, 2, 3, 4, 5, 6, 7]))
        .set("Types", Value::raw("None", types::REG_NONE, vec![9, 8]))
        .set("Types", Value::raw("Empty", types::REG_BINARY, vec![]))
        .set("Types", Value::raw("Odd", 0x1234, vec![1, 2, 3, 4, 5]))
        .set("Types", Value::sz("", "default"))
        .set(
            "Types",
            Value::binary(
                "Big",
                &(0..40_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>(),
            ),
        )
        .set("Types", Value::binary("Edge", &vec![7u8; MAX_DIRECT_DATA]))
        .set("Ünïcode Kéy", Value::sz("Ünïcode välue", "ωmega"));
    let many = r.key("Many");
    for i in 0..700 {
        many.key(&format!("Sub{i:04}"));
    }
    r
}

#[test]
fn round_trip() {
    let spec = sample();
    let bytes = build(&spec, "SYSTEM").unwrap();
    let h = Hive::parse(&bytes).unwrap();
    assert!(!h.pending_log());
    assert_eq!(h.base_block().file_name, "SYSTEM");
    let k = h
        .open_key("controlset001\\SERVICES\\rdagent")
        .unwrap()
        .unwrap();
    assert_eq!(k.name().unwrap(), "RdAgent");
    assert_eq!(
        k.value("start").unwrap().unwrap().decode(),
        ValueData::Dword(2)
    );
    assert_eq!(
        k.value("ImagePath").unwrap().unwrap().decode(),
        ValueData::ExpandString("%SystemRoot%\\x.exe".into())
    );
    let t = h.open_key("Types").unwrap().unwrap();
    let want = &spec
        .subkeys
        .iter()
        .find(|k| k.name == "Types")
        .unwrap()
        .values;
    assert_eq!(&t.values().unwrap(), want);
    assert_eq!(
        t.value("Multi").unwrap().unwrap().decode(),
        ValueData::MultiString(vec!["a".into(), "bé".into(), "ccc".into()])
    );
    assert_eq!(
        t.value("BE").unwrap().unwrap().decode(),
        ValueData::DwordBigEndian(0x0102_0304)
    );
    assert_eq!(
        t.value("Q").unwrap().unwrap().as_u64(),
        Some(0x1122_3344_5566_7788)
    );
    let u = h.open_key("ünïcode kéy").unwrap().unwrap();
    assert_eq!(
        u.value("Ünïcode välue")
            .unwrap()
            .unwrap()
            .as_string()
            .unwrap(),
        "ωmega"
    );
    let many = h.open_key("Many").unwrap().unwrap();
    let names: Vec<String> = many
        .subkeys()
        .unwrap()
        .iter()
        .map(|k| k.name().unwrap())
        .collect();
    assert_eq!(names.len(), 700);
    assert_eq!(names[0], "Sub0000");
    assert_eq!(names[699], "Sub0699");
    assert!(h.open_key("Many\\Sub0650").unwrap().is_some());
    assert!(h.open_key("Many\\Nope").unwrap().is_none());
}

#[test]
fn checksum_and_pending_log() {
    let mut bytes = build(&sample(), "X").unwrap();
    bytes[508] ^= 1;
    let e = Hive::parse(&bytes).unwrap_err();
    assert!(e.message().contains("checksum"), "{e}");
    bytes[508] ^= 1;
    bytes[4] = 2;
    let c = checksum(&bytes);
    bytes[508..512].copy_from_slice(&c.to_le_bytes());
    assert!(Hive::parse(&bytes).unwrap().pending_log());
}

/// Walk everything reachable; errors are fine, panics are not.
fn walk(h: &Hive<'_>) -> usize {
    let mut n = 0;
    let mut todo = match h.root() {
        Ok(r) => vec![(r, 0)],
        Err(_) => return 0,
    };
    while let Some((k, d)) = todo.pop() {
        n += 1;
        if n > 10_000 || d > 40 {
            break;
        }
        let _ = k.name();
        let _ = k.class_name();
        let _ = k.values();
        if let Ok(s) = k.subkeys() {
            todo.extend(s.into_iter().map(|c| (c, d + 1)));
        }
    }
    n
}

#[test]
fn mutations_do_not_panic() {
    let bytes = build(&sample(), "X").unwrap();
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..1000 {
        let mut m = bytes.clone();
        let flips = 1 + next() % 4;
        for _ in 0..flips {
            let pos = if i % 2 == 0 {
                (4096 + next() % 8192) as usize
            } else {
                (next() % m.len() as u64) as usize
            };
            m[pos] = next() as u8;
        }
        // Keep the checksum right so the walk gets past the base block.
        let c = checksum(&m);
        m[508..512].copy_from_slice(&c.to_le_bytes());
        if let Ok(h) = Hive::parse(&m) {
            walk(&h);
        }
    }
}

#[test]
fn ri_recursion_is_bounded() {
    // Build a hive, then make a key's subkey list an ri pointing at itself.
    let mut r = KeySpec::new("ROOT");
    r.key("A");
    r.key("B");
    let mut bytes = build(&r, "X").unwrap();
    let h = Hive::parse(&bytes).unwrap();
    let root = h.root().unwrap();
    let list = u32_at(h.cell(root.offset(), "x").unwrap(), nk::SUBKEY_LIST).unwrap();
    let at = BASE_BLOCK_SIZE + list as usize + 4;
    bytes[at..at + 2].copy_from_slice(b"ri");
    bytes[at + 2..at + 4].copy_from_slice(&1u16.to_le_bytes());
    bytes[at + 4..at + 8].copy_from_slice(&list.to_le_bytes());
    let h = Hive::parse(&bytes).unwrap();
    let e = h.root().unwrap().subkeys().unwrap_err();
    assert!(e.message().contains("nesting"), "{e}");
}

/// Offsets of interesting cells in a tiny hive: (bytes, root nk offset, subkey list offset).
fn tiny() -> (Vec<u8>, u32, u32, u32) {
    let mut r = KeySpec::new("ROOT");
    r.set("A", Value::dword("v", 1))
        .set("B", Value::sz("s", "x"));
    let bytes = build(&r, "X").unwrap();
    let h = Hive::parse(&bytes).unwrap();
    let root = h.root().unwrap();
    let nkc = h.cell(root.offset(), "x").unwrap();
    let list = u32_at(nkc, nk::SUBKEY_LIST).unwrap();
    let a = h.open_key("A").unwrap().unwrap();
    let vlist = u32_at(h.cell(a.offset(), "x").unwrap(), nk::VALUE_LIST).unwrap();
    (bytes.clone(), root.offset(), list, vlist)
}

fn fix_checksum(b: &mut [u8]) {
    let c = checksum(b);
    b[508..512].copy_from_slice(&c.to_le_bytes());
}

fn abs(off: u32) -> usize {
    BASE_BLOCK_SIZE + off as usize
}

#[test]
fn targeted_corruptions_name_structure_field_and_offset() {
    let (base, root, list, vlist) = tiny();

    // A cell whose size runs past its hive bin.
    let mut b = base.clone();
    b[abs(list)..abs(list) + 4].copy_from_slice(&(-8192i32).to_le_bytes());
    let h = Hive::parse(&b).unwrap();
    let e = h.root().unwrap().subkeys().unwrap_err();
    assert!(e.message().contains("subkey list cell field size"), "{e}");
    assert!(
        e.message().contains(&format!("at byte {}", abs(list))),
        "{e}"
    );

    // A free (positive size) cell referenced as a key.
    let mut b = base.clone();
    b[abs(root)..abs(root) + 4].copy_from_slice(&96i32.to_le_bytes());
    fix_checksum(&mut b);
    let e = Hive::parse(&b).unwrap_err();
    assert!(e.message().contains("allocated cell"), "{e}");

    // A list count larger than its cell.
    let mut b = base.clone();
    b[abs(list) + 6..abs(list) + 8].copy_from_slice(&5000u16.to_le_bytes());
    let h = Hive::parse(&b).unwrap();
    let e = h.root().unwrap().subkeys().unwrap_err();
    assert!(e.message().contains("number of elements"), "{e}");

    // nk subkey count disagreeing with its list.
    let mut b = base.clone();
    let at = abs(root) + 4 + nk::SUBKEYS;
    b[at..at + 4].copy_from_slice(&3u32.to_le_bytes());
    let h = Hive::parse(&b).unwrap();
    let e = h.root().unwrap().subkeys().unwrap_err();
    assert!(e.message().contains("number of subkeys"), "{e}");

    // An offset outside the hive bins.
    let mut b = base.clone();
    let at = abs(root) + 4 + nk::SUBKEY_LIST;
    b[at..at + 4].copy_from_slice(&0x7000_0000u32.to_le_bytes());
    let h = Hive::parse(&b).unwrap();
    let e = h.root().unwrap().subkeys().unwrap_err();
    assert!(e.message().contains("field offset"), "{e}");

    // A value list pointing into the middle of a cell (misaligned).
    let mut b = base.clone();
    b[abs(vlist) + 4..abs(vlist) + 8].copy_from_slice(&(vlist + 2).to_le_bytes());
    let h = Hive::parse(&b).unwrap();
    assert!(h.open_key("A").unwrap().unwrap().values().is_err());

    // Base block: checksum, signature, hive bins data size, hbin signature.
    let mut b = base.clone();
    b[509] ^= 0x10;
    let e = Hive::parse(&b).unwrap_err();
    assert!(
        e.message()
            .contains("base block field checksum at byte 508"),
        "{e}"
    );
    let mut b = base.clone();
    b[40..44].copy_from_slice(&0x10_0000u32.to_le_bytes());
    fix_checksum(&mut b);
    let e = Hive::parse(&b).unwrap_err();
    assert!(e.message().contains("hive bins data size"), "{e}");
    let mut b = base.clone();
    b[4096] = b'X';
    let e = Hive::parse(&b).unwrap_err();
    assert!(
        e.message()
            .contains("hive bin header field signature at byte 4096"),
        "{e}"
    );
    let mut b = base.clone();
    b[4096 + 8..4096 + 12].copy_from_slice(&100u32.to_le_bytes());
    let e = Hive::parse(&b).unwrap_err();
    assert!(e.message().contains("hive bin header field size"), "{e}");
    assert!(Hive::parse(&base[..4000]).is_err());
}
