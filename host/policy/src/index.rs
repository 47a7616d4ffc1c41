//! Policy slicing: Cedar evaluates every policy it is given, so with a thousand policies a decision
//! would cost a thousand evaluations. The index files each policy under the entity its scope names
//! (principal first, else resource) and, per request, picks only the policies whose scope can match
//! the request's principal, action and resource (given their ancestors). Scope constraints are
//! conjunctive, so a policy left out could never have been satisfied: the decision is the same as
//! over the whole set (a test compares both on every shipped scenario).
//!
//! Within what the scope lets through, each policy's [guard](crate::guard) (the leading part of
//! its condition that the index can read) is checked against the request, and a policy whose
//! guard is certainly false is left out as well.

use crate::PolicyError;
use crate::guard::{self, Facts, Guard, Paths};
use cedar_policy::{
    ActionConstraint, EntityTypeName, EntityUid, Policy, PolicyId, PolicySet, PrincipalConstraint,
    ResourceConstraint, Schema, SlotId, Template,
};
use std::collections::HashMap;

/// The index's maps and sets hash with foldhash (seeded per process): every decision hashes a
/// few entity ids, and SipHash was a visible share of a decision's time.
pub(crate) type FastSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// What a scope clause requires of an entity.
#[derive(Debug, Clone)]
enum Scope {
    Any,
    Is(EntityTypeName),
    /// `==` or `in`: the entity is `uid` or a descendant of it (`==` is then checked by Cedar).
    In(EntityUid),
    IsIn(EntityTypeName, EntityUid),
}

impl Scope {
    fn matches(&self, ty: &EntityTypeName, self_and_ancestors: &FastSet<EntityUid>) -> bool {
        match self {
            Scope::Any => true,
            Scope::Is(t) => t == ty,
            Scope::In(uid) => self_and_ancestors.contains(uid),
            Scope::IsIn(t, uid) => t == ty && self_and_ancestors.contains(uid),
        }
    }

    fn key(&self) -> Option<&EntityUid> {
        match self {
            Scope::In(uid) | Scope::IsIn(_, uid) => Some(uid),
            Scope::Any | Scope::Is(_) => None,
        }
    }
}

#[derive(Debug, Clone)]
enum Body {
    Static(Box<Policy>),
    Link {
        template: PolicyId,
        id: PolicyId,
        slots: HashMap<SlotId, EntityUid>,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    body: Body,
    principal: Scope,
    resource: Scope,
    /// The concrete actions the policy can apply to; `None` for any.
    actions: Option<FastSet<EntityUid>>,
    guard: Option<Guard>,
}

/// The request's side of the match: each entity's type and itself with its ancestors.
pub(crate) struct Subject<'a> {
    pub ty: &'a EntityTypeName,
    pub self_and_ancestors: &'a FastSet<EntityUid>,
}

/// Slices built before, by the positions they hold. Requests repeat (the same user and
/// account, channel after channel), so most slices are built once. Cleared when full.
const SLICE_CACHE_LIMIT: usize = 4_096;

#[derive(Debug, Default)]
pub(crate) struct Index {
    slices: std::sync::Mutex<FastMap<Vec<u32>, std::sync::Arc<PolicySet>>>,
    entries: Vec<Entry>,
    by_principal: FastMap<EntityUid, Vec<usize>>,
    by_resource: FastMap<EntityUid, Vec<usize>>,
    global: Vec<usize>,
    templates: HashMap<PolicyId, Template>,
    paths: Paths,
}

