//! The cluster over the API: the session nodes joined to this control node and the networks
//! they manage. Seeing them is `view_cluster`, changing them `manage_cluster`: Cedar decisions,
//! audited, refused by default (docs/cluster.md). The second DELETE of a node is the hard delete.

use crate::ApiState;
use crate::auth::Person;
use crate::error::{ApiError, ErrorBody};
use crate::routes::{JsonBody, QueryParams};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gatehouse_cluster::control::{self, Deleted, NodeAdminError, NodeEdit};
use gatehouse_core::time::Timestamp;
use gatehouse_core::{ManagedNetwork, NodeStatus};
use gatehouse_store::NETWORKS;
use gatehouse_workflow::AdminAction;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

fn time_text(t: Timestamp) -> String {
    humantime::format_rfc3339_seconds(t.to_system_time()).to_string()
}

impl From<NodeAdminError> for ApiError {
    fn from(e: NodeAdminError) -> Self {
        let message = e.to_string();
        match e {
            NodeAdminError::UnknownNode(_) | NodeAdminError::UnknownNetwork(_) => {
                ApiError::not_found(message)
            }
            NodeAdminError::BadNetwork(_) | NodeAdminError::TokenTooLong(_) => {
                ApiError::bad_request(message)
            }
            NodeAdminError::NodeRemoved(_) | NodeAdminError::NetworkTaken { .. } => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
            }
            NodeAdminError::Store(e) => {
                tracing::error!(error = %e, "cluster API request failed");
                ApiError::internal()
            }
        }
    }
}

fn store_error(e: gatehouse_store::StoreError) -> ApiError {
    NodeAdminError::Store(e).into()
}

/// A session node.
#[derive(Serialize, ToSchema)]
pub struct NodeView {
    pub id: String,
    pub hostname: String,
    /// Where users reach the node.
    pub address: String,
    /// Launch strings name the node by its host name (else by its address).
    pub use_hostname: bool,
    pub description: String,
    /// The networks the node manages (CIDR).
    pub networks: Vec<String>,
    /// `up`, `unavailable`, `unknown` (joined, not heard from since), `disconnected` (removed).
    pub status: String,
    pub last_seen: Option<String>,
    pub joined: String,
    /// When it was removed (soft delete).
    pub deleted: Option<String>,
    /// The node's certificate (`SHA256:...`).
    pub thumbprint: String,
    pub version: String,
    pub ssh_port: Option<u16>,
    pub rdp_port: Option<u16>,
}

