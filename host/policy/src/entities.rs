//! Building Cedar entities from the store for one request: the principal with its (nested)
//! groups, the account with its asset and (nested) asset groups, the gateway, the session with
//! its `key=value` pairs as tags, and the access request in play. Only what the request touches is
//! built, so the cost does not grow with the size of the store.

use crate::PolicyError;
use crate::schema::{Kind, account_id, schema, uid};
use cedar_policy::{Entities, Entity, EntityUid, RestrictedExpression};
use gatehouse_core::{Account, Asset, AssetGroup, Group, User};
use gatehouse_store::{
    ACCOUNTS, ASSET_GROUPS, ASSETS, GROUPS, ReadTxn, StoreError, USERS, account_key,
};
use std::collections::{HashMap, HashSet};

/// At most this many groups (user or asset) are followed for one entity; a deeper or cyclic
/// nesting stops there.
pub const MAX_GROUPS: usize = 1_000;

/// Where entities come from: the store, or an in-memory directory in tests and benchmarks.
pub trait Directory {
    fn user(&self, name: &str) -> Result<Option<User>, StoreError>;
    fn group(&self, name: &str) -> Result<Option<Group>, StoreError>;
    fn asset(&self, name: &str) -> Result<Option<Asset>, StoreError>;
    fn asset_group(&self, name: &str) -> Result<Option<AssetGroup>, StoreError>;
    fn account(&self, asset: &str, account: &str) -> Result<Option<Account>, StoreError>;
}

impl Directory for ReadTxn<'_> {
    fn user(&self, name: &str) -> Result<Option<User>, StoreError> {
        self.get(&USERS, name)
    }
    fn group(&self, name: &str) -> Result<Option<Group>, StoreError> {
        self.get(&GROUPS, name)
    }
    fn asset(&self, name: &str) -> Result<Option<Asset>, StoreError> {
        self.get(&ASSETS, name)
    }
    fn asset_group(&self, name: &str) -> Result<Option<AssetGroup>, StoreError> {
        self.get(&ASSET_GROUPS, name)
    }
    fn account(&self, asset: &str, account: &str) -> Result<Option<Account>, StoreError> {
        self.get(&ACCOUNTS, &account_key(asset, account))
    }
}

/// An in-memory directory.
#[derive(Debug, Default, Clone)]
pub struct MemoryDirectory {
    pub users: HashMap<String, User>,
    pub groups: HashMap<String, Group>,
    pub assets: HashMap<String, Asset>,
    pub asset_groups: HashMap<String, AssetGroup>,
    pub accounts: HashMap<String, Account>,
}

impl Directory for MemoryDirectory {
    fn user(&self, name: &str) -> Result<Option<User>, StoreError> {
        Ok(self.users.get(name).cloned())
    }
    fn group(&self, name: &str) -> Result<Option<Group>, StoreError> {
        Ok(self.groups.get(name).cloned())
    }
    fn asset(&self, name: &str) -> Result<Option<Asset>, StoreError> {
        Ok(self.assets.get(name).cloned())
    }
    fn asset_group(&self, name: &str) -> Result<Option<AssetGroup>, StoreError> {
        Ok(self.asset_groups.get(name).cloned())
    }
    fn account(&self, asset: &str, account: &str) -> Result<Option<Account>, StoreError> {
        Ok(self.accounts.get(&account_key(asset, account)).cloned())
    }
}

/// An access request as policies see it.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestFacts {
    pub id: String,
    pub requester: String,
    pub asset: String,
    pub account: String,
    /// "session", "password" or "private_key"
    pub access: String,
    pub reason: String,
    pub ticket: String,
    pub ticket_verified: bool,
    pub duration_minutes: i64,
    pub emergency: bool,
}

impl RequestFacts {
    /// What policies see of a stored access request.
    pub fn of(request: &gatehouse_core::AccessRequest) -> Self {
        RequestFacts {
            id: request.id.clone(),
            requester: request.requester.to_string(),
            asset: request.asset.to_string(),
            account: request.account.to_string(),
            access: request.access.as_str().to_string(),
            reason: request.reason.clone(),
            ticket: request.ticket.clone(),
            ticket_verified: request.ticket_verified,
            duration_minutes: i64::from(request.duration_minutes),
            emergency: request.emergency,
        }
    }
}

