//! Root disks: an image flattened into a cached ext4 file, and cheap per-VM writable copies.
