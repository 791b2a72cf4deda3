//! Writers for every output format. Each consumes a [`BlockSource`] and its
//! allocation map, writes through an atomic [`output::OutputFile`], and is
//! deterministic (no wall-clock or random values).

pub mod azure_vhd;
pub mod gce_tar;
pub mod output;
pub mod qcow2;
pub mod raw;
pub mod spool;
pub mod stream;
pub mod vhd_dynamic;
pub mod vhdx;
pub mod vmdk_stream;

use crate::block::BlockSource;
use crate::error::{Error, Result};
use output::{DigestAlgo, OutputFile, OutputSummary};
use std::path::Path;

/// Output formats (`--to`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetFormat {
    /// Azure's fixed VHD (MiB-aligned size, footer with creator "win ").
    AzureVhd,
    /// Sparse raw.
    Raw,
    /// Dynamic VHD (2 MiB blocks, BAT, footer copy at the start).
    VhdDynamic,
    /// Dynamic VHDX (32 MiB blocks unless --block-size), empty log.
    Vhdx,
    /// qcow2 version 3 (64 KiB clusters); --compress writes compressed clusters.
    Qcow2,
    /// streamOptimized VMDK (AWS VM Import, VMware).
    VmdkStream,
    /// Google Compute Engine's gzip'd tar holding a sparse disk.raw.
    GceTar,
}

impl TargetFormat {
    /// The usual file extension of outputs in this format.
    pub fn extension(self) -> &'static str {
        match self {
            TargetFormat::AzureVhd | TargetFormat::VhdDynamic => "vhd",
            TargetFormat::Raw => "raw",
            TargetFormat::Vhdx => "vhdx",
            TargetFormat::Qcow2 => "qcow2",
            TargetFormat::VmdkStream => "vmdk",
            TargetFormat::GceTar => "tar.gz",
        }
    }

    /// The `--to` spelling.
    pub fn name(self) -> &'static str {
        match self {
            TargetFormat::AzureVhd => "azure-vhd",
            TargetFormat::Raw => "raw",
            TargetFormat::VhdDynamic => "vhd-dynamic",
            TargetFormat::Vhdx => "vhdx",
            TargetFormat::Qcow2 => "qcow2",
            TargetFormat::VmdkStream => "vmdk-stream",
            TargetFormat::GceTar => "gce-tar",
        }
    }
}

/// Options common to every writer.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Requested virtual size (`--size`); never below the source.
    pub size: Option<u64>,
    /// Replace an existing output.
    pub force: bool,
    /// Digests to compute while writing.
    pub digests: Vec<DigestAlgo>,
    /// Seconds since the Unix epoch to stamp into formats with a timestamp.
    pub timestamp: u64,
    /// Block size for formats that have one (`--block-size`; VHDX).
    pub block_size: Option<u64>,
    /// Compress clusters (`--compress`; qcow2).
    pub compress: Option<Compression>,
}

/// Cluster compression (`--compress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Raw deflate (qcow2 compression type 0, "zlib").
    Deflate,
    /// Zstandard (qcow2 compression type 1).
    Zstd,
}

/// Refuse options the chosen format does not take.
fn check_format_options(format: TargetFormat, opts: &WriteOptions) -> Result<()> {
    if opts.compress.is_some() && format != TargetFormat::Qcow2 {
        return Err(Error::invalid(format!(
            "--compress is not supported for --to {} (only qcow2)",
            format.name()
        )));
    }
    if opts.block_size.is_some() && format != TargetFormat::Vhdx {
        return Err(Error::invalid(format!(
            "--block-size is not supported for --to {} (only vhdx)",
            format.name()
        )));
    }
    Ok(())
}

/// What a writer reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WriteReport {
    /// The output file.
    #[serde(flatten)]
    pub output: OutputSummary,
    /// Virtual size of the written disk.
    pub virtual_size: u64,
    /// Notes for the user (e.g. "size rounded up to a whole MiB").
    pub notes: Vec<String>,
}

/// Virtual size for a target: the source size, grown to `--size`, never below the data.
pub fn target_size(src_size: u64, requested: Option<u64>) -> Result<u64> {
    match requested {
        None => Ok(src_size),
        Some(r) if r < src_size => Err(Error::invalid(format!(
            "--size {r} is smaller than the source disk ({src_size} bytes); onramp never shrinks a disk"
        ))),
        Some(r) => Ok(r),
    }
}

/// Timestamp for deterministic outputs: SOURCE_DATE_EPOCH if set, else 2000-01-01 (the VHD epoch).
pub fn default_timestamp() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v.trim().parse::<u64>().map_err(|_| {
            Error::invalid(format!(
                "SOURCE_DATE_EPOCH must be whole seconds since 1970, found {v:?}"
            ))
        }),
        Err(_) => Ok(crate::source::vhd::footer::VHD_EPOCH_UNIX),
    }
}

/// Write `src` to `path` as `format`.
pub fn write(
    src: &dyn BlockSource,
    format: TargetFormat,
    path: &Path,
    opts: &WriteOptions,
) -> Result<WriteReport> {
    check_format_options(format, opts)?;
    let out = OutputFile::create(path, opts.force, &opts.digests).map_err(|e| e.at(path))?;
    let r = match format {
        TargetFormat::AzureVhd => azure_vhd::write(src, out, opts),
        TargetFormat::Raw => raw::write(src, out, opts),
        TargetFormat::VhdDynamic => vhd_dynamic::write(src, out, opts),
        TargetFormat::Vhdx => vhdx::write(src, out, opts),
        TargetFormat::Qcow2 => qcow2::write(src, out, opts),
        TargetFormat::VmdkStream => vmdk_stream::write(src, out, path, opts),
        TargetFormat::GceTar => gce_tar::write(src, out, opts),
    };
    // Output-side failures name the output; a corrupt or unsupported source
    // found mid-stream is left for the caller to name with the input path.
    r.map_err(|e| {
        if e.kind() == crate::error::ErrorKind::Io {
            e.at(path)
        } else {
            e
        }
    })
}
