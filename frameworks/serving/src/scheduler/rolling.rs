//! Rolling updates of a service: starting one at a pace, replacing old
//! replicas by healthy new ones step by step, and going back to the old
//! command when the new one fails.

use super::*;

impl Inner {
    /// Starts a rolling update of `name` to `command`.
    pub(super) fn start_update(
        &mut self,
        name: &str,
        command: String,
        pace: Pace,
    ) -> Result<(), Error> {
        pace.validate()?;
        let Some(e) = self.services.get_mut(name) else {
            return Err(not_found(name));
        };
        if e.service.removing {
            return Err(Error::Conflict(format!(
                "service '{name}' is being removed"
            )));
        }
        if e.service.update.is_some() {
            return Err(Error::Conflict(format!(
                "service '{name}' is being updated already; `mezz serve show {name}` shows how far"
            )));
        }
        if command.trim().is_empty() {
            return Err(Error::BadRequest(
                "no command: put it after `--`, e.g. `-- python3 model.py`".into(),
            ));
        }
        if command == e.service.spec.command {
            return Err(Error::BadRequest(format!(
                "service '{name}' runs that command already"
            )));
        }
        // Versions are never reused: a rolled-back one's number included.
        let next = e
            .service
            .slots
            .iter()
            .map(|s| s.version)
            .chain([e.service.version, e.service.last_version])
            .max()
            .unwrap_or(0)
            + 1;
        e.service.last_version = next;
        e.service.update = Some(Update {
            from_version: e.service.version,
            from_command: std::mem::replace(&mut e.service.spec.command, command),
            rolling_back: false,
            pace,
        });
        e.service.version = next;
        e.service.note = format!("updating to version {next}");
        tracing::info!(service = %name, version = next, "rolling update started");
        self.roll(name);
        self.persist()
    }

    /// Goes back to the version an update started from: its replicas that
    /// do not answer are stopped at once, the rest once the old version
    /// is back in full.
    pub(super) fn roll_back(&mut self, name: &str, why: &str) {
        let Some(e) = self.services.get_mut(name) else {
            return;
        };
        let Some(u) = e.service.update.take() else {
            return;
        };
        let failed = e.service.version;
        tracing::warn!(service = %name, version = failed, "update failed: {why}; rolling back");
        e.service.note = format!("update to version {failed} rolled back: {why}");
        e.service.update = Some(Update {
            from_version: failed,
            from_command: std::mem::replace(&mut e.service.spec.command, u.from_command),
            rolling_back: true,
            pace: u.pace,
        });
        e.service.version = u.from_version;
        let doomed: Vec<String> = e
            .service
            .slots
            .iter()
            .filter(|s| !s.retiring && s.version == failed)
            .filter(|s| !e.replicas.get(&s.key).is_some_and(|r| r.healthy))
            .map(|s| s.key.clone())
            .collect();
        for key in doomed {
            self.retire(name, &key);
        }
        self.roll(name);
        self.persist_or_log();
    }

    /// One step of an update, repeated while it changes something: a new
    /// replica while there are fewer new ones than wanted and fewer than
    /// wanted + max surge run, and an old one stopped only when the
    /// healthy new ones and the other old ones make at least the number
    /// wanted less max unavailable. Done when no old replica is left.
    pub(super) fn roll(&mut self, name: &str) {
        for _ in 0..64 {
            if !self.roll_once(name) {
                return;
            }
        }
    }

    pub(super) fn roll_once(&mut self, name: &str) -> bool {
        let Some(e) = self.services.get(name) else {
            return false;
        };
        if e.service.removing || e.service.update.is_none() {
            return false;
        }
        let target = e.service.version;
        let wanted = e.service.spec.replicas as usize;
        let pace = e
            .service
            .update
            .as_ref()
            .map(|u| u.pace)
            .unwrap_or_default();
        let floor = wanted.saturating_sub(pace.max_unavailable as usize);
        let healthy = |k: &str| {
            e.replicas.get(k).is_some_and(|r| r.healthy)
                && self
                    .tracker
                    .get(k)
                    .is_some_and(|t| t.phase == Phase::Running)
        };
        let live: Vec<&Slot> = e
            .service
            .slots
            .iter()
            .filter(|s| !s.retiring && !s.canary)
            .collect();
        let new: Vec<&Slot> = live
            .iter()
            .copied()
            .filter(|s| s.version == target)
            .collect();
        let mut old: Vec<&Slot> = live
            .iter()
            .copied()
            .filter(|s| s.version != target)
            .collect();
        let healthy_new = new.iter().filter(|s| healthy(&s.key)).count();
        if !old.is_empty() && healthy_new + old.len() > floor {
            old.sort_by_key(|s| healthy(&s.key));
            let key = old[0].key.clone();
            self.retire(name, &key);
            self.persist_or_log();
            return true;
        }
        if new.len() < wanted && live.len() < wanted + pace.max_surge as usize {
            self.add_slot(name, None);
            if let Some(d) = &self.driver {
                d.revive();
            }
            self.persist_or_log();
            return true;
        }
        // Done once only new replicas are left and all of them answer: a
        // new version that fails before then is still rolled back.
        if old.is_empty() && healthy_new >= wanted {
            let rolled_back = e.service.update.as_ref().is_some_and(|u| u.rolling_back);
            let e = self.services.get_mut(name).expect("present");
            e.service.update = None;
            if !rolled_back {
                e.service.note = format!("updated to version {target}");
            }
            tracing::info!(service = %name, version = target, "update done");
            self.persist_or_log();
        }
        false
    }
}
