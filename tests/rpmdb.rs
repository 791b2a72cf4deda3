//! The rpm sqlite database reader (src/fs/sqlite.rs + src/guest/rpmdb.rs)
//! against the real rpm: databases made by `rpmbuild` + `rpm -i --justdb`
//! (tests/common/rpm.rs), listed by `rpm -qa --qf '%{NAME} %{EVR} %{ARCH}'`
//! as the oracle. The same database re-paged by the sqlite3 tool (512-byte
//! and 64 KiB pages: deeper b-trees, long overflow chains) must list the
//! same. Mutated and truncated databases give an error or a result, never a
//! panic.

mod common;

use common::rpm::{build_rpmdb, rpm_qa, Pkg};
use common::{require, run, tempdir};
use onramp::guest::rpmdb::read_packages;
use std::path::Path;

fn ours(file: &Path) -> Vec<String> {
    let r = read_packages(&std::fs::read(file).unwrap()).unwrap();
    assert!(r.skipped.is_empty(), "{:?}", r.skipped);
    let mut v: Vec<String> = r
        .packages
        .iter()
        .map(|p| {
            format!(
                "{} {} {}",
                p.name,
                p.evr(),
                p.arch.as_deref().unwrap_or("(none)")
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn packages_match_rpm_qa_and_mutations_never_panic() {
    if !require(&["rpm", "rpmbuild", "sqlite3"]) {
        return;
    }
    let d = tempdir();
    let names: Vec<String> = (0..60).map(|i| format!("pkg-{i:02}")).collect();
    let versions: Vec<String> = (0..60).map(|i| format!("1.{i}.{}", i * 7)).collect();
    let releases: Vec<String> = (0..60).map(|i| format!("{i}.el9_3")).collect();
    let mut pkgs = vec![Pkg {
        // A large header: its blob spills over several overflow pages.
        description_len: 40_000,
        ..Pkg::new("kernel-core", "5.14.0", "362.8.1.el9_3", "x86_64")
    }];
    for i in 0..60 {
        pkgs.push(Pkg {
            epoch: (i % 4 == 0).then_some(u32::try_from(i % 3).unwrap()),
            description_len: if i % 10 == 5 { 6000 } else { 1 },
            ..Pkg::new(
                &names[i],
                &versions[i],
                &releases[i],
                if i % 2 == 1 { "noarch" } else { "x86_64" },
            )
        });
    }
    let started = std::time::Instant::now();
    let db = build_rpmdb(d.path(), &pkgs);
    eprintln!(
        "rpmbuild + rpm -i --justdb of {} packages: {:.1} s",
        pkgs.len(),
        started.elapsed().as_secs_f64()
    );
    let file = db.join("rpmdb.sqlite");
    let theirs = rpm_qa(&db);
    assert_eq!(theirs.len(), pkgs.len());
    assert!(theirs.contains(&"pkg-04 1:1.4.28-4.el9_3 x86_64".to_string()));
    assert!(theirs.contains(&"pkg-00 0:1.0.0-0.el9_3 x86_64".to_string()));
    assert_eq!(ours(&file), theirs);

    // Re-paged copies: same rows, different b-tree shapes.
    for ps in [512, 65536] {
        let sub = d.path().join(format!("p{ps}"));
        std::fs::create_dir_all(&sub).unwrap();
        let copy = sub.join("rpmdb.sqlite");
        std::fs::copy(&file, &copy).unwrap();
        run(
            "sqlite3",
            &[
                copy.to_str().unwrap(),
                &format!("PRAGMA journal_mode=DELETE; PRAGMA page_size={ps}; VACUUM;"),
            ],
        );
        let got = run("sqlite3", &[copy.to_str().unwrap(), "PRAGMA page_size;"]);
        assert_eq!(got.trim(), ps.to_string());
        assert_eq!(rpm_qa(&sub), theirs, "rpm reads the {ps}-byte-page copy");
        assert_eq!(ours(&copy), theirs, "{ps}-byte pages");
    }

    // Mutations: every 197th byte flipped (one at a time) and truncations.
    let bytes = std::fs::read(&file).unwrap();
    let started = std::time::Instant::now();
    let (mut ok, mut err) = (0, 0);
    let mut i = 0;
    while i < bytes.len() {
        let mut m = bytes.clone();
        m[i] ^= 0xa5;
        match read_packages(&m) {
            Ok(_) => ok += 1,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                err += 1
            }
        }
        i += 197;
    }
    for cut in [
        0,
        50,
        100,
        4095,
        4096,
        8192,
        bytes.len() / 2,
        bytes.len() - 1,
    ] {
        let _ = read_packages(&bytes[..cut]);
    }
    // A child pointer aimed at its own page: a loop, reported as one.
    let mut m = bytes.clone();
    let ps = usize::from(u16::from_be_bytes([m[16], m[17]]));
    let root = {
        let db = onramp::fs::sqlite::Database::open(&bytes).unwrap();
        db.table_root("Packages").unwrap().unwrap()
    };
    let off = (root as usize - 1) * ps;
    assert_eq!(m[off], 5, "the Packages root is an interior page");
    m[off + 8..off + 12].copy_from_slice(&root.to_be_bytes());
    let e = read_packages(&m).unwrap_err().to_string();
    assert!(e.contains("loop"), "{e}");
    eprintln!(
        "{} mutated databases: {ok} read, {err} errors, {:.2} s",
        ok + err,
        started.elapsed().as_secs_f64()
    );
}
