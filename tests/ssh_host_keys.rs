//! End to end: trust on first use. The first connection records the target's host key, audits
//! it, and pins it, so that later connections are checked against it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::OutputExt;
use support::key_type_and_blob;
use support::ssh_client::assert_client_ok;
use support::world::{GATEWAY_USER, World};

#[test]
fn trust_on_first_use_records_and_pins_the_host_key() {
    let w = World::builder("k_tofu")
        .setup(|ctx| {
            ctx.gh.cli_ok(&[
                "asset",
                "add",
                "tofu1",
                "--address",
                "127.0.0.1",
                "--port",
                &ctx.target.port().to_string(),
                "--tofu",
            ]);
            let spec = format!("{}@tofu1", ctx.account.name);
            ctx.gh
                .add_account_with_password(&spec, &ctx.account.password);
            ctx.gh.grant_user(GATEWAY_USER, &spec);
        })
        .start();

    let before = w.gh.cli_json(&["asset", "show", "tofu1", "--json"]);
    assert_eq!(before["host_key"]["mode"], "trust_on_first_use", "{before}");

    let login = format!("{GATEWAY_USER}@{}@tofu1", w.account.name);
    let out = w
        .client_as(&login, support::world::GATEWAY_PASSWORD)
        .ssh("echo first");
    assert_client_ok("first connection to a TOFU asset", &out);
    assert_eq!(out.stdout_text().trim(), "first");

    let after = w.gh.cli_json(&["asset", "show", "tofu1", "--json"]);
    assert_eq!(after["host_key"]["mode"], "pinned", "{after}");
    let pinned = after["host_key"]["key"].as_str().unwrap_or_default();
    assert_eq!(
        key_type_and_blob(pinned),
        key_type_and_blob(&w.target.host_key()),
        "the pinned key is not the target's"
    );
    let recorded: Vec<_> =
        w.gh.audit()
            .into_iter()
            .filter(|e| e["kind"] == "host_key_recorded")
            .collect();
    assert_eq!(recorded.len(), 1, "one host_key_recorded event expected");

    // Pinned now: the second connection is checked and does not record again.
    let again = w
        .client_as(&login, support::world::GATEWAY_PASSWORD)
        .ssh("echo second");
    assert_client_ok("second connection", &again);
    let recorded_again =
        w.gh.audit()
            .into_iter()
            .filter(|e| e["kind"] == "host_key_recorded")
            .count();
    assert_eq!(recorded_again, 1);
}
