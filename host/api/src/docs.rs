//! The OpenAPI document, generated from the handlers' annotations, and a browsable page
//! rendered from it on the server: no script or style from elsewhere, so it works on a gateway
//! without internet access.

use crate::error::{ErrorBody, ErrorDetail};
use crate::routes::*;
use axum::Json;
use axum::response::Html;
use utoipa::openapi::path::{HttpMethod, Operation};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Gatehouse API",
        description = "Access requests and approvals, credential release and check-in, access \
                       strings, application-to-application (A2A) credential retrieval, \
                       session recordings, and the cluster's nodes.",
    ),
    paths(
        health, login, me, services, list_requests, create_request, get_request, approve, deny,
        cancel, revoke, check_in, release, access_string, a2a_credential, a2a_request,
        crate::sessions::list_sessions, crate::sessions::get_session,
        crate::sessions::session_video, crate::sessions::session_transcript,
        crate::sessions::session_cast, crate::search::search_sessions, crate::control::terminate_session,
        crate::live::session_live, crate::portal::portal_login, crate::portal::portal_logout,
        crate::portal::portal_session,
        crate::portal::my_access, crate::routes::inbox, crate::admin_pages::list_policies,
        crate::admin_pages::explain, crate::admin_pages::set_service,
        crate::admin_pages::list_plugins, crate::admin_pages::set_plugin,
        crate::admin_pages::validate_policy,
        crate::nodes::list_nodes, crate::nodes::edit_node,
        crate::nodes::delete_node, crate::nodes::list_networks, crate::nodes::add_network,
        crate::nodes::delete_network
    ),
    components(schemas(
        ErrorBody, ErrorDetail, crate::sign_in::QuestionView, Health, LoginBody, LoginResponse, MeView, ServicesView,
        crate::portal::PortalLoginView, crate::portal::AccessView,
        crate::portal::PortalSessionView,
        crate::routes::Inbox, crate::routes::InboxItem, crate::admin_pages::PolicyView,
        crate::admin_pages::ExplanationView, crate::admin_pages::ServiceBody,
        crate::admin_pages::PluginView, crate::admin_pages::PluginBody,
        crate::admin_pages::ValidateBody, crate::admin_pages::ValidationView,
        crate::admin_pages::ProblemView,
        NewRequestBody, BrokerRequestBody, CommentBody, ReviewView, RequestView, RequestList,
        CredentialView, AccessStringView, A2aCredentialView, crate::sessions::SessionView,
        crate::sessions::SessionList, crate::sessions::SessionDetail, crate::nodes::NodeView,
        crate::nodes::NodeChange, crate::nodes::NodeDeleted, crate::nodes::NetworkView,
        crate::search::SearchHit, crate::search::SearchResults, crate::control::TerminateBody,
        crate::control::TerminateView
    )),
    modifiers(&Security),
    tags(
        (name = "people", description = "Logging in"),
        (name = "requests", description = "Access requests: file, review, use, check in"),
        (name = "a2a", description = "Applications: mutual TLS plus an API key"),
        (name = "cluster", description = "Session nodes and managed networks (view_cluster, manage_cluster)"),
        (name = "sessions", description = "Session recordings: list and search, events, video, terminal cast, transcript; the player at /player"),
        (name = "gateway", description = "The gateway itself"),
    )
)]
struct Doc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A token from POST /api/v1/login"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "a2a",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "`A2A <api key>`, on a TLS connection with the application's registered client \
                 certificate",
            ))),
        );
    }
}

/// The OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = Doc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc
}

pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi())
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A small serializable value as plain text (`"string"` becomes `string`).
fn json_text<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

fn method_name(method: &HttpMethod) -> &'static str {
    match method {
        HttpMethod::Get => "GET",
        HttpMethod::Post => "POST",
        HttpMethod::Put => "PUT",
        HttpMethod::Delete => "DELETE",
        HttpMethod::Patch => "PATCH",
        HttpMethod::Head => "HEAD",
        HttpMethod::Options => "OPTIONS",
        HttpMethod::Trace => "TRACE",
    }
}

fn operations(item: &utoipa::openapi::PathItem) -> Vec<(HttpMethod, &Operation)> {
    [
        (HttpMethod::Get, &item.get),
        (HttpMethod::Post, &item.post),
        (HttpMethod::Put, &item.put),
        (HttpMethod::Delete, &item.delete),
        (HttpMethod::Patch, &item.patch),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.as_ref().map(|op| (m, op)))
    .collect()
}

fn schema_ref_name<T>(r: &RefOr<T>) -> Option<String> {
    match r {
        RefOr::Ref(r) => r.ref_location.rsplit('/').next().map(str::to_string),
        RefOr::T(_) => None,
    }
}

