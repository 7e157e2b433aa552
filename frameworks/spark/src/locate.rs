//! Finding Spark (`--spark-home`, `$SPARK_HOME`, or the `pyspark` package
//! of a Python) and a Java that runs it, before anything is asked of the
//! cluster. The parsing is pure; the probes run `java` and `python`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Java versions Spark 4 runs on.
pub const JAVA_VERSIONS: [u32; 2] = [17, 21];

/// What is missing, in one line that says how to get it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LocateError(pub String);

/// The major version in `java -version` output (`openjdk version
/// "17.0.15"` → 17, `"1.8.0_392"` → 8).
pub fn java_major(version_output: &str) -> Option<u32> {
    let quoted = version_output.split('"').nth(1)?;
    let mut parts = quoted.split(['.', '-', '+', '_']);
    let first: u32 = parts.next()?.parse().ok()?;
    if first == 1 {
        parts.next()?.parse().ok()
    } else {
        Some(first)
    }
}

/// The `java` to use: `$JAVA_HOME/bin/java`, else `java` on PATH; checked
/// to be Java 17 or 21. Returns the `JAVA_HOME` to hand to tasks (if one
/// was set).
pub fn find_java() -> Result<Option<PathBuf>, LocateError> {
    let java_home = std::env::var_os("JAVA_HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from);
    let java = match &java_home {
        Some(h) => h.join("bin/java"),
        None => PathBuf::from("java"),
    };
    let install = "install Java 17 (e.g. `apt-get install openjdk-17-jre-headless`) \
                   or point JAVA_HOME at one";
    let out = Command::new(&java).arg("-version").output().map_err(|e| {
        LocateError(format!(
            "no Java found ({} could not run: {e}); Spark needs Java 17 or 21: {install}",
            java.display()
        ))
    })?;
    // `java -version` writes to stderr.
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    match java_major(&text) {
        Some(v) if JAVA_VERSIONS.contains(&v) => Ok(java_home),
        Some(v) => Err(LocateError(format!(
            "{} is Java {v}; Spark 4 needs Java 17 or 21: {install}",
            java.display()
        ))),
        None => Err(LocateError(format!(
            "{} -version did not say which Java it is; Spark needs Java 17 or 21: {install}",
            java.display()
        ))),
    }
}

/// Whether `dir` holds a Spark distribution (or the pyspark package).
pub fn is_spark_home(dir: &Path) -> bool {
    ["bin/spark-class", "bin/spark-submit"]
        .iter()
        .all(|p| dir.join(p).is_file())
        && dir.join("jars").is_dir()
}

/// Finds Spark: `spark_home` (the flag), else `$SPARK_HOME`, else the
/// `pyspark` package of `python`. Returns the home and the Python that
/// has pyspark (if that is how it was found).
pub fn find_spark(
    spark_home: Option<&Path>,
    python: &Path,
) -> Result<(PathBuf, Option<PathBuf>), LocateError> {
    let given = spark_home
        .map(|p| (p.to_path_buf(), "--spark-home"))
        .or_else(|| {
            std::env::var_os("SPARK_HOME")
                .filter(|h| !h.is_empty())
                .map(|h| (PathBuf::from(h), "$SPARK_HOME"))
        });
    if let Some((dir, from)) = given {
        if is_spark_home(&dir) {
            return Ok((absolute(&dir), None));
        }
        return Err(LocateError(format!(
            "{from} {} is not a Spark distribution (no bin/spark-class, bin/spark-submit and jars/); \
             download Spark 4 from https://spark.apache.org/downloads.html or `pip install pyspark`",
            dir.display()
        )));
    }
    let out = Command::new(python)
        .args([
            "-c",
            "import os, pyspark; print(os.path.dirname(pyspark.__file__))",
        ])
        .output();
    let install = format!(
        "`{} -m pip install pyspark`, or give --spark-home / $SPARK_HOME",
        python.display()
    );
    match out {
        Ok(o) if o.status.success() => {
            let dir = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
            if is_spark_home(&dir) {
                Ok((dir, Some(python_path(python))))
            } else {
                Err(LocateError(format!(
                    "the pyspark package at {} has no bin/spark-class; reinstall it: {install}",
                    dir.display()
                )))
            }
        }
        Ok(_) => Err(LocateError(format!(
            "no Spark found: {} cannot import pyspark; install it: {install}",
            python.display()
        ))),
        Err(e) => Err(LocateError(format!(
            "no Spark found: no $SPARK_HOME, and {} could not run ({e}); \
             give --python, --spark-home or $SPARK_HOME",
            python.display()
        ))),
    }
}

/// `python` as an absolute path (tasks run elsewhere, with their own PATH
/// and working directory).
pub fn python_path(python: &Path) -> PathBuf {
    if python.components().count() > 1 {
        return absolute(python);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(python))
        .find(|p| p.is_file())
        .unwrap_or_else(|| python.to_path_buf())
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_versions_are_read_from_both_styles() {
        let openjdk = "openjdk version \"17.0.15\" 2025-04-15\nOpenJDK Runtime Environment";
        assert_eq!(java_major(openjdk), Some(17));
        assert_eq!(java_major("java version \"1.8.0_392\""), Some(8));
        assert_eq!(java_major("openjdk version \"21\" 2023-09-19"), Some(21));
        assert_eq!(java_major("openjdk version \"22-ea\""), Some(22));
        assert_eq!(java_major("no java here"), None);
    }

    #[test]
    fn a_directory_without_spark_is_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("mezz-spark-none-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let err = find_spark(Some(&dir), Path::new("python3")).expect_err("not spark");
        assert!(err.0.starts_with("--spark-home "), "{err}");
        assert!(err.0.contains("not a Spark distribution"), "{err}");
        std::fs::create_dir_all(dir.join("bin")).expect("bin");
        std::fs::create_dir_all(dir.join("jars")).expect("jars");
        for p in ["bin/spark-class", "bin/spark-submit"] {
            std::fs::write(dir.join(p), "").expect("file");
        }
        assert_eq!(
            find_spark(Some(&dir), Path::new("python3")),
            Ok((dir.clone(), None))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_python_without_pyspark_names_the_install() {
        let err = find_spark(None, Path::new("/nonexistent/python")).expect_err("no python");
        if std::env::var_os("SPARK_HOME").is_none() {
            assert!(err.0.contains("/nonexistent/python"), "{err}");
        }
    }
}
