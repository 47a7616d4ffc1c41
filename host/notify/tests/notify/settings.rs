//! The `mail` settings: the documented example, defaults, and one exact error per mistake.

use crate::support::password_file;
use gatehouse_notify::{MailSettings, Mailer, Security, SettingsError};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

#[derive(serde::Deserialize)]
struct GatewaySettings {
    mail: MailSettings,
}

/// The JSON blocks of docs/notifications.md, in order.
fn documented_examples() -> Vec<String> {
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/notifications.md");
    let text = std::fs::read_to_string(&doc).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```json") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), line) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn the_documented_examples_are_valid() {
    let examples = documented_examples();
    assert!(
        examples.len() >= 2,
        "docs/notifications.md lost its examples"
    );
    for example in examples {
        let settings: GatewaySettings =
            serde_json::from_str(&example).unwrap_or_else(|error| panic!("{error} in\n{example}"));
        settings
            .mail
            .validate()
            .unwrap_or_else(|error| panic!("{error} in\n{example}"));
    }
}

#[test]
fn defaults_follow_the_security_mode() {
    let parse = |json: &str| serde_json::from_str::<MailSettings>(json).unwrap();
    let minimal = parse(r#"{"host": "smtp.example.com", "from": "gatehouse@example.com"}"#);
    assert_eq!(minimal.security, Security::Starttls);
    assert_eq!(minimal.effective_port(), 587);
    assert_eq!(minimal.timeout(), Duration::from_secs(30));
    let cases = [("none", 25), ("starttls", 587), ("tls", 465)];
    for (security, port) in cases {
        let settings = parse(&format!(
            r#"{{"host": "smtp.example.com", "from": "gatehouse@example.com", "security": "{security}"}}"#
        ));
        assert_eq!(settings.effective_port(), port, "{security}");
        assert_eq!(settings.security.as_str(), security);
    }
    // What is written back is what was read.
    let json = serde_json::to_string(&minimal).unwrap();
    assert_eq!(
        json,
        r#"{"host":"smtp.example.com","security":"starttls","from":"gatehouse@example.com"}"#
    );
}

#[test]
fn unknown_keys_and_modes_are_refused_by_the_parser() {
    let error = serde_json::from_str::<MailSettings>(
        r#"{"host": "h", "from": "a@b.c", "pasword_file": "/x"}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(error.starts_with("unknown field `pasword_file`"), "{error}");
    let error = serde_json::from_str::<MailSettings>(
        r#"{"host": "h", "from": "a@b.c", "security": "ssl"}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(error.starts_with("unknown variant `ssl`"), "{error}");
}

/// Each case: changes to a valid base, and the exact message.
#[test]
fn each_mistake_has_its_own_message() {
    let base = serde_json::json!({
        "host": "smtp.example.com",
        "security": "starttls",
        "from": "Gatehouse <gatehouse@example.com>",
    });
    let cases: &[(serde_json::Value, &str)] = &[
        (
            serde_json::json!({"host": " "}),
            "mail setting `host` is empty",
        ),
        (
            serde_json::json!({"host": "smtp://smtp.example.com"}),
            "mail setting `host` is `smtp://smtp.example.com`: expected a host name or IP address, without scheme, port or path",
        ),
        (
            serde_json::json!({"host": "smtp.example.com:587"}),
            "mail setting `host` is `smtp.example.com:587`: expected a host name or IP address, without scheme, port or path",
        ),
        (serde_json::json!({"port": 0}), "mail setting `port` is 0"),
        (
            serde_json::json!({"from": "gatehouse"}),
            "mail setting `from` is `gatehouse`: expected an address like `gatehouse@example.com` or `Gatehouse <gatehouse@example.com>`",
        ),
        (
            serde_json::json!({"username": "mailer"}),
            "mail setting `username` is set without `password_file`",
        ),
        (
            serde_json::json!({"password_file": "/etc/gatehouse/smtp-password"}),
            "mail setting `password_file` is set without `username`",
        ),
        (
            serde_json::json!({"username": " ", "password_file": "/etc/gatehouse/smtp-password"}),
            "mail setting `username` is empty",
        ),
        (
            serde_json::json!({"security": "none", "username": "mailer", "password_file": "/p"}),
            "mail settings name a `username` with `security` `none`: the password would cross the network unencrypted; use `starttls` or `tls`",
        ),
        (
            serde_json::json!({"username": "mailer", "password_file": "smtp-password"}),
            "mail setting `password_file` is `smtp-password`: expected an absolute path",
        ),
        (
            serde_json::json!({"ca_file": "ca.pem"}),
            "mail setting `ca_file` is `ca.pem`: expected an absolute path",
        ),
        (
            serde_json::json!({"timeout_seconds": 0}),
            "mail setting `timeout_seconds` is 0: expected 1 to 300",
        ),
        (
            serde_json::json!({"timeout_seconds": 3600}),
            "mail setting `timeout_seconds` is 3600: expected 1 to 300",
        ),
        (
            serde_json::json!({"gateway_url": "gatehouse.example.com"}),
            "mail setting `gateway_url` is `gatehouse.example.com`: expected an `https://` or `http://` URL",
        ),
        (
            serde_json::json!({"gateway_url": "https://"}),
            "mail setting `gateway_url` is `https://`: the host is missing",
        ),
        (
            serde_json::json!({"gateway_url": "https://gw.example.com/?x=1"}),
            "mail setting `gateway_url` is `https://gw.example.com/?x=1`: expected a base URL without query or fragment",
        ),
    ];
    for (changes, expected) in cases {
        let mut json = base.clone();
        for (key, value) in changes.as_object().unwrap() {
            json[key] = value.clone();
        }
        let settings: MailSettings = serde_json::from_value(json).unwrap();
        let error = settings.validate().unwrap_err().to_string();
        assert_eq!(&error, expected, "for {changes}");
        // Mailer::new validates the same way.
        assert_eq!(Mailer::new(&settings).unwrap_err().to_string(), *expected);
    }
    // IPv6 addresses are hosts too.
    let mut settings: MailSettings = serde_json::from_value(base).unwrap();
    settings.host = "::1".to_owned();
    settings.validate().unwrap();
}

