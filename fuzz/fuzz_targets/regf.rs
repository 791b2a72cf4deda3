//! Fuzz the registry hive parser: parse, then walk keys and values with bounds.
#![no_main]
use libfuzzer_sys::fuzz_target;
use onramp::fs::regf::Hive;

fuzz_target!(|data: &[u8]| {
    let Ok(hive) = Hive::parse(data) else { return };
    let _ = hive.pending_log();
    let Ok(root) = hive.root() else { return };
    let mut todo = vec![(root, 0usize)];
    let mut seen = 0usize;
    while let Some((k, depth)) = todo.pop() {
        seen += 1;
        if seen > 4096 {
            break;
        }
        let _ = k.name();
        let _ = k.class_name();
        let _ = k.timestamp();
        if let Ok(values) = k.values() {
            for v in values.iter().take(256) {
                let _ = v.decode();
                let _ = v.as_string();
                let _ = v.as_strings();
                let _ = v.as_u64();
            }
        }
        if depth < 64 {
            if let Ok(subs) = k.subkeys() {
                for s in subs.into_iter().take(256) {
                    todo.push((s, depth + 1));
                }
            }
        }
    }
    let _ = hive.get("ControlSet001\\Control", "SystemStartOptions");
});
