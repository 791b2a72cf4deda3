//! Recipes: one YAML file describing a build from a customer image to a
//! verified artifact (see `recipes/*.yaml` and README's Recipes section).
//!
//! Parsing is strict: unknown fields and wrong types are rejected with the
//! file, line and column (serde-saphyr). Paths are relative to the recipe
//! file. `${VAR}` is substituted from the environment only in path fields and
//! secret fields; secrets are never printed or written to a manifest.

pub mod build;

use crate::error::{Error, Result};
use crate::source::Format;
use crate::target::TargetFormat;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Largest recipe file read: 1 MiB (recipes are a page of YAML).
pub const MAX_RECIPE_BYTES: u64 = 1 << 20;

/// A parsed recipe, with paths resolved against the recipe's directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Artifact name (used in the default output file name).
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// The customer image.
    pub source: SourceSpec,
    /// What to produce.
    pub target: TargetSpec,
    /// An agent bundle (directory, .tar.gz with agent.yaml, or a .deb) to inject.
    #[serde(default)]
    pub agent: Option<String>,
    /// Customize operations, applied in order (see `onramp customize`).
    #[serde(default)]
    pub customize: Vec<serde_json::Value>,
    /// Validation settings.
    #[serde(default)]
    pub validate: Option<ValidateSpec>,
    /// Where the artifact goes.
    #[serde(default)]
    pub output: OutputSpec,
    /// Where to publish the artifact after a successful build.
    #[serde(default)]
    pub publish: Vec<PublishSpec>,
}

/// `source:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// Path to the image (relative to the recipe; `${VAR}` allowed).
    pub path: String,
    /// Expected SHA-256 of the image file, lower-case hex.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Format (else detected by magic).
    #[serde(default)]
    pub format: Option<String>,
    /// Follow backing files inside the image's directory.
    #[serde(default)]
    pub allow_backing: bool,
}

/// `target:`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// azure, gce or aws (informational; picks the validation profile by default).
    #[serde(default)]
    pub cloud: Option<String>,
    /// Output format, as `--to` spells it (e.g. azure-vhd).
    pub format: String,
    /// Virtual size ("30G", or bytes); never below the source.
    #[serde(default)]
    pub size: Option<SizeValue>,
    /// VM generation (1: BIOS/MBR, 2: UEFI/GPT), for validation.
    #[serde(default)]
    pub generation: Option<u8>,
}

/// A size written as a number of bytes or a string with a K/M/G/T suffix.
#[derive(Debug, Clone)]
pub enum SizeValue {
    /// Bytes.
    Bytes(u64),
    /// "30G" and the like.
    Text(String),
}

