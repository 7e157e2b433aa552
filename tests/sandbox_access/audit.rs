//! What the audit log records, and that it never holds a secret.

use super::super::*;

#[test]
fn the_audit_log_has_operator_actions_kills_first_uses_and_denials_but_no_secret() {
    let mut c = Shared::start(&[]);
    c.start_agent();
    let (fw, id) = c.run("alice", "eng", "exec sleep 300");
    let rt = runtime();
    let (admin, alice) = (c.token("admin").to_string(), c.token("alice").to_string());
    rt.block_on(async {
        let mut op = OperatorClient::new(channel(&c.addr, Some(&bearer(&admin)), None).await);
        op.set_quota(SetQuotaRequest {
            role: "eng".into(),
            ..Default::default()
        })
        .await
        .expect("quota");
        op.set_weight(SetWeightRequest {
            role: "eng".into(),
            weight: 2.0,
        })
        .await
        .expect("weight");
        // Alice is denied a weight.
        let e = OperatorClient::new(channel(&c.addr, Some(&bearer(&alice)), None).await)
            .set_weight(SetWeightRequest {
                role: "ops".into(),
                weight: 3.0,
            })
            .await
            .expect_err("alice may not set weights");
        assert_eq!(e.code(), Code::PermissionDenied);
    });
    let out = c.mezz_as("admin", &["token", "create", "carol"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let carol = text(&out.stdout).trim().to_string();
    let out = c.mezz_as("admin", &["token", "revoke", "carol"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let acl_file = c.dir.path().join("acls.json");
    let out = c.mezz_as("admin", &["acl", "set", &acl_file.display().to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = c.mezz_as("admin", &["kill", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // The audit page: alice is refused (and that refusal is audited too).
    let (code, _, body) = http_get_full(&c.addr, "/api/audit", Some(&bearer(&alice)));
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("read_audit"), "{body}");
    let e = rt
        .block_on(async {
            OperatorClient::new(channel(&c.addr, Some(&bearer(&alice)), None).await)
                .get_audit(GetAuditRequest { limit: 0 })
                .await
        })
        .expect_err("alice may not read the audit log");
    assert_eq!(e.code(), Code::PermissionDenied);

    let want = [
        ("set_quota", "admin"),
        ("set_weight", "admin"),
        ("denied", "alice"),
        ("create_token", "admin"),
        ("revoke_token", "admin"),
        ("set_acls", "admin"),
        ("kill", "admin"),
        ("token_first_use", "alice"),
        ("token_first_use", "admin"),
    ];
    wait_for("every entry in the audit file", T, || {
        let entries = c.audit();
        want.iter().all(|(event, who)| {
            entries
                .iter()
                .any(|e| e["event"] == *event && e["principal"] == *who)
        })
    });
    let entries = c.audit();
    let kill = entries
        .iter()
        .find(|e| e["event"] == "kill")
        .expect("the kill");
    assert_eq!(kill["task_id"], id.as_str());
    assert_eq!(kill["framework_id"], fw.as_str());
    let denied = entries
        .iter()
        .find(|e| {
            e["event"] == "denied" && e["principal"] == "alice" && e["action"] == "set_weights"
        })
        .expect("alice's denial");
    assert_eq!(denied["object"], "role 'ops'");
    assert!(entries
        .iter()
        .any(|e| e["event"] == "denied" && e["action"] == "read_audit"));
    // A first use is once per token and address, not per call.
    let firsts = entries
        .iter()
        .filter(|e| e["event"] == "token_first_use" && e["principal"] == "alice")
        .count();
    assert_eq!(firsts, 1, "{entries:?}");
    assert!(entries
        .iter()
        .all(|e| e["time"].as_f64().is_some_and(|t| t > 1.0e9)));

    // Admin reads the same entries over HTTP and gRPC.
    let (code, _, body) = http_get_full(&c.addr, "/api/audit?limit=500", Some(&bearer(&admin)));
    assert_eq!(code, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    let events: Vec<&str> = page["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["event"].as_str())
        .collect();
    for (event, _) in want {
        assert!(events.contains(&event), "{event} in {events:?}");
    }
    let lines = rt
        .block_on(async {
            OperatorClient::new(channel(&c.addr, Some(&bearer(&admin)), None).await)
                .get_audit(GetAuditRequest { limit: 3 })
                .await
        })
        .expect("admin reads the audit log")
        .into_inner()
        .lines;
    assert_eq!(lines.len(), 3);

    // Never a secret: token ids only.
    let file = std::fs::read_to_string(&c.audit_file).expect("audit file");
    for t in [&admin, &alice, &carol] {
        let secret = t.rsplit('_').next().expect("a token");
        assert!(!file.contains(secret), "a secret in the audit log");
        assert!(!body.contains(secret), "a secret in /api/audit");
    }
    let carol_id = carol.split('_').nth(1).expect("id");
    assert!(file.contains(carol_id), "tokens are named by id");
}
