//! The KVM microVM monitor behind `sandbox run --mode vm` (filled in by the VM-mode issue).

pub mod kvm_kind;
