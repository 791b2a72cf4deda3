//! Windows guests: registry hives from our fixture writer checked with hivex,
//! NTFS volumes made by mkntfs / ntfs-3g / ntfscp checked against ntfscat and
//! ntfsls, and `guest::windows::inspect` on a Windows-like tree.
//!
//! Mutated hives, MFT records and boot sectors are read in a child process
//! (this test binary, re-run with ONRAMP_MUTANT_DIR set) under `timeout` and
//! `prlimit --as=268435456`: it must end with a clear error or success, never
//! a panic, a timeout or an allocation failure.

mod common;

use common::windows::{mkntfs, software_hive, system_hive, with_ntfs_mounted};
use common::winimg::{hivexsh_ls, ntfs_tools, parse_reg_line};
use common::{pattern, require, run, s, tempdir};
use onramp::block::BlockSource;
use onramp::fs::ntfs::NtfsFs;
use onramp::fs::regf::writer::{build, KeySpec};
use onramp::fs::regf::{types, Hive, Key, Value};
use onramp::fs::{FileSystem, FileType};
use onramp::guest::windows::{self, WindowsInfo};
use onramp::source::raw::RawReader;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

// ---------------------------------------------------------------- fixtures

/// A hive with every value type, large data and a key with many subkeys.
fn types_hive() -> KeySpec {
    let mut r = KeySpec::new("ROOT");
    let big: Vec<u8> = pattern(7, 50_000);
    r.set("T", Value::sz("sz", "hello \"quoted\" back\\slash"))
        .set("T", Value::expand_sz("expand", "%SystemRoot%\\x"))
        .set("T", Value::multi_sz("multi", &["one", "two", "ünï"]))
        .set("T", Value::dword("dword", 0xDEAD_BEEF))
        .set("T", Value::dword_be("dword_be", 0x0102_0304))
        .set("T", Value::qword("qword", 0x0123_4567_89AB_CDEF))
        .set("T", Value::binary("binary", &[0, 1, 2, 3, 250, 251, 252]))
        .set("T", Value::binary("binary_small", &[9]))
        .set(
            "T",
            Value::raw("none", types::REG_NONE, vec![1, 2, 3, 4, 5, 6]),
        )
        .set(
            "T",
            Value::raw(
                "link",
                types::REG_LINK,
                "\\Registry\\Machine"
                    .encode_utf16()
                    .flat_map(u16::to_le_bytes)
                    .collect(),
            ),
        )
        .set("T", Value::raw("odd_type", 0x42, vec![5, 4, 3, 2, 1]))
        .set("T", Value::binary("big", &big))
        .set("T", Value::sz("", "the default"))
        .set("T\\Ünïcode Kéy", Value::sz("välue", "ωmega"));
    let m = r.key("Many");
    for i in 0..600 {
        m.key(&format!("K{i:04}"));
    }
    r
}

// ------------------------------------------------------------ hivex oracle

/// Compare the values of `spec` with what hivexget prints for `path`.
fn check_values_with_hivex(hive: &Path, path: &str, spec: &KeySpec) {
    let out = run(
        "hivexget",
        &[s(hive), if path.is_empty() { "\\" } else { path }],
    );
    let mut got: Vec<(String, u32, Vec<u8>)> = out
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| parse_reg_line(l).unwrap_or_else(|| panic!("unparsed hivexget line {l:?}")))
        .collect();
    assert_eq!(got.len(), spec.values.len(), "value count of {path}: {out}");
    for v in &spec.values {
        let i = got
            .iter()
            .position(|g| g.0 == v.name)
            .unwrap_or_else(|| panic!("hivex lacks value {:?} of {path}", v.name));
        let (_, t, d) = got.remove(i);
        match v.ty {
            // hivexget prints strings decoded; REG_DWORD_BIG_ENDIAN as a dword.
            types::REG_SZ | types::REG_EXPAND_SZ => {
                assert_eq!(t, v.ty, "{path}\\{}", v.name);
                assert_eq!(d, v.data, "{path}\\{}", v.name);
            }
            // REG_LINK is printed as a string: compare without the NUL hivexget adds.
            types::REG_LINK => {
                assert_eq!(t, v.ty);
                assert_eq!(d[..d.len() - 2], v.data[..], "{path}\\{}", v.name);
            }
            types::REG_DWORD_BIG_ENDIAN => {
                assert_eq!(
                    u32::from_le_bytes(d[..4].try_into().unwrap()),
                    u32::from_be_bytes(v.data[..4].try_into().unwrap())
                );
            }
            _ => {
                assert_eq!(t, v.ty, "type of {path}\\{}", v.name);
                assert_eq!(d, v.data, "data of {path}\\{}", v.name);
            }
        }
    }
}

