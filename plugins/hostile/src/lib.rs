//! `hostile`: a plugin that misbehaves on purpose, for the host's containment tests. The
//! `mode` configuration picks the misbehaviour; the `authenticate` hook performs it.
//! Never install it anywhere but a test.

wit_bindgen::generate!({
    path: "../../wit",
    world: "gatehouse:plugin/aa-plugin@0.1.0",
});

use exports::gatehouse::plugin::aa::{Acceptance, Guest, Question, Verdict};
use gatehouse::plugin::types::{Connection, Pair, SessionEnd};
use gatehouse::plugin::{cache, config, cookies, log, secrets};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

struct Hostile;

fn mode() -> String {
    match config::get("mode") {
        Some(config::Value::Text(mode)) => mode,
        _ => "accept".into(),
    }
}

fn integer(key: &str, default: i64) -> i64 {
    match config::get(key) {
        Some(config::Value::Integer(n)) => n,
        _ => default,
    }
}

fn target() -> String {
    match config::get("url") {
        Some(config::Value::Text(url)) => url,
        _ => "http://evil.example/".into(),
    }
}

/// Recursion on the wasm call stack (small frames kept in wasm locals).
fn recurse(depth: u64) -> u64 {
    if black_box(depth) == u64::MAX {
        return 0;
    }
    recurse(depth + 1).wrapping_add(black_box(depth))
}

/// Recursion with big frames: Rust keeps them on its shadow stack in linear memory, which
/// runs out before the wasm call stack does.
fn recurse_big(depth: u64, pad: [u64; 64]) -> u64 {
    let pad = black_box(pad);
    if black_box(depth) == u64::MAX {
        return 0;
    }
    recurse_big(depth + 1, pad).wrapping_add(pad[(depth % 64) as usize])
}

fn accept() -> Verdict {
    Verdict::Accept(Acceptance {
        rename_user: None,
        set_groups: None,
        audit: Vec::new(),
        ticket: None,
    })
}

