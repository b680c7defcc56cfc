//! OVA imports through the real binary: an OVA built to the DMTF OVF spec (python's
//! `tarfile`, an OVF 1.0 descriptor, a manifest and a `qemu-img` streamOptimized VMDK) imports
//! by task and by `PUT /file` with `container_format: ova`; the disk converts to raw
//! byte-identical to `qemu-img convert -O raw` of the VMDK, the OVF facts become properties
//! and the container `bare`; hostile OVAs are refused with nothing stored.

use std::path::Path;

use serde_json::{json, Value};

use super::harness::{assert_no_files, digest, import_input, FileServer, Server, ADMIN};
use super::imports::image_with_data;
use crate::common::{qemu_img_convert, read, run, scratch};

const VMDK_URI: &str = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";

/// An OVF 1.0 descriptor (DSP0243) for one VM with the disks `hrefs` (and a 2-CPU, 2 GiB,
/// Ubuntu 64-bit hardware section); `doctype` goes before the envelope.
fn descriptor(hrefs: &[&str], doctype: &str) -> String {
    let files: String = hrefs
        .iter()
        .enumerate()
        .map(|(i, h)| format!("<File ovf:id=\"file{i}\" ovf:href=\"{h}\"/>"))
        .collect();
    let disks: String = (0..hrefs.len())
        .map(|i| {
            format!(
                "<Disk ovf:diskId=\"vmdisk{i}\" ovf:fileRef=\"file{i}\" ovf:capacity=\"64\" \
                 ovf:capacityAllocationUnits=\"byte * 2^20\" ovf:format=\"{VMDK_URI}\"/>"
            )
        })
        .collect();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>{doctype}
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf">
  <References>{files}</References>
  <DiskSection><Info>Virtual disk information</Info>{disks}</DiskSection>
  <VirtualSystem ovf:id="vm">
    <Info>A virtual machine</Info>
    <OperatingSystemSection ovf:id="94" vmw:osType="ubuntu64Guest">
      <Info>The kind of installed guest operating system</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <Item><rasd:ElementName>2 virtual CPU(s)</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>2</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:ElementName>2048MB of memory</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>2048</rasd:VirtualQuantity></Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#
    )
}

/// Writes `dir/NAME` as a tar (python `tarfile`, ustar as ovftool writes) of `members`
/// (archive name, file in `dir`), in that order.
fn make_ova(dir: &Path, name: &str, members: &[(&str, &str)]) {
    let list: Vec<String> = members
        .iter()
        .map(|(arc, file)| format!("({arc:?}, {:?})", dir.join(file).to_str().unwrap()))
        .collect();
    let script = format!(
        "import tarfile\nwith tarfile.open({:?}, 'w', format=tarfile.USTAR_FORMAT) as t:\n    for a, f in [{}]:\n        t.add(f, arcname=a)\n",
        dir.join(name).to_str().unwrap(),
        list.join(", ")
    );
    run("python3", &["-c", &script]);
}

/// Import task input for an OVA (`disk_format` vmdk, `container_format` ova).
fn ova_input(files: &FileServer, name: &str) -> Value {
    let mut input = import_input(&files.url(name), "vmdk", name);
    input["image_properties"]["container_format"] = json!("ova");
    input
}

#[test]
fn test_import_dmtf_ova_converts_its_disk_and_records_the_ovf_facts() {
    let dir = scratch();
    let d = dir.path();
    let vmdk = image_with_data(d, "disk1.vmdk", "vmdk", "subformat=streamOptimized");
    let reference = qemu_img_convert(&vmdk, &d.join("ref.raw"), "raw", "");
    std::fs::write(d.join("vm.ovf"), descriptor(&["disk1.vmdk"], "")).unwrap();
    let manifest = format!(
        "SHA256(vm.ovf)= {}\nSHA256(disk1.vmdk)= {}\n",
        digest("sha256sum", &d.join("vm.ovf")),
        digest("sha256sum", &vmdk)
    );
    std::fs::write(d.join("vm.mf"), manifest).unwrap();
    make_ova(
        d,
        "vm.ova",
        &[
            ("vm.ovf", "vm.ovf"),
            ("vm.mf", "vm.mf"),
            ("disk1.vmdk", "disk1.vmdk"),
        ],
    );
    let files = FileServer::start(d);
    let server = Server::start(&["--conversion", "raw"]);
    let task = server.create_task(ova_input(&files, "vm.ova"));
    let done = server.wait_task(task["id"].as_str().unwrap());
    assert_eq!(done["status"], "success", "{done}\n{}", server.log_text());
    assert_eq!(done["result"]["unwrapped"], "ova");
    let id = done["result"]["image_id"].as_str().unwrap();
    let image = server.get(&format!("/v2/images/{id}")).json();
    assert_eq!(image["container_format"], "bare", "{image}");
    assert_eq!(image["disk_format"], "raw");
    assert_eq!(image["ovf_os_type"], "ubuntu64Guest", "{image}");
    assert_eq!(image["ovf_cpus"], "2");
    assert_eq!(image["ovf_memory_mib"], "2048");
    assert_eq!(image["checksum"], digest("md5sum", &reference));
    let body = server.get(&format!("/v2/images/{id}/file")).body;
    assert!(body == read(&reference), "not qemu-img's raw of the VMDK");

    // The same OVA uploaded: stored as the VMDK it holds.
    let body = json!({"name": "up", "disk_format": "vmdk", "container_format": "ova"});
    let resp = server.req(
        "POST",
        "/v2/images",
        ADMIN,
        Some(body.to_string().as_bytes()),
    );
    let up = resp.json()["id"].as_str().unwrap().to_owned();
    let mut headers = ADMIN.to_vec();
    headers.push(("Content-Type", "application/octet-stream"));
    let resp = server.req(
        "PUT",
        &format!("/v2/images/{up}/file"),
        &headers,
        Some(&read(&d.join("vm.ova"))),
    );
    assert_eq!(resp.status, 204, "{}", resp.text());
    let image = server.get(&format!("/v2/images/{up}")).json();
    assert_eq!(image["checksum"], digest("md5sum", &vmdk));
    assert_eq!(image["container_format"], "bare");
    assert_eq!(image["ovf_os_id"], "94");
}

