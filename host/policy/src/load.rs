//! Loading policy files: parse each file, give every policy a stable id, link the grants, validate
//! the whole set strictly against the schema, and report every problem with file, line and column.

use crate::PolicyError;
use crate::index::Index;
use crate::schema::{GRANT_TEMPLATE, Kind, schema, uid};
use cedar_policy::{EntityUid, PolicyId, PolicySet, SlotId, ValidationMode, Validator};
use gatehouse_core::{Grant, Principal};
use miette::Diagnostic;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// One policy file's text and the name it is reported under.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub text: String,
}

/// One thing wrong with the policies, at a position when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    /// 1-based; 0 when the problem has no position (a grant in the store, a missing file).
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        }
    }
}

/// Why a policy set was not loaded; the previous set, if any, stays in force.
#[derive(Debug, Clone, thiserror::Error)]
pub struct LoadError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl LoadError {
    fn one(file: impl Into<String>, message: impl Into<String>) -> Self {
        LoadError {
            problems: vec![Problem {
                file: file.into(),
                line: 0,
                column: 0,
                message: message.into(),
            }],
        }
    }
}

/// Where a policy came from, for explanations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: String,
    pub line: usize,
}

/// A validated policy set, ready for decisions.
#[derive(Debug)]
pub struct PolicyBundle {
    pub(crate) set: PolicySet,
    pub(crate) index: Index,
    pub(crate) origins: HashMap<String, Origin>,
    files: Vec<String>,
    policies: usize,
    links: usize,
}

impl PolicyBundle {
    /// The files the set was loaded from.
    pub fn files(&self) -> &[String] {
        &self.files
    }
    /// Number of static policies and template links.
    pub fn policy_count(&self) -> usize {
        self.policies + self.links
    }
    pub fn link_count(&self) -> usize {
        self.links
    }
    pub fn template_count(&self) -> usize {
        self.set.templates().count()
    }
    /// Where a policy id was defined (`None` for links, which live in the store).
    pub fn origin(&self, id: &str) -> Option<&Origin> {
        self.origins.get(id)
    }
    /// Every policy and template id defined in the files, with where, in file order.
    pub fn defined(&self) -> Vec<(String, Origin)> {
        let mut all: Vec<(String, Origin)> = self
            .origins
            .iter()
            .map(|(id, origin)| (id.clone(), origin.clone()))
            .collect();
        all.sort_by(|a, b| (&a.1.file, a.1.line).cmp(&(&b.1.file, b.1.line)));
        all
    }

    /// The policy's text, for explanations.
    pub fn policy_text(&self, id: &str) -> Option<String> {
        self.set
            .policy(&PolicyId::new(id))
            .map(|p| p.to_string())
            .or_else(|| self.set.template(&PolicyId::new(id)).map(|t| t.to_string()))
    }
}

/// Reads every `*.cedar` file in `dir` (not recursive), in name order.
pub fn read_dir(dir: &Path) -> Result<Vec<Source>, LoadError> {
    let display = dir.display().to_string();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| LoadError::one(&display, format!("cannot read the policy directory: {e}")))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cedar") && p.is_file())
        .collect();
    paths.sort();
    let mut sources = Vec::new();
    for path in paths {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| LoadError::one(&name, format!("cannot read: {e}")))?;
        sources.push(Source { name, text });
    }
    Ok(sources)
}

/// A template link: grants from the store, approved requests, scenario files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub id: String,
    pub template: String,
    pub principal: EntityUid,
    pub resource: EntityUid,
}

/// The link of the `grant` template a grant stands for; its policy id is `grant:<id>`.
pub fn grant_link(grant: &Grant) -> Result<Link, PolicyError> {
    let principal = match &grant.principal {
        Principal::User(n) => uid(Kind::User, n.as_str())?,
        Principal::Group(n) => uid(Kind::Group, n.as_str())?,
    };
    let resource = uid(
        Kind::Account,
        &crate::schema::account_id(grant.asset.as_str(), grant.account.as_str()),
    )?;
    Ok(Link {
        id: format!("grant:{}", grant.id),
        template: GRANT_TEMPLATE.to_string(),
        principal,
        resource,
    })
}

/// The template a granted request of `access` is linked under.
pub fn approved_template(access: gatehouse_core::AccessKind) -> &'static str {
    match access {
        gatehouse_core::AccessKind::Session => "approved-session",
        gatehouse_core::AccessKind::Password => "approved-password",
        gatehouse_core::AccessKind::PrivateKey => "approved-private-key",
    }
}

