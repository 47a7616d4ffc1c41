//! Nesting of user groups and the asset-group commands: the hierarchies policies see as
//! `principal in Group::"…"` and `resource in AssetGroup::"…"`.

use crate::admin::{AdminContext, Inputs, audit_change, insert_new, json, name, table, time_text};
use crate::cli::AssetGroupCommand;
use anyhow::{Result, anyhow, bail};
use gatehouse_core::time::Timestamp;
use gatehouse_core::{Asset, AssetGroup, Group, Name};
use gatehouse_store::{ASSET_GROUPS, ASSETS, GROUPS, StoreError, Txn};

/// Whether `ancestor` is `start` or reachable from it through `parents_of`.
fn reaches(
    start: &Name,
    ancestor: &Name,
    parents_of: &dyn Fn(&Name) -> Result<Vec<Name>, StoreError>,
) -> Result<bool> {
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
        queue.extend(parents_of(&n)?);
    }
    Ok(false)
}

fn group_parents<'a>(txn: &'a Txn<'_>) -> impl Fn(&Name) -> Result<Vec<Name>, StoreError> + 'a {
    move |n: &Name| {
        Ok(txn
            .get(&GROUPS, n.as_str())?
            .map(|g: Group| g.parents)
            .unwrap_or_default())
    }
}

fn asset_group_parents<'a>(
    txn: &'a Txn<'_>,
) -> impl Fn(&Name) -> Result<Vec<Name>, StoreError> + 'a {
    move |n: &Name| {
        Ok(txn
            .get(&ASSET_GROUPS, n.as_str())?
            .map(|g: AssetGroup| g.parents)
            .unwrap_or_default())
    }
}

/// `group nest` / `group unnest`.
pub fn nest_group(
    ctx: &AdminContext,
    group: &str,
    parent: &str,
    nest: bool,
    inputs: &Inputs,
) -> Result<String> {
    let parent_name = name("group name", parent)?;
    ctx.store.write(|txn| -> Result<()> {
        let mut record: Group = txn
            .get(&GROUPS, group)?
            .ok_or_else(|| anyhow!("group `{group}` does not exist"))?;
        if nest {
            if txn.get(&GROUPS, parent)?.is_none() {
                bail!("group `{parent}` does not exist");
            }
            if record.parents.contains(&parent_name) {
                bail!("group `{group}` is already in `{parent}`");
            }
            // `parent` must not already be inside `group`, or the nesting would be a cycle.
            if reaches(&parent_name, &record.name, &group_parents(txn))? {
                bail!("`{parent}` is already inside `{group}`; nesting would make a cycle");
            }
            record.parents.push(parent_name.clone());
        } else {
            if !record.parents.contains(&parent_name) {
                bail!("group `{group}` is not in `{parent}`");
            }
            record.parents.retain(|p| p != &parent_name);
        }
        txn.put(&GROUPS, group, &record)?;
        let verb = if nest { "nested" } else { "unnested" };
        audit_change(
            txn,
            &inputs.actor,
            format!("{verb} group `{group}` in `{parent}`"),
        )?;
        Ok(())
    })?;
    Ok(if nest {
        format!("group `{group}` is now in `{parent}`\n")
    } else {
        format!("group `{group}` is no longer in `{parent}`\n")
    })
}

