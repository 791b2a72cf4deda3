//! VMDK, VDI and OVA readers, judged by qemu-img: every image is converted to
//! raw by onramp and by `qemu-img convert -O raw`, the sha256 sums must match
//! and the reader must pass the conformance suite against qemu's raw. Corrupt
//! variants must exit 2 with a clear message, under 10 s and 256 MiB, opening
//! no file outside the input's directory (checked with strace when present).

mod common;
use common::convert::*;
use common::*;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// sha256 of a file with the sha256sum tool (fast on multi-GiB sparse files).
fn sha256sum(p: &Path) -> String {
    run("sha256sum", &[s(p)])
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// qemu's raw of `img` (format `fmt`), written beside it.
fn qemu_raw_beside(img: &Path, fmt: &str) -> PathBuf {
    let out = img.with_extension(format!("{fmt}.qemu.raw"));
    qemu_raw(img, fmt, &out);
    out
}

/// onramp's raw of `img` equals qemu's raw of `reference_of` (format `fmt`), and the
/// reader passes the conformance suite. Extra args go to onramp (e.g. --disk).
fn check_against_qemu(
    img: &Path,
    reference_of: &Path,
    fmt: &str,
    extra: &[&str],
    conformance: bool,
) {
    // InputGuard's sha256 runs unoptimised in test builds; sha256sum is fast.
    let before = (
        sha256sum(img),
        std::fs::metadata(img).unwrap().modified().unwrap(),
    );
    let reference = qemu_raw_beside(reference_of, fmt);
    let ours = img.with_extension("onramp.raw");
    let mut args = vec!["--force"];
    args.extend_from_slice(extra);
    convert_ok(img, &ours, "raw", &args);
    let after = (
        sha256sum(img),
        std::fs::metadata(img).unwrap().modified().unwrap(),
    );
    assert_eq!(before, after, "{}: input changed", img.display());
    assert_eq!(
        sha256sum(&ours),
        sha256sum(&reference),
        "{}: onramp's raw differs from qemu-img's",
        img.display()
    );
    if conformance {
        let mut opts = onramp::source::OpenOptions::default();
        if let Some(i) = extra.iter().position(|a| *a == "--disk") {
            opts.disk = extra.get(i + 1).and_then(|d| d.parse().ok());
        }
        if extra.contains(&"--allow-backing") {
            opts.allow_backing = true;
        }
        let src = onramp::source::open(img, &opts).unwrap();
        onramp::block::conformance::check(src.as_ref(), &reference)
            .unwrap_or_else(|e| panic!("{}: conformance: {e}", img.display()));
    }
    std::fs::remove_file(&ours).ok();
    std::fs::remove_file(&reference).ok();
}

fn have_strace() -> bool {
    let found = Path::new("/usr/bin/strace").exists() || Path::new("/bin/strace").exists();
    if !found {
        eprintln!("NOTE: strace missing: the no-file-outside-the-directory checks are skipped");
    }
    found
}

/// Run `onramp ARGS` under timeout 10 s and a 256 MiB address-space limit;
/// expect exit 2 and `want` in stderr; with strace, check that every file
/// opened lies in `dir` (or is a system library / proc file).
fn expect_refused(dir: &Path, args: &[&str], want: &str) {
    let bin = onramp_bin();
    let log = dir.join("strace.log");
    let mut cmd: Vec<String> = vec![
        "30".into(),
        "prlimit".into(),
        "--as=268435456".into(),
        "--".into(),
    ];
    let traced = have_strace();
    if traced {
        cmd.extend(
            [
                "strace",
                "-f",
                "-qq",
                "-e",
                "trace=openat,open",
                "-o",
                s(&log),
            ]
            .iter()
            .map(|x| x.to_string()),
        );
    }
    cmd.push(s(&bin).into());
    cmd.extend(args.iter().map(|x| x.to_string()));
    let refs: Vec<&str> = cmd.iter().map(String::as_str).collect();
    let started = std::time::Instant::now();
    let out = run_output("timeout", &refs);
    let secs = started.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "onramp {args:?}: expected exit 2, got {:?} after {secs:.1}s; stderr: {err}",
        out.status.code()
    );
    assert!(
        err.contains(want),
        "onramp {args:?}: stderr lacks {want:?}: {err}"
    );
    assert!(secs < 10.0, "took {secs}s");
    if traced {
        let log_text = std::fs::read_to_string(&log).unwrap_or_default();
        let dir_s = s(dir);
        for line in log_text.lines() {
            let Some(q) = line.find('"') else { continue };
            let rest = &line[q + 1..];
            let Some(e) = rest.find('"') else { continue };
            let p = &rest[..e];
            // The dynamic loader's probes (libgcc_s etc., also in cargo's
            // LD_LIBRARY_PATH build dirs) are not onramp's doing.
            let name = p.rsplit('/').next().unwrap_or(p);
            let shared_lib = name.ends_with(".so") || name.contains(".so.");
            let allowed = p.starts_with(dir_s)
                || shared_lib
                || ["/etc/ld.so", "/proc/", "/sys/", "/dev/"]
                    .iter()
                    .any(|a| p.starts_with(a));
            assert!(allowed, "onramp {args:?} opened {p:?} outside {dir_s}");
            assert!(!p.contains(".."), "onramp {args:?} opened {p:?}");
        }
        std::fs::remove_file(&log).ok();
    }
}