/// The link a granted access request stands for while it lasts; policy id `approved:<id>`.
pub fn approved_link(request: &gatehouse_core::AccessRequest) -> Result<Link, PolicyError> {
    Ok(Link {
        id: format!("approved:{}", request.id),
        template: approved_template(request.access).to_string(),
        principal: uid(Kind::User, request.requester.as_str())?,
        resource: uid(
            Kind::Account,
            &crate::schema::account_id(request.asset.as_str(), request.account.as_str()),
        )?,
    })
}

/// Parses, links and validates. Every problem found is reported, not just the first.
pub fn compile(sources: &[Source], links: &[Link]) -> Result<PolicyBundle, LoadError> {
    let schema = schema().map_err(|e| LoadError::one("<schema>", e.to_string()))?;
    let mut problems = Vec::new();
    let mut set = PolicySet::new();
    let mut origins: HashMap<String, Origin> = HashMap::new();
    // Which file each policy id came from, and that file's text, for positions.
    let mut texts: HashMap<String, &Source> = HashMap::new();
    let mut policies = 0;

    for source in sources {
        let parsed = match PolicySet::from_str(&source.text) {
            Ok(p) => p,
            Err(errors) => {
                for e in errors.iter() {
                    problems.push(problem_at(&source.name, &source.text, e));
                }
                continue;
            }
        };
        let stem = Path::new(&source.name)
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_else(|| source.name.clone());
        // Cedar numbers the policies of one text policy0, policy1, ... in order of appearance.
        let mut statics: Vec<_> = parsed.policies().filter(|p| p.is_static()).collect();
        statics.sort_by_key(|p| ordinal(p.id()));
        let mut templates: Vec<_> = parsed.templates().collect();
        templates.sort_by_key(|t| ordinal(t.id()));
        let mut add_id = |given: Option<&str>, cedar_id: &PolicyId, text: String| {
            let id = match given {
                Some(id) => id.to_string(),
                None => format!("{stem}#{}", ordinal(cedar_id) + 1),
            };
            let line = source
                .text
                .find(text.trim())
                .map(|o| line_column(&source.text, o).0)
                .unwrap_or(0);
            if let Some(first) = origins.get(&id) {
                return Err(Problem {
                    file: source.name.clone(),
                    line,
                    column: 1,
                    message: format!(
                        "policy id `{id}` is already used at {}:{}",
                        first.file, first.line
                    ),
                });
            }
            origins.insert(
                id.clone(),
                Origin {
                    file: source.name.clone(),
                    line,
                },
            );
            texts.insert(id.clone(), source);
            Ok(PolicyId::new(id))
        };
        for policy in statics {
            let added =
                add_id(policy.annotation("id"), policy.id(), policy.to_string()).and_then(|id| {
                    set.add(policy.new_id(id))
                        .map_err(|e| plain(&source.name, e.to_string()))
                });
            match added {
                Ok(()) => policies += 1,
                Err(p) => problems.push(p),
            }
        }
        for template in templates {
            let added = add_id(
                template.annotation("id"),
                template.id(),
                template.to_string(),
            )
            .and_then(|id| {
                set.add_template(template.new_id(id))
                    .map_err(|e| plain(&source.name, e.to_string()))
            });
            if let Err(p) = added {
                problems.push(p);
            }
        }
    }

    let mut linked = 0;
    if problems.is_empty() {
        for link in links {
            let template = PolicyId::new(&link.template);
            if set.template(&template).is_none() {
                problems.push(plain(
                    "<links>",
                    format!(
                        "`{}` links the template `{}`, which no policy file defines",
                        link.id, link.template
                    ),
                ));
                continue;
            }
            let slots = HashMap::from([
                (SlotId::principal(), link.principal.clone()),
                (SlotId::resource(), link.resource.clone()),
            ]);
            match set.link(template, PolicyId::new(&link.id), slots) {
                Ok(()) => linked += 1,
                Err(e) => problems.push(plain(
                    "<links>",
                    format!("`{}` cannot be linked: {e}", link.id),
                )),
            }
        }
    }

    // Annotations the gateway reads must mean something.
    let annotated = set
        .policies()
        .filter(|p| p.is_static())
        .filter_map(|p| {
            p.annotation(IDLE_TIMEOUT)
                .map(|v| (p.id().to_string(), v.to_string()))
        })
        .chain(set.templates().filter_map(|t| {
            t.annotation(IDLE_TIMEOUT)
                .map(|v| (t.id().to_string(), v.to_string()))
        }));
    for (id, value) in annotated {
        if let Err(reason) = parse_idle_timeout(&value) {
            let (file, line) = origins
                .get(&id)
                .map(|o| (o.file.clone(), o.line))
                .unwrap_or_else(|| ("<policies>".into(), 0));
            problems.push(Problem {
                file,
                line,
                column: 1,
                message: format!("policy `{id}`: @{IDLE_TIMEOUT}(\"{value}\"): {reason}"),
            });
        }
    }

    // Validate what parsed, even when another file did not: every problem in one report.
    {
        let validator = Validator::new(schema.clone());
        let result = validator.validate(&set, ValidationMode::Strict);
        for e in result.validation_errors() {
            let id = e.policy_id().to_string();
            let problem = match texts.get(&id) {
                Some(source) => problem_at(&source.name, &source.text, e),
                None => plain("<links>", format!("{id}: {}", render(e))),
            };
            problems.push(problem);
        }
    }
    if !problems.is_empty() {
        return Err(LoadError { problems });
    }
    let index = Index::build(&set, schema).map_err(|e| LoadError::one("<index>", e.to_string()))?;
    Ok(PolicyBundle {
        set,
        index,
        origins,
        files: sources.iter().map(|s| s.name.clone()).collect(),
        policies,
        links: linked,
    })
}

