//! The command line: parse with clap, call one library function, map the
//! result to an exit code (0 ok, 1 a check said no, 2 bad usage or input,
//! 3 I/O or environment).

use crate::error::Result;
use crate::pipeline::{self, Comparison, ConvertRequest};
use crate::source::{self, Format, OpenOptions};
use crate::target::output::DigestAlgo;
use crate::target::TargetFormat;
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use std::io::IsTerminal;
use std::path::PathBuf;

// Output goes to stdout, which may be a closed pipe (`onramp info x | head`): a
// failed write is not an error worth a panic, so these shadow std's macros.
macro_rules! println {
    () => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout());
    }};
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}
macro_rules! print {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($t)*);
    }};
}

/// onramp: move VM images onto a cloud.
#[derive(Debug, Parser)]
#[command(name = "onramp", version, about, max_term_width = 100)]
pub struct Cli {
    /// Print nothing but errors (and requested JSON).
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// The subcommand.
    #[command(subcommand)]
    pub command: Command,
}

/// How to open an input.
#[derive(Debug, Args, Clone)]
pub struct InputArgs {
    /// Input format (skips detection by magic).
    #[arg(long, value_enum)]
    pub from: Option<Format>,
    /// Follow backing files / parent disks, only inside the image's own directory.
    #[arg(long)]
    pub allow_backing: bool,
    /// Disk of a multi-disk OVA to open (0-based, OVF DiskSection order; default: boot disk).
    #[arg(long)]
    pub disk: Option<usize>,
}

