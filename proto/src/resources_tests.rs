use super::*;

#[test]
fn roles_are_checked_as_mesos_does() {
    for ok in [
        "*",
        "eng",
        "eng/ml",
        "a.b",
        "team_1/x-y",
        &"r".repeat(MAX_ROLE_LEN),
    ] {
        assert!(check_role(ok).is_ok(), "{ok} refused");
    }
    for bad in [
        "",
        ".",
        "..",
        "../<script>",
        "eng/../x",
        "/eng",
        "eng/",
        "eng//ml",
        "eng ml",
        "eng\tml",
        "-eng",
        "eng/-ml",
        "*/eng",
        "eng/*",
        "é",
        &"r".repeat(MAX_ROLE_LEN + 1),
    ] {
        assert!(check_role(bad).is_err(), "{bad:?} accepted");
    }
    assert!(check_role("../<script>").unwrap_err().contains("'..'"));
}

#[test]
fn parse_display_roundtrip() {
    let text = "cpus:4;mem:8192;disk:10000;ports:[31000-32000];gpus:{a,b}";
    let r = Resources::parse(text).unwrap();
    assert_eq!(r.scalar("cpus"), 4.0);
    assert_eq!(r.range_count("ports"), 1001);
    assert_eq!(r.set_items("gpus"), vec!["a", "b"]);
    let back = Resources::parse(&r.to_string()).unwrap();
    assert_eq!(back, r);
    assert_eq!(Resources::from_proto(&r.to_proto()).unwrap(), r);
}

#[test]
fn parse_errors_name_the_token() {
    let e = Resources::parse("cpus:4;mem:lots").unwrap_err().to_string();
    assert!(e.contains("'mem:lots'"), "{e}");
    let e = Resources::parse("cpus4").unwrap_err().to_string();
    assert!(e.contains("'cpus4'") && e.contains("NAME:VALUE"), "{e}");
    let e = Resources::parse("ports:[5-3]").unwrap_err().to_string();
    assert!(e.contains("begins after it ends"), "{e}");
    let e = Resources::parse("cpus:-1").unwrap_err().to_string();
    assert!(e.contains("'cpus:-1'"), "{e}");
    let e = Resources::parse("cpus:1;cpus:[1-2]")
        .unwrap_err()
        .to_string();
    assert!(e.contains("both as"), "{e}");
    assert!(Resources::parse("ports:[1-2").is_err());
    assert!(Resources::parse("cpus(eng:1").is_err());
    assert!(Resources::parse("cpus(a//b):1").is_err());
    assert!(Resources::parse("cpus(a b):1").is_err());
}

#[test]
fn fixed_point_has_no_drift() {
    let mut total = Resources::new();
    let tenth = Resources::new().with_scalar("cpus", 0.1);
    for _ in 0..1000 {
        total.add(&tenth);
    }
    assert_eq!(total.scalar("cpus"), 100.0);
    for _ in 0..1000 {
        total = total.checked_sub(&tenth).unwrap();
    }
    assert!(total.is_empty());
}

#[test]
fn ranges_and_sets_subtract() {
    let r = Resources::parse("ports:[10-20];gpus:{a,b,c}").unwrap();
    let take = Resources::parse("ports:[12-13,20];gpus:{b}").unwrap();
    let left = r.checked_sub(&take).unwrap();
    assert_eq!(left.ranges("ports"), &[(10, 11), (14, 19)]);
    assert_eq!(left.set_items("gpus"), vec!["a", "c"]);
    assert!(left.checked_sub(&take).is_none());
    let mut back = left.clone();
    back.add(&take);
    assert_eq!(back, r);
}

#[test]
fn contains_is_the_fit_check() {
    let offer = Resources::parse("cpus:1;mem:100").unwrap();
    assert!(offer.contains(&Resources::parse("cpus:1").unwrap()));
    assert!(!offer.contains(&Resources::parse("cpus:1.001").unwrap()));
    assert!(!offer.contains(&Resources::parse("gpus:{x}").unwrap()));
    assert!(offer.contains(&Resources::new()));
}

#[test]
fn wire_validation() {
    let bad = v1::Resource {
        name: "cpus".into(),
        value: Some(Value::Scalar(f64::NAN)),
        role: String::new(),
    };
    let e = Resources::from_proto(&[bad]).unwrap_err().to_string();
    assert!(e.contains("'cpus'"), "{e}");
    let none = v1::Resource {
        name: "mem".into(),
        value: None,
        role: String::new(),
    };
    assert!(Resources::from_proto(&[none]).is_err());
}

#[test]
fn reservations_keep_roles_apart() {
    let r = Resources::parse("cpus:2;cpus(eng):4;gpus(eng/ml):{g0};ports(web):[80-81]").unwrap();
    assert_eq!(r.scalar("cpus"), 6.0);
    assert_eq!(r.set_items("gpus"), vec!["g0"]);
    assert_eq!(r.range_count("ports"), 2);
    assert!(r.ranges("ports").is_empty());
    let back = Resources::parse(&r.to_string()).unwrap();
    assert_eq!(back, r);
    assert_eq!(Resources::from_proto(&r.to_proto()).unwrap(), r);
    // Reserved cpus do not satisfy an unreserved request, nor the other way.
    assert!(!r.contains(&Resources::parse("cpus:3").unwrap()));
    assert!(r.contains(&Resources::parse("cpus(eng):3;cpus:2").unwrap()));
    assert!(!r.contains(&Resources::parse("cpus(ops):1").unwrap()));
    let left = r
        .checked_sub(&Resources::parse("cpus(eng):4").unwrap())
        .unwrap();
    assert!(left.reserved("eng").is_none());
    let mut again = left.clone();
    again.add(&Resources::parse("cpus(eng):4").unwrap());
    assert_eq!(again, r);
    assert_eq!(
        Resources::parse("cpus(*):1").unwrap(),
        Resources::parse("cpus:1").unwrap()
    );
    let flat = r.reserve("*");
    assert!(!flat.has_reservations());
    assert_eq!(flat.scalar("cpus"), 6.0);
    let bad = v1::Resource {
        name: "cpus".into(),
        value: Some(Value::Scalar(1.0)),
        role: "a b".into(),
    };
    assert!(Resources::from_proto(&[bad]).is_err());
}

#[test]
fn dominant_share() {
    let total = Resources::parse("cpus:10;mem:1000").unwrap();
    let used = Resources::parse("cpus:1;mem:500").unwrap();
    assert!((used.dominant_share(&total) - 0.5).abs() < 1e-9);
}