/// Entities being gathered for one request.
#[derive(Default)]
pub struct EntityBuilder {
    list: Vec<Entity>,
    seen: HashSet<EntityUid>,
}

fn s(v: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(v.to_string())
}

impl EntityBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    fn push(
        &mut self,
        uid: EntityUid,
        attrs: Vec<(&str, RestrictedExpression)>,
        parents: HashSet<EntityUid>,
    ) -> Result<(), PolicyError> {
        if !self.seen.insert(uid.clone()) {
            return Ok(());
        }
        let attrs = attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let entity = Entity::new(uid, attrs, parents)
            .map_err(|e| PolicyError::Internal(format!("entity: {e}")))?;
        self.list.push(entity);
        Ok(())
    }

    /// A user and every group it is in, directly or through nesting.
    pub fn user(&mut self, dir: &impl Directory, user: &User) -> Result<EntityUid, PolicyError> {
        let me = uid(Kind::User, user.name.as_str())?;
        let parents = user
            .groups
            .iter()
            .map(|g| uid(Kind::Group, g.as_str()))
            .collect::<Result<HashSet<_>, _>>()?;
        self.push(me.clone(), vec![("name", s(user.name.as_str()))], parents)?;
        let start: Vec<String> = user.groups.iter().map(|g| g.to_string()).collect();
        self.groups(start, Kind::Group, |name| {
            Ok(dir
                .group(name)?
                .map(|g| g.parents.iter().map(|p| p.to_string()).collect()))
        })?;
        Ok(me)
    }

    /// An application (A2A caller) in its groups.
    pub fn application(
        &mut self,
        dir: &impl Directory,
        name: &str,
        groups: &[String],
    ) -> Result<EntityUid, PolicyError> {
        let me = uid(Kind::Application, name)?;
        let parents = groups
            .iter()
            .map(|g| uid(Kind::Group, g))
            .collect::<Result<HashSet<_>, _>>()?;
        self.push(me.clone(), vec![("name", s(name))], parents)?;
        self.groups(groups.to_vec(), Kind::Group, |name| {
            Ok(dir
                .group(name)?
                .map(|g| g.parents.iter().map(|p| p.to_string()).collect()))
        })?;
        Ok(me)
    }

    /// An account with its asset and every asset group the asset is in.
    pub fn account(
        &mut self,
        dir: &impl Directory,
        asset: &Asset,
        account: &Account,
    ) -> Result<EntityUid, PolicyError> {
        let asset_uid = self.asset(dir, asset)?;
        let me = uid(
            Kind::Account,
            &account_id(asset.name.as_str(), account.name.as_str()),
        )?;
        self.push(
            me.clone(),
            vec![
                ("name", s(account.name.as_str())),
                (
                    "asset",
                    RestrictedExpression::new_entity_uid(asset_uid.clone()),
                ),
            ],
            HashSet::from([asset_uid]),
        )?;
        Ok(me)
    }

    fn asset(&mut self, dir: &impl Directory, asset: &Asset) -> Result<EntityUid, PolicyError> {
        let me = uid(Kind::Asset, asset.name.as_str())?;
        let parents = asset
            .groups
            .iter()
            .map(|g| uid(Kind::AssetGroup, g.as_str()))
            .collect::<Result<HashSet<_>, _>>()?;
        self.push(
            me.clone(),
            vec![
                ("name", s(asset.name.as_str())),
                ("address", s(&asset.address)),
                (
                    "port",
                    RestrictedExpression::new_long(i64::from(asset.port)),
                ),
            ],
            parents,
        )?;
        let start: Vec<String> = asset.groups.iter().map(|g| g.to_string()).collect();
        self.groups(start, Kind::AssetGroup, |name| {
            Ok(dir
                .asset_group(name)?
                .map(|g| g.parents.iter().map(|p| p.to_string()).collect()))
        })?;
        Ok(me)
    }

    /// Adds groups of `kind` breadth-first, following `parents_of` (None: no such record, kept
    /// as a group with no parents).
    fn groups(
        &mut self,
        start: Vec<String>,
        kind: Kind,
        parents_of: impl Fn(&str) -> Result<Option<Vec<String>>, StoreError>,
    ) -> Result<(), PolicyError> {
        let mut queue = start;
        let mut visited = 0;
        while let Some(name) = queue.pop() {
            let group_uid = uid(kind, &name)?;
            if self.seen.contains(&group_uid) {
                continue;
            }
            visited += 1;
            if visited > MAX_GROUPS {
                break;
            }
            let parents = parents_of(&name)?.unwrap_or_default();
            let parent_uids = parents
                .iter()
                .map(|p| uid(kind, p))
                .collect::<Result<HashSet<_>, _>>()?;
            self.push(group_uid, vec![("name", s(&name))], parent_uids)?;
            queue.extend(parents);
        }
        Ok(())
    }

    /// The gateway answering.
    pub fn gateway(&mut self, name: &str) -> Result<EntityUid, PolicyError> {
        let me = uid(Kind::Gateway, name)?;
        self.push(me.clone(), vec![("name", s(name))], HashSet::new())?;
        Ok(me)
    }

    /// The session node a session runs on, with the networks it manages.
    pub fn node(&mut self, id: &str, networks: &[String]) -> Result<EntityUid, PolicyError> {
        let me = uid(Kind::Node, id)?;
        if self.seen.insert(me.clone()) {
            let attrs = HashMap::from([
                ("name".to_string(), s(id)),
                (
                    "networks".to_string(),
                    RestrictedExpression::new_set(networks.iter().map(|n| s(n))),
                ),
            ]);
            let entity = Entity::new(me.clone(), attrs, HashSet::new())
                .map_err(|e| PolicyError::Internal(format!("entity: {e}")))?;
            self.list.push(entity);
        }
        Ok(me)
    }

    /// The session, tagged with the login's `key=value` pairs.
    pub fn session(
        &mut self,
        id: &str,
        pairs: &[(String, String)],
    ) -> Result<EntityUid, PolicyError> {
        let me = uid(Kind::Session, id)?;
        if self.seen.insert(me.clone()) {
            let attrs = HashMap::from([("id".to_string(), s(id))]);
            let tags: HashMap<String, RestrictedExpression> =
                pairs.iter().map(|(k, v)| (k.clone(), s(v))).collect();
            let entity = Entity::new_with_tags(me.clone(), attrs, HashSet::new(), tags)
                .map_err(|e| PolicyError::Internal(format!("entity: {e}")))?;
            self.list.push(entity);
        }
        Ok(me)
    }

    /// An access request (the requester and account must be added too).
    pub fn request(&mut self, request: &RequestFacts) -> Result<EntityUid, PolicyError> {
        let me = uid(Kind::AccessRequest, &request.id)?;
        let requester = uid(Kind::User, &request.requester)?;
        let account = uid(Kind::Account, &account_id(&request.asset, &request.account))?;
        self.push(
            me.clone(),
            vec![
                ("requester", RestrictedExpression::new_entity_uid(requester)),
                ("account", RestrictedExpression::new_entity_uid(account)),
                ("access", s(&request.access)),
                ("reason", s(&request.reason)),
                ("ticket", s(&request.ticket)),
                (
                    "ticket_verified",
                    RestrictedExpression::new_bool(request.ticket_verified),
                ),
                (
                    "duration_minutes",
                    RestrictedExpression::new_long(request.duration_minutes),
                ),
                (
                    "emergency",
                    RestrictedExpression::new_bool(request.emergency),
                ),
            ],
            HashSet::new(),
        )?;
        Ok(me)
    }

    /// Validates against the schema and computes ancestors.
    pub fn build(self) -> Result<Entities, PolicyError> {
        Entities::from_entities(self.list, Some(schema()?))
            .map_err(|e| PolicyError::Internal(format!("entities: {e}")))
    }
}
