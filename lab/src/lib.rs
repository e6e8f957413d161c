//! The lab: runs `sandbox` inside an L1 Linux under QEMU's TCG emulator (`-cpu max`, so AMD SVM),
//! where `kvm_amd` gives VM mode a KVM with hardware-virtualization semantics.
