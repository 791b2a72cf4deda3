//! Fuzz format detection by magic (head and tail of a file).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let head = &data[..data.len().min(1024)];
    let tail = &data[data.len().saturating_sub(512)..];
    let _ = onramp::source::detect::detect_bytes(head, Some(tail));
    let _ = onramp::source::detect::detect_bytes(head, None);
});
