//! `totp-mfa`: right, wrong and replayed codes, from the in-band `otp=` pair or a question.

use crate::support::*;
use gatehouse_plugin_host::*;

/// RFC 6238 appendix B (SHA-1): time in seconds and the 6-digit code (last six digits).
const VECTORS: &[(u64, &str)] = &[
    (59, "287082"),
    (1_111_111_109, "081804"),
    (1_234_567_890, "005924"),
    (2_000_000_000, "279037"),
];

fn verdict_text(verdict: &Result<AaVerdict, PluginFailure>) -> String {
    match verdict {
        Ok(verdict) => gatehouse_plugin_host::fixture::render_verdict(verdict).text,
        Err(failure) => format!("failure: {failure}"),
    }
}

#[tokio::test]
async fn totp_asks_then_accepts_a_right_code_and_refuses_its_replay() {
    let env = TestEnv::with_totp();
    let host = env.host();
    let conn = connection("alice");

    let mut cookies = SessionCookies::default();
    let asked = host.authenticate(&conn, &mut cookies, &[]).await;
    assert_eq!(
        asked,
        Ok(AaVerdict::NeedInfo {
            plugin: "totp-mfa".into(),
            question: Question {
                key: "otp".into(),
                prompt: "One-time code: ".into(),
                echo: false
            }
        })
    );

    let answered = host
        .authenticate(&conn, &mut cookies, &[Answer::new("otp", "287082")])
        .await;
    assert_eq!(
        verdict_text(&answered),
        "accept\n  user: alice\n  groups: ops\n  audit: totp-mfa mfa=totp"
    );
    // Accepted once in this session: not asked or checked again.
    let again = host.authenticate(&conn, &mut cookies, &[]).await;
    assert!(matches!(again, Ok(AaVerdict::Accept(_))), "{again:?}");

    // Another session replaying the same code within its window.
    let mut other = SessionCookies::default();
    let replayed = host
        .authenticate(&conn, &mut other, &[Answer::new("otp", "287082")])
        .await;
    assert_eq!(
        verdict_text(&replayed),
        "deny by `totp-mfa`: one-time code already used"
    );
}

#[tokio::test]
async fn totp_codes_by_time_data_driven() {
    let env = TestEnv::with_totp();
    let host = env.host();
    // (clock in seconds, code given, expected verdict)
    let mut cases: Vec<(u64, String, &str)> = Vec::new();
    for (time, code) in VECTORS {
        cases.push((*time, code.to_string(), "accept"));
        cases.push((
            *time,
            "000000".into(),
            "deny by `totp-mfa`: wrong one-time code",
        ));
    }
    // One step of skew is accepted, two are not.
    cases.push((
        59 + 30,
        "287082".into(),
        "deny by `totp-mfa`: one-time code already used",
    ));
    cases.push((
        1_111_111_109 + 30,
        "081804".into(),
        "deny by `totp-mfa`: one-time code already used",
    ));
    cases.push((
        2_000_000_000 + 60,
        "279037".into(),
        "deny by `totp-mfa`: wrong one-time code",
    ));
    cases.push((
        59,
        "28708".into(),
        "deny by `totp-mfa`: wrong one-time code",
    ));
    for (time, code, expected) in cases {
        env.clock.set(time * 1000);
        let verdict = authenticate_once(&host, &connection_with("alice", "otp", &code)).await;
        let text = verdict_text(&verdict);
        assert!(
            text.starts_with(expected),
            "at {time}s code {code}: expected {expected:?}, got {text:?}"
        );
    }
}

#[tokio::test]
async fn totp_skew_accepts_the_previous_step_once() {
    let env = TestEnv::with_totp();
    let host = env.host();
    env.clock.set((1_234_567_890 + 30) * 1000);
    let conn = connection_with("alice", "otp", "005924");
    let first = authenticate_once(&host, &conn).await;
    assert!(matches!(first, Ok(AaVerdict::Accept(_))), "{first:?}");
    let second = authenticate_once(&host, &conn).await;
    assert_eq!(
        verdict_text(&second),
        "deny by `totp-mfa`: one-time code already used"
    );
}

#[tokio::test]
async fn totp_user_without_a_seed_is_denied() {
    let env = TestEnv::with_totp();
    let host = env.host();
    let verdict = host
        .authenticate(
            &connection("bob"),
            &mut SessionCookies::default(),
            &[Answer::new("otp", "287082")],
        )
        .await;
    assert_eq!(
        verdict_text(&verdict),
        "deny by `totp-mfa`: no TOTP seed enrolled for `bob`"
    );
}

#[tokio::test]
async fn totp_config_changes_the_code_length() {
    let env = TestEnv::with_totp();
    env.registry.set_config("totp-mfa", "digits = 8").unwrap();
    let host = env.host();
    let verdict = authenticate_once(&host, &connection_with("alice", "otp", "94287082")).await;
    assert!(matches!(verdict, Ok(AaVerdict::Accept(_))), "{verdict:?}");
}
