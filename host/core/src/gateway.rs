//! Which gateway process this is, for records several control nodes share: set once at start by
//! the daemon (`HOST/ID`, the id kept in the data directory), absent in tests and tools.

use std::sync::OnceLock;

static GATEWAY: OnceLock<String> = OnceLock::new();

/// Names this process; the first call wins.
pub fn set_gateway_id(id: String) {
    let _ = GATEWAY.set(id);
}

/// This process's name, when the daemon set one.
pub fn gateway_id() -> Option<String> {
    GATEWAY.get().cloned()
}