fn with_credentials(dir: &Path, password_path: &Path) -> MailSettings {
    let _ = dir;
    MailSettings {
        host: "smtp.example.com".to_owned(),
        port: None,
        security: Security::Tls,
        username: Some("mailer".to_owned()),
        password_file: Some(password_path.to_owned()),
        from: "gatehouse@example.com".to_owned(),
        ca_file: None,
        timeout_seconds: None,
        gateway_url: None,
    }
}

#[test]
fn the_password_file_is_read_once_without_its_newline() {
    let dir = tempfile::tempdir().unwrap();
    let path = password_file(dir.path(), "s3cret with spaces ");
    let settings = with_credentials(dir.path(), &path);
    let password = settings.read_password().unwrap().unwrap();
    assert_eq!(password.expose(), "s3cret with spaces ");
    assert_eq!(format!("{password:?}"), "SecretString([redacted])");

    std::fs::write(&path, "windows\r\n").unwrap();
    assert_eq!(
        settings.read_password().unwrap().unwrap().expose(),
        "windows"
    );

    let mailer = Mailer::new(&settings).unwrap();
    let debug = format!("{mailer:?}");
    assert!(!debug.contains("windows"), "{debug}");
    assert_eq!(
        debug,
        "Mailer { server: \"smtp.example.com:465\", security: Tls, from: \"gatehouse@example.com\", authenticated: true, gateway_url: None, .. }"
    );
}

#[test]
fn bad_password_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = password_file(dir.path(), "x");
    let settings = with_credentials(dir.path(), &path);
    let shown = path.display();
    let refused = |contents: &[u8], mode: u32| {
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        settings.read_password().unwrap_err().to_string()
    };
    assert_eq!(
        refused(b"pw\n", 0o644),
        format!(
            "the SMTP password file `{shown}` has permissions 644, which are too open; run `chmod 600` on it"
        )
    );
    assert_eq!(
        refused(b"\n", 0o600),
        format!("the SMTP password file `{shown}` is empty")
    );
    assert_eq!(
        refused(b"one\ntwo\n", 0o600),
        format!("the SMTP password file `{shown}` holds more than one line")
    );
    assert_eq!(
        refused(b"\xff\xfe", 0o600),
        format!("the SMTP password file `{shown}` is not UTF-8 text")
    );
    assert_eq!(
        refused(&[b'a'; 5000], 0o600),
        format!("the SMTP password file `{shown}` is larger than 4096 bytes")
    );

    let missing = with_credentials(dir.path(), &dir.path().join("missing"));
    let error = Mailer::new(&missing).unwrap_err();
    assert!(matches!(error, SettingsError::PasswordFile { .. }));
    assert_eq!(
        error.to_string(),
        format!(
            "cannot read the SMTP password file `{}`: No such file or directory (os error 2)",
            dir.path().join("missing").display()
        )
    );
}

#[test]
fn bad_ca_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.pem");
    let settings = MailSettings {
        host: "smtp.example.com".to_owned(),
        port: None,
        security: Security::Starttls,
        username: None,
        password_file: None,
        from: "gatehouse@example.com".to_owned(),
        ca_file: Some(path.clone()),
        timeout_seconds: None,
        gateway_url: None,
    };
    let shown = path.display();
    let cases: &[(&[u8], String)] = &[
        (
            b"just text\n",
            format!("the mail CA file `{shown}` holds no PEM certificate"),
        ),
        (
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            format!(
                "the mail CA file `{shown}` holds a certificate that cannot be used as a root: BadEncoding"
            ),
        ),
    ];
    for (contents, expected) in cases {
        std::fs::write(&path, contents).unwrap();
        assert_eq!(&Mailer::new(&settings).unwrap_err().to_string(), expected);
    }
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(
        Mailer::new(&settings).unwrap_err(),
        SettingsError::CaFile { .. }
    ));
}
