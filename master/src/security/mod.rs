//! Who may call the master, and what they may do: bearer tokens
//! ([`tokens`]), ACLs ([`acl`]), which kinds of callers must present a
//! token ([`AuthClasses`]), and the [`Guard`] the API layer asks. The
//! tokens and ACLs live in the replicated registry; the actor publishes
//! them to the guard whenever they change, so that checking a call never
//! waits for the actor. Everything here but the guard's lock is pure.

pub mod acl;
pub mod audit;
pub mod ratelimit;
pub mod tokens;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use mezz_proto::auth::Token;
use mezz_proto::v1::{ClusterState, TokenRecord};

pub use acl::{Acls, Action, Denied};
pub use audit::Audit;
pub use ratelimit::{Limited, RateLimits};
pub use tokens::{AuthError, Principal};

/// The kinds of callers `--authenticate` names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuthClasses {
    /// Schedulers (`mezzanine.v1.Scheduler`).
    pub frameworks: bool,
    /// Agents (`mezzanine.v1.AgentGateway`).
    pub agents: bool,
    /// Operators and the CLI (`mezzanine.v1.Operator`).
    pub operators: bool,
    /// HTTP: the status page, `/api/*` and `/metrics`; `/health` stays open.
    pub http: bool,
}

impl AuthClasses {
    /// Every kind of caller.
    pub const ALL: AuthClasses = AuthClasses {
        frameworks: true,
        agents: true,
        operators: true,
        http: true,
    };

    /// Parses `frameworks,agents,operators,http`, `all` or `none`.
    pub fn parse(list: &str) -> Result<AuthClasses, String> {
        let mut c = AuthClasses::default();
        for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "all" => c = AuthClasses::ALL,
                "none" => {}
                "frameworks" => c.frameworks = true,
                "agents" => c.agents = true,
                "operators" => c.operators = true,
                "http" => c.http = true,
                other => {
                    return Err(format!(
                        "--authenticate: unknown kind '{other}'; give a list of \
                         frameworks, agents, operators, http, or all"
                    ))
                }
            }
        }
        Ok(c)
    }

    /// Whether any kind of caller must present a token.
    pub fn any(&self) -> bool {
        self.frameworks || self.agents || self.operators || self.http
    }

    fn covers(&self, class: CallClass) -> bool {
        match class {
            CallClass::Frameworks => self.frameworks,
            CallClass::Agents => self.agents,
            CallClass::Operators => self.operators,
            CallClass::Http => self.http,
            CallClass::Peers | CallClass::Open => false,
        }
    }
}

/// Which kind of caller a request is, by its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallClass {
    /// A scheduler call.
    Frameworks,
    /// An agent's stream.
    Agents,
    /// An operator call.
    Operators,
    /// A page or an HTTP API.
    Http,
    /// Raft between masters: not authenticated by token (see
    /// docs/security.md; mutual TLS is the plan).
    Peers,
    /// `/health`: probes need no token.
    Open,
}

impl CallClass {
    /// The class in words, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            CallClass::Frameworks => "framework",
            CallClass::Agents => "agent",
            CallClass::Operators => "operator",
            CallClass::Http => "http",
            CallClass::Peers => "peer",
            CallClass::Open => "open",
        }
    }
}

/// The class of a request for `path`.
pub fn classify(path: &str) -> CallClass {
    if path == "/health" {
        return CallClass::Open;
    }
    // The Mesos v1 scheduler API over HTTP is a framework's, not a page's.
    if path == "/api/v1/scheduler" || path.starts_with("/api/v1/scheduler/") {
        return CallClass::Frameworks;
    }
    let Some(rest) = path.strip_prefix("/mezzanine.v1.") else {
        return CallClass::Http;
    };
    match rest.split('/').next() {
        Some("Scheduler") => CallClass::Frameworks,
        Some("AgentGateway") => CallClass::Agents,
        Some("RaftPeer") => CallClass::Peers,
        // The operator API, and any service added later: authenticated as
        // operators rather than left open by accident.
        _ => CallClass::Operators,
    }
}

