//! `onramp inspect` on Linux fixtures built at test time from synthetic root
//! trees imitating Debian (MBR with a logical swap partition), Ubuntu (GPT with
//! an ESP made by mkfs.vfat + mcopy), SUSE (no partition table) and a
//! RHEL-like system on LVM. Oracles: debugfs (ext4 file reads), mtype (FAT),
//! and the values the fixtures were built with. Mutated inputs must give a
//! clear error or a warning, never a panic, under timeout and a 256 MiB
//! address-space limit.
//!
//! The LVM fixture's PV label, PV header, metadata area and metadata text are
//! written by [`write_pv`] below (lvm2 tools need device-mapper and root block
//! devices, which test machines do not have): the layout follows lvm2's
//! `lib/format_text/layout.h` and the text is what `vgcfgbackup` prints.

mod common;

use common::rpm::{build_rpmdb, rpm_qa, Pkg};
use common::{require, run, s, tempdir};
use onramp::block::BlockSource;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

const ROOT_UUID: &str = "1b2c3d4e-0000-4000-8000-00000000a001";
const BOOT_UUID: &str = "1b2c3d4e-0000-4000-8000-00000000b002";

fn w(dir: &Path, p: &str, c: &[u8]) {
    let f = dir.join(p);
    std::fs::create_dir_all(f.parent().unwrap()).unwrap();
    std::fs::write(f, c).unwrap();
}

fn symlink(dir: &Path, p: &str, target: &str) {
    let f = dir.join(p);
    std::fs::create_dir_all(f.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, f).unwrap();
}