fn patch(p: &Path, at: u64, bytes: &[u8]) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(p)
        .unwrap()
        .write_all_at(bytes, at)
        .unwrap();
}

fn read_at(p: &Path, at: u64, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    std::fs::File::open(p)
        .unwrap()
        .read_exact_at(&mut v, at)
        .unwrap();
    v
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b[..4].try_into().unwrap())
}

fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().unwrap())
}

/// Little-endian bytes of a patched field (u16, u32, u64).
fn u16_le(v: u16) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}
fn u32_le(v: u32) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}
fn u64_le(v: u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

/// A copy of `src` named `name` in `dir`, with `bytes` written at `at`.
fn variant(dir: &Path, src: &Path, name: &str, at: u64, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::copy(src, &p).unwrap();
    patch(&p, at, bytes);
    p
}

/// `onramp convert IMG DIR/o.raw --to raw --force` is refused with `want`
/// (see [`expect_refused`]).
fn refuse_to_raw(dir: &Path, img: &Path, want: &str) {
    let out = dir.join("o.raw");
    expect_refused(dir, &convert_args(img, &out, "raw", &["--force"]), want);
}

/// Each case (name, offset, bytes, message): a [`variant`] of `good` that
/// converting to raw refuses with the message.
fn refuse_variants(dir: &Path, good: &Path, cases: Vec<(&str, u64, Vec<u8>, &str)>) {
    for (name, at, bytes, want) in cases {
        let p = variant(dir, good, name, at, &bytes);
        refuse_to_raw(dir, &p, want);
    }
}

/// `qemu-img convert -f raw -O vmdk -o subformat=SUB RAW IMG`.
fn vmdk_from_raw(raw: &Path, img: &Path, sub: &str) {
    qemu_from_raw(raw, img, "vmdk", &format!("subformat={sub}"));
}

// ---------------------------------------------------------------- VMDK

#[test]
fn vmdk_subformats_match_qemu() {
    if !require(&["qemu-img", "sha256sum"]) {
        return;
    }
    let d = tempdir();
    let raw = holes_raw(d.path(), "in.raw", 20 << 20);
    for sub in [
        "monolithicSparse",
        "streamOptimized",
        "monolithicFlat",
        "twoGbMaxExtentSparse",
        "twoGbMaxExtentFlat",
    ] {
        let img = d.path().join(format!("{sub}.vmdk"));
        vmdk_from_raw(&raw, &img, sub);
        check_against_qemu(&img, &img, "vmdk", &[], true);
        let v = info_json(&[s(&img)]);
        assert_eq!(v["format"], "vmdk");
        assert_eq!(v["details"]["create_type"], sub, "{v}");
    }
}

#[test]
fn vmdk_ext4_disk_stream_optimized() {
    if !require(&["qemu-img", "mkfs.ext4", "sfdisk", "sha256sum"]) {
        return;
    }
    let d = tempdir();
    let disk = make_ext4_disk(d.path(), "demo", 48);
    for sub in ["streamOptimized", "monolithicSparse"] {
        let img = d.path().join(format!("demo-{sub}.vmdk"));
        vmdk_from_raw(&disk, &img, sub);
        check_against_qemu(&img, &img, "vmdk", &[], true);
    }
}

#[test]
fn vmdk_two_gb_extents_really_split() {
    if !require(&["qemu-img", "sha256sum"]) {
        return;
    }
    let d = tempdir();
    let raw = d.path().join("big.raw");
    let size: u64 = 3 << 30;
    {
        let f = std::fs::File::create(&raw).unwrap();
        f.set_len(size).unwrap();
        for (i, off) in [0u64, (2 << 30) - 3000, (2 << 30) + 65536 * 7, size - 4096]
            .into_iter()
            .enumerate()
        {
            f.write_all_at(
                &pattern(i as u64 + 10, 6000.min((size - off) as usize)),
                off,
            )
            .unwrap();
        }
    }
    for (sub, suffix) in [("twoGbMaxExtentSparse", "s"), ("twoGbMaxExtentFlat", "f")] {
        let img = d.path().join(format!("{sub}.vmdk"));
        vmdk_from_raw(&raw, &img, sub);
        assert!(
            d.path().join(format!("{sub}-{suffix}002.vmdk")).exists(),
            "{sub} did not split"
        );
        // Reference is the input raw itself (qemu-img compare checks it too).
        assert!(qemu_compare(&raw, "raw", &img, "vmdk"));
        // sha256 of 3 GiB of zeros takes minutes here; qemu-img compare
        // (hole-aware) judges the whole output instead.
        let ours = d.path().join(format!("{sub}.onramp.raw"));
        onramp_ok(&["convert", s(&img), s(&ours), "--to", "raw"]);
        assert_eq!(std::fs::metadata(&ours).unwrap().len(), size);
        assert!(
            qemu_compare(&ours, "raw", &raw, "raw"),
            "{sub}: output differs"
        );
        assert!(
            qemu_compare(&img, "vmdk", &ours, "raw"),
            "{sub}: output differs"
        );
        std::fs::remove_file(&ours).ok();
        let src = onramp::source::open(&img, &Default::default()).unwrap();
        // Reads across the extent boundary, byte for byte against the raw.
        for (off, n) in [
            ((2u64 << 30) - 5000, 20_000usize),
            (size - 9000, 9000),
            (0, 7000),
        ] {
            let mut a = vec![0u8; n];
            src.read_at(off, &mut a).unwrap();
            assert_eq!(a, read_at(&raw, off, n), "{sub} at {off}");
        }
        let map = onramp::block::full_map(src.as_ref()).unwrap();
        let data: u64 = map
            .iter()
            .filter(|e| e.kind == onramp::block::ExtentKind::Data)
            .map(|e| e.len)
            .sum();
        assert!(data < 64 << 20, "{sub}: map says {data} bytes of data");
        let v = info_json(&[s(&img)]);
        assert_eq!(v["details"]["extents"].as_array().unwrap().len(), 2);
    }
}

/// Build a streamOptimized VMDK the way VMware does: header with
/// gdOffset = GD_AT_END, compressed grains with markers, GT/GD markers, and
/// the footer copy of the header before the end-of-stream marker.
fn write_stream_optimized_footer_style(raw: &Path, out: &Path) {
    use flate2::write::ZlibEncoder;
    let data = std::fs::read(raw).unwrap();
    let cap_sectors = (data.len() as u64).div_ceil(512);
    let grain: u64 = 128;
    let gbytes = (grain * 512) as usize;
    let n_grains = cap_sectors.div_ceil(grain) as usize;
    let n_gts = n_grains.div_ceil(512);
    let header = |gd_offset: u64| {
        let mut h = vec![0u8; 512];
        h[0..4].copy_from_slice(b"KDMV");
        h[4..8].copy_from_slice(&3u32.to_le_bytes());
        h[8..12].copy_from_slice(&(1u32 | 1 << 16 | 1 << 17).to_le_bytes());
        h[12..20].copy_from_slice(&cap_sectors.to_le_bytes());
        h[20..28].copy_from_slice(&grain.to_le_bytes());
        h[28..36].copy_from_slice(&1u64.to_le_bytes());
        h[36..44].copy_from_slice(&20u64.to_le_bytes());
        h[44..48].copy_from_slice(&512u32.to_le_bytes());
        h[56..64].copy_from_slice(&gd_offset.to_le_bytes());
        h[64..72].copy_from_slice(&128u64.to_le_bytes());
        h[73..77].copy_from_slice(b"\n \r\n");
        h[77..79].copy_from_slice(&1u16.to_le_bytes());
        h
    };
    let mut f = header(u64::MAX);
    let desc = format!(
        "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"streamOptimized\"\n\nRW {cap_sectors} SPARSE \"x.vmdk\"\n\nddb.adapterType = \"lsilogic\"\n"
    );
    let mut dsec = desc.into_bytes();
    dsec.resize(20 * 512, 0);
    f.extend_from_slice(&dsec);
    f.resize(128 * 512, 0);
    let pad = |f: &mut Vec<u8>| {
        let n = f.len().div_ceil(512) * 512;
        f.resize(n, 0);
    };
    let mut gts = vec![0u32; n_gts * 512];
    for (g, gte) in gts.iter_mut().enumerate().take(n_grains) {
        let start = g * gbytes;
        let mut chunk = data[start..(start + gbytes).min(data.len())].to_vec();
        if chunk.iter().all(|&b| b == 0) {
            continue;
        }
        chunk.resize(gbytes, 0);
        let mut e = ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&chunk).unwrap();
        let z = e.finish().unwrap();
        *gte = (f.len() / 512) as u32;
        f.extend_from_slice(&(g as u64 * grain).to_le_bytes());
        f.extend_from_slice(&(z.len() as u32).to_le_bytes());
        f.extend_from_slice(&z);
        pad(&mut f);
    }
    let marker = |f: &mut Vec<u8>, val: u64, kind: u32| {
        let mut m = vec![0u8; 512];
        m[0..8].copy_from_slice(&val.to_le_bytes());
        m[12..16].copy_from_slice(&kind.to_le_bytes());
        f.extend_from_slice(&m);
    };
    let mut gd = vec![0u32; n_gts];
    for t in 0..n_gts {
        let table = &gts[t * 512..(t + 1) * 512];
        if table.iter().all(|&x| x == 0) {
            continue;
        }
        marker(&mut f, 4, 1);
        gd[t] = (f.len() / 512) as u32;
        for x in table {
            f.extend_from_slice(&x.to_le_bytes());
        }
        pad(&mut f);
    }
    marker(&mut f, (n_gts as u64 * 4).div_ceil(512), 2);
    let gd_at = (f.len() / 512) as u64;
    for x in &gd {
        f.extend_from_slice(&x.to_le_bytes());
    }
    pad(&mut f);
    marker(&mut f, 1, 3);
    f.extend_from_slice(&header(gd_at));
    marker(&mut f, 0, 0);
    std::fs::write(out, f).unwrap();
}