/// How a master authenticates and authorizes (its flags).
#[derive(Debug, Clone, Default)]
pub struct SecurityConfig {
    /// Who must present a token (`--authenticate`; all with `--acls`).
    pub classes: AuthClasses,
    /// `--bootstrap-token-file`: the first admin token, made and written
    /// here when the file does not exist.
    pub bootstrap_token_file: Option<PathBuf>,
    /// The principal the bootstrap token is for.
    pub bootstrap_principal: String,
    /// `--acls`: the ACL document (validated), seeded when the group has
    /// none.
    pub acls: Option<String>,
    /// `--audit-log`: where the audit log's JSON lines go (also kept in
    /// memory for `/api/audit`).
    pub audit_log: Option<PathBuf>,
    /// `--rate-limits` and its flags: scheduler calls per principal.
    pub rate_limits: RateLimits,
}

/// The principal of the bootstrap token unless told otherwise.
pub const DEFAULT_ADMIN: &str = "admin";

/// What the guard holds: the replicated tokens and ACLs as last applied.
#[derive(Debug, Default)]
struct Published {
    tokens: BTreeMap<String, TokenRecord>,
    acls_json: String,
    acls: Option<Arc<Acls>>,
    /// Framework id → the principal that registered it.
    owners: BTreeMap<String, String>,
}

/// The API layer's view of tokens and ACLs. See the module docs.
#[derive(Debug)]
pub struct Guard {
    classes: AuthClasses,
    published: RwLock<Published>,
    /// This master's key for sandbox grants (see `mezz_proto::grant`).
    grant_key: Vec<u8>,
    audit: Audit,
    limiter: ratelimit::Limiter,
    /// The origin of the rate limiter's clock.
    started: std::time::Instant,
}

impl Guard {
    /// A guard that asks `classes` for tokens, with no tokens or ACLs yet.
    pub fn new(classes: AuthClasses) -> Arc<Guard> {
        Guard::with(classes, Audit::in_memory(), RateLimits::default())
            .expect("the OS gives randomness")
    }

    /// A guard that also audits to `audit` and enforces `limits`, with a
    /// fresh grant key.
    pub fn with(
        classes: AuthClasses,
        audit: Audit,
        limits: RateLimits,
    ) -> Result<Arc<Guard>, String> {
        Ok(Arc::new(Guard {
            classes,
            published: RwLock::new(Published::default()),
            grant_key: mezz_proto::grant::new_key()?,
            audit,
            limiter: ratelimit::Limiter::new(limits),
            started: std::time::Instant::now(),
        }))
    }

    /// The key agents verify sandbox grants with: `None` while this master
    /// authenticates nobody (agents then serve files as they always did).
    pub fn grant_key(&self) -> Option<&[u8]> {
        self.classes.any().then_some(self.grant_key.as_slice())
    }

    /// A grant for one task's sandbox on agent `agent_id`, valid for
    /// [`mezz_proto::grant::GRANT_SECS`] from `now`; empty while
    /// grants are off. The caller has checked `View` of the task's role.
    pub fn sign_grant(
        &self,
        framework_id: &str,
        task_id: &str,
        agent_id: &str,
        now: f64,
    ) -> (String, f64) {
        let expires = now.max(0.0) as u64 + mezz_proto::grant::GRANT_SECS;
        match self.grant_key() {
            Some(key) => (
                mezz_proto::grant::sign(
                    &mezz_proto::grant::agent_key(key, agent_id),
                    framework_id,
                    task_id,
                    agent_id,
                    expires,
                ),
                expires as f64,
            ),
            None => (String::new(), expires as f64),
        }
    }