impl InputArgs {
    fn open_options(&self) -> OpenOptions {
        OpenOptions {
            format: self.from,
            allow_backing: self.allow_backing,
            temp_dir: None,
            disk: self.disk,
        }
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show an image's format, sizes and format details.
    Info {
        /// The image.
        image: PathBuf,
        #[command(flatten)]
        input: InputArgs,
        /// Machine-readable output on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Convert an image to a cloud disk format in one pass.
    Convert {
        /// Input image.
        input: PathBuf,
        /// Output file (written atomically).
        output: PathBuf,
        /// Output format.
        #[arg(long, value_enum)]
        to: TargetFormat,
        #[command(flatten)]
        inp: InputArgs,
        /// Grow the virtual disk to this size (bytes, or with K/M/G/T suffix; binary units).
        #[arg(long, value_parser = parse_size)]
        size: Option<u64>,
        /// Compute this digest of the output while writing (repeatable).
        #[arg(long, value_enum)]
        digest: Vec<DigestAlgo>,
        /// Replace an existing output.
        #[arg(long)]
        force: bool,
        /// Machine-readable output on stdout.
        #[arg(long)]
        json: bool,
        /// Block size of the output (vhdx: 1M to 256M, a power of two; default 32M).
        #[arg(long, value_parser = parse_size)]
        block_size: Option<u64>,
        /// Compress the output's clusters (qcow2).
        #[arg(long, value_enum)]
        compress: Option<crate::target::Compression>,
    },
    /// Compare two disks: exit 0 if identical, 1 with the first difference.
    Compare {
        /// First image.
        a: PathBuf,
        /// Second image.
        b: PathBuf,
        /// Format of the first image.
        #[arg(long, value_enum)]
        from_a: Option<Format>,
        /// Format of the second image.
        #[arg(long, value_enum)]
        from_b: Option<Format>,
        /// Follow backing files inside each image's directory.
        #[arg(long)]
        allow_backing: bool,
        /// Machine-readable output on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Build recipes: verify, convert, hash, manifest — one command from image to artifact.
    Build(BuildArgs),
    /// Look inside a guest disk (read-only): partitions, filesystems, OS facts.
    Inspect {
        /// The image.
        image: PathBuf,
        #[command(flatten)]
        input: InputArgs,
        /// Machine-readable output on stdout (schema: docs/inspect-schema.md).
        #[arg(long)]
        json: bool,
    },
    /// Check an image against a cloud's rules before upload.
    Validate(ValidateArgs),
    /// Publish an image: upload to an Azure page blob or store in a local gallery.
    Publish(PublishArgs),
    /// Boot an image under QEMU (never modifying it) and check it comes up.
    BootTest(BootTestArgs),
    /// Convert and edit the guest offline in one pass (input never written).
    Customize(Box<CustomizeArgs>),
}

/// Arguments of `onramp customize`.
#[derive(Debug, clap::Args)]
pub struct CustomizeArgs {
    /// Input image.
    pub input: PathBuf,
    /// Output file (written atomically).
    pub output: PathBuf,
    /// Output format.
    #[arg(long, value_enum)]
    pub to: TargetFormat,
    #[command(flatten)]
    pub inp: InputArgs,
    /// Agent bundle (directory, .tar.gz or .deb).
    #[arg(long)]
    pub agent: Option<PathBuf>,
    /// Create or replace a file: GUEST_PATH:CONTENT.
    #[arg(long)]
    pub write: Vec<String>,
    /// Copy a host file in: HOST_PATH:GUEST_PATH.
    #[arg(long)]
    pub upload: Vec<String>,
    /// mkdir -p.
    #[arg(long)]
    pub mkdir: Vec<String>,
    /// Symbolic link: TARGET:LINK.
    #[arg(long)]
    pub link: Vec<String>,
    /// chmod: MODE:PATH.
    #[arg(long)]
    pub chmod: Vec<String>,
    /// Delete a file, link or empty directory.
    #[arg(long)]
    pub delete: Vec<String>,
    /// Hard link: TARGET:LINK (TARGET must exist).
    #[arg(long)]
    pub hardlink: Vec<String>,
    /// chown: UID:GID:PATH (numeric ids).
    #[arg(long)]
    pub chown: Vec<String>,
    /// Set access and modification time: PATH:SECONDS_SINCE_EPOCH.
    #[arg(long)]
    pub set_times: Vec<String>,
    /// Set an extended attribute: PATH:NAME=VALUE (e.g. security.selinux=system_u:object_r:etc_t:s0).
    #[arg(long)]
    pub xattr: Vec<String>,
    /// Append a line: PATH:LINE.
    #[arg(long)]
    pub append_line: Vec<String>,
    /// Add a kernel command-line argument.
    #[arg(long)]
    pub kernel_arg: Vec<String>,
    /// Run a command once at first boot.
    #[arg(long)]
    pub firstboot_command: Vec<String>,
    /// Set the hostname.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Comment out swap in /etc/fstab.
    #[arg(long)]
    pub no_swap: bool,
    /// Windows guests: set the Azure settings safe offline (RDP on 3389, SAN policy OnlineAll, RealTimeIsUniversal).
    #[arg(long)]
    pub azure_settings: bool,
    /// SELinux guests: relabel everything at first boot (/.autorelabel) instead of labelling new files from the policy's file_contexts.
    #[arg(long)]
    pub selinux_relabel: bool,
    /// Root filesystem: /dev/sdaN or a volume index (default: found by inspection).
    #[arg(long)]
    pub root: Option<String>,
    /// Print the plan of edits and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Compute this digest of the output while writing (repeatable).
    #[arg(long, value_enum)]
    pub digest: Vec<DigestAlgo>,
    /// Replace an existing output.
    #[arg(long)]
    pub force: bool,
    /// Machine-readable output on stdout.
    #[arg(long)]
    pub json: bool,
}

fn customize_ops(a: &CustomizeArgs) -> Result<Vec<crate::inject::Op>> {
    use crate::inject::{split_pair, Op};
    // Operations run in flag-group order: files, then links/modes, then edits.
    let mut ops = Vec::new();
    for m in &a.mkdir {
        ops.push(Op::Mkdir(m.clone()));
    }
    for w in &a.write {
        let (p, c) = split_pair("--write", w)?;
        ops.push(Op::Write {
            path: p.into(),
            content: c.into(),
        });
    }
    for u in &a.upload {
        let (h, g) = split_pair("--upload", u)?;
        ops.push(Op::Upload {
            host: h.into(),
            guest: g.into(),
        });
    }
    for l in &a.link {
        let (t, p) = split_pair("--link", l)?;
        ops.push(Op::Link {
            target: t.into(),
            link: p.into(),
        });
    }
    for c in &a.chmod {
        let (m, p) = split_pair("--chmod", c)?;
        ops.push(Op::Chmod {
            mode: m.into(),
            path: p.into(),
        });
    }
    for l in &a.hardlink {
        let (t, p) = split_pair("--hardlink", l)?;
        ops.push(Op::Hardlink {
            target: t.into(),
            link: p.into(),
        });
    }
    for c in &a.chown {
        let (u, rest) = split_pair("--chown", c)?;
        let (g, p) = split_pair("--chown", rest)?;
        ops.push(Op::Chown {
            owner: format!("{u}:{g}"),
            path: p.into(),
        });
    }
    for t in &a.set_times {
        let (p, secs) = split_pair("--set-times", t)?;
        let mtime = secs.parse().map_err(|_| {
            crate::error::Error::invalid(format!("--set-times expects PATH:SECONDS, found {t:?}"))
        })?;
        ops.push(Op::SetTimes {
            path: p.into(),
            mtime,
        });
    }
    for x in &a.xattr {
        let (p, nv) = split_pair("--xattr", x)?;
        let (n, v) = nv.split_once('=').ok_or_else(|| {
            crate::error::Error::invalid(format!("--xattr expects PATH:NAME=VALUE, found {x:?}"))
        })?;
        ops.push(Op::SetXattr {
            path: p.into(),
            name: n.into(),
            value: v.into(),
        });
    }
    for l in &a.append_line {
        let (p, t) = split_pair("--append-line", l)?;
        ops.push(Op::AppendLine {
            path: p.into(),
            line: t.into(),
        });
    }
    for k in &a.kernel_arg {
        ops.push(Op::KernelArg(k.clone()));
    }
    for c in &a.firstboot_command {
        ops.push(Op::FirstbootCommand(c.clone()));
    }
    if let Some(h) = &a.hostname {
        ops.push(Op::Hostname(h.clone()));
    }
    if a.no_swap {
        ops.push(Op::NoSwap(true));
    }
    if a.azure_settings {
        ops.push(Op::AzureWindowsSettings(true));
    }
    if a.selinux_relabel {
        ops.push(Op::SelinuxRelabel(true));
    }
    for d in &a.delete {
        ops.push(Op::Delete(d.clone()));
    }
    Ok(ops)
}

fn customize(cli: &Cli, a: &CustomizeArgs) -> Result<i32> {
    let req = pipeline::CustomizeRequest {
        input: &a.input,
        output: &a.output,
        to: a.to,
        open: a.inp.open_options(),
        ops: customize_ops(a)?,
        agent: a.agent.clone(),
        root: a.root.clone(),
        dry_run: a.dry_run,
        force: a.force,
        digests: a.digest.clone(),
    };
    let r = pipeline::customize(&req)?;
    if !cli.quiet {
        for w in &r.warnings {
            eprintln!("onramp: warning: {w}");
        }
    }
    if a.json {
        print_json(&serde_json::to_value(&r).unwrap_or(Value::Null));
    } else if !cli.quiet || a.dry_run {
        for p in &r.plan {
            println!("{}{p}", if a.dry_run { "plan: " } else { "" });
        }
        if let Some(w) = &r.write {
            println!("wrote {}", w.output.path.display());
        }
    }
    Ok(0)
}

/// Report formats of `onramp validate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// Human text grouped by severity.
    Text,
    /// JSON.
    Json,
    /// JUnit XML (one testcase per rule).
    Junit,
    /// SARIF 2.1.0.
    Sarif,
    /// Markdown (with --list-rules: docs/rules.md).
    Markdown,
}

/// `onramp validate` arguments.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The image (any format onramp reads).
    #[arg(required_unless_present = "list_rules")]
    pub image: Option<PathBuf>,
    #[command(flatten)]
    pub input: InputArgs,
    /// Profile: azure, azure-linux, azure-windows, gce, aws.
    #[arg(long, default_value = "azure")]
    pub profile: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: ReportFormat,
    /// Also write the report to this file (in --format), e.g. a JUnit file for CI.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Warnings fail too.
    #[arg(long)]
    pub strict: bool,
    /// Waive a rule with a reason: RULE_ID=reason (repeatable).
    #[arg(long, value_parser = parse_waiver)]
    pub waive: Vec<(String, String)>,
    /// VM generation the image is meant for (1 BIOS/MBR, 2 UEFI/GPT).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub generation: Option<u8>,
    /// The image is a data disk.
    #[arg(long)]
    pub data_disk: bool,
    /// The Windows image is specialized on purpose (not generalized).
    #[arg(long)]
    pub specialized: bool,
    /// Print the rule table instead of validating.
    #[arg(long)]
    pub list_rules: bool,
}

fn parse_waiver(s: &str) -> std::result::Result<(String, String), String> {
    s.split_once('=')
        .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
        .filter(|(a, b)| !a.is_empty() && !b.is_empty())
        .ok_or_else(|| format!("expected RULE_ID=reason, found {s:?}"))
}

/// `onramp build` arguments.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Recipe files (YAML).
    #[arg(required = true)]
    pub recipes: Vec<PathBuf>,
    /// Output directory for every recipe (overrides the recipes' output.dir).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Recipes built at once.
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// Print the plan and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Build even if an identical build is already in the output directory.
    #[arg(long)]
    pub rebuild: bool,
    /// Machine-readable output on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Parse "123", "20M", "30G", "1.5T"-free binary sizes.
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'B' => 1,
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("unknown size suffix {c:?} (use K, M, G or T)")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a size: {s:?}"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("size too large: {s:?}"))
}