#[test]
fn vmdk_stream_optimized_with_footer_matches_qemu() {
    if !require(&["qemu-img", "sha256sum"]) {
        return;
    }
    let d = tempdir();
    let raw = holes_raw(d.path(), "in.raw", 40 << 20);
    let img = d.path().join("x.vmdk");
    write_stream_optimized_footer_style(&raw, &img);
    assert!(
        qemu_compare(&raw, "raw", &img, "vmdk"),
        "qemu disagrees with the fixture"
    );
    check_against_qemu(&img, &img, "vmdk", &[], true);
    let v = info_json(&[s(&img)]);
    assert_eq!(v["details"]["extents"][0]["header_from_footer"], true);
    assert_eq!(v["details"]["extents"][0]["compression"], "deflate");

    // Footer corruptions.
    let len = std::fs::metadata(&img).unwrap().len();
    let foot = len - 1024;
    for (name, at, bytes, want) in [
        (
            "badfootmarker.vmdk",
            len - 1536 + 12,
            u32_le(7),
            "VMDK footer marker",
        ),
        ("badfootgrain.vmdk", foot + 20, u64_le(3), "grainSize"),
        ("badfootgd.vmdk", foot + 56, u64_le(1 << 40), "gdOffset"),
    ] {
        let bad = variant(d.path(), &img, name, at, &bytes);
        expect_refused(d.path(), &["info", s(&bad)], want);
    }
}

