//! `onramp validate`: one fixture per disk rule violating exactly that rule,
//! a clean image passing all, and the report formats parsed by real parsers.

mod common;
use common::convert::*;
use common::*;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

fn validate_json(img: &Path, extra: &[&str]) -> (i32, serde_json::Value) {
    let mut args = vec!["validate", s(img), "--format", "json"];
    args.extend_from_slice(extra);
    let o = onramp(&args);
    let v = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("bad json ({e}): {}", String::from_utf8_lossy(&o.stderr)));
    (o.status.code().unwrap_or(-1), v)
}

fn failed(v: &serde_json::Value) -> Vec<String> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["status"] == "fail")
        .map(|f| f["rule"].as_str().unwrap().to_string())
        .collect()
}

fn good_vhd(dir: &Path, name: &str, size: u64) -> PathBuf {
    let raw = dir.join(format!("{name}.raw"));
    make_raw_with_holes(&raw, size);
    let vhd = dir.join(format!("{name}.vhd"));
    onramp_ok(&["convert", s(&raw), s(&vhd), "--to", "azure-vhd", "-q"]);
    vhd
}

fn patch(p: &Path, off_from_end: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
    let len = f.metadata().unwrap().len();
    f.write_all_at(bytes, len - off_from_end).unwrap();
}

#[test]
fn clean_image_passes_every_disk_rule() {
    let d = tempdir();
    let vhd = good_vhd(d.path(), "good", 30 << 20);
    let (code, v) = validate_json(&vhd, &[]);
    assert_eq!(code, 0);
    assert!(failed(&v).is_empty());
    assert_eq!(v["summary"]["errors"], 0);
}

#[test]
fn each_disk_rule_has_a_violating_fixture() {
    let d = tempdir();
    let cases: Vec<(&str, PathBuf, Vec<&str>)> = vec![
        (
            "azure.disk.vhd-cookie",
            {
                let p = good_vhd(d.path(), "cookie", 21 << 20);
                patch(&p, 512, b"XXXXXXXX");
                p
            },
            vec![],
        ),
        (
            "azure.disk.footer-checksum",
            {
                let p = good_vhd(d.path(), "sum", 21 << 20);
                patch(&p, 512 - 100, b"\x01"); // a reserved byte, not the checksum
                p
            },
            vec![],
        ),
        (
            "azure.disk.file-size",
            {
                let p = good_vhd(d.path(), "len", 21 << 20);
                let f = std::fs::read(&p).unwrap();
                let foot = f[f.len() - 512..].to_vec();
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(&p)
                    .unwrap()
                    .write_all_at(&foot, f.len() as u64)
                    .unwrap();
                p
            },
            vec![],
        ),
        (
            "azure.disk.min-size",
            good_vhd(d.path(), "small", 10 << 20),
            vec![],
        ),
        (
            "azure.disk.max-size",
            {
                let raw = d.path().join("huge.raw");
                std::fs::File::create(&raw)
                    .unwrap()
                    .set_len(3 << 40)
                    .unwrap();
                let p = d.path().join("huge.vhd");
                onramp_ok(&["convert", s(&raw), s(&p), "--to", "azure-vhd", "-q"]);
                p
            },
            vec!["--generation", "1"],
        ),
        (
            "gce.disk.size-gib",
            holes_raw(d.path(), "g.raw", 1536 << 20),
            vec!["--profile", "gce"],
        ),
    ];
    for (rule, img, extra) in cases {
        let (code, v) = validate_json(&img, &extra);
        assert_eq!(failed(&v), vec![rule.to_string()], "{rule}: {v:#}");
        assert_eq!(code, 1, "{rule}");
    }
}

#[test]
fn dynamic_vhd_fails_fixed_rule_from_the_footer() {
    if !require(&["qemu-img"]) {
        return;
    }
    let d = tempdir();
    let raw = holes_raw(d.path(), "a.raw", 32 << 20);
    let dynv = d.path().join("dyn.vhd");
    qemu_from_raw(&raw, &dynv, "vpc", "subformat=dynamic,force_size=on");
    let (code, v) = validate_json(&dynv, &[]);
    assert_eq!(code, 1);
    assert!(
        failed(&v).contains(&"azure.disk.fixed".to_string()),
        "{v:#}"
    );
}

#[test]
fn qemu_vhd_without_force_size_fails_alignment_then_passes_after_convert() {
    if !require(&["qemu-img"]) {
        return;
    }
    let d = tempdir();
    let raw = holes_raw(d.path(), "a.raw", 30_000_000);
    let q = d.path().join("q.vhd");
    qemu_from_raw(&raw, &q, "vpc", "subformat=fixed");
    let (code, v) = validate_json(&q, &[]);
    assert_eq!(code, 1);
    assert_eq!(failed(&v), vec!["azure.disk.size-mib-aligned".to_string()]);
    let fixed = d.path().join("fixed.vhd");
    onramp_ok(&["convert", s(&q), s(&fixed), "--to", "azure-vhd", "-q"]);
    let (code, v) = validate_json(&fixed, &[]);
    assert_eq!(code, 0, "{v:#}");
    // A waiver turns the failure into a recorded exception.
    let (code, v) = validate_json(
        &q,
        &["--waive", "azure.disk.size-mib-aligned=reviewed by ops"],
    );
    assert_eq!(code, 0);
    assert_eq!(v["summary"]["waived"], 1);
    // An unknown rule cannot be waived.
    let o = onramp(&["validate", s(&q), "--waive", "azure.nope=x"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn junit_and_sarif_parse_with_real_parsers() {
    if !require(&["python3"]) {
        return;
    }
    let d = tempdir();
    let vhd = good_vhd(d.path(), "small", 10 << 20);
    let junit = d.path().join("r.xml");
    let o = onramp(&[
        "validate",
        s(&vhd),
        "--format",
        "junit",
        "--report",
        s(&junit),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let py = "import sys, xml.etree.ElementTree as ET\nr = ET.parse(sys.argv[1]).getroot()\ncases = r.findall('.//testcase')\nfails = [c.get('name') for c in cases if c.find('failure') is not None]\nprint(len(cases), ','.join(fails))\n";
    let out = run("python3", &["-c", py, s(&junit)]);
    assert_eq!(out.trim(), "10 azure.disk.min-size");
    let o = onramp(&["validate", s(&vhd), "--format", "sarif"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["runs"][0]["results"][0]["ruleId"], "azure.disk.min-size");
}

#[test]
fn docs_rules_md_matches_the_rule_table() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/rules.md"))
        .unwrap();
    assert_eq!(
        doc,
        onramp::validate::rules_markdown(),
        "regenerate: onramp validate --list-rules > docs/rules.md"
    );
}