/// Walk `spec`: hivex and our reader must both see exactly its keys and values.
fn check_tree(hive: &Path, ours: &Hive<'_>, path: &str, spec: &KeySpec, with_hivexget: bool) {
    let key: Key<'_, '_> = if path.is_empty() {
        ours.root().unwrap()
    } else {
        ours.open_key(path).unwrap().unwrap()
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
    assert_eq!(ours_names, want, "our subkeys of {path}");
    if with_hivexget {
        let mut hx = hivexsh_ls(hive, path);
        hx.sort_by_key(|n| n.to_uppercase());
        assert_eq!(hx, want, "hivex subkeys of {path}");
        check_values_with_hivex(hive, path, spec);
    }
    for k in &spec.subkeys {
        let p = if path.is_empty() {
            k.name.clone()
        } else {
            format!("{path}\\{}", k.name)
        };
        // Keys with hundreds of siblings: listed by hivex above, read below by our reader only.
        check_tree(hive, ours, &p, k, with_hivexget && spec.subkeys.len() < 100);
    }
}

#[test]
fn fixture_hives_read_back_identically_by_hivex_and_by_us() {
    if !require(&["hivexget", "hivexsh"]) {
        return;
    }
    let dir = tempdir();
    for (name, spec) in [
        ("TYPES", types_hive()),
        ("SYSTEM", system_hive()),
        ("SOFTWARE", software_hive()),
    ] {
        let bytes = build(&spec, name).unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, &bytes).unwrap();
        let h = Hive::parse(&bytes).unwrap();
        assert!(!h.pending_log());
        check_tree(&p, &h, "", &spec, true);
    }
    // Spot checks in hivexget's own value format.
    let p = dir.path().join("SYSTEM");
    assert_eq!(
        run(
            "hivexget",
            &[s(&p), "ControlSet001\\Services\\RdAgent", "Start"]
        )
        .trim(),
        "2"
    );
    let t = dir.path().join("TYPES");
    let big = Command::new("hivexget")
        .args([s(&t), "T", "big"])
        .output()
        .unwrap();
    assert!(
        big.stdout == pattern(7, 50_000),
        "hivexget big data differs"
    );
}

// ------------------------------------------------------------ NTFS fixture

struct Volume {
    _dir: tempfile::TempDir,
    img: PathBuf,
    host: PathBuf,
}