#[test]
fn vmdk_corrupt_variants_exit_2() {
    if !require(&["qemu-img", "timeout", "prlimit"]) {
        return;
    }
    let d = tempdir();
    let raw = holes_raw(d.path(), "in.raw", 20 << 20);
    let sparse = d.path().join("good.vmdk");
    qemu_img(&["convert", "-O", "vmdk", s(&raw), s(&sparse)]);
    let h = read_at(&sparse, 0, 512);
    let gd_at = le64(&h[56..]) * 512;
    let gt_at = u64::from(le32(&read_at(&sparse, gd_at, 4))) * 512;
    let dp = d.path();
    let cases: Vec<(&str, u64, Vec<u8>, &str)> = vec![
        ("version.vmdk", 4, u32_le(99), "field version at byte 4"),
        ("grain.vmdk", 20, u64_le(3), "grainSize"),
        ("grainhuge.vmdk", 20, u64_le(1 << 40), "grainSize"),
        ("gtes.vmdk", 44, u32_le(0x1000_0000), "numGTEsPerGT"),
        ("cap.vmdk", 12, u64_le(u64::MAX / 4), "capacity"),
        ("capbig.vmdk", 12, u64_le(1 << 36), "grain directory"),
        ("gdoff.vmdk", 56, u64_le(1 << 50), "gdOffset"),
        ("nl.vmdk", 73, b"\n \n\n".to_vec(), "text-mode"),
        ("desc.vmdk", 36, u64_le(1 << 40), "descriptorSize"),
        ("comp.vmdk", 77, u16_le(9), "compressAlgorithm"),
        (
            "gde.vmdk",
            gd_at,
            u32_le(0x7fff_0000),
            "VMDK grain directory field entry 0",
        ),
        (
            "gte.vmdk",
            gt_at,
            u32_le(0x7fff_0000),
            "VMDK grain table field entry 0",
        ),
    ];
    refuse_variants(dp, &sparse, cases);
    // Wrong magic: detection says raw, --from vmdk must refuse.
    let p = variant(dp, &sparse, "magic.vmdk", 0, b"KDMX");
    expect_refused(dp, &["info", "--from", "vmdk", s(&p)], "magicNumber");

    // streamOptimized: compressed grain markers.
    let so = d.path().join("so.vmdk");
    stream_vmdk(&raw, &so);
    let h = read_at(&so, 0, 512);
    let gd_at = le64(&h[56..]) * 512;
    let gt_at = u64::from(le32(&read_at(&so, gd_at, 4))) * 512;
    let g0 = u64::from(le32(&read_at(&so, gt_at, 4))) * 512;
    let p = variant(
        dp,
        &so,
        "so-size.vmdk",
        g0 + 8,
        &0x7fff_ffffu32.to_le_bytes(),
    );
    refuse_to_raw(dp, &p, "VMDK grain marker field size");
    let p = variant(dp, &so, "so-lba.vmdk", g0, &12345u64.to_le_bytes());
    refuse_to_raw(dp, &p, "VMDK grain marker field lba");
    let p = variant(
        dp,
        &so,
        "so-zlib.vmdk",
        g0 + 12,
        &[0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4],
    );
    refuse_to_raw(dp, &p, "deflate stream");
}

fn write_descriptor(dir: &Path, name: &str, create: &str, extents: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(
        &p,
        format!("# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType=\"{create}\"\n\n# Extent description\n{extents}\n\n# The Disk Data Base\n#DDB\n\nddb.adapterType = \"ide\"\n"),
    )
    .unwrap();
    p
}

