//! Raw and Azure fixed VHD output, judged by qemu-img.

mod common;
use common::convert::*;
use common::*;

#[test]
fn raw_with_holes_to_azure_vhd_matches_qemu() {
    if !require(&["qemu-img"]) {
        return;
    }
    let d = tempdir();
    let src = holes_raw(d.path(), "in.raw", 30_000_000);
    let guard = InputGuard::new(&src);
    let out = d.path().join("out.vhd");
    convert_ok(&src, &out, "azure-vhd", &[]);
    guard.check();
    let v = qemu_info(&out, "vpc");
    assert_eq!(v["virtual-size"].as_u64(), Some(29 << 20));
    assert_eq!(std::fs::metadata(&out).unwrap().len(), (29 << 20) + 512);
    // The rounded-up tail reads as zeros: compare says identical (size warning only).
    assert!(qemu_compare(&src, "raw", &out, "vpc"));
    assert!(
        allocated(&out) < 4 << 20,
        "output is not sparse: {}",
        allocated(&out)
    );
    let first = sha256_file(&out);
    let out2 = d.path().join("out2.vhd");
    convert_ok(&src, &out2, "azure-vhd", &[]);
    assert_eq!(first, sha256_file(&out2), "two runs differ");
}

#[test]
fn digest_is_computed_while_writing() {
    let d = tempdir();
    let src = holes_raw(d.path(), "in.raw", 5 << 20);
    let out = d.path().join("out.vhd");
    let j = onramp_ok(&[
        "convert",
        s(&src),
        s(&out),
        "--to",
        "azure-vhd",
        "--digest",
        "sha256",
        "--digest",
        "md5",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    assert_eq!(v["digests"]["sha256"].as_str().unwrap(), sha256_file(&out));
    assert_eq!(v["digests"]["md5"].as_str().unwrap().len(), 32);
}

#[test]
fn existing_output_is_refused_without_force() {
    let d = tempdir();
    let src = holes_raw(d.path(), "in.raw", 2 << 20);
    let out = d.path().join("out.raw");
    std::fs::write(&out, b"keep me").unwrap();
    let o = onramp(&["convert", s(&src), s(&out), "--to", "raw"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
    convert_ok(&src, &out, "raw", &["--force"]);
    assert_eq!(sha256_file(&out), sha256_file(&src));
    // No temporary files left behind.
    let left: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("onramp-tmp"))
        .collect();
    assert!(left.is_empty());
}

#[test]
fn compare_agrees_with_qemu() {
    if !require(&["qemu-img"]) {
        return;
    }
    let d = tempdir();
    let a = holes_raw(d.path(), "a.raw", 3 << 20);
    let b = d.path().join("b.raw");
    std::fs::copy(&a, &b).unwrap();
    assert!(qemu_compare(&a, "raw", &b, "raw"));
    assert_eq!(onramp(&["compare", s(&a), s(&b)]).status.code(), Some(0));
    use std::os::unix::fs::FileExt;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&b)
        .unwrap()
        .write_all_at(b"X", 2_000_000)
        .unwrap();
    assert!(!qemu_compare(&a, "raw", &b, "raw"));
    let o = onramp(&["compare", s(&a), s(&b)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("2000000"));
}

#[test]
fn ext4_disk_to_azure_vhd() {
    if !require(&["qemu-img", "mkfs.ext4", "sfdisk"]) {
        return;
    }
    let d = tempdir();
    let disk = make_ext4_disk(d.path(), "demo", 64);
    let out = d.path().join("demo.vhd");
    convert_ok(&disk, &out, "azure-vhd", &["--size", "100M"]);
    let v = qemu_info(&out, "vpc");
    assert_eq!(v["virtual-size"].as_u64(), Some(100 << 20));
    assert!(qemu_compare(&disk, "raw", &out, "vpc"));
}

#[test]
fn conformance_raw_and_vhd() {
    let d = tempdir();
    let src = holes_raw(d.path(), "in.raw", 3 << 20);
    let r = onramp::source::raw::RawReader::open(&src).unwrap();
    onramp::block::conformance::check(&r, &src).unwrap();
    let out = d.path().join("out.vhd");
    convert_ok(&src, &out, "azure-vhd", &[]);
    let v = onramp::source::vhd::VhdReader::open(&out).unwrap();
    onramp::block::conformance::check(&v, &src).unwrap();
}