/// Run the CLI; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    match dispatch(&cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("onramp: {e}");
            e.kind().exit_code()
        }
    }
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {} ({n} bytes)", UNITS[u])
    }
}

fn print_details(m: &serde_json::Map<String, Value>, indent: usize) {
    for (k, v) in m {
        match v {
            Value::Object(o) => {
                println!("{:indent$}{k}:", "");
                print_details(o, indent + 2);
            }
            Value::String(s) => println!("{:indent$}{k}: {s}", ""),
            other => println!("{:indent$}{k}: {other}", ""),
        }
    }
}

fn dispatch(cli: &Cli) -> Result<i32> {
    match &cli.command {
        Command::Build(b) => build(cli, b),
        Command::Inspect { image, input, json } => {
            let r = pipeline::inspect(image, &input.open_options())?;
            if *json {
                print_json(&serde_json::to_value(&r).unwrap_or(Value::Null));
            } else {
                print!("{}", crate::guest::render_text(&r));
            }
            Ok(0)
        }
        Command::Validate(v) => validate(v),
        Command::Publish(p) => publish(cli, p),
        Command::BootTest(b) => boot_test(cli, b),
        Command::Customize(a) => customize(cli, a),
        Command::Info { image, input, json } => {
            let m = pipeline::info(image, &input.open_options())?;
            if *json {
                print_json(&Value::Object(m));
            } else {
                println!("image: {}", image.display());
                println!("format: {}", m["format"].as_str().unwrap_or("?"));
                println!(
                    "virtual size: {}",
                    human_bytes(m["virtual_size"].as_u64().unwrap_or(0))
                );
                println!(
                    "allocated: {}",
                    human_bytes(m["allocated_bytes"].as_u64().unwrap_or(0))
                );
                if let Some(Value::Object(d)) = m.get("details") {
                    if !d.is_empty() {
                        println!("details:");
                        print_details(d, 2);
                    }
                }
            }
            Ok(0)
        }
        Command::Convert {
            input,
            output,
            to,
            inp,
            size,
            digest,
            force,
            json,
            block_size,
            compress,
        } => {
            let req = ConvertRequest {
                input,
                output,
                to: *to,
                open: inp.open_options(),
                size: *size,
                force: *force,
                digests: digest.clone(),
                block_size: *block_size,
                compress: *compress,
            };
            let progress = !cli.quiet && std::io::stderr().is_terminal();
            let spinner = progress.then(|| {
                let pb = indicatif::ProgressBar::new_spinner();
                pb.set_message(format!("converting {}", input.display()));
                pb.enable_steady_tick(std::time::Duration::from_millis(120));
                pb
            });
            let started = std::time::Instant::now();
            let r = pipeline::convert(&req);
            if let Some(pb) = spinner {
                pb.finish_and_clear();
            }
            let r = r?;
            if !cli.quiet {
                for n in &r.notes {
                    eprintln!("onramp: note: {n}");
                }
            }
            if *json {
                let mut v = serde_json::to_value(&r).unwrap_or(Value::Null);
                if let Value::Object(o) = &mut v {
                    o.insert("format".into(), json!(to.name()));
                    o.insert("seconds".into(), json!(started.elapsed().as_secs_f64()));
                    let d: serde_json::Map<String, Value> = r
                        .output
                        .digests
                        .iter()
                        .map(|(a, h)| (a.name().to_string(), json!(h)))
                        .collect();
                    o.insert("digests".into(), Value::Object(d));
                }
                print_json(&v);
            } else if !cli.quiet {
                println!("output: {}", r.output.path.display());
                println!("format: {}", to.name());
                println!("virtual size: {}", human_bytes(r.virtual_size));
                println!("bytes written: {}", human_bytes(r.output.bytes_written));
                for (a, h) in &r.output.digests {
                    println!("{}: {h}", a.name());
                }
            }
            Ok(0)
        }
        Command::Compare {
            a,
            b,
            from_a,
            from_b,
            allow_backing,
            json,
        } => {
            let oa = OpenOptions {
                format: *from_a,
                allow_backing: *allow_backing,
                temp_dir: None,
                disk: None,
            };
            let ob = OpenOptions {
                format: *from_b,
                ..oa.clone()
            };
            let sa = source::open(a, &oa)?;
            let sb = source::open(b, &ob)?;
            let c = pipeline::compare(sa.as_ref(), sb.as_ref())?;
            let code = i32::from(c != Comparison::Identical);
            if *json {
                print_json(&serde_json::to_value(&c).unwrap_or(Value::Null));
            } else if !cli.quiet {
                match c {
                    Comparison::Identical => println!("Images are identical."),
                    Comparison::SizeDiffers { a: x, b: y } => {
                        println!("Image size mismatch: {x} != {y} bytes")
                    }
                    Comparison::ContentDiffers { offset } => {
                        println!("Content mismatch at offset {offset}!")
                    }
                }
            }
            Ok(code)
        }
    }
}

