//! Integration tests of gatehouse-notify. Mail goes to a real SMTP server, aiosmtpd
//! (`python3-aiosmtpd`), started by each test on a port of its own; a missing package fails
//! the tests, it never skips them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod delivery;
mod invariants;
mod render;
mod settings;
mod support;
