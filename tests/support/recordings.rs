//! Watching recordings over the API: an auditor the shipped example policy
//! (`auditors-view-recordings.cedar`) lets watch every session, and authenticated GETs.

use serde_json::Value;

use super::{Gatehouse, api_bearer, curl};

/// The auditor's gateway name, in group `auditors`.
pub const AUDITOR: &str = "ada";
/// The auditor's gateway password.
pub const AUDITOR_PASSWORD: &str = "Audit-pw-8Lm3";

/// Adds group `auditors`, [`AUDITOR`] in it, and the example policy that lets auditors watch
/// every recording. Before `serve`.
pub fn add_auditor(gh: &Gatehouse) {
    gh.cli_ok(&["group", "add", "auditors"]);
    gh.cli_stdin_ok(
        &[
            "user",
            "add",
            AUDITOR,
            "--password-stdin",
            "--group",
            "auditors",
        ],
        &format!("{AUDITOR_PASSWORD}\n"),
    );
    std::fs::write(
        gh.data_dir().join("policies/recordings.cedar"),
        include_str!("../../policies/examples/auditors-view-recordings.cedar"),
    )
    .unwrap();
}

/// The bearer header of a logged-in [`AUDITOR`].
pub fn auditor_bearer(gh: &Gatehouse) -> String {
    api_bearer(gh, AUDITOR, AUDITOR_PASSWORD)
}

/// `GET path` with `bearer` (any header line): (status, headers, body).
pub fn get(gh: &Gatehouse, bearer: &str, path: &str) -> (u16, String, Vec<u8>) {
    curl(gh, "GET", path, &[bearer], None)
}

/// `GET path` with `bearer`: (status, the body as JSON or `null`).
pub fn get_json(gh: &Gatehouse, bearer: &str, path: &str) -> (u16, Value) {
    let (status, _, body) = get(gh, bearer, path);
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// The supervisor's gateway name, in group `supervisors`.
pub const SUPERVISOR: &str = "sam";
/// The supervisor's gateway password.
pub const SUPERVISOR_PASSWORD: &str = "Sam-supervises-4Kq";

/// Adds group `supervisors`, [`SUPERVISOR`] in it, and the example policy that lets
/// supervisors end, watch and (outside prod) join sessions. Before `serve`.
pub fn add_supervisor(gh: &Gatehouse) {
    gh.cli_ok(&["group", "add", "supervisors"]);
    gh.cli_stdin_ok(
        &[
            "user",
            "add",
            SUPERVISOR,
            "--password-stdin",
            "--group",
            "supervisors",
        ],
        &format!("{SUPERVISOR_PASSWORD}\n"),
    );
    std::fs::write(
        gh.data_dir().join("policies/supervisors.cedar"),
        include_str!("../../policies/examples/supervisors-end-sessions.cedar"),
    )
    .unwrap();
}
