//! Property tests of what a framework author relies on, through the public
//! API only: the algebra of `Resources` (the master's own math, re-exported)
//! and the placement helpers (nothing placed where it does not fit, nothing
//! given twice, a gang launched whole or not at all).

use std::time::{Duration, Instant};

use mezz_sdk::Strategy as Placing;
use mezz_sdk::{place, proto, Gang, GangStep, Resources, TaskRequest, GPUS, PORTS};
use proptest::prelude::*;

/// Resources over a few names, every kind: scalars in thousandths (the
/// math's own precision), port ranges and GPU identities.
fn resources() -> impl Strategy<Value = Resources> {
    (
        0u32..8000,
        0u32..4000,
        prop::collection::vec((0u64..60, 0u64..8), 0..3),
        prop::collection::btree_set(0u8..6, 0..4),
    )
        .prop_map(|(cpus, mem, ranges, gpus)| {
            let ranges: Vec<(u64, u64)> = ranges.into_iter().map(|(b, l)| (b, b + l)).collect();
            Resources::new()
                .with_scalar("cpus", f64::from(cpus) / 1000.0)
                .with_scalar("mem", f64::from(mem))
                .with_ranges(PORTS, &ranges)
                .with_set(GPUS, gpus.into_iter().map(|g| format!("gpu-{g}")))
        })
}

fn sum(a: &Resources, b: &Resources) -> Resources {
    let mut out = a.clone();
    out.add(b);
    out
}

proptest! {
    #[test]
    fn add_is_commutative_and_associative(a in resources(), b in resources(), c in resources()) {
        prop_assert_eq!(sum(&a, &b), sum(&b, &a));
        prop_assert_eq!(sum(&sum(&a, &b), &c), sum(&a, &sum(&b, &c)));
        prop_assert_eq!(sum(&a, &Resources::new()), a);
    }

    #[test]
    fn contains_is_a_partial_order(a in resources(), b in resources(), c in resources()) {
        prop_assert!(a.contains(&a));
        prop_assert!(a.contains(&Resources::new()));
        if a.contains(&b) && b.contains(&c) {
            prop_assert!(a.contains(&c));
        }
        if a.contains(&b) && b.contains(&a) {
            prop_assert_eq!(a.clone(), b.clone());
        }
        prop_assert!(sum(&a, &b).contains(&a));
    }

    #[test]
    fn subtract_undoes_add_for_scalars(a in resources(), b in resources()) {
        // Ranges and sets are unions, so only disjoint parts come back out.
        let only_scalars = |r: &Resources| {
            Resources::new().with_scalar("cpus", r.scalar("cpus")).with_scalar("mem", r.scalar("mem"))
        };
        let (a, b) = (only_scalars(&a), only_scalars(&b));
        prop_assert_eq!(sum(&a, &b).checked_sub(&b), Some(a));
    }

    #[test]
    fn checked_sub_is_defined_exactly_when_it_fits(a in resources(), b in resources()) {
        match a.checked_sub(&b) {
            Some(rest) => {
                prop_assert!(a.contains(&b));
                prop_assert!(a.contains(&rest));
                // What is left and what was taken make the whole again.
                prop_assert_eq!(sum(&rest, &b), a);
            }
            None => prop_assert!(!a.contains(&b)),
        }
    }

    #[test]
    fn wire_and_text_forms_round_trip(a in resources()) {
        prop_assert_eq!(Resources::from_proto(&a.to_proto()), Ok(a.clone()));
        prop_assert_eq!(Resources::parse(&a.to_string()), Ok(a));
    }
}

fn offer(i: usize, r: &Resources) -> proto::Offer {
    proto::Offer {
        id: format!("offer-{i}"),
        agent_id: format!("agent-{}", i % 3),
        resources: r.to_proto(),
        ..Default::default()
    }
}

fn request() -> impl Strategy<Value = TaskRequest> {
    (1u32..3000, 0u32..1500, 0usize..3, 0usize..2).prop_map(|(cpus, mem, ports, gpus)| {
        let r = Resources::new()
            .with_scalar("cpus", f64::from(cpus) / 1000.0)
            .with_scalar("mem", f64::from(mem));
        TaskRequest::new("t", r).ports(ports).gpus(gpus)
    })
}

fn strategy() -> impl Strategy<Value = Placing> {
    prop_oneof![
        Just(Placing::FirstFit),
        Just(Placing::BinPack),
        Just(Placing::Spread)
    ]
}

proptest! {
    #[test]
    fn nothing_is_placed_where_it_does_not_fit(
        offered in prop::collection::vec(resources(), 0..5),
        requests in prop::collection::vec(request(), 0..8),
        how in strategy(),
    ) {
        let offers: Vec<_> = offered.iter().enumerate().map(|(i, r)| offer(i, r)).collect();
        let plan = place(how, &offers, &requests);
        prop_assert_eq!(plan.placed.len() + plan.unplaced.len(), requests.len());
        // Everything placed on an offer, together, fits in it: no port,
        // GPU or cpu is given twice.
        for (i, o) in offers.iter().enumerate() {
            let mut taken = Resources::new();
            for p in plan.placed.iter().filter(|p| p.offer_id.as_str() == o.id) {
                let req = &requests[p.request];
                prop_assert!(p.resources.contains(&req.resources));
                prop_assert_eq!(p.ports.len(), req.ports);
                prop_assert_eq!(p.gpus.len(), req.gpus);
                prop_assert_eq!(p.resources.range_count(PORTS) as usize, req.ports);
                taken.add(&p.resources);
            }
            prop_assert!(offered[i].contains(&taken), "offer {} overcommitted: {} in {}", i, taken, offered[i]);
        }
        // An unplaced request fits in no single offer's leftovers.
        for &u in &plan.unplaced {
            let lone = place(how, &offers, &requests[u..=u]);
            if lone.is_complete() {
                // It would fit alone: then earlier requests took the room.
                prop_assert!(!plan.placed.is_empty());
            }
        }
    }

    #[test]
    fn a_gang_is_launched_whole_or_not_at_all(
        batches in prop::collection::vec(prop::collection::vec(resources(), 0..3), 1..5),
        requests in prop::collection::vec(request(), 1..5),
        seed in any::<u64>(),
    ) {
        let mut gang = Gang::new(requests.clone()).hold(Duration::from_secs(1)).seed(seed);
        let t0 = Instant::now();
        let mut n = 0;
        let mut launches = 0;
        for (step, batch) in batches.iter().enumerate() {
            let now = t0 + Duration::from_millis(700 * step as u64);
            let offers: Vec<_> = batch.iter().map(|r| { n += 1; offer(n, r) }).collect();
            let all = offers.clone();
            match gang.offers(offers, now) {
                GangStep::Launch { plan, decline } => {
                    launches += 1;
                    prop_assert!(plan.is_complete());
                    prop_assert_eq!(plan.placed.len(), requests.len());
                    prop_assert!(decline.iter().all(|d| !plan.used_offers().contains(d)));
                }
                GangStep::Decline { offers, .. } if gang.is_launched() => {
                    prop_assert_eq!(offers.len(), all.len());
                }
                GangStep::Decline { .. } | GangStep::Hold { .. } | GangStep::Idle => {
                    prop_assert!(!gang.is_launched());
                }
            }
            if !gang.is_launched() {
                // Held no longer than the hold and a half.
                if let GangStep::Hold { until } = gang.expire(now) {
                    prop_assert!(until <= now + Duration::from_millis(1500));
                }
            }
        }
        prop_assert!(launches <= 1);
    }
}
