//! Guards: conditions the index checks before Cedar does, so that a policy whose condition is
//! certainly false for a request is not handed to Cedar at all.
//!
//! A policy's condition is its scope, then its `when` and `unless` clauses in the order they are
//! written, joined by `&&` and evaluated left to right (an `unless { e }` is `!e`). The guard is
//! the longest leading run of those conjuncts that the index can read: comparisons of a request
//! attribute with a literal, set membership, `has`, `hasTag`, and `!`, `&&`, `||` over these. It
//! is evaluated with three outcomes: certainly true, certainly false, or not known (an attribute
//! that is missing, of another type, or anything Cedar might report as an error). Only "certainly
//! false" drops a policy: every conjunct before the false one was certainly true, so Cedar would
//! have found the policy not satisfied, without an error. Everything else is left to Cedar.
//!
//! The typical beneficiaries are gateway-wide forbids scoped to every session
//! (`when { context.session.hasTag("quarantine") }`) and permits limited to a protocol or to
//! business hours: they match every request by scope, and their guard settles them for the
//! price of a map lookup.

use cedar_policy::{Context, Entities, EntityUid, EvalResult, Policy};
use serde_json::Value;

/// Where a request attribute is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Root {
    Principal,
    Resource,
    Context,
}

/// `principal`, `resource` or `context`, followed by attribute names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Path {
    root: Root,
    attrs: Vec<String>,
}

/// A literal a guard compares with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lit {
    Bool(bool),
    Long(i64),
    String(String),
}

impl Lit {
    fn from_json(v: &Value) -> Option<Lit> {
        match v {
            Value::Bool(b) => Some(Lit::Bool(*b)),
            Value::Number(n) => n.as_i64().map(Lit::Long),
            Value::String(s) => Some(Lit::String(s.clone())),
            _ => None,
        }
    }

