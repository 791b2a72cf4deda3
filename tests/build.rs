//! `onramp build`: recipes, manifests, reproducibility, strict errors.

mod common;
use common::*;
use std::path::Path;

fn recipe(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(&p, body).unwrap();
    p
}

fn basic(dir: &Path, name: &str, extra_target: &str) -> std::path::PathBuf {
    recipe(
        dir,
        name,
        &format!(
            "name: {name}\nsource:\n  path: src.raw\ntarget:\n  format: azure-vhd\n{extra_target}output:\n  dir: out\n"
        ),
    )
}

#[test]
fn builds_and_writes_a_manifest() {
    let d = tempdir();
    let src = d.path().join("src.raw");
    make_raw_with_holes(&src, 21 << 20);
    let guard = InputGuard::new(&src);
    let r = basic(d.path(), "one", "");
    let j = onramp_ok(&["build", s(&r), "--json"]);
    guard.check();
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    assert_eq!(v[0]["status"], "built");
    let art = d.path().join("out/one.vhd");
    let m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.path().join("out/one.vhd.manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(m["output"]["sha256"].as_str().unwrap(), sha256_file(&art));
    assert_eq!(m["source"]["sha256"].as_str().unwrap(), sha256_file(&src));
    assert_eq!(m["source"]["format"], "raw");
    assert_eq!(m["output"]["virtual_size"].as_u64(), Some(21 << 20));
    assert_eq!(m["recipe"]["sha256"].as_str().unwrap(), sha256_file(&r));
    assert_eq!(m["onramp_version"], env!("CARGO_PKG_VERSION"));
    assert!(m["timings"]["total_s"].as_f64().is_some());
    // Second build is skipped; --rebuild gives the same digest.
    let j = onramp_ok(&["build", s(&r), "--json"]);
    assert!(j.contains("\"skipped\""));
    let first = sha256_file(&art);
    onramp_ok(&["build", s(&r), "--rebuild"]);
    assert_eq!(first, sha256_file(&art));
}

#[test]
fn concurrent_builds_equal_serial() {
    let d = tempdir();
    make_raw_with_holes(&d.path().join("src.raw"), 21 << 20);
    let a = basic(d.path(), "a", "");
    let b = basic(d.path(), "b", "  size: 30M\n");
    onramp_ok(&["build", s(&a), s(&b), "--jobs", "2"]);
    let par = (
        sha256_file(&d.path().join("out/a.vhd")),
        sha256_file(&d.path().join("out/b.vhd")),
    );
    onramp_ok(&["build", s(&a), "--jobs", "1", "--rebuild"]);
    onramp_ok(&["build", s(&b), "--jobs", "1", "--rebuild"]);
    let ser = (
        sha256_file(&d.path().join("out/a.vhd")),
        sha256_file(&d.path().join("out/b.vhd")),
    );
    assert_eq!(par, ser);
}

#[test]
fn dry_run_writes_nothing() {
    let d = tempdir();
    make_raw_with_holes(&d.path().join("src.raw"), 21 << 20);
    let r = basic(d.path(), "dry", "");
    let out = onramp_ok(&["build", s(&r), "--dry-run"]);
    assert!(out.contains("plan"));
    assert!(!d.path().join("out").exists());
}

fn expect_exit2(r: &Path, needles: &[&str]) {
    let o = onramp(&["build", s(r)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert!(err.contains(s(r)), "no file name in: {err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in: {err}");
    }
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
}

#[test]
fn broken_recipes_name_file_line_and_field() {
    let d = tempdir();
    make_raw_with_holes(&d.path().join("src.raw"), 21 << 20);
    let r = recipe(
        d.path(),
        "unknown",
        "name: x\nsource:\n  path: src.raw\ntarget:\n  format: azure-vhd\n  colour: blue\n",
    );
    expect_exit2(&r, &["line 6", "colour"]);
    let r = recipe(
        d.path(),
        "digest",
        &format!(
            "name: x\nsource:\n  path: src.raw\n  sha256: {}\ntarget:\n  format: azure-vhd\n",
            "0".repeat(64)
        ),
    );
    expect_exit2(&r, &["source.sha256"]);
    let r = recipe(
        d.path(),
        "missing",
        "name: x\nsource:\n  path: nope.raw\ntarget:\n  format: azure-vhd\n",
    );
    expect_exit2(&r, &["source.path", "nope.raw"]);
    let r = recipe(
        d.path(),
        "small",
        "name: x\nsource:\n  path: src.raw\ntarget:\n  format: azure-vhd\n  size: 1M\n",
    );
    expect_exit2(&r, &["target.size"]);
    let r = recipe(
        d.path(),
        "fmt",
        "name: x\nsource:\n  path: src.raw\ntarget:\n  format: floppy\n",
    );
    expect_exit2(&r, &["target.format", "floppy"]);
    let r = recipe(
        d.path(),
        "type",
        "name: x\nsource:\n  path: src.raw\ntarget:\n  format: azure-vhd\n  size: [1]\n",
    );
    expect_exit2(&r, &["line 6"]);
    let r = recipe(d.path(), "waiver", "name: x\nsource:\n  path: src.raw\ntarget:\n  format: azure-vhd\nvalidate:\n  waivers:\n    - rule: azure.nope\n      reason: because\n");
    expect_exit2(&r, &["validate.waivers", "azure.nope"]);
    let r = recipe(d.path(), "var", "name: x\nsource:\n  path: ${ONRAMP_TEST_UNSET_VAR}/src.raw\ntarget:\n  format: azure-vhd\n");
    expect_exit2(&r, &["source.path", "ONRAMP_TEST_UNSET_VAR"]);
}

#[test]
fn shipped_recipes_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes");
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "yaml") {
            let text = std::fs::read_to_string(&p).unwrap();
            onramp::recipe::parse(&p, &text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
    }
}

#[test]
fn validation_failure_fails_the_build_and_is_recorded() {
    let d = tempdir();
    make_raw_with_holes(&d.path().join("src.raw"), 10 << 20);
    // 10 MiB is below Azure's 20 MiB minimum.
    let r = recipe(
        d.path(),
        "tiny",
        "name: tiny\nsource:\n  path: src.raw\ntarget:\n  cloud: azure\n  format: azure-vhd\noutput:\n  dir: out\n",
    );
    let o = onramp(&["build", s(&r)]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.path().join("out/tiny.vhd.manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(m["validation"]["status"], "failed");
    assert!(m["validation"]["failed"]
        .to_string()
        .contains("azure.disk.min-size"));
    // A failed build is not "up to date": it runs (and fails) again.
    assert_eq!(onramp(&["build", s(&r)]).status.code(), Some(1));
    // A reviewed waiver lets it through and is recorded.
    let r = recipe(
        d.path(),
        "tiny2",
        "name: tiny2\nsource:\n  path: src.raw\ntarget:\n  cloud: azure\n  format: azure-vhd\nvalidate:\n  waivers:\n    - rule: azure.disk.min-size\n      reason: test disk\noutput:\n  dir: out\n",
    );
    onramp_ok(&["build", s(&r)]);
    let m: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.path().join("out/tiny2.vhd.manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(m["validation"]["waived"][0]["rule"], "azure.disk.min-size");
}

#[test]
fn publishes_to_a_gallery_and_never_prints_secrets() {
    let d = tempdir();
    make_raw_with_holes(&d.path().join("src.raw"), 21 << 20);
    let r = recipe(
        d.path(),
        "pub",
        "name: pub\nsource:\n  path: src.raw\ntarget:\n  format: azure-vhd\noutput:\n  dir: out\npublish:\n  - to: dir:gallery\n    sas: ${ONRAMP_TEST_SECRET_SAS}\n",
    );
    let secret = "sv=2099&sig=TOPSECRETVALUE";
    let run = |args: &[&str]| {
        std::process::Command::new(onramp_bin())
            .args(args)
            .env("ONRAMP_TEST_SECRET_SAS", secret)
            .output()
            .unwrap()
    };
    let o = run(&["build", s(&r), "--dry-run", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("TOPSECRET"));
    let o = run(&["build", s(&r), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        !out.contains("TOPSECRET") && !String::from_utf8_lossy(&o.stderr).contains("TOPSECRET")
    );
    let sha = sha256_file(&d.path().join("out/pub.vhd"));
    assert!(
        d.path().join("gallery").join(&sha).is_dir(),
        "gallery lacks {sha}: {out}"
    );
    let index = std::fs::read_to_string(d.path().join("gallery/index.json")).unwrap();
    assert!(index.contains(&sha) && index.contains("\"pub\""));
    for f in walk(d.path()) {
        if let Ok(t) = std::fs::read_to_string(&f) {
            assert!(
                !t.contains("TOPSECRET"),
                "secret written into {}",
                f.display()
            );
        }
    }
}

fn walk(p: &Path) -> Vec<std::path::PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(p).unwrap().flatten() {
        let q = e.path();
        if q.is_dir() {
            v.extend(walk(&q));
        } else if q.extension().is_some_and(|x| x == "json") {
            v.push(q);
        }
    }
    v
}

#[test]
fn a_changed_agent_bundle_is_rebuilt() {
    if !require(&["mkfs.ext4", "sfdisk"]) {
        return;
    }
    let d = tempdir();
    let disk = make_ext4_disk(d.path(), "src", 40);
    std::fs::rename(&disk, d.path().join("src.raw")).unwrap();
    let agent = d.path().join("agent");
    std::fs::create_dir(&agent).unwrap();
    std::fs::write(
        agent.join("agent.yaml"),
        "name: tiny\nversion: \"1\"\nfiles:\n  - src: hello.txt\n    dest: /etc/tiny/hello.txt\n",
    )
    .unwrap();
    std::fs::write(agent.join("hello.txt"), "one\n").unwrap();
    let r = recipe(
        d.path(),
        "agent",
        "name: agent\nsource:\n  path: src.raw\ntarget:\n  format: raw\nagent: agent\noutput:\n  dir: out\n",
    );
    let j = onramp_ok(&["build", s(&r), "--json"]);
    assert!(j.contains("\"built\""), "{j}");
    let j = onramp_ok(&["build", s(&r), "--json"]);
    assert!(j.contains("\"skipped\""), "same inputs: {j}");
    let first = sha256_file(&d.path().join("out/agent.raw"));
    // Same recipe text, different bundle content: not up to date.
    std::fs::write(agent.join("hello.txt"), "two\n").unwrap();
    let j = onramp_ok(&["build", s(&r), "--json"]);
    assert!(j.contains("\"built\""), "changed bundle: {j}");
    assert_ne!(first, sha256_file(&d.path().join("out/agent.raw")));
}
