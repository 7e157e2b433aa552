//! Replica slots of the book: adding and retiring them, launching their
//! tasks on offers, and what each status update means for a slot.

use super::*;
use mezz_sdk::{CPUS, MEM};

impl Inner {
    /// A new canary slot of `name`.
    pub(super) fn add_canary_slot(&mut self, name: &str) {
        let Some(c) = self
            .services
            .get(name)
            .and_then(|e| e.service.canary.clone())
        else {
            return;
        };
        self.add_slot(name, None);
        if let Some(s) = self
            .services
            .get_mut(name)
            .and_then(|e| e.service.slots.last_mut())
        {
            s.canary = true;
            s.version = c.version;
            s.command = c.command;
        }
    }

    /// Stops every canary replica of `name`.
    pub(super) fn retire_canary(&mut self, name: &str) {
        let keys: Vec<String> = self
            .services
            .get(name)
            .map(|e| {
                e.service
                    .slots
                    .iter()
                    .filter(|s| s.canary && !s.retiring)
                    .map(|s| s.key.clone())
                    .collect()
            })
            .unwrap_or_default();
        for key in keys {
            self.retire(name, &key);
        }
    }

    /// A new slot of `name`, launched no sooner than `not_before`.
    pub(super) fn add_slot(&mut self, name: &str, not_before: Option<Instant>) {
        let key = format!("serve-{name}-{}", self.next_serial);
        self.next_serial += 1;
        self.tracker.add(key.clone());
        self.owner.insert(key.clone(), name.to_string());
        if let Some(at) = not_before {
            self.not_before.insert(key.clone(), at);
        }
        if let Some(e) = self.services.get_mut(name) {
            e.service.slots.push(Slot {
                key,
                retiring: false,
                address: None,
                version: e.service.version,
                command: e.service.spec.command.clone(),
                canary: false,
            });
        }
    }

    /// Gives a slot up: kills its task, or forgets it when none runs.
    pub(super) fn retire(&mut self, name: &str, key: &str) {
        let Some(e) = self.services.get_mut(name) else {
            return;
        };
        if let Some(s) = e.service.slots.iter_mut().find(|s| s.key == key) {
            s.retiring = true;
        }
        if let Some(r) = e.replicas.get_mut(key) {
            r.healthy = false;
        }
        let address = e
            .service
            .slots
            .iter()
            .find(|s| s.key == key)
            .and_then(|s| s.address.clone());
        let task = self.tracker.get(key).cloned();
        match task {
            Some(t) if matches!(t.phase, Phase::Launched | Phase::Running) => {
                if let (Some(id), Some(d)) = (t.task_id, &self.driver) {
                    // It takes no new requests once the proxy has the
                    // routes without it; the ones the proxy sent it finish
                    // first (up to DRAIN).
                    match (tokio::runtime::Handle::try_current(), address) {
                        (Ok(rt), Some(address)) => {
                            let (d, table) = (d.clone(), self.in_flight.clone());
                            let since = Instant::now();
                            rt.spawn(async move {
                                let deadline = since + DRAIN;
                                while !drained(&table, &address, since) && Instant::now() < deadline
                                {
                                    tokio::time::sleep(Duration::from_millis(20)).await;
                                }
                                d.kill(id, Some(KILL_GRACE));
                            });
                        }
                        _ => d.kill(id, Some(KILL_GRACE)),
                    }
                }
            }
            _ => self.forget_slot(name, key),
        }
    }

    pub(super) fn forget_slot(&mut self, name: &str, key: &str) {
        if let Some(e) = self.services.get_mut(name) {
            e.service.slots.retain(|s| s.key != key);
            e.replicas.remove(key);
        }
        self.not_before.remove(key);
        self.finish_removal(name);
    }

    /// Drops a removed service once its last replica is gone.
    pub(super) fn finish_removal(&mut self, name: &str) {
        let done = self
            .services
            .get(name)
            .is_some_and(|e| e.service.removing && e.service.slots.is_empty());
        if done && self.services.remove(name).is_some() {
            tracing::info!(service = %name, "service removed");
        }
    }

