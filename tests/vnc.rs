//! End to end: TigerVNC's viewer through `gatehouse serve`'s VNC listener to a real x11vnc on
//! Xvfb (tests/support/vnc_peers.rs). The viewer logs in to the gateway with VeNCrypt X509Plain
//! (`alice@console@vn1` and the gateway password); the gateway answers the target's VNC
//! authentication with the vault's password, which the user never sees; what the user types
//! reaches the target, is recorded and becomes a searchable `keys` event; the recording replays
//! to the screen the target ended with.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::vnc_peers::{Display, X11vnc, viewer};
use support::world::{GATEWAY_PASSWORD, GATEWAY_USER, World};
use support::{free_port, json_str, poll, port_open};

const LONG: Duration = Duration::from_secs(30);
const GREEN: [u8; 3] = [0, 255, 0];

fn is(framebuffer: &gatehouse_vnc::Framebuffer, x: u16, y: u16, rgb: [u8; 3]) -> bool {
    framebuffer
        .pixel(x, y)
        .is_some_and(|p| p[0] == rgb[0] && p[1] == rgb[1] && p[2] == rgb[2])
}

#[test]
fn a_vnc_viewer_reaches_the_target_with_the_vault_password_and_is_recorded() {
    let port = free_port();
    let w = World::builder("vnc_ok")
        .setup(move |ctx| {
            ctx.gh.edit_settings(|s| {
                s["vnc"] = json!({"enabled": true, "listen": format!("127.0.0.1:{port}")});
            });
        })
        .start();
    assert!(
        poll(LONG, || port_open(port).then_some(())).is_some(),
        "the VNC port did not open:\n{}",
        w.gh.log_text()
    );
    // The target: a red desktop with an xterm, x11vnc asking the vault's password.
    let desktop = Display::start("800x600x24");
    desktop.run("xsetroot", &["-solid", "red"]);
    let _xterm = desktop.spawn("xterm", &["-geometry", "60x10+0+0"]);
    let x11vnc = X11vnc::start(&desktop, w.vault_password());
    w.gh.cli_ok(&[
        "asset",
        "add",
        "vn1",
        "--address",
        "127.0.0.1",
        "--tofu",
        "--vnc-port",
        &x11vnc.port.to_string(),
    ]);
    w.gh.add_account_with_password("console@vn1", w.vault_password());
    w.gh.grant_user(GATEWAY_USER, "console@vn1");
    let shown = w.gh.cli_ok(&["asset", "show", "vn1"]);
    assert!(
        shown.contains(&format!("vnc       port {}", x11vnc.port)),
        "{shown}"
    );

    // A wrong gateway password: refused, audited, nothing recorded.
    let home = tempfile::tempdir().unwrap();
    let ca = w.gh.data_dir().join("tls/cert.pem");
    let screen = Display::start("1024x768x24");
    let mut wrong = viewer(
        &screen,
        home.path(),
        &ca,
        port,
        &format!("{GATEWAY_USER}@console@vn1"),
        "wrong-password-1",
    );
    let failed = poll(LONG, || {
        w.gh.audit_of("login_failed")
            .into_iter()
            .find(|e| e["fields"]["protocol"] == "vnc")
    });
    assert!(
        failed.is_some(),
        "no failed VNC login audited; viewer log:\n{}",
        std::fs::read_to_string(home.path().join("viewer.log")).unwrap_or_default()
    );
    let _ = wrong.0.kill();
    drop(wrong);
    assert!(w.gh.sessions().is_empty());

    // The right one: the viewer shows the target; what is typed runs there.
    let session = viewer(
        &screen,
        home.path(),
        &ca,
        port,
        &format!("{GATEWAY_USER}@console@vn1"),
        GATEWAY_PASSWORD,
    );
    let id = poll(LONG, || {
        w.gh.sessions()
            .into_iter()
            .find(|s| s["ended"].is_null() && json_str(s, "protocol") == "vnc")
            .map(|s| json_str(&s, "id"))
    })
    .unwrap_or_else(|| {
        panic!(
            "no running VNC session; viewer log:\n{}\n--- serve.log ---\n{}",
            std::fs::read_to_string(home.path().join("viewer.log")).unwrap_or_default(),
            w.gh.log_tail(40)
        )
    });
    let window = poll(LONG, || {
        let found = screen.run(
            "xdotool",
            &["search", "--onlyvisible", "--name", "TigerVNC"],
        );
        found.lines().next().map(str::to_string)
    })
    .expect("the viewer's window");
    // Without a window manager TigerVNC sends input once clicked and focused.
    screen.run(
        "xdotool",
        &["mousemove", "--window", &window, "40", "40", "click", "1"],
    );
    screen.run("xdotool", &["windowfocus", &window]);
    std::thread::sleep(Duration::from_millis(500));
    screen.run(
        "xdotool",
        &["type", "--delay", "30", "xsetroot -solid green"],
    );
    screen.run("xdotool", &["key", "Return"]);
    // The typing is a `keys` event as soon as Return is typed.
    let typed = poll(LONG, || {
        let shown = w.gh.session_show(&id);
        shown["events"].as_array().and_then(|events| {
            events
                .iter()
                .find(|e| e["type"] == "keys")
                .map(|e| json_str(e, "text"))
        })
    })
    .expect("the typing is an event of the session");
    assert!(typed.contains("xsetroot -solid green"), "{typed}");
    std::thread::sleep(Duration::from_secs(2));
    drop(session);

    let sessions = w.gh.ended_sessions_of(GATEWAY_USER, 1);
    let record = sessions.iter().find(|s| json_str(s, "id") == id).unwrap();
    assert_eq!(json_str(record, "protocol"), "vnc", "{record}");
    assert_eq!(json_str(record, "account"), "console", "{record}");
    assert!(record["bytes_down"].as_u64().unwrap() > 0, "{record}");
    for kind in ["login_ok", "target_connect_ok", "session_ended"] {
        assert!(
            w.gh.audit_of(kind)
                .iter()
                .any(|e| e["fields"]["protocol"] == "vnc"),
            "no {kind} for the VNC session"
        );
    }
    // The recording replays to the target's last screen: the command ran there.
    let recording =
        std::fs::read(w.gh.data_dir().join("recordings").join(&id).join("vnc.rec")).unwrap();
    let replayed = gatehouse_vnc::replay(recording.as_slice()).unwrap();
    assert_eq!((replayed.width(), replayed.height()), (800, 600));
    assert!(
        is(&replayed, 700, 500, GREEN),
        "the target did not turn green"
    );
    // Found by what was typed, once sealed and indexed.
    let hits = poll(LONG, || {
        let out = w.gh.cli_ok(&["session", "search", "xsetroot", "--json"]);
        let hits: Vec<Value> = serde_json::from_str(&out).unwrap();
        (!hits.is_empty()).then_some(hits)
    })
    .expect("the VNC session was not indexed");
    assert_eq!(hits[0]["session"], id.as_str());
    w.assert_no_secret_leaks(&[]);
}