/// The annotation of a permit policy that ends the sessions it permits after this long without
/// input from the user: `@idle_timeout("15m")`.
pub const IDLE_TIMEOUT: &str = "idle_timeout";

/// The value of an `@idle_timeout` annotation: a duration (`90s`, `15m`, `1h 30m`) of 10 s to
/// 30 days.
pub fn parse_idle_timeout(value: &str) -> Result<std::time::Duration, String> {
    let duration = humantime::parse_duration(value.trim())
        .map_err(|e| format!("expected a duration such as \"15m\" or \"1h 30m\" ({e})"))?;
    let (least, most) = (
        std::time::Duration::from_secs(10),
        std::time::Duration::from_secs(30 * 24 * 3600),
    );
    if duration < least || duration > most {
        return Err("an idle timeout is 10 s to 30 days".into());
    }
    Ok(duration)
}

impl PolicyBundle {
    /// The shortest `@idle_timeout` among `policies` (the ones that permitted a session), with
    /// the policy that set it; `None` when none of them has one.
    pub fn idle_timeout(&self, policies: &[String]) -> Option<(std::time::Duration, String)> {
        policies
            .iter()
            .filter_map(|id| {
                let policy = self.set.policy(&PolicyId::new(id))?;
                let value = policy.annotation(IDLE_TIMEOUT)?;
                parse_idle_timeout(value).ok().map(|d| (d, id.clone()))
            })
            .min_by_key(|(d, _)| *d)
    }
}

