//! Snapshots of a VM (work in progress: only the machine-state file exists so far; saving and
//! restoring vCPUs, the irqchip and devices come next).

pub mod file;
