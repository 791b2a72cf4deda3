//! Pure text edits of guest configuration files: kernel command lines
//! (/etc/default/grub, grub.cfg, BLS entries), fstab swap entries, hostname.
//! Each function takes the current text and returns the new text (or `None`
//! when nothing needs to change), so the plan can show exactly what changes.

/// The key of a kernel argument: `console=ttyS0` -> `console`, `quiet` -> `quiet`.
fn arg_key(arg: &str) -> &str {
    arg.split_once('=').map_or(arg, |(k, _)| k)
}

/// Add `arg` to a space-separated command line. An argument with the same key
/// and value is left alone; `console=` may appear several times (Linux uses the
/// last as /dev/console), so a new console is appended, other keys are replaced.
pub fn add_kernel_arg(cmdline: &str, arg: &str) -> String {
    let words: Vec<&str> = cmdline.split_whitespace().collect();
    if words.contains(&arg) {
        return words.join(" ");
    }
    let key = arg_key(arg);
    let mut out: Vec<String> = Vec::new();
    let mut replaced = false;
    for w in words {
        if key != "console" && arg.contains('=') && arg_key(w) == key {
            if !replaced {
                out.push(arg.to_string());
                replaced = true;
            }
        } else {
            out.push(w.to_string());
        }
    }
    if !replaced {
        out.push(arg.to_string());
    }
    out.join(" ")
}

/// /etc/default/grub: add `arg` to GRUB_CMDLINE_LINUX (creating the line if absent).
pub fn grub_default_add_arg(text: &str, arg: &str) -> Option<String> {
    let mut found = false;
    let mut lines: Vec<String> = Vec::new();
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix("GRUB_CMDLINE_LINUX=") {
            found = true;
            let (quote, inner) = match rest.chars().next() {
                Some(q @ ('"' | '\'')) => (
                    Some(q),
                    rest.get(1..rest.rfind(q).filter(|&i| i > 0).unwrap_or(rest.len()))
                        .unwrap_or(""),
                ),
                _ => (None, rest),
            };
            let new = add_kernel_arg(inner, arg);
            let q = quote.unwrap_or('"');
            lines.push(format!("GRUB_CMDLINE_LINUX={q}{new}{q}"));
        } else {
            lines.push(line.to_string());
        }
    }
    if !found {
        lines.push(format!("GRUB_CMDLINE_LINUX=\"{arg}\""));
    }
    let mut out = lines.join("\n");
    out.push('\n');
    (out != text).then_some(out)
}

/// grub.cfg: add `arg` to every `linux`/`linux16`/`linuxefi` line.
pub fn grub_cfg_add_arg(text: &str, arg: &str) -> Option<String> {
    let mut lines: Vec<String> = Vec::new();
    for line in text.lines() {
        let t = line.trim_start();
        let indent = line.get(..line.len() - t.len()).unwrap_or("");
        let mut parts = t.splitn(2, char::is_whitespace);
        let cmd = parts.next().unwrap_or("");
        if matches!(cmd, "linux" | "linux16" | "linuxefi") {
            let rest = parts.next().unwrap_or("").trim();
            let mut words = rest.splitn(2, char::is_whitespace);
            let kernel = words.next().unwrap_or("");
            let args = words.next().unwrap_or("");
            let new = add_kernel_arg(args, arg);
            lines.push(
                format!("{indent}{cmd} {kernel} {new}")
                    .trim_end()
                    .to_string(),
            );
        } else {
            lines.push(line.to_string());
        }
    }
    let mut out = lines.join("\n");
    if text.ends_with('\n') {
        out.push('\n');
    }
    (out != text).then_some(out)
}

/// A BLS entry (/boot/loader/entries/*.conf): add `arg` to its `options` line.
pub fn bls_add_arg(text: &str, arg: &str) -> Option<String> {
    let mut found = false;
    let mut lines: Vec<String> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("options") {
            if rest.is_empty() || rest.starts_with(char::is_whitespace) {
                found = true;
                lines.push(format!("options {}", add_kernel_arg(rest.trim(), arg)));
                continue;
            }
        }
        lines.push(line.to_string());
    }
    if !found {
        lines.push(format!("options {arg}"));
    }
    let mut out = lines.join("\n");
    out.push('\n');
    (out != text).then_some(out)
}

/// fstab: comment out swap entries.
pub fn fstab_no_swap(text: &str) -> Option<String> {
    let mut lines: Vec<String> = Vec::new();
    for line in text.lines() {
        let t = line.trim_start();
        let fields: Vec<&str> = t.split_whitespace().collect();
        let is_swap = !t.starts_with('#') && fields.get(2).is_some_and(|f| *f == "swap");
        if is_swap {
            lines.push(format!(
                "# disabled by onramp (no swap on the OS disk): {line}"
            ));
        } else {
            lines.push(line.to_string());
        }
    }
    let mut out = lines.join("\n");
    if text.ends_with('\n') || text.is_empty() {
        out.push('\n');
    }
    (out != text).then_some(out)
}

/// Append `line` to `text` unless it is already its last line.
pub fn append_line(text: &str, line: &str) -> String {
    let mut out = text.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(line);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_args() {
        assert_eq!(
            add_kernel_arg("quiet splash", "console=ttyS0"),
            "quiet splash console=ttyS0"
        );
        assert_eq!(
            add_kernel_arg("console=tty0", "console=ttyS0"),
            "console=tty0 console=ttyS0"
        );
        assert_eq!(add_kernel_arg("a=1 b", "a=2"), "a=2 b");
        assert_eq!(
            add_kernel_arg("x console=ttyS0", "console=ttyS0"),
            "x console=ttyS0"
        );
    }

    #[test]
    fn grub_default() {
        let t = "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX=\"quiet\"\n";
        assert_eq!(
            grub_default_add_arg(t, "console=ttyS0").unwrap(),
            "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX=\"quiet console=ttyS0\"\n"
        );
        assert!(
            grub_default_add_arg("GRUB_CMDLINE_LINUX=\"console=ttyS0\"\n", "console=ttyS0")
                .is_none()
        );
        assert_eq!(
            grub_default_add_arg("X=1\n", "a").unwrap(),
            "X=1\nGRUB_CMDLINE_LINUX=\"a\"\n"
        );
    }

    #[test]
    fn grub_cfg_and_bls() {
        let cfg = "menuentry 'x' {\n\tlinux /vmlinuz root=UUID=1 ro quiet\n\tinitrd /initrd\n}\n";
        let out = grub_cfg_add_arg(cfg, "console=ttyS0").unwrap();
        assert!(out.contains("\tlinux /vmlinuz root=UUID=1 ro quiet console=ttyS0\n"));
        let bls = "title RHEL\nlinux /vmlinuz\noptions root=/dev/mapper/rhel-root ro\n";
        assert!(bls_add_arg(bls, "console=ttyS0")
            .unwrap()
            .contains("options root=/dev/mapper/rhel-root ro console=ttyS0\n"));
    }

    #[test]
    fn swap() {
        let f = "UUID=1 / ext4 defaults 0 1\n/swapfile none swap sw 0 0\n# x swap\n";
        let o = fstab_no_swap(f).unwrap();
        assert!(
            o.contains("# disabled by onramp (no swap on the OS disk): /swapfile none swap sw 0 0")
        );
        assert!(o.starts_with("UUID=1 / ext4"));
        assert!(fstab_no_swap("UUID=1 / ext4 defaults 0 1\n").is_none());
    }
}
