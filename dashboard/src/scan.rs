//! What lies under the dashboard's roots: run directories, studies and evaluation reports,
//! each under an id made from its path. Pages name things only by these ids: a request never
//! names a path, so nothing outside the roots can be asked for (`..` is just an unknown id), and
//! a symbolic link is followed only where it stays inside a root.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rekindle_train::durable::dir::RunDir;
use rekindle_tune::{RESOLVED, Storage};

/// How deep under a root the scan looks (a study's trials sit at depth 3 below its folder).
const MAX_DEPTH: usize = 8;

/// A run's own folders (checkpoints, event files, its report, Burn's logs): shown on the run's
/// page, never runs or reports of their own.
const RUN_OWN: &[&str] = &["checkpoint", "tensorboard", "eval", "train", "valid"];

/// Folders nothing of ours sits in.
const SKIP: &[&str] = &["node_modules", "target"];

/// Everything found under the roots, by id.
#[derive(Clone, Debug, Default)]
pub struct Index {
    /// Run directories (a `config.toml` beside a `metrics-steps.csv` or `checkpoint/`).
    pub runs: BTreeMap<String, PathBuf>,
    /// Study directories (holding tune's `resolved-study.toml`) and where their trials are.
    pub studies: BTreeMap<String, FoundStudy>,
    /// Evaluation reports (a `metrics.json` beside `per-class.csv`) outside any run.
    pub reports: BTreeMap<String, PathBuf>,
}

/// A study directory and its storage.
#[derive(Clone, Debug)]
pub struct FoundStudy {
    /// The study directory.
    pub dir: PathBuf,
    /// Where its trials are: `study.db` in it, else the PostgreSQL database given.
    pub storage: Option<Storage>,
}

/// The roots, canonical, and the PostgreSQL URLs to look for studies in.
#[derive(Clone, Debug)]
pub struct Roots {
    roots: Vec<PathBuf>,
    postgres: Vec<String>,
}

impl Roots {
    /// The given paths (each must exist) and PostgreSQL URLs.
    pub fn new(paths: &[PathBuf], postgres: Vec<String>) -> Result<Self, String> {
        let roots = paths
            .iter()
            .map(|p| {
                p.canonicalize()
                    .map_err(|e| format!("{}: {e}", p.display()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { roots, postgres })
    }

    /// Whether `path` (canonical) lies under one of the roots.
    pub fn contains(&self, path: &Path) -> bool {
        self.roots.iter().any(|r| path.starts_with(r))
    }

    /// The canonical `path`, if it exists and lies under a root: what a file is served from.
    pub fn inside(&self, path: &Path) -> Option<PathBuf> {
        let real = path.canonicalize().ok()?;
        self.contains(&real).then_some(real)
    }

    /// Walks every root.
    pub fn scan(&self) -> Index {
        let mut index = Index::default();
        for (k, root) in self.roots.iter().enumerate() {
            let name = root
                .file_name()
                .map_or_else(|| "root".into(), |n| n.to_string_lossy().into_owned());
            // Two roots with the same name get their position too.
            let same = self
                .roots
                .iter()
                .filter(|r| r.file_name() == root.file_name());
            let prefix = if same.count() > 1 {
                format!("{name}~{k}")
            } else {
                name
            };
            self.walk(root, &prefix, 0, &mut index);
        }
        index
    }

    fn walk(&self, dir: &Path, id: &str, depth: usize, index: &mut Index) {
        if dir.join(RESOLVED).is_file() {
            index.studies.insert(id.to_string(), self.study(dir));
        }
        let run = is_run(dir);
        if run {
            index.runs.insert(id.to_string(), dir.to_path_buf());
        } else if dir.join("metrics.json").is_file() && dir.join("per-class.csv").is_file() {
            index.reports.insert(id.to_string(), dir.to_path_buf());
        }
        if depth >= MAX_DEPTH {
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut children: Vec<(String, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                let hidden = name.starts_with('.')
                    || SKIP.contains(&name.as_str())
                    || (run && RUN_OWN.contains(&name.as_str()));
                let path = e.path();
                let kind = e.file_type().ok()?;
                let dir = if kind.is_symlink() {
                    self.inside(&path).is_some_and(|p| p.is_dir())
                } else {
                    kind.is_dir()
                };
                (dir && !hidden).then_some((name, path))
            })
            .collect();
        children.sort();
        for (name, path) in children {
            self.walk(&path, &format!("{id}/{name}"), depth + 1, index);
        }
    }

    fn study(&self, dir: &Path) -> FoundStudy {
        let file = dir.join("study.db");
        let storage = if file.is_file() {
            Some(Storage::sqlite(file))
        } else {
            let name = study_name(dir);
            self.postgres
                .first()
                .and_then(|url| Storage::parse(Some(url), dir, &name).ok())
        };
        FoundStudy {
            dir: dir.to_path_buf(),
            storage,
        }
    }
}

/// Whether `dir` holds a training run.
fn is_run(dir: &Path) -> bool {
    let run = RunDir::new(dir);
    run.config().is_file() && (run.steps_csv().is_file() || run.checkpoints().is_dir())
}

/// The name a study directory's resolved study file gives (tune names PostgreSQL schemas
/// after it); the folder's name if the file does not say.
pub fn study_name(dir: &Path) -> String {
    let named = std::fs::read_to_string(dir.join(RESOLVED))
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .and_then(|t| t.get("study")?.get("name")?.as_str().map(String::from));
    named.unwrap_or_else(|| {
        dir.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(dir: &Path) {
        std::fs::create_dir_all(dir.join("checkpoint")).unwrap();
        std::fs::write(dir.join("config.toml"), "").unwrap();
        std::fs::write(dir.join("metrics-steps.csv"), "").unwrap();
    }

    #[test]
    fn finds_runs_studies_and_reports_and_follows_links_only_inside_the_roots() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("runs");
        run(&root.join("a"));
        run(&root.join("study/trials/0000"));
        std::fs::write(root.join("study").join(RESOLVED), "[study]\nname = \"s\"\n").unwrap();
        // `cargo xtask eval` writes eval/ beside the model file; a run's own eval/ is its page's.
        for report in [root.join("models/eval"), root.join("a/eval")] {
            std::fs::create_dir_all(&report).unwrap();
            std::fs::write(report.join("metrics.json"), "{}").unwrap();
            std::fs::write(report.join("per-class.csv"), "").unwrap();
        }
        let outside = tmp.path().join("outside");
        run(&outside.join("secret"));
        std::os::unix::fs::symlink(&outside, root.join("link-out")).unwrap();
        std::os::unix::fs::symlink(root.join("a"), root.join("link-in")).unwrap();

        let roots = Roots::new(std::slice::from_ref(&root), vec![]).unwrap();
        let index = roots.scan();
        let runs: Vec<&str> = index.runs.keys().map(String::as_str).collect();
        assert_eq!(runs, ["runs/a", "runs/link-in", "runs/study/trials/0000"]);
        assert_eq!(index.studies.keys().collect::<Vec<_>>(), ["runs/study"]);
        assert_eq!(
            index.reports.keys().collect::<Vec<_>>(),
            ["runs/models/eval"]
        );
        assert!(roots.inside(&outside.join("secret/config.toml")).is_none());
        assert!(
            roots
                .inside(&root.join("link-out/secret/config.toml"))
                .is_none()
        );
        assert!(roots.inside(&root.join("a/config.toml")).is_some());
        assert_eq!(study_name(&root.join("study")), "s");
    }
}
