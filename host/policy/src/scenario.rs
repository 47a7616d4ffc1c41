//! Scenario files: the test format for policy authors (`gatehouse policy test`). A scenario names
//! the policy files it loads, the entities, template links, a base context, and requests with the
//! decision and the determining policy ids expected. Each request is decided twice, with the
//! index and over the whole set, and the two must agree.
//!
//! ```toml
//! policies = ["../base.cedar", "../examples/business-hours.cedar"]
//!
//! [context]            # merged under every request's `context`
//! protocol = "ssh"
//!
//! [[entities]]
//! uid = 'User::"alice"'
//! parents = ['Group::"dbas"']
//! attrs = { name = "alice" }
//!
//! [[requests]]
//! name = "a dba on a prod account on Tuesday at 10:00"
//! principal = 'User::"alice"'
//! action = 'Action::"ssh_session"'
//! resource = 'Account::"root@db1"'
//! context = { time = { weekday = "tue", hour = 10 } }
//! decision = "allow"
//! policies = ["dbas-business-hours"]
//! ```

use crate::load::{self, Link, Source};
use crate::schema::schema;
use crate::{Decision, PolicyBundle, PolicyError, Query};
use cedar_policy::{Context, Entities, EntityUid};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};
use std::str::FromStr;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// What the scenario shows.
    #[serde(default)]
    pub description: String,
    /// Policy files, relative to the scenario file.
    pub policies: Vec<PathBuf>,
    #[serde(default)]
    pub links: Vec<LinkSpec>,
    #[serde(default)]
    pub entities: Vec<EntitySpec>,
    /// Merged under each request's context.
    #[serde(default)]
    pub context: Map<String, Value>,
    pub requests: Vec<RequestSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    pub id: String,
    pub template: String,
    pub principal: String,
    pub resource: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntitySpec {
    pub uid: String,
    #[serde(default)]
    pub parents: Vec<String>,
    #[serde(default)]
    pub attrs: Map<String, Value>,
    #[serde(default)]
    pub tags: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    pub name: String,
    pub principal: String,
    pub action: String,
    pub resource: String,
    #[serde(default)]
    pub context: Map<String, Value>,
    /// "allow" or "deny"
    pub decision: String,
    /// The determining policies expected (all of them, in any order).
    #[serde(default)]
    pub policies: Vec<String>,
}

/// The outcome of one request.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaseResult {
    pub name: String,
    pub passed: bool,
    pub decision: Decision,
    /// Why it failed, when it did.
    pub failure: Option<String>,
}

impl CaseResult {
    fn failed(name: &str, why: String) -> Self {
        CaseResult {
            name: name.to_string(),
            passed: false,
            decision: Decision {
                allowed: false,
                policies: vec![],
                errors: vec![],
            },
            failure: Some(why),
        }
    }
}

/// The outcome of one scenario file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScenarioResult {
    pub file: String,
    pub cases: Vec<CaseResult>,
}

impl ScenarioResult {
    pub fn passed(&self) -> bool {
        self.cases.iter().all(|c| c.passed)
    }
}

/// A scenario, loaded and ready to decide requests in.
pub struct Loaded {
    pub scenario: Scenario,
    pub bundle: PolicyBundle,
    pub entities: Entities,
    pub file: String,
}

fn parse_uid(text: &str, what: &str) -> Result<EntityUid, PolicyError> {
    EntityUid::from_str(text).map_err(|e| {
        PolicyError::Config(format!(
            "{what} `{text}` is not an entity uid like User::\"alice\": {e}"
        ))
    })
}

fn uid_json(uid: &EntityUid) -> Value {
    json!({ "type": uid.type_name().to_string(), "id": uid.id().unescaped() })
}

/// `a` with `b`'s keys laid over it, recursively for tables.
fn merge(a: &Map<String, Value>, b: &Map<String, Value>) -> Map<String, Value> {
    let mut out = a.clone();
    for (k, v) in b {
        let merged = match (out.get(k), v) {
            (Some(Value::Object(base)), Value::Object(over)) => Value::Object(merge(base, over)),
            _ => v.clone(),
        };
        out.insert(k.clone(), merged);
    }
    out
}

