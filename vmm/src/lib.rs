//! The KVM microVM monitor behind `sandbox run --mode vm`.

pub mod boot;
pub mod bus;
pub mod devices;
pub mod error;
pub mod kvm_kind;
pub mod layout;
pub mod state;

pub use error::VmmError;