/// Map a clap error to exit code 2 (usage), printing it.
pub fn usage_error(e: clap::Error) -> i32 {
    let _ = e.print();
    match e.kind() {
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => 0,
        _ => 2,
    }
}

fn build(cli: &Cli, b: &BuildArgs) -> Result<i32> {
    use crate::recipe::build::{build_many, BuildOptions};
    let opts = BuildOptions {
        out: b.out.clone(),
        dry_run: b.dry_run,
        rebuild: b.rebuild,
    };
    let progress = (!cli.quiet && !b.json && std::io::stderr().is_terminal()).then(|| {
        let pb = indicatif::ProgressBar::new_spinner();
        pb.set_message(format!("building {} recipe(s)", b.recipes.len()));
        pb.enable_steady_tick(std::time::Duration::from_millis(120));
        pb
    });
    let results = build_many(&b.recipes, &opts, b.jobs);
    if let Some(pb) = progress {
        pb.finish_and_clear();
    }
    let mut worst: Option<crate::error::Error> = None;
    let mut out = Vec::new();
    for r in results {
        match r {
            Ok(o) => {
                if !b.json && !cli.quiet {
                    if o.status == "planned" {
                        println!("{}: plan", o.recipe.display());
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&o.manifest).unwrap_or_default()
                        );
                    } else {
                        println!(
                            "{}: {} {} (sha256 {})",
                            o.recipe.display(),
                            o.status,
                            o.artifact.display(),
                            o.manifest["output"]["sha256"].as_str().unwrap_or("?")
                        );
                    }
                }
                out.push(serde_json::to_value(&o).unwrap_or(Value::Null));
            }
            Err(e) => {
                eprintln!("onramp: {e}");
                out.push(json!({"error": e.to_string()}));
                let replace = worst
                    .as_ref()
                    .is_none_or(|w| e.kind().exit_code() > w.kind().exit_code());
                if replace {
                    worst = Some(e);
                }
            }
        }
    }
    if b.json {
        print_json(&Value::Array(out));
    }
    Ok(worst.map_or(0, |e| e.kind().exit_code()))
}