/// Build the Windows-like NTFS volume. Directories need a mount (ntfscp only
/// copies files), so this mounts the image with ntfs-3g (FUSE); returns None
/// (test skipped, or failed under CI) when FUSE mounting is not possible here.
fn make_volume() -> Option<Volume> {
    let dir = tempdir();
    let img = dir.path().join("win.ntfs");
    let host = dir.path().join("tree");
    std::fs::create_dir_all(&host).unwrap();
    mkntfs(&img, "16M", "WINSYS");
    let mnt = dir.path().join("mnt");
    let put = |rel: &str, data: &[u8]| {
        let hp = host.join(rel);
        std::fs::create_dir_all(hp.parent().unwrap()).unwrap();
        std::fs::write(&hp, data).unwrap();
        let mp = mnt.join(rel);
        std::fs::create_dir_all(mp.parent().unwrap()).unwrap();
        std::fs::write(&mp, data).unwrap();
    };
    with_ntfs_mounted(&img, &mnt, |mnt| {
        put(
            "Windows/System32/config/SYSTEM",
            &build(&system_hive(), "SYSTEM").unwrap(),
        );
        put(
            "Windows/System32/config/SOFTWARE",
            &build(&software_hive(), "SOFTWARE").unwrap(),
        );
        put(
            "Boot/BCD",
            &build(&KeySpec::new("NewStoreRoot"), "BCD").unwrap(),
        );
        put("small.txt", b"hello, resident data\n");
        put("Data/empty.txt", b"");
        put("Program Files/App/big.bin", &pattern(1, 1_572_864 + 123));
        put("UPPER/Mixed Case Näme.TXT", &pattern(2, 5000));
        for i in 0..300 {
            put(
                &format!("Many/entry_{i:03}.txt"),
                format!("entry {i}\n").as_bytes(),
            );
        }
        // A sparse file: data, an 8 MiB hole, data.
        {
            use std::io::{Seek, SeekFrom, Write};
            let mut f = std::fs::File::create(mnt.join("sparse.bin")).unwrap();
            f.write_all(&pattern(3, 4096)).unwrap();
            f.seek(SeekFrom::Start(8 << 20)).unwrap();
            f.write_all(&pattern(4, 4096)).unwrap();
        }
        // A junction-style symbolic link (IO_REPARSE_TAG_SYMLINK) to C:\Windows\System32.
        std::fs::create_dir_all(mnt.join("syslink")).unwrap();
        let py = r#"
import os, struct, sys
t = 'C:\\Windows\\System32'
sub = ('\\??\\' + t).encode('utf-16le'); pr = t.encode('utf-16le')
body = struct.pack('<HHHHI', 0, len(sub), len(sub), len(pr), 0) + sub + pr
buf = struct.pack('<IHH', 0xA000000C, len(body), 0) + body
os.setxattr(sys.argv[1], 'system.ntfs_reparse_data', buf)
"#;
        run("python3", &["-c", py, s(&mnt.join("syslink"))]);
        // An NTFS-compressed directory (FILE_ATTRIBUTE_COMPRESSED, inherited by new files).
        std::fs::create_dir_all(mnt.join("Compressed")).unwrap();
        let py = "import os, struct, sys; os.setxattr(sys.argv[1], 'system.ntfs_attrib_be', struct.pack('>I', 0x800))";
        run("python3", &["-c", py, s(&mnt.join("Compressed"))]);
        std::fs::write(mnt.join("Compressed/c.txt"), "abc".repeat(100_000)).unwrap();
        // Compressible text, an incompressible unit (stored raw), a hole, text again.
        let mut mixed: Vec<u8> = (0..20_000)
            .flat_map(|i| format!("line {i} of the log\n").into_bytes())
            .collect();
        mixed.extend(pattern(5, 70_000));
        mixed.extend(vec![0u8; 200_000]);
        mixed.extend((0..5_000).flat_map(|i| format!("tail {}\n", i * 7).into_bytes()));
        std::fs::write(mnt.join("Compressed/mixed.bin"), &mixed).unwrap();
        std::fs::write(host.join("Compressed_mixed.bin"), &mixed).unwrap();
    })?;
    // And one file placed by ntfscp, without a mount.
    let notes = host.join("Windows/notes.txt");
    std::fs::write(&notes, b"placed by ntfscp\n").unwrap();
    run("ntfscp", &["-q", s(&img), s(&notes), "/Windows/notes.txt"]);
    Some(Volume {
        _dir: dir,
        img,
        host,
    })
}

fn open_ntfs(img: &Path) -> NtfsFs {
    let src: Arc<dyn BlockSource> = Arc::new(RawReader::open(img).unwrap());
    NtfsFs::open(src).unwrap()
}

