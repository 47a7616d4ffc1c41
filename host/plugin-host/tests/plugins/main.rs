//! Integration tests of the plugin host against the real reference plugins built from
//! `plugins/` by `scripts/build-plugins.sh`. A missing plugin fails the test, it never skips.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod budgets;
mod credstore;
mod hostile;
mod invariants;
mod permissions;
mod registry;
mod reload;
mod support;
mod ticketing;
mod totp;
