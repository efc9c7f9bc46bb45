//! Guance (观测云): where inspection results go.
//!
//! - [`GuanceNode`] / [`GuanceSettings`]: which Guance site, and the credentials for it.
//! - [`client`]: the OpenAPI (workspace, self-built inspection registry) and OpenWay (event
//!   write) calls, with errors split into retryable and permanent.
//! - [`lineproto`]: the line-protocol encoder for OpenWay writes.
//! - [`event`]: one event per cloud account from a run: severity, markdown, `df_*` fields.
//! - [`alerting`]: the per-dimension state machine — notify, silence, recover.
//! - [`sync`]: the two-way sync of an inspection with its checker in Guance studio: which
//!   side's change wins, field by field.
//!
//! Nothing here touches the database; the runner and the delivery worker ([`crate::outbox`])
//! feed these plain inputs and store what comes out.

pub mod alerting;
pub mod client;
pub mod event;
pub mod lineproto;
pub mod sync;

use serde::{Deserialize, Serialize};

use crate::model::Secret;
use crate::model::validation::FieldErrors;

/// A Guance site. Each has an OpenAPI endpoint (management) and an OpenWay endpoint (data
/// writes). `Private` is a self-hosted Guance, whose URLs must be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum GuanceNode {
    /// China 1 (Hangzhou).
    #[default]
    Default,
    /// China 2 (Ningxia).
    Aws,
    Cn3,
    Cn4,
    Cn5,
    Us1,
    Eu1,
    Ap1,
    Cn6,
    /// Self-hosted: give both URLs.
    Private,
}

impl GuanceNode {
    pub const ALL: [GuanceNode; 10] = [
        GuanceNode::Default,
        GuanceNode::Aws,
        GuanceNode::Cn3,
        GuanceNode::Cn4,
        GuanceNode::Cn5,
        GuanceNode::Us1,
        GuanceNode::Eu1,
        GuanceNode::Ap1,
        GuanceNode::Cn6,
        GuanceNode::Private,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GuanceNode::Default => "default",
            GuanceNode::Aws => "aws",
            GuanceNode::Cn3 => "cn3",
            GuanceNode::Cn4 => "cn4",
            GuanceNode::Cn5 => "cn5",
            GuanceNode::Us1 => "us1",
            GuanceNode::Eu1 => "eu1",
            GuanceNode::Ap1 => "ap1",
            GuanceNode::Cn6 => "cn6",
            GuanceNode::Private => "private",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        GuanceNode::ALL.into_iter().find(|n| n.as_str() == s)
    }

    /// The site's OpenAPI base URL; `None` for `Private`.
    pub fn openapi_url(self) -> Option<&'static str> {
        Some(match self {
            GuanceNode::Default => "https://openapi.guance.com",
            GuanceNode::Aws => "https://aws-openapi.guance.com",
            GuanceNode::Cn3 => "https://cn3-openapi.guance.com",
            GuanceNode::Cn4 => "https://cn4-openapi.guance.com",
            GuanceNode::Cn5 => "https://cn5-openapi.guance.com",
            GuanceNode::Us1 => "https://us1-openapi.guance.com",
            GuanceNode::Eu1 => "https://eu1-openapi.guance.one",
            GuanceNode::Ap1 => "https://ap1-openapi.guance.one",
            GuanceNode::Cn6 => "https://cn6-openapi.guance.one",
            GuanceNode::Private => return None,
        })
    }

    /// The site's OpenWay (DataWay) base URL; `None` for `Private`.
    pub fn openway_url(self) -> Option<&'static str> {
        Some(match self {
            GuanceNode::Default => "https://openway.guance.com",
            GuanceNode::Aws => "https://aws-openway.guance.com",
            GuanceNode::Cn3 => "https://cn3-openway.guance.com",
            GuanceNode::Cn4 => "https://cn4-openway.guance.com",
            GuanceNode::Cn5 => "https://cn5-openway.guance.com",
            GuanceNode::Us1 => "https://us1-openway.guance.com",
            GuanceNode::Eu1 => "https://eu1-openway.guance.one",
            GuanceNode::Ap1 => "https://ap1-openway.guance.one",
            GuanceNode::Cn6 => "https://cn6-openway.guance.one",
            GuanceNode::Private => return None,
        })
    }
}

