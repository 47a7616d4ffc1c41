//! Core types shared by every Gatehouse crate: names, records, secrets and the in-band login syntax.
//!
//! This crate does no I/O. It defines what the store keeps and what the protocols pass around, so
//! that the other crates agree on one vocabulary.

pub mod gateway;
pub mod lifecycle;
pub mod login;
pub mod names;
pub mod nodes;
pub mod records;
pub mod requests;
pub mod secret;
pub mod time;

pub use lifecycle::*;
pub use login::{JoinSpec, LoginError, LoginSpec, TargetSpec};
pub use names::{Name, NameError};
pub use nodes::{JoinToken, ManagedNetwork, Node, NodeStatus};
pub use records::*;
pub use requests::*;
pub use secret::{SecretBytes, SecretString};
