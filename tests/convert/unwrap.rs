//! `sluice convert` and `sluice inspect` on compressed files: qemu-img images wrapped by the
//! real `gzip`, `xz`, `zstd` and `bzip2` convert (from a file and from stdin) to raw
//! byte-identical to `qemu-img convert -O raw` of the unwrapped image; truncated, corrupt and
//! nested streams are refused (exit 1) with `corrupt` / `compressed` and no output; a bomb
//! stops at `--max-virtual-size` with `size_cap`.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::common::{qemu_img_convert, raw_with_data, read, run, scratch, wrap, WRAPPERS};

fn sluice(args: &[&str], stdin: Option<&Path>) -> Output {
    let input = match stdin {
        Some(path) => Stdio::from(File::open(path).expect("stdin file")),
        None => Stdio::null(),
    };
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .stdin(input)
        .output()
        .expect("running sluice")
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {} / {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The first reason code of a refusal's JSON (`reasons` of inspect or convert).
fn first_code(v: &Value) -> &str {
    v["reasons"][0]["code"].as_str().expect("a reason")
}

#[test]
fn test_convert_each_wrapper_of_qcow2_and_vmdk_matches_qemu_raw() {
    let dir = scratch();
    let raw = raw_with_data(dir.path(), "src.raw", 8 << 20);
    let qcow2 = qemu_img_convert(&raw, &dir.path().join("d.qcow2"), "qcow2", "");
    let vmdk = qemu_img_convert(
        &raw,
        &dir.path().join("d.vmdk"),
        "vmdk",
        "subformat=streamOptimized",
    );
    for src in [&qcow2, &vmdk] {
        let reference = qemu_img_convert(src, &src.with_extension("ref.raw"), "raw", "");
        for (tool, ext) in WRAPPERS {
            let wrapped = wrap(src, tool, ext);
            let out_path = dir.path().join(format!("out-{tool}.raw"));
            let w = wrapped.to_str().unwrap();
            let o = out_path.to_str().unwrap();
            let out = sluice(&["convert", "--json", "--to", "raw", w, o], None);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}",
                String::from_utf8_lossy(&out.stdout)
            );
            assert_eq!(json(&out)["unwrapped"], tool);
            assert!(read(&out_path) == read(&reference), "{tool} {w}");
            // And from stdin, never seeked.
            let out = sluice(&["convert", "--to", "raw", "-", o], Some(&wrapped));
            assert_eq!(out.status.code(), Some(0));
            assert!(read(&out_path) == read(&reference), "{tool} {w} from stdin");
            let out = sluice(&["inspect", "--json", w], None);
            assert_eq!(out.status.code(), Some(0));
            assert_eq!(json(&out)["unwrapped"], tool);
        }
    }
}

