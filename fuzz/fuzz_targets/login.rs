//! The in-band SSH username `[key=value@]...USER@ACCOUNT@ASSET` (gatehouse-core `LoginSpec::parse`).
//!
//! Properties: parsing never panics and is bounded by `MAX_LEN`; what parses renders back to a
//! username that parses to the same spec; every name in the spec is a valid `Name`; the options are
//! at most `MAX_OPTIONS` with well-formed keys.
#![no_main]

use gatehouse_core::{LoginSpec, Name, TargetSpec};
use libfuzzer_sys::fuzz_target;

fn render(spec: &LoginSpec, target: &TargetSpec) -> String {
    let mut out = String::new();
    for (key, value) in &spec.options {
        out.push_str(key);
        out.push('=');
        out.push_str(value);
        out.push('@');
    }
    out.push_str(spec.user.as_str());
    out.push('@');
    out.push_str(&target.to_string());
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(username) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(spec) = LoginSpec::parse(username) else {
        return;
    };
    assert!(username.len() <= LoginSpec::MAX_LEN);
    assert!(spec.options.len() <= LoginSpec::MAX_OPTIONS);
    assert_eq!(Name::new(spec.user.as_str()).as_ref(), Ok(&spec.user));
    for (key, value) in &spec.options {
        assert!(!key.is_empty() && !key.contains(['@', '=']), "{key:?}");
        assert!(!value.contains('@'), "{value:?}");
        assert_eq!(spec.option(key).is_some(), true);
    }
    match &spec.target {
        Ok(target) => {
            assert!(Name::new(target.account.as_str()).is_ok());
            assert!(Name::new(target.asset.as_str()).is_ok());
            let rendered = render(&spec, target);
            assert_eq!(
                rendered, username,
                "a well-formed username renders back to itself"
            );
            let again = LoginSpec::parse(&rendered).expect("the rendering parses");
            assert_eq!(again, spec);
            let parsed: TargetSpec = target.to_string().parse().expect("the target re-parses");
            assert_eq!(&parsed, target);
        }
        Err(_) => {
            // The user and options still round-trip with any well-formed target.
            let target = TargetSpec {
                account: Name::new("a").expect("valid"),
                asset: Name::new("b").expect("valid"),
            };
            let rendered = render(&spec, &target);
            if rendered.len() <= LoginSpec::MAX_LEN {
                let again = LoginSpec::parse(&rendered).expect("the rendering parses");
                assert_eq!(again.user, spec.user);
                assert_eq!(again.options, spec.options);
                assert_eq!(again.target, Ok(target));
            }
        }
    }
});