/// Reads and loads a scenario file.
pub fn load(path: &Path) -> Result<Loaded, PolicyError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| PolicyError::Config(format!("{file}: cannot read: {e}")))?;
    let scenario: Scenario =
        toml::from_str(&text).map_err(|e| PolicyError::Config(format!("{file}: {e}")))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut sources = Vec::new();
    for p in &scenario.policies {
        let full = base.join(p);
        let name = full.display().to_string();
        let text = std::fs::read_to_string(&full)
            .map_err(|e| PolicyError::Config(format!("{file}: policy file `{name}`: {e}")))?;
        sources.push(Source { name, text });
    }
    let links = scenario
        .links
        .iter()
        .map(|l| {
            Ok(Link {
                id: l.id.clone(),
                template: l.template.clone(),
                principal: parse_uid(&l.principal, "link principal")?,
                resource: parse_uid(&l.resource, "link resource")?,
            })
        })
        .collect::<Result<Vec<_>, PolicyError>>()?;
    let bundle = load::compile(&sources, &links)?;
    let mut list = Vec::new();
    for e in &scenario.entities {
        let uid = parse_uid(&e.uid, "entity")?;
        let parents = e
            .parents
            .iter()
            .map(|p| parse_uid(p, "parent").map(|u| uid_json(&u)))
            .collect::<Result<Vec<_>, _>>()?;
        list.push(json!({
            "uid": uid_json(&uid),
            "attrs": e.attrs,
            "parents": parents,
            "tags": e.tags,
        }));
    }
    let entities = Entities::from_json_value(Value::Array(list), Some(schema()?))
        .map_err(|e| PolicyError::Config(format!("{file}: entities: {e}")))?;
    Ok(Loaded {
        scenario,
        bundle,
        entities,
        file,
    })
}

impl Loaded {
    /// Decides one request of the scenario, with the index and without.
    pub fn decide(&self, request: &RequestSpec) -> Result<(Decision, Decision), PolicyError> {
        let principal = parse_uid(&request.principal, "principal")?;
        let action = parse_uid(&request.action, "action")?;
        let resource = parse_uid(&request.resource, "resource")?;
        let context_value = Value::Object(merge(&self.scenario.context, &request.context));
        let context =
            Context::from_json_value(context_value, Some((schema()?, &action))).map_err(|e| {
                PolicyError::Config(format!("request `{}`: context: {e}", request.name))
            })?;
        let query = || Query {
            principal: &principal,
            action: &action,
            resource: &resource,
            context: context.clone(),
            entities: &self.entities,
        };
        Ok((
            self.bundle.decide(query())?,
            self.bundle.decide_unsliced(query())?,
        ))
    }

    /// Runs every request.
    pub fn run(&self) -> ScenarioResult {
        let cases = self
            .scenario
            .requests
            .iter()
            .map(|request| match self.decide(request) {
                Ok((decision, whole)) => {
                    let failure = check(request, &decision, &whole);
                    CaseResult {
                        name: request.name.clone(),
                        passed: failure.is_none(),
                        decision,
                        failure,
                    }
                }
                Err(e) => CaseResult::failed(&request.name, e.to_string()),
            })
            .collect();
        ScenarioResult {
            file: self.file.clone(),
            cases,
        }
    }
}

fn check(request: &RequestSpec, got: &Decision, whole: &Decision) -> Option<String> {
    let expected_allow = match request.decision.as_str() {
        "allow" => true,
        "deny" => false,
        other => return Some(format!("decision must be `allow` or `deny`, not `{other}`")),
    };
    let mut problems = Vec::new();
    if got.allowed != expected_allow {
        problems.push(format!(
            "expected {}, got {}",
            request.decision,
            if got.allowed { "allow" } else { "deny" }
        ));
    }
    let mut expected: Vec<String> = request.policies.clone();
    expected.sort();
    if got.policies != expected {
        problems.push(format!(
            "expected determining policies {:?}, got {:?}",
            expected, got.policies
        ));
    }
    if !got.errors.is_empty() {
        problems.push(format!("evaluation errors: {}", got.errors.join("; ")));
    }
    if got != whole {
        problems.push(format!(
            "the policy index disagrees with the whole set ({got:?} vs {whole:?})"
        ));
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// Runs one scenario file, or every `*.toml` under a directory.
pub fn run_path(path: &Path) -> Result<Vec<ScenarioResult>, PolicyError> {
    let mut files = Vec::new();
    if path.is_dir() {
        collect(path, &mut files)?;
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    if files.is_empty() {
        return Err(PolicyError::Config(format!(
            "no scenario files (*.toml) under `{}`",
            path.display()
        )));
    }
    let mut results = Vec::new();
    for file in files {
        match load(&file) {
            Ok(loaded) => results.push(loaded.run()),
            Err(e) => results.push(ScenarioResult {
                file: file.display().to_string(),
                cases: vec![CaseResult::failed("(loading)", e.to_string())],
            }),
        }
    }
    Ok(results)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), PolicyError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| PolicyError::Config(format!("{}: {e}", dir.display())))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|x| x == "toml") {
            out.push(path);
        }
    }
    Ok(())
}