#[test]
fn test_convert_and_inspect_broken_streams_are_refused_with_no_output() {
    let dir = scratch();
    let raw = raw_with_data(dir.path(), "src.raw", 4 << 20);
    let qcow2 = qemu_img_convert(&raw, &dir.path().join("d.qcow2"), "qcow2", "");
    let out_path = dir.path().join("out.raw");
    let o = out_path.to_str().unwrap();
    for (tool, ext) in WRAPPERS {
        let whole = read(&wrap(&qcow2, tool, ext));
        let cut = dir.path().join(format!("cut.{ext}"));
        std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
        let mut bad = whole.clone();
        let mid = bad.len() / 2;
        for b in &mut bad[mid..mid + 64] {
            *b ^= 0x5a;
        }
        let corrupt = dir.path().join(format!("bad.{ext}"));
        std::fs::write(&corrupt, &bad).unwrap();
        for input in [&cut, &corrupt] {
            let i = input.to_str().unwrap();
            let out = sluice(&["convert", "--json", "--to", "raw", i, o], None);
            assert_eq!(out.status.code(), Some(1), "{i}");
            let v = json(&out);
            assert_eq!(first_code(&v), "corrupt", "{i}: {v}");
            assert!(v["reasons"][0]["message"]
                .as_str()
                .unwrap()
                .starts_with(tool));
            assert!(!out_path.exists());
            let out = sluice(&["inspect", "--json", i], None);
            assert_eq!(out.status.code(), Some(1), "{i}");
            assert_eq!(first_code(&json(&out)), "corrupt", "{i}");
        }
    }
    let nested = wrap(&wrap(&qcow2, "xz", "xz"), "gzip", "gz");
    let out = sluice(&["inspect", "--json", nested.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(first_code(&json(&out)), "compressed");
}

#[test]
fn test_inspect_zstd_bomb_stops_at_the_size_cap() {
    let dir = scratch();
    let bomb = dir.path().join("bomb.zst");
    // 2 GiB of zeros in a few hundred KiB.
    let cmd = format!(
        "head -c 2147483648 /dev/zero | zstd -q -c > {}",
        bomb.to_str().unwrap()
    );
    run("sh", &["-c", &cmd]);
    assert!(read(&bomb).len() < 1 << 20);
    let out = sluice(
        &[
            "inspect",
            "--json",
            "--max-virtual-size",
            "67108864",
            bomb.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(first_code(&json(&out)), "size_cap");
}

#[test]
fn test_convert_and_inspect_an_ova_use_its_disk() {
    let dir = scratch();
    let d = dir.path();
    let raw = raw_with_data(d, "src.raw", 8 << 20);
    let vmdk = qemu_img_convert(
        &raw,
        &d.join("disk1.vmdk"),
        "vmdk",
        "subformat=streamOptimized",
    );
    let reference = qemu_img_convert(&vmdk, &d.join("ref.raw"), "raw", "");
    let ovf = "<?xml version=\"1.0\"?>\n<Envelope xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\" \
        xmlns:ovf=\"http://schemas.dmtf.org/ovf/envelope/1\" xmlns:vmw=\"http://www.vmware.com/schema/ovf\">\
        <References><File ovf:id=\"f1\" ovf:href=\"disk1.vmdk\"/></References>\
        <DiskSection><Info>d</Info><Disk ovf:diskId=\"d1\" ovf:fileRef=\"f1\" ovf:capacity=\"8\" \
        ovf:format=\"http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized\"/></DiskSection>\
        <VirtualSystem ovf:id=\"vm\"><Info>vm</Info><OperatingSystemSection ovf:id=\"101\" vmw:osType=\"otherLinux64Guest\">\
        <Info>os</Info></OperatingSystemSection></VirtualSystem></Envelope>\n";
    std::fs::write(d.join("vm.ovf"), ovf).unwrap();
    let ova = d.join("vm.ova");
    let script = format!(
        "import tarfile\nwith tarfile.open({:?}, 'w', format=tarfile.USTAR_FORMAT) as t:\n    t.add({:?}, arcname='vm.ovf')\n    t.add({:?}, arcname='disk1.vmdk')\n",
        ova.to_str().unwrap(),
        d.join("vm.ovf").to_str().unwrap(),
        vmdk.to_str().unwrap()
    );
    run("python3", &["-c", &script]);
    let out_path = d.join("out.raw");
    let o = out_path.to_str().unwrap();
    let out = sluice(
        &["convert", "--json", "--to", "raw", ova.to_str().unwrap(), o],
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v = json(&out);
    assert_eq!(v["unwrapped"], "ova");
    assert_eq!(v["properties"]["ovf_os_type"], "otherLinux64Guest");
    assert!(
        read(&out_path) == read(&reference),
        "not qemu-img's raw of the VMDK"
    );
    let out = sluice(&["convert", "--to", "raw", "-", o], Some(&ova));
    assert_eq!(out.status.code(), Some(0));
    assert!(read(&out_path) == read(&reference), "from stdin");
    let out = sluice(&["inspect", "--json", "--format", "vmdk", "-"], Some(&ova));
    assert_eq!(out.status.code(), Some(0));
    let v = json(&out);
    assert_eq!(v["format"], "vmdk");
    assert_eq!(v["properties"]["ovf_os_id"], "101");
}