fn ntfsls(img: &Path, dir: &str) -> Vec<String> {
    let out = run("ntfsls", &["-a", "-s", "-p", dir, s(img)]);
    let mut v: Vec<String> = out
        .lines()
        .filter(|l| *l != "." && *l != ".." && !l.is_empty())
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[test]
fn ntfs_reads_agree_with_ntfscat_and_ntfsls() {
    if !ntfs_tools() {
        return;
    }
    let Some(vol) = make_volume() else { return };
    let fs = open_ntfs(&vol.img);
    assert_eq!(fs.kind(), "ntfs");
    assert_eq!(fs.label().as_deref(), Some("WINSYS"));
    let files = [
        "/Windows/System32/config/SYSTEM",
        "/Windows/System32/config/SOFTWARE",
        "/Boot/BCD",
        "/small.txt",
        "/Data/empty.txt",
        "/Program Files/App/big.bin",
        "/UPPER/Mixed Case Näme.TXT",
        "/Many/entry_000.txt",
        "/Many/entry_299.txt",
        "/sparse.bin",
        "/Windows/notes.txt",
        "/Compressed/c.txt",
        "/Compressed/mixed.bin",
    ];
    for f in files {
        let want = Command::new("ntfscat")
            .args([s(&vol.img), f])
            .output()
            .unwrap();
        assert!(want.status.success(), "ntfscat {f}");
        let got = fs.read_file(f, 64 << 20).unwrap();
        assert_eq!(got.len(), want.stdout.len(), "{f}");
        assert!(got == want.stdout, "{f} differs from ntfscat");
        let m = fs.stat(f).unwrap().unwrap();
        assert_eq!(m.file_type, FileType::File, "{f}");
        assert_eq!(m.size, u64::try_from(got.len()).unwrap(), "{f}");
        let host = vol.host.join(f.trim_start_matches('/'));
        if host.exists() {
            assert!(
                std::fs::read(&host).unwrap() == got,
                "{f} differs from the source file"
            );
        }
    }
    assert_eq!(
        fs.read_file("/sparse.bin", 64 << 20).unwrap().len(),
        (8 << 20) + 4096
    );
    for d in [
        "/",
        "/Many",
        "/Windows/System32/config",
        "/Program Files/App",
        "/UPPER",
    ] {
        let mut ours: Vec<String> = fs
            .read_dir(d)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        ours.sort();
        assert_eq!(ours, ntfsls(&vol.img, d), "listing of {d}");
    }
    assert_eq!(fs.read_dir("/Many").unwrap().len(), 300);
    // Case-insensitive lookups.
    assert_eq!(
        fs.read_file("/WINDOWS/system32/CONFIG/system", 64 << 20)
            .unwrap(),
        std::fs::read(vol.host.join("Windows/System32/config/SYSTEM")).unwrap()
    );
    assert_eq!(fs.stat("/many").unwrap().unwrap().file_type, FileType::Dir);
    assert!(fs.stat("/nope").unwrap().is_none());
    assert!(fs.stat("/Many/nope/deeper").unwrap().is_none());
    // Bounded reads.
    let e = fs
        .read_file("/Program Files/App/big.bin", 1 << 20)
        .unwrap_err();
    assert!(e.message().contains("limit"), "{e}");
    // Reparse point: a link, re-rooted inside the volume, never followed outside.
    assert_eq!(
        fs.stat("/syslink").unwrap().unwrap().file_type,
        FileType::Symlink
    );
    assert_eq!(fs.read_link("/syslink").unwrap(), "/Windows/System32");
    let p = onramp::fs::resolve(&fs, "/syslink/config/SYSTEM", true).unwrap();
    assert_eq!(p, "/Windows/System32/config/SYSTEM");
    // Compressed data (LZNT1) is decompressed: checked against ntfscat above,
    // and ntfs-3g did compress it (FILE_ATTRIBUTE_COMPRESSED on $DATA).
    let info = run("ntfsinfo", &["-F", "/Compressed/mixed.bin", s(&vol.img)]);
    assert!(info.contains("COMPRESSED"), "{info}");
    // UUID as blkid prints it.
    if require(&["blkid"]) {
        let out = run("blkid", &["-o", "value", "-s", "UUID", s(&vol.img)]);
        assert_eq!(fs.uuid().unwrap(), out.trim());
    }
    // Probe.
    let src: Arc<dyn BlockSource> = Arc::new(RawReader::open(&vol.img).unwrap());
    assert!(onramp::fs::ntfs::probe(src).unwrap().is_some());
    let not = tempdir();
    let z = not.path().join("zeros");
    std::fs::write(&z, vec![0u8; 1 << 20]).unwrap();
    let src: Arc<dyn BlockSource> = Arc::new(RawReader::open(&z).unwrap());
    assert!(onramp::fs::ntfs::probe(src).unwrap().is_none());
}

fn expected_info() -> WindowsInfo {
    use windows::*;
    let svc = |name: &str, start: u64, image: &str| ServiceInfo {
        name: name.into(),
        present: true,
        start: Some(start),
        start_type: Some(start_type_name(start).into()),
        image_path: Some(image.into()),
    };
    WindowsInfo {
        system_root: "/Windows".into(),
        product_name: Some("Windows Server 2022 Datacenter".into()),
        edition: Some("ServerDatacenter".into()),
        installation_type: Some("Server".into()),
        current_version: Some("6.3".into()),
        version: Some("10.0".into()),
        display_version: Some("21H2".into()),
        build: Some("20348".into()),
        ubr: Some(2113),
        architecture: Some("AMD64".into()),
        hostname: Some("SQLSP01".into()),
        tcpip_hostname: Some("sqlsp01".into()),
        current_control_set: "ControlSet001".into(),
        applications: vec![
            Application {
                name: "Microsoft SharePoint Server 2019".into(),
                version: Some("16.0.10337.12109".into()),
                publisher: None,
                key: "SharePoint".into(),
                wow64: false,
            },
            Application {
                name: "Microsoft SQL Server 2019 (64-bit)".into(),
                version: Some("15.0.2000.5".into()),
                publisher: Some("Microsoft Corporation".into()),
                key: "{F2A5B2D1-0000-4B8B-9A1E-SQL2019}".into(),
                wow64: false,
            },
            Application {
                name: "Notepad++ (32-bit x86)".into(),
                version: Some("8.6".into()),
                publisher: None,
                key: "Notepad++".into(),
                wow64: true,
            },
        ],
        sql_server: vec![SqlInstance {
            name: "MSSQLSERVER".into(),
            id: "MSSQL15.MSSQLSERVER".into(),
            version: Some("15.0.2000.5".into()),
            patch_level: Some("15.0.2000.5".into()),
            edition: Some("Enterprise Edition".into()),
        }],
        sharepoint: vec![SharePoint {
            version: "16.0".into(),
            build: Some("16.0.10337.12109".into()),
        }],
        rdp: Rdp {
            enabled: Some(true),
            deny_ts_connections: Some(0),
            port: Some(3389),
        },
        generalization: Generalization {
            image_state: Some("IMAGE_STATE_GENERALIZE_RESEAL_TO_OOBE".into()),
            generalization_state: Some(7),
            setup_cmdline: Some("oobe\\windeploy.exe".into()),
            generalized: true,
        },
        san_policy: Some(1),
        san_policy_name: Some("OnlineAll".into()),
        real_time_is_universal: Some(1),
        services: vec![
            svc(
                "WindowsAzureGuestAgent",
                2,
                "C:\\WindowsAzure\\GuestAgent\\WindowsAzureGuestAgent.exe",
            ),
            svc("RdAgent", 2, "C:\\WindowsAzure\\Packages\\WaAppAgent.exe"),
            svc(
                "TermService",
                3,
                "%SystemRoot%\\System32\\svchost.exe -k NetworkService",
            ),
        ],
        pagefiles: vec!["?:\\pagefile.sys".into()],
        firewall: Firewall {
            domain: Some(true),
            private: Some(false),
            public: Some(true),
        },
        bcd_present: true,
        warnings: vec![],
    }
}

#[test]
fn windows_inspection_equals_the_fixture() {
    if !ntfs_tools() {
        return;
    }
    let Some(vol) = make_volume() else { return };
    let fs = open_ntfs(&vol.img);
    let t = std::time::Instant::now();
    let info = windows::inspect(&fs).unwrap();
    eprintln!("windows::inspect took {:?}", t.elapsed());
    assert_eq!(info, expected_info());
    let json = serde_json::to_value(&info).unwrap();
    assert_eq!(json["sql_server"][0]["name"], "MSSQLSERVER");
    assert_eq!(json["rdp"]["port"], 3389);
    let human = info.human_lines().join("\n");
    assert!(human.contains("Windows Server 2022 Datacenter (ServerDatacenter), version 10.0 21H2 build 20348.2113, AMD64"), "{human}");
    assert!(human.contains("SQL Server: instance MSSQLSERVER (MSSQL15.MSSQLSERVER) version 15.0.2000.5 Enterprise Edition"), "{human}");
}

// ------------------------------------------------------------ mutations

const MUTANT_ENV: &str = "ONRAMP_MUTANT_DIR";

/// An in-memory disk, for mutants.
struct Mem(Vec<u8>);
impl BlockSource for Mem {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> onramp::Result<()> {
        onramp::block::check_range(self.size(), offset, buf.len() as u64)?;
        let o = usize::try_from(offset).unwrap();
        buf.copy_from_slice(&self.0[o..o + buf.len()]);
        Ok(())
    }
    fn format_name(&self) -> &'static str {
        "mem"
    }
}

