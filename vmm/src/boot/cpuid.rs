//! Per-vCPU CPUID: KVM's supported set, with each vCPU's APIC ID and the package topology
//! (`cpus` cores, one thread each, one package) written into the leaves Linux reads them from,
//! and the TSC-deadline timer announced when KVM emulates it (KVM leaves that bit to the VMM).

use kvm_bindings::kvm_cpuid_entry2;

/// Leaf 1 ECX bit 31: running under a hypervisor.
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 EDX bit 28: more than one logical processor per package.
const LEAF1_EDX_HTT: u32 = 1 << 28;
/// Leaf 1 ECX bit 24: the LAPIC timer has TSC-deadline mode. With it Linux skips calibrating
/// the LAPIC timer against the PIT, a wait of a tenth of a second or more at every boot.
const LEAF1_ECX_TSC_DEADLINE: u32 = 1 << 24;
/// Topology level types in leaves 0xB/0x1F ECX[15:8].
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// Bits needed to number `n` items (`ceil(log2(n))`).
fn bits_for(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

/// What the host's KVM can emulate beyond what KVM_GET_SUPPORTED_CPUID says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KvmExtras {
    /// KVM_CAP_TSC_DEADLINE_TIMER: the in-kernel LAPIC emulates TSC-deadline mode.
    pub tsc_deadline: bool,
}

/// Rewrites `entries` (KVM's supported CPUID) for vCPU `cpu_index` of `cpu_count`.
pub fn patch(entries: &mut [kvm_cpuid_entry2], cpu_index: u32, cpu_count: u32, extras: KvmExtras) {
    let apic_id = cpu_index;
    let core_bits = bits_for(cpu_count);
    for e in entries.iter_mut() {
        match e.function {
            0x1 => {
                // EBX: [31:24] initial APIC ID, [23:16] logical processors per package,
                // [15:8] CLFLUSH line size in 8-byte units.
                e.ebx = (apic_id << 24) | ((cpu_count & 0xff) << 16) | (8 << 8) | (e.ebx & 0xff);
                e.ecx |= LEAF1_ECX_HYPERVISOR;
                if extras.tsc_deadline {
                    e.ecx |= LEAF1_ECX_TSC_DEADLINE;
                } else {
                    e.ecx &= !LEAF1_ECX_TSC_DEADLINE;
                }
                if cpu_count > 1 {
                    e.edx |= LEAF1_EDX_HTT;
                } else {
                    e.edx &= !LEAF1_EDX_HTT;
                }
            }
            0x4 => {
                // EAX[31:26]: cores per package - 1; EAX[25:14]: threads sharing this cache - 1
                // (one thread per core; caches above L2 shared by the package).
                let level = (e.eax >> 5) & 0x7;
                let sharing = if level >= 3 { cpu_count - 1 } else { 0 };
                e.eax = (e.eax & 0x3fff) | ((sharing & 0xfff) << 14) | (((cpu_count - 1) & 0x3f) << 26);
            }
            0xb | 0x1f => {
                e.edx = apic_id;
                match e.index {
                    0 => {
                        e.eax = 0;
                        e.ebx = 1;
                        e.ecx = (LEVEL_SMT << 8) | e.index;
                    }
                    1 => {
                        e.eax = core_bits;
                        e.ebx = cpu_count;
                        e.ecx = (LEVEL_CORE << 8) | e.index;
                    }
                    _ => {
                        e.eax = 0;
                        e.ebx = 0;
                        e.ecx = e.index;
                    }
                }
            }
            0x8000_0008 => {
                // ECX[7:0]: cores - 1; [15:12]: APIC ID bits for the core number.
                e.ecx = (e.ecx & !0xf0ff) | (core_bits << 12) | ((cpu_count - 1) & 0xff);
            }
            0x8000_001e => {
                // EAX: extended APIC ID; EBX[7:0] core ID, [15:8] threads per core - 1.
                e.eax = apic_id;
                e.ebx = (e.ebx & !0xffff) | (apic_id & 0xff);
                e.ecx &= !0x7ff;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax: 0xdead_0000,
            ebx: 0xaa,
            ecx: 0,
            edx: 0,
            ..Default::default()
        }
    }

    fn supported() -> Vec<kvm_cpuid_entry2> {
        vec![
            entry(0x1, 0),
            entry(0x4, 0),
            entry(0xb, 0),
            entry(0xb, 1),
            entry(0xb, 2),
            entry(0x8000_0008, 0),
        ]
    }

    #[test]
    fn each_vcpu_gets_its_own_apic_id() {
        for cpu in 0..4 {
            let mut e = supported();
            patch(&mut e, cpu, 4, KvmExtras::default());
            assert_eq!(e[0].ebx >> 24, cpu, "leaf 1 APIC id");
            assert_eq!((e[0].ebx >> 16) & 0xff, 4, "logical count");
            assert_eq!(e[0].ebx & 0xff, 0xaa, "brand index kept");
            assert!(e[0].ecx & LEAF1_ECX_HYPERVISOR != 0);
            assert!(e[0].edx & LEAF1_EDX_HTT != 0);
            assert_eq!(e[2].edx, cpu, "x2APIC id");
            assert_eq!(e[3].edx, cpu);
        }
    }

    #[test]
    fn topology_says_n_cores_of_one_thread() {
        let mut e = supported();
        patch(&mut e, 0, 3, KvmExtras::default());
        assert_eq!(e[1].eax >> 26, 2, "leaf 4 cores - 1");
        assert_eq!((e[2].ebx, (e[2].ecx >> 8) & 0xff), (1, LEVEL_SMT));
        assert_eq!((e[3].eax, e[3].ebx, (e[3].ecx >> 8) & 0xff), (2, 3, LEVEL_CORE));
        assert_eq!(
            (e[4].ebx, (e[4].ecx >> 8) & 0xff),
            (0, 0),
            "invalid level ends the list"
        );
        assert_eq!(e[5].ecx & 0xff, 2);
    }

    #[test]
    fn a_single_vcpu_has_no_htt() {
        let mut e = supported();
        e[0].edx = LEAF1_EDX_HTT;
        patch(&mut e, 0, 1, KvmExtras::default());
        assert_eq!(e[0].edx & LEAF1_EDX_HTT, 0);
        assert_eq!(bits_for(1), 0);
        assert_eq!(bits_for(2), 1);
        assert_eq!(bits_for(5), 3);
    }

    #[test]
    fn tsc_deadline_is_announced_only_when_kvm_emulates_it() {
        let mut e = supported();
        patch(&mut e, 0, 1, KvmExtras { tsc_deadline: true });
        assert_ne!(e[0].ecx & LEAF1_ECX_TSC_DEADLINE, 0);
        let mut e = supported();
        e[0].ecx = LEAF1_ECX_TSC_DEADLINE;
        patch(&mut e, 0, 1, KvmExtras { tsc_deadline: false });
        assert_eq!(e[0].ecx & LEAF1_ECX_TSC_DEADLINE, 0);
    }
}
