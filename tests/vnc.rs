//! End to end: TigerVNC's viewer through `gatehouse serve`'s VNC listener to a real x11vnc on
//! Xvfb (tests/support/vnc_peers.rs). The viewer logs in to the gateway with VeNCrypt X509Plain
//! (`alice@console@vn1` and the gateway password); the gateway answers the target's VNC
//! authentication with the vault's password, which the user never sees; what the user types
//! reaches the target, is recorded and becomes a searchable `keys` event; the recording replays
//! to the screen the target ended with. The screen is watched live over the API while the
//! session runs, and the recording goes through the same export as RDP's: `gatehouse session
//! export` to PNG and WebM, and the player's `GET /api/v1/sessions/{id}/video`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;
use support::recordings::{
    SUPERVISOR, SUPERVISOR_PASSWORD, add_auditor, add_supervisor, auditor_bearer, get, get_json,
};
use support::vnc_peers::{Display, X11vnc, viewer};
use support::world::{GATEWAY_PASSWORD, GATEWAY_USER, World};
use support::{free_port, json_str, poll, port_open};

const LONG: Duration = Duration::from_secs(30);
const GREEN: [u8; 3] = [0, 255, 0];
const RED: [u8; 3] = [255, 0, 0];
const WEBM_MAGIC: [u8; 4] = [0x1a, 0x45, 0xdf, 0xa3];

fn is(framebuffer: &gatehouse_vnc::Framebuffer, x: u16, y: u16, rgb: [u8; 3]) -> bool {
    framebuffer
        .pixel(x, y)
        .is_some_and(|p| p[0] == rgb[0] && p[1] == rgb[1] && p[2] == rgb[2])
}

/// An 800x600 image file (PNG) decoded by ffmpeg: the pixel at (`x`, `y`).
fn pixel_of_image(path: &Path, x: usize, y: usize) -> [u8; 3] {
    let out = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-i"])
        .arg(path)
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .unwrap();
    assert!(out.status.success(), "ffmpeg: {out:?}");
    assert_eq!(out.stdout.len(), 800 * 600 * 3, "not an 800x600 image");
    let at = (y * 800 + x) * 3;
    [out.stdout[at], out.stdout[at + 1], out.stdout[at + 2]]
}

/// The PNG frames of a live view's multipart stream, in order.
fn live_frames(multipart: &[u8]) -> Vec<&[u8]> {
    let head = b"Content-Type: image/png\r\nContent-Length: ";
    let mut frames = Vec::new();
    let mut rest = multipart;
    while let Some(at) = rest.windows(head.len()).position(|w| w == head) {
        let after = &rest[at + head.len()..];
        let Some(end) = after.windows(4).position(|w| w == b"\r\n\r\n") else {
            break;
        };
        let length: usize = std::str::from_utf8(&after[..end]).unwrap().parse().unwrap();
        let Some(frame) = after.get(end + 4..end + 4 + length) else {
            break;
        };
        frames.push(frame);
        rest = &after[end + 4 + length..];
    }
    frames
}

