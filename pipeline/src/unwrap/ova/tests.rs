use std::io::Write;
use std::process::{Command, Stdio};

use bytes::Bytes;
use sluice_formats::Format;

use crate::source::{ChunkSource, MemorySource, SourceError};
use crate::unwrap::{UnwrapError, UnwrapLimits, Unwrapped};

const VMDK_URI: &str = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";

/// A DMTF OVF 1.0 descriptor with `disks` (href, format URI, compression) and the facts
/// the tests look for (osType ubuntu64Guest, 2 CPUs, 2048 MiB).
fn descriptor(disks: &[(&str, &str, &str)]) -> String {
    let mut files = String::new();
    let mut disk_elems = String::new();
    for (i, (href, uri, compression)) in disks.iter().enumerate() {
        let comp = if compression.is_empty() {
            String::new()
        } else {
            format!(" ovf:compression=\"{compression}\"")
        };
        files += &format!("    <File ovf:id=\"file{i}\" ovf:href=\"{href}\"{comp}/>\n");
        disk_elems += &format!(
            "    <Disk ovf:diskId=\"vmdisk{i}\" ovf:fileRef=\"file{i}\" ovf:capacity=\"1\" \
             ovf:capacityAllocationUnits=\"byte * 2^20\" ovf:format=\"{uri}\"/>\n"
        );
    }
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References>
{files}  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
{disk_elems}  </DiskSection>
  <VirtualSystem ovf:id="vm">
    <Info>A virtual machine</Info>
    <OperatingSystemSection ovf:id="94" vmw:osType="ubuntu64Guest">
      <Info>The kind of installed guest operating system</Info>
      <Description>Ubuntu Linux (64-bit)</Description>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:ElementName>2 virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>2</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:ElementName>2048MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>2048</rasd:VirtualQuantity>
      </Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#
    )
}