impl Index {
    pub(crate) fn build(set: &PolicySet, schema: &Schema) -> Result<Self, PolicyError> {
        // Each concrete action with the action groups it belongs to.
        let mut action_groups: HashMap<EntityUid, FastSet<EntityUid>> = HashMap::new();
        let action_entities = schema
            .action_entities()
            .map_err(|e| PolicyError::Internal(e.to_string()))?;
        for action in schema.actions() {
            let ancestors: FastSet<EntityUid> = action_entities
                .ancestors(action)
                .map(|a| a.cloned().collect())
                .unwrap_or_default();
            action_groups.insert(action.clone(), ancestors);
        }
        let expand = |constraint: ActionConstraint| -> Option<FastSet<EntityUid>> {
            let named: Vec<EntityUid> = match constraint {
                ActionConstraint::Any => return None,
                ActionConstraint::Eq(a) => vec![a],
                ActionConstraint::In(list) => list,
            };
            Some(
                action_groups
                    .iter()
                    .filter(|(action, groups)| {
                        named.iter().any(|n| n == *action || groups.contains(n))
                    })
                    .map(|(action, _)| action.clone())
                    .collect(),
            )
        };

        let mut index = Index {
            templates: set
                .templates()
                .map(|t| (t.id().clone(), t.clone()))
                .collect(),
            ..Index::default()
        };
        for policy in set.policies() {
            let principal = match policy.principal_constraint() {
                PrincipalConstraint::Any => Scope::Any,
                PrincipalConstraint::Is(t) => Scope::Is(t),
                PrincipalConstraint::In(u) | PrincipalConstraint::Eq(u) => Scope::In(u),
                PrincipalConstraint::IsIn(t, u) => Scope::IsIn(t, u),
            };
            let resource = match policy.resource_constraint() {
                ResourceConstraint::Any => Scope::Any,
                ResourceConstraint::Is(t) => Scope::Is(t),
                ResourceConstraint::In(u) | ResourceConstraint::Eq(u) => Scope::In(u),
                ResourceConstraint::IsIn(t, u) => Scope::IsIn(t, u),
            };
            let body = match (policy.template_id(), policy.template_links()) {
                (Some(template), Some(slots)) => Body::Link {
                    template: template.clone(),
                    id: policy.id().clone(),
                    slots,
                },
                _ => Body::Static(Box::new(policy.clone())),
            };
            let entry = Entry {
                body,
                principal,
                resource,
                actions: expand(policy.action_constraint()),
                guard: guard::of_policy(policy, &mut index.paths),
            };
            let position = index.entries.len();
            if let Some(uid) = entry.principal.key() {
                index
                    .by_principal
                    .entry(uid.clone())
                    .or_default()
                    .push(position);
            } else if let Some(uid) = entry.resource.key() {
                index
                    .by_resource
                    .entry(uid.clone())
                    .or_default()
                    .push(position);
            } else {
                index.global.push(position);
            }
            index.entries.push(entry);
        }
        Ok(index)
    }

    /// The policies that can apply to this principal, action and resource, and whose guards
    /// the request does not certainly fail, as a policy set.
    pub(crate) fn slice(
        &self,
        principal: &Subject<'_>,
        action: &EntityUid,
        resource: &Subject<'_>,
        facts: &mut Facts<'_>,
    ) -> Result<std::sync::Arc<PolicySet>, PolicyError> {
        let by_principal = principal
            .self_and_ancestors
            .iter()
            .filter_map(|uid| self.by_principal.get(uid))
            .flatten();
        let by_resource = resource
            .self_and_ancestors
            .iter()
            .filter_map(|uid| self.by_resource.get(uid))
            .flatten();
        let mut key: Vec<u32> = self
            .global
            .iter()
            .chain(by_principal)
            .chain(by_resource)
            .copied()
            .filter(|position| {
                self.entries.get(*position).is_some_and(|entry| {
                    entry
                        .principal
                        .matches(principal.ty, principal.self_and_ancestors)
                        && entry
                            .resource
                            .matches(resource.ty, resource.self_and_ancestors)
                        && entry.actions.as_ref().is_none_or(|a| a.contains(action))
                        && entry
                            .guard
                            .as_ref()
                            .is_none_or(|g| facts.eval(&self.paths, g) != Some(false))
                })
            })
            .filter_map(|p| u32::try_from(p).ok())
            .collect();
        key.sort_unstable();
        if let Some(set) = self.slices.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(set);
        }
        let mut set = PolicySet::new();
        let mut templates_added: Vec<&PolicyId> = Vec::new();
        for position in &key {
            let Some(entry) = self.entries.get(*position as usize) else {
                continue;
            };
            let added = match &entry.body {
                Body::Static(policy) => set.add(policy.as_ref().clone()),
                Body::Link {
                    template,
                    id,
                    slots,
                } => {
                    if !templates_added.contains(&template) {
                        if let Some(t) = self.templates.get(template) {
                            set.add_template(t.clone())
                                .map_err(|e| PolicyError::Internal(e.to_string()))?;
                        }
                        templates_added.push(template);
                    }
                    set.link(template.clone(), id.clone(), slots.clone())
                }
            };
            added.map_err(|e| PolicyError::Internal(e.to_string()))?;
        }
        let set = std::sync::Arc::new(set);
        if let Ok(mut cache) = self.slices.lock() {
            if cache.len() >= SLICE_CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(key, set.clone());
        }
        Ok(set)
    }
}