fn walk_hive(bytes: &[u8]) -> bool {
    let Ok(h) = Hive::parse(bytes) else {
        return false;
    };
    let mut todo = vec![h.root().unwrap()];
    let mut seen = 0;
    let mut ok = true;
    while let Some(k) = todo.pop() {
        seen += 1;
        if seen > 5000 {
            break;
        }
        ok &= k.name().is_ok();
        ok &= k.values().is_ok();
        match k.subkeys() {
            Ok(s) => todo.extend(s),
            Err(_) => ok = false,
        }
    }
    ok
}

/// Paths the NTFS walk reads; the mutation test aims at their MFT records.
const WALK_DIRS: [&str; 4] = [
    "/",
    "/Many",
    "/Windows/System32/config",
    "/Program Files/App",
];

fn walk_ntfs(img: Vec<u8>) -> bool {
    let src: Arc<dyn BlockSource> = Arc::new(Mem(img));
    let Ok(fs) = NtfsFs::open(src) else {
        return false;
    };
    let mut ok = windows::inspect(&fs).is_ok();
    for d in WALK_DIRS {
        match fs.read_dir(d) {
            Ok(es) => {
                for e in es.iter().filter(|e| !e.name.starts_with('$')).take(12) {
                    let path = format!("{}/{}", d.trim_end_matches('/'), e.name);
                    match fs.stat(&path) {
                        Ok(Some(m))
                            if m.file_type == FileType::File
                                && !path.starts_with("/Compressed") =>
                        {
                            ok &= fs.read_file(&path, 16 << 20).is_ok();
                        }
                        Ok(_) => {}
                        Err(_) => ok = false,
                    }
                }
            }
            Err(_) => ok = false,
        }
    }
    ok
}