/// A tar in `format` (`ustar`, `pax` or `gnu`) of `members`, written by python's `tarfile`.
fn tar(format: &str, members: &[(&str, &[u8])]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = Vec::new();
    for (i, (name, data)) in members.iter().enumerate() {
        let path = dir.path().join(format!("m{i}"));
        std::fs::write(&path, data).unwrap();
        spec.push(format!("({name:?}, {:?})", path.to_str().unwrap()));
    }
    let script = format!(
        "import sys, tarfile\n\
         fmt = {{'ustar': tarfile.USTAR_FORMAT, 'pax': tarfile.PAX_FORMAT, 'gnu': tarfile.GNU_FORMAT}}['{format}']\n\
         with tarfile.open(fileobj=sys.stdout.buffer, mode='w|', format=fmt) as t:\n\
         \x20   for name, path in [{}]:\n\
         \x20       t.add(path, arcname=name)\n",
        spec.join(", ")
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .args(["-c", "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&data).unwrap());
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    out.stdout
}

fn disk() -> Vec<u8> {
    (0..300_000u32).map(|i| (i % 251) as u8).collect()
}

struct Unwrapped_ {
    data: Result<Vec<u8>, SourceError>,
    properties: Vec<(String, String)>,
    unwrapped: Option<&'static str>,
}

async fn read(ova: Vec<u8>, declared: Option<Format>, limit: u64, chunk: usize) -> Unwrapped_ {
    let mut src = Unwrapped::open_ova(
        MemorySource::new(Bytes::from(ova), chunk),
        UnwrapLimits::capped(limit),
        declared,
    )
    .unwrap();
    let mut out = Vec::new();
    let data = loop {
        match src.next_chunk().await {
            Ok(Some(c)) => out.extend_from_slice(&c),
            Ok(None) => break Ok(out),
            Err(e) => break Err(e),
        }
    };
    Unwrapped_ {
        data,
        properties: src.source_properties(),
        unwrapped: src.unwrapped(),
    }
}

/// The refusal of `ova`: its reason code and message.
async fn refusal(ova: Vec<u8>, declared: Option<Format>) -> (&'static str, String) {
    match read(ova, declared, u64::MAX, 4096).await.data {
        Err(SourceError::Unwrap(e)) => (e.reason_code(), e.to_string()),
        other => panic!("expected a refusal, got {:?}", other.map(|d| d.len())),
    }
}

fn prop<'a>(props: &'a [(String, String)], key: &str) -> Option<&'a str> {
    props
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn test_ova_each_tar_format_yields_the_disk_and_the_facts() {
    let disk = disk();
    let long = format!("{}/disk1.vmdk", "d".repeat(120));
    for format in ["ustar", "pax", "gnu"] {
        for name in ["disk1.vmdk", long.as_str()] {
            if format == "ustar" && name.len() > 100 {
                // ustar splits a long name into prefix/name: covered by the short case.
            }
            let desc = descriptor(&[(name, VMDK_URI, "")]);
            let ova = tar(
                format,
                &[
                    ("vm.ovf", desc.as_bytes()),
                    ("vm.cert", b"not checked"),
                    (name, &disk),
                ],
            );
            for chunk in [1000, 1 << 20] {
                let got = read(ova.clone(), Some(Format::Vmdk), u64::MAX, chunk).await;
                assert!(got.data.unwrap() == disk, "{format} {name}");
                assert_eq!(got.unwrapped, Some("ova"));
                assert_eq!(prop(&got.properties, "ovf_os_type"), Some("ubuntu64Guest"));
                assert_eq!(prop(&got.properties, "ovf_os_id"), Some("94"));
                assert_eq!(prop(&got.properties, "ovf_cpus"), Some("2"));
                assert_eq!(prop(&got.properties, "ovf_memory_mib"), Some("2048"));
                assert_eq!(
                    prop(&got.properties, "ovf_os_description"),
                    Some("Ubuntu Linux (64-bit)")
                );
            }
        }
    }
}

#[tokio::test]
async fn test_ova_gzip_member_is_unwrapped() {
    let disk = disk();
    let desc = descriptor(&[("disk1.vmdk.gz", VMDK_URI, "gzip")]);
    let ova = tar(
        "ustar",
        &[("vm.ovf", desc.as_bytes()), ("disk1.vmdk.gz", &gzip(&disk))],
    );
    let got = read(ova, Some(Format::Vmdk), u64::MAX, 4096).await;
    assert!(got.data.unwrap() == disk);
}

#[tokio::test]
async fn test_ova_manifest_before_the_disk_is_checked() {
    let disk = disk();
    let desc = descriptor(&[("disk1.vmdk", VMDK_URI, "")]);
    let sha256 = openssl::sha::sha256(&disk);
    let sha1 = openssl::sha::sha1(&disk);
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    for mf in [
        format!("SHA256(vm.ovf)= 00\nSHA256(disk1.vmdk)= {}\n", hex(&sha256)),
        format!("SHA1(disk1.vmdk)= {}\n", hex(&sha1)),
    ] {
        let ova = tar(
            "ustar",
            &[
                ("vm.ovf", desc.as_bytes()),
                ("vm.mf", mf.as_bytes()),
                ("disk1.vmdk", &disk),
            ],
        );
        assert!(read(ova, None, u64::MAX, 4096).await.data.unwrap() == disk);
    }
    let mf = format!("SHA256(disk1.vmdk)= {}\n", "ab".repeat(32));
    let ova = tar(
        "ustar",
        &[
            ("vm.ovf", desc.as_bytes()),
            ("vm.mf", mf.as_bytes()),
            ("disk1.vmdk", &disk),
        ],
    );
    let (code, message) = refusal(ova, None).await;
    assert_eq!(code, "corrupt");
    assert!(message.contains("manifest digest"), "{message}");
}

#[tokio::test]
async fn test_ova_manifest_after_the_disk_is_checked_at_the_end() {
    let disk = disk();
    let desc = descriptor(&[("disk1.vmdk", VMDK_URI, "")]);
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let after = |mf: String| {
        tar(
            "ustar",
            &[
                ("vm.ovf", desc.as_bytes()),
                ("disk1.vmdk", &disk),
                ("vm.mf", mf.as_bytes()),
            ],
        )
    };
    for mf in [
        format!(
            "SHA256(disk1.vmdk)= {}\n",
            hex(&openssl::sha::sha256(&disk))
        ),
        format!("SHA1(disk1.vmdk)= {}\n", hex(&openssl::sha::sha1(&disk))),
    ] {
        assert!(read(after(mf), None, u64::MAX, 4096).await.data.unwrap() == disk);
    }
    for mf in [
        format!("SHA256(disk1.vmdk)= {}\n", "ab".repeat(32)),
        format!("SHA1(disk1.vmdk)= {}\n", "cd".repeat(20)),
    ] {
        let (code, message) = refusal(after(mf), None).await;
        assert_eq!(code, "corrupt");
        assert!(message.contains("manifest digest"), "{message}");
    }
}

#[tokio::test]
async fn test_ova_two_disks_is_unsupported_format() {
    let desc = descriptor(&[("a.vmdk", VMDK_URI, ""), ("b.vmdk", VMDK_URI, "")]);
    let ova = tar(
        "ustar",
        &[
            ("vm.ovf", desc.as_bytes()),
            ("a.vmdk", b"a"),
            ("b.vmdk", b"b"),
        ],
    );
    let (code, message) = refusal(ova, None).await;
    assert_eq!(code, "unsupported_format");
    assert!(message.contains("2 disks"), "{message}");
}

#[tokio::test]
async fn test_ova_missing_disk_member_is_truncated() {
    let desc = descriptor(&[("disk1.vmdk", VMDK_URI, "")]);
    let ova = tar(
        "ustar",
        &[("vm.ovf", desc.as_bytes()), ("other.vmdk", b"x")],
    );
    let (code, message) = refusal(ova, None).await;
    assert_eq!(code, "truncated");
    assert!(message.contains("disk1.vmdk"), "{message}");
}

#[tokio::test]
async fn test_ova_path_tricks_are_corrupt() {
    let disk = disk();
    // In a member name, and in the descriptor's href.
    let desc = descriptor(&[("disk1.vmdk", VMDK_URI, "")]);
    let ova = tar(
        "pax",
        &[
            ("vm.ovf", desc.as_bytes()),
            ("../etc/cron.d/x", b"x"),
            ("disk1.vmdk", &disk),
        ],
    );
    let (code, message) = refusal(ova, None).await;
    assert_eq!(code, "corrupt");
    assert!(message.contains("../etc/cron.d/x"), "{message}");
    for href in ["../disk1.vmdk", "/etc/passwd"] {
        let desc = descriptor(&[(href, VMDK_URI, "")]);
        let ova = tar("gnu", &[("vm.ovf", desc.as_bytes()), ("disk1.vmdk", &disk)]);
        let (code, message) = refusal(ova, None).await;
        assert_eq!(code, "corrupt", "{href}");
        assert!(message.contains(href), "{message}");
    }
}

#[tokio::test]
async fn test_ova_entity_bomb_descriptor_is_refused_without_expansion() {
    let bomb = r#"<?xml version="1.0"?>
<!DOCTYPE Envelope [
 <!ENTITY a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">
 <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
 <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
 <!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">
 <!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;">
 <!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">
 <!ENTITY g "&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;">
 <!ENTITY h "&g;&g;&g;&g;&g;&g;&g;&g;&g;&g;">
]>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"><Info>&h;</Info></Envelope>
"#;
    let ova = tar(
        "ustar",
        &[("vm.ovf", bomb.as_bytes()), ("disk1.vmdk", b"x")],
    );
    let (code, message) = refusal(ova, None).await;
    assert_eq!(code, "corrupt");
    assert!(message.contains("OVF descriptor"), "{message}");
}

#[tokio::test]
async fn test_ova_descriptor_disagreeing_with_the_declared_format_is_format_mismatch() {
    let desc = descriptor(&[(
        "disk1.qcow2",
        "http://www.gnome.org/~markmc/qcow-image-format.html",
        "",
    )]);
    let ova = tar(
        "ustar",
        &[("vm.ovf", desc.as_bytes()), ("disk1.qcow2", b"x")],
    );
    let (code, message) = refusal(ova, Some(Format::Vmdk)).await;
    assert_eq!(code, "format_mismatch");
    assert!(message.contains("qcow2"), "{message}");
}

#[tokio::test]
async fn test_ova_first_member_not_a_descriptor_and_not_a_tar_are_corrupt() {
    let ova = tar("ustar", &[("disk1.vmdk", b"x"), ("vm.ovf", b"<Envelope/>")]);
    let (code, message) = refusal(ova, None).await;
    assert_eq!(code, "corrupt");
    assert!(message.contains("first member"), "{message}");
    let (code, _) = refusal(vec![7u8; 4096], None).await;
    assert_eq!(code, "corrupt");
}

#[tokio::test]
async fn test_ova_truncated_archive_is_corrupt() {
    let disk = disk();
    let desc = descriptor(&[("disk1.vmdk", VMDK_URI, "")]);
    let ova = tar(
        "ustar",
        &[("vm.ovf", desc.as_bytes()), ("disk1.vmdk", &disk)],
    );
    let (code, message) = refusal(ova[..ova.len() / 2].to_vec(), None).await;
    assert_eq!(code, "corrupt");
    assert!(message.contains("truncated"), "{message}");
}

#[tokio::test]
async fn test_ova_disk_above_the_limit_is_size_cap() {
    let disk = disk();
    let desc = descriptor(&[("disk1.vmdk", VMDK_URI, "")]);
    let ova = tar(
        "ustar",
        &[("vm.ovf", desc.as_bytes()), ("disk1.vmdk", &disk)],
    );
    match read(ova, None, 100_000, 4096).await.data {
        Err(SourceError::Unwrap(e)) => assert_eq!(e.reason_code(), "size_cap"),
        other => panic!("{:?}", other.map(|d| d.len())),
    }
}

#[tokio::test]
async fn test_ova_huge_pax_header_is_limit_exceeded_without_allocating() {
    // A pax header claiming 1 TiB of records (octal size field), followed by nothing.
    let desc = descriptor(&[("disk1.vmdk", VMDK_URI, "")]);
    let mut ova = tar("ustar", &[("vm.ovf", desc.as_bytes())]);
    let mut header = ova[..512].to_vec();
    header[156] = b'x';
    header[124..136].copy_from_slice(b"20000000000\0");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    // Descriptor first, then the hostile header where the disk would be.
    let end = 512 + desc.len().div_ceil(512) * 512;
    ova.truncate(end);
    ova.extend_from_slice(&header);
    let (code, message) = refusal(ova, None).await;
    assert_eq!(code, "limit_exceeded", "{message}");
    assert_eq!(UnwrapError::Stopped("x").reason(), None);
}