/// `policy3` -> 3; anything else sorts first.
fn ordinal(id: &PolicyId) -> usize {
    id.to_string()
        .strip_prefix("policy")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn plain(file: &str, message: String) -> Problem {
    Problem {
        file: file.to_string(),
        line: 0,
        column: 0,
        message,
    }
}

/// The error's message with its help, on one line.
fn render(e: &(impl Diagnostic + fmt::Display)) -> String {
    match e.help() {
        Some(help) => format!("{e} ({help})"),
        None => e.to_string(),
    }
}

/// A problem positioned at the first label of a diagnostic whose spans index `text`.
fn problem_at(file: &str, text: &str, e: &(impl Diagnostic + fmt::Display)) -> Problem {
    let offset = e
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|l| l.offset());
    let (line, column) = match offset {
        Some(o) => line_column(text, o),
        None => (0, 0),
    };
    Problem {
        file: file.to_string(),
        line,
        column,
        message: render(e),
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map(|l| l.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

/// A summary of what a directory holds, for `policy validate`.
pub fn summary(bundle: &PolicyBundle) -> BTreeMap<&'static str, usize> {
    BTreeMap::from([
        ("files", bundle.files.len()),
        ("policies", bundle.policies),
        ("templates", bundle.template_count()),
        ("grant links", bundle.links),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(name: &str, text: &str) -> Source {
        Source {
            name: name.into(),
            text: text.into(),
        }
    }

    fn problems(sources: &[Source]) -> Vec<String> {
        compile(sources, &[])
            .unwrap_err()
            .problems
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    #[test]
    fn problems_name_file_line_and_column() {
        let syntax = source(
            "a.cedar",
            "// first line\npermit (principal, action, resource)\nwhen { context.x == };\n",
        );
        let got = problems(&[syntax]);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("a.cedar:3:"), "{got:?}");

        let unknown_attribute = source(
            "b.cedar",
            "@id(\"ok\")\npermit (principal, action, resource);\n\n@id(\"bad\")\npermit (principal is User, action == Action::\"ssh_session\", resource)\n  when { principal.shoe_size > 3 };\n",
        );
        let got = problems(&[unknown_attribute]);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("b.cedar:6:10: "), "{got:?}");
        assert!(got[0].contains("shoe_size"), "{got:?}");

        let unknown_action = source(
            "c.cedar",
            "permit (principal, action == Action::\"fly\", resource);",
        );
        let got = problems(&[unknown_action]);
        assert!(got[0].starts_with("c.cedar:1:"), "{got:?}");
        assert!(got[0].contains("fly"), "{got:?}");
    }

    #[test]
    fn duplicate_ids_and_missing_templates_are_reported() {
        let one = source(
            "one.cedar",
            "@id(\"x\")\npermit (principal, action, resource);",
        );
        let two = source(
            "two.cedar",
            "\n@id(\"x\")\nforbid (principal, action, resource);",
        );
        assert_eq!(
            problems(&[one.clone(), two]),
            ["two.cedar:2:1: policy id `x` is already used at one.cedar:1"]
        );
        let link = Link {
            id: "grant:1".into(),
            template: "grant".into(),
            principal: uid(Kind::User, "a").unwrap(),
            resource: uid(Kind::Account, "root@db1").unwrap(),
        };
        let err = compile(&[one], &[link]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "<links>: `grant:1` links the template `grant`, which no policy file defines"
        );
    }

    #[test]
    fn idle_timeouts_are_read_checked_and_the_shortest_applies() {
        let text = "@id(\"long\")\n@idle_timeout(\"1h 30m\")\npermit (principal, action == Action::\"ssh_session\", resource);\n\n@id(\"short\")\n@idle_timeout(\"15m\")\npermit (principal, action == Action::\"ssh_session\", resource);\n\n@id(\"none\")\npermit (principal, action == Action::\"ssh_session\", resource);\n";
        let bundle = compile(&[source("idle.cedar", text)], &[]).unwrap();
        let ids = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            bundle.idle_timeout(&ids(&["long", "short", "none"])),
            Some((std::time::Duration::from_secs(900), "short".to_string()))
        );
        assert_eq!(
            bundle.idle_timeout(&ids(&["long"])),
            Some((std::time::Duration::from_secs(5400), "long".to_string()))
        );
        assert_eq!(bundle.idle_timeout(&ids(&["none"])), None);
        for (value, expected) in [
            ("soon", "expected a duration such as \"15m\""),
            ("2s", "an idle timeout is 10 s to 30 days"),
            ("400d", "an idle timeout is 10 s to 30 days"),
        ] {
            let bad = source(
                "bad.cedar",
                &format!(
                    "\n@id(\"b\")\n@idle_timeout(\"{value}\")\npermit (principal, action, resource);"
                ),
            );
            let got = problems(&[bad]);
            assert_eq!(got.len(), 1, "{got:?}");
            assert!(
                got[0].starts_with("bad.cedar:2:1: policy `b`: @idle_timeout(")
                    && got[0].contains(expected),
                "{value}: {got:?}"
            );
        }
    }

    #[test]
    fn unannotated_policies_get_file_and_ordinal_ids() {
        let text = "permit (principal, action == Action::\"ssh_shell\", resource);\n\nforbid (principal, action == Action::\"ssh_x11\", resource);\n";
        let bundle = compile(&[source("dir/site.cedar", text)], &[]).unwrap();
        assert_eq!(bundle.origin("site.cedar#1").unwrap().line, 1);
        assert_eq!(bundle.origin("site.cedar#2").unwrap().line, 3);
        assert_eq!(bundle.policy_count(), 2);
    }

    #[test]
    fn line_column_counts_characters() {
        assert_eq!(line_column("ab\ncdé\nf", 0), (1, 1));
        assert_eq!(line_column("ab\ncdé\nf", 3), (2, 1));
        assert_eq!(line_column("ab\ncdé\nf", 8), (3, 1));
    }
}
