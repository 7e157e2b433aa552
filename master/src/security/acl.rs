//! Access control lists in the style of Mesos' authorizer: for each action,
//! a list of rules `{principals, <object>}`; a principal may do an action
//! on an object when some rule of that action names both (or `"ANY"`).
//! Nothing is allowed that no rule allows (deny by default).
//!
//! Pure: parsing and validation of the JSON document (with errors that
//! name the entry), and the decision. The API layer asks, and turns a
//! [`Denied`] into PERMISSION_DENIED or 403.
//!
//! The document, as `mezz acl set FILE` and `mezz master --acls FILE` take it:
//!
//! ```json
//! {
//!   "register_frameworks": [{"principals": ["spark"], "roles": ["spark", "batch/*"]}],
//!   "run_tasks":           [{"principals": "ANY", "users": ["nobody"]}],
//!   "register_agents":     [{"principals": ["agent"]}],
//!   "set_quotas":          [{"principals": ["admin"], "roles": "ANY"}],
//!   "set_weights":         [{"principals": ["admin"], "roles": "ANY"}],
//!   "kill_tasks":          [{"principals": ["admin"], "roles": "ANY"}],
//!   "teardown_frameworks": [{"principals": ["admin"], "roles": "ANY"}],
//!   "view":                [{"principals": ["alice"], "roles": ["eng"]}],
//!   "create_tokens":       [{"principals": ["admin"]}],
//!   "manage_acls":         [{"principals": ["admin"]}],
//!   "read_audit":          [{"principals": ["admin"]}],
//!   "manage_sizes":        [{"principals": ["admin"]}]
//! }
//! ```
//!
//! A role pattern `eng/*` matches `eng` and every role below it.

use std::collections::BTreeMap;

use serde_json::Value;

use super::tokens::Principal;

