//! Priority classes and the preemption settings of a master
//! (`mezz master --priority-class`, `--preemption-*`): plain data, parsed
//! and checked here, used by the cluster's queue (`cluster/queue.rs`) and
//! the pure victim selection (`allocator/preempt.rs`).

use std::fmt;

/// One priority class: work of a higher value is queued first and may
/// preempt preemptible work of a lower value.
#[derive(Debug, Clone, PartialEq)]
pub struct PriorityClass {
    /// Its name (`production`).
    pub name: String,
    /// Higher first.
    pub value: i64,
    /// Whether higher classes may preempt its tasks.
    pub preemptible: bool,
    /// Whether its waiting work may preempt lower classes (preemption
    /// switched off per class when false).
    pub preempts: bool,
}

impl PriorityClass {
    /// Parses `NAME=VALUE[,preemptible][,no-preempt]`, e.g.
    /// `best-effort=0,preemptible`.
    ///
    /// ```
    /// use mezz_master::scheduling::PriorityClass;
    /// let c = PriorityClass::parse("batch=500,preemptible").unwrap();
    /// assert_eq!((c.name.as_str(), c.value, c.preemptible, c.preempts), ("batch", 500, true, true));
    /// ```
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = text.split(',');
        let head = parts.next().unwrap_or_default();
        let (name, value) = head.split_once('=').ok_or_else(|| {
            format!("priority class '{text}': expected NAME=VALUE[,preemptible][,no-preempt]")
        })?;
        let name = name.trim();
        mezz_proto::ids::validate_id("priority class", name)?;
        let value: i64 = value.trim().parse().map_err(|_| {
            format!("priority class '{name}': value '{value}' is not a whole number")
        })?;
        let mut class = PriorityClass {
            name: name.to_string(),
            value,
            preemptible: false,
            preempts: true,
        };
        for flag in parts {
            match flag.trim() {
                "preemptible" => class.preemptible = true,
                "no-preempt" => class.preempts = false,
                other => {
                    return Err(format!(
                        "priority class '{name}': unknown flag '{other}'; use preemptible or \
                         no-preempt"
                    ))
                }
            }
        }
        Ok(class)
    }
}

impl fmt::Display for PriorityClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.value)?;
        if self.preemptible {
            write!(f, ",preemptible")?;
        }
        if !self.preempts {
            write!(f, ",no-preempt")?;
        }
        Ok(())
    }
}

/// Priority classes and preemption limits.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulingConfig {
    /// The classes, any order; names are unique.
    pub classes: Vec<PriorityClass>,
    /// The class of work that names none.
    pub default_class: String,
    /// Victims the whole cluster may preempt per minute (0: preemption
    /// off).
    pub max_preemptions_per_minute: u32,
    /// How long resources freed by a preemption, or found for the head of
    /// the queue, are held for the waiting framework past the victims'
    /// grace period, in milliseconds.
    pub hold_ms: u64,
    /// The victims' kill grace period, in seconds; `None`: each task's
    /// own.
    pub grace_secs: Option<f64>,
}

impl Default for SchedulingConfig {
    fn default() -> Self {
        let class = |name: &str, value, preemptible| PriorityClass {
            name: name.into(),
            value,
            preemptible,
            preempts: true,
        };
        SchedulingConfig {
            classes: vec![
                class("production", 1000, false),
                class("batch", 500, true),
                class("best-effort", 0, true),
            ],
            default_class: "batch".into(),
            max_preemptions_per_minute: 60,
            hold_ms: 30_000,
            grace_secs: None,
        }
    }
}

impl SchedulingConfig {
    /// Checks names are unique and the default class exists.
    pub fn validate(&self) -> Result<(), String> {
        if self.classes.is_empty() {
            return Err("no priority classes; give at least one --priority-class".into());
        }
        for (i, c) in self.classes.iter().enumerate() {
            if self.classes[..i].iter().any(|o| o.name == c.name) {
                return Err(format!("priority class '{}' is given twice", c.name));
            }
        }
        if self.class(&self.default_class).is_none() {
            return Err(format!(
                "the default priority class '{}' is not among the classes ({})",
                self.default_class,
                self.names()
            ));
        }
        Ok(())
    }

    /// The class named `name`.
    pub fn class(&self, name: &str) -> Option<&PriorityClass> {
        self.classes.iter().find(|c| c.name == name)
    }

    /// The class named `name`, the default for an empty name, or an error
    /// naming the known classes.
    pub fn resolve(&self, name: &str) -> Result<&PriorityClass, String> {
        let name = if name.is_empty() {
            &self.default_class
        } else {
            name
        };
        self.class(name).ok_or_else(|| {
            format!(
                "unknown priority class '{name}'; known classes: {} (see `mezz priorities`)",
                self.names()
            )
        })
    }

    /// The class names, highest first, comma-separated.
    pub fn names(&self) -> String {
        self.sorted()
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The classes, highest first.
    pub fn sorted(&self) -> Vec<&PriorityClass> {
        let mut v: Vec<&PriorityClass> = self.classes.iter().collect();
        v.sort_by(|a, b| b.value.cmp(&a.value).then(a.name.cmp(&b.name)));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_unknown_names_list_the_known() {
        let c = SchedulingConfig::default();
        c.validate().unwrap();
        assert_eq!(c.resolve("").unwrap().name, "batch");
        let e = c.resolve("urgent").unwrap_err();
        assert!(
            e.contains("urgent") && e.contains("production, batch, best-effort"),
            "{e}"
        );
    }

    #[test]
    fn parse_refuses_what_it_does_not_know() {
        assert!(PriorityClass::parse("x").is_err());
        assert!(PriorityClass::parse("x=high").is_err());
        assert!(PriorityClass::parse("x=1,sometimes").is_err());
        let c = PriorityClass::parse("x=-5,no-preempt").unwrap();
        assert_eq!(c.to_string(), "x=-5,no-preempt");
    }
}
