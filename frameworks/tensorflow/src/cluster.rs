//! The cluster spec each replica is told about: `TF_CONFIG` for the
//! TensorFlow flavor, `MASTER_ADDR`/`MASTER_PORT`/`WORLD_SIZE`/`RANK`/
//! `LOCAL_RANK` for PyTorch. Pure: where every replica was placed in, an
//! environment per replica out.

use std::collections::BTreeMap;

use serde_json::json;

use crate::spec::{Flavor, JobSpec, ReplicaId, ReplicaType};

/// Where a replica listens: the agent's host and the port it was given.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    /// The agent's address as workers reach it.
    pub host: String,
    /// A port from the agent's offered ranges, the replica's own.
    pub port: u64,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The `TF_CONFIG` value of `replica`: every chief, worker and ps address
/// (evaluators are not part of the cluster, as in TensorFlow), and the
/// replica's own type and index.
///
/// ```
/// use std::collections::BTreeMap;
/// use mezz_tensorflow::{tf_config, Endpoint, ReplicaId, ReplicaType};
/// let w = |index| ReplicaId { kind: ReplicaType::Worker, index };
/// let at = |port| Endpoint { host: "127.0.0.1".into(), port };
/// let placed = BTreeMap::from([(w(0), at(31000)), (w(1), at(31001))]);
/// let config = tf_config(&placed, w(1));
/// assert_eq!(
///     config,
///     r#"{"cluster":{"worker":["127.0.0.1:31000","127.0.0.1:31001"]},"task":{"index":1,"type":"worker"}}"#
/// );
/// ```
pub fn tf_config(placed: &BTreeMap<ReplicaId, Endpoint>, replica: ReplicaId) -> String {
    let mut cluster: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    // BTreeMap order is type, then index: lists come out by index.
    for (id, at) in placed {
        if id.kind != ReplicaType::Evaluator {
            cluster
                .entry(id.kind.as_str())
                .or_default()
                .push(at.to_string());
        }
    }
    json!({
        "cluster": cluster,
        "task": {"type": replica.kind.as_str(), "index": replica.index},
    })
    .to_string()
}

/// Refuses a placement in which two replicas would listen on one address:
/// TensorFlow's second gRPC server could not bind, and PyTorch's ranks
/// would rendezvous with the wrong peer. The SDK's placement never does
/// this; two agents that claim to be one host with overlapping port ranges
/// (or a bug) could.
///
/// ```
/// use std::collections::BTreeMap;
/// use mezz_tensorflow::{check_distinct_addresses, Endpoint, ReplicaId, ReplicaType};
/// let w = |index| ReplicaId { kind: ReplicaType::Worker, index };
/// let at = |port| Endpoint { host: "127.0.0.1".into(), port };
/// let clash = BTreeMap::from([(w(0), at(31000)), (w(1), at(31000))]);
/// let err = check_distinct_addresses(&clash).unwrap_err();
/// assert!(err.0.contains("worker/0 and worker/1 would both listen on 127.0.0.1:31000"), "{err}");
/// ```
pub fn check_distinct_addresses(
    placed: &BTreeMap<ReplicaId, Endpoint>,
) -> Result<(), crate::SpecError> {
    let mut seen: BTreeMap<&Endpoint, ReplicaId> = BTreeMap::new();
    for (id, at) in placed {
        if let Some(first) = seen.insert(at, *id) {
            return Err(crate::SpecError(format!(
                "replicas {first} and {id} would both listen on {at}: two agents on one host \
                 offer the same ports; give each agent of a host its own port range \
                 (mezz agent --resources 'ports:[…]'; mezz dev --agents N does so)"
            )));
        }
    }
    Ok(())
}

/// The environment `replica` gets for the job's flavor, job-wide
/// environment included (user values win over ours, except for the cluster
/// spec itself, which must be the real one).
pub fn replica_env(
    spec: &JobSpec,
    placed: &BTreeMap<ReplicaId, Endpoint>,
    replica: ReplicaId,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    // TensorFlow is chatty on stderr and Python buffers stdout when it is
    // not a terminal; both hide what users want to see streaming.
    env.insert("TF_CPP_MIN_LOG_LEVEL".into(), "2".into());
    env.insert("PYTHONUNBUFFERED".into(), "1".into());
    env.extend(spec.env.clone());
    env.insert("MEZZ_TF_JOB".into(), spec.name.clone());
    env.insert("MEZZ_TF_REPLICA".into(), replica.to_string());
    if let Some(at) = placed.get(&replica) {
        env.insert("MEZZ_TF_PORT".into(), at.port.to_string());
    }
    match spec.flavor {
        Flavor::Tensorflow => {
            env.insert("TF_CONFIG".into(), tf_config(placed, replica));
        }
        Flavor::Pytorch => env.extend(torch_env(placed, replica)),
    }
    env
}