fn content_schema<'a>(content: impl IntoIterator<Item = &'a utoipa::openapi::Content>) -> String {
    content
        .into_iter()
        .filter_map(|c| c.schema.as_ref().and_then(schema_ref_name))
        .map(|name| format!("<a href=\"#schema-{0}\">{0}</a>", escape(&name)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn render_schema(name: &str, schema: &RefOr<Schema>, out: &mut String) {
    out.push_str(&format!(
        "<section id=\"schema-{0}\"><h3>{0}</h3>",
        escape(name)
    ));
    if let RefOr::T(Schema::Object(object)) = schema {
        if let Some(description) = &object.description {
            out.push_str(&format!("<p>{}</p>", escape(description)));
        }
        out.push_str("<table><tr><th>field</th><th>type</th><th>required</th><th>about</th></tr>");
        for (field, property) in &object.properties {
            let (kind, about) = match property {
                RefOr::Ref(r) => (
                    r.ref_location.rsplit('/').next().unwrap_or("").to_string(),
                    String::new(),
                ),
                RefOr::T(Schema::Object(o)) => (
                    json_text(&o.schema_type),
                    o.description.clone().unwrap_or_default(),
                ),
                RefOr::T(Schema::Array(a)) => (
                    "array".to_string(),
                    a.description.clone().unwrap_or_default(),
                ),
                RefOr::T(_) => ("value".to_string(), String::new()),
            };
            let required = object.required.iter().any(|r| r == field);
            out.push_str(&format!(
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(field),
                escape(&kind),
                if required { "yes" } else { "" },
                escape(&about)
            ));
        }
        out.push_str("</table>");
    }
    out.push_str("</section>");
}

/// The browsable docs: every endpoint with its method, purpose, parameters, body, responses
/// and authentication, then every schema.
pub fn render_html(doc: &utoipa::openapi::OpenApi) -> String {
    let mut out = String::new();
    out.push_str(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Gatehouse API</title>\
         <link rel=\"icon\" href=\"/favicon.svg\" type=\"image/svg+xml\">\
         <style>body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}\
         code{background:#f2f2f2;padding:0 .2em}section.op{border-top:1px solid #ddd;padding:.5rem 0}\
         .m{display:inline-block;min-width:4.5em;font-weight:bold}table{border-collapse:collapse}\
         td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left;vertical-align:top}</style>\
         </head><body>",
    );
    out.push_str(&format!(
        "<h1>{} <small>{}</small></h1>",
        escape(&doc.info.title),
        escape(&doc.info.version)
    ));
    if let Some(d) = &doc.info.description {
        out.push_str(&format!("<p>{}</p>", escape(d)));
    }
    out.push_str(
        "<p>Machine-readable: <a href=\"/api/v1/openapi.json\"><code>/api/v1/openapi.json</code></a>. \
         Errors are JSON: <code>{\"error\": {\"status\", \"code\", \"message\"}}</code>.</p><h2>Endpoints</h2>",
    );
    for (path, item) in &doc.paths.paths {
        for (method, op) in operations(item) {
            out.push_str("<section class=\"op\">");
            out.push_str(&format!(
                "<h3><span class=\"m\">{}</span> <code>{}</code></h3>",
                method_name(&method),
                escape(path)
            ));
            let text = [op.summary.as_deref(), op.description.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            if !text.is_empty() {
                out.push_str(&format!("<p>{}</p>", escape(&text)));
            }
            if let Some(security) = &op.security {
                let names: Vec<String> = security
                    .iter()
                    .filter_map(|s| serde_json::to_value(s).ok())
                    .filter_map(|v| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()))
                    .flatten()
                    .collect();
                if !names.is_empty() {
                    out.push_str(&format!(
                        "<p>Authentication: {}</p>",
                        escape(&names.join(", "))
                    ));
                }
            }
            if let Some(params) = &op.parameters
                && !params.is_empty()
            {
                out.push_str("<p>Parameters: ");
                let list: Vec<String> = params
                    .iter()
                    .map(|p| {
                        format!(
                            "<code>{}</code> ({}{})",
                            escape(&p.name),
                            escape(&json_text(&p.parameter_in)),
                            p.description
                                .as_deref()
                                .map(|d| format!(": {}", escape(d)))
                                .unwrap_or_default()
                        )
                    })
                    .collect();
                out.push_str(&list.join("; "));
                out.push_str("</p>");
            }
            if let Some(body) = &op.request_body {
                out.push_str(&format!(
                    "<p>Body: {}</p>",
                    content_schema(body.content.values())
                ));
            }
            out.push_str("<p>Responses: ");
            let responses: Vec<String> = op
                .responses
                .responses
                .iter()
                .map(|(status, response)| match response {
                    RefOr::T(r) => {
                        let schema = content_schema(r.content.values());
                        if schema.is_empty() {
                            escape(status)
                        } else {
                            format!("{} {}", escape(status), schema)
                        }
                    }
                    RefOr::Ref(_) => escape(status),
                })
                .collect();
            out.push_str(&responses.join(" · "));
            out.push_str("</p></section>");
        }
    }
    out.push_str("<h2>Schemas</h2>");
    if let Some(components) = &doc.components {
        for (name, schema) in &components.schemas {
            render_schema(name, schema, &mut out);
        }
    }
    out.push_str("</body></html>");
    out
}

pub async fn docs_page() -> Html<String> {
    Html(render_html(&openapi()))
}