impl std::fmt::Display for GuanceNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for GuanceNode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GuanceNode::parse(s).ok_or_else(|| {
            let all: Vec<&str> = GuanceNode::ALL.iter().map(|n| n.as_str()).collect();
            format!("unknown Guance node {s:?}; expected one of {}", all.join(", "))
        })
    }
}

/// How to reach one Guance workspace.
///
/// `api_key_id` is a [`Secret`] too: Guance's OpenAPI authenticates with the key *id* in the
/// `DF-API-KEY` header (DataFlux Func sends `{'DF-API-KEY': api_key_id}` and uses the key itself
/// only to verify the pair through `/api/v1/workspace/accesskey/list`), so whoever holds the id
/// can call the API.
#[derive(Clone, PartialEq)]
pub struct GuanceSettings {
    pub node: GuanceNode,
    /// Overrides the node's OpenAPI URL; required for `private`.
    pub openapi_url: Option<String>,
    /// Overrides the node's OpenWay URL; required for `private`.
    pub openway_url: Option<String>,
    pub api_key_id: Secret,
    pub api_key: Secret,
    /// The workspace token (`tkn_…`) for OpenWay writes; fetched through
    /// `GET /api/v1/workspace/get` when absent.
    pub workspace_token: Option<Secret>,
}

impl std::fmt::Debug for GuanceSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuanceSettings")
            .field("node", &self.node)
            .field("openapi_url", &self.openapi_url)
            .field("openway_url", &self.openway_url)
            .field("api_key_id", &self.api_key_id)
            .field("api_key", &self.api_key)
            .field("workspace_token", &self.workspace_token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// The two base URLs to call, without a trailing slash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    pub openapi: String,
    pub openway: String,
}

impl GuanceSettings {
    /// Checks the settings, reporting every problem at once under the flag-like field names
    /// (`guance_openapi_url`, …), and returns the URLs to use.
    pub fn validate(&self) -> Result<Endpoints, FieldErrors> {
        let mut errors = FieldErrors::default();
        let openapi = resolve_url(
            "guance_openapi_url",
            self.openapi_url.as_deref(),
            self.node.openapi_url(),
            self.node,
            &mut errors,
        );
        let openway = resolve_url(
            "guance_openway_url",
            self.openway_url.as_deref(),
            self.node.openway_url(),
            self.node,
            &mut errors,
        );
        check_credential("guance_api_key_id", self.api_key_id.expose(), &mut errors);
        check_credential("guance_api_key", self.api_key.expose(), &mut errors);
        if let Some(t) = &self.workspace_token {
            check_credential("guance_workspace_token", t.expose(), &mut errors);
        }
        errors.into_result(Endpoints { openapi, openway })
    }
}

fn resolve_url(
    field: &str,
    given: Option<&str>,
    node_default: Option<&str>,
    node: GuanceNode,
    errors: &mut FieldErrors,
) -> String {
    match given.map(str::trim).filter(|s| !s.is_empty()) {
        Some(url) => {
            let ok = (url.starts_with("https://") || url.starts_with("http://"))
                && url.len() <= 2048
                && !url.chars().any(|c| c.is_whitespace() || c.is_control())
                && !url.contains(['?', '#'])
                && reqwest::Url::parse(url).is_ok_and(|u| u.host_str().is_some_and(|h| !h.is_empty()));
            if !ok {
                errors.add(field, "must be an http:// or https:// base URL without query or fragment");
            }
            url.trim_end_matches('/').to_owned()
        }
        None => match node_default {
            Some(url) => url.to_owned(),
            None => {
                errors.add(field, format!("is required for the `{node}` node"));
                String::new()
            }
        },
    }
}

