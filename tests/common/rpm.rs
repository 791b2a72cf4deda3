//! rpm package databases built by the real rpm tools, for the rpmdb reader's
//! tests: `rpmbuild` makes empty packages from one generated spec (the first
//! package is the main one, the rest are `%package -n` subpackages with their
//! own Version/Release/Epoch/BuildArch), `rpm -i --justdb` installs them into
//! a fresh `--dbpath` (sqlite backend on Debian bookworm's rpm 4.18), and
//! [`rpm_qa`] is the oracle listing.

use super::run;
use std::path::{Path, PathBuf};

/// One package to build.
pub struct Pkg<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub release: &'a str,
    pub epoch: Option<u32>,
    /// "x86_64" or "noarch" (the first package must be "x86_64").
    pub arch: &'a str,
    /// Bytes of %description: large values spill into SQLite overflow pages.
    pub description_len: usize,
}

impl<'a> Pkg<'a> {
    pub fn new(name: &'a str, version: &'a str, release: &'a str, arch: &'a str) -> Self {
        Pkg {
            name,
            version,
            release,
            epoch: None,
            arch,
            description_len: 1,
        }
    }
}

/// Build `pkgs` and install them (database only) into `work/db`; returns the
/// directory holding `rpmdb.sqlite`.
pub fn build_rpmdb(work: &Path, pkgs: &[Pkg]) -> PathBuf {
    assert_eq!(
        pkgs[0].arch, "x86_64",
        "the main package carries the build arch"
    );
    let top = work.join("rpmbuild");
    let mut spec =
        String::from("%global debug_package %{nil}\n%global _build_id_links none\nLicense: MIT\n");
    for (i, p) in pkgs.iter().enumerate() {
        if i == 0 {
            spec += &format!("Name: {}\n", p.name);
        } else {
            spec += &format!("%package -n {}\n", p.name);
        }
        spec += &format!(
            "Version: {}\nRelease: {}\nSummary: onramp test package {}\n",
            p.version, p.release, p.name
        );
        if let Some(e) = p.epoch {
            spec += &format!("Epoch: {e}\n");
        }
        if p.arch == "noarch" {
            spec += "BuildArch: noarch\n";
        }
        let desc = "d".repeat(p.description_len.max(1));
        if i == 0 {
            spec += &format!("%description\n{desc}\n%files\n");
        } else {
            spec += &format!("%description -n {0}\n{desc}\n%files -n {0}\n", p.name);
        }
    }
    std::fs::create_dir_all(&top).unwrap();
    let spec_path = work.join("fixture.spec");
    std::fs::write(&spec_path, spec).unwrap();
    run(
        "rpmbuild",
        &[
            "-bb",
            "--quiet",
            "--target",
            "x86_64",
            "--define",
            &format!("_topdir {}", top.display()),
            spec_path.to_str().unwrap(),
        ],
    );
    let mut rpms = Vec::new();
    for arch in ["x86_64", "noarch"] {
        if let Ok(rd) = std::fs::read_dir(top.join("RPMS").join(arch)) {
            rpms.extend(rd.map(|e| e.unwrap().path().to_string_lossy().into_owned()));
        }
    }
    assert_eq!(rpms.len(), pkgs.len(), "{rpms:?}");
    let db = work.join("db");
    std::fs::create_dir_all(&db).unwrap();
    let dbs = db.to_string_lossy().into_owned();
    let mut args = vec![
        "--dbpath",
        &dbs,
        "-i",
        "--justdb",
        "--nodeps",
        "--ignorearch",
    ];
    args.extend(rpms.iter().map(String::as_str));
    run("rpm", &args);
    assert!(db.join("rpmdb.sqlite").exists());
    db
}

/// `rpm -qa` of a database directory: sorted "NAME EVR ARCH" lines (ARCH is
/// "(none)" where the header has none).
pub fn rpm_qa(dbpath: &Path) -> Vec<String> {
    let out = run(
        "rpm",
        &[
            "--dbpath",
            dbpath.to_str().unwrap(),
            "-qa",
            "--qf",
            "%{NAME} %{EVR} %{ARCH}\\n",
        ],
    );
    let mut v: Vec<String> = out.lines().map(str::to_string).collect();
    v.sort();
    v
}