    /// The audit log.
    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    /// Charges `cost` scheduler calls to `principal` (anonymous when
    /// none); refused while over its rate limit.
    pub fn rate_limit(&self, principal: Option<&Principal>, cost: f64) -> Result<(), Limited> {
        let who = principal.map(|p| p.0.as_str()).unwrap_or(ANONYMOUS);
        let now = self.started.elapsed().as_secs_f64();
        self.limiter.take(who, cost, now).inspect_err(|l| {
            self.audit.record(
                mezz_proto::unix_now(),
                "rate_limited",
                who,
                serde_json::json!({"retry_after_secs": l.retry_after_secs}),
            )
        })
    }

    /// Who must present a token.
    pub fn classes(&self) -> AuthClasses {
        self.classes
    }

    /// Takes the registry's tokens, ACLs and framework principals.
    pub fn publish(
        &self,
        tokens: &BTreeMap<String, TokenRecord>,
        acls_json: &str,
        owners: BTreeMap<String, String>,
    ) {
        let same_acls = self.read().acls_json == acls_json;
        // Validated before it was proposed; a document that no longer
        // parses (a later release's action) denies everything rather than
        // allowing everything.
        let acls = if same_acls {
            self.read().acls.clone()
        } else {
            (!acls_json.is_empty()).then(|| {
                Arc::new(Acls::parse(acls_json).unwrap_or_else(|e| {
                    tracing::error!("the replicated ACLs do not parse ({e}); denying everything");
                    Acls::default()
                }))
            })
        };
        let mut p = self.published.write().unwrap_or_else(|e| e.into_inner());
        p.tokens = tokens.clone();
        p.acls_json = acls_json.to_string();
        p.acls = acls;
        p.owners = owners;
    }

    /// Whether `principal` may act for framework `id`: a framework is its
    /// registering principal's alone; one registered without a token (or
    /// not known) is anyone's. The refusal says whose it is.
    pub fn check_owner(&self, principal: Option<&Principal>, id: &str) -> Result<(), String> {
        let p = self.read();
        let Some(owner) = p.owners.get(id) else {
            return Ok(());
        };
        match principal {
            Some(who) if who.0 == *owner => Ok(()),
            who => Err(self.denied_owner(who, id, owner)),
        }
    }

