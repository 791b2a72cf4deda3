//! Decompression of qcow2 compressed clusters.
//!
//! Spec: `docs/interop/qcow2.txt`, "Compressed Clusters Descriptor" and the
//! header's `compression_type`. zlib clusters are raw deflate streams (no
//! zlib header, as qemu's `qcow2_zlib_compress` writes them with windowBits
//! -12); zstd clusters are zstd frames. "Decompression stops when it has
//! produced a cluster of data": bytes after the stream in the last sector are
//! ignored, and a stream that yields less than a cluster is corrupt.
//!
//! zlib clusters are inflated with libdeflate (whole-buffer, the fastest
//! inflater available) and fall back to flate2's streaming decoder, which
//! follows qemu's rules exactly, for any stream libdeflate refuses.
//!
//! The decompressor state and the buffers are kept per thread and reused, so
//! reading a compressed image allocates nothing per cluster.

use super::header::CompressionType;
use crate::error::{Error, Result};
use std::cell::RefCell;

/// Per-thread reusable state.
#[derive(Default)]
pub struct Scratch {
    /// Compressed bytes read from the file.
    pub input: Vec<u8>,
    /// One decompressed cluster (when the caller wants only part of it).
    pub cluster: Vec<u8>,
    /// Which image and compressed stream `cluster` holds: (image id, host
    /// offset), so a cluster read in parts (2 MiB clusters, 1 MiB chunks) is
    /// decompressed once.
    pub cluster_key: Option<(usize, u64)>,
    inflate: Option<flate2::Decompress>,
    libdeflate: Option<libdeflater::Decompressor>,
    zstd: Option<zstd::stream::raw::Decoder<'static>>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Run `f` with this thread's scratch state.
pub fn with_scratch<T>(f: impl FnOnce(&mut Scratch) -> Result<T>) -> Result<T> {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut g) => f(&mut g),
        // Re-entered (a backing file read from inside a decompression): use a fresh one.
        Err(_) => f(&mut Scratch::default()),
    })
}

impl Scratch {
    /// Decompress `self.input` into `out`, which must be filled exactly.
    /// `what` names the cluster for error messages.
    pub fn decompress_into(
        &mut self,
        ctype: CompressionType,
        out: &mut [u8],
        what: &dyn Fn() -> (String, u64),
    ) -> Result<()> {
        let input = &self.input;
        match ctype {
            CompressionType::Zlib => {
                // Fast path: libdeflate decompresses a whole buffer at once
                // (about twice zlib's speed); bytes after the end of the
                // stream are ignored, as qemu does. Anything it does not
                // accept (a stream longer than the cluster, which qemu
                // truncates, or a corrupt one) goes through the streaming
                // decoder below, which matches qemu and words the error.
                let fast = self
                    .libdeflate
                    .get_or_insert_with(libdeflater::Decompressor::new);
                if matches!(fast.deflate_decompress(input, out), Ok(n) if n == out.len()) {
                    return Ok(());
                }
                let d = self
                    .inflate
                    .get_or_insert_with(|| flate2::Decompress::new(false));
                d.reset(false);
                let res = d.decompress(input, out, flate2::FlushDecompress::Finish);
                let produced = d.total_out();
                match res {
                    Ok(_) if produced == u64::try_from(out.len()).unwrap_or(u64::MAX) => Ok(()),
                    Ok(_) => Err(short(what, produced, out.len())),
                    Err(e) => Err(bad(what, &e.to_string())),
                }
            }
            CompressionType::Zstd => {
                use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
                if self.zstd.is_none() {
                    self.zstd = Some(
                        zstd::stream::raw::Decoder::new()
                            .map_err(|e| Error::io("create zstd decoder", e))?,
                    );
                }
                let Some(d) = self.zstd.as_mut() else {
                    return Err(bad(what, "no zstd decoder"));
                };
                d.reinit().map_err(|e| bad(what, &e.to_string()))?;
                let mut inb = InBuffer::around(input);
                let mut outb = OutBuffer::around(out);
                // Like qemu's qcow2_zstd_decompress: run until the cluster is
                // full; stop with an error when a step makes no progress.
                while outb.pos() < outb.capacity() {
                    let (ip, op) = (inb.pos(), outb.pos());
                    d.run(&mut inb, &mut outb)
                        .map_err(|e| bad(what, &e.to_string()))?;
                    if inb.pos() == ip && outb.pos() == op {
                        let produced = u64::try_from(outb.pos()).unwrap_or(0);
                        return Err(short(what, produced, outb.capacity()));
                    }
                }
                Ok(())
            }
        }
    }
}

fn short(what: &dyn Fn() -> (String, u64), produced: u64, want: usize) -> Error {
    let (name, off) = what();
    Error::corrupt(
        "qcow2 compressed cluster",
        name,
        off,
        format!("a stream that decompresses to {want} bytes"),
        format!("{produced} bytes"),
    )
}

fn bad(what: &dyn Fn() -> (String, u64), msg: &str) -> Error {
    let (name, off) = what();
    Error::corrupt(
        "qcow2 compressed cluster",
        name,
        off,
        "a valid compressed stream",
        format!("a decompression error ({msg})"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn what() -> (String, u64) {
        ("entry 0".into(), 0)
    }

    #[test]
    fn raw_deflate_and_zstd_roundtrip() {
        let data: Vec<u8> = (0..65536u32)
            .map(|i| u8::try_from(i % 251).unwrap())
            .collect();
        let mut enc =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&data).unwrap();
        let mut comp = enc.finish().unwrap();
        comp.extend_from_slice(&[0xAA; 300]); // trailing garbage in the last sector
        let mut s = Scratch {
            input: comp,
            ..Default::default()
        };
        let mut out = vec![0u8; 65536];
        s.decompress_into(CompressionType::Zlib, &mut out, &what)
            .unwrap();
        assert_eq!(out, data);
        // Too short a stream is corrupt.
        let mut big = vec![0u8; 70000];
        assert!(s
            .decompress_into(CompressionType::Zlib, &mut big, &what)
            .is_err());

        let mut z = zstd::bulk::compress(&data, 3).unwrap();
        z.extend_from_slice(&[0u8; 100]);
        s.input = z;
        out.fill(0);
        s.decompress_into(CompressionType::Zstd, &mut out, &what)
            .unwrap();
        assert_eq!(out, data);
        assert!(s
            .decompress_into(CompressionType::Zstd, &mut big, &what)
            .is_err());
        s.input = vec![1, 2, 3];
        assert!(s
            .decompress_into(CompressionType::Zstd, &mut out, &what)
            .is_err());
        assert!(s
            .decompress_into(CompressionType::Zlib, &mut out, &what)
            .is_err());
    }
}