/// Checks that every group named exists.
pub fn check_groups_exist(ctx: &AdminContext, groups: &[String], asset: bool) -> Result<Vec<Name>> {
    let mut names = Vec::new();
    for g in groups {
        let exists = if asset {
            ctx.store.get(&ASSET_GROUPS, g)?.is_some()
        } else {
            ctx.store.get(&GROUPS, g)?.is_some()
        };
        if !exists {
            let kind = if asset { "asset group" } else { "group" };
            bail!("{kind} `{g}` does not exist");
        }
        names.push(name("group name", g)?);
    }
    Ok(names)
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
        } => {
            let record = AssetGroup {
                name: name("asset group name", n)?,
                description: description.clone(),
                parents: check_groups_exist(ctx, parents, true)?,
                created: Timestamp::now(),
            };
            ctx.store.write(|txn| -> Result<()> {
                insert_new(
                    txn,
                    &ASSET_GROUPS,
                    n,
                    &record,
                    &format!("asset group `{n}`"),
                    &inputs.actor,
                )
            })?;
            Ok(format!("added asset group `{n}`\n"))
        }
        AssetGroupCommand::List(j) => {
            let groups: Vec<AssetGroup> = ctx.store.list(&ASSET_GROUPS)?;
            let assets: Vec<Asset> = ctx.store.list(&ASSETS)?;
            let members = |g: &AssetGroup| -> Vec<String> {
                assets
                    .iter()
                    .filter(|a| a.groups.contains(&g.name))
                    .map(|a| a.name.to_string())
                    .collect()
            };
            if j.json {
                let view: Vec<_> = groups
                    .iter()
                    .map(|g| {
                        serde_json::json!({
                            "name": g.name,
                            "description": g.description,
                            "parents": g.parents,
                            "assets": members(g),
                        })
                    })
                    .collect();
                return json(&view);
            }
            let rows = groups
                .iter()
                .map(|g| {
                    vec![
                        g.name.to_string(),
                        g.parents
                            .iter()
                            .map(|p| p.to_string())
                            .collect::<Vec<_>>()
                            .join(","),
                        members(g).join(","),
                        g.description.clone(),
                    ]
                })
                .collect::<Vec<_>>();
            Ok(table(&["NAME", "IN", "ASSETS", "DESCRIPTION"], &rows))
        }
        AssetGroupCommand::Show { name: n, json: j } => {
            let g: AssetGroup = ctx
                .store
                .get(&ASSET_GROUPS, n)?
                .ok_or_else(|| anyhow!("asset group `{n}` does not exist"))?;
            let assets: Vec<String> = ctx
                .store
                .list(&ASSETS)?
                .into_iter()
                .filter(|a: &Asset| a.groups.contains(&g.name))
                .map(|a| a.name.to_string())
                .collect();
            if j.json {
                return json(&serde_json::json!({
                    "name": g.name,
                    "description": g.description,
                    "parents": g.parents,
                    "assets": assets,
                }));
            }
            Ok(format!(
                "asset group  {}\ndescription  {}\nin           {}\nassets       {}\ncreated      {}\n",
                g.name,
                g.description,
                g.parents
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                assets.join(", "),
                time_text(g.created)
            ))
        }
        AssetGroupCommand::Remove { name: n } => {
            let group_name = name("asset group name", n)?;
            ctx.store.write(|txn| -> Result<()> {
                if !txn.delete(&ASSET_GROUPS, n)? {
                    bail!("asset group `{n}` does not exist");
                }
                for mut a in txn.list(&ASSETS)? {
                    if a.groups.contains(&group_name) {
                        a.groups.retain(|g| g != &group_name);
                        txn.put(&ASSETS, a.name.as_str(), &a)?;
                    }
                }
                for mut g in txn.list(&ASSET_GROUPS)? {
                    if g.parents.contains(&group_name) {
                        g.parents.retain(|p| p != &group_name);
                        txn.put(&ASSET_GROUPS, g.name.as_str(), &g)?;
                    }
                }
                audit_change(txn, &inputs.actor, format!("removed asset group `{n}`"))?;
                Ok(())
            })?;
            Ok(format!("removed asset group `{n}`\n"))
        }
        AssetGroupCommand::AddAsset { group, asset }
        | AssetGroupCommand::RemoveAsset { group, asset } => {
            let adding = matches!(command, AssetGroupCommand::AddAsset { .. });
            let group_name = name("asset group name", group)?;
            ctx.store.write(|txn| -> Result<()> {
                if txn.get(&ASSET_GROUPS, group)?.is_none() {
                    bail!("asset group `{group}` does not exist");
                }
                let mut record: Asset = txn
                    .get(&ASSETS, asset)?
                    .ok_or_else(|| anyhow!("asset `{asset}` does not exist"))?;
                let present = record.groups.contains(&group_name);
                match (adding, present) {
                    (true, true) => bail!("asset `{asset}` is already in `{group}`"),
                    (false, false) => bail!("asset `{asset}` is not in `{group}`"),
                    (true, false) => record.groups.push(group_name.clone()),
                    (false, true) => record.groups.retain(|g| g != &group_name),
                }
                txn.put(&ASSETS, asset, &record)?;
                let verb = if adding {
                    "added asset"
                } else {
                    "removed asset"
                };
                audit_change(
                    txn,
                    &inputs.actor,
                    format!("{verb} `{asset}` to/from asset group `{group}`"),
                )?;
                Ok(())
            })?;
            Ok(if adding {
                format!("asset `{asset}` is now in `{group}`\n")
            } else {
                format!("asset `{asset}` is no longer in `{group}`\n")
            })
        }
        AssetGroupCommand::Nest { group, parent } | AssetGroupCommand::Unnest { group, parent } => {
            let nest = matches!(command, AssetGroupCommand::Nest { .. });
            let parent_name = name("asset group name", parent)?;
            ctx.store.write(|txn| -> Result<()> {
                let mut record: AssetGroup = txn
                    .get(&ASSET_GROUPS, group)?
                    .ok_or_else(|| anyhow!("asset group `{group}` does not exist"))?;
                if nest {
                    if txn.get(&ASSET_GROUPS, parent)?.is_none() {
                        bail!("asset group `{parent}` does not exist");
                    }
                    if record.parents.contains(&parent_name) {
                        bail!("asset group `{group}` is already in `{parent}`");
                    }
                    if reaches(&parent_name, &record.name, &asset_group_parents(txn))? {
                        bail!("`{parent}` is already inside `{group}`; nesting would make a cycle");
                    }
                    record.parents.push(parent_name.clone());
                } else {
                    if !record.parents.contains(&parent_name) {
                        bail!("asset group `{group}` is not in `{parent}`");
                    }
                    record.parents.retain(|p| p != &parent_name);
                }
                txn.put(&ASSET_GROUPS, group, &record)?;
                let verb = if nest { "nested" } else { "unnested" };
                audit_change(
                    txn,
                    &inputs.actor,
                    format!("{verb} asset group `{group}` in `{parent}`"),
                )?;
                Ok(())
            })?;
            Ok(if nest {
                format!("asset group `{group}` is now in `{parent}`\n")
            } else {
                format!("asset group `{group}` is no longer in `{parent}`\n")
            })
        }
    }
}