fn validate(v: &ValidateArgs) -> Result<i32> {
    use crate::validate::{self, Request};
    if v.list_rules {
        match v.format {
            ReportFormat::Json => {
                let rules: Vec<Value> = validate::RULES
                    .iter()
                    .map(|r| json!({"id": r.id, "severity": r.severity, "title": r.title, "why": r.why, "fix": r.fix, "doc": r.doc, "profiles": r.profiles}))
                    .collect();
                print_json(&Value::Array(rules));
            }
            _ => print!("{}", validate::rules_markdown()),
        }
        return Ok(0);
    }
    let Some(image) = &v.image else {
        return Err(crate::error::Error::invalid("validate needs an IMAGE"));
    };
    let req = Request {
        profile: v.profile.clone(),
        waivers: v.waive.clone(),
        generation: v.generation,
        data_disk: v.data_disk,
        specialized: v.specialized,
    };
    let report = validate::validate(image, &v.input.open_options(), &req)?;
    let text = match v.format {
        ReportFormat::Text | ReportFormat::Markdown => {
            report.to_text(std::io::stdout().is_terminal())
        }
        ReportFormat::Json => report.to_json(),
        ReportFormat::Junit => report.to_junit(),
        ReportFormat::Sarif => report.to_sarif(),
    };
    if let Some(path) = &v.report {
        let body = match v.format {
            ReportFormat::Text | ReportFormat::Markdown => report.to_text(false),
            _ => text.clone(),
        };
        crate::recipe::build::write_atomic(path, body.as_bytes())?;
    }
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
    Ok(if report.passes(v.strict) { 0 } else { 1 })
}

