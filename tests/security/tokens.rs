//! Every kind of bad token refused with its reason, over gRPC and HTTP.

use super::super::*;

#[test]
fn every_bad_token_is_refused_with_its_reason_over_grpc_and_http() {
    let m = Master::start(&["--authenticate", "all"]);
    let (alice, alice_file) = m.token("alice", &[]);
    let (short, _) = m.token("shorty", &["--expires", "1s"]);
    let (gone, _) = m.token("leaver", &[]);
    let out = m.mezz_as(&m.admin_file, &["token", "revoke", "leaver"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let alice_id = alice.split('_').nth(1).expect("id");
    let wrong = format!("mezz_{alice_id}_{}", "0".repeat(64));
    let unknown = format!("mezz_{}_{}", "f".repeat(16), "1".repeat(64));

    let rt = runtime();
    // The one that works, over both.
    assert!(rt
        .block_on(grpc_state(&m.addr, Some(&bearer(&alice))))
        .is_ok());
    assert_eq!(
        http_get_as(&m.addr, "/api/state", Some(&bearer(&alice))).0,
        200
    );
    // /health stays open for probes.
    assert_eq!(http_get_as(&m.addr, "/health", None).0, 200);

    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("no token", None, "no token"),
        (
            "malformed",
            Some("Bearer nonsense".into()),
            "malformed token",
        ),
        (
            "wrong scheme",
            Some(format!("Digest {alice}")),
            "malformed token",
        ),
        ("wrong secret", Some(bearer(&wrong)), "wrong token"),
        ("unknown id", Some(bearer(&unknown)), "unknown token"),
        ("revoked", Some(bearer(&gone)), "revoked token"),
    ];
    for (what, auth, want) in &cases {
        let status = rt
            .block_on(grpc_state(&m.addr, auth.as_deref()))
            .expect_err(what);
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
        assert!(
            status.message().contains(want),
            "{what}: {}",
            status.message()
        );
        let (code, body) = http_get_as(&m.addr, "/api/state", auth.as_deref());
        assert_eq!(code, 401, "{what}: {body}");
        assert!(body.contains(want), "{what}: {body}");
        let (code, _) = http_get_as(&m.addr, "/", auth.as_deref());
        assert_eq!(code, 401, "{what}: the status page");
    }
    // What to do comes with the refusal.
    let (_, body) = http_get_as(&m.addr, "/api/state", None);
    assert!(
        body.contains("MEZZ_TOKEN") && body.contains("--credentials"),
        "{body}"
    );

    // An expired token: valid for a second, then refused as expired.
    wait_for("the short token to expire", T, || {
        rt.block_on(grpc_state(&m.addr, Some(&bearer(&short))))
            .is_err_and(|s| {
                s.code() == Code::Unauthenticated && s.message().contains("expired token")
            })
    });
    let (code, body) = http_get_as(&m.addr, "/api/state", Some(&bearer(&short)));
    assert_eq!(code, 401);
    assert!(body.contains("expired token"), "{body}");

    // The CLI: without a token, with a credentials file others can read.
    let out = mezz(&["ps", "--master", &m.addr], T);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("no token"),
        "{}",
        text(&out.stderr)
    );
    let open = m.dir.path().join("open.token");
    std::fs::write(&open, format!("{alice}\n")).expect("write");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let out = m.mezz_as(&open, &["ps"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("chmod 600"),
        "{}",
        text(&out.stderr)
    );
    let out = m.mezz_as(&alice_file, &["ps"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // `token ls` lists ids, never secrets.
    let out = m.mezz_as(&m.admin_file, &["token", "ls"]);
    let listed = text(&out.stdout);
    assert!(
        listed.contains(alice_id) && listed.contains("revoked"),
        "{listed}"
    );
    for t in [&m.admin, &alice, &short, &gone] {
        assert!(!listed.contains(secret(t)), "a secret in `token ls`");
        assert!(!m.log().contains(secret(t)), "a secret in the master's log");
    }
    assert!(m.log().contains("call refused"), "refusals are logged");
}
