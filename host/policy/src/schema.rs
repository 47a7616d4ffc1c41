//! The embedded Cedar schema and base policy (`policies/` at the top of the repository), and the
//! entity type names the host builds.

use crate::PolicyError;
use cedar_policy::{EntityId, EntityTypeName, EntityUid, Schema};
use std::str::FromStr;
use std::sync::LazyLock;

/// `policies/gatehouse.cedarschema`: what every policy is validated against.
pub const SCHEMA_SOURCE: &str = include_str!("../../../policies/gatehouse.cedarschema");

/// `policies/base.cedar`: the policy file `gatehouse init` writes into a new data directory.
pub const BASE_POLICY: &str = include_str!("../../../policies/base.cedar");

/// The id of the template that grants made with `gatehouse grant add` link.
pub const GRANT_TEMPLATE: &str = "grant";

static SCHEMA: LazyLock<Result<Schema, String>> = LazyLock::new(|| {
    Schema::from_cedarschema_str(SCHEMA_SOURCE)
        .map(|(schema, _warnings)| schema)
        .map_err(|e| e.to_string())
});

/// The parsed schema.
pub fn schema() -> Result<&'static Schema, PolicyError> {
    SCHEMA
        .as_ref()
        .map_err(|e| PolicyError::Internal(format!("the embedded schema does not parse: {e}")))
}

/// The entity types the host builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    User,
    Group,
    Application,
    Asset,
    AssetGroup,
    Account,
    Gateway,
    Node,
    Session,
    AccessRequest,
    Action,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::User,
        Kind::Group,
        Kind::Application,
        Kind::Asset,
        Kind::AssetGroup,
        Kind::Account,
        Kind::Gateway,
        Kind::Node,
        Kind::Session,
        Kind::AccessRequest,
        Kind::Action,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::User => "User",
            Kind::Group => "Group",
            Kind::Application => "Application",
            Kind::Asset => "Asset",
            Kind::AssetGroup => "AssetGroup",
            Kind::Account => "Account",
            Kind::Gateway => "Gateway",
            Kind::Node => "Node",
            Kind::Session => "Session",
            Kind::AccessRequest => "AccessRequest",
            Kind::Action => "Action",
        }
    }
}

static TYPE_NAMES: LazyLock<Vec<Option<EntityTypeName>>> = LazyLock::new(|| {
    Kind::ALL
        .iter()
        .map(|k| EntityTypeName::from_str(k.as_str()).ok())
        .collect()
});

/// The uid of an entity of `kind` with `id`.
pub fn uid(kind: Kind, id: &str) -> Result<EntityUid, PolicyError> {
    let position = Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
    let name = TYPE_NAMES
        .get(position)
        .and_then(|n| n.clone())
        .ok_or_else(|| PolicyError::Internal(format!("bad entity type {}", kind.as_str())))?;
    Ok(EntityUid::from_type_name_and_id(name, EntityId::new(id)))
}

/// `Account::"<account>@<asset>"`, the form users type.
pub fn account_id(asset: &str, account: &str) -> String {
    format!("{account}@{asset}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_schema_parses_and_names_every_type() {
        let schema = schema().unwrap();
        let types: Vec<String> = schema.entity_types().map(|t| t.to_string()).collect();
        for kind in Kind::ALL {
            if kind != Kind::Action {
                assert!(types.contains(&kind.as_str().to_string()), "{types:?}");
            }
        }
        assert_eq!(
            uid(Kind::Account, "root@db1").unwrap().to_string(),
            r#"Account::"root@db1""#
        );
    }
}
