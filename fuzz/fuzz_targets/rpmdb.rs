//! Fuzz the SQLite reader and rpm header parser: an rpmdb.sqlite file in, a
//! package list or an error out.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = onramp::guest::rpmdb::read_packages(data);
    let _ = onramp::guest::rpmdb::parse_header(data);
    let _ = onramp::fs::sqlite::parse_record(data);
});