/// Child side: read every mutant in $ONRAMP_MUTANT_DIR (hive files, or
/// `base.img` plus `patches.txt` lines `offset hexbytes`); errors are fine.
#[test]
fn mutant_child() {
    let Some(dir) = std::env::var_os(MUTANT_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let (mut n, mut failed) = (0, 0);
    if dir.join("patches.txt").exists() {
        let base = std::fs::read(dir.join("base.img")).unwrap();
        for line in std::fs::read_to_string(dir.join("patches.txt"))
            .unwrap()
            .lines()
        {
            let (off, hex) = line.split_once(' ').unwrap();
            let off: usize = off.parse().unwrap();
            let mut m = base.clone();
            for (i, c) in hex.as_bytes().chunks(2).enumerate() {
                m[off + i] = u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap();
            }
            n += 1;
            if !walk_ntfs(m) {
                failed += 1;
            }
        }
    } else {
        for e in std::fs::read_dir(&dir).unwrap() {
            let bytes = std::fs::read(e.unwrap().path()).unwrap();
            n += 1;
            if !walk_hive(&bytes) {
                failed += 1;
            }
        }
    }
    eprintln!("MUTANTS read={n} with_errors={failed}");
}

fn run_mutants(dir: &Path, expected: usize) {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("timeout")
        .args(["300", "prlimit", "--as=268435456", "--"])
        .arg(&exe)
        .args(["--exact", "mutant_child", "--nocapture", "--test-threads=1"])
        .env(MUTANT_ENV, dir)
        .env("MALLOC_ARENA_MAX", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "mutant child failed ({}):\n{}",
        out.status,
        err
    );
    assert!(
        !err.contains("panicked"),
        "a panic while reading mutants:\n{err}"
    );
    let line = err
        .lines()
        .find(|l| l.starts_with("MUTANTS"))
        .unwrap_or_else(|| panic!("no summary from the mutant child:\n{err}"));
    eprintln!("{line}");
    let count = |k: &str| -> usize {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(count("read="), expected, "{line}");
    // Many mutants must be noticed (some hit padding, timestamps or unused fields).
    assert!(
        count("with_errors=") * 5 >= expected,
        "too few mutants gave errors: {line}"
    );
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n).unwrap()).unwrap()
    }
}