    /// Cedar's `==` between this literal and a primitive value; `None` for other values.
    fn equals(&self, v: &EvalResult) -> Option<bool> {
        match (self, v) {
            (Lit::Bool(a), EvalResult::Bool(b)) => Some(a == b),
            (Lit::Long(a), EvalResult::Long(b)) => Some(a == b),
            (Lit::String(a), EvalResult::String(b)) => Some(a == b),
            // Values of different primitive types are never equal (and `==` does not fail).
            (_, EvalResult::Bool(_) | EvalResult::Long(_) | EvalResult::String(_)) => Some(false),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    fn flip(self) -> Cmp {
        match self {
            Cmp::Lt => Cmp::Gt,
            Cmp::Le => Cmp::Ge,
            Cmp::Gt => Cmp::Lt,
            Cmp::Ge => Cmp::Le,
        }
    }

    fn holds(self, a: i64, b: i64) -> bool {
        match self {
            Cmp::Lt => a < b,
            Cmp::Le => a <= b,
            Cmp::Gt => a > b,
            Cmp::Ge => a >= b,
        }
    }
}

/// A condition the index can evaluate. Paths are indices into the index's table of paths, so
/// that a request resolves each distinct attribute once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Guard {
    Const(bool),
    /// The attribute is the boolean `true`.
    IsTrue(usize),
    Eq(usize, Lit),
    Ne(usize, Lit),
    Cmp(usize, Cmp, i64),
    /// `[literals].contains(attribute)`
    OneOf(usize, Vec<Lit>),
    /// `attribute.contains(literal)`, the attribute a set.
    Contains(usize, Lit),
    /// `attribute has name` (record or entity).
    Has(usize, String),
    /// `context has name`
    ContextHas(String),
    /// `attribute.hasTag("name")`, the attribute an entity.
    HasTag(usize, String),
    Not(Box<Guard>),
    And(Vec<Guard>),
    Or(Vec<Guard>),
}

/// The paths guards refer to, shared by all of an index's guards.
#[derive(Debug, Default)]
pub(crate) struct Paths(Vec<Path>);

impl Paths {
    fn intern(&mut self, path: Path) -> usize {
        if let Some(i) = self.0.iter().position(|p| *p == path) {
            return i;
        }
        self.0.push(path);
        self.0.len() - 1
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// The guard of a policy, if its condition starts with something the index can read.
pub(crate) fn of_policy(policy: &Policy, paths: &mut Paths) -> Option<Guard> {
    let json = policy.to_json().ok()?;
    of_est(&json, paths)
}

/// The guard of a policy in Cedar's JSON form (EST).
fn of_est(policy: &Value, paths: &mut Paths) -> Option<Guard> {
    let mut conjuncts = Vec::new();
    'clauses: for clause in policy.get("conditions")?.as_array()? {
        let body = clause.get("body")?;
        let mut parts = Vec::new();
        flatten_and(body, &mut parts);
        match clause.get("kind")?.as_str()? {
            "when" => {
                for part in parts {
                    match expr(part, paths) {
                        Some(g) => conjuncts.push(g),
                        None => break 'clauses,
                    }
                }
            }
            "unless" => match expr(body, paths) {
                Some(g) => conjuncts.push(Guard::Not(Box::new(g))),
                None => break 'clauses,
            },
            _ => break,
        }
    }
    match conjuncts.len() {
        0 => None,
        1 => conjuncts.pop(),
        _ => Some(Guard::And(conjuncts)),
    }
}

fn flatten_and<'a>(e: &'a Value, out: &mut Vec<&'a Value>) {
    match e.get("&&") {
        Some(and) => match (and.get("left"), and.get("right")) {
            (Some(l), Some(r)) => {
                flatten_and(l, out);
                flatten_and(r, out);
            }
            _ => out.push(e),
        },
        None => out.push(e),
    }
}

/// The only key of a one-key JSON object, and its value.
fn single(e: &Value) -> Option<(&str, &Value)> {
    let map = e.as_object()?;
    if map.len() != 1 {
        return None;
    }
    map.iter().next().map(|(k, v)| (k.as_str(), v))
}

fn path(e: &Value) -> Option<Path> {
    let (op, arg) = single(e)?;
    match op {
        "Var" => {
            let root = match arg.as_str()? {
                "principal" => Root::Principal,
                "resource" => Root::Resource,
                "context" => Root::Context,
                _ => return None,
            };
            Some(Path {
                root,
                attrs: Vec::new(),
            })
        }
        "." => {
            let mut p = path(arg.get("left")?)?;
            p.attrs.push(arg.get("attr")?.as_str()?.to_string());
            Some(p)
        }
        _ => None,
    }
}

fn literal(e: &Value) -> Option<Lit> {
    let (op, arg) = single(e)?;
    (op == "Value").then(|| Lit::from_json(arg)).flatten()
}

fn set_literal(e: &Value) -> Option<Vec<Lit>> {
    let (op, arg) = single(e)?;
    if op != "Set" {
        return None;
    }
    arg.as_array()?.iter().map(literal).collect()
}

fn operands(arg: &Value) -> Option<(&Value, &Value)> {
    Some((arg.get("left")?, arg.get("right")?))
}

fn expr(e: &Value, paths: &mut Paths) -> Option<Guard> {
    if let Some(p) = path(e) {
        // A bare attribute: a boolean. The whole context or an entity is not.
        if p.root == Root::Context && p.attrs.is_empty() {
            return None;
        }
        return Some(Guard::IsTrue(paths.intern(p)));
    }
    let (op, arg) = single(e)?;
    match op {
        "Value" => match arg {
            Value::Bool(b) => Some(Guard::Const(*b)),
            _ => None,
        },
        "!" => Some(Guard::Not(Box::new(expr(arg.get("arg")?, paths)?))),
        "&&" | "||" => {
            let (l, r) = operands(arg)?;
            let both = vec![expr(l, paths)?, expr(r, paths)?];
            Some(if op == "&&" {
                Guard::And(both)
            } else {
                Guard::Or(both)
            })
        }
        "==" | "!=" => {
            let (l, r) = operands(arg)?;
            let (p, lit) = match (path(l), literal(r)) {
                (Some(p), Some(lit)) => (p, lit),
                _ => (path(r)?, literal(l)?),
            };
            let p = paths.intern(p);
            Some(if op == "==" {
                Guard::Eq(p, lit)
            } else {
                Guard::Ne(p, lit)
            })
        }
        "<" | "<=" | ">" | ">=" => {
            let cmp = match op {
                "<" => Cmp::Lt,
                "<=" => Cmp::Le,
                ">" => Cmp::Gt,
                _ => Cmp::Ge,
            };
            let (l, r) = operands(arg)?;
            match (path(l), literal(r), path(r), literal(l)) {
                (Some(p), Some(Lit::Long(n)), _, _) => Some(Guard::Cmp(paths.intern(p), cmp, n)),
                (_, _, Some(p), Some(Lit::Long(n))) => {
                    Some(Guard::Cmp(paths.intern(p), cmp.flip(), n))
                }
                _ => None,
            }
        }
        "contains" => {
            let (l, r) = operands(arg)?;
            if let (Some(set), Some(p)) = (set_literal(l), path(r)) {
                return Some(Guard::OneOf(paths.intern(p), set));
            }
            Some(Guard::Contains(paths.intern(path(l)?), literal(r)?))
        }
        "has" => {
            let p = path(arg.get("left")?)?;
            let attr = arg.get("attr")?;
            let has = |paths: &mut Paths, p: Path, name: String| {
                if p.root == Root::Context && p.attrs.is_empty() {
                    Guard::ContextHas(name)
                } else {
                    Guard::Has(paths.intern(p), name)
                }
            };
            match attr {
                Value::String(name) => Some(has(paths, p, name.clone())),
                // `e has a.b.c` is `e has a && e.a has b && e.a.b has c`.
                Value::Array(names) => {
                    let mut steps = Vec::new();
                    let mut prefix = p;
                    for name in names {
                        let name = name.as_str()?.to_string();
                        steps.push(has(paths, prefix.clone(), name.clone()));
                        prefix.attrs.push(name);
                    }
                    Some(Guard::And(steps))
                }
                _ => None,
            }
        }
        "hasTag" => {
            let (l, r) = operands(arg)?;
            match literal(r)? {
                Lit::String(tag) => Some(Guard::HasTag(paths.intern(path(l)?), tag)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// One request, as guards see it: attributes are resolved on first use and remembered.
pub(crate) struct Facts<'a> {
    pub principal: &'a EntityUid,
    pub resource: &'a EntityUid,
    pub context: &'a Context,
    pub entities: &'a Entities,
    resolved: Vec<(usize, Option<EvalResult>)>,
}

impl<'a> Facts<'a> {
    pub(crate) fn new(
        principal: &'a EntityUid,
        resource: &'a EntityUid,
        context: &'a Context,
        entities: &'a Entities,
    ) -> Self {
        Facts {
            principal,
            resource,
            context,
            entities,
            resolved: Vec::new(),
        }
    }

    fn resolve_uncached(&self, path: &Path) -> Option<EvalResult> {
        let mut attrs = path.attrs.iter();
        let mut value = match path.root {
            Root::Principal => EvalResult::EntityUid(self.principal.clone()),
            Root::Resource => EvalResult::EntityUid(self.resource.clone()),
            Root::Context => self.context.get(attrs.next()?)?,
        };
        for attr in attrs {
            value = match value {
                EvalResult::Record(record) => record.get(attr)?.clone(),
                EvalResult::EntityUid(uid) => self.entities.get(&uid)?.attr(attr)?.ok()?,
                _ => return None,
            };
        }
        Some(value)
    }

    fn resolve(&mut self, paths: &Paths, id: usize) -> Option<&EvalResult> {
        let position = match self.resolved.iter().position(|(p, _)| *p == id) {
            Some(i) => i,
            None => {
                let value = paths.0.get(id).and_then(|p| self.resolve_uncached(p));
                self.resolved.push((id, value));
                self.resolved.len() - 1
            }
        };
        self.resolved.get(position).and_then(|(_, v)| v.as_ref())
    }

    /// Evaluates a guard: `Some(b)` when certain, `None` when Cedar must decide (an attribute is
    /// missing or of another type, or evaluating it could fail).
    pub(crate) fn eval(&mut self, paths: &Paths, guard: &Guard) -> Option<bool> {
        match guard {
            Guard::Const(b) => Some(*b),
            Guard::IsTrue(p) => match self.resolve(paths, *p)? {
                EvalResult::Bool(b) => Some(*b),
                _ => None,
            },
            Guard::Eq(p, lit) => lit.equals(self.resolve(paths, *p)?),
            Guard::Ne(p, lit) => lit.equals(self.resolve(paths, *p)?).map(|b| !b),
            Guard::Cmp(p, cmp, n) => match self.resolve(paths, *p)? {
                EvalResult::Long(v) => Some(cmp.holds(*v, *n)),
                _ => None,
            },
            Guard::OneOf(p, set) => {
                let v = self.resolve(paths, *p)?;
                let mut found = false;
                for lit in set {
                    found |= lit.equals(v)?;
                }
                Some(found)
            }
            Guard::Contains(p, lit) => match self.resolve(paths, *p)? {
                EvalResult::Set(set) => {
                    let mut found = false;
                    for member in set.iter() {
                        found |= lit.equals(member)?;
                    }
                    Some(found)
                }
                _ => None,
            },
            Guard::Has(p, name) => match self.resolve(paths, *p)? {
                EvalResult::Record(record) => Some(record.contains_attribute(name)),
                EvalResult::EntityUid(uid) => {
                    let uid = uid.clone();
                    Some(self.entities.get(&uid)?.attr(name).is_some())
                }
                _ => None,
            },
            Guard::ContextHas(name) => Some(self.context.get(name).is_some()),
            Guard::HasTag(p, tag) => match self.resolve(paths, *p)? {
                EvalResult::EntityUid(uid) => {
                    let uid = uid.clone();
                    Some(self.entities.get(&uid)?.tag(tag).is_some())
                }
                _ => None,
            },
            Guard::Not(g) => self.eval(paths, g).map(|b| !b),
            // Left to right, as Cedar: a part that might fail before the deciding one leaves the
            // outcome to Cedar.
            Guard::And(parts) => {
                for g in parts {
                    if !self.eval(paths, g)? {
                        return Some(false);
                    }
                }
                Some(true)
            }
            Guard::Or(parts) => {
                for g in parts {
                    if self.eval(paths, g)? {
                        return Some(true);
                    }
                }
                Some(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn guard_of(text: &str) -> (Option<Guard>, Paths) {
        let policy = Policy::from_str(text).expect("policy parses");
        let mut paths = Paths::default();
        (of_policy(&policy, &mut paths), paths)
    }

    fn outcome(
        text: &str,
        context: serde_json::Value,
        entities: serde_json::Value,
    ) -> Option<bool> {
        let (guard, paths) = guard_of(text);
        let guard = guard?;
        let context = Context::from_json_value(context, None).expect("context");
        let entities = Entities::from_json_value(entities, None).expect("entities");
        let principal = EntityUid::from_str(r#"User::"alice""#).expect("uid");
        let resource = EntityUid::from_str(r#"Account::"root@db1""#).expect("uid");
        Facts::new(&principal, &resource, &context, &entities).eval(&paths, &guard)
    }

    fn session_with_tags(tags: serde_json::Value) -> serde_json::Value {
        serde_json::json!([
            { "uid": { "type": "Session", "id": "s1" }, "attrs": {}, "parents": [], "tags": tags },
            { "uid": { "type": "User", "id": "alice" }, "attrs": { "level": 3 }, "parents": [] },
        ])
    }

    fn ctx() -> serde_json::Value {
        serde_json::json!({
            "protocol": "ssh",
            "ticket_verified": false,
            "authenticated_with": ["password", "totp-mfa"],
            "time": { "weekday": "sat", "hour": 22 },
            "session": { "__entity": { "type": "Session", "id": "s1" } },
        })
    }

    #[test]
    fn a_tag_forbid_is_settled_by_the_session_tags() {
        let p = r#"forbid (principal, action, resource) when { context.session.hasTag("deny") };"#;
        assert_eq!(
            outcome(p, ctx(), session_with_tags(serde_json::json!({}))),
            Some(false)
        );
        assert_eq!(
            outcome(
                p,
                ctx(),
                session_with_tags(serde_json::json!({ "deny": "1" }))
            ),
            Some(true)
        );
        // No session entity: Cedar decides.
        assert_eq!(outcome(p, ctx(), serde_json::json!([])), None);
    }

    #[test]
    fn comparisons_and_membership_follow_cedar() {
        let hours = r#"permit (principal, action, resource) when {
            ["mon","tue","wed","thu","fri"].contains(context.time.weekday)
            && context.time.hour >= 7 && context.time.hour < 19 };"#;
        assert_eq!(outcome(hours, ctx(), serde_json::json!([])), Some(false));
        let weekend = r#"permit (principal, action, resource) when {
            context.time.weekday == "sat" && 20 <= context.time.hour };"#;
        assert_eq!(outcome(weekend, ctx(), serde_json::json!([])), Some(true));
        let mfa = r#"permit (principal, action, resource) when {
            context.authenticated_with.contains("publickey") || context.authenticated_with.contains("totp-mfa") };"#;
        assert_eq!(outcome(mfa, ctx(), serde_json::json!([])), Some(true));
        let unless =
            r#"forbid (principal, action, resource) unless { context.protocol == "ssh" };"#;
        assert_eq!(outcome(unless, ctx(), serde_json::json!([])), Some(false));
        let flag = r#"permit (principal, action, resource) when { context.ticket_verified };"#;
        assert_eq!(outcome(flag, ctx(), serde_json::json!([])), Some(false));
        let request = r#"permit (principal, action, resource)
            when { context has request && context.request.reason != "" };"#;
        assert_eq!(outcome(request, ctx(), serde_json::json!([])), Some(false));
        let level = r#"permit (principal, action, resource) when { principal.level > 2 };"#;
        assert_eq!(
            outcome(level, ctx(), session_with_tags(serde_json::json!({}))),
            Some(true)
        );
    }

    #[test]
    fn anything_that_might_fail_is_left_to_cedar() {
        // Missing attribute: Cedar reports an error, the guard does not guess.
        let missing = r#"permit (principal, action, resource) when { context.nope == "x" };"#;
        assert_eq!(outcome(missing, ctx(), serde_json::json!([])), None);
        // Wrong type for `<`: an error in Cedar.
        let typed = r#"permit (principal, action, resource) when { context.protocol < 3 };"#;
        assert_eq!(outcome(typed, ctx(), serde_json::json!([])), None);
        // A failing first conjunct before a false one: Cedar reports the error.
        let order = r#"permit (principal, action, resource) when { context.nope && false };"#;
        assert_eq!(outcome(order, ctx(), serde_json::json!([])), None);
        // A false first conjunct before an unreadable one: certainly false.
        let first = r#"permit (principal, action, resource)
            when { context.protocol == "rdp" && context.client.ip.isLoopback() };"#;
        assert_eq!(outcome(first, ctx(), serde_json::json!([])), Some(false));
        // An unreadable first conjunct: no guard at all.
        let (none, _) = guard_of(
            r#"permit (principal, action, resource) when { context.client.ip.isLoopback() && context.protocol == "rdp" };"#,
        );
        assert_eq!(none, None);
    }

    #[test]
    fn clauses_keep_their_order_and_paths_are_shared() {
        let (guard, paths) = guard_of(
            r#"forbid (principal, action, resource)
               unless { context.protocol == "ssh" }
               when { context.protocol != "rdp" && context.session.hasTag("x") };"#,
        );
        assert_eq!(paths.len(), 2);
        let Some(Guard::And(parts)) = guard else {
            panic!("expected a conjunction, got {guard:?}");
        };
        assert!(matches!(parts.first(), Some(Guard::Not(_))));
        assert_eq!(parts.len(), 3);
    }
}
