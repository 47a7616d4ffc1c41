//! Nesting of user groups and the asset-group commands: the hierarchies policies see as
//! `principal in Group::"…"` and `resource in AssetGroup::"…"`.
//!
//! User groups and asset groups are one idea twice: a named group, nested in groups of its own
//! kind, with members of another kind. [`GroupKind`] names what differs; the commands they share
//! (add, list, show, nest, leaving on removal) are written once over it.

use crate::admin::{
    AdminContext, Inputs, existing, insert_new, json, json_or_table, name, names_text, time_text,
    write_audited,
};
use crate::cli::{AssetGroupCommand, JsonFlag};
use anyhow::{Result, bail};
use gatehouse_core::time::Timestamp;
use gatehouse_core::{Asset, AssetGroup, Group, Name, User};
use gatehouse_store::{ASSET_GROUPS, ASSETS, GROUPS, Table, Txn, USERS};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// A record that lists the groups it is in: users and assets their groups, groups and asset
/// groups their parents.
pub(crate) trait InGroups: Serialize + DeserializeOwned {
    const TABLE: Table<Self>;
    fn name(&self) -> &Name;
    fn groups(&self) -> &[Name];
    fn groups_mut(&mut self) -> &mut Vec<Name>;
}

/// Implements [`InGroups`] for a record kept in `$table` whose `$list` field names its groups.
macro_rules! in_groups {
    ($record:ty, $table:expr, $list:ident) => {
        impl InGroups for $record {
            const TABLE: Table<Self> = $table;
            fn name(&self) -> &Name {
                &self.name
            }
            fn groups(&self) -> &[Name] {
                &self.$list
            }
            fn groups_mut(&mut self) -> &mut Vec<Name> {
                &mut self.$list
            }
        }
    };
}

in_groups!(User, USERS, groups);
in_groups!(Asset, ASSETS, groups);
in_groups!(Group, GROUPS, parents);
in_groups!(AssetGroup, ASSET_GROUPS, parents);

/// A kind of group: user groups hold users, asset groups hold assets.
pub(crate) trait GroupKind: InGroups {
    /// How messages name the kind: `group`, `asset group`.
    const KIND: &'static str;
    /// What listings call its members: `members`, `assets`.
    const MEMBERS: &'static str;
    type Member: InGroups;
    fn new(name: Name, description: String, parents: Vec<Name>) -> Self;
    fn description(&self) -> &str;
}

/// Implements [`GroupKind`] for `$group`, named `$kind`, whose members are `$member` records.
macro_rules! group_kind {
    ($group:ident, $kind:literal, $members:literal, $member:ty) => {
        impl GroupKind for $group {
            const KIND: &'static str = $kind;
            const MEMBERS: &'static str = $members;
            type Member = $member;
            fn new(name: Name, description: String, parents: Vec<Name>) -> Self {
                $group {
                    name,
                    description,
                    parents,
                    created: Timestamp::now(),
                }
            }
            fn description(&self) -> &str {
                &self.description
            }
        }
    };
}

group_kind!(Group, "group", "members", User);
group_kind!(AssetGroup, "asset group", "assets", Asset);

/// Whether `ancestor` is `start` or reachable from it through the groups of `H` it is in.
fn reaches<H: InGroups>(txn: &Txn<'_>, start: &Name, ancestor: &Name) -> Result<bool> {
    let mut queue = vec![start.clone()];
    let mut seen: Vec<Name> = Vec::new();
    while let Some(n) = queue.pop() {
        if &n == ancestor {
            return Ok(true);
        }
        if seen.contains(&n) || seen.len() > 10_000 {
            continue;
        }
        seen.push(n.clone());
        if let Some(group) = txn.get(&H::TABLE, n.as_str())? {
            queue.extend_from_slice(group.groups());
        }
    }
    Ok(false)
}

