//! Dynamic VHD, VHDX and qcow2 output, judged by qemu-img: compare against
//! the source, check (qcow2, vhdx), info's virtual size, determinism, the
//! streaming digest, and sparseness.

mod common;
use common::convert::*;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// A target as onramp spells it, the extra flags, and qemu's format name.
struct Target {
    to: &'static str,
    extra: &'static [&'static str],
    qemu: &'static str,
    ext: &'static str,
}

const TARGETS: &[Target] = &[
    Target {
        to: "vhd-dynamic",
        extra: &[],
        qemu: "vpc",
        ext: "vhd",
    },
    Target {
        to: "vhdx",
        extra: &[],
        qemu: "vhdx",
        ext: "vhdx",
    },
    Target {
        to: "vhdx",
        extra: &["--block-size", "1M"],
        qemu: "vhdx",
        ext: "1m.vhdx",
    },
    Target {
        to: "qcow2",
        extra: &[],
        qemu: "qcow2",
        ext: "qcow2",
    },
    Target {
        to: "qcow2",
        extra: &["--compress", "deflate"],
        qemu: "qcow2",
        ext: "deflate.qcow2",
    },
    Target {
        to: "qcow2",
        extra: &["--compress", "zstd"],
        qemu: "qcow2",
        ext: "zstd.qcow2",
    },
];

fn convert(src: &Path, out: &Path, t: &Target, size: Option<&str>) -> Value {
    let mut args = convert_args(src, out, t.to, &["--json"]);
    args.extend_from_slice(t.extra);
    args.extend_from_slice(&["--digest", "sha256"]);
    if let Some(sz) = size {
        args.extend_from_slice(&["--size", sz]);
    }
    serde_json::from_str(&onramp_ok(&args)).expect("convert --json")
}

fn qemu_json(args: &[&str]) -> Value {
    serde_json::from_str(&qemu_img(args)).expect("qemu-img json")
}

/// Every target from `src`, optionally grown to `size` (expected virtual
/// size `expect`), judged by qemu-img.
fn check_all(dir: &Path, src: &Path, size: Option<&str>, expect: u64) {
    let guard = InputGuard::new(src);
    for t in TARGETS {
        let out = dir.join(format!("out.{}", t.ext));
        let v = convert(src, &out, t, size);
        guard.check();
        let what = format!("{} {:?} size {size:?}", t.to, t.extra);
        assert_eq!(
            v["digests"]["sha256"].as_str(),
            Some(sha256_file(&out).as_str()),
            "{what}: streamed digest differs from the file's"
        );
        assert_eq!(v["virtual_size"].as_u64(), Some(expect), "{what}");
        let info = qemu_info(&out, t.qemu);
        assert_eq!(
            info["virtual-size"].as_u64(),
            Some(expect),
            "{what}: {info}"
        );
        assert!(
            qemu_compare(src, "raw", &out, t.qemu),
            "{what}: qemu-img compare says the output differs from the source"
        );
        if t.qemu != "vpc" {
            // qemu's vpc driver has no check; qcow2 and vhdx do.
            qemu_check_ok(&out, t.qemu);
        }
        // Zero blocks are not written: the output holds little beyond the source's data.
        assert!(
            allocated(&out) <= allocated(src) + (2 << 20),
            "{what}: output not sparse: {} allocated vs source {}",
            allocated(&out),
            allocated(src)
        );
        // Deterministic: a second run gives the same bytes.
        let again = dir.join(format!("again.{}", t.ext));
        convert(src, &again, t, size);
        assert_eq!(
            sha256_file(&out),
            sha256_file(&again),
            "{what}: two runs differ"
        );
        std::fs::remove_file(&again).ok();
        std::fs::remove_file(&out).ok();
    }
}

fn holes_fixture(dir: &Path) -> PathBuf {
    holes_raw(dir, "holes.raw", 30_000_000)
}

#[test]
fn raw_with_holes_non_mib_size() {
    if !require(&["qemu-img"]) {
        return;
    }
    let d = tempdir();
    let src = holes_fixture(d.path());
    check_all(d.path(), &src, None, 30_000_128);
}

