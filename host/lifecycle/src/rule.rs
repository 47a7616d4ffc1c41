//! Password rules: checking that a rule can be satisfied, and generating passwords from it with
//! the operating system's CSPRNG.

use gatehouse_core::{PasswordRule, SecretString};
use rand::Rng;
use rand::rngs::OsRng;
use rand::seq::SliceRandom;

/// The longest password a rule may ask for.
pub const MAX_LENGTH: u16 = 256;

/// Why a rule cannot produce a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("length {0} is out of range (8 to {MAX_LENGTH})")]
    Length(u16),
    #[error("the minimum counts add up to {required} characters, more than the length {length}")]
    MinimumsTooLong { required: u32, length: u16 },
    #[error(
        "at least {count} {class} character(s) are required, but every {class} character is excluded"
    )]
    EmptyClass { class: &'static str, count: u16 },
    #[error("every character is excluded: nothing to build a password from")]
    NoCharacters,
    #[error("symbol `{0}` is not a printable ASCII symbol")]
    BadSymbol(char),
}

struct Classes {
    lower: Vec<char>,
    upper: Vec<char>,
    digit: Vec<char>,
    symbol: Vec<char>,
}

fn classes(rule: &PasswordRule) -> Result<Classes, RuleError> {
    for c in rule.symbols.chars() {
        if !c.is_ascii_punctuation() {
            return Err(RuleError::BadSymbol(c));
        }
    }
    let keep = |c: &char| !rule.exclude.contains(*c);
    let mut symbol: Vec<char> = rule.symbols.chars().filter(keep).collect();
    symbol.sort_unstable();
    symbol.dedup();
    Ok(Classes {
        lower: ('a'..='z').filter(keep).collect(),
        upper: ('A'..='Z').filter(keep).collect(),
        digit: ('0'..='9').filter(keep).collect(),
        symbol,
    })
}

/// Checks that `rule` can be satisfied; generation and the CLI call it before anything is
/// touched.
pub fn validate(rule: &PasswordRule) -> Result<(), RuleError> {
    if !(8..=MAX_LENGTH).contains(&rule.length) {
        return Err(RuleError::Length(rule.length));
    }
    let required = u32::from(rule.min_lower)
        + u32::from(rule.min_upper)
        + u32::from(rule.min_digit)
        + u32::from(rule.min_symbol);
    if required > u32::from(rule.length) {
        return Err(RuleError::MinimumsTooLong {
            required,
            length: rule.length,
        });
    }
    let c = classes(rule)?;
    for (class, set, count) in [
        ("lowercase", &c.lower, rule.min_lower),
        ("uppercase", &c.upper, rule.min_upper),
        ("digit", &c.digit, rule.min_digit),
        ("symbol", &c.symbol, rule.min_symbol),
    ] {
        if count > 0 && set.is_empty() {
            return Err(RuleError::EmptyClass { class, count });
        }
    }
    if c.lower.len() + c.upper.len() + c.digit.len() + c.symbol.len() == 0 {
        return Err(RuleError::NoCharacters);
    }
    Ok(())
}

/// A new password satisfying `rule`: the minimum of each class, the rest from every allowed
/// character, shuffled. Drawn from the operating system's CSPRNG.
pub fn generate(rule: &PasswordRule) -> Result<SecretString, RuleError> {
    validate(rule)?;
    let c = classes(rule)?;
    let mut rng = OsRng;
    let mut chars: Vec<char> = Vec::with_capacity(usize::from(rule.length));
    for (set, count) in [
        (&c.lower, rule.min_lower),
        (&c.upper, rule.min_upper),
        (&c.digit, rule.min_digit),
        (&c.symbol, rule.min_symbol),
    ] {
        for _ in 0..count {
            chars.push(set[rng.gen_range(0..set.len())]);
        }
    }
    let all: Vec<char> = [&c.lower, &c.upper, &c.digit, &c.symbol]
        .into_iter()
        .flatten()
        .copied()
        .collect();
    while chars.len() < usize::from(rule.length) {
        chars.push(all[rng.gen_range(0..all.len())]);
    }
    chars.shuffle(&mut rng);
    let password: String = chars.iter().collect();
    zeroize::Zeroize::zeroize(&mut chars);
    Ok(SecretString::new(password))
}

/// A one-line description of a rule, for tables.
pub fn describe(rule: &PasswordRule) -> String {
    let mut text = format!(
        "{} chars, >= {} lower, {} upper, {} digit, {} symbol",
        rule.length, rule.min_lower, rule.min_upper, rule.min_digit, rule.min_symbol
    );
    if !rule.exclude.is_empty() {
        text.push_str(&format!(", excluding `{}`", rule.exclude));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> PasswordRule {
        PasswordRule::default()
    }

    #[test]
    fn generated_passwords_follow_the_rule() {
        let r = PasswordRule {
            length: 16,
            min_lower: 2,
            min_upper: 3,
            min_digit: 4,
            min_symbol: 2,
            symbols: "#%+".into(),
            exclude: "0O1lI".into(),
        };
        for _ in 0..200 {
            let p = generate(&r).unwrap();
            let p = p.expose();
            assert_eq!(p.chars().count(), 16);
            assert!(p.chars().filter(char::is_ascii_lowercase).count() >= 2);
            assert!(p.chars().filter(char::is_ascii_uppercase).count() >= 3);
            assert!(p.chars().filter(char::is_ascii_digit).count() >= 4);
            assert!(p.chars().filter(|c| "#%+".contains(*c)).count() >= 2);
            assert!(!p.chars().any(|c| "0O1lI".contains(c)), "{p}");
            assert!(
                p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "#%+".contains(c))
            );
        }
    }

    #[test]
    fn passwords_differ() {
        let a = generate(&rule()).unwrap();
        let b = generate(&rule()).unwrap();
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn unsatisfiable_rules_are_refused_with_the_reason() {
        let cases: Vec<(PasswordRule, &str)> = vec![
            (
                PasswordRule {
                    length: 4,
                    ..rule()
                },
                "length 4 is out of range (8 to 256)",
            ),
            (
                PasswordRule {
                    length: 8,
                    min_digit: 6,
                    min_symbol: 3,
                    ..rule()
                },
                "the minimum counts add up to 11 characters, more than the length 8",
            ),
            (
                PasswordRule {
                    min_digit: 1,
                    exclude: "0123456789".into(),
                    ..rule()
                },
                "at least 1 digit character(s) are required, but every digit character is excluded",
            ),
            (
                PasswordRule {
                    min_symbol: 1,
                    symbols: String::new(),
                    ..rule()
                },
                "at least 1 symbol character(s) are required, but every symbol character is excluded",
            ),
            (
                PasswordRule {
                    symbols: "a".into(),
                    ..rule()
                },
                "symbol `a` is not a printable ASCII symbol",
            ),
        ];
        for (r, expected) in cases {
            assert_eq!(generate(&r).unwrap_err().to_string(), expected);
        }
    }

    #[test]
    fn debug_of_a_password_is_redacted() {
        let p = generate(&rule()).unwrap();
        assert_eq!(format!("{p:?}"), "SecretString([redacted])");
    }
}