/// Something a principal asks to do, with its object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    /// Register (subscribe) a framework in a role.
    RegisterFramework(&'a str),
    /// Run tasks as an OS user.
    RunTaskAs(&'a str),
    /// Register an agent.
    RegisterAgent,
    /// Set a role's quota.
    SetQuota(&'a str),
    /// Set a role's weight.
    SetWeight(&'a str),
    /// Kill a task of a framework in a role (operator kill).
    KillTask(&'a str),
    /// Tear down a framework in a role.
    TeardownFramework(&'a str),
    /// See the frameworks, tasks and sandboxes of a role.
    View(&'a str),
    /// Create, list and revoke tokens.
    CreateToken,
    /// Read and replace the ACLs.
    ManageAcls,
    /// Read the audit log.
    ReadAudit,
    /// Change the cluster's menu of named sizes (`mezz sizes set|rm`).
    ManageSizes,
}

/// What kind of object an action's rules name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ObjectKind {
    Roles,
    Users,
    None,
}

/// The actions by their name in the document, with their object's key.
const ACTIONS: [(&str, ObjectKind); 12] = [
    ("register_frameworks", ObjectKind::Roles),
    ("run_tasks", ObjectKind::Users),
    ("register_agents", ObjectKind::None),
    ("set_quotas", ObjectKind::Roles),
    ("set_weights", ObjectKind::Roles),
    ("kill_tasks", ObjectKind::Roles),
    ("teardown_frameworks", ObjectKind::Roles),
    ("view", ObjectKind::Roles),
    ("create_tokens", ObjectKind::None),
    ("manage_acls", ObjectKind::None),
    ("read_audit", ObjectKind::None),
    ("manage_sizes", ObjectKind::None),
];

impl Action<'_> {
    /// The action's key in the document.
    pub fn name(&self) -> &'static str {
        match self {
            Action::RegisterFramework(_) => "register_frameworks",
            Action::RunTaskAs(_) => "run_tasks",
            Action::RegisterAgent => "register_agents",
            Action::SetQuota(_) => "set_quotas",
            Action::SetWeight(_) => "set_weights",
            Action::KillTask(_) => "kill_tasks",
            Action::TeardownFramework(_) => "teardown_frameworks",
            Action::View(_) => "view",
            Action::CreateToken => "create_tokens",
            Action::ManageAcls => "manage_acls",
            Action::ReadAudit => "read_audit",
            Action::ManageSizes => "manage_sizes",
        }
    }

    fn object(&self) -> Option<&str> {
        match *self {
            Action::RegisterFramework(o)
            | Action::RunTaskAs(o)
            | Action::SetQuota(o)
            | Action::SetWeight(o)
            | Action::KillTask(o)
            | Action::TeardownFramework(o)
            | Action::View(o) => Some(o),
            _ => None,
        }
    }

    /// The object in words: "role 'eng'", "user 'nobody'", "the cluster".
    pub fn object_words(&self) -> String {
        match self {
            Action::RunTaskAs(u) => format!("user '{u}'"),
            a => match a.object() {
                Some(r) => format!("role '{r}'"),
                None => "the cluster".into(),
            },
        }
    }
}

/// A subject or object list: everyone, or these names.
#[derive(Debug, Clone, PartialEq)]
enum Entity {
    Any,
    Some(Vec<String>),
}

impl Entity {
    fn matches(&self, name: &str, roles: bool) -> bool {
        match self {
            Entity::Any => true,
            Entity::Some(names) => names.iter().any(|n| {
                n == name
                    || (roles
                        && n.strip_suffix("/*").is_some_and(|p| {
                            name == p || name.strip_prefix(p).is_some_and(|r| r.starts_with('/'))
                        }))
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Rule {
    principals: Entity,
    objects: Entity,
}

/// Parsed, validated ACLs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Acls {
    rules: BTreeMap<&'static str, Vec<Rule>>,
}

/// A refusal: who, what, on what. Shown to the caller as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "principal '{principal}' may not {action} on {object}: no ACL allows it; \
     ask an operator to add a rule to `{action}` (see `mezz acl show`)"
)]
pub struct Denied {
    /// Who asked.
    pub principal: String,
    /// The action's key.
    pub action: &'static str,
    /// The object in words.
    pub object: String,
}

fn entity(v: &Value, at: &str, key: &str) -> Result<Entity, String> {
    match v {
        Value::String(s) if s == "ANY" => Ok(Entity::Any),
        Value::String(s) => Err(format!(
            "{at}: '{key}' is the string {s:?}; give \"ANY\" or a list of names"
        )),
        Value::Array(items) => {
            let mut names = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(s) if !s.trim().is_empty() => names.push(s.to_string()),
                    _ => {
                        return Err(format!(
                            "{at}: '{key}'[{i}] must be a non-empty string, not {item}"
                        ))
                    }
                }
            }
            Ok(Entity::Some(names))
        }
        other => Err(format!(
            "{at}: '{key}' must be \"ANY\" or a list of names, not {other}"
        )),
    }
}

impl Acls {
    /// Parses and validates a JSON document. Errors name the entry
    /// (`register_frameworks[1]: 'roles' is missing`).
    pub fn parse(json: &str) -> Result<Acls, String> {
        let doc: Value =
            serde_json::from_str(json).map_err(|e| format!("the ACLs are not valid JSON: {e}"))?;
        let Value::Object(map) = doc else {
            return Err("the ACLs must be a JSON object with one list of rules per action".into());
        };
        let mut rules = BTreeMap::new();
        for (key, list) in &map {
            let Some(&(name, kind)) = ACTIONS.iter().find(|(n, _)| n == key) else {
                return Err(format!(
                    "unknown action '{key}'; the actions are {}",
                    ACTIONS.map(|(n, _)| n).join(", ")
                ));
            };
            let Value::Array(items) = list else {
                return Err(format!("'{key}' must be a list of rules"));
            };
            let mut parsed = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let at = format!("{key}[{i}]");
                let Value::Object(rule) = item else {
                    return Err(format!("{at}: a rule is an object with 'principals'"));
                };
                let object_key = match kind {
                    ObjectKind::Roles => Some("roles"),
                    ObjectKind::Users => Some("users"),
                    ObjectKind::None => None,
                };
                for k in rule.keys() {
                    if k != "principals" && Some(k.as_str()) != object_key {
                        return Err(format!(
                            "{at}: unknown key '{k}'; a rule of '{key}' has 'principals'{}",
                            object_key
                                .map(|o| format!(" and '{o}'"))
                                .unwrap_or_default()
                        ));
                    }
                }
                let principals = rule
                    .get("principals")
                    .ok_or_else(|| format!("{at}: 'principals' is missing"))
                    .and_then(|v| entity(v, &at, "principals"))?;
                let objects = match object_key {
                    Some(o) => rule
                        .get(o)
                        .ok_or_else(|| format!("{at}: '{o}' is missing"))
                        .and_then(|v| entity(v, &at, o))?,
                    None => Entity::Any,
                };
                parsed.push(Rule {
                    principals,
                    objects,
                });
            }
            rules.insert(name, parsed);
        }
        Ok(Acls { rules })
    }

    /// The document in one canonical form (what is replicated).
    pub fn canonical(json: &str) -> Result<String, String> {
        Acls::parse(json)?;
        let v: Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
        serde_json::to_string_pretty(&v).map_err(|e| e.to_string())
    }

    /// Whether `principal` may do `action`.
    pub fn allows(&self, principal: &Principal, action: Action<'_>) -> bool {
        let roles = !matches!(action, Action::RunTaskAs(_));
        self.rules.get(action.name()).is_some_and(|rules| {
            rules.iter().any(|r| {
                r.principals.matches(&principal.0, false)
                    && action.object().is_none_or(|o| r.objects.matches(o, roles))
            })
        })
    }

    /// [`Acls::allows`], as a refusal that names principal, action and
    /// object.
    pub fn check(&self, principal: &Principal, action: Action<'_>) -> Result<(), Denied> {
        if self.allows(principal, action) {
            return Ok(());
        }
        Err(Denied {
            principal: principal.0.clone(),
            action: action.name(),
            object: action.object_words(),
        })
    }
}

#[cfg(test)]
mod tests;
