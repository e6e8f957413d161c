//! virtio-blk request handling on in-memory guest memory (no KVM): 4 KiB reads and 64 KiB
//! writes through the VMM's block device, from a descriptor chain to the used ring, backed by a
//! temporary file.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sandbox_vmm::devices::virtio::block::Block;
use sandbox_vmm::devices::virtio::VirtioDevice;
use std::io::Write;
use virtio_bindings::virtio_blk::{VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT};
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const HDR: u64 = 0x10_0000;
const DATA: u64 = 0x20_0000;
const STATUS: u64 = 0x30_0000;
const DISK_BYTES: usize = 8 << 20;

fn request(block: &mut Block, mem: &GuestMemoryMmap, kind: u32, sector: u64, len: u32) {
    mem.write_obj(kind.to_le(), GuestAddress(HDR)).unwrap();
    mem.write_obj(sector.to_le(), GuestAddress(HDR + 8)).unwrap();
    let q = MockSplitQueue::new(mem, 16);
    let data_write = kind == VIRTIO_BLK_T_IN;
    let chain = [(HDR, 16u32, false), (DATA, len, data_write), (STATUS, 1, true)];
    let descs: Vec<RawDescriptor> = chain
        .iter()
        .enumerate()
        .map(|(i, &(addr, len, write))| {
            let mut flags = if write { VRING_DESC_F_WRITE as u16 } else { 0 };
            if i + 1 < chain.len() {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            RawDescriptor::from(Descriptor::new(addr, len, flags, i as u16 + 1))
        })
        .collect();
    q.add_desc_chains(&descs, 0).unwrap();
    let mut queue: Queue = q.create_queue().unwrap();
    assert!(block.process_queue(0, std::slice::from_mut(&mut queue), mem));
    let status: u8 = mem.read_obj(GuestAddress(STATUS)).unwrap();
    assert_eq!(status, 0, "the request failed");
}

fn bench(c: &mut Criterion) {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap();
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(&vec![0x5a; DISK_BYTES]).unwrap();
    let mut block = Block::new(file, false, "bench").unwrap();
    let mut group = c.benchmark_group("virtio_blk");
    for (name, kind, len) in [
        ("read", VIRTIO_BLK_T_IN, 4096u32),
        ("write", VIRTIO_BLK_T_OUT, 65536),
    ] {
        group.throughput(Throughput::Bytes(len as u64));
        let mut sector = 0u64;
        group.bench_with_input(BenchmarkId::new(name, len), &len, |b, &len| {
            b.iter(|| {
                request(&mut block, &mem, kind, sector, len);
                sector = (sector + len as u64 / 512) % ((DISK_BYTES as u64 - len as u64) / 512);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