#[test]
fn raw_with_holes_grown() {
    if !require(&["qemu-img"]) {
        return;
    }
    let d = tempdir();
    let src = holes_fixture(d.path());
    // 100 MiB + 1000 bytes: grown past several VHD/VHDX blocks and an L2 range
    // of 1 MiB-block VHDX, and not a whole sector.
    check_all(d.path(), &src, Some("104858600"), 104_858_624);
}

#[test]
fn ext4_disk() {
    if !require(&["qemu-img", "mkfs.ext4", "sfdisk"]) {
        return;
    }
    let d = tempdir();
    let src = make_ext4_disk(d.path(), "disk", 40);
    check_all(d.path(), &src, None, 40 << 20);
}

#[test]
fn ext4_disk_grown() {
    if !require(&["qemu-img", "mkfs.ext4", "sfdisk"]) {
        return;
    }
    let d = tempdir();
    let src = make_ext4_disk(d.path(), "disk", 24);
    check_all(d.path(), &src, Some("1G"), 1 << 30);
}

/// A raw file whose bytes are all written (no host holes) but mostly zero:
/// the map says data everywhere, yet zero blocks must not be allocated.
#[test]
fn written_zeros_are_not_allocated() {
    if !require(&["qemu-img"]) {
        return;
    }
    let d = tempdir();
    let src = d.path().join("zeros.raw");
    let mut bytes = vec![0u8; 16 << 20];
    bytes[..4096].copy_from_slice(&pattern(5, 4096));
    std::fs::write(&src, &bytes).unwrap();

    let vhd = d.path().join("z.vhd");
    convert_ok(&src, &vhd, "vhd-dynamic", &[]);
    assert!(qemu_compare(&src, "raw", &vhd, "vpc"));
    // Footer, header, BAT, one block (bitmap + 2 MiB), footer.
    let len = std::fs::metadata(&vhd).unwrap().len();
    assert!(
        len < (2 << 20) + 8192,
        "vhd holds more than one block: {len}"
    );

    let vhdx = d.path().join("z.vhdx");
    convert_ok(&src, &vhdx, "vhdx", &["--block-size", "1M"]);
    assert!(qemu_compare(&src, "raw", &vhdx, "vhdx"));
    // 4 MiB of header, log, metadata and BAT, then one 1 MiB block.
    assert_eq!(std::fs::metadata(&vhdx).unwrap().len(), 5 << 20);

    for extra in [&[][..], &["--compress", "deflate"][..]] {
        let q = d.path().join("z.qcow2");
        let mut args = vec!["--force"];
        args.extend_from_slice(extra);
        convert_ok(&src, &q, "qcow2", &args);
        assert!(qemu_compare(&src, "raw", &q, "qcow2"));
        let c = qemu_json(&["check", "--output=json", s(&q)]);
        assert_eq!(c["allocated-clusters"].as_u64(), Some(1), "{c}");
    }
}

#[test]
fn compressed_qcow2_is_smaller_and_readable() {
    if !require(&["qemu-img"]) {
        return;
    }
    let d = tempdir();
    let src = d.path().join("text.raw");
    // Compressible but not trivial: repeated text with a changing counter.
    let mut bytes = Vec::new();
    let mut i = 0u64;
    while bytes.len() < 8 << 20 {
        bytes.extend_from_slice(format!("line {i} of a fairly compressible disk\n").as_bytes());
        i += 1;
    }
    bytes.truncate(8 << 20);
    std::fs::write(&src, &bytes).unwrap();
    for (c, ctype) in [("deflate", "zlib"), ("zstd", "zstd")] {
        let q = d.path().join(format!("{c}.qcow2"));
        convert_ok(&src, &q, "qcow2", &["--compress", c]);
        let len = std::fs::metadata(&q).unwrap().len();
        assert!(len < 2 << 20, "{c}: {len} bytes is not compressed");
        assert!(qemu_compare(&src, "raw", &q, "qcow2"), "{c}");
        let chk = qemu_json(&["check", "--output=json", s(&q)]);
        assert_eq!(chk["compressed-clusters"].as_u64(), Some(128), "{c}: {chk}");
        let info = qemu_json(&["info", "--output=json", s(&q)]);
        assert_eq!(
            info["format-specific"]["data"]["compression-type"].as_str(),
            Some(ctype),
            "{info}"
        );
        // qemu can convert it back byte for byte.
        let back = d.path().join(format!("{c}.back.raw"));
        qemu_raw(&q, "qcow2", &back);
        assert_eq!(sha256_file(&back), sha256_file(&src));
    }
}