fn check_credential(field: &str, value: &str, errors: &mut FieldErrors) {
    // The value goes into a header or a query string; anything outside printable ASCII is a
    // copy-paste accident, and saying so beats a confusing 401 later.
    if value.is_empty() {
        errors.add(field, "is required");
    } else if value.len() > 512 || !value.bytes().all(|b| b.is_ascii_graphic()) {
        errors.add(field, "must be 1–512 printable ASCII characters without spaces");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(node: GuanceNode) -> GuanceSettings {
        GuanceSettings {
            node,
            openapi_url: None,
            openway_url: None,
            api_key_id: Secret::new("wsak_0123456789abcdef"),
            api_key: Secret::new("very-secret-key"),
            workspace_token: Some(Secret::new("tkn_0123456789abcdef")),
        }
    }

    #[test]
    fn every_public_node_has_both_urls() {
        let want = [
            ("default", "https://openapi.guance.com", "https://openway.guance.com"),
            ("aws", "https://aws-openapi.guance.com", "https://aws-openway.guance.com"),
            ("cn3", "https://cn3-openapi.guance.com", "https://cn3-openway.guance.com"),
            ("cn4", "https://cn4-openapi.guance.com", "https://cn4-openway.guance.com"),
            ("cn5", "https://cn5-openapi.guance.com", "https://cn5-openway.guance.com"),
            ("us1", "https://us1-openapi.guance.com", "https://us1-openway.guance.com"),
            ("eu1", "https://eu1-openapi.guance.one", "https://eu1-openway.guance.one"),
            ("ap1", "https://ap1-openapi.guance.one", "https://ap1-openway.guance.one"),
            ("cn6", "https://cn6-openapi.guance.one", "https://cn6-openway.guance.one"),
        ];
        for (name, api, way) in want {
            let node: GuanceNode = name.parse().unwrap();
            assert_eq!(node.as_str(), name);
            assert_eq!(settings(node).validate().unwrap(), Endpoints { openapi: api.into(), openway: way.into() });
        }
        assert_eq!(GuanceNode::Private.openapi_url(), None);
        assert!("mars".parse::<GuanceNode>().unwrap_err().contains("cn6"));
    }

    #[test]
    fn private_needs_both_urls_and_overrides_win() {
        let err = settings(GuanceNode::Private).validate().unwrap_err();
        assert_eq!(err.fields().keys().collect::<Vec<_>>(), vec!["guance_openapi_url", "guance_openway_url"]);

        let mut s = settings(GuanceNode::Private);
        s.openapi_url = Some("http://guance.internal:9000/".into());
        s.openway_url = Some("https://openway.internal".into());
        assert_eq!(
            s.validate().unwrap(),
            Endpoints { openapi: "http://guance.internal:9000".into(), openway: "https://openway.internal".into() }
        );

        let mut s = settings(GuanceNode::Us1);
        s.openway_url = Some("http://127.0.0.1:9528".into());
        assert_eq!(s.validate().unwrap().openway, "http://127.0.0.1:9528");
        assert_eq!(s.validate().unwrap().openapi, "https://us1-openapi.guance.com");
    }

    #[test]
    fn bad_values_are_all_reported() {
        let mut s = settings(GuanceNode::Default);
        s.openapi_url = Some("ftp://x".into());
        s.openway_url = Some("https://x/?token=abc".into());
        s.api_key_id = Secret::new("");
        s.api_key = Secret::new("has space");
        s.workspace_token = Some(Secret::new("tkn\n"));
        let err = s.validate().unwrap_err();
        assert_eq!(
            err.fields().keys().collect::<Vec<_>>(),
            vec![
                "guance_api_key",
                "guance_api_key_id",
                "guance_openapi_url",
                "guance_openway_url",
                "guance_workspace_token"
            ]
        );
        // Messages never repeat the values.
        let all = format!("{err:?}");
        assert!(!all.contains("has space") && !all.contains("abc"), "{all}");
    }

    #[test]
    fn debug_hides_every_credential() {
        let s = settings(GuanceNode::Default);
        let d = format!("{s:?}");
        for secret in ["wsak_0123456789abcdef", "very-secret-key", "tkn_0123456789abcdef"] {
            assert!(!d.contains(secret), "{d}");
        }
        assert!(d.contains("Default"), "{d}");
    }
}
