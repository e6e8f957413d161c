//! virtio-blk backed by a host file: read, write, flush and get-id, with a read-only mode. Every
//! request the guest builds is checked (chain shape, descriptor directions, addresses, sector
//! range) and a bad one gets an error status, never a VMM panic.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK,
    VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::{read_config_bytes, VirtioDevice, VIRTIO_F_VERSION_1};
use crate::error::VmmError;

pub const SECTOR_SIZE: u64 = 512;
const QUEUE_SIZE: u16 = 256;
const HEADER_LEN: u32 = 16;
/// The most data one request may move (a sanity bound far above what Linux sends).
const MAX_REQUEST_BYTES: u64 = 64 << 20;

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestType {
    In,
    Out,
    Flush,
    GetId,
    Unsupported(u32),
}

impl From<u32> for RequestType {
    fn from(t: u32) -> Self {
        match t {
            VIRTIO_BLK_T_IN => RequestType::In,
            VIRTIO_BLK_T_OUT => RequestType::Out,
            VIRTIO_BLK_T_FLUSH => RequestType::Flush,
            VIRTIO_BLK_T_GET_ID => RequestType::GetId,
            other => RequestType::Unsupported(other),
        }
    }
}

/// A request parsed from a descriptor chain.
#[derive(Debug)]
struct Request {
    kind: RequestType,
    sector: u64,
    data: Vec<(GuestAddress, u32)>,
    status: GuestAddress,
}

/// Why a chain is not a valid request; each maps to a status (or, with no status byte to write
/// to, to a used entry of length 0).
#[derive(Debug, PartialEq, Eq)]
enum Malformed {
    /// No writable status descriptor at the end: nothing can be reported.
    NoStatus,
    /// The status can be written, but the request itself is broken.
    Bad(GuestAddress),
}

pub struct Block {
    file: File,
    capacity_sectors: u64,
    read_only: bool,
    id: [u8; VIRTIO_BLK_ID_BYTES as usize],
    config: [u8; 8],
}

impl Block {
    /// A block device over `file`; its size (rounded down to whole sectors) is the capacity.
    /// `id` (up to 20 bytes) answers get-id requests.
    pub fn new(file: File, read_only: bool, id: &str) -> std::io::Result<Block> {
        let capacity_sectors = file.metadata()?.len() / SECTOR_SIZE;
        let mut id_bytes = [0u8; VIRTIO_BLK_ID_BYTES as usize];
        let n = id.len().min(id_bytes.len());
        id_bytes[..n].copy_from_slice(&id.as_bytes()[..n]);
        Ok(Block {
            file,
            capacity_sectors,
            read_only,
            id: id_bytes,
            config: capacity_sectors.to_le_bytes(),
        })
    }