#[test]
fn bad_options_are_usage_errors() {
    let d = tempdir();
    let src = holes_raw(d.path(), "in.raw", 2 << 20);
    let out = d.path().join("out");
    for args in [
        &["--to", "vhdx", "--compress", "zstd"][..],
        &["--to", "qcow2", "--block-size", "1M"][..],
        &["--to", "vhdx", "--block-size", "3M"][..],
        &["--to", "vhdx", "--block-size", "512M"][..],
        &["--to", "vhd-dynamic", "--size", "1M"][..],
    ] {
        let mut a = vec!["convert", s(&src), s(&out)];
        a.extend_from_slice(args);
        let o = onramp(&a);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(!out.exists(), "{args:?} left an output");
    }
}

#[test]
fn tiny_and_empty_sources() {
    if !require(&["qemu-img"]) {
        return;
    }
    let d = tempdir();
    let one = d.path().join("one.raw");
    std::fs::write(&one, b"x").unwrap();
    let empty = d.path().join("empty.raw");
    std::fs::write(&empty, b"").unwrap();
    for t in TARGETS {
        let out = d.path().join(format!("one.{}", t.ext));
        let v = convert(&one, &out, t, None);
        assert_eq!(v["virtual_size"].as_u64(), Some(512), "{}", t.to);
        assert!(qemu_compare(&one, "raw", &out, t.qemu), "{}", t.to);
        let out = d.path().join(format!("empty.{}", t.ext));
        let o = onramp(&convert_args(&empty, &out, t.to, t.extra));
        if t.to == "vhdx" {
            // A VHDX cannot describe a 0-byte disk (qemu refuses to open one).
            assert_eq!(o.status.code(), Some(2));
            continue;
        }
        assert!(o.status.success(), "{} {:?}", t.to, o);
        assert!(qemu_compare(&empty, "raw", &out, t.qemu), "{}", t.to);
        if t.qemu == "qcow2" {
            qemu_img(&["check", s(&out)]);
        }
    }
}

/// Data beyond the first chunk of VHDX payload blocks, so BAT entries are
/// interleaved with sector-bitmap entries (chunk ratio 128 at 32 MiB blocks:
/// a chunk always covers 4 GiB); a second qcow2 L2 table; a block far into a dynamic VHD.
#[test]
fn data_far_into_a_large_sparse_disk() {
    if !require(&["qemu-img"]) {
        return;
    }
    use std::os::unix::fs::FileExt;
    let d = tempdir();
    let src = d.path().join("far.raw");
    let f = std::fs::File::create(&src).unwrap();
    f.set_len(5 << 30).unwrap();
    f.write_all_at(&pattern(1, 3000), 1000).unwrap();
    f.write_all_at(&pattern(2, 70_000), (9 << 29) - 5000)
        .unwrap();
    drop(f);
    // qemu reads NOT_PRESENT VHDX blocks rather than skipping them (about 10 s
    // for 5 GiB), so only the default VHDX block size is compared here.
    for t in TARGETS
        .iter()
        .filter(|t| t.to != "vhdx" || t.extra.is_empty())
    {
        let out = d.path().join(format!("far.{}", t.ext));
        convert(&src, &out, t, None);
        assert!(
            qemu_compare(&src, "raw", &out, t.qemu),
            "{} {:?}",
            t.to,
            t.extra
        );
        if t.qemu != "vpc" {
            qemu_check_ok(&out, t.qemu);
        }
        std::fs::remove_file(&out).ok();
    }
}