/// `group nest` / `group unnest` and `asset-group nest` / `asset-group unnest`.
pub(crate) fn nest<H: GroupKind>(
    ctx: &AdminContext,
    group: &str,
    parent: &str,
    nest: bool,
    inputs: &Inputs,
) -> Result<String> {
    let kind = H::KIND;
    let parent_name = name(&format!("{kind} name"), parent)?;
    let verb = if nest { "nested" } else { "unnested" };
    let detail = format!("{verb} {kind} `{group}` in `{parent}`");
    write_audited(ctx, &inputs.actor, &detail, |txn| {
        let mut record: H = existing(txn.get(&H::TABLE, group)?, kind, group)?;
        if nest {
            if txn.get(&H::TABLE, parent)?.is_none() {
                bail!("{kind} `{parent}` does not exist");
            }
            if record.groups().contains(&parent_name) {
                bail!("{kind} `{group}` is already in `{parent}`");
            }
            // `parent` must not already be inside `group`, or the nesting would be a cycle.
            if reaches::<H>(txn, &parent_name, record.name())? {
                bail!("`{parent}` is already inside `{group}`; nesting would make a cycle");
            }
            record.groups_mut().push(parent_name.clone());
        } else {
            if !record.groups().contains(&parent_name) {
                bail!("{kind} `{group}` is not in `{parent}`");
            }
            record.groups_mut().retain(|p| p != &parent_name);
        }
        txn.put(&H::TABLE, group, &record)?;
        Ok(())
    })?;
    Ok(if nest {
        format!("{kind} `{group}` is now in `{parent}`\n")
    } else {
        format!("{kind} `{group}` is no longer in `{parent}`\n")
    })
}

/// Checks that every group named exists.
pub(crate) fn check_groups_exist<H: GroupKind>(
    ctx: &AdminContext,
    groups: &[String],
) -> Result<Vec<Name>> {
    let mut names = Vec::new();
    for g in groups {
        if ctx.store.get(&H::TABLE, g)?.is_none() {
            bail!("{} `{g}` does not exist", H::KIND);
        }
        names.push(name("group name", g)?);
    }
    Ok(names)
}

/// `add`: a new group in existing parents.
pub(crate) fn add<H: GroupKind>(
    ctx: &AdminContext,
    n: &str,
    description: &str,
    parents: &[String],
    inputs: &Inputs,
) -> Result<String> {
    let kind = H::KIND;
    let record = H::new(
        name(&format!("{kind} name"), n)?,
        description.to_string(),
        check_groups_exist::<H>(ctx, parents)?,
    );
    ctx.store.write(|txn| {
        insert_new(
            txn,
            &H::TABLE,
            n,
            &record,
            &format!("{kind} `{n}`"),
            &inputs.actor,
        )
    })?;
    Ok(format!("added {kind} `{n}`\n"))
}

/// The names of the members of `group` among `members`.
fn members_of<H: GroupKind>(group: &H, members: &[H::Member]) -> Vec<String> {
    members
        .iter()
        .filter(|m| m.groups().contains(group.name()))
        .map(|m| m.name().to_string())
        .collect()
}

fn group_view<H: GroupKind>(group: &H, members: &[String]) -> serde_json::Value {
    serde_json::json!({
        "name": group.name(),
        "description": group.description(),
        "parents": group.groups(),
        (H::MEMBERS): members,
    })
}

/// `list`: the groups with their parents and members.
pub(crate) fn list<H: GroupKind>(ctx: &AdminContext, j: &JsonFlag) -> Result<String> {
    let groups: Vec<H> = ctx.store.list(&H::TABLE)?;
    let members: Vec<H::Member> = ctx.store.list(&H::Member::TABLE)?;
    json_or_table(
        j,
        &groups,
        |g| group_view(g, &members_of(g, &members)),
        &["NAME", "IN", &H::MEMBERS.to_uppercase(), "DESCRIPTION"],
        |g| {
            vec![
                g.name().to_string(),
                names_text(g.groups(), ","),
                members_of(g, &members).join(","),
                g.description().to_string(),
            ]
        },
    )
}

