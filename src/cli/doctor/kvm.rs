//! The `/dev/kvm` check: present, openable, and which kind (hardware VMX/SVM or PVM).

use super::report::{Check, Needed};
use sandbox_vmm::kvm_kind::{self, KvmKind, Vendor};
use serde_json::json;

pub fn check() -> Check {
    let kind = kvm_kind::detect();
    let pvm_module = std::path::Path::new("/sys/module/kvm_pvm").exists();
    match kind {
        KvmKind::Absent => Check::fail(
            "kvm",
            Needed::Vm,
            "/dev/kvm is absent",
            "load KVM (`modprobe kvm_intel` or `modprobe kvm_amd`), enable virtualisation in the firmware, \
             or on a cloud VM pick an instance type with nested virtualisation; `sandbox lab` runs VM mode without it",
        )
        .with_data(json!({ "kind": "absent", "pvm_module": pvm_module })),
        KvmKind::NoPermission => Check::fail(
            "kvm",
            Needed::Vm,
            "/dev/kvm exists but cannot be opened by this user",
            "add yourself to its group (`sudo usermod -aG kvm $USER`, then log in again) or run as root",
        )
        .with_data(json!({ "kind": "no-permission", "pvm_module": pvm_module })),
        KvmKind::Hardware { vendor } => {
            let (name, words) = match vendor {
                Vendor::Vmx => ("vmx", "Intel VMX"),
                Vendor::Svm => ("svm", "AMD SVM"),
            };
            Check::ok("kvm", Needed::Vm, format!("/dev/kvm opens: hardware KVM ({words})"))
                .with_data(json!({ "kind": "hardware", "vendor": name }))
        }
        KvmKind::Pvm => Check::warn(
            "kvm",
            Needed::Vm,
            "/dev/kvm opens: PVM (kvm_pvm module; no vmx/svm in this CPU)",
            "stock guest kernels cannot boot here: VM mode runs through `sandbox lab`, or use a PVM-enabled kernel with --kernel",
        )
        .with_data(json!({ "kind": "pvm" })),
        KvmKind::Unknown => Check::warn(
            "kvm",
            Needed::Vm,
            "/dev/kvm opens, but neither kvm_pvm nor vmx/svm CPU flags explain it",
            "VM mode may not boot; check `lsmod | grep kvm` and the CPU flags in /proc/cpuinfo",
        )
        .with_data(json!({ "kind": "unknown" })),
    }
}