    fn denied_owner(&self, who: Option<&Principal>, id: &str, owner: &str) -> String {
        let name = who.map(|w| w.0.as_str()).unwrap_or(ANONYMOUS);
        self.audit.record(
            mezz_proto::unix_now(),
            "denied",
            name,
            serde_json::json!({"action": "act_for_framework", "object": format!("framework {id}")}),
        );
        format!(
            "principal '{name}' may not act for framework {id}: it was registered by \
             principal '{owner}'; subscribe with that principal's token"
        )
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Published> {
        // A writer that panicked left whole maps behind: keep serving.
        self.published.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks the `authorization` header of a call of `class` at `now`
    /// (Unix seconds): the caller's principal when it presented a valid
    /// token, `None` when this class needs none and none came.
    pub fn authenticate(
        &self,
        class: CallClass,
        header: Option<&str>,
        now: f64,
    ) -> Result<Option<Principal>, AuthError> {
        if class == CallClass::Open || class == CallClass::Peers {
            return Ok(None);
        }
        if !self.classes.covers(class) && header.is_none_or(|h| h.trim().is_empty()) {
            return Ok(None);
        }
        let token: Token = tokens::from_header(header)?;
        tokens::authenticate(&self.read().tokens, &token, now).map(Some)
    }

    /// The tokens as `mezz token ls` lists them.
    pub fn token_views(&self) -> Vec<mezz_proto::v1::TokenView> {
        self.read().tokens.values().map(tokens::view).collect()
    }

    /// The live tokens an id or a principal names.
    pub fn to_revoke(&self, id_or_principal: &str) -> Vec<String> {
        tokens::to_revoke(&self.read().tokens, id_or_principal)
    }

    /// The ACL document in force; empty when ACLs are off.
    pub fn acls_json(&self) -> String {
        self.read().acls_json.clone()
    }

    /// The ACLs in force; `None` when ACLs are off.
    pub fn acls(&self) -> Option<Arc<Acls>> {
        self.read().acls.clone()
    }

    /// The checks of a framework's SUBSCRIBE, on every path that takes
    /// one (gRPC and the Mesos API): the master stamps `info` with the
    /// caller's principal; a known framework id must be the caller's own;
    /// and, as Mesos does at registration, the ACLs must give the caller
    /// the role and the user its tasks run as unless a task names another.
    pub fn check_registration(
        &self,
        principal: Option<&Principal>,
        info: &mut mezz_proto::v1::FrameworkInfo,
    ) -> Result<(), RegistrationRefused> {
        info.principal = principal.map(|p| p.0.clone()).unwrap_or_default();
        if !info.id.is_empty() {
            self.check_owner(principal, &info.id)
                .map_err(RegistrationRefused::NotOwner)?;
        }
        self.check(principal, Action::RegisterFramework(&info.role))
            .map_err(RegistrationRefused::Denied)?;
        if !info.user.is_empty() {
            self.check(principal, Action::RunTaskAs(&info.user))
                .map_err(RegistrationRefused::Denied)?;
        }
        Ok(())
    }

    /// Whether `principal` may launch the tasks of `accept` as the users
    /// their commands name (a task without a user runs as its framework's,
    /// checked at registration).
    pub fn check_launch_users(
        &self,
        principal: Option<&Principal>,
        accept: &mezz_proto::v1::AcceptRequest,
    ) -> Result<(), Denied> {
        launches(accept)
            .filter_map(|t| t.command.as_ref())
            .map(|c| c.user.as_str())
            .filter(|u| !u.is_empty())
            .try_for_each(|user| self.check(principal, Action::RunTaskAs(user)))
    }

    /// Whether `principal` may do `action`: always when ACLs are off; with
    /// ACLs on, a caller without a principal is `anonymous`.
    pub fn check(&self, principal: Option<&Principal>, action: Action<'_>) -> Result<(), Denied> {
        let Some(acls) = self.acls() else {
            return Ok(());
        };
        let anonymous = Principal(ANONYMOUS.into());
        acls.check(principal.unwrap_or(&anonymous), action)
            .inspect_err(|d| {
                self.audit.record(
                    mezz_proto::unix_now(),
                    "denied",
                    &d.principal,
                    serde_json::json!({"action": d.action, "object": d.object}),
                )
            })
    }
}

/// The principal of a caller that presented no token, in ACL decisions.
pub const ANONYMOUS: &str = "anonymous";

/// `state` with only what `principal` may view: the frameworks of roles it
/// may view and their tasks, the roles it may view. Masters and agents
/// stay (they hold nobody's work).
pub fn filter_state(state: &mut ClusterState, acls: &Acls, principal: &Principal) {
    let may = |role: &str| acls.allows(principal, Action::View(role));
    let mut visible = std::collections::BTreeSet::new();
    state.frameworks.retain(|f| {
        let ok = may(&f.role);
        if ok {
            visible.insert(f.id.clone());
        }
        ok
    });
    // A task keeps its framework's role after the framework is gone.
    state
        .tasks
        .retain(|t| visible.contains(&t.framework_id) || may(&t.role));
    state.roles.retain(|r| may(&r.name));
    state.services.retain(|s| visible.contains(&s.framework_id));
    // Positions stay cluster-wide: others' waiting work shows as gaps.
    state.queue.retain(|q| visible.contains(&q.framework_id));
}

/// Why a SUBSCRIBE was refused ([`Guard::check_registration`]).
#[derive(Debug)]
pub enum RegistrationRefused {
    /// The framework id belongs to another principal (the message names
    /// both).
    NotOwner(String),
    /// The ACLs deny the role or the user.
    Denied(Denied),
}

/// The tasks an ACCEPT launches, over all its LAUNCH operations.
pub fn launches(
    accept: &mezz_proto::v1::AcceptRequest,
) -> impl Iterator<Item = &mezz_proto::v1::TaskInfo> {
    accept
        .operations
        .iter()
        .filter_map(|op| match &op.operation {
            Some(mezz_proto::v1::operation::Operation::Launch(l)) => Some(l.tasks.iter()),
            _ => None,
        })
        .flatten()
}

/// What an ACCEPT costs against its principal's rate limit: one per task
/// it launches (so launching is what is limited, not the number of calls
/// it is split into), and at least one.
pub fn accept_cost(accept: &mezz_proto::v1::AcceptRequest) -> f64 {
    launches(accept).count().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_parse() {
        assert_eq!(AuthClasses::parse("all").unwrap(), AuthClasses::ALL);
        let c = AuthClasses::parse("frameworks, http").unwrap();
        assert!(c.frameworks && c.http && !c.agents && !c.operators);
        assert!(!AuthClasses::parse("").unwrap().any());
        assert!(AuthClasses::parse("people")
            .unwrap_err()
            .contains("unknown kind 'people'"));
    }

    #[test]
    fn paths_classify() {
        assert_eq!(classify("/health"), CallClass::Open);
        assert_eq!(classify("/"), CallClass::Http);
        assert_eq!(classify("/api/state"), CallClass::Http);
        assert_eq!(
            classify("/mezzanine.v1.Scheduler/Subscribe"),
            CallClass::Frameworks
        );
        assert_eq!(
            classify("/mezzanine.v1.AgentGateway/Attach"),
            CallClass::Agents
        );
        assert_eq!(
            classify("/mezzanine.v1.Operator/GetState"),
            CallClass::Operators
        );
        assert_eq!(classify("/mezzanine.v1.RaftPeer/Send"), CallClass::Peers);
        assert_eq!(classify("/api/v1/scheduler"), CallClass::Frameworks);
        assert_eq!(classify("/master/state"), CallClass::Http);
        assert_eq!(classify("/mezzanine.v1.Other/X"), CallClass::Operators);
    }

    #[test]
    fn the_guard_asks_only_the_classes_it_covers() {
        let g = Guard::new(AuthClasses::parse("operators").unwrap());
        let t = Token::generate().unwrap();
        let mut table = BTreeMap::new();
        table.insert(
            t.id().to_string(),
            tokens::record(&t, "alice", b"s", 0.0, 0.0),
        );
        g.publish(&table, "", BTreeMap::new());
        let good = mezz_proto::auth::bearer_header(&t);
        assert_eq!(g.authenticate(CallClass::Frameworks, None, 1.0), Ok(None));
        assert_eq!(
            g.authenticate(CallClass::Operators, None, 1.0),
            Err(AuthError::Missing)
        );
        assert_eq!(
            g.authenticate(CallClass::Operators, Some(&good), 1.0),
            Ok(Some(Principal("alice".into())))
        );
        // A token given where none is needed still names the caller.
        assert_eq!(
            g.authenticate(CallClass::Http, Some(&good), 1.0),
            Ok(Some(Principal("alice".into())))
        );
        assert_eq!(g.authenticate(CallClass::Open, Some("junk"), 1.0), Ok(None));
        // ACLs off: everything allowed; on: deny by default.
        assert!(g.check(None, Action::CreateToken).is_ok());
        g.publish(
            &table,
            r#"{"create_tokens": [{"principals": ["alice"]}]}"#,
            [("f1".to_string(), "alice".to_string())].into(),
        );
        let alice = Principal("alice".into());
        assert!(g.check(Some(&alice), Action::CreateToken).is_ok());
        assert!(g.check(Some(&alice), Action::View("x")).is_err());
        let e = g.check(None, Action::CreateToken).unwrap_err();
        assert_eq!(e.principal, ANONYMOUS);
        // Frameworks belong to who registered them.
        assert!(g.check_owner(Some(&alice), "f1").is_ok());
        assert!(
            g.check_owner(Some(&alice), "f2").is_ok(),
            "unknown: anyone's"
        );
        let e = g
            .check_owner(Some(&Principal("bob".into())), "f1")
            .unwrap_err();
        assert!(e.contains("'bob'") && e.contains("'alice'"), "{e}");
        assert!(g.check_owner(None, "f1").is_err());
    }
}
