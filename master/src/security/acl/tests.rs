use super::*;

/// The ACLs the matrix below is checked against (also used, as a file, by
/// the cluster test `tests/security.rs`).
const DOC: &str = r#"{
  "register_frameworks": [
    {"principals": ["alice"], "roles": ["eng"]},
    {"principals": ["bob"], "roles": ["ops/*"]},
    {"principals": ["admin"], "roles": "ANY"}
  ],
  "run_tasks": [
    {"principals": ["alice", "bob"], "users": ["nobody"]},
    {"principals": ["admin"], "users": "ANY"}
  ],
  "register_agents": [{"principals": ["agent"]}],
  "set_quotas": [{"principals": ["admin"], "roles": "ANY"}],
  "set_weights": [{"principals": ["admin"], "roles": "ANY"}, {"principals": ["bob"], "roles": ["ops"]}],
  "kill_tasks": [{"principals": ["admin"], "roles": "ANY"}, {"principals": ["alice"], "roles": ["eng"]}],
  "teardown_frameworks": [{"principals": ["admin"], "roles": "ANY"}],
  "view": [
    {"principals": ["alice"], "roles": ["eng", "shared"]},
    {"principals": ["bob"], "roles": ["ops/*", "shared"]},
    {"principals": ["admin"], "roles": "ANY"}
  ],
  "create_tokens": [{"principals": ["admin"]}],
  "manage_acls": [{"principals": ["admin"]}],
  "read_audit": [{"principals": ["admin", "auditor"]}]
}"#;

fn p(name: &str) -> Principal {
    Principal(name.into())
}

#[test]
fn the_matrix() {
    use Action::*;
    let acls = Acls::parse(DOC).expect("valid");
    let cases: Vec<(&str, Action, bool)> = vec![
        ("alice", RegisterFramework("eng"), true),
        ("alice", RegisterFramework("ops"), false),
        ("alice", RegisterFramework("eng/sub"), false),
        ("alice", RegisterFramework("*"), false),
        ("bob", RegisterFramework("ops"), true),
        ("bob", RegisterFramework("ops/batch"), true),
        ("bob", RegisterFramework("ops/batch/nightly"), true),
        ("bob", RegisterFramework("opsx"), false),
        ("bob", RegisterFramework("eng"), false),
        ("admin", RegisterFramework("anything"), true),
        ("carol", RegisterFramework("eng"), false),
        ("alice", RunTaskAs("nobody"), true),
        ("alice", RunTaskAs("root"), false),
        ("bob", RunTaskAs("nobody"), true),
        ("bob", RunTaskAs("nobody/*"), false),
        ("admin", RunTaskAs("root"), true),
        ("carol", RunTaskAs("nobody"), false),
        ("agent", RegisterAgent, true),
        ("alice", RegisterAgent, false),
        ("admin", RegisterAgent, false),
        ("admin", SetQuota("eng"), true),
        ("alice", SetQuota("eng"), false),
        ("bob", SetQuota("ops"), false),
        ("admin", SetWeight("ops"), true),
        ("bob", SetWeight("ops"), true),
        ("bob", SetWeight("ops/batch"), false),
        ("alice", SetWeight("eng"), false),
        ("admin", KillTask("ops"), true),
        ("alice", KillTask("eng"), true),
        ("alice", KillTask("ops"), false),
        ("bob", KillTask("ops"), false),
        ("admin", TeardownFramework("eng"), true),
        ("alice", TeardownFramework("eng"), false),
        ("bob", TeardownFramework("ops"), false),
        ("alice", View("eng"), true),
        ("alice", View("shared"), true),
        ("alice", View("ops"), false),
        ("alice", View("eng/sub"), false),
        ("bob", View("ops"), true),
        ("bob", View("ops/batch"), true),
        ("bob", View("shared"), true),
        ("bob", View("eng"), false),
        ("admin", View("eng"), true),
        ("admin", View("*"), true),
        ("carol", View("shared"), false),
        ("agent", View("eng"), false),
        ("admin", CreateToken, true),
        ("alice", CreateToken, false),
        ("agent", CreateToken, false),
        ("admin", ManageAcls, true),
        ("bob", ManageAcls, false),
        ("admin", ReadAudit, true),
        ("auditor", ReadAudit, true),
        ("auditor", View("eng"), false),
        ("alice", ReadAudit, false),
    ];
    assert!(cases.len() >= 50);
    let mut wrong = Vec::new();
    for (who, action, want) in &cases {
        let got = acls.allows(&p(who), *action);
        if got != *want {
            wrong.push(format!("{who} {action:?}: want {want}, got {got}"));
        }
        let checked = acls.check(&p(who), *action);
        assert_eq!(checked.is_ok(), got);
        if let Err(d) = checked {
            let m = d.to_string();
            assert!(
                m.contains(&format!("'{who}'")) && m.contains(action.name()),
                "{m}"
            );
            assert!(m.contains(&action.object_words()), "{m}");
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn no_acls_deny_everything() {
    let none = Acls::parse("{}").expect("valid");
    assert!(!none.allows(&p("admin"), Action::View("eng")));
    assert!(!none.allows(&p("admin"), Action::CreateToken));
    let empty_list = Acls::parse(r#"{"view": []}"#).expect("valid");
    assert!(!empty_list.allows(&p("admin"), Action::View("eng")));
}

#[test]
fn errors_name_the_entry() {
    for (doc, want) in [
        ("[]", "JSON object"),
        ("{", "not valid JSON"),
        (r#"{"fly": []}"#, "unknown action 'fly'"),
        (r#"{"view": {}}"#, "'view' must be a list"),
        (
            r#"{"view": [{"roles": "ANY"}]}"#,
            "view[0]: 'principals' is missing",
        ),
        (
            r#"{"view": [{"principals": "ANY", "roles": "ANY"}, {"principals": ["a"]}]}"#,
            "view[1]: 'roles' is missing",
        ),
        (
            r#"{"run_tasks": [{"principals": "ANY", "roles": "ANY"}]}"#,
            "run_tasks[0]: unknown key 'roles'",
        ),
        (
            r#"{"view": [{"principals": "all", "roles": "ANY"}]}"#,
            "view[0]: 'principals' is the string \"all\"",
        ),
        (
            r#"{"view": [{"principals": [""], "roles": "ANY"}]}"#,
            "view[0]: 'principals'[0] must be a non-empty string",
        ),
        (
            r#"{"create_tokens": [{"principals": ["a"], "roles": ["x"]}]}"#,
            "create_tokens[0]: unknown key 'roles'",
        ),
    ] {
        let e = Acls::parse(doc).expect_err(doc);
        assert!(e.contains(want), "{doc}: {e}");
    }
}

#[test]
fn the_canonical_form_parses_to_the_same_acls() {
    let c = Acls::canonical(DOC).expect("valid");
    assert_eq!(Acls::parse(&c), Acls::parse(DOC));
    assert_eq!(Acls::canonical(&c).expect("valid"), c, "stable");
}
