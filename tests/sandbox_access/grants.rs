//! A sandbox opens only with the master's grant, for a viewer of the
//! task's role, and never beyond the sandbox.

use super::super::*;

#[test]
fn a_sandbox_opens_only_to_a_viewer_with_the_masters_grant_and_only_inside() {
    let mut c = Shared::start(&[]);
    c.start_agent();
    let (bob_fw, bob_id) = c.run("bob", "ops", "echo bob-private-output; exec sleep 300");
    let bob_sandbox = c.sandbox(&bob_fw, &bob_id);
    wait_for("bob's sandbox", T, || bob_sandbox.join("stdout").exists());
    // Alice's task plants links at a host secret and at bob's sandbox.
    let script = format!(
        "ln -s /etc/shadow shadow; ln -s {b} bobs; ln -s {b}/stdout bobout; \
         echo alice-output; exec sleep 300",
        b = bob_sandbox.display()
    );
    let (alice_fw, alice_id) = c.run("alice", "eng", &script);
    wait_for("alice's links", T, || {
        c.sandbox(&alice_fw, &alice_id)
            .join("bobout")
            .symlink_metadata()
            .is_ok()
    });
    let rt = runtime();
    let (alice, bob, admin) = (c.token("alice"), c.token("bob"), c.token("admin"));

    // mezz logs: each reads its own; alice cannot read bob's.
    let out = c.mezz_as("alice", &["logs", &alice_id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("alice-output"));
    let out = c.mezz_as("admin", &["logs", &bob_id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("bob-private-output"));
    let out = c.mezz_as("admin", &["logs", &alice_id, "--list"]);
    assert!(
        text(&out.stdout).contains("bobout"),
        "{}",
        text(&out.stdout)
    );
    let out = c.mezz_as("alice", &["logs", &bob_id]);
    assert_ne!(out.status.code(), Some(0));
    assert!(!text(&out.stdout).contains("bob-private-output"));

    // The grant RPC: PERMISSION_DENIED naming principal, action, object.
    let e = rt
        .block_on(grant_for(&c.addr, alice, &bob_fw, &bob_id))
        .expect_err("alice may not view ops");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    for want in ["'alice'", "view", "role 'ops'"] {
        assert!(e.message().contains(want), "{}", e.message());
    }
    let alice_grant = rt
        .block_on(grant_for(&c.addr, alice, &alice_fw, &alice_id))
        .expect("alice's own task");
    let bob_grant = rt
        .block_on(grant_for(&c.addr, bob, &bob_fw, &bob_id))
        .expect("bob's own task");
    assert!(alice_grant.starts_with("v1.") && bob_grant.starts_with("v1."));

    // Direct to the agent: without a grant, forged, for another task,
    // malformed, or with its expiry moved: refused.
    let key = mezz_proto::grant::new_key().expect("randomness");
    let forged = mezz_proto::grant::sign(&key, &bob_fw, &bob_id, "any-agent", u64::MAX / 2);
    let (_, expiry_and_tag) = bob_grant.split_at(3);
    let (expiry, tag) = expiry_and_tag.split_once('.').expect("v1.E.T");
    let later = expiry.parse::<u64>().expect("expiry") + 3600;
    let stretched = format!("v1.{later}.{tag}");
    let earlier = format!("v1.{}.{tag}", expiry.parse::<u64>().expect("expiry") - 3600);
    for (what, grant) in [
        ("no grant", None),
        ("forged", Some(forged.as_str())),
        ("another task's", Some(alice_grant.as_str())),
        ("malformed", Some("v1.1.zz")),
        ("stretched", Some(stretched.as_str())),
        ("backdated", Some(earlier.as_str())),
    ] {
        let e = rt
            .block_on(read_direct(
                &c.agent_addr,
                grant,
                &bob_fw,
                &bob_id,
                "stdout",
            ))
            .expect_err(what);
        assert_eq!(e.code(), Code::PermissionDenied, "{what}: {e:?}");
        assert!(e.message().contains("grant"), "{what}: {}", e.message());
    }
    // List and tail too.
    let e = rt
        .block_on(async {
            AgentFilesClient::new(channel(&c.agent_addr, None, Some(&alice_grant)).await)
                .list_files(ListFilesRequest {
                    framework_id: bob_fw.clone(),
                    task_id: bob_id.clone(),
                    path: String::new(),
                })
                .await
        })
        .expect_err("list with another task's grant");
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = rt
        .block_on(async {
            AgentFilesClient::new(channel(&c.agent_addr, None, None).await)
                .tail_file(TailFileRequest {
                    framework_id: bob_fw.clone(),
                    task_id: bob_id.clone(),
                    path: "stdout".into(),
                    length: 0,
                })
                .await
        })
        .expect_err("tail without a grant");
    assert_eq!(e.code(), Code::PermissionDenied);
    // The real grant reads.
    let data = rt
        .block_on(read_direct(
            &c.agent_addr,
            Some(&bob_grant),
            &bob_fw,
            &bob_id,
            "stdout",
        ))
        .expect("bob's grant reads bob's output");
    assert!(String::from_utf8_lossy(&data).contains("bob-private-output"));

    // Behind a valid grant, nothing outside the sandbox.
    let sibling = format!("../{bob_id}/stdout");
    for (path, code) in [
        ("shadow", Code::PermissionDenied),
        ("bobout", Code::PermissionDenied),
        ("bobs/stdout", Code::PermissionDenied),
        ("../../../../etc/shadow", Code::InvalidArgument),
        ("/etc/shadow", Code::InvalidArgument),
        (sibling.as_str(), Code::InvalidArgument),
    ] {
        let e = rt
            .block_on(read_direct(
                &c.agent_addr,
                Some(&alice_grant),
                &alice_fw,
                &alice_id,
                path,
            ))
            .expect_err(path);
        assert_eq!(e.code(), code, "{path}: {e:?}");
    }

    // The master's pages: alice is refused bob's task and output.
    for path in [
        format!("/api/tasks/{bob_fw}/{bob_id}/files/stdout"),
        format!("/tasks/{bob_fw}/{bob_id}"),
    ] {
        let (code, _, body) = http_get_full(&c.addr, &path, Some(&bearer(alice)));
        assert_eq!(code, 403, "{path}: {body}");
        assert!(
            body.contains("'alice'") && body.contains("role 'ops'"),
            "{body}"
        );
        assert!(!body.contains("bob-private-output"));
    }
    let (code, _, body) = http_get_full(
        &c.addr,
        &format!("/api/tasks/{alice_fw}/{alice_id}/files/stdout"),
        Some(&bearer(alice)),
    );
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("alice-output"),
        "the page's own grant reads: {body}"
    );
    let (code, _, body) = http_get_full(
        &c.addr,
        &format!("/tasks/{alice_fw}/{alice_id}"),
        Some(&bearer(alice)),
    );
    assert_eq!(code, 200);
    assert!(
        body.contains("alice-output"),
        "the task page shows the tail"
    );

    // Traversal through the pages, even for admin: never a host file.
    for path in [
        format!("/api/tasks/{alice_fw}/{alice_id}/files/shadow"),
        format!("/api/tasks/{alice_fw}/{alice_id}/files/bobout"),
        format!("/api/tasks/{alice_fw}/{alice_id}/files/..%2f..%2f..%2fetc%2fshadow"),
        format!("/api/tasks/{alice_fw}/{alice_id}/files/%2e%2e%2f{bob_id}%2fstdout"),
        format!("/api/tasks/{alice_fw}/{alice_id}/files/%2fetc%2fshadow"),
        format!("/api/tasks/{alice_fw}/%2e%2e/files/stdout"),
        "/api/tasks/%2e%2e/%2e%2e/files/stdout".to_string(),
        format!("/api/tasks/{alice_fw}/{alice_id}/files/%2e%2e/%2e%2e/%2e%2e/etc/shadow"),
        format!("/tasks/{alice_fw}/%2e%2e%2f{bob_id}"),
    ] {
        let (code, _, body) = http_get_full(&c.addr, &path, Some(&bearer(admin)));
        assert!(matches!(code, 400 | 404), "{path}: {code} {body}");
        assert!(!body.contains("root:"), "{path}: a host file: {body}");
        assert!(!body.contains("bob-private-output"), "{path}: {body}");
    }
}
