//! Services as the status page and `/api/state` show them, derived from
//! task labels alone: any framework that labels its tasks with `service`
//! (and optionally `url`, `service_url`, `version`, `canary`, `weight`)
//! gets its services listed. The master keeps no service state of its own,
//! so there is nothing to replicate or to fall out of date.
//!
//! Labels come from frameworks and are not checked at launch (only `url`
//! is): anything malformed is shown as unknown rather than dropped, so a
//! replica never disappears from the view because of a typo in a label.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use mezz_proto::v1::{ServiceReplicaView, ServiceVersionView, ServiceView, TaskState, TaskView};

/// Task label naming the service a task is a replica of.
pub const LABEL_SERVICE: &str = "service";
/// Task label with the replica's own URL.
pub const LABEL_URL: &str = "url";
/// Task label with the URL the service is reached at (its proxy).
pub const LABEL_SERVICE_URL: &str = "service_url";
/// Task label with the service version, decimal.
pub const LABEL_VERSION: &str = "version";
/// Task label `true` on canary replicas.
pub const LABEL_CANARY: &str = "canary";
/// Task label with a canary's share of traffic, percent.
pub const LABEL_WEIGHT: &str = "weight";

/// A state name of a [`TaskView`] that never changes again; names the
/// master does not know are taken as live, so the replica stays visible.
fn terminal(state: &str) -> bool {
    TaskState::from_str_name(&format!("TASK_STATE_{state}")).is_some_and(TaskState::is_terminal)
}

fn version(t: &TaskView) -> Option<u64> {
    t.labels.get(LABEL_VERSION)?.trim().parse().ok()
}