#[test]
fn test_import_hostile_ovas_are_refused_with_nothing_stored() {
    let dir = scratch();
    let d = dir.path();
    image_with_data(d, "disk1.vmdk", "vmdk", "subformat=streamOptimized");
    std::fs::write(d.join("x"), b"x").unwrap();
    std::fs::write(d.join("one.ovf"), descriptor(&["disk1.vmdk"], "")).unwrap();
    std::fs::write(
        d.join("two.ovf"),
        descriptor(&["disk1.vmdk", "disk2.vmdk"], ""),
    )
    .unwrap();
    let bomb = "\n<!DOCTYPE Envelope [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\"><!ENTITY c \"&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;\">]>";
    std::fs::write(d.join("bomb.ovf"), descriptor(&["disk1.vmdk"], bomb)).unwrap();
    std::fs::write(
        d.join("bad.mf"),
        format!("SHA256(disk1.vmdk)= {}\n", "0".repeat(64)),
    )
    .unwrap();
    make_ova(
        d,
        "two.ova",
        &[
            ("vm.ovf", "two.ovf"),
            ("disk1.vmdk", "disk1.vmdk"),
            ("disk2.vmdk", "disk1.vmdk"),
        ],
    );
    make_ova(
        d,
        "dotdot.ova",
        &[
            ("vm.ovf", "one.ovf"),
            ("../../etc/x", "x"),
            ("disk1.vmdk", "disk1.vmdk"),
        ],
    );
    make_ova(
        d,
        "mf.ova",
        &[
            ("vm.ovf", "one.ovf"),
            ("vm.mf", "bad.mf"),
            ("disk1.vmdk", "disk1.vmdk"),
        ],
    );
    make_ova(
        d,
        "bomb.ova",
        &[("vm.ovf", "bomb.ovf"), ("disk1.vmdk", "disk1.vmdk")],
    );
    make_ova(
        d,
        "nodisk.ova",
        &[("vm.ovf", "one.ovf"), ("other.vmdk", "disk1.vmdk")],
    );
    let files = FileServer::start(d);
    let server = Server::start(&[]);
    for (name, reason, needle) in [
        ("two.ova", "unsupported_format", "2 disks"),
        ("dotdot.ova", "corrupt", "../../etc/x"),
        ("mf.ova", "corrupt", "manifest digest"),
        ("bomb.ova", "corrupt", "OVF descriptor"),
        ("nodisk.ova", "truncated", "disk1.vmdk"),
    ] {
        let task = server.create_task(ova_input(&files, name));
        let done = server.wait_task(task["id"].as_str().unwrap());
        assert_eq!(done["status"], "failure", "{name}: {done}");
        assert_eq!(done["reason"], reason, "{name}: {done}");
        assert!(
            done["message"].as_str().unwrap().contains(needle),
            "{name}: {done}"
        );
    }
    assert_no_files(&server);
}

#[test]
fn test_stage_of_an_ova_keeps_the_ovf_facts_for_its_glance_direct_import() {
    let dir = scratch();
    let d = dir.path();
    let vmdk = image_with_data(d, "disk1.vmdk", "vmdk", "subformat=streamOptimized");
    std::fs::write(d.join("vm.ovf"), descriptor(&["disk1.vmdk"], "")).unwrap();
    make_ova(
        d,
        "vm.ova",
        &[("vm.ovf", "vm.ovf"), ("disk1.vmdk", "disk1.vmdk")],
    );
    let server = Server::start(&[]);
    let body = json!({"name": "staged", "disk_format": "vmdk", "container_format": "ova"});
    let resp = server.req(
        "POST",
        "/v2/images",
        ADMIN,
        Some(body.to_string().as_bytes()),
    );
    assert_eq!(resp.status, 201, "{}", resp.text());
    let id = resp.json()["id"].as_str().unwrap().to_owned();
    let mut headers = ADMIN.to_vec();
    headers.push(("Content-Type", "application/octet-stream"));
    let resp = server.req(
        "PUT",
        &format!("/v2/images/{id}/stage"),
        &headers,
        Some(&read(&d.join("vm.ova"))),
    );
    assert_eq!(resp.status, 204, "{}", resp.text());
    let body = json!({"method": {"name": "glance-direct"}});
    let resp = server.req(
        "POST",
        &format!("/v2/images/{id}/import"),
        ADMIN,
        Some(body.to_string().as_bytes()),
    );
    assert_eq!(resp.status, 202, "{}", resp.text());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let image = loop {
        let image = server.get(&format!("/v2/images/{id}")).json();
        if image["status"] == "active" {
            break image;
        }
        assert!(std::time::Instant::now() < deadline, "{image}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(image["checksum"], digest("md5sum", &vmdk));
    assert_eq!(image["container_format"], "bare", "{image}");
    assert_eq!(image["ovf_os_type"], "ubuntu64Guest", "{image}");
    assert_eq!(image["ovf_cpus"], "2", "{image}");
    assert_eq!(image["ovf_memory_mib"], "2048", "{image}");
}