impl<'de> Deserialize<'de> for SizeValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = SizeValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a size: a number of bytes or a string like \"30G\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<SizeValue, E> {
                Ok(SizeValue::Bytes(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<SizeValue, E> {
                u64::try_from(v)
                    .map(SizeValue::Bytes)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<SizeValue, E> {
                Ok(SizeValue::Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `validate:`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateSpec {
    /// Profile name (azure, azure-linux, azure-windows, gce, aws).
    #[serde(default)]
    pub profile: Option<String>,
    /// Warnings fail the build too.
    #[serde(default)]
    pub strict: bool,
    /// Reviewed exceptions.
    #[serde(default)]
    pub waivers: Vec<Waiver>,
    /// The image is specialized (not generalized) on purpose.
    #[serde(default)]
    pub specialized: bool,
}

/// A reviewed exception to a validation rule.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Waiver {
    /// Rule id, e.g. `azure.linux.console-ttys0`.
    pub rule: String,
    /// Why it is acceptable.
    pub reason: String,
}

/// `output:`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Directory (relative to the recipe; `${VAR}` allowed). Default: `out/` beside the recipe.
    #[serde(default)]
    pub dir: Option<String>,
    /// File name template: `{name}`, `{ext}`, `{format}`. Default `{name}.{ext}`.
    #[serde(default)]
    pub file_name: Option<String>,
}

/// One `publish:` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishSpec {
    /// `dir:PATH` or `azure:URL`.
    pub to: String,
    /// SAS token (secret; `${VAR}` substitution).
    #[serde(default)]
    pub sas: Option<String>,
}

/// A recipe loaded from a file, with everything resolved.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The recipe file.
    pub file: PathBuf,
    /// SHA-256 of the recipe file's bytes.
    pub digest: String,
    /// The parsed recipe.
    pub recipe: Recipe,
    /// Source image path, resolved.
    pub source_path: PathBuf,
    /// Source format, if given.
    pub source_format: Option<Format>,
    /// Output format.
    pub target: TargetFormat,
    /// Requested size in bytes.
    pub size: Option<u64>,
    /// Output directory, resolved.
    pub out_dir: PathBuf,
    /// Output file name.
    pub file_name: String,
    /// Publish targets with `${VAR}` substituted (the SAS is a secret: never printed).
    pub publish: Vec<crate::publish::PublishTo>,
    /// Customize operations, parsed.
    pub ops: Vec<crate::inject::Op>,
    /// Agent bundle path, resolved.
    pub agent: Option<PathBuf>,
}

impl Loaded {
    /// The input format onramp reads the artifact back as (for validation).
    pub fn target_source_format(&self) -> Format {
        match self.target {
            TargetFormat::AzureVhd | TargetFormat::VhdDynamic => Format::Vhd,
            TargetFormat::Raw => Format::Raw,
            TargetFormat::Vhdx => Format::Vhdx,
            TargetFormat::Qcow2 => Format::Qcow2,
            TargetFormat::VmdkStream => Format::Vmdk,
            TargetFormat::GceTar => Format::Gzip,
        }
    }
}

fn field_err(file: &Path, field: &str, msg: impl std::fmt::Display) -> Error {
    Error::invalid(format!("field {field}: {msg}")).at(file)
}

/// Substitute `${VAR}` from the environment. Unset variables are an error.
pub fn substitute(file: &Path, field: &str, s: &str) -> Result<String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("${") {
        out.push_str(rest.get(..i).unwrap_or(""));
        let after = rest.get(i + 2..).unwrap_or("");
        let j = after
            .find('}')
            .ok_or_else(|| field_err(file, field, "unterminated ${...}"))?;
        let var = after.get(..j).unwrap_or("");
        if var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(field_err(file, field, format!("bad variable name {var:?}")));
        }
        let val = std::env::var(var).map_err(|_| {
            field_err(
                file,
                field,
                format!("environment variable {var} is not set"),
            )
        })?;
        out.push_str(&val);
        rest = after.get(j + 1..).unwrap_or("");
    }
    out.push_str(rest);
    Ok(out)
}

/// Parse recipe text; `file` is used in errors only.
pub fn parse(file: &Path, text: &str) -> Result<Recipe> {
    serde_saphyr::from_str::<Recipe>(text).map_err(|e| {
        // serde-saphyr renders a source snippet after the first line; keep the line.
        let full = e.to_string();
        let first = full.lines().next().unwrap_or("").trim();
        let msg = first.strip_prefix("error: ").unwrap_or(first);
        Error::invalid(format!("recipe {msg}")).at(file)
    })
}

/// Extension for an output format.
pub fn extension(t: TargetFormat) -> &'static str {
    t.extension()
}

