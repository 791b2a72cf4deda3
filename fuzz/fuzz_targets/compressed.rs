//! Fuzz the gzip/xz/zstd wrappers: the first byte picks the format, the
//! decompression limit is kept small through ONRAMP_MAX_DECOMPRESSED_BYTES.
#![no_main]
mod common;
use libfuzzer_sys::fuzz_target;
use onramp::source::Format;

fuzz_target!(|data: &[u8]| {
    std::env::set_var(onramp::limits::MAX_DECOMPRESSED_ENV, "8388608");
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let format = match sel % 4 {
        0 => Format::Gzip,
        1 => Format::Xz,
        2 => Format::Zstd,
        _ => {
            // Let detection choose (covers nested wrappers too).
            common::fuzz_image(rest, None);
            return;
        }
    };
    common::fuzz_image(rest, Some(format));
});