/// `show`: one group with its members, as JSON or as `text` writes it.
pub(crate) fn show<H: GroupKind>(
    ctx: &AdminContext,
    n: &str,
    j: &JsonFlag,
    text: impl FnOnce(&H, &[String]) -> String,
) -> Result<String> {
    let group: H = existing(ctx.store.get(&H::TABLE, n)?, H::KIND, n)?;
    let members = members_of(&group, &ctx.store.list(&H::Member::TABLE)?);
    if j.json {
        return json(&group_view(&group, &members));
    }
    Ok(text(&group, &members))
}

/// Takes the removed group `group` out of its members and out of the groups nested in it.
pub(crate) fn leave<H: GroupKind>(txn: &mut Txn<'_>, group: &Name) -> Result<()> {
    forget::<H::Member>(txn, group)?;
    forget::<H>(txn, group)
}

fn forget<T: InGroups>(txn: &mut Txn<'_>, group: &Name) -> Result<()> {
    for mut record in txn.list(&T::TABLE)? {
        if record.groups().contains(group) {
            record.groups_mut().retain(|g| g != group);
            txn.put(&T::TABLE, record.name().as_str(), &record)?;
        }
    }
    Ok(())
}

pub fn asset_group(
    ctx: &AdminContext,
    command: &AssetGroupCommand,
    inputs: &Inputs,
) -> Result<String> {
    match command {
        AssetGroupCommand::Add {
            name: n,
            description,
            parents,
        } => add::<AssetGroup>(ctx, n, description, parents, inputs),
        AssetGroupCommand::List(j) => list::<AssetGroup>(ctx, j),
        AssetGroupCommand::Show { name: n, json: j } => {
            show(ctx, n, j, |g: &AssetGroup, assets| {
                format!(
                    "asset group  {}\ndescription  {}\nin           {}\nassets       {}\ncreated      {}\n",
                    g.name,
                    g.description,
                    names_text(&g.parents, ", "),
                    assets.join(", "),
                    time_text(g.created)
                )
            })
        }
        AssetGroupCommand::Remove { name: n } => {
            let group_name = name("asset group name", n)?;
            let done = format!("removed asset group `{n}`");
            write_audited(ctx, &inputs.actor, &done, |txn| {
                if !txn.delete(&ASSET_GROUPS, n)? {
                    bail!("asset group `{n}` does not exist");
                }
                leave::<AssetGroup>(txn, &group_name)
            })?;
            Ok(format!("{done}\n"))
        }
        AssetGroupCommand::AddAsset { group, asset }
        | AssetGroupCommand::RemoveAsset { group, asset } => {
            let adding = matches!(command, AssetGroupCommand::AddAsset { .. });
            let group_name = name("asset group name", group)?;
            let verb = if adding {
                "added asset"
            } else {
                "removed asset"
            };
            let detail = format!("{verb} `{asset}` to/from asset group `{group}`");
            write_audited(ctx, &inputs.actor, &detail, |txn| {
                if txn.get(&ASSET_GROUPS, group)?.is_none() {
                    bail!("asset group `{group}` does not exist");
                }
                let mut record: Asset = existing(txn.get(&ASSETS, asset)?, "asset", asset)?;
                let present = record.groups.contains(&group_name);
                match (adding, present) {
                    (true, true) => bail!("asset `{asset}` is already in `{group}`"),
                    (false, false) => bail!("asset `{asset}` is not in `{group}`"),
                    (true, false) => record.groups.push(group_name.clone()),
                    (false, true) => record.groups.retain(|g| g != &group_name),
                }
                txn.put(&ASSETS, asset, &record)?;
                Ok(())
            })?;
            Ok(if adding {
                format!("asset `{asset}` is now in `{group}`\n")
            } else {
                format!("asset `{asset}` is no longer in `{group}`\n")
            })
        }
        AssetGroupCommand::Nest { group, parent } | AssetGroupCommand::Unnest { group, parent } => {
            let nesting = matches!(command, AssetGroupCommand::Nest { .. });
            nest::<AssetGroup>(ctx, group, parent, nesting, inputs)
        }
    }
}