/// How many frames ffprobe counts in a video.
fn ffprobe_frames(path: &Path) -> u64 {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_frames"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "ffprobe: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn a_vnc_viewer_reaches_the_target_with_the_vault_password_and_is_recorded() {
    let port = free_port();
    let w = World::builder("vnc_ok")
        .setup(move |ctx| {
            ctx.gh.edit_settings(|s| {
                s["vnc"] = json!({"enabled": true, "listen": format!("127.0.0.1:{port}")});
            });
            add_auditor(ctx.gh);
            add_supervisor(ctx.gh);
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

    // An asset that does not exist and an account not granted read alike to the viewer; the
    // audit trail tells them apart.
    for (login, detail) in [("console@nosuch", "nosuch"), ("someone@vn1", "someone@vn1")] {
        let viewer_home = tempfile::tempdir().unwrap();
        let mut refused = viewer(
            &screen,
            viewer_home.path(),
            &ca,
            port,
            &format!("{GATEWAY_USER}@{login}"),
            GATEWAY_PASSWORD,
        );
        let denied = poll(LONG, || {
            w.gh.audit_of("access_denied").into_iter().find(|e| {
                e["fields"]["protocol"] == "vnc" && json_str(e, "detail").contains(detail)
            })
        });
        let log =
            || std::fs::read_to_string(viewer_home.path().join("viewer.log")).unwrap_or_default();
        assert!(
            denied.is_some(),
            "no VNC access_denied for {login}; viewer log:\n{}",
            log()
        );
        // TigerVNC prints the server's reason, wrapped: compared with its spaces collapsed.
        let told = poll(LONG, || {
            let said = log().split_whitespace().collect::<Vec<_>>().join(" ");
            said.contains(&format!(
                "Authentication failure: gatehouse: target `{login}` is unknown or you are not permitted to use it"
            ))
            .then_some(())
        });
        assert!(
            told.is_some(),
            "the viewer was not told why ({login}):\n{}",
            log()
        );
        let _ = refused.0.kill();
    }
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
    // Live, as the player shows it: PNG frames of the target's screen, now green.
    let sam = support::api_bearer(&w.gh, SUPERVISOR, SUPERVISOR_PASSWORD);
    let (mut stream, body) =
        support::curl_stream(&w.gh, &format!("/api/v1/sessions/{id}/live"), &sam, 4);
    let _ = stream.wait();
    let multipart = std::fs::read(body.path()).unwrap();
    let frames = live_frames(&multipart);
    let scratch = tempfile::tempdir().unwrap();
    let live_png = scratch.path().join("live.png");
    std::fs::write(
        &live_png,
        frames.last().unwrap_or_else(|| {
            panic!(
                "no frame in the live stream ({} bytes):\n{}",
                multipart.len(),
                w.gh.log_tail(40)
            )
        }),
    )
    .unwrap();
    assert_eq!(
        pixel_of_image(&live_png, 700, 500),
        GREEN,
        "the live view does not show the green screen"
    );
    assert!(
        w.gh.audit_of("session_joined")
            .iter()
            .any(|e| e["fields"]["protocol"] == "vnc" && e["fields"]["via"] == "api"),
        "the live watch is not audited"
    );
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
    // The same export as RDP's: a still at the end (green), one from when the typing began
    // (still red), and a video.
    let shown = w.gh.session_show(&id);
    let typing_began = shown["events"]
        .as_array()
        .and_then(|events| events.iter().find(|e| e["type"] == "keys"))
        .and_then(|e| e["time"].as_f64())
        .expect("the keys event's time");
    let export = |name: &str, extra: &[&str]| {
        let output = scratch.path().join(name);
        let mut args = vec![
            "session",
            "export",
            id.as_str(),
            "-o",
            output.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let said = w.gh.cli_ok(&args);
        assert!(said.contains("of 800x600"), "{said}");
        (output, said)
    };
    let (end_png, _) = export("end.png", &[]);
    assert_eq!(pixel_of_image(&end_png, 700, 500), GREEN);
    let at = format!("{typing_began}");
    let (start_png, _) = export("start.png", &["--at", &at]);
    assert_eq!(pixel_of_image(&start_png, 700, 500), RED);
    let (webm, said) = export("session.webm", &[]);
    let video = std::fs::read(&webm).unwrap();
    assert!(video.starts_with(&WEBM_MAGIC), "not a WebM (EBML) file");
    let frames = ffprobe_frames(&webm);
    assert!(frames >= 5, "{frames} frame(s) in the video; {said}");

    // The player: a VNC session plays as a video, rendered by the gateway, with its events'
    // places in it.
    let ada = auditor_bearer(&w.gh);
    let (status, detail) = get_json(&w.gh, &ada, &format!("/api/v1/sessions/{id}"));
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["session"]["playback"], "video", "{detail}");
    let (status, headers, body) = get(&w.gh, &ada, &format!("/api/v1/sessions/{id}/video"));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(
        headers.to_lowercase().contains("content-type: video/webm"),
        "{headers}"
    );
    assert!(body.starts_with(&WEBM_MAGIC), "not a WebM (EBML) file");
    let (_, detail) = get_json(&w.gh, &ada, &format!("/api/v1/sessions/{id}"));
    let keys = detail["events"]
        .as_array()
        .and_then(|events| events.iter().find(|e| e["type"] == "keys"))
        .cloned()
        .unwrap_or_default();
    let playback_time = keys["playback_time"].as_f64();
    assert!(
        playback_time.is_some_and(|t| t > 0.0),
        "the typing has no place in the rendered video: {keys}"
    );
    let (status, answer) = get_json(&w.gh, &ada, &format!("/api/v1/sessions/{id}/transcript"));
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "not_terminal");
    // The same in the player, in a browser: the video, its events, the green end.
    let chromium = support::browser::require_browser_tools();
    let mut node = std::process::Command::new("node");
    node.arg("player-vnc.mjs")
        .current_dir(support::browser::browser_dir())
        .env("GH_URL", w.gh.api_url())
        .env("USER_NAME", support::recordings::AUDITOR)
        .env("PASSWORD", support::recordings::AUDITOR_PASSWORD)
        .env("CHROMIUM", &chromium)
        .env("SESSION", &id);
    let played = support::run(node, None, Duration::from_secs(240));
    assert!(
        played.status.success(),
        "the player did not play the VNC session:\n{}",
        support::OutputExt::describe(&played)
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