fn sh(script: &str) {
    let out = Command::new("sh")
        .arg("-ec")
        .arg(script)
        .env(
            "PATH",
            format!(
                "{}:/usr/sbin:/sbin",
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A cpio newc archive of `files` (relative paths with content) made by `cpio -o -H newc`.
fn cpio(dir: &Path, name: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let src = dir.join(format!("{name}.d"));
    for (p, c) in files {
        w(&src, p, c);
    }
    let list: Vec<String> = files.iter().map(|(p, _)| p.to_string()).collect();
    let out = dir.join(format!("{name}.cpio"));
    sh(&format!(
        "cd {} && printf '%s\\n' {} | cpio -o -H newc --quiet > {}",
        s(&src),
        list.join(" "),
        s(&out)
    ));
    out
}

/// mkfs.ext4 -d; filesystems under 512 MiB get 1 KiB blocks unless `-b 4096` is asked for.
fn mkfs_ext4(tree: &Path, img: &Path, mib: u64, uuid: &str, label: &str) {
    mkfs_ext4_bs(tree, img, mib, uuid, label, None);
}

fn mkfs_ext4_bs(tree: &Path, img: &Path, mib: u64, uuid: &str, label: &str, bs: Option<&str>) {
    let mut args = vec!["-q", "-F", "-E", "root_owner=0:0", "-U", uuid, "-L", label];
    if let Some(b) = bs {
        args.extend(["-b", b]);
    }
    let size = format!("{mib}M");
    args.extend(["-d", s(tree), s(img), &size]);
    run("mkfs.ext4", &args);
}

fn place(img: &Path, disk: &Path, offset_bytes: u64) {
    run(
        "dd",
        &[
            &format!("if={}", s(img)),
            &format!("of={}", s(disk)),
            "bs=512",
            &format!("seek={}", offset_bytes / 512),
            "conv=notrunc,sparse",
            "status=none",
        ],
    );
}

fn sfdisk(disk: &Path, script: &str) {
    use std::io::Write;
    let mut c = Command::new("sfdisk")
        .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
        .args(["--no-reread", "--no-tell-kernel", "-q", s(disk)])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(c.wait().unwrap().success());
}

fn kernel_config(hv: &str) -> String {
    format!("CONFIG_64BIT=y\n{hv}\n# CONFIG_FOO is not set\n")
}

/// Common pieces of every root tree.
fn base_tree(t: &Path, kver: &str) {
    w(t, "etc/hostname", b"vm1\n");
    w(
        t,
        &format!("boot/vmlinuz-{kver}"),
        &common::pattern(3, 20_000),
    );
    w(t, &format!("lib/modules/{kver}/modules.dep"), b"kernel/drivers/hv/hv_netvsc.ko: kernel/drivers/hv/hv_vmbus.ko\nkernel/drivers/hv/hv_vmbus.ko:\nkernel/drivers/hv/hv_storvsc.ko:\n");
    w(
        t,
        &format!("lib/modules/{kver}/modules.builtin"),
        b"kernel/drivers/hv/hv_utils.ko\n",
    );
    symlink(
        t,
        "etc/systemd/system/multi-user.target.wants/ssh.service",
        "/lib/systemd/system/ssh.service",
    );
    symlink(
        t,
        "etc/systemd/system/multi-user.target.wants/walinuxagent.service",
        "/lib/systemd/system/walinuxagent.service",
    );
    symlink(
        t,
        "etc/systemd/system/sockets.target.wants/dbus.socket",
        "/lib/systemd/system/dbus.socket",
    );
    symlink(t, "sbin/init", "/lib/systemd/systemd");
    w(t, "lib/systemd/systemd", b"\x7fELF");
}

fn inspect_json(disk: &Path) -> Value {
    let out = common::onramp_ok(&["inspect", "--json", s(disk)]);
    serde_json::from_str(&out).unwrap()
}

fn open_disk(disk: &Path) -> Arc<dyn BlockSource> {
    Arc::from(onramp::source::open(disk, &Default::default()).unwrap())
}

/// Our read of `path` in the ext4 volume at `offset` equals `debugfs -R "cat PATH"` on the disk's partition image.
fn check_debugfs(disk: &Path, part_img: &Path, offset: u64, paths: &[&str]) {
    let src = open_disk(disk);
    let vol: Arc<dyn BlockSource> = Arc::new(
        onramp::block::slice::Slice::new(src, offset, std::fs::metadata(part_img).unwrap().len())
            .unwrap(),
    );
    let fs = onramp::fs::probe(vol).unwrap().unwrap();
    for p in paths {
        let ours = onramp::fs::read_guest_file(fs.as_ref(), p, 1 << 30)
            .unwrap()
            .unwrap_or_else(|| panic!("{p} missing"));
        let theirs = Command::new("debugfs")
            .args(["-R", &format!("cat {p}"), s(part_img)])
            .output()
            .unwrap();
        assert_eq!(ours, theirs.stdout, "{p} differs from debugfs");
    }
}

fn debian(dir: &Path) -> (PathBuf, PathBuf) {
    let t = dir.join("debian.tree");
    let kver = "6.1.0-13-amd64";
    base_tree(&t, kver);
    w(&t, "etc/os-release", b"PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n");
    w(&t, "etc/fstab", format!("# /etc/fstab\nUUID={ROOT_UUID} / ext4 errors=remount-ro 0 1\n/dev/sda5 none swap sw 0 0\nproc /proc proc defaults 0 0\n").as_bytes());
    w(&t, "etc/default/grub", b"GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet\"\nGRUB_CMDLINE_LINUX=\"console=tty0 console=ttyS0,115200n8\"\n");
    w(&t, "boot/grub/grub.cfg", format!("menuentry 'Debian' {{\n\tlinux\t/boot/vmlinuz-{kver} root=UUID={ROOT_UUID} ro console=ttyS0 quiet\n\tinitrd /boot/initrd.img-{kver}\n}}\n").as_bytes());
    w(
        &t,
        &format!("boot/config-{kver}"),
        kernel_config(
            "CONFIG_HYPERV=m\nCONFIG_HYPERV_STORAGE=m\nCONFIG_HYPERV_NET=m\nCONFIG_HYPERV_UTILS=y",
        )
        .as_bytes(),
    );
    let c = cpio(
        dir,
        "deb-initrd",
        &[
            ("init", b"#!/bin/sh\n"),
            (
                &format!("usr/lib/modules/{kver}/kernel/drivers/hv/hv_vmbus.ko"),
                b"ko1",
            ),
            (
                &format!("usr/lib/modules/{kver}/kernel/drivers/hv/hv_storvsc.ko"),
                b"ko2",
            ),
            (
                &format!("usr/lib/modules/{kver}/kernel/fs/ext4/ext4.ko"),
                b"ko3",
            ),
        ],
    );
    sh(&format!(
        "gzip -9 -n -c {} > {}",
        s(&c),
        s(&t.join(format!("boot/initrd.img-{kver}")))
    ));
    w(&t, "var/lib/dpkg/status", b"Package: openssh-server\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1:9.2p1-2\n\nPackage: walinuxagent\nStatus: install ok installed\nArchitecture: all\nVersion: 2.9.0.4-1\n\nPackage: removed-thing\nStatus: deinstall ok config-files\nVersion: 1.0\n\nPackage: bash\nStatus: install ok installed\nArchitecture: amd64\nVersion: 5.2.15-2+b2\n");
    w(
        &t,
        "usr/lib/python3/dist-packages/azurelinuxagent/common/version.py",
        b"import os\nAGENT_NAME = \"WALinuxAgent\"\nAGENT_VERSION = '2.9.0.4'\n",
    );
    w(
        &t,
        "etc/waagent.conf",
        b"# comment\nProvisioning.Enabled=y\nProvisioning.Agent=waagent\nResourceDisk.Format=y\n",
    );
    w(
        &t,
        "etc/network/interfaces",
        b"auto lo\niface lo inet loopback\nauto eth0\niface eth0 inet dhcp\n",
    );
    w(&t, "etc/udev/rules.d/70-persistent-net.rules", b"# net rules\nSUBSYSTEM==\"net\", ACTION==\"add\", DRIVERS==\"?*\", ATTR{address}==\"00:15:5d:01:02:03\", ATTR{type}==\"1\", KERNEL==\"eth*\", NAME=\"eth0\"\n");
    w(&t, "usr/share/doc/big.bin", &common::pattern(9, 3_000_000));
    for i in 0..400 {
        w(
            &t,
            &format!("usr/share/many/file-with-a-long-name-{i:04}.txt"),
            format!("{i}\n").as_bytes(),
        );
    }
    symlink(&t, "usr/share/long-link", &"x/".repeat(60));
    let part = dir.join("debian.part");
    mkfs_ext4_bs(&t, &part, 40, ROOT_UUID, "debroot", Some("4096"));
    let disk = dir.join("debian.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    // p1 root, extended p2 holding logical p5 (swap) and p6 (empty Linux).
    sfdisk(&disk, "label: dos\nlabel-id: 0x1234abcd\nstart=2048, size=81920, type=83, bootable\nstart=88064, size=40960, type=5\nstart=90112, size=8192, type=82\nstart=100352, size=8192, type=83\n");
    place(&part, &disk, 2048 * 512);
    (disk, part)
}

#[test]
fn debian_mbr_logical_swap_gzip_initramfs() {
    if !require(&["mkfs.ext4", "sfdisk", "debugfs", "cpio", "gzip"]) {
        return;
    }
    let d = tempdir();
    let (disk, part) = debian(d.path());
    let guard = common::InputGuard::new(&disk);
    let j = inspect_json(&disk);
    guard.check();
    assert_eq!(j["schema_version"], 1);
    assert_eq!(j["disk"]["partition_table"], "mbr");
    assert_eq!(j["disk"]["disk_id"], "1234abcd");
    assert_eq!(j["disk"]["boot_mode"], "bios");
    let vols = j["volumes"].as_array().unwrap();
    let idx: Vec<u64> = vols.iter().map(|v| v["index"].as_u64().unwrap()).collect();
    assert_eq!(idx, vec![1, 5, 6], "{vols:?}");
    assert_eq!(vols[0]["bootable"], true);
    assert_eq!(vols[0]["type_id"], "0x83");
    assert_eq!(vols[1]["type_id"], "0x82");
    assert_eq!(vols[1]["start_bytes"], 90112 * 512);
    assert_eq!(vols[0]["filesystem"]["kind"], "ext4");
    assert_eq!(vols[0]["filesystem"]["uuid"], ROOT_UUID);
    assert_eq!(vols[0]["filesystem"]["label"], "debroot");
    assert_eq!(vols[0]["mount_point"], "/");
    let l = &j["linux"];
    assert_eq!(j["os"], "linux");
    assert_eq!(l["distro"]["id"], "debian");
    assert_eq!(l["distro"]["version_id"], "12");
    assert_eq!(l["distro"]["codename"], "bookworm");
    assert_eq!(l["hostname"], "vm1");
    let fstab = l["fstab"].as_array().unwrap();
    assert_eq!(fstab.len(), 3);
    assert_eq!(fstab[0]["volume"], 0);
    assert_eq!(fstab[1]["swap"], true);
    assert_eq!(
        fstab[1]["volume"], 1,
        "/dev/sda5 is the logical swap partition"
    );
    let b = &l["boot_loader"];
    assert_eq!(b["kind"], "grub2");
    assert_eq!(
        b["grub_cmdline_linux"],
        "console=tty0 console=ttyS0,115200n8"
    );
    assert_eq!(b["grub_cmdline_linux_default"], "quiet");
    assert_eq!(b["grub_cfg"], "/boot/grub/grub.cfg");
    assert_eq!(
        b["grub_cfg_linux_lines"][0],
        format!("/boot/vmlinuz-6.1.0-13-amd64 root=UUID={ROOT_UUID} ro console=ttyS0 quiet")
    );
    let k = &l["kernels"][0];
    assert_eq!(k["version"], "6.1.0-13-amd64");
    assert_eq!(k["modules_dir"], true);
    assert_eq!(k["initramfs"]["segments"], serde_json::json!(["gzip"]));
    assert_eq!(
        k["initramfs"]["modules"],
        serde_json::json!(["ext4.ko", "hv_storvsc.ko", "hv_vmbus.ko"])
    );
    assert_eq!(
        k["hyperv"],
        serde_json::json!({"hv_netvsc": "module", "hv_storvsc": "initramfs", "hv_utils": "builtin", "hv_vmbus": "initramfs"})
    );
    assert_eq!(l["init_system"], "systemd");
    assert_eq!(l["sshd_enabled"], true);
    let units = l["enabled_units"].as_array().unwrap();
    assert_eq!(units.len(), 3);
    assert!(units
        .iter()
        .any(|u| u["unit"] == "dbus.socket" && u["wanted_by"] == "sockets.target"));
    let wa = &l["agents"]["walinuxagent"];
    assert_eq!(wa["version"], "2.9.0.4");
    assert_eq!(wa["provisioning_agent"], "waagent");
    assert_eq!(wa["enabled"], true);
    assert!(l["agents"]["cloud_init"].is_null());
    assert_eq!(l["packages"]["manager"], "dpkg");
    assert_eq!(l["packages"]["count"], 3);
    assert_eq!(
        l["packages"]["list"][0],
        serde_json::json!({"name": "bash", "version": "5.2.15-2+b2", "arch": "amd64"})
    );
    assert_eq!(l["network"]["styles"], serde_json::json!(["ifupdown"]));
    assert_eq!(
        l["network"]["persistent_net_rules"][0],
        serde_json::json!({"mac": "00:15:5d:01:02:03", "name": "eth0"})
    );
    assert!(j["windows"].is_null());
    assert_eq!(j["warnings"], serde_json::json!([]));
    // File reads agree with debugfs (3 MB file through extents, htree dir, slow symlink's target dir).
    check_debugfs(
        &disk,
        &part,
        2048 * 512,
        &[
            "/etc/os-release",
            "/usr/share/doc/big.bin",
            "/usr/share/many/file-with-a-long-name-0399.txt",
            "/boot/initrd.img-6.1.0-13-amd64",
        ],
    );
    // Directory listing of an htree directory matches debugfs ls.
    let src = open_disk(&disk);
    let vol: Arc<dyn BlockSource> =
        Arc::new(onramp::block::slice::Slice::new(src, 2048 * 512, 40 << 20).unwrap());
    let fs = onramp::fs::probe(vol).unwrap().unwrap();
    let mut ours: Vec<String> = fs
        .read_dir("/usr/share/many")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    ours.sort();
    let ls = run("debugfs", &["-R", "ls -l /usr/share/many", s(&part)]);
    let mut theirs: Vec<String> = ls
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|n| n.starts_with("file-"))
        .map(str::to_string)
        .collect();
    theirs.sort();
    assert_eq!(ours.len(), 400);
    assert_eq!(ours, theirs);
    assert_eq!(
        fs.read_link("/usr/share/long-link").unwrap(),
        "x/".repeat(60)
    );
    // Human output is short and grouped.
    let text = common::onramp_ok(&["inspect", s(&disk)]);
    assert!(
        text.contains("os: linux Debian GNU/Linux 12 (bookworm)"),
        "{text}"
    );
    assert!(text.contains("hv_utils=builtin"), "{text}");
}

fn ubuntu(dir: &Path) -> (PathBuf, PathBuf) {
    let t = dir.join("ubuntu.tree");
    let kver = "6.5.0-1010-azure";
    base_tree(&t, kver);
    w(&t, "usr/lib/os-release", b"PRETTY_NAME=\"Ubuntu 22.04.3 LTS\"\nNAME=\"Ubuntu\"\nVERSION_ID=\"22.04\"\nVERSION=\"22.04.3 LTS (Jammy Jellyfish)\"\nVERSION_CODENAME=jammy\nID=ubuntu\nID_LIKE=debian\nUBUNTU_CODENAME=jammy\n");
    symlink(&t, "etc/os-release", "../usr/lib/os-release");
    w(&t, "etc/lsb-release", b"DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=22.04\nDISTRIB_CODENAME=jammy\nDISTRIB_DESCRIPTION=\"Ubuntu 22.04.3 LTS\"\n");
    w(&t, "etc/fstab", b"LABEL=cloudimg-rootfs / ext4 discard,errors=remount-ro 0 1\nUUID=ABCD-1234 /boot/efi vfat umask=0077 0 1\n/swapfile none swap sw 0 0\n");
    w(&t, "etc/default/grub", b"GRUB_CMDLINE_LINUX_DEFAULT=\"console=tty1 console=ttyS0 earlyprintk=ttyS0\"\nGRUB_CMDLINE_LINUX=\"\"\n");
    w(&t, "boot/grub/grub.cfg", format!("menuentry 'Ubuntu' {{\n  linux /boot/vmlinuz-{kver} root=LABEL=cloudimg-rootfs ro console=ttyS0\n}}\n").as_bytes());
    w(
        &t,
        &format!("boot/config-{kver}"),
        kernel_config(
            "CONFIG_HYPERV=y\nCONFIG_HYPERV_STORAGE=y\nCONFIG_HYPERV_NET=y\nCONFIG_HYPERV_UTILS=y",
        )
        .as_bytes(),
    );
    // Early microcode (uncompressed) + zstd main archive.
    let early = cpio(
        dir,
        "ub-early",
        &[(
            "kernel/x86/microcode/GenuineIntel.bin",
            &common::pattern(5, 3000),
        )],
    );
    let main = cpio(
        dir,
        "ub-main",
        &[
            ("init", b"#!/bin/sh\n"),
            (
                &format!("usr/lib/modules/{kver}/kernel/drivers/net/hyperv/hv_netvsc.ko.zst"),
                b"z",
            ),
            (
                &format!("usr/lib/modules/{kver}/kernel/drivers/scsi/sd_mod.ko.zst"),
                b"z",
            ),
        ],
    );
    sh(&format!(
        "cat {} > {out} && zstd -q -c {} >> {out}",
        s(&early),
        s(&main),
        out = s(&t.join(format!("boot/initrd.img-{kver}")))
    ));
    w(&t, "var/lib/dpkg/status", b"Package: cloud-init\nStatus: install ok installed\nArchitecture: all\nVersion: 23.3.3-0ubuntu0~22.04.1\n\nPackage: openssh-server\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1:8.9p1-3ubuntu0.4\n");
    w(
        &t,
        "etc/cloud/cloud.cfg",
        b"users:\n  - default\ndatasource_list: [ NoCloud, ConfigDrive, Azure, None ]\n",
    );
    w(&t, "etc/cloud/cloud.cfg.d/90-azure.cfg", b"# Azure\ndatasource_list: [ Azure ]\ndatasource:\n  Azure:\n    apply_network_config: true\n");
    w(
        &t,
        "etc/netplan/50-cloud-init.yaml",
        b"network:\n  version: 2\n  ethernets:\n    eth0:\n      dhcp4: true\n",
    );
    let part = dir.join("ubuntu.part");
    mkfs_ext4(&t, &part, 40, ROOT_UUID, "cloudimg-rootfs");
    // ESP
    let esp = dir.join("ubuntu.esp");
    run(
        "mkfs.vfat",
        &[
            "-C",
            "-F",
            "16",
            "-i",
            "ABCD1234",
            "-n",
            "UEFI",
            s(&esp),
            "16384",
        ],
    );
    w(dir, "esp/grub.cfg", b"search.fs_uuid 1b2c3d4e root\nset prefix=($root)'/boot/grub'\nconfigfile $prefix/grub.cfg\n");
    w(dir, "esp/BOOTX64.EFI", &common::pattern(11, 70_000));
    w(dir, "esp/A Long File Name.txt", b"long name\n");
    sh(&format!(
        "export MTOOLS_SKIP_CHECK=1; mmd -i {e} ::/EFI ::/EFI/ubuntu ::/EFI/BOOT && mcopy -i {e} {g} ::/EFI/ubuntu/grub.cfg && mcopy -i {e} {b} ::/EFI/BOOT/BOOTX64.EFI && mcopy -i {e} '{l}' '::/EFI/A Long File Name.txt'",
        e = s(&esp),
        g = s(&dir.join("esp/grub.cfg")),
        b = s(&dir.join("esp/BOOTX64.EFI")),
        l = s(&dir.join("esp/A Long File Name.txt"))
    ));
    let disk = dir.join("ubuntu.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    run(
        "sgdisk",
        &[
            "-o",
            "-U",
            "11111111-2222-3333-4444-555555555555",
            "-n",
            "15:2048:+16M",
            "-t",
            "15:ef00",
            "-c",
            "15:EFI System",
            "-n",
            "1:0:+40M",
            "-t",
            "1:8300",
            "-c",
            "1:rootfs",
            s(&disk),
        ],
    );
    place(&esp, &disk, 2048 * 512);
    place(&part, &disk, (2048 + 32768) * 512);
    (disk, esp)
}

#[test]
fn ubuntu_gpt_esp_microcode_zstd() {
    if !require(&[
        "mkfs.ext4",
        "sgdisk",
        "mkfs.vfat",
        "mcopy",
        "mtype",
        "cpio",
        "zstd",
    ]) {
        return;
    }
    let d = tempdir();
    let (disk, esp) = ubuntu(d.path());
    let j = inspect_json(&disk);
    assert_eq!(j["disk"]["partition_table"], "gpt");
    assert_eq!(j["disk"]["disk_id"], "11111111-2222-3333-4444-555555555555");
    assert_eq!(j["disk"]["boot_mode"], "uefi");
    assert_eq!(j["disk"]["hybrid_mbr"], false);
    let vols = j["volumes"].as_array().unwrap();
    assert_eq!(vols.len(), 2);
    assert_eq!(vols[0]["index"], 1);
    assert_eq!(vols[0]["name"], "rootfs");
    assert_eq!(vols[0]["type_id"], "0fc63daf-8483-4772-8e79-3d69d8477de4");
    assert_eq!(vols[1]["index"], 15);
    assert_eq!(vols[1]["esp"], true);
    assert_eq!(
        vols[1]["filesystem"],
        serde_json::json!({"kind": "vfat", "uuid": "ABCD-1234", "label": "UEFI"})
    );
    assert_eq!(vols[1]["mount_point"], "/boot/efi");
    let l = &j["linux"];
    assert_eq!(l["distro"]["id"], "ubuntu");
    assert_eq!(l["distro"]["version_id"], "22.04");
    assert_eq!(l["distro"]["codename"], "jammy");
    assert_eq!(l["distro"]["id_like"], serde_json::json!(["debian"]));
    assert_eq!(
        l["distro"]["sources"],
        serde_json::json!(["/etc/os-release", "/etc/lsb-release"])
    );
    assert_eq!(l["root"]["label"], "cloudimg-rootfs");
    assert_eq!(l["fstab"][1]["volume"], 1);
    assert_eq!(l["fstab"][2]["swap"], true);
    assert!(l["fstab"][2]["volume"].is_null());
    let k = &l["kernels"][0];
    assert_eq!(
        k["initramfs"]["segments"],
        serde_json::json!(["none", "zstd"])
    );
    assert_eq!(
        k["initramfs"]["modules"],
        serde_json::json!(["hv_netvsc.ko.zst", "sd_mod.ko.zst"])
    );
    assert_eq!(k["hyperv"]["hv_vmbus"], "builtin");
    let ci = &l["agents"]["cloud_init"];
    assert_eq!(ci["version"], "23.3.3-0ubuntu0~22.04.1");
    assert_eq!(ci["datasource_list"], serde_json::json!(["Azure"]));
    assert_eq!(
        ci["datasource_list_from"],
        "/etc/cloud/cloud.cfg.d/90-azure.cfg"
    );
    assert_eq!(l["network"]["styles"], serde_json::json!(["netplan"]));
    assert_eq!(l["boot_loader"]["grub_cfg"], "/boot/grub/grub.cfg");
    // FAT reads agree with mtype.
    let src = open_disk(&disk);
    let vol: Arc<dyn BlockSource> =
        Arc::new(onramp::block::slice::Slice::new(src, 2048 * 512, 16 << 20).unwrap());
    let fs = onramp::fs::probe(vol).unwrap().unwrap();
    assert_eq!(fs.kind(), "vfat");
    for p in [
        "/EFI/ubuntu/grub.cfg",
        "/EFI/BOOT/BOOTX64.EFI",
        "/EFI/A Long File Name.txt",
    ] {
        let ours = fs.read_file(p, 1 << 20).unwrap();
        let theirs = Command::new("mtype")
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-i", s(&esp), &format!("::{p}")])
            .output()
            .unwrap();
        assert_eq!(ours, theirs.stdout, "{p}");
    }
    // Case-insensitive lookup, as FAT is.
    assert!(fs.stat("/efi/boot/bootx64.efi").unwrap().is_some());
    // A hybrid MBR (sgdisk -h) is recognised; the GPT still rules.
    let hy = d.path().join("ubuntu-hybrid.raw");
    std::fs::copy(&disk, &hy).unwrap();
    run("sgdisk", &["-h", "15", s(&hy)]);
    let jh = inspect_json(&hy);
    assert_eq!(jh["disk"]["partition_table"], "gpt");
    assert_eq!(jh["disk"]["hybrid_mbr"], true);
    assert_eq!(jh["volumes"].as_array().unwrap().len(), 2);
    // GPT: damage the primary header CRC: the backup is used, with a warning.
    let bad = d.path().join("ubuntu-badgpt.raw");
    std::fs::copy(&disk, &bad).unwrap();
    poke(&bad, 512 + 16, &[0xde, 0xad]);
    let j2 = inspect_json(&bad);
    assert_eq!(j2["volumes"].as_array().unwrap().len(), 2);
    assert!(
        j2["warnings"][0].as_str().unwrap().contains("HeaderCRC32"),
        "{}",
        j2["warnings"]
    );
    // Both copies damaged: a clear error, exit 2.
    let size = std::fs::metadata(&bad).unwrap().len();
    poke(&bad, size - 512 + 16, &[0xde, 0xad]);
    let out = common::onramp(&["inspect", s(&bad)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("GPT"));
}

fn poke(p: &Path, off: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
    f.write_all_at(bytes, off).unwrap();
}

#[test]
fn suse_no_table_bls_xz_rpmdb() {
    if !require(&["mkfs.ext4", "cpio", "xz", "debugfs"]) {
        return;
    }
    let d = tempdir();
    let t = d.path().join("suse.tree");
    let kver = "5.14.21-150500.55.39-default";
    base_tree(&t, kver);
    w(&t, "usr/lib/os-release", b"NAME=\"SLES\"\nVERSION=\"15-SP5\"\nVERSION_ID=\"15.5\"\nPRETTY_NAME=\"SUSE Linux Enterprise Server 15 SP5\"\nID=\"sles\"\nID_LIKE=\"suse\"\n");
    symlink(&t, "etc/os-release", "../usr/lib/os-release");
    w(
        &t,
        "etc/fstab",
        format!("UUID={ROOT_UUID} / ext4 defaults 0 1\n").as_bytes(),
    );
    w(&t, "boot/loader/entries/sles-5.14.21.conf", format!("title SUSE Linux Enterprise Server 15 SP5\nversion {kver}\nlinux /boot/vmlinuz-{kver}\noptions root=UUID={ROOT_UUID} console=ttyS0 net.ifnames=0\n").as_bytes());
    let c = cpio(
        d.path(),
        "suse-initrd",
        &[(
            &format!("lib/modules/{kver}/kernel/drivers/hv/hv_vmbus.ko.xz"),
            b"x",
        )],
    );
    sh(&format!(
        "xz -c --check=crc32 {} > {}",
        s(&c),
        s(&t.join(format!("boot/initrd-{kver}")))
    ));
    w(
        &t,
        "usr/lib/sysimage/rpm/rpmdb.sqlite",
        b"SQLite format 3\0",
    );
    w(
        &t,
        "etc/sysconfig/network/ifcfg-eth0",
        b"BOOTPROTO='dhcp'\nSTARTMODE='auto'\n",
    );
    w(
        &t,
        "etc/cloud/cloud.cfg",
        b"datasource_list:\n  - Azure\n  - None\nsystem_info:\n  distro: sles\n",
    );
    w(
        &t,
        "usr/lib/python3.6/site-packages/cloudinit/version.py",
        b"__VERSION__ = \"23.3\"\n",
    );
    let disk = d.path().join("suse.raw");
    mkfs_ext4(&t, &disk, 24, ROOT_UUID, "ROOT");
    let j = inspect_json(&disk);
    assert_eq!(j["disk"]["partition_table"], "none");
    assert_eq!(j["volumes"][0]["start_bytes"], 0);
    assert_eq!(j["volumes"][0]["size_bytes"], 24 << 20);
    let l = &j["linux"];
    assert_eq!(l["distro"]["id"], "sles");
    assert_eq!(l["distro"]["version_id"], "15.5");
    assert!(l["distro"]["codename"].is_null());
    assert_eq!(l["boot_loader"]["kind"], "bls");
    assert_eq!(
        l["boot_loader"]["bls_entries"][0]["options"],
        format!("root=UUID={ROOT_UUID} console=ttyS0 net.ifnames=0")
    );
    let k = &l["kernels"][0];
    assert_eq!(k["initramfs"]["path"], format!("/boot/initrd-{kver}"));
    assert_eq!(k["initramfs"]["segments"], serde_json::json!(["xz"]));
    assert_eq!(k["hyperv"]["hv_vmbus"], "initramfs");
    assert_eq!(k["hyperv"]["hv_utils"], "builtin", "from modules.builtin");
    assert_eq!(k["hyperv"]["hv_storvsc"], "module", "from modules.dep");
    assert_eq!(l["packages"]["manager"], "rpm");
    // A 16-byte "database": not parsed, with the reason, and a warning.
    assert_eq!(l["packages"]["parsed"], false);
    let note = l["packages"]["note"].as_str().unwrap();
    assert!(
        note.starts_with("rpmdb present (/usr/lib/sysimage/rpm/rpmdb.sqlite), not parsed: "),
        "{note}"
    );
    assert!(note.contains("sqlite database header"), "{note}");
    assert!(
        j["warnings"].as_array().unwrap().iter().any(|w| w
            .as_str()
            .unwrap()
            .starts_with("/usr/lib/sysimage/rpm/rpmdb.sqlite: ")),
        "{}",
        j["warnings"]
    );
    assert_eq!(l["network"]["styles"], serde_json::json!(["wicked"]));
    assert_eq!(l["agents"]["cloud_init"]["version"], "23.3");
    assert_eq!(
        l["agents"]["cloud_init"]["datasource_list"],
        serde_json::json!(["Azure", "None"])
    );
    check_debugfs(
        &disk,
        &disk,
        0,
        &["/usr/lib/os-release", &format!("/boot/initrd-{kver}")],
    );
    // /etc/os-release is a relative symlink into /usr/lib: resolved inside the guest.
    let src = open_disk(&disk);
    let fs = onramp::fs::probe(src).unwrap().unwrap();
    assert_eq!(
        onramp::fs::read_guest_file(fs.as_ref(), "/etc/os-release", 4096).unwrap(),
        onramp::fs::read_guest_file(fs.as_ref(), "/usr/lib/os-release", 4096).unwrap()
    );
    assert_eq!(
        fs.read_link("/etc/os-release").unwrap(),
        "../usr/lib/os-release"
    );
}

/// lvm2's calc_crc (see src/partition/lvm.rs), computed independently here.
fn lvm_crc(b: &[u8]) -> u32 {
    let mut crc: u32 = 0xf597a6cf;
    for &x in b {
        crc ^= u32::from(x);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    crc
}

/// Write an LVM2 PV of `pv_size` bytes at `pv_off` of `disk`: label in sector 1,
/// one metadata area at 4096 (size 1 MiB - 4096) holding `text`, pe_start 1 MiB.
fn write_pv(disk: &Path, pv_off: u64, pv_size: u64, pv_uuid: &str, text: &str) {
    let mut label = vec![0u8; 512];
    label[0..8].copy_from_slice(b"LABELONE");
    label[8..16].copy_from_slice(&1u64.to_le_bytes());
    label[20..24].copy_from_slice(&32u32.to_le_bytes());
    label[24..32].copy_from_slice(b"LVM2 001");
    label[32..64].copy_from_slice(pv_uuid.as_bytes());
    label[64..72].copy_from_slice(&pv_size.to_le_bytes());
    // data area: (1 MiB, 0 = to the end), terminator; metadata area: (4096, 1 MiB - 4096), terminator.
    label[72..80].copy_from_slice(&(1u64 << 20).to_le_bytes());
    label[104..112].copy_from_slice(&4096u64.to_le_bytes());
    label[112..120].copy_from_slice(&((1u64 << 20) - 4096).to_le_bytes());
    let crc = lvm_crc(&label[20..512]);
    label[16..20].copy_from_slice(&crc.to_le_bytes());
    let mut mda = vec![0u8; 512];
    mda[4..20].copy_from_slice(b" LVM2 x[5A%r0N*>");
    mda[20..24].copy_from_slice(&1u32.to_le_bytes());
    mda[24..32].copy_from_slice(&4096u64.to_le_bytes());
    mda[32..40].copy_from_slice(&((1u64 << 20) - 4096).to_le_bytes());
    mda[40..48].copy_from_slice(&512u64.to_le_bytes());
    mda[48..56].copy_from_slice(&(text.len() as u64).to_le_bytes());
    mda[56..60].copy_from_slice(&lvm_crc(text.as_bytes()).to_le_bytes());
    let crc = lvm_crc(&mda[4..512]);
    mda[0..4].copy_from_slice(&crc.to_le_bytes());
    poke(disk, pv_off + 512, &label);
    poke(disk, pv_off + 4096, &mda);
    poke(disk, pv_off + 4096 + 512, text.as_bytes());
}

const PV_UUID: &str = "AbCdEf012345678901234567890123Zz";

fn lvm_text(root_segments: &str) -> String {
    format!(
        "rhel {{\nid = \"Vg0000-0000\"\nseqno = 4\nformat = \"lvm2\"\nstatus = [\"RESIZEABLE\", \"READ\", \"WRITE\"]\nextent_size = 2048\t# 1 Megabytes\nmax_lv = 0\n\nphysical_volumes {{\n\npv0 {{\nid = \"AbCdEf-0123-4567-8901-2345-6789-0123Zz\"\ndevice = \"/dev/sda2\"\nstatus = [\"ALLOCATABLE\"]\ndev_size = 98304\npe_start = 2048\npe_count = 47\n}}\n}}\n\nlogical_volumes {{\n\nroot {{\nid = \"Lv0000-root\"\nstatus = [\"READ\", \"WRITE\", \"VISIBLE\"]\n{root_segments}}}\n\nstripy {{\nid = \"Lv0000-stripy\"\nstatus = [\"READ\", \"WRITE\", \"VISIBLE\"]\nsegment_count = 1\nsegment1 {{\nstart_extent = 0\nextent_count = 2\ntype = \"striped\"\nstripe_count = 2\nstripe_size = 128\nstripes = [\"pv0\", 40, \"pv1\", 0]\n}}\n}}\n\ntp {{\nid = \"Lv0000-tp\"\nstatus = [\"READ\", \"WRITE\", \"VISIBLE\"]\nsegment_count = 1\nsegment1 {{\nstart_extent = 0\nextent_count = 1\ntype = \"thin-pool\"\n}}\n}}\n}}\n}}\n# Generated by the onramp test\ncontents = \"Text Format Volume Group\"\nversion = 1\ndescription = \"\"\ncreation_time = 1700000000\t# Tue Nov 14 2023\n"
    )
}

#[test]
fn rhel_like_root_on_lvm_two_segments() {
    if !require(&["mkfs.ext4", "sfdisk", "debugfs", "rpm", "rpmbuild"]) {
        return;
    }
    let d = tempdir();
    let t = d.path().join("rhel.tree");
    base_tree(&t, "5.14.0-362.el9.x86_64");
    w(&t, "etc/os-release", b"NAME=\"Red Hat Enterprise Linux\"\nVERSION=\"9.3 (Plow)\"\nID=\"rhel\"\nID_LIKE=\"fedora\"\nVERSION_ID=\"9.3\"\nPRETTY_NAME=\"Red Hat Enterprise Linux 9.3 (Plow)\"\n");
    w(
        &t,
        "etc/redhat-release",
        b"Red Hat Enterprise Linux release 9.3 (Plow)\n",
    );
    w(&t, "etc/fstab", format!("/dev/mapper/rhel-root / ext4 defaults 0 0\nUUID={BOOT_UUID} /boot ext4 defaults 0 0\n/dev/mapper/rhel-swap none swap defaults 0 0\n").as_bytes());
    w(
        &t,
        "etc/sysconfig/network-scripts/ifcfg-eth0",
        b"DEVICE=eth0\nBOOTPROTO=dhcp\n",
    );
    // A real rpm database (rpmbuild + rpm -i --justdb), listed by rpm -qa.
    let rpmwork = d.path().join("rpm");
    let db = build_rpmdb(
        &rpmwork,
        &[
            Pkg::new("kernel-core", "5.14.0", "362.8.1.el9_3", "x86_64"),
            Pkg::new("WALinuxAgent", "2.9.1.1", "1.el9", "noarch"),
            Pkg {
                epoch: Some(1),
                ..Pkg::new("openssh-server", "8.7p1", "34.el9", "x86_64")
            },
            Pkg::new("redhat-release", "9.3", "0.5.el9", "x86_64"),
        ],
    );
    let rpm_list = rpm_qa(&db);
    std::fs::create_dir_all(t.join("var/lib/rpm")).unwrap();
    std::fs::copy(db.join("rpmdb.sqlite"), t.join("var/lib/rpm/rpmdb.sqlite")).unwrap();
    std::fs::remove_file(t.join("boot/vmlinuz-5.14.0-362.el9.x86_64")).unwrap();
    // /boot is its own filesystem.
    let bt = d.path().join("rhel.boot");
    w(&bt, "vmlinuz-5.14.0-362.el9.x86_64", b"kernel");
    w(&bt, "loader/entries/abc-5.14.0-362.el9.x86_64.conf", b"title Red Hat Enterprise Linux (5.14.0-362.el9.x86_64) 9.3 (Plow)\nversion 5.14.0-362.el9.x86_64\nlinux /vmlinuz-5.14.0-362.el9.x86_64\noptions root=/dev/mapper/rhel-root ro crashkernel=auto\n");
    w(&bt, "grub2/grub.cfg", b"blscfg\n");
    let root = d.path().join("rhel.root");
    mkfs_ext4(&t, &root, 24, ROOT_UUID, "");
    let boot = d.path().join("rhel.bootfs");
    mkfs_ext4(&bt, &boot, 8, BOOT_UUID, "boot");
    let disk = d.path().join("rhel.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    // p1 /boot (8 MiB at 1 MiB), p2 LVM PV (48 MiB at 9 MiB).
    sfdisk(
        &disk,
        "label: dos\nstart=2048, size=16384, type=83\nstart=18432, size=98304, type=8e\n",
    );
    place(&boot, &disk, 2048 * 512);
    let pv_off = 18432 * 512u64;
    // root = 24 extents: logical extents 0..12 on PV extents 30..42, 12..24 on PV extents 2..14.
    let segs = "segment_count = 2\nsegment1 {\nstart_extent = 0\nextent_count = 12\ntype = \"striped\"\nstripe_count = 1\nstripes = [\"pv0\", 30]\n}\nsegment2 {\nstart_extent = 12\nextent_count = 12\ntype = \"striped\"\nstripe_count = 1\nstripes = [\"pv0\", 2]\n}\n";
    write_pv(&disk, pv_off, 98304 * 512, PV_UUID, &lvm_text(segs));
    let pe0 = pv_off + (1 << 20);
    let img = std::fs::read(&root).unwrap();
    poke(&disk, pe0 + 30 * (1 << 20), &img[..12 << 20]);
    poke(&disk, pe0 + 2 * (1 << 20), &img[12 << 20..]);
    let j = inspect_json(&disk);
    let vols = j["volumes"].as_array().unwrap();
    assert_eq!(vols.len(), 3, "{vols:?}");
    assert_eq!(vols[1]["lvm_pv"], true);
    assert_eq!(vols[2]["scheme"], "lvm");
    assert_eq!(vols[2]["name"], "rhel/root");
    assert_eq!(vols[2]["size_bytes"], 24 << 20);
    assert_eq!(vols[2]["start_bytes"], pe0 + 30 * (1 << 20));
    assert_eq!(vols[2]["filesystem"]["uuid"], ROOT_UUID);
    assert_eq!(vols[2]["mount_point"], "/");
    assert_eq!(vols[0]["mount_point"], "/boot");
    let warn = j["warnings"].as_array().unwrap();
    assert!(
        warn.iter()
            .any(|w| w.as_str().unwrap().contains("rhel/stripy")
                && w.as_str().unwrap().contains("2 stripes")),
        "{warn:?}"
    );
    assert!(
        warn.iter().any(|w| w.as_str().unwrap().contains("rhel/tp")
            && w.as_str().unwrap().contains("thin-pool")),
        "{warn:?}"
    );
    let l = &j["linux"];
    assert_eq!(l["distro"]["id"], "rhel");
    assert_eq!(l["distro"]["codename"], "Plow", "from redhat-release");
    assert_eq!(l["fstab"][0]["volume"], 2);
    assert_eq!(l["fstab"][1]["volume"], 0);
    assert_eq!(l["boot_loader"]["kind"], "grub2+bls");
    assert_eq!(
        l["boot_loader"]["bls_entries"][0]["options"],
        "root=/dev/mapper/rhel-root ro crashkernel=auto"
    );
    assert_eq!(
        l["kernels"][0]["vmlinuz"], "/boot/vmlinuz-5.14.0-362.el9.x86_64",
        "/boot read through the fstab mount"
    );
    assert_eq!(
        l["network"]["styles"],
        serde_json::json!(["network-scripts"])
    );
    // Packages from the rpm sqlite database, as rpm -qa lists them.
    assert_eq!(l["packages"]["manager"], "rpm");
    assert_eq!(l["packages"]["parsed"], true);
    assert_eq!(l["packages"]["count"], 4);
    let mut listed: Vec<String> = l["packages"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{} {} {}",
                p["name"].as_str().unwrap(),
                p["version"].as_str().unwrap(),
                p["arch"].as_str().unwrap()
            )
        })
        .collect();
    listed.sort();
    assert_eq!(listed, rpm_list);
    assert!(listed.contains(&"openssh-server 1:8.7p1-34.el9 x86_64".to_string()));
    // WALinuxAgent is known from the package database alone (no waagent.conf).
    assert_eq!(l["agents"]["walinuxagent"]["version"], "2.9.1.1-1.el9");
    // The LV reads back across its two segments as the filesystem image did (debugfs on the image).
    let src = open_disk(&disk);
    let layout = onramp::partition::scan(&src).unwrap();
    let lv = layout
        .volumes
        .iter()
        .find(|v| v.name.as_deref() == Some("rhel/root"))
        .unwrap();
    let lvsrc = lv.open(&src).unwrap();
    let fs = onramp::fs::probe(lvsrc).unwrap().unwrap();
    for p in ["/etc/os-release", "/var/lib/rpm/rpmdb.sqlite"] {
        let theirs = Command::new("debugfs")
            .args(["-R", &format!("cat {p}"), s(&root)])
            .output()
            .unwrap();
        assert_eq!(fs.read_file(p, 1 << 20).unwrap(), theirs.stdout);
    }
    // Garbage metadata text: a warning naming it, the rest still inspected.
    let bad = d.path().join("rhel-badlvm.raw");
    std::fs::copy(&disk, &bad).unwrap();
    write_pv(
        &bad,
        pv_off,
        98304 * 512,
        PV_UUID,
        "rhel { logical_volumes { root { = = [[[ \"",
    );
    let j = inspect_json(&bad);
    assert!(
        j["warnings"][0].as_str().unwrap().contains("LVM"),
        "{}",
        j["warnings"]
    );
    assert!(j["linux"].is_null());
    // A bad label CRC: a warning too.
    poke(&bad, pv_off + 512 + 40, b"garbage");
    let j = inspect_json(&bad);
    assert!(
        j["warnings"][0].as_str().unwrap().contains("crc_xl"),
        "{}",
        j["warnings"]
    );
}

/// Run `onramp inspect --json` under timeout and a 256 MiB address-space
/// limit: it must exit 0 or 2, never crash.
fn inspect_bounded(disk: &Path) -> (i32, String) {
    let out = Command::new("timeout")
        .args(["20", "prlimit", "--as=268435456", "--"])
        .arg(common::onramp_bin())
        .args(["inspect", "--json", s(disk)])
        .output()
        .unwrap();
    let code = out.status.code().unwrap_or(-1);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(code == 0 || code == 2, "exit {code}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    (code, err)
}

#[test]
fn mutated_inputs_give_errors_or_warnings_never_panics() {
    if !require(&[
        "mkfs.ext4",
        "sfdisk",
        "debugfs",
        "cpio",
        "gzip",
        "timeout",
        "prlimit",
    ]) {
        return;
    }
    let d = tempdir();
    let (disk, part) = debian(d.path());
    let p0 = 2048 * 512u64;
    let m = d.path().join("m.raw");
    let fresh = || {
        std::fs::copy(&disk, &m).unwrap();
    };
    let inode_off = |path: &str| -> u64 {
        // debugfs imap: "Inode N is part of block group G\n\tlocated at block B, offset 0xOFF"
        let out = run("debugfs", &["-R", &format!("imap {path}"), s(&part)]);
        let blk: u64 = out
            .split("located at block ")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let off = u64::from_str_radix(out.split("offset 0x").nth(1).unwrap().trim(), 16).unwrap();
        p0 + blk * 4096 + off
    };
    let block_of = |path: &str| -> u64 {
        let out = run("debugfs", &["-R", &format!("bmap {path} 0"), s(&part)]);
        p0 + out.trim().parse::<u64>().unwrap() * 4096
    };
    let many_dir = block_of("/usr/share/many");
    let etc_dir = block_of("/etc");
    let big_inode = inode_off("/usr/share/doc/big.bin");
    let initrd_inode = inode_off("/boot/initrd.img-6.1.0-13-amd64");
    let osrel_inode = inode_off("/etc/os-release");
    let initrd = block_of("/boot/initrd.img-6.1.0-13-amd64");
    let cases: Vec<(&str, u64, Vec<u8>, &str)> = vec![
        ("superblock magic", p0 + 1024 + 0x38, vec![0, 0], ""),
        (
            "superblock log_block_size",
            p0 + 1024 + 0x18,
            vec![40, 0, 0, 0],
            "s_log_block_size",
        ),
        (
            "superblock inodes_per_group",
            p0 + 1024 + 0x28,
            vec![0, 0, 0, 0],
            "s_inodes_per_group",
        ),
        (
            "superblock inode_size",
            p0 + 1024 + 0x58,
            vec![3, 0],
            "s_inode_size",
        ),
        (
            "group descriptor inode table",
            p0 + 4096 + 8,
            vec![0xff, 0xff, 0xff, 0x7f],
            "bg_inode_table",
        ),
        ("inode extent magic", big_inode + 0x28, vec![0, 0], ""),
        ("inode extent depth", big_inode + 0x28 + 6, vec![9, 0], ""),
        (
            "inode extent entries",
            big_inode + 0x28 + 2,
            vec![0xff, 0xff],
            "",
        ),
        (
            "inode size huge",
            big_inode + 0x6C,
            vec![0xff, 0xff, 0xff, 0x7f],
            "",
        ),
        ("directory rec_len", etc_dir + 4, vec![3, 0], "rec_len"),
        (
            "directory rec_len past block",
            many_dir + 12 + 4,
            vec![0xf0, 0xff],
            "",
        ),
        ("directory name_len", etc_dir + 12 + 6, vec![0xff], ""),
        (
            "directory inode number",
            etc_dir + 24,
            vec![0xff, 0xff, 0xff, 0x7f],
            "",
        ),
        (
            // 250 MiB claimed: under the 256 MiB read limit, over what the
            // address-space limit lets us allocate: an error, not an abort.
            "initramfs inode size 250 MiB",
            initrd_inode + 4,
            (250u32 << 20).to_le_bytes().to_vec(),
            "initrd",
        ),
        (
            "os-release inode size 63 MiB",
            osrel_inode + 4,
            (63u32 << 20).to_le_bytes().to_vec(),
            "",
        ),
        (
            "initramfs garbage",
            initrd,
            b"\x1f\x8b\x08\x00garbagegarbage".to_vec(),
            "initrd",
        ),
        (
            "EBR loop",
            88064 * 512 + 446 + 16 + 8,
            0u32.to_le_bytes().to_vec(),
            "loops",
        ),
        (
            "EBR next outside",
            88064 * 512 + 446 + 16 + 8,
            0x7fff_0000u32.to_le_bytes().to_vec(),
            "outside",
        ),
        (
            "MBR entry past disk",
            446 + 12,
            0xffff_fff0u32.to_le_bytes().to_vec(),
            "no valid partition entries",
        ),
    ];
    for (what, off, bytes, expect) in cases {
        fresh();
        poke(&m, off, &bytes);
        let started = std::time::Instant::now();
        let (code, err) = inspect_bounded(&m);
        assert!(started.elapsed().as_secs() < 20, "{what}: too slow");
        if !expect.is_empty() {
            let out = common::onramp(&["inspect", "--json", s(&m)]);
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(all.contains(expect), "{what}: expected {expect:?} in {all}");
        }
        eprintln!("{what}: exit {code} {}", err.lines().next().unwrap_or(""));
    }
    // Random byte flips over the filesystem metadata (first 1 MiB of the partition).
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for round in 0..40 {
        fresh();
        for _ in 0..16 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let off = p0 + (x % (1 << 20));
            poke(&m, off, &[(x >> 32) as u8]);
        }
        let (code, _) = inspect_bounded(&m);
        eprintln!("flip round {round}: exit {code}");
    }
}

/// ext2 and ext3 (block maps with indirect, double-indirect blocks on 1 KiB
/// blocks), ext4 with inline_data, and sparse files: reads agree with debugfs.
#[test]
fn ext_variants_block_maps_inline_sparse() {
    if !require(&["mkfs.ext4", "debugfs"]) {
        return;
    }
    let d = tempdir();
    let t = d.path().join("tree");
    w(&t, "etc/os-release", b"ID=test\n");
    w(&t, "big.bin", &common::pattern(21, 3_000_000));
    w(&t, "tiny.txt", b"tiny\n");
    w(&t, "d/sub/inner.txt", b"inner\n");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(t.join("sparse.bin")).unwrap();
        f.set_len(5 << 20).unwrap();
        f.write_all_at(&common::pattern(22, 10_000), 2 << 20)
            .unwrap();
        f.write_all_at(b"end", (5 << 20) - 3).unwrap();
    }
    for (mkfs, extra, kind) in [
        ("mkfs.ext2", vec![], "ext2"),
        ("mkfs.ext3", vec![], "ext3"),
        ("mkfs.ext4", vec!["-O", "inline_data"], "ext4"),
        (
            "mkfs.ext4",
            vec![
                "-b",
                "1024",
                "-O",
                "^has_journal,64bit,meta_bg,^resize_inode",
            ],
            "ext4",
        ),
    ] {
        let img = d.path().join(format!("{kind}.img"));
        let mut args = vec!["-q", "-F", "-E", "root_owner=0:0", "-L", kind];
        args.extend(extra.iter().copied());
        args.extend(["-d", s(&t), s(&img), "24M"]);
        run(mkfs, &args);
        let src = open_disk(&img);
        let fs = onramp::fs::probe(src).unwrap().unwrap();
        assert_eq!(fs.kind(), kind, "{mkfs} {extra:?}");
        assert_eq!(fs.label().as_deref(), Some(kind));
        for p in [
            "/big.bin",
            "/tiny.txt",
            "/d/sub/inner.txt",
            "/sparse.bin",
            "/etc/os-release",
        ] {
            let ours = fs.read_file(p, 1 << 30).unwrap();
            let mut theirs = Command::new("debugfs")
                .args(["-R", &format!("cat {p}"), s(&img)])
                .output()
                .unwrap()
                .stdout;
            // debugfs 1.47 `cat` prints all 60 bytes of i_block for inline-data files:
            // cut at the size `debugfs stat` reports.
            let stat = run("debugfs", &["-R", &format!("stat {p}"), s(&img)]);
            let size: usize = stat
                .split("Size: ")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap();
            theirs.truncate(size);
            assert_eq!(ours.len(), size, "{mkfs} {extra:?} {p}");
            assert!(ours == theirs, "{mkfs} {extra:?} {p} differs from debugfs");
        }
        // The read limit is enforced before anything is read.
        assert!(fs.read_file("/big.bin", 1000).is_err());
        let mut names: Vec<String> = fs
            .read_dir("/")
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        names.sort();
        assert!(
            names.starts_with(&["big.bin".to_string(), "d".into(), "etc".into()]),
            "{names:?}"
        );
    }
}

/// GPT on a disk with 4096-byte logical sectors (made by `fdisk -b 4096`), checked
/// against `fdisk -b 4096 -l`; a damaged entry array falls back to the backup.
#[test]
fn gpt_4k_sectors_and_entry_array_crc() {
    if !require(&["fdisk", "mkfs.ext4", "mkfs.vfat"]) {
        return;
    }
    let d = tempdir();
    let disk = d.path().join("4k.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    {
        use std::io::Write;
        let mut c = Command::new("fdisk")
            .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
            .args(["-b", "4096", s(&disk)])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        c.stdin
            .take()
            .unwrap()
            .write_all(b"g\nn\n1\n256\n+16M\nt\n1\nn\n2\n\n+24M\nw\n")
            .unwrap();
        assert!(c.wait().unwrap().success());
    }
    let t = d.path().join("tree");
    w(&t, "etc/os-release", b"ID=fourk\nVERSION_ID=1\n");
    w(
        &t,
        "etc/fstab",
        b"/dev/disk/by-uuid/00c0-ffee /boot/efi vfat defaults 0 2\n",
    );
    let root = d.path().join("root.img");
    mkfs_ext4_bs(&t, &root, 24, ROOT_UUID, "r4k", Some("4096"));
    let esp = d.path().join("esp.img");
    run(
        "mkfs.vfat",
        &[
            "-C",
            "-S",
            "4096",
            "-F",
            "32",
            "-i",
            "00C0FFEE",
            s(&esp),
            "16384",
        ],
    );
    // fdisk's own view of the table.
    let l = run("fdisk", &["-b", "4096", "-l", s(&disk)]);
    let starts: Vec<u64> = l
        .lines()
        .filter(|x| x.contains("4k.raw") && !x.starts_with("Disk"))
        .map(|x| x.split_whitespace().nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(starts, vec![256, 4352]);
    place(&esp, &disk, 256 * 4096);
    place(&root, &disk, 4352 * 4096);
    let j = inspect_json(&disk);
    assert_eq!(j["disk"]["sector_size"], 4096);
    assert_eq!(j["disk"]["boot_mode"], "uefi");
    let v = j["volumes"].as_array().unwrap();
    assert_eq!(v[0]["start_bytes"], 256 * 4096);
    assert_eq!(v[0]["size_bytes"], 16 << 20);
    assert_eq!(v[1]["start_bytes"], 4352 * 4096);
    assert_eq!(v[0]["filesystem"]["uuid"], "00C0-FFEE");
    assert_eq!(
        v[0]["mount_point"], "/boot/efi",
        "by-uuid, case-insensitive"
    );
    assert_eq!(v[1]["filesystem"]["label"], "r4k");
    assert_eq!(j["linux"]["distro"]["id"], "fourk");
    assert_eq!(j["warnings"], serde_json::json!([]));
    // Corrupt one byte of the primary entry array (LBA 2): its CRC fails, the backup is used.
    poke(&disk, 2 * 4096 + 40, &[0x77]);
    let j = inspect_json(&disk);
    assert_eq!(j["volumes"][1]["start_bytes"], 4352 * 4096);
    assert!(
        j["warnings"][0]
            .as_str()
            .unwrap()
            .contains("PartitionEntryArrayCRC32"),
        "{}",
        j["warnings"]
    );
}

/// Initramfs listings for every compression the kernel build uses here
/// (gzip, zstd, xz, lz4 legacy as `lz4 -l` writes it, lz4 frame), with and
/// without an uncompressed early cpio in front, agree with `cpio -it`.
#[test]
fn initramfs_compressions_agree_with_cpio() {
    if !require(&["cpio", "gzip", "zstd", "xz", "lz4"]) {
        return;
    }
    let d = tempdir();
    let files: Vec<(String, Vec<u8>)> = (0..30)
        .map(|i| {
            (
                format!(
                    "usr/lib/modules/6.1/kernel/drivers/m{i}/mod_{i}.ko{}",
                    ["", ".xz", ".zst"][i % 3]
                ),
                common::pattern(i as u64, 1000 + i * 37),
            )
        })
        .chain([
            ("init".to_string(), b"#!/bin/sh\n".to_vec()),
            (
                "etc/modules-load.d/x.conf".to_string(),
                b"hv_vmbus\n".to_vec(),
            ),
        ])
        .collect();
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_slice()))
        .collect();
    let main = cpio(d.path(), "main", &refs);
    let early = cpio(
        d.path(),
        "early",
        &[("kernel/x86/microcode/AuthenticAMD.bin", b"amd")],
    );
    let listed = run("sh", &["-c", &format!("cpio -it --quiet < {}", s(&main))]);
    let mut want: Vec<String> = listed
        .lines()
        .filter(|l| l.contains(".ko"))
        .map(|l| l.rsplit('/').next().unwrap().to_string())
        .collect();
    want.sort();
    assert_eq!(want.len(), 30);
    for (name, cmd) in [
        ("gzip", "gzip -c"),
        ("zstd", "zstd -q -c"),
        ("xz", "xz -c --check=crc32"),
        ("lz4", "lz4 -l -q -c"),
        ("lz4", "lz4 -q -c"),
    ] {
        for with_early in [false, true] {
            let out = d.path().join("img");
            let pre = if with_early {
                format!("cat {} > {o} && ", s(&early), o = s(&out))
            } else {
                format!(": > {} && ", s(&out))
            };
            sh(&format!("{pre}{cmd} {} >> {}", s(&main), s(&out)));
            let l = onramp::guest::initramfs::list(&std::fs::read(&out).unwrap())
                .unwrap_or_else(|e| panic!("{cmd}: {e}"));
            assert_eq!(l.modules, want, "{cmd}");
            let mut segs = if with_early {
                vec!["none".to_string()]
            } else {
                vec![]
            };
            segs.push(name.into());
            assert_eq!(l.segments, segs, "{cmd}");
            assert_eq!(
                l.entries,
                listed.lines().count() + usize::from(with_early),
                "{cmd}: entries"
            );
        }
    }
}

/// Detaches a loop device when dropped.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).output();
    }
}