impl From<control::NodeView> for NodeView {
    fn from(v: control::NodeView) -> Self {
        let status = match v.status {
            NodeStatus::Up => "up",
            NodeStatus::Unavailable => "unavailable",
            NodeStatus::Unknown => "unknown",
            NodeStatus::Disconnected => "disconnected",
        };
        Self {
            id: v.node.id.to_string(),
            hostname: v.node.hostname,
            address: v.node.address,
            use_hostname: v.node.use_hostname,
            description: v.node.description,
            networks: v.networks,
            status: status.to_string(),
            last_seen: v.node.last_seen.map(time_text),
            joined: time_text(v.node.joined),
            deleted: v.node.deleted.map(time_text),
            thumbprint: v.node.thumbprint,
            version: v.node.version,
            ssh_port: v.node.ssh_port,
            rdp_port: v.node.rdp_port,
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct NodeQuery {
    /// Also list removed (soft-deleted) nodes.
    pub include_disconnected: Option<bool>,
}

/// The session nodes (`view_cluster`).
#[utoipa::path(get, path = "/api/v1/nodes", tag = "cluster", params(NodeQuery),
    security(("bearer" = [])),
    responses((status = 200, body = [NodeView]), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn list_nodes(
    State(state): State<ApiState>,
    person: Person,
    QueryParams(query): QueryParams<NodeQuery>,
) -> Result<Response, ApiError> {
    state
        .inner
        .workflow
        .authorize_admin(&person.actor, AdminAction::ViewCluster)?;
    let views = control::node_views(
        &state.inner.store,
        query.include_disconnected.unwrap_or(false),
    )
    .map_err(store_error)?;
    let views: Vec<NodeView> = views.into_iter().map(NodeView::from).collect();
    Ok(Json(views).into_response())
}

/// What a PATCH may change.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeChange {
    pub description: Option<String>,
    pub address: Option<String>,
    pub use_hostname: Option<bool>,
}

/// Change a node's description, address or launch name (`manage_cluster`).
#[utoipa::path(patch, path = "/api/v1/nodes/{id}", tag = "cluster",
    params(("id" = String, Path, description = "node id")), request_body = NodeChange,
    security(("bearer" = [])),
    responses((status = 200, body = NodeView), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn edit_node(
    State(state): State<ApiState>,
    person: Person,
    Path(id): Path<String>,
    JsonBody(change): JsonBody<NodeChange>,
) -> Result<Response, ApiError> {
    state
        .inner
        .workflow
        .authorize_admin(&person.actor, AdminAction::ManageCluster)?;
    if change.description.is_none() && change.address.is_none() && change.use_hostname.is_none() {
        return Err(ApiError::bad_request(
            "nothing to change: give description, address or use_hostname",
        ));
    }
    let edit = NodeEdit {
        description: change.description,
        address: change.address,
        use_hostname: change.use_hostname,
    };
    control::edit_node(
        &state.inner.store,
        &state.inner.auditor,
        &id,
        &edit,
        person.actor.user.name.as_str(),
    )?;
    let view = control::node_views(&state.inner.store, true)
        .map_err(store_error)?
        .into_iter()
        .find(|v| v.node.id.as_str() == id)
        .ok_or_else(|| ApiError::not_found(format!("node `{id}` does not exist")))?;
    Ok(Json(NodeView::from(view)).into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// Delete for good now, even a member node.
    pub hard: Option<bool>,
}

/// What a DELETE did.
#[derive(Serialize, ToSchema)]
pub struct NodeDeleted {
    pub id: String,
    /// `soft` (kept for a relink; DELETE again to remove it for good) or `hard`.
    pub deleted: String,
    /// Managed networks removed with it (hard delete).
    pub networks_removed: usize,
}

/// Remove a node: soft the first time, for good the second time or with `hard=true`
/// (`manage_cluster`).
#[utoipa::path(delete, path = "/api/v1/nodes/{id}", tag = "cluster",
    params(("id" = String, Path, description = "node id"), DeleteQuery),
    security(("bearer" = [])),
    responses((status = 200, body = NodeDeleted), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn delete_node(
    State(state): State<ApiState>,
    person: Person,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<DeleteQuery>,
) -> Result<Response, ApiError> {
    state
        .inner
        .workflow
        .authorize_admin(&person.actor, AdminAction::ManageCluster)?;
    let outcome = control::delete_node(
        &state.inner.store,
        &state.inner.auditor,
        &id,
        query.hard.unwrap_or(false),
        person.actor.user.name.as_str(),
    )?;
    let (deleted, networks_removed) = match outcome {
        Deleted::Soft => ("soft", 0),
        Deleted::Hard { networks } => ("hard", networks),
    };
    Ok(Json(NodeDeleted {
        id,
        deleted: deleted.to_string(),
        networks_removed,
    })
    .into_response())
}

/// A managed network.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct NetworkView {
    /// CIDR (`10.0.0.0/24`).
    pub network: String,
    pub node: String,
    #[serde(default)]
    pub description: String,
}

impl From<ManagedNetwork> for NetworkView {
    fn from(n: ManagedNetwork) -> Self {
        Self {
            network: n.network,
            node: n.node.to_string(),
            description: n.description,
        }
    }
}

/// The managed networks (`view_cluster`).
#[utoipa::path(get, path = "/api/v1/networks", tag = "cluster", security(("bearer" = [])),
    responses((status = 200, body = [NetworkView]), (status = 403, body = ErrorBody)))]
pub async fn list_networks(
    State(state): State<ApiState>,
    person: Person,
) -> Result<Response, ApiError> {
    state
        .inner
        .workflow
        .authorize_admin(&person.actor, AdminAction::ViewCluster)?;
    let networks: Vec<NetworkView> = state
        .inner
        .store
        .list(&NETWORKS)
        .map_err(store_error)?
        .into_iter()
        .map(NetworkView::from)
        .collect();
    Ok(Json(networks).into_response())
}

/// Assign a network to a node (`manage_cluster`).
#[utoipa::path(post, path = "/api/v1/networks", tag = "cluster", request_body = NetworkView,
    security(("bearer" = [])),
    responses((status = 201, body = NetworkView), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
pub async fn add_network(
    State(state): State<ApiState>,
    person: Person,
    JsonBody(body): JsonBody<NetworkView>,
) -> Result<Response, ApiError> {
    state
        .inner
        .workflow
        .authorize_admin(&person.actor, AdminAction::ManageCluster)?;
    let added = control::add_network(
        &state.inner.store,
        &state.inner.auditor,
        &body.network,
        &body.node,
        &body.description,
        person.actor.user.name.as_str(),
    )?;
    Ok((StatusCode::CREATED, Json(NetworkView::from(added))).into_response())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct NetworkQuery {
    /// The network (CIDR) to stop managing.
    pub network: String,
}

/// Stop managing a network (`manage_cluster`).
#[utoipa::path(delete, path = "/api/v1/networks", tag = "cluster", params(NetworkQuery),
    security(("bearer" = [])),
    responses((status = 200, body = NetworkView), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
pub async fn delete_network(
    State(state): State<ApiState>,
    person: Person,
    QueryParams(query): QueryParams<NetworkQuery>,
) -> Result<Response, ApiError> {
    state
        .inner
        .workflow
        .authorize_admin(&person.actor, AdminAction::ManageCluster)?;
    let removed = control::remove_network(
        &state.inner.store,
        &state.inner.auditor,
        &query.network,
        person.actor.user.name.as_str(),
    )?;
    Ok(Json(NetworkView::from(removed)).into_response())
}
