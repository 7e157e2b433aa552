//! Tokens, ACLs, framework owners and rate limits on the Mesos API.

use super::super::*;

/// With tokens and ACLs on, the Mesos API makes the checks the gRPC
/// scheduler service makes: no token is 401; a principal the ACLs do not
/// let register in a role is 403, naming principal, action and role; a
/// framework is acted for only by the principal that registered it (403
/// for another, even one holding its stream id); and calls over a
/// principal's rate limit get 429 with `Retry-After`.
#[test]
fn the_mesos_api_checks_tokens_acls_owners_and_rate_limits() {
    const T: Duration = Duration::from_secs(30);
    let dir = cluster_dir();
    let addr = format!("127.0.0.1:{}", free_port());
    let acls = dir.path().join("acls.json");
    std::fs::write(
        &acls,
        r#"{
  "register_frameworks": [
    {"principals": ["alice"], "roles": ["eng"]},
    {"principals": ["bob"], "roles": ["ops"]}
  ],
  "run_tasks": [{"principals": ["alice", "bob"], "users": "ANY"}],
  "create_tokens": [{"principals": ["admin"]}],
  "manage_acls": [{"principals": ["admin"]}]
}"#,
    )
    .expect("acls");
    let limits = dir.path().join("limits.json");
    std::fs::write(
        &limits,
        r#"{"principals": {"alice": {"calls_per_sec": 0.2, "burst": 3}}}"#,
    )
    .expect("limits");
    let admin_file = dir.path().join("admin.token");
    let flags: Vec<String> = vec![
        "--acls".into(),
        acls.display().to_string(),
        "--rate-limits".into(),
        limits.display().to_string(),
    ];
    let (_master, _) = start_master_with_admin(dir.path(), &addr, &flags);
    let admin = admin_file.display().to_string();
    let token = |who: &str| {
        let mut made = None;
        wait_for(&format!("a token for {who}"), T, || {
            let out = mezz(
                &[
                    "token",
                    "create",
                    who,
                    "--master",
                    &addr,
                    "--credentials",
                    &admin,
                ],
                T,
            );
            made = Some(text(&out.stdout).trim().to_string());
            out.status.success()
        });
        format!("Bearer {}", made.expect("a token"))
    };
    let (alice, bob, carol) = (token("alice"), token("bob"), token("carol"));
    let json = ("Content-Type", "application/json");
    let subscribe = |role: &str, id: Option<&str>| {
        let id = id.map_or(String::new(), |i| format!(r#","id":{{"value":"{i}"}}"#));
        format!(
            r#"{{"type":"SUBSCRIBE","subscribe":{{"framework_info":{{"user":"nobody","name":"m","roles":["{role}"],"capabilities":[{{"type":"MULTI_ROLE"}}]{id}}}}}}}"#
        )
    };

    let (code, _, body) = request(
        &addr,
        "POST",
        "/api/v1/scheduler",
        &[json],
        subscribe("eng", None).as_bytes(),
    );
    assert_eq!(code, 401, "{body}");
    let (code, _, body) = request(
        &addr,
        "POST",
        "/api/v1/scheduler",
        &[json, ("Authorization", &carol)],
        subscribe("eng", None).as_bytes(),
    );
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("carol") && body.contains("register_frameworks") && body.contains("eng"),
        "{body}"
    );

    let mut sub = RawSubscription::start_with(
        &addr,
        "application/json",
        subscribe("eng", None).as_bytes(),
        &[("Authorization", &alice)],
    );
    let first = sub.next_record();
    assert_eq!(first["type"], "SUBSCRIBED", "{first}");
    let fid = first["subscribed"]["framework_id"]["value"]
        .as_str()
        .expect("framework id")
        .to_string();

    // Bob may register in ops, but not take over alice's framework, nor act
    // for it with its stream id.
    let (code, _, body) = request(
        &addr,
        "POST",
        "/api/v1/scheduler",
        &[json, ("Authorization", &bob)],
        subscribe("ops", Some(&fid)).as_bytes(),
    );
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("alice"), "{body}");
    let decline = format!(
        r#"{{"type":"DECLINE","framework_id":{{"value":"{fid}"}},"decline":{{"offer_ids":[]}}}}"#
    );
    let (code, _, body) = request(
        &addr,
        "POST",
        "/api/v1/scheduler",
        &[
            json,
            ("Authorization", &bob),
            ("Mesos-Stream-Id", &sub.stream_id),
        ],
        decline.as_bytes(),
    );
    assert_eq!(code, 403, "{body}");

    // Alice's own calls pass until her bucket (burst 3, one SUBSCRIBE
    // spent) is empty; then 429 with a Retry-After.
    let mut answers = vec![];
    let revive = format!(r#"{{"type":"REVIVE","framework_id":{{"value":"{fid}"}}}}"#);
    for _ in 0..6 {
        let (code, headers, body) = request(
            &addr,
            "POST",
            "/api/v1/scheduler",
            &[
                json,
                ("Authorization", &alice),
                ("Mesos-Stream-Id", &sub.stream_id),
            ],
            revive.as_bytes(),
        );
        answers.push((
            code,
            header(&headers, "retry-after").map(str::to_string),
            body,
        ));
    }
    assert_eq!(answers[0].0, 202, "{answers:?}");
    let limited = answers
        .iter()
        .find(|(code, _, _)| *code == 429)
        .unwrap_or_else(|| panic!("no call was rate limited: {answers:?}"));
    assert!(
        limited
            .1
            .as_deref()
            .is_some_and(|s| s.parse::<u64>().is_ok()),
        "{answers:?}"
    );
    assert!(limited.2.contains("alice"), "{answers:?}");
}