#[test]
fn vmdk_descriptor_policy() {
    if !require(&["qemu-img", "timeout", "prlimit"]) {
        return;
    }
    let top = tempdir();
    let d = subdir(top.path(), "img");
    // A file just outside the image's directory that must never be opened.
    std::fs::write(top.path().join("x"), vec![7u8; 1 << 20]).unwrap();
    std::fs::write(d.join("flat.bin"), vec![1u8; 1 << 20]).unwrap();
    // (file, createType, extent lines, message): each refused by `info`.
    let mut refusals: Vec<(String, &str, &str, String)> = vec![
        (
            "trav.vmdk".into(),
            "monolithicFlat",
            "RW 2048 FLAT \"../x\" 0",
            "\"../x\"".into(),
        ),
        (
            "abs.vmdk".into(),
            "monolithicFlat",
            "RW 2048 FLAT \"/etc/passwd\" 0",
            "\"/etc/passwd\"".into(),
        ),
        (
            "sub.vmdk".into(),
            "twoGbMaxExtentFlat",
            "RW 2048 FLAT \"flat.bin\" 0\nRW 2048 FLAT \"a/../../x\" 0",
            "a/../../x".into(),
        ),
        (
            "vt.vmdk".into(),
            "monolithicFlat",
            "RW 2048 VMFS \"flat.bin\"",
            "VMFS".into(),
        ),
        // Extent bigger than its file.
        (
            "big.vmdk".into(),
            "monolithicFlat",
            "RW 4096 FLAT \"flat.bin\" 0",
            "flat.bin".into(),
        ),
    ];
    for ct in ["vmfs", "vmfsSparse", "seSparse", "custom"] {
        refusals.push((
            format!("{ct}.vmdk"),
            ct,
            "RW 2048 FLAT \"flat.bin\" 0",
            format!("createType \"{ct}\""),
        ));
    }
    for (name, create, extents, want) in &refusals {
        let p = write_descriptor(&d, name, create, extents);
        expect_refused(&d, &["info", s(&p)], want);
    }
    // Two flat extent files, one at an offset, judged by qemu. (qemu 10.0
    // double-reads an extent line that directly follows a blank line, so the
    // descriptor keeps qemu's "# Extent description" comment.)
    std::fs::write(d.join("flat.bin"), pattern(3, 1 << 20)).unwrap();
    std::fs::write(d.join("flat2.bin"), pattern(4, 1 << 20)).unwrap();
    let good = write_descriptor(
        &d,
        "good.vmdk",
        "twoGbMaxExtentFlat",
        "RW 1024 FLAT \"flat2.bin\" 1024\nRW 2048 FLAT \"flat.bin\" 0",
    );
    check_against_qemu(&good, &good, "vmdk", &[], true);
    // ZERO extents, checked against the spec by hand (qemu 10.0 drops them).
    let z = write_descriptor(
        &d,
        "zero.vmdk",
        "monolithicFlat",
        "RW 8 FLAT \"flat.bin\" 0\nRW 2048 ZERO\nRW 8 FLAT \"flat.bin\" 8",
    );
    let src = onramp::source::open(&z, &Default::default()).unwrap();
    let mut all = vec![0u8; (8 + 2048 + 8) * 512];
    src.read_at(0, &mut all).unwrap();
    let flat = pattern(3, 8192);
    assert_eq!(&all[..4096], &flat[..4096]);
    assert!(all[4096..4096 + 2048 * 512].iter().all(|&b| b == 0));
    assert_eq!(&all[4096 + 2048 * 512..], &flat[4096..8192]);
    let zero_ext = onramp::block::full_map(src.as_ref()).unwrap();
    assert_eq!(zero_ext[1].kind, onramp::block::ExtentKind::Zero);
}

#[test]
fn vmdk_parent_needs_allow_backing() {
    if !require(&["qemu-img", "qemu-io", "timeout", "prlimit"]) {
        return;
    }
    let d = tempdir();
    let raw = holes_raw(d.path(), "in.raw", 10 << 20);
    let base = d.path().join("base.vmdk");
    qemu_img(&["convert", "-O", "vmdk", s(&raw), s(&base)]);
    let child = d.path().join("child.vmdk");
    qemu_img(&[
        "create",
        "-f",
        "vmdk",
        "-b",
        "base.vmdk",
        "-F",
        "vmdk",
        s(&child),
    ]);
    run(
        "qemu-io",
        &["-f", "vmdk", "-c", "write -P 0x5a 3M 100k", s(&child)],
    );
    let v: serde_json::Value =
        serde_json::from_str(&qemu_img(&["info", "--output=json", s(&child)])).unwrap();
    assert_eq!(v["backing-filename"], "base.vmdk");
    expect_refused(d.path(), &["info", s(&child)], "--allow-backing");
    check_against_qemu(&child, &child, "vmdk", &["--allow-backing"], true);
}

// ---------------------------------------------------------------- VDI

#[test]
fn vdi_static_and_dynamic_match_qemu() {
    if !require(&["qemu-img", "mkfs.ext4", "sfdisk", "sha256sum"]) {
        return;
    }
    let d = tempdir();
    let raw = holes_raw(d.path(), "in.raw", 20 << 20 | 4096);
    let disk = make_ext4_disk(d.path(), "demo", 40);
    for (src, tag) in [(&raw, "holes"), (&disk, "ext4")] {
        for (opt, kind) in [("static=off", "dynamic"), ("static=on", "static")] {
            let img = d.path().join(format!("{tag}-{kind}.vdi"));
            qemu_from_raw(src, &img, "vdi", opt);
            check_against_qemu(&img, &img, "vdi", &[], true);
            let v = info_json(&[s(&img)]);
            assert_eq!(v["details"]["image_type"], kind);
        }
    }
}