/// Load, parse and resolve a recipe file.
pub fn load(file: &Path, out_override: Option<&Path>) -> Result<Loaded> {
    use clap::ValueEnum;
    use sha2::{Digest, Sha256};
    let meta = std::fs::metadata(file)
        .map_err(|e| Error::invalid(format!("cannot read recipe: {e}")).at(file))?;
    if meta.len() > MAX_RECIPE_BYTES {
        return Err(Error::invalid(format!(
            "recipe is {} bytes; at most {MAX_RECIPE_BYTES} are read",
            meta.len()
        ))
        .at(file));
    }
    let bytes = std::fs::read(file)
        .map_err(|e| Error::invalid(format!("cannot read recipe: {e}")).at(file))?;
    let text = String::from_utf8(bytes.clone())
        .map_err(|_| Error::invalid("recipe is not UTF-8").at(file))?;
    let recipe = parse(file, &text)?;
    let digest = crate::target::output::hex(&Sha256::digest(&bytes));
    let base = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if recipe.name.is_empty() || recipe.name.contains('/') || recipe.name.starts_with('.') {
        return Err(field_err(
            file,
            "name",
            "must be a plain file-name-like word (no '/', not starting with '.')",
        ));
    }
    let source_path = base.join(substitute(file, "source.path", &recipe.source.path)?);
    if let Some(h) = &recipe.source.sha256 {
        if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(field_err(file, "source.sha256", "expected 64 hex digits"));
        }
    }
    let source_format = match &recipe.source.format {
        None => None,
        Some(f) => Some(
            Format::from_str(f, true)
                .map_err(|_| field_err(file, "source.format", format!("unknown format {f:?}")))?,
        ),
    };
    let target = TargetFormat::from_str(&recipe.target.format, true).map_err(|_| {
        let names: Vec<String> = TargetFormat::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
            .collect();
        field_err(
            file,
            "target.format",
            format!(
                "unknown format {:?} (one of: {})",
                recipe.target.format,
                names.join(", ")
            ),
        )
    })?;
    let size = match &recipe.target.size {
        None => None,
        Some(SizeValue::Bytes(b)) => Some(*b),
        Some(SizeValue::Text(t)) => {
            Some(crate::cli::parse_size(t).map_err(|e| field_err(file, "target.size", e))?)
        }
    };
    if let Some(g) = recipe.target.generation {
        if g != 1 && g != 2 {
            return Err(field_err(
                file,
                "target.generation",
                format!("expected 1 or 2, found {g}"),
            ));
        }
    }
    if let Some(v) = &recipe.validate {
        if let Some(p) = &v.profile {
            if !crate::validate::PROFILES.contains(&p.as_str()) {
                return Err(field_err(
                    file,
                    "validate.profile",
                    format!(
                        "unknown profile {p:?} (one of: {})",
                        crate::validate::PROFILES.join(", ")
                    ),
                ));
            }
        }
        for w in &v.waivers {
            if crate::validate::rule(&w.rule).is_none() {
                return Err(field_err(
                    file,
                    "validate.waivers",
                    format!("unknown rule {:?} (see docs/rules.md)", w.rule),
                ));
            }
            if w.reason.trim().is_empty() {
                return Err(field_err(
                    file,
                    "validate.waivers",
                    format!("waiver of {} needs a reason", w.rule),
                ));
            }
        }
    }
    let out_dir = match (out_override, &recipe.output.dir) {
        (Some(o), _) => o.to_path_buf(),
        (None, Some(d)) => base.join(substitute(file, "output.dir", d)?),
        (None, None) => base.join("out"),
    };
    let template = recipe
        .output
        .file_name
        .clone()
        .unwrap_or_else(|| "{name}.{ext}".into());
    let file_name = template
        .replace("{name}", &recipe.name)
        .replace("{ext}", extension(target))
        .replace("{format}", target.name());
    if file_name.contains('/') || file_name.starts_with('.') || file_name.contains('{') {
        return Err(field_err(
            file,
            "output.file_name",
            format!("{file_name:?} is not a plain file name (placeholders: {{name}}, {{ext}}, {{format}})"),
        ));
    }
    let mut publish = Vec::new();
    for (i, p) in recipe.publish.iter().enumerate() {
        let mut to = substitute(file, &format!("publish[{i}].to"), &p.to)?;
        // A gallery path, like every path in a recipe, is relative to the recipe.
        if let Some(dir) = to.strip_prefix("dir:") {
            if Path::new(dir).is_relative() {
                to = format!("dir:{}", base.join(dir).display());
            }
        }
        crate::publish::Target::parse(&to).map_err(|e| {
            field_err(
                file,
                &format!("publish[{i}].to"),
                crate::publish::redact_text(e.message()),
            )
        })?;
        let sas = match &p.sas {
            Some(v) => Some(substitute(file, &format!("publish[{i}].sas"), v)?),
            None => None,
        };
        publish.push(crate::publish::PublishTo { to, sas });
    }
    let mut ops = Vec::new();
    for (i, v) in recipe.customize.iter().enumerate() {
        let op: crate::inject::Op = serde_json::from_value(v.clone()).map_err(|e| {
            field_err(
                file,
                &format!("customize[{i}]"),
                format!("{e} (see `onramp customize --help` for the operations)"),
            )
        })?;
        ops.push(op);
    }
    let agent = match &recipe.agent {
        Some(a) => Some(base.join(substitute(file, "agent", a)?)),
        None => None,
    };
    Ok(Loaded {
        ops,
        agent,
        publish,
        file: file.to_path_buf(),
        digest,
        source_path,
        source_format,
        target,
        size,
        out_dir,
        file_name,
        recipe,
    })
}