/// `onramp publish` arguments.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The image (a fixed VHD for Azure).
    pub image: PathBuf,
    /// Target: azure:URL (page blob URL, Azure or Azurite) or dir:PATH (local gallery).
    #[arg(long)]
    pub to: String,
    /// SAS token for Azure (else AZURE_STORAGE_SAS_TOKEN, else AZURE_STORAGE_ACCOUNT/KEY).
    #[arg(long)]
    pub sas: Option<String>,
    /// Requests in flight.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallel: u16,
    /// Overwrite an existing blob.
    #[arg(long)]
    pub force: bool,
    /// Attempts per request before giving up (retries 408/500/503, timeouts, resets).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub retries: u32,
    /// Upload even if validation fails (not recommended).
    #[arg(long)]
    pub no_validate: bool,
    /// Name in the gallery index (dir targets; default: the image file stem).
    #[arg(long)]
    pub name: Option<String>,
    /// Machine-readable output on stdout.
    #[arg(long)]
    pub json: bool,
}

fn publish(cli: &Cli, p: &PublishArgs) -> Result<i32> {
    use crate::publish::{self, PublishOptions, Target};
    let target = Target::parse(&p.to)?;
    if p.no_validate && matches!(target, Target::Azure(_)) {
        eprintln!(
            "onramp: WARNING: --no-validate: uploading {} WITHOUT validation; \
             Azure may refuse the disk or the VM may not boot",
            p.image.display()
        );
    }
    let opts = PublishOptions {
        sas: p.sas.clone(),
        parallel: usize::from(p.parallel),
        force: p.force,
        validate: !p.no_validate,
        name: p.name.clone(),
        progress: !cli.quiet && std::io::stderr().is_terminal(),
        retry: crate::publish::azure::client::RetryPolicy {
            attempts: p.retries,
            ..Default::default()
        },
        ..Default::default()
    };
    let r = publish::publish(&p.image, &target, &opts)?;
    if p.json {
        print_json(&serde_json::to_value(&r).unwrap_or(Value::Null));
    } else if !cli.quiet {
        println!("published: {}", r.target);
        if let Some(path) = &r.path {
            println!("path: {}", path.display());
        }
        println!("sha256: {}", r.sha256);
        println!("size: {}", human_bytes(r.size));
        println!("bytes sent: {}", human_bytes(r.bytes_sent));
        println!("bytes skipped: {}", human_bytes(r.bytes_skipped));
        if r.unchanged {
            println!("unchanged: already published");
        }
        println!("seconds: {:.2}", r.duration_secs);
    }
    Ok(0)
}

