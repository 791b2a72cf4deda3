//! Fuzz the vhdx reader: open the input as vhdx and read its whole map and some data.
#![no_main]
mod common;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    common::fuzz_image(data, Some(onramp::source::Format::Vhdx));
});