#[test]
fn vdi_corrupt_variants_exit_2() {
    if !require(&["qemu-img", "timeout", "prlimit"]) {
        return;
    }
    let d = tempdir();
    let dp = d.path();
    let raw = holes_raw(dp, "in.raw", 8 << 20);
    let img = dp.join("good.vdi");
    qemu_img(&["convert", "-O", "vdi", s(&raw), s(&img)]);
    let bmap = u64::from(le32(&read_at(&img, 0x154, 4)));
    let cases: Vec<(&str, u64, Vec<u8>, &str)> = vec![
        ("ver.vdi", 0x44, u32_le(0x0002_0000), "version"),
        ("type.vdi", 0x4c, u32_le(9), "image type"),
        ("diff.vdi", 0x4c, u32_le(4), "differencing"),
        ("bmap.vdi", 0x154, u32_le(1000), "offset of blocks"),
        ("data.vdi", 0x158, u32_le(3), "offset of data"),
        ("bs.vdi", 0x178, u32_le(3000), "block size"),
        ("bshuge.vdi", 0x178, u32_le(0x8000_0000), "block size"),
        ("blocks.vdi", 0x180, u32_le(0xffff_fff0), "blocks in image"),
        ("size.vdi", 0x170, u64_le(1 << 45), "disk size"),
        (
            "entry.vdi",
            bmap,
            u32_le(0x00ff_0000),
            "VDI block map field entry 0",
        ),
    ];
    refuse_variants(dp, &img, cases);
    let p = variant(dp, &img, "sig.vdi", 0x40, &[0, 0, 0, 0]);
    expect_refused(dp, &["info", "--from", "vdi", s(&p)], "signature");
    // A disk size that is not whole sectors is rounded up, as qemu does.
    let odd = variant(
        dp,
        &img,
        "odd.vdi",
        0x170,
        &((8u64 << 20) - 100).to_le_bytes(),
    );
    check_against_qemu(&odd, &odd, "vdi", &[], true);
}

// ---------------------------------------------------------------- OVA

const OVF_TEMPLATE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!--Generated by a test-->
<Envelope vmw:buildId="build-1" xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References>
FILES  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
DISKS  </DiskSection>
  <VirtualSystem ovf:id="demo">
    <Info>A virtual machine</Info>
    <VirtualHardwareSection>
      <Item>
        <rasd:ElementName>CPU</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
      </Item>
ITEMS    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#;

/// An OVF naming `disks` (href, capacity bytes) in DiskSection order, with
/// hardware items referencing them in `boot_order` (indices).
fn ovf_text(disks: &[(&str, u64)], boot_order: &[usize]) -> String {
    let mut files = String::new();
    let mut dks = String::new();
    let mut items = String::new();
    for (i, (href, cap)) in disks.iter().enumerate() {
        files += &format!("    <File ovf:href=\"{href}\" ovf:id=\"file{i}\"/>\n");
        dks += &format!(
            "    <Disk ovf:capacity=\"{cap}\" ovf:capacityAllocationUnits=\"byte\" ovf:diskId=\"vmdisk{i}\" ovf:fileRef=\"file{i}\" ovf:format=\"http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized\"/>\n"
        );
    }
    for (k, &i) in boot_order.iter().enumerate() {
        items += &format!(
            "      <Item>\n        <rasd:AddressOnParent>{k}</rasd:AddressOnParent>\n        <rasd:HostResource>ovf:/disk/vmdisk{i}</rasd:HostResource>\n        <rasd:InstanceID>{}</rasd:InstanceID>\n        <rasd:ResourceType>17</rasd:ResourceType>\n      </Item>\n",
            10 + k
        );
    }
    OVF_TEMPLATE
        .replace("FILES", &files)
        .replace("DISKS", &dks)
        .replace("ITEMS", &items)
}

/// Pack `members` of `src` into `dir/NAME` with GNU tar; `onramp info` of
/// it is refused with `want` (see [`expect_refused`]).
fn refuse_ova(dir: &Path, src: &Path, name: &str, members: &[&str], want: &str) {
    let ova = dir.join(name);
    gnu_tar(src, &ova, members);
    expect_refused(dir, &["info", s(&ova)], want);
}

/// Write [`ovf_text`] of `disks` and `boot_order` to `path`.
fn write_ovf(path: &Path, disks: &[(&str, u64)], boot_order: &[usize]) {
    std::fs::write(path, ovf_text(disks, boot_order)).unwrap();
}