/// lvm2's own tools write the PV (pvcreate, vgcreate on a loop device; LVs added
/// with vgcfgrestore, since lvcreate needs device-mapper, which test machines
/// lack). Our LV mapping must agree with `lvs --segments`'s PE ranges and
/// `pvs -o pe_start`. Skipped (with a message) where loop devices cannot be
/// attached, even in CI: that is a property of the machine, not a missing tool.
#[test]
fn lvm2_tools_written_pv_agrees_with_lvs() {
    if !require(&[
        "losetup",
        "pvcreate",
        "vgcreate",
        "vgcfgbackup",
        "vgcfgrestore",
        "lvs",
        "mkfs.ext4",
        "debugfs",
    ]) {
        return;
    }
    let d = tempdir();
    let disk = d.path().join("pv.raw");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let out = Command::new("losetup")
        .args(["-f", "--show", s(&disk)])
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!(
            "SKIPPED: cannot attach a loop device: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let lp = Loop(dev.clone());
    // Private LVM config: no devices file, no backups in the host's /etc/lvm.
    let sys = d.path().join("lvm");
    w(
        &sys,
        "lvm.conf",
        b"devices { use_devicesfile = 0 }\nbackup { backup = 0\narchive = 0 }\n",
    );
    let lvm = |args: &[&str]| -> String {
        let o = Command::new(args[0])
            .args(&args[1..])
            .args(["--devices", &dev])
            .env("LVM_SYSTEM_DIR", &sys)
            .env("LVM_SUPPRESS_FD_WARNINGS", "1")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let vg = "onrampt";
    lvm(&["pvcreate", "-q", &dev]);
    lvm(&["vgcreate", "-q", "-s", "1m", vg, &dev]);
    let meta = d.path().join("meta.txt");
    lvm(&["vgcfgbackup", "-q", "-f", s(&meta), vg]);
    let text = std::fs::read_to_string(&meta).unwrap();
    let seg = |n: u32, start: u32, count: u32, pe: u32| {
        format!("segment{n} {{\nstart_extent = {start}\nextent_count = {count}\ntype = \"striped\"\nstripe_count = 1\nstripes = [\"pv0\", {pe}]\n}}\n")
    };
    let lvs_text = format!(
        "logical_volumes {{\nroot {{\nid = \"aaaaaa-bbbb-cccc-dddd-eeee-ffff-000001\"\nstatus = [\"READ\", \"WRITE\", \"VISIBLE\"]\nflags = []\nsegment_count = 2\n{}{}}}\ndata {{\nid = \"aaaaaa-bbbb-cccc-dddd-eeee-ffff-000002\"\nstatus = [\"READ\", \"WRITE\", \"VISIBLE\"]\nflags = []\nsegment_count = 1\n{}}}\n}}\n",
        seg(1, 0, 8, 20),
        seg(2, 8, 8, 2),
        seg(1, 0, 4, 40)
    );
    let cut = text.rfind('}').unwrap();
    let edited = format!("{}{lvs_text}{}", &text[..cut], &text[cut..]);
    std::fs::write(&meta, edited).unwrap();
    lvm(&["vgcfgrestore", "-q", "-f", s(&meta), vg]);
    let pe_start: u64 = lvm(&[
        "pvs",
        "--noheadings",
        "--units",
        "b",
        "--nosuffix",
        "-o",
        "pe_start",
    ])
    .trim()
    .parse()
    .unwrap();
    let segs = lvm(&[
        "lvs",
        "--noheadings",
        "--segments",
        "-o",
        "lv_name,seg_start_pe,seg_pe_ranges",
        vg,
    ]);
    drop(lp);
    // "root 0 /dev/loop0:20-27" -> (name, start extent, first PE, last PE)
    let mut ranges: Vec<(String, u64, u64, u64)> = segs
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let r = f[2].rsplit(':').next().unwrap();
            let (a, b) = r.split_once('-').unwrap();
            (
                f[0].to_string(),
                f[1].parse().unwrap(),
                a.parse().unwrap(),
                b.parse().unwrap(),
            )
        })
        .collect();
    ranges.sort();
    assert_eq!(ranges.len(), 3, "{segs}");
    // Put an ext4 filesystem into root's extents where lvs says they are.
    let t = d.path().join("tree");
    w(&t, "etc/os-release", b"ID=lvmtest\n");
    w(&t, "data.bin", &common::pattern(31, 5_000_000));
    let img = d.path().join("root.img");
    mkfs_ext4(&t, &img, 16, ROOT_UUID, "lvroot");
    let bytes = std::fs::read(&img).unwrap();
    for (name, start, first, last) in &ranges {
        if name == "root" {
            let a = (*start as usize) << 20;
            let len = ((last - first + 1) as usize) << 20;
            poke(&disk, pe_start + (first << 20), &bytes[a..a + len]);
        }
    }
    let j = inspect_json(&disk);
    let vols = j["volumes"].as_array().unwrap();
    assert_eq!(j["disk"]["partition_table"], "none");
    assert_eq!(vols[0]["lvm_pv"], true);
    let root = vols
        .iter()
        .find(|v| v["name"] == format!("{vg}/root"))
        .unwrap();
    let data = vols
        .iter()
        .find(|v| v["name"] == format!("{vg}/data"))
        .unwrap();
    let first_pe = |n: &str| ranges.iter().find(|r| r.0 == n && r.1 == 0).unwrap().2;
    assert_eq!(root["start_bytes"], pe_start + (first_pe("root") << 20));
    assert_eq!(root["size_bytes"], 16 << 20);
    assert_eq!(data["start_bytes"], pe_start + (first_pe("data") << 20));
    assert_eq!(data["size_bytes"], 4 << 20);
    assert_eq!(root["filesystem"]["uuid"], ROOT_UUID);
    assert_eq!(j["linux"]["distro"]["id"], "lvmtest");
    let src = open_disk(&disk);
    let layout = onramp::partition::scan(&src).unwrap();
    let lv = layout
        .volumes
        .iter()
        .find(|v| v.name.as_deref() == Some("onrampt/root"))
        .unwrap();
    let fs = onramp::fs::probe(lv.open(&src).unwrap()).unwrap().unwrap();
    let theirs = Command::new("debugfs")
        .args(["-R", "cat /data.bin", s(&img)])
        .output()
        .unwrap();
    assert!(
        fs.read_file("/data.bin", 1 << 30).unwrap() == theirs.stdout,
        "data.bin across both LV segments"
    );
}