    pub(super) fn launch(&mut self, driver: &Driver, offers: Vec<proto::Offer>) {
        let now = Instant::now();
        let mut used = std::collections::HashSet::new();
        for key in self.due(now) {
            let Some(name) = self.owner.get(&key).cloned() else {
                continue;
            };
            let svc = self.services[&name].service.clone();
            let resources = Resources::new()
                .with_scalar(CPUS, svc.spec.cpus)
                .with_scalar(MEM, svc.spec.mem);
            let request = TaskRequest::new(key.clone(), resources.clone())
                .ports(1)
                .gpus(svc.spec.gpus as usize);
            // Spread: the agent with the fewest replicas of this service
            // first. One replica per offer and round keeps the count true.
            let counts = self.per_agent(&name);
            let mut candidates: Vec<&proto::Offer> =
                offers.iter().filter(|o| !used.contains(&o.id)).collect();
            candidates.sort_by_key(|o| counts.get(&o.agent_id).copied().unwrap_or(0));
            let found = candidates.into_iter().find_map(|o| {
                let plan = place(
                    Strategy::FirstFit,
                    std::slice::from_ref(o),
                    std::slice::from_ref(&request),
                );
                plan.placed.into_iter().next().map(|p| (o, p))
            });
            let Some((offer, placement)) = found else {
                if let Some(e) = self.services.get_mut(&name) {
                    e.message = format!(
                        "waiting for an offer with {resources} + 1 port{}",
                        if svc.spec.gpus > 0 {
                            format!(" + {} GPU(s)", svc.spec.gpus)
                        } else {
                            String::new()
                        }
                    );
                }
                continue;
            };
            let Some(port) = placement.ports.first().and_then(|p| u16::try_from(*p).ok()) else {
                continue;
            };
            let Some(task_id) = self
                .tracker
                .launched(&key, Some(AgentId(offer.agent_id.clone())))
            else {
                continue;
            };
            used.insert(offer.id.clone());
            let host = offer_host(offer);
            let address = format!("{host}:{port}");
            let slot = svc.slots.iter().find(|s| s.key == key);
            let command = slot
                .map(|s| s.command.clone())
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| svc.spec.command.clone());
            let (version, canary) = slot
                .map(|s| (s.version, s.canary))
                .unwrap_or((svc.version, false));
            let mut builder = replica_task(&svc, &command, &task_id, &address, port)
                .label("version", version.to_string());
            if canary {
                let weight = svc.canary.as_ref().map(|c| c.weight).unwrap_or(0);
                builder = builder
                    .label("canary", "true")
                    .label("weight", weight.to_string());
            }
            let task = placement.task(builder);
            tracing::info!(service = %name, task = %task_id, agent = %offer.agent_id, %address, "launching replica");
            driver.launch([offer.id.clone()], vec![task]);
            if let Some(e) = self.services.get_mut(&name) {
                e.message.clear();
                e.replicas.insert(key.clone(), Replica::default());
                if let Some(s) = e.service.slots.iter_mut().find(|s| s.key == key) {
                    s.address = Some(address);
                }
            }
            self.not_before.remove(&key);
            self.persist_or_log();
        }
        let unused: Vec<_> = offers
            .iter()
            .filter(|o| !used.contains(&o.id))
            .map(|o| o.id.clone())
            .collect();
        if !unused.is_empty() {
            if self.due(now).is_empty() && self.not_before.is_empty() {
                driver.suppress();
                driver.decline(unused, Some(30.0));
            } else {
                driver.decline(unused, Some(1.0));
            }
        }
    }

    pub(super) fn update(&mut self, driver: &Driver, status: &proto::TaskStatus) {
        let now = Instant::now();
        let change = self.tracker.update(status, now);
        let Some(key) = self
            .tracker
            .key_of(&TaskId(status.task_id.clone()))
            .map(str::to_string)
        else {
            return;
        };
        let Some(name) = self.owner.get(&key).cloned() else {
            return;
        };
        let current = self
            .tracker
            .get(&key)
            .and_then(|t| t.task_id.clone())
            .is_some_and(|id| id.0 == status.task_id);
        let retiring = self.slot(&key).is_some_and(|(_, s)| s.retiring);
        let was_canary = self.slot(&key).is_some_and(|(_, s)| s.canary);
        if current {
            if let Some(e) = self.services.get_mut(&name) {
                let r = e.replicas.entry(key.clone()).or_default();
                if !status.message.is_empty() {
                    r.message = status.message.clone();
                }
                let running = status.state() == mezz_sdk::TaskState::Running;
                match status.healthy {
                    Some(h) if running && !retiring => {
                        if h && !r.healthy {
                            tracing::info!(service = %name, task = %status.task_id, "replica healthy");
                            e.replaced = 0;
                            r.healthy_since = Some(Instant::now());
                        }
                        if h != r.healthy {
                            self.routes_changed.notify_one();
                        }
                        r.healthy = h;
                    }
                    _ if !running => {
                        if r.healthy {
                            self.routes_changed.notify_one();
                        }
                        r.healthy = false;
                    }
                    _ => {}
                }
            }
        }
        // A replica of the version being rolled out that fails, before the
        // update is done, fails the update.
        let failing_update = self.slot(&key).is_some_and(|(e, s)| {
            !s.retiring
                && !s.canary
                && s.version == e.service.version
                && e.service.update.as_ref().is_some_and(|u| !u.rolling_back)
        });
        match change {
            Some(Change::Running) => {
                tracing::info!(service = %name, task = %status.task_id, "replica running");
                // A replica taken back after a failover may have had a
                // kill under way: finish it.
                if retiring {
                    driver.kill(TaskId(status.task_id.clone()), Some(KILL_GRACE));
                }
            }
            Some(Change::Restart { at }) => {
                if retiring {
                    self.forget_slot(&name, &key);
                    self.persist_or_log();
                } else if failing_update {
                    let why = format!(
                        "replica {} ended ({})",
                        status.task_id,
                        status.state().short_name()
                    );
                    self.roll_back(&name, &why);
                } else {
                    tracing::warn!(service = %name, task = %status.task_id, state = status.state().short_name(), "replica ended; restarting it");
                    driver.wake_after(at.saturating_duration_since(now));
                }
            }
            Some(Change::Killed) | Some(Change::Finished) | Some(Change::GaveUp) => {
                let health = status.reason() == TaskReason::HealthCheckFailed;
                let wanted = self
                    .services
                    .get(&name)
                    .is_some_and(|e| !e.service.removing);
                if failing_update && !retiring {
                    let why = if health {
                        format!("replica {} failed its health check", status.task_id)
                    } else {
                        format!("replica {} ended", status.task_id)
                    };
                    self.forget_slot(&name, &key);
                    self.roll_back(&name, &why);
                } else if !retiring && wanted {
                    self.forget_slot(&name, &key);
                    // Killed for failing its health check, or ended on its
                    // own: a new slot takes its place, after a backoff that
                    // grows while replacements keep failing.
                    let replaced = self.services.get(&name).map(|e| e.replaced).unwrap_or(0);
                    let delay =
                        Duration::from_secs(1 << replaced.min(6)).min(Duration::from_secs(60));
                    tracing::warn!(service = %name, task = %status.task_id, health, ?delay, "replica lost; replacing it");
                    if let Some(e) = self.services.get_mut(&name) {
                        e.replaced += 1;
                        e.message = if health {
                            format!(
                                "replica {} failed its health check; replaced",
                                status.task_id
                            )
                        } else {
                            format!("replica {} ended; replaced", status.task_id)
                        };
                    }
                    if was_canary {
                        self.add_canary_slot(&name);
                        if let Some(at) = self
                            .services
                            .get(&name)
                            .and_then(|e| e.service.slots.last())
                        {
                            self.not_before.insert(at.key.clone(), now + delay);
                        }
                    } else {
                        self.add_slot(&name, Some(now + delay));
                    }
                    driver.wake_after(delay);
                } else {
                    self.forget_slot(&name, &key);
                }
                self.persist_or_log();
            }
            None => {}
        }
        self.roll(&name);
    }
}

/// A replica's task: the command by `/bin/sh -c` with its port in
/// `port_env` (and `PORT0`), an HTTP health check on that port, and its
/// own and its service's URLs as labels for the status page (the caller
/// adds its version, and for a canary its weight).
pub(super) fn replica_task(
    svc: &Service,
    command: &str,
    task_id: &TaskId,
    address: &str,
    port: u16,
) -> TaskBuilder {
    let check = proto::HealthCheck {
        check: Some(proto::health_check::Check::Http(proto::HttpHealthCheck {
            port: u32::from(port),
            path: svc.spec.health_path.clone(),
            ..Default::default()
        })),
        interval_secs: 1.0,
        timeout_secs: 2.0,
        // A model can take long to load; failures before the first
        // success within this count for nothing.
        grace_period_secs: svc.spec.health_grace_secs,
        consecutive_failures: 3,
    };
    TaskBuilder::shell(task_id.clone(), command.to_string())
        .name(format!("serve/{}", svc.spec.name))
        .kill_grace(KILL_GRACE)
        .env(svc.spec.port_env.clone(), port.to_string())
        .label("service", svc.spec.name.clone())
        .label("url", format!("http://{address}/"))
        .label("service_url", svc.url())
        .health_check(check)
}