fn digest_hex<D: sha2::Digest>(p: &Path) -> String {
    let mut h = D::new();
    h.update(std::fs::read(p).unwrap());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Pack `members` (in order) from `dir` into `out` with GNU tar.
fn gnu_tar(dir: &Path, out: &Path, members: &[&str]) {
    let mut args = vec!["--format=gnu", "-cf", s(out), "-C", s(dir)];
    args.extend_from_slice(members);
    run("tar", &args);
}

fn stream_vmdk(raw: &Path, out: &Path) {
    vmdk_from_raw(raw, out, "streamOptimized");
}

#[test]
fn ova_single_disk_sha256_manifest() {
    if !require(&["qemu-img", "tar", "mkfs.ext4", "sfdisk", "sha256sum"]) {
        return;
    }
    let d = tempdir();
    let src = subdir(d.path(), "src");
    let disk = make_ext4_disk(d.path(), "demo", 40);
    let vmdk = src.join("demo-disk1.vmdk");
    stream_vmdk(&disk, &vmdk);
    write_ovf(
        &src.join("demo.ovf"),
        &[("demo-disk1.vmdk", 40 << 20)],
        &[0],
    );
    let mf = format!(
        "SHA256(demo.ovf)= {}\nSHA256(demo-disk1.vmdk)= {}\n",
        digest_hex::<sha2::Sha256>(&src.join("demo.ovf")),
        digest_hex::<sha2::Sha256>(&vmdk)
    );
    std::fs::write(src.join("demo.mf"), mf).unwrap();
    let ova = d.path().join("demo.ova");
    gnu_tar(&src, &ova, &["demo.ovf", "demo.mf", "demo-disk1.vmdk"]);
    check_against_qemu(&ova, &vmdk, "vmdk", &[], true);
    let v = info_json(&[s(&ova)]);
    assert_eq!(v["format"], "ova");
    assert_eq!(v["details"]["manifest"]["verified"], true);
    assert_eq!(v["details"]["open_member"], "demo-disk1.vmdk");
    assert_eq!(v["details"]["disks"][0]["capacity_bytes"], 40 << 20);
    assert_eq!(v["details"]["disk"]["create_type"], "streamOptimized");
    assert_eq!(v["details"]["members"].as_array().unwrap().len(), 3);

    // A wrong digest is refused, naming the file.
    let bad = src.join("demo.mf");
    let text = std::fs::read_to_string(&bad).unwrap();
    let mut chars: Vec<char> = text.chars().collect();
    let i = text.rfind("= ").unwrap() + 2;
    chars[i] = if chars[i] == '0' { '1' } else { '0' };
    std::fs::write(&bad, chars.into_iter().collect::<String>()).unwrap();
    let bad_ova = d.path().join("badmf.ova");
    gnu_tar(&src, &bad_ova, &["demo.ovf", "demo.mf", "demo-disk1.vmdk"]);
    expect_refused(d.path(), &["info", s(&bad_ova)], "SHA256(demo-disk1.vmdk)");
}

#[test]
fn ova_two_disks_and_sha1_manifest() {
    if !require(&["qemu-img", "tar", "sha256sum"]) {
        return;
    }
    let d = tempdir();
    let src = subdir(d.path(), "src");
    let raw_a = holes_raw(d.path(), "a.raw", 12 << 20);
    let raw_b = d.path().join("b.raw");
    {
        let f = std::fs::File::create(&raw_b).unwrap();
        f.set_len(9 << 20).unwrap();
        f.write_all_at(&pattern(55, 300_000), 2 << 20).unwrap();
    }
    let va = src.join("data.vmdk");
    let vb = src.join("boot.vmdk");
    stream_vmdk(&raw_a, &va);
    stream_vmdk(&raw_b, &vb);
    // DiskSection order: boot (0), data (1); the hardware lists boot first.
    write_ovf(
        &src.join("vm.ovf"),
        &[("boot.vmdk", 9 << 20), ("data.vmdk", 12 << 20)],
        &[0, 1],
    );
    let mf = format!(
        "SHA1(vm.ovf)= {}\nSHA1(boot.vmdk)= {}\nSHA1(data.vmdk)= {}\n",
        digest_hex::<sha1::Sha1>(&src.join("vm.ovf")),
        digest_hex::<sha1::Sha1>(&vb),
        digest_hex::<sha1::Sha1>(&va)
    );
    std::fs::write(src.join("vm.mf"), mf).unwrap();
    let ova = d.path().join("vm.ova");
    gnu_tar(&src, &ova, &["vm.ovf", "vm.mf", "boot.vmdk", "data.vmdk"]);
    // Default: the boot disk.
    check_against_qemu(&ova, &vb, "vmdk", &[], true);
    let v = info_json(&[s(&ova)]);
    assert_eq!(v["details"]["open_disk"], 0);
    assert_eq!(v["details"]["disks"][0]["boot"], true);
    assert_eq!(v["details"]["manifest"]["verified"], true);
    assert_eq!(v["details"]["manifest"]["entries"][1]["algorithm"], "SHA1");
    // --disk 1 picks the data disk.
    check_against_qemu(&ova, &va, "vmdk", &["--disk", "1"], true);
    let v = info_json(&["--disk", "1", s(&ova)]);
    assert_eq!(v["details"]["open_member"], "data.vmdk");
    assert_eq!(v["virtual_size"], 12 << 20);

    // When the hardware boots from the second DiskSection entry, that is the default.
    write_ovf(
        &src.join("vm.ovf"),
        &[("data.vmdk", 12 << 20), ("boot.vmdk", 9 << 20)],
        &[1, 0],
    );
    let ova2 = d.path().join("vm2.ova");
    gnu_tar(&src, &ova2, &["vm.ovf", "data.vmdk", "boot.vmdk"]);
    let v = info_json(&[s(&ova2)]);
    assert_eq!(v["details"]["open_member"], "boot.vmdk");
    assert_eq!(v["details"]["manifest"]["present"], false);
    expect_refused(d.path(), &["info", "--disk", "5", s(&ova)], "--disk 5");
}

#[test]
fn ova_hostile_members_exit_2() {
    if !require(&["qemu-img", "tar", "timeout", "prlimit"]) {
        return;
    }
    let top = tempdir();
    let d = top.path().join("in");
    let src = subdir(&d, "sub");
    let raw = holes_raw(top.path(), "a.raw", 4 << 20);
    stream_vmdk(&raw, &src.join("disk.vmdk"));
    write_ovf(&src.join("vm.ovf"), &[("disk.vmdk", 4 << 20)], &[0]);
    std::fs::copy(src.join("disk.vmdk"), d.join("outside.vmdk")).unwrap();

    // A member named ../outside.vmdk (GNU tar keeps it with -P).
    let ova = d.join("dotdot.ova");
    run(
        "tar",
        &[
            "--format=gnu",
            "-P",
            "-cf",
            s(&ova),
            "-C",
            s(&src),
            "vm.ovf",
            "../outside.vmdk",
        ],
    );
    expect_refused(&d, &["info", s(&ova)], "../outside.vmdk");

    // An OVF whose href climbs out.
    write_ovf(&src.join("vm.ovf"), &[("../outside.vmdk", 4 << 20)], &[0]);
    refuse_ova(
        &d,
        &src,
        "href.ova",
        &["vm.ovf", "disk.vmdk"],
        "../outside.vmdk",
    );
    write_ovf(&src.join("vm.ovf"), &[("disk.vmdk", 4 << 20)], &[0]);

    // Absolute member name.
    let ova = d.join("abs.ova");
    let absf = src.join("disk.vmdk");
    run(
        "tar",
        &[
            "--format=gnu",
            "-P",
            "-cf",
            s(&ova),
            s(&src.join("vm.ovf")),
            s(&absf),
        ],
    );
    expect_refused(&d, &["info", s(&ova)], "absolute path");

    // Symlink and hard link members.
    std::os::unix::fs::symlink("disk.vmdk", src.join("sym.vmdk")).unwrap();
    refuse_ova(
        &d,
        &src,
        "sym.ova",
        &["vm.ovf", "sym.vmdk"],
        "symbolic link",
    );
    std::fs::hard_link(src.join("disk.vmdk"), src.join("hard.vmdk")).unwrap();
    refuse_ova(
        &d,
        &src,
        "hard.ova",
        &["vm.ovf", "disk.vmdk", "hard.vmdk"],
        "hard link",
    );
    std::fs::remove_file(src.join("hard.vmdk")).unwrap();

    // Good archive, then header corruptions.
    let good = d.join("good.ova");
    gnu_tar(&src, &good, &["vm.ovf", "disk.vmdk"]);
    onramp_ok(&["info", s(&good)]);
    let p = variant(&d, &good, "chk.ova", 0, b"X");
    expect_refused(&d, &["info", s(&p)], "tar header field chksum");
    // Huge size (base-256) with a fixed checksum.
    let p = d.join("size.ova");
    std::fs::copy(&good, &p).unwrap();
    let mut h = read_at(&p, 0, 512);
    h[124..136].copy_from_slice(&[
        0x80, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    ]);
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    patch(&p, 0, &h);
    expect_refused(&d, &["info", s(&p)], "tar header field size");
    // Not a disk at all inside: OVF says the disk is the OVF itself.
    write_ovf(&src.join("vm.ovf"), &[("nothere.vmdk", 4 << 20)], &[0]);
    refuse_ova(
        &d,
        &src,
        "missing.ova",
        &["vm.ovf", "disk.vmdk"],
        "nothere.vmdk",
    );
}

#[test]
fn ova_raw_disk_member_read_in_place() {
    if !require(&["qemu-img", "tar", "sha256sum"]) {
        return;
    }
    let d = tempdir();
    let src = subdir(d.path(), "src");
    let raw = holes_raw(&src, "disk.img", 6 << 20);
    write_ovf(&src.join("vm.ovf"), &[("disk.img", 6 << 20)], &[0]);
    let ova = d.path().join("raw.ova");
    gnu_tar(&src, &ova, &["vm.ovf", "disk.img"]);
    check_against_qemu(&ova, &raw, "raw", &[], true);
    let v = info_json(&[s(&ova)]);
    assert_eq!(v["details"]["disk"]["format"], "raw");
    // The member's data starts after the OVF's header+data and its own header.
    let off = v["details"]["members"][1]["offset"].as_u64().unwrap();
    assert_eq!(off % 512, 0);
    assert_eq!(read_at(&ova, off, 4096), read_at(&raw, 0, 4096));
}
