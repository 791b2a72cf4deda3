//! Shared command lines of the image tests: `onramp convert` / `onramp info
//! --json`, and the `qemu-img convert` calls that build fixtures and oracles.

use super::{onramp_ok, qemu_img, s};
use std::path::Path;

/// `convert INPUT OUTPUT --to TO EXTRA...` as an onramp argument list.
pub fn convert_args<'a>(
    input: &'a Path,
    output: &'a Path,
    to: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec!["convert", s(input), s(output), "--to", to];
    args.extend_from_slice(extra);
    args
}

/// `onramp convert INPUT OUTPUT --to TO EXTRA...`, must exit 0; returns stdout.
pub fn convert_ok(input: &Path, output: &Path, to: &str, extra: &[&str]) -> String {
    onramp_ok(&convert_args(input, output, to, extra))
}

/// `onramp info --json ARGS...`, must exit 0; the parsed report.
pub fn info_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["info", "--json"];
    all.extend_from_slice(args);
    let out = onramp_ok(&all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("onramp {all:?}: bad json ({e}): {out}"))
}

/// `qemu-img convert -f raw -O FMT [-o OPTS] RAW OUT` (no `-o` when `opts`
/// is empty): the fixture builder for every format qemu-img writes.
pub fn qemu_from_raw(raw: &Path, out: &Path, fmt: &str, opts: &str) {
    let mut args = vec!["convert", "-f", "raw", "-O", fmt];
    if !opts.is_empty() {
        args.extend(["-o", opts]);
    }
    args.extend([s(raw), s(out)]);
    qemu_img(&args);
}

/// `qemu-img convert -f FMT -O raw IMG OUT`: the oracle's raw of an image.
pub fn qemu_raw(img: &Path, fmt: &str, out: &Path) {
    qemu_img(&["convert", "-f", fmt, "-O", "raw", s(img), s(out)]);
}

/// `qemu-img info -f FMT --output=json IMG`, parsed.
pub fn qemu_info(img: &Path, fmt: &str) -> serde_json::Value {
    let out = qemu_img(&["info", "-f", fmt, "--output=json", s(img)]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("qemu-img info: bad json ({e}): {out}"))
}

/// `qemu-img check -f FMT IMG` must pass; returns its stdout.
pub fn qemu_check_ok(img: &Path, fmt: &str) -> String {
    let c = super::run_output("qemu-img", &["check", "-f", fmt, s(img)]);
    let out = String::from_utf8_lossy(&c.stdout).into_owned();
    assert!(
        c.status.success(),
        "qemu-img check -f {fmt} {}: {out}{}",
        img.display(),
        String::from_utf8_lossy(&c.stderr)
    );
    out
}

/// `dir/NAME`: a sparse raw disk of `size` bytes from [`super::make_raw_with_holes`].
pub fn holes_raw(dir: &Path, name: &str, size: u64) -> std::path::PathBuf {
    let p = dir.join(name);
    super::make_raw_with_holes(&p, size);
    p
}

/// `parent/NAME`, created (with any missing parents) as a directory.
pub fn subdir(parent: &Path, name: &str) -> std::path::PathBuf {
    let d = parent.join(name);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
    d
}