#[test]
fn mutated_hives_give_errors_not_panics() {
    if !require(&["timeout", "prlimit"]) {
        return;
    }
    let dir = tempdir();
    let base = build(&system_hive(), "SYSTEM").unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let total: usize = std::env::var("ONRAMP_HIVE_MUTANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    for i in 0..total {
        let mut m = base.clone();
        match i % 4 {
            // Cell sizes / list counts / offsets: 32-bit fields anywhere in the bins.
            0 | 1 => {
                let at = 4096 + rng.below(base.len() - 4100) / 4 * 4;
                let v: u32 = match rng.below(4) {
                    0 => 0xFFFF_FFFF,
                    1 => 0x8000_0000,
                    2 => u32::try_from(rng.below(1 << 20)).unwrap(),
                    _ => rng.next() as u32,
                };
                m[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
            // Single bytes.
            2 => {
                let at = 4096 + rng.below(base.len() - 4096);
                m[at] = rng.next() as u8;
            }
            // Base block fields (root offset, data size, versions).
            _ => {
                let at = [4, 8, 20, 24, 28, 36, 40][rng.below(7)];
                m[at..at + 4].copy_from_slice(&(rng.next() as u32).to_le_bytes());
            }
        }
        if i % 8 != 7 {
            let c = onramp::fs::regf::checksum(&m);
            m[508..512].copy_from_slice(&c.to_le_bytes());
        }
        std::fs::write(dir.path().join(format!("hive{i:04}")), &m).unwrap();
    }
    run_mutants(dir.path(), total);
}

#[test]
fn mutated_ntfs_volumes_give_errors_not_panics() {
    if !ntfs_tools() || !require(&["timeout", "prlimit"]) {
        return;
    }
    let Some(vol) = make_volume() else { return };
    let base = std::fs::read(&vol.img).unwrap();
    let cluster = 4096usize;
    let mft_lcn =
        usize::try_from(u64::from_le_bytes(base[0x30..0x38].try_into().unwrap())).unwrap();
    let mft = mft_lcn * cluster;
    // Targets: in-use FILE records of the MFT, and INDX blocks (/Many's index allocation).
    let fs = open_ntfs(&vol.img);
    let mut inos: Vec<u64> = (0..12).collect();
    for d in WALK_DIRS {
        inos.push(fs.stat(d).unwrap().unwrap().ino);
        for e in fs
            .read_dir(d)
            .unwrap()
            .iter()
            .filter(|e| !e.name.starts_with('$'))
            .take(12)
        {
            inos.push(e.ino);
        }
    }
    for p in [
        "/Windows",
        "/Windows/System32",
        "/Program Files",
        "/Boot",
        "/Boot/BCD",
    ] {
        inos.push(fs.stat(p).unwrap().unwrap().ino);
    }
    inos.sort();
    inos.dedup();
    let records: Vec<usize> = inos
        .iter()
        .map(|&i| mft + usize::try_from(i).unwrap() * 1024)
        .collect();
    let indx: Vec<usize> = (0..base.len() / cluster)
        .map(|c| c * cluster)
        .filter(|&o| &base[o..o + 4] == b"INDX")
        .collect();
    assert!(
        records.len() > 40 && !indx.is_empty(),
        "{} records, {} INDX",
        records.len(),
        indx.len()
    );
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    let mut patches = String::new();
    let mut add = |off: usize, bytes: &[u8]| {
        patches.push_str(&format!(
            "{off} {}\n",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ));
    };
    let total: usize = std::env::var("ONRAMP_NTFS_MUTANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120);
    for i in 0..total {
        let rec = records[rng.below(records.len())];
        let u16_at = |o: usize| usize::from(u16::from_le_bytes([base[o], base[o + 1]]));
        match i % 8 {
            // Update sequence array: offset, count, or the fixup values.
            0 => add(rec + 4 + rng.below(4), &[rng.next() as u8]),
            1 => add(rec + u16_at(rec + 4) + rng.below(6), &[rng.next() as u8]),
            // First attribute offset.
            2 => add(rec + 0x14, &[rng.next() as u8]),
            // An attribute header: type, length, non-resident flag, name/value offsets.
            3 | 4 => {
                let first = u16_at(rec + 0x14).min(1000);
                let at = rec + first + rng.below(24).min(1016 - first);
                let v = rng.next();
                add(at, &v.to_le_bytes()[..1 + rng.below(4)]);
            }
            // Anywhere in the used part of the record (run lists, $FILE_NAME, index roots).
            5 => {
                let used = u16_at(rec + 0x18).clamp(64, 1024);
                add(rec + 0x30 + rng.below(used - 0x30), &[rng.next() as u8]);
            }
            // INDX blocks of large directories.
            6 => {
                let b = indx[rng.below(indx.len())];
                add(b + rng.below(512), &[rng.next() as u8]);
            }
            // Boot sector fields.
            _ => {
                let at = [0x0B, 0x0C, 0x0D, 0x28, 0x30, 0x31, 0x38, 0x40, 0x44][rng.below(9)];
                add(at, &[rng.next() as u8]);
            }
        }
    }
    let dir = tempdir();
    if let Some(keep) = std::env::var_os("ONRAMP_KEEP_MUTANTS") {
        std::fs::create_dir_all(&keep).unwrap();
        std::fs::write(Path::new(&keep).join("base.img"), &base).unwrap();
        std::fs::write(Path::new(&keep).join("patches.txt"), &patches).unwrap();
    }
    std::fs::write(dir.path().join("base.img"), &base).unwrap();
    std::fs::write(dir.path().join("patches.txt"), patches).unwrap();
    run_mutants(dir.path(), total);
}