fn canary(t: &TaskView) -> bool {
    t.labels
        .get(LABEL_CANARY)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

fn weight(t: &TaskView) -> Option<u32> {
    t.labels
        .get(LABEL_WEIGHT)?
        .trim()
        .parse()
        .ok()
        .filter(|w| *w <= 100)
}

/// Versions in order: known ones ascending, unknown last; stable before
/// canary within a version.
fn version_order(a: (Option<u64>, bool), b: (Option<u64>, bool)) -> Ordering {
    let key = |(v, c): (Option<u64>, bool)| (v.is_none(), v, c);
    key(a).cmp(&key(b))
}

/// The services among `tasks`: the non-terminal tasks with a non-empty
/// `service` label, grouped by (framework id, service name), sorted by
/// name then framework id. Pure, so it is tested without a cluster.
pub fn services(tasks: &[TaskView]) -> Vec<ServiceView> {
    let mut groups: BTreeMap<(&str, &str), Vec<&TaskView>> = BTreeMap::new();
    for t in tasks.iter().filter(|t| !terminal(&t.state)) {
        let Some(name) = t.labels.get(LABEL_SERVICE).filter(|n| !n.is_empty()) else {
            continue;
        };
        groups
            .entry((name.as_str(), t.framework_id.as_str()))
            .or_default()
            .push(t);
    }
    groups
        .into_iter()
        .map(|((name, framework_id), replicas)| service(name, framework_id, replicas))
        .collect()
}

fn service(name: &str, framework_id: &str, mut tasks: Vec<&TaskView>) -> ServiceView {
    // The newest replica speaks for the service where replicas disagree
    // (a framework that moved its proxy labels new replicas only).
    let age = |a: &&&TaskView, b: &&&TaskView| {
        a.launched_at
            .total_cmp(&b.launched_at)
            .then(a.id.cmp(&b.id))
    };
    let newest = tasks.iter().max_by(age);
    let url = tasks
        .iter()
        .filter(|t| {
            t.labels
                .get(LABEL_SERVICE_URL)
                .is_some_and(|u| !u.is_empty())
        })
        .max_by(age)
        .and_then(|t| t.labels.get(LABEL_SERVICE_URL).cloned())
        .unwrap_or_default();
    let framework_name = newest.map(|t| t.framework_name.clone()).unwrap_or_default();
    tasks.sort_by(|a, b| {
        version_order((version(a), canary(a)), (version(b), canary(b))).then(a.id.cmp(&b.id))
    });
    let mut versions: Vec<ServiceVersionView> = Vec::new();
    for t in &tasks {
        let (v, c) = (version(t), canary(t));
        let healthy = t.state == "RUNNING" && t.healthy == Some(true);
        match versions.last_mut() {
            Some(last) if last.version == v && last.canary == c => {
                last.replicas += 1;
                last.healthy += u32::from(healthy);
                last.weight = last.weight.or(weight(t).filter(|_| c));
            }
            _ => versions.push(ServiceVersionView {
                version: v,
                canary: c,
                weight: weight(t).filter(|_| c),
                replicas: 1,
                healthy: u32::from(healthy),
            }),
        }
    }
    let replicas = tasks
        .iter()
        .map(|t| ServiceReplicaView {
            task_id: t.id.clone(),
            agent_id: t.agent_id.clone(),
            url: t.labels.get(LABEL_URL).cloned().unwrap_or_default(),
            version: version(t),
            canary: canary(t),
            state: t.state.clone(),
            healthy: t.healthy,
        })
        .collect();
    ServiceView {
        name: name.to_string(),
        framework_id: framework_id.to_string(),
        framework_name,
        url,
        versions,
        replicas,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(
        id: &str,
        fw: &str,
        state: &str,
        healthy: Option<bool>,
        labels: &[(&str, &str)],
    ) -> TaskView {
        TaskView {
            id: id.into(),
            framework_id: fw.into(),
            framework_name: format!("{fw}-name"),
            agent_id: format!("agent-of-{id}"),
            state: state.into(),
            healthy,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    /// A version as (version, canary, weight, replicas, healthy).
    type Counts = (Option<u64>, bool, Option<u32>, u32, u32);

    fn version_counts(s: &ServiceView) -> Vec<Counts> {
        s.versions
            .iter()
            .map(|v| (v.version, v.canary, v.weight, v.replicas, v.healthy))
            .collect()
    }

    #[test]
    fn replicas_group_by_framework_and_name_with_health_per_version() {
        let svc = |v: &'static str| {
            vec![
                ("service", "iris"),
                ("version", v),
                ("url", "http://127.0.0.1:31001/"),
                ("service_url", "http://127.0.0.1:40000/"),
            ]
        };
        let mut canary = svc("2");
        canary.extend([("canary", "true"), ("weight", "20")]);
        let tasks = vec![
            task("r3", "f1", "RUNNING", Some(false), &svc("1")),
            task("r1", "f1", "RUNNING", Some(true), &svc("1")),
            task("r2", "f1", "RUNNING", None, &svc("1")),
            task("c1", "f1", "RUNNING", Some(true), &canary),
            // Same name, other framework: another service.
            task("x1", "f0", "STAGING", None, &[("service", "iris")]),
            // Healthy by its last check but no longer running: not counted.
            task("k1", "f1", "KILLING", Some(true), &svc("1")),
            // No service label, or an empty one: not a replica.
            task(
                "plain",
                "f1",
                "RUNNING",
                Some(true),
                &[("url", "http://h/")],
            ),
            task("empty", "f1", "RUNNING", Some(true), &[("service", "")]),
        ];
        let s = services(&tasks);
        let keys: Vec<_> = s
            .iter()
            .map(|s| (s.name.as_str(), s.framework_id.as_str()))
            .collect();
        assert_eq!(keys, vec![("iris", "f0"), ("iris", "f1")]);
        let iris = &s[1];
        assert_eq!(iris.framework_name, "f1-name");
        assert_eq!(iris.url, "http://127.0.0.1:40000/");
        assert_eq!(
            version_counts(iris),
            vec![
                (Some(1), false, None, 4, 1),
                (Some(2), true, Some(20), 1, 1)
            ]
        );
        let order: Vec<_> = iris.replicas.iter().map(|r| r.task_id.as_str()).collect();
        assert_eq!(order, vec!["k1", "r1", "r2", "r3", "c1"]);
        let r2 = &iris.replicas[2];
        assert_eq!(
            (
                r2.healthy,
                r2.state.as_str(),
                r2.url.as_str(),
                r2.agent_id.as_str()
            ),
            (None, "RUNNING", "http://127.0.0.1:31001/", "agent-of-r2")
        );
        assert!(iris.replicas[4].canary && iris.replicas[4].version == Some(2));
        // The other framework's replica has no version, url or health.
        assert_eq!(version_counts(&s[0]), vec![(None, false, None, 1, 0)]);
        assert_eq!(s[0].url, "");
    }

    #[test]
    fn the_json_has_the_documented_shape() {
        let tasks = vec![task(
            "r1",
            "f1",
            "RUNNING",
            None,
            &[
                ("service", "iris"),
                ("version", "x"),
                ("url", "http://127.0.0.1:31001/"),
            ],
        )];
        let json = serde_json::to_value(services(&tasks)).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!([{
                "name": "iris",
                "framework_id": "f1",
                "framework_name": "f1-name",
                "url": "",
                "versions": [
                    { "version": null, "canary": false, "weight": null, "replicas": 1, "healthy": 0 }
                ],
                "replicas": [{
                    "task_id": "r1", "agent_id": "agent-of-r1", "url": "http://127.0.0.1:31001/",
                    "version": null, "canary": false, "state": "RUNNING", "healthy": null
                }]
            }])
        );
    }

    #[test]
    fn terminal_tasks_are_not_replicas() {
        let mut tasks: Vec<TaskView> = [
            "FINISHED", "FAILED", "KILLED", "LOST", "ERROR", "DROPPED", "GONE",
        ]
        .iter()
        .enumerate()
        .map(|(i, st)| task(&format!("t{i}"), "f", st, Some(true), &[("service", "s")]))
        .collect();
        assert!(services(&tasks).is_empty());
        tasks.push(task(
            "up",
            "f",
            "UNREACHABLE",
            Some(true),
            &[("service", "s")],
        ));
        let s = services(&tasks);
        assert_eq!(s.len(), 1);
        assert_eq!(version_counts(&s[0]), vec![(None, false, None, 1, 0)]);
        assert_eq!(s[0].replicas[0].task_id, "up");
    }

    #[test]
    fn garbage_labels_are_shown_as_unknown() {
        let tasks = vec![
            task(
                "a",
                "f",
                "RUNNING",
                Some(true),
                &[("service", "s"), ("version", "v2")],
            ),
            task(
                "b",
                "f",
                "RUNNING",
                Some(true),
                &[("service", "s"), ("version", "-1")],
            ),
            task(
                "c",
                "f",
                "RUNNING",
                Some(true),
                &[("service", "s"), ("version", " 3 ")],
            ),
            task(
                "d",
                "f",
                "RUNNING",
                Some(true),
                &[
                    ("service", "s"),
                    ("version", "3"),
                    ("canary", "yes"),
                    ("weight", "20"),
                ],
            ),
            task(
                "e",
                "f",
                "RUNNING",
                Some(true),
                &[
                    ("service", "s"),
                    ("version", "4"),
                    ("canary", "TRUE"),
                    ("weight", "150"),
                ],
            ),
            task(
                "g",
                "f",
                "RUNNING",
                Some(false),
                &[
                    ("service", "s"),
                    ("version", "4"),
                    ("canary", "true"),
                    ("weight", "x"),
                ],
            ),
        ];
        let s = services(&tasks);
        assert_eq!(
            version_counts(&s[0]),
            vec![
                // "yes" is not a canary, and a weight means nothing on a
                // stable replica.
                (Some(3), false, None, 2, 2),
                (Some(4), true, None, 2, 1),
                (None, false, None, 2, 2),
            ]
        );
        let order: Vec<_> = s[0].replicas.iter().map(|r| r.task_id.as_str()).collect();
        assert_eq!(order, vec!["c", "d", "e", "g", "a", "b"]);
    }

    #[test]
    fn the_newest_replica_names_the_service_url() {
        let mut old = task(
            "a",
            "f",
            "RUNNING",
            None,
            &[("service", "s"), ("service_url", "http://127.0.0.1:1/")],
        );
        old.launched_at = 10.0;
        let mut new = task(
            "b",
            "f",
            "RUNNING",
            None,
            &[("service", "s"), ("service_url", "http://127.0.0.1:2/")],
        );
        new.launched_at = 20.0;
        let mut newest_without = task("c", "f", "RUNNING", None, &[("service", "s")]);
        newest_without.launched_at = 30.0;
        let tasks = vec![new.clone(), old.clone(), newest_without];
        assert_eq!(services(&tasks)[0].url, "http://127.0.0.1:2/");
        assert_eq!(services(&[old, new])[0].url, "http://127.0.0.1:2/");
    }

    #[test]
    fn the_order_does_not_depend_on_the_input_order() {
        let mut tasks: Vec<TaskView> = (0..6)
            .map(|i| {
                task(
                    &format!("t{i}"),
                    if i % 2 == 0 { "f1" } else { "f2" },
                    "RUNNING",
                    Some(i % 3 == 0),
                    &[
                        ("service", if i < 3 { "b" } else { "a" }),
                        ("version", &i.to_string()),
                    ],
                )
            })
            .collect();
        let forward = services(&tasks);
        tasks.reverse();
        assert_eq!(services(&tasks), forward);
        let names: Vec<_> = forward
            .iter()
            .map(|s| format!("{}/{}", s.name, s.framework_id))
            .collect();
        assert_eq!(names, vec!["a/f1", "a/f2", "b/f1", "b/f2"]);
    }
}