/// `onramp boot-test` arguments.
#[derive(Debug, Args)]
pub struct BootTestArgs {
    /// The image (any format onramp reads); it is never modified.
    pub image: PathBuf,
    #[command(flatten)]
    pub input: InputArgs,
    /// Give up after this many seconds (per QEMU run).
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// A systemd unit that must be reported started on the console (repeatable;
    /// name, name without .service, or its Description).
    #[arg(long = "expect-unit", value_name = "NAME")]
    pub expect_unit: Vec<String>,
    /// A regex some console line must match (repeatable).
    #[arg(long = "expect-serial", value_name = "REGEX")]
    pub expect_serial: Vec<String>,
    /// Guest memory (bytes, or with K/M/G suffix; default 1G).
    #[arg(long, value_parser = parse_size, default_value = "1G")]
    pub memory: u64,
    /// Virtual CPUs.
    #[arg(long, default_value_t = 1)]
    pub cpus: u32,
    /// Accelerator.
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: crate::boot::Accel,
    /// How to start the guest (auto: UEFI with an ESP and OVMF, BIOS with MBR boot
    /// code, else direct kernel boot of the guest's own kernel).
    #[arg(long, value_enum, default_value = "auto")]
    pub boot: crate::boot::BootPath,
    /// Extra kernel command-line words for direct kernel boot.
    #[arg(long)]
    pub append: Option<String>,
    /// Keep the serial console log in this file.
    #[arg(long)]
    pub console_log: Option<PathBuf>,
    /// Once userspace is reached, fail if the other checks are not seen within this many seconds.
    #[arg(long, default_value_t = 60)]
    pub settle: u64,
    /// Machine-readable output on stdout.
    #[arg(long)]
    pub json: bool,
}

fn boot_test(cli: &Cli, b: &BootTestArgs) -> Result<i32> {
    let req = crate::boot::Request {
        image: b.image.clone(),
        open: b.input.open_options(),
        timeout: std::time::Duration::from_secs(b.timeout),
        expect_units: b.expect_unit.clone(),
        expect_serial: b.expect_serial.clone(),
        memory_mib: b.memory >> 20,
        cpus: b.cpus,
        accel: b.accel,
        boot: b.boot,
        append: b.append.clone(),
        console_log: b.console_log.clone(),
        settle: std::time::Duration::from_secs(b.settle),
    };
    let r = crate::boot::boot_test(&req)?;
    if b.json {
        print_json(&serde_json::to_value(&r).unwrap_or(Value::Null));
    } else {
        if !cli.quiet || !r.passed {
            for n in &r.notes {
                eprintln!("onramp: note: {n}");
            }
            println!(
                "{}: {} ({} boot, {}, {:.1} s)",
                r.image.display(),
                if r.passed { "booted" } else { "FAILED" },
                r.boot_path,
                r.accel,
                r.seconds
            );
            if let Some(k) = &r.kernel {
                println!("kernel: {k} ({})", r.cmdline.as_deref().unwrap_or(""));
            }
            for c in &r.checks {
                match (&c.at_seconds, &c.line) {
                    (Some(t), Some(l)) => println!("  ok   {} {} at {t:.1} s: {l}", c.kind, c.what),
                    _ => println!("  MISS {} {}", c.kind, c.what),
                }
            }
        }
        if let Some(f) = &r.failure {
            println!("failure: {f}");
            println!("last {} console lines:", r.console_tail.len());
            for l in &r.console_tail {
                println!("  | {l}");
            }
        }
    }
    Ok(if r.passed { 0 } else { 1 })
}