    /// Opens the disk image at `path` (read-only or read-write).
    pub fn open(path: &Path, read_only: bool, id: &str) -> Result<Block, VmmError> {
        let err = |source| VmmError::DiskOpen {
            path: path.to_path_buf(),
            read_only,
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(err)?;
        Block::new(file, read_only, id).map_err(err)
    }

    pub fn capacity_sectors(&self) -> u64 {
        self.capacity_sectors
    }

    /// The backing file (for inspection).
    pub fn into_file(self) -> File {
        self.file
    }

    fn parse(descs: &[Descriptor], mem: &GuestMemoryMmap) -> Result<Request, Malformed> {
        let status_desc = match descs.last() {
            Some(d) if descs.len() >= 2 && d.is_write_only() && d.len() >= 1 => d,
            _ => return Err(Malformed::NoStatus),
        };
        let status = status_desc.addr();
        if !GuestMemoryBackend::check_range(mem, status, 1) {
            return Err(Malformed::NoStatus);
        }
        let bad = Malformed::Bad(status);
        let header = &descs[0];
        if header.is_write_only() || header.len() < HEADER_LEN {
            return Err(bad);
        }
        let kind: u32 = mem.read_obj(header.addr()).map_err(|_| Malformed::Bad(status))?;
        let sector: u64 = mem
            .read_obj(GuestAddress(header.addr().0.wrapping_add(8)))
            .map_err(|_| Malformed::Bad(status))?;
        let kind = RequestType::from(u32::from_le(kind));
        let mut data = Vec::new();
        let mut total = 0u64;
        for d in &descs[1..descs.len() - 1] {
            let wants_write_only = match kind {
                RequestType::In | RequestType::GetId => Some(true),
                RequestType::Out => Some(false),
                RequestType::Flush | RequestType::Unsupported(_) => None,
            };
            if let Some(w) = wants_write_only {
                if d.is_write_only() != w {
                    return Err(Malformed::Bad(status));
                }
            }
            if !GuestMemoryBackend::check_range(mem, d.addr(), d.len() as usize) {
                return Err(Malformed::Bad(status));
            }
            total += u64::from(d.len());
            data.push((d.addr(), d.len()));
        }
        if total > MAX_REQUEST_BYTES {
            return Err(Malformed::Bad(status));
        }
        Ok(Request {
            kind,
            sector: u64::from_le(sector),
            data,
            status,
        })
    }

    /// Runs a parsed request; returns the status and how many data bytes went to the guest.
    fn execute(&mut self, req: &Request, mem: &GuestMemoryMmap) -> (u32, u32) {
        let total: u64 = req.data.iter().map(|(_, l)| u64::from(*l)).sum();
        let in_range = req
            .sector
            .checked_mul(SECTOR_SIZE)
            .and_then(|start| start.checked_add(total))
            .is_some_and(|end| end <= self.capacity_sectors * SECTOR_SIZE);
        match req.kind {
            RequestType::In | RequestType::Out if !in_range => (VIRTIO_BLK_S_IOERR, 0),
            RequestType::In => {
                let mut offset = req.sector * SECTOR_SIZE;
                let mut written = 0u32;
                for &(addr, len) in &req.data {
                    let mut buf = vec![0u8; len as usize];
                    if self.file.read_exact_at(&mut buf, offset).is_err()
                        || mem.write_slice(&buf, addr).is_err()
                    {
                        return (VIRTIO_BLK_S_IOERR, written);
                    }
                    offset += u64::from(len);
                    written += len;
                }
                (VIRTIO_BLK_S_OK, written)
            }
            RequestType::Out => {
                if self.read_only {
                    return (VIRTIO_BLK_S_IOERR, 0);
                }
                let mut offset = req.sector * SECTOR_SIZE;
                for &(addr, len) in &req.data {
                    let mut buf = vec![0u8; len as usize];
                    if mem.read_slice(&mut buf, addr).is_err()
                        || self.file.write_all_at(&buf, offset).is_err()
                    {
                        return (VIRTIO_BLK_S_IOERR, 0);
                    }
                    offset += u64::from(len);
                }
                (VIRTIO_BLK_S_OK, 0)
            }
            RequestType::Flush => {
                if self.read_only || self.file.sync_data().is_ok() {
                    (VIRTIO_BLK_S_OK, 0)
                } else {
                    (VIRTIO_BLK_S_IOERR, 0)
                }
            }
            RequestType::GetId => {
                let Some(&(addr, len)) = req.data.first() else {
                    return (VIRTIO_BLK_S_IOERR, 0);
                };
                let n = (len as usize).min(self.id.len());
                match mem.write_slice(&self.id[..n], addr) {
                    Ok(()) => (VIRTIO_BLK_S_OK, n as u32),
                    Err(_) => (VIRTIO_BLK_S_IOERR, 0),
                }
            }
            RequestType::Unsupported(_) => (VIRTIO_BLK_S_UNSUPP, 0),
        }
    }

    /// Handles one chain's descriptors; returns the used length to report.
    fn handle(&mut self, descs: &[Descriptor], mem: &GuestMemoryMmap) -> u32 {
        let (status_addr, status, written) = match Self::parse(descs, mem) {
            Ok(req) => {
                let (status, written) = self.execute(&req, mem);
                (req.status, status, written)
            }
            Err(Malformed::Bad(addr)) => (addr, VIRTIO_BLK_S_IOERR, 0),
            Err(Malformed::NoStatus) => return 0,
        };
        match mem.write_obj(status as u8, status_addr) {
            Ok(()) => written + 1,
            Err(_) => written,
        }
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        let mut f = VIRTIO_F_VERSION_1 | (1 << VIRTIO_BLK_F_FLUSH);
        if self.read_only {
            f |= 1 << VIRTIO_BLK_F_RO;
        }
        f
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn process_queue(&mut self, index: usize, queues: &mut [Queue], mem: &GuestMemoryMmap) -> bool {
        let Some(queue) = queues.get_mut(index) else {
            return false;
        };
        let mut used = false;
        while let Some(chain) = queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            // The chain iterator stops at loops and bad indices (its TTL is the queue size).
            let descs: Vec<Descriptor> = chain.collect();
            let len = self.handle(&descs, mem);
            if queue.add_used(mem, head, len).is_err() {
                // The used ring itself is outside guest memory: nothing more can be reported.
                break;
            }
            used = true;
        }
        used
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;

    pub(crate) const HDR: u64 = 0x10_0000;
    pub(crate) const DATA: u64 = 0x20_0000;
    pub(crate) const STATUS: u64 = 0x30_0000;

    pub(crate) fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap()
    }

    /// Writes `chain` (address, length, device-writable) into the mock queue's table and
    /// publishes it.
    pub(crate) fn push_chain(q: &MockSplitQueue<GuestMemoryMmap>, start: u16, chain: &[(u64, u32, bool)]) {
        let descs: Vec<RawDescriptor> = chain
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, write))| {
                let mut flags = if write { VRING_DESC_F_WRITE as u16 } else { 0 };
                if i + 1 < chain.len() {
                    flags |= VRING_DESC_F_NEXT as u16;
                }
                RawDescriptor::from(Descriptor::new(addr, len, flags, start + i as u16 + 1))
            })
            .collect();
        q.add_desc_chains(&descs, start).unwrap();
    }

    fn disk(bytes: &[u8], read_only: bool) -> (Block, File) {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        let check = f.try_clone().unwrap();
        (Block::new(f, read_only, "sandbox-root").unwrap(), check)
    }

    fn header(mem: &GuestMemoryMmap, kind: u32, sector: u64) {
        mem.write_obj(kind.to_le(), GuestAddress(HDR)).unwrap();
        mem.write_obj(0u32, GuestAddress(HDR + 4)).unwrap();
        mem.write_obj(sector.to_le(), GuestAddress(HDR + 8)).unwrap();
        mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    }

    /// Runs one chain through the device; returns (status byte, used length).
    fn run(block: &mut Block, mem: &GuestMemoryMmap, chain: &[(u64, u32, bool)]) -> (u8, u32) {
        let q = MockSplitQueue::new(mem, 16);
        push_chain(&q, 0, chain);
        let mut queue: Queue = q.create_queue().unwrap();
        assert!(block.process_queue(0, std::slice::from_mut(&mut queue), mem));
        let used = q.used().ring().ref_at(0).unwrap().load();
        assert_eq!(q.used().idx().load(), 1);
        let status: u8 = mem.read_obj(GuestAddress(STATUS)).unwrap();
        (status, used.len())
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn read_returns_the_disk_contents() {
        let content = pattern(4096);
        let (mut block, _) = disk(&content, false);
        let mem = memory();
        header(&mem, VIRTIO_BLK_T_IN, 2);
        let (status, len) = run(
            &mut block,
            &mem,
            &[(HDR, 16, false), (DATA, 1024, true), (STATUS, 1, true)],
        );
        assert_eq!(status, VIRTIO_BLK_S_OK as u8);
        assert_eq!(len, 1025);
        let mut got = vec![0u8; 1024];
        mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
        assert_eq!(got, content[1024..2048]);
    }

    #[test]
    fn write_lands_in_the_file_and_flush_succeeds() {
        let (mut block, mut check) = disk(&[0u8; 4096], false);
        let mem = memory();
        let data = pattern(512);
        mem.write_slice(&data, GuestAddress(DATA)).unwrap();
        header(&mem, VIRTIO_BLK_T_OUT, 3);
        let (status, len) = run(
            &mut block,
            &mem,
            &[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)],
        );
        assert_eq!((status, len), (VIRTIO_BLK_S_OK as u8, 1));
        let mut got = vec![0u8; 512];
        check.seek(SeekFrom::Start(3 * 512)).unwrap();
        check.read_exact(&mut got).unwrap();
        assert_eq!(got, data);

        header(&mem, VIRTIO_BLK_T_FLUSH, 0);
        let (status, len) = run(&mut block, &mem, &[(HDR, 16, false), (STATUS, 1, true)]);
        assert_eq!((status, len), (VIRTIO_BLK_S_OK as u8, 1));
    }

    #[test]
    fn get_id_returns_the_device_id() {
        let (mut block, _) = disk(&[0u8; 512], false);
        let mem = memory();
        header(&mem, VIRTIO_BLK_T_GET_ID, 0);
        let (status, len) = run(
            &mut block,
            &mem,
            &[(HDR, 16, false), (DATA, 20, true), (STATUS, 1, true)],
        );
        assert_eq!((status, len), (VIRTIO_BLK_S_OK as u8, 21));
        let mut id = [0u8; 20];
        mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
        assert_eq!(&id[..12], b"sandbox-root");
        assert!(id[12..].iter().all(|&b| b == 0));
    }

    #[test]
    fn read_only_disk_refuses_writes_and_advertises_ro() {
        let (mut block, mut check) = disk(&[1u8; 1024], true);
        assert_ne!(block.features() & (1 << VIRTIO_BLK_F_RO), 0);
        let mem = memory();
        mem.write_slice(&[9u8; 512], GuestAddress(DATA)).unwrap();
        header(&mem, VIRTIO_BLK_T_OUT, 0);
        let (status, _) = run(
            &mut block,
            &mem,
            &[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)],
        );
        assert_eq!(status, VIRTIO_BLK_S_IOERR as u8);
        let mut got = vec![0u8; 1024];
        check.seek(SeekFrom::Start(0)).unwrap();
        check.read_exact(&mut got).unwrap();
        assert!(got.iter().all(|&b| b == 1), "file unchanged");
    }

    #[test]
    fn unknown_request_type_is_unsupported() {
        let (mut block, _) = disk(&[0u8; 512], false);
        let mem = memory();
        header(&mem, 0x77, 0);
        let (status, len) = run(&mut block, &mem, &[(HDR, 16, false), (STATUS, 1, true)]);
        assert_eq!((status, len), (VIRTIO_BLK_S_UNSUPP as u8, 1));
    }

    #[test]
    fn malformed_chains_get_an_error_status_not_a_panic() {
        let (mut block, _) = disk(&pattern(2048), false);
        let mem = memory();
        type Case = (&'static str, u32, u64, Vec<(u64, u32, bool)>);
        let cases: Vec<Case> = vec![
            (
                "short header",
                VIRTIO_BLK_T_IN,
                0,
                vec![(HDR, 8, false), (DATA, 512, true), (STATUS, 1, true)],
            ),
            (
                "writable header",
                VIRTIO_BLK_T_IN,
                0,
                vec![(HDR, 16, true), (DATA, 512, true), (STATUS, 1, true)],
            ),
            (
                "read into a read-only buffer",
                VIRTIO_BLK_T_IN,
                0,
                vec![(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)],
            ),
            (
                "write from a device-writable buffer",
                VIRTIO_BLK_T_OUT,
                0,
                vec![(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)],
            ),
            (
                "data outside guest memory",
                VIRTIO_BLK_T_IN,
                0,
                vec![(HDR, 16, false), (0xfff_ff00, 512, true), (STATUS, 1, true)],
            ),
            (
                "read past the end of the disk",
                VIRTIO_BLK_T_IN,
                3,
                vec![(HDR, 16, false), (DATA, 1024, true), (STATUS, 1, true)],
            ),
            (
                "sector overflow",
                VIRTIO_BLK_T_IN,
                u64::MAX / 2,
                vec![(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)],
            ),
            (
                "get-id with no buffer",
                VIRTIO_BLK_T_GET_ID,
                0,
                vec![(HDR, 16, false), (STATUS, 1, true)],
            ),
            (
                "header outside guest memory",
                VIRTIO_BLK_T_IN,
                0,
                vec![(0x7fff_0000, 16, false), (DATA, 512, true), (STATUS, 1, true)],
            ),
        ];
        for (name, kind, sector, chain) in cases {
            header(&mem, kind, sector);
            let (status, _) = run(&mut block, &mem, &chain);
            assert_eq!(status, VIRTIO_BLK_S_IOERR as u8, "{name}");
        }
    }

    #[test]
    fn chains_without_a_status_byte_are_returned_with_length_zero() {
        let (mut block, _) = disk(&[0u8; 512], false);
        let mem = memory();
        for chain in [
            vec![(HDR, 16, false)],
            vec![(HDR, 16, false), (DATA, 512, true), (STATUS, 1, false)],
            vec![(HDR, 16, false), (0x7fff_0000, 1, true)],
        ] {
            header(&mem, VIRTIO_BLK_T_IN, 0);
            let (status, len) = run(&mut block, &mem, &chain);
            assert_eq!(len, 0);
            assert_eq!(status, 0xff, "status byte untouched");
        }
    }

    #[test]
    fn a_descriptor_loop_ends_the_chain_without_hanging() {
        let (mut block, _) = disk(&[0u8; 512], false);
        let mem = memory();
        let q = MockSplitQueue::new(&mem, 16);
        // Two descriptors pointing at each other.
        let a = Descriptor::new(HDR, 16, VRING_DESC_F_NEXT as u16, 1);
        let b = Descriptor::new(DATA, 16, VRING_DESC_F_NEXT as u16, 0);
        q.add_desc_chains(&[RawDescriptor::from(a), RawDescriptor::from(b)], 0)
            .unwrap();
        let mut queue: Queue = q.create_queue().unwrap();
        header(&mem, VIRTIO_BLK_T_IN, 0);
        block.process_queue(0, std::slice::from_mut(&mut queue), &mem);
        assert_eq!(mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap(), 0xff);
    }

    #[test]
    fn open_names_a_missing_disk() {
        let err = Block::open(Path::new("/nonexistent/root.ext4"), false, "x")
            .err()
            .unwrap();
        assert!(err.to_string().contains("/nonexistent/root.ext4"), "{err}");
    }
}