/// torch.distributed's `env://` variables: the chief (or, without one,
/// worker 0) is rank 0 and the rendezvous master; workers follow in index
/// order. `LOCAL_RANK` is 0: each replica is its own task and sees only its
/// own GPUs, so its first visible device is its own.
fn torch_env(
    placed: &BTreeMap<ReplicaId, Endpoint>,
    replica: ReplicaId,
) -> BTreeMap<String, String> {
    let ranked: Vec<(&ReplicaId, &Endpoint)> = placed
        .iter()
        .filter(|(id, _)| matches!(id.kind, ReplicaType::Chief | ReplicaType::Worker))
        .collect();
    let mut env = BTreeMap::new();
    if let Some((_, master)) = ranked.first() {
        env.insert("MASTER_ADDR".into(), master.host.clone());
        env.insert("MASTER_PORT".into(), master.port.to_string());
    }
    let rank = ranked
        .iter()
        .position(|(id, _)| **id == replica)
        .unwrap_or(0);
    env.insert("WORLD_SIZE".into(), ranked.len().to_string());
    env.insert("RANK".into(), rank.to_string());
    env.insert("LOCAL_RANK".into(), "0".into());
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{JobSpec, Overrides};

    fn spec(o: Overrides) -> JobSpec {
        JobSpec::build(None, o, |n| Ok(crate::Sizes::builtin().get(n)?)).expect("valid spec")
    }

    fn placed(spec: &JobSpec) -> BTreeMap<ReplicaId, Endpoint> {
        spec.replica_ids()
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let host = format!("10.0.0.{}", i % 2 + 1);
                (
                    r,
                    Endpoint {
                        host,
                        port: 31000 + i as u64,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn tf_config_names_every_replica_and_the_task() {
        let s = spec(Overrides {
            chief: true,
            workers: Some(2),
            ps: Some(1),
            evaluator: true,
            command: vec!["python3 t.py".into()],
            ..Default::default()
        });
        let p = placed(&s);
        let worker1 = ReplicaId {
            kind: ReplicaType::Worker,
            index: 1,
        };
        let env = replica_env(&s, &p, worker1);
        let config: serde_json::Value =
            serde_json::from_str(&env["TF_CONFIG"]).expect("TF_CONFIG is JSON");
        assert_eq!(
            config,
            json!({
                "cluster": {
                    "chief": ["10.0.0.1:31000"],
                    "worker": ["10.0.0.2:31001", "10.0.0.1:31002"],
                    "ps": ["10.0.0.2:31003"],
                },
                "task": {"type": "worker", "index": 1},
            })
        );
        assert_eq!(env["MEZZ_TF_PORT"], "31002");
        assert_eq!(env["TF_CPP_MIN_LOG_LEVEL"], "2");
        let eval = ReplicaId {
            kind: ReplicaType::Evaluator,
            index: 0,
        };
        let config: serde_json::Value =
            serde_json::from_str(&replica_env(&s, &p, eval)["TF_CONFIG"]).expect("JSON");
        assert_eq!(config["task"], json!({"type": "evaluator", "index": 0}));
        assert!(config["cluster"].get("evaluator").is_none());
    }

    #[test]
    fn pytorch_ranks_start_at_the_chief() {
        let s = spec(Overrides {
            chief: true,
            workers: Some(3),
            flavor: Some(Flavor::Pytorch),
            env: vec![("TF_CPP_MIN_LOG_LEVEL".into(), "0".into())],
            command: vec!["python3 t.py".into()],
            ..Default::default()
        });
        let p = placed(&s);
        let env = replica_env(
            &s,
            &p,
            ReplicaId {
                kind: ReplicaType::Worker,
                index: 2,
            },
        );
        assert_eq!(env["MASTER_ADDR"], "10.0.0.1");
        assert_eq!(env["MASTER_PORT"], "31000");
        assert_eq!(env["WORLD_SIZE"], "4");
        assert_eq!(env["RANK"], "3");
        assert_eq!(env["LOCAL_RANK"], "0");
        assert_eq!(env["TF_CPP_MIN_LOG_LEVEL"], "0", "the user's value wins");
        assert!(!env.contains_key("TF_CONFIG"));
    }

    #[test]
    fn a_repeated_address_is_refused_and_distinct_ones_pass() {
        let s = spec(Overrides {
            chief: true,
            workers: Some(2),
            command: vec!["t".into()],
            ..Default::default()
        });
        let mut p = placed(&s);
        assert_eq!(check_distinct_addresses(&p), Ok(()));
        let chief = ReplicaId {
            kind: ReplicaType::Chief,
            index: 0,
        };
        let worker1 = ReplicaId {
            kind: ReplicaType::Worker,
            index: 1,
        };
        let at = p[&chief].clone();
        p.insert(worker1, at);
        let err = check_distinct_addresses(&p).expect_err("repeated address");
        assert!(
            err.0
                .starts_with("replicas chief/0 and worker/1 would both listen on 10.0.0.1:31000"),
            "{err}"
        );
        // The same port on another host is another address.
        p.insert(
            worker1,
            Endpoint {
                host: "10.0.0.2".into(),
                port: 31000,
            },
        );
        assert_eq!(check_distinct_addresses(&p), Ok(()));
    }

    #[test]
    fn pytorch_without_a_chief_makes_worker_0_the_master() {
        let s = spec(Overrides {
            workers: Some(2),
            flavor: Some(Flavor::Pytorch),
            command: vec!["t".into()],
            ..Default::default()
        });
        let p = placed(&s);
        let env = replica_env(
            &s,
            &p,
            ReplicaId {
                kind: ReplicaType::Worker,
                index: 0,
            },
        );
        assert_eq!(
            (env["RANK"].as_str(), env["MASTER_PORT"].as_str()),
            ("0", "31000")
        );
    }
}
