//! A GPU workload trace: the jobs of a CSV with `name`, `time` (arrival,
//! seconds from the trace's start), `gpus` and `duration` (seconds) columns,
//! as in the resolved Pollux workloads (`name,time,application,
//! num_replicas,batch_size,gpus,duration`); other columns are ignored.
//! Parsing only: no files are opened here, the caller reads the text.

use thiserror::Error;

/// One job of a trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Its name (unique within the trace).
    pub name: String,
    /// Arrival, trace seconds from the start.
    pub arrival_s: f64,
    /// GPUs it needs, all at once (a gang).
    pub gpus: usize,
    /// How long it runs once started, trace seconds.
    pub duration_s: f64,
}

/// What is wrong with a trace: the line (1 is the header) and column.
#[derive(Debug, Error, PartialEq)]
pub enum TraceError {
    /// The header lacks a column the replay needs.
    #[error("header (line 1): no '{0}' column; a trace needs name, time, gpus and duration")]
    MissingColumn(&'static str),
    /// A row has fewer fields than the header.
    #[error("line {line}: {found} field(s), the header has {expected}")]
    ShortRow {
        /// 1-based line number.
        line: usize,
        /// Fields on the line.
        found: usize,
        /// Fields in the header.
        expected: usize,
    },
    /// A value does not parse or is out of range.
    #[error("line {line}, column '{column}': {why}")]
    BadValue {
        /// 1-based line number.
        line: usize,
        /// The column's name.
        column: &'static str,
        /// What is wrong.
        why: String,
    },
    /// The same job name twice.
    #[error("line {line}: job '{name}' appears twice (names must be unique)")]
    Duplicate {
        /// 1-based line number of the second one.
        line: usize,
        /// The name.
        name: String,
    },
    /// No jobs at all.
    #[error("the trace has no jobs")]
    Empty,
}

/// Parses a trace; jobs come back sorted by arrival (ties keep file order).
///
/// ```
/// let jobs = mezz_sim::trace::parse("name,time,gpus,duration\na,0,4,60\nb,10,1,5\n").unwrap();
/// assert_eq!((jobs[1].name.as_str(), jobs[1].gpus, jobs[1].duration_s), ("b", 1, 5.0));
/// ```
pub fn parse(text: &str) -> Result<Vec<Job>, TraceError> {
    let mut lines = text.lines().enumerate();
    let header: Vec<&str> = match lines.next() {
        Some((_, h)) => h.split(',').map(str::trim).collect(),
        None => return Err(TraceError::Empty),
    };
    let col = |name: &'static str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or(TraceError::MissingColumn(name))
    };
    let (c_name, c_time, c_gpus, c_dur) =
        (col("name")?, col("time")?, col("gpus")?, col("duration")?);
    let mut jobs = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, raw) in lines {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = raw.split(',').map(str::trim).collect();
        if fields.len() < header.len() {
            return Err(TraceError::ShortRow {
                line,
                found: fields.len(),
                expected: header.len(),
            });
        }
        let bad = |column, why: String| TraceError::BadValue { line, column, why };
        let seconds = |column: &'static str, idx: usize| {
            let v = fields[idx];
            match v.parse::<f64>() {
                Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
                _ => Err(bad(
                    column,
                    format!("'{v}' is not a non-negative number of seconds"),
                )),
            }
        };
        let name = fields[c_name];
        if name.is_empty() {
            return Err(bad("name", "empty job name".into()));
        }
        let arrival_s = seconds("time", c_time)?;
        let duration_s = seconds("duration", c_dur)?;
        let gpus = match fields[c_gpus].parse::<usize>() {
            Ok(g) if g > 0 => g,
            _ => {
                return Err(bad(
                    "gpus",
                    format!(
                        "'{}' is not a whole number of GPUs of at least 1",
                        fields[c_gpus]
                    ),
                ))
            }
        };
        if !seen.insert(name.to_string()) {
            return Err(TraceError::Duplicate {
                line,
                name: name.to_string(),
            });
        }
        jobs.push(Job {
            name: name.to_string(),
            arrival_s,
            gpus,
            duration_s,
        });
    }
    if jobs.is_empty() {
        return Err(TraceError::Empty);
    }
    jobs.sort_by(|a, b| a.arrival_s.total_cmp(&b.arrival_s));
    Ok(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_resolved_pollux_format_parses() {
        let t = "name,time,application,num_replicas,batch_size,gpus,duration\n\
                 cifar10-0,107,cifar10,6,2048,6,910\nncf-2,35,ncf,1,32768,1,47\n";
        let jobs = parse(t).unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].name, "ncf-2", "sorted by arrival");
        assert_eq!(
            (jobs[1].gpus, jobs[1].duration_s, jobs[1].arrival_s),
            (6, 910.0, 107.0)
        );
    }

    #[test]
    fn errors_name_the_line_and_column() {
        let e = parse("name,time,gpus\na,0,1\n").unwrap_err();
        assert_eq!(e, TraceError::MissingColumn("duration"));
        let e = parse("name,time,gpus,duration\na,0,1,5\nb,x,1,5\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "line 3, column 'time': 'x' is not a non-negative number of seconds"
        );
        let e = parse("name,time,gpus,duration\na,0,0,5\n").unwrap_err();
        assert!(e.to_string().starts_with("line 2, column 'gpus'"), "{e}");
        let e = parse("name,time,gpus,duration\na,0,1\n").unwrap_err();
        assert_eq!(e.to_string(), "line 2: 3 field(s), the header has 4");
        let e = parse("name,time,gpus,duration\na,0,1,5\na,1,1,5\n").unwrap_err();
        assert!(matches!(e, TraceError::Duplicate { line: 3, .. }));
        assert_eq!(parse("name,time,gpus,duration\n"), Err(TraceError::Empty));
    }
}