impl Guest for Hostile {
    fn authenticate(conn: Connection) -> Verdict {
        // `from-login`: the misbehaviour is picked per login by a `hostile=<mode>@` pair, so one
        // gateway can serve a hostile login and a well-behaved one side by side.
        let mut mode = mode();
        if mode == "from-login" {
            mode = conn
                .options
                .iter()
                .find(|p| p.key == "hostile")
                .map(|p| p.value.clone())
                .unwrap_or_else(|| "accept".into());
        }
        match mode.as_str() {
            "loop" => {
                let mut counter = 0u64;
                loop {
                    counter = black_box(counter.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1024 * 1024]);
                    black_box(&hoard);
                }
            }
            "recursion" => Verdict::Deny(format!("{}", recurse(0))),
            "shadow-stack" => Verdict::Deny(format!("{}", recurse_big(0, [1; 64]))),
            "read-file" => match std::fs::read_to_string("/etc/passwd") {
                Ok(text) => Verdict::Deny(format!("read {} bytes", text.len())),
                Err(error) => Verdict::Deny(error.to_string()),
            },
            "counter" => {
                // A global that would count calls if instances were reused.
                static CALLS: AtomicU64 = AtomicU64::new(0);
                let calls = CALLS.fetch_add(1, Ordering::SeqCst) + 1;
                let mut heap = vec![0u8; 256 * 1024];
                heap[0] = heap[0].wrapping_add(calls as u8);
                Verdict::Deny(format!("call {calls}, heap byte {}", black_box(heap)[0]))
            }
            "cookie" => {
                // Counts calls in this plugin's session cookie, and in a shared session value.
                let calls: u32 = cookies::plugin_cookie().parse().unwrap_or(0) + 1;
                let _ = cookies::set_plugin_cookie(&calls.to_string());
                let shared = cookies::session_value("seen-by-hostile").unwrap_or_default();
                let _ = cookies::set_session_value("seen-by-hostile", &format!("{shared}x"));
                Verdict::Deny(format!("call {calls} of this session, shared `{shared}`"))
            }
            "tcp" => match std::net::TcpStream::connect(("127.0.0.1", 22)) {
                Ok(_) => Verdict::Deny("connected".into()),
                Err(error) => Verdict::Deny(error.to_string()),
            },
            "dns" => match std::net::ToSocketAddrs::to_socket_addrs(&("localhost", 22)) {
                Ok(addresses) => Verdict::Deny(format!("resolved {} addresses", addresses.count())),
                Err(error) => Verdict::Deny(error.to_string()),
            },
            "env" => Verdict::Deny(format!(
                "{} environment variables",
                std::env::vars().count()
            )),
            "http" => match guest_http::get(&target(), &[]) {
                Ok(response) => Verdict::Deny(format!("reached it: {}", response.status)),
                Err(error) => Verdict::Deny(error.to_string()),
            },
            "secret" => match secrets::get("not-granted") {
                Ok(_) => Verdict::Deny("got the secret".into()),
                Err(error) => Verdict::Deny(format!("{error:?}")),
            },
            "giant-string" => Verdict::Deny("x".repeat(8 * 1024 * 1024)),
            "deny" => Verdict::Deny("denied by configuration".into()),
            "log-flood" => {
                // Megabytes into the log in one call: 4096 lines of 1 KiB that try to forge
                // log lines of their own, then one line of 1 MiB. Then it accepts.
                let line = format!("flood\nFORGED gatehouse: login_ok {}", "f".repeat(1000));
                for i in 0..4096 {
                    log::log(log::Level::Warn, &format!("{i} {line}"));
                }
                log::log(log::Level::Error, &"g".repeat(1 << 20));
                accept()
            }
            "many-questions" => {
                // Asks `questions` questions, one at a time, then accepts.
                let wanted = usize::try_from(integer("questions", 9)).unwrap_or(9);
                let answered = conn.answers.len();
                if answered < wanted {
                    let n = answered + 1;
                    Verdict::NeedInfo(Question {
                        key: format!("hostile-q{n}"),
                        prompt: format!("Hostile question {n}: "),
                        echo: true,
                    })
                } else {
                    accept()
                }
            }
            "fill-cache" => {
                // 64 KiB values under new keys until the host refuses one.
                let value = vec![7u8; 64 * 1024];
                let mut stored = 0u64;
                loop {
                    if stored == 100_000 {
                        break Verdict::Deny(format!("stored {stored} entries, never refused"));
                    }
                    match cache::set(&format!("fill-{stored}"), &value, 3600) {
                        Ok(()) => stored += 1,
                        Err(error) => {
                            break Verdict::Deny(format!(
                                "stored {stored} entries, then {error:?}"
                            ));
                        }
                    }
                }
            }
            "giant-prompt" => Verdict::NeedInfo(Question {
                key: "k".into(),
                prompt: "?".repeat(100_000),
                echo: true,
            }),
            "many-audit-pairs" => Verdict::Accept(Acceptance {
                rename_user: None,
                set_groups: None,
                audit: (0..10_000)
                    .map(|i| Pair {
                        key: format!("k{i}"),
                        value: "v".into(),
                    })
                    .collect(),
                ticket: None,
            }),
            // `rename-<user>` (from a login pair): a well-formed rename, to test the gateway's
            // handling of it.
            renamed if renamed.starts_with("rename-") => Verdict::Accept(Acceptance {
                rename_user: Some(renamed.trim_start_matches("rename-").into()),
                set_groups: None,
                audit: Vec::new(),
                ticket: None,
            }),
            "bad-rename" => Verdict::Accept(Acceptance {
                rename_user: Some("root; rm -rf /".into()),
                set_groups: None,
                audit: Vec::new(),
                ticket: None,
            }),
            "giant-cookie" => match cookies::set_plugin_cookie(&"c".repeat(1 << 20)) {
                Ok(()) => Verdict::Deny("stored a giant cookie".into()),
                Err(error) => Verdict::Deny(format!("{error:?}")),
            },
            "trap" => {
                let items: Vec<u8> = black_box(Vec::new());
                #[allow(clippy::indexing_slicing)]
                Verdict::Deny(format!("{}", items[black_box(3)]))
            }
            _ => accept(),
        }
    }

    fn authorize(_conn: Connection) -> Verdict {
        accept()
    }

    fn session_ended(_conn: Connection, _end: SessionEnd) {}
}

export!(Hostile);
