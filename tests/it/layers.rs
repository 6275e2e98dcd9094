//! The architecture, checked: which module of the `fhec` crate uses which (from the source,
//! comments aside), with no circle between modules, no backend or runtime module that uses
//! the passes, and a CLI that stands on the public API only. The graph is the one printed in
//! docs/design.md (`FHEC_BLESS=1` rewrites it there).

use crate::common::repo;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every `.rs` file under `dir`, recursively.
fn sources(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(sources(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

/// The code of a file without its comments (doc links are not uses).
fn code(path: &Path) -> String {
    std::fs::read_to_string(path)
        .expect("read")
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level module a file of `src/` belongs to.
fn module_of(src: &Path, p: &Path) -> String {
    let rel = p.strip_prefix(src).expect("under src");
    let first = rel.components().next().expect("a component");
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_string()
}

/// Module → modules it uses (`crate::m`), and external crates of ours it uses.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = repo().join("src");
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for p in sources(&src) {
        let m = module_of(&src, &p);
        if matches!(m.as_str(), "lib" | "main") {
            continue;
        }
        let text = code(&p);
        let e = g.entry(m.clone()).or_default();
        for (i, _) in text.match_indices("crate::") {
            let rest = &text[i + 7..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty()
                && name != m
                && name.chars().next().is_some_and(|c| c.is_lowercase())
            {
                e.insert(name);
            }
        }
        for krate in ["fhec_passes", "fhec_ir"] {
            if text.contains(&format!("{krate}::")) {
                e.insert(krate.replace('_', "-"));
            }
        }
    }
    g
}

fn cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|x| x == n) {
            return Some(path[i..].to_vec());
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, g, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for n in g.keys() {
        if let Some(c) = visit(n, g, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn modules_form_layers_and_the_cli_stands_on_the_public_api() {
    let g = graph();
    // the CLI and the other fronts are outside the library's graph
    let lib: BTreeMap<String, BTreeSet<String>> = g
        .iter()
        .filter(|(m, _)| !matches!(m.as_str(), "cli" | "serve" | "fuzzing"))
        .map(|(m, d)| (m.clone(), d.clone()))
        .collect();
    assert_eq!(cycle(&lib), None, "modules that use each other: {lib:#?}");
    for m in ["backend", "runtime", "import"] {
        assert!(
            !lib[m].contains("fhec-passes"),
            "`{m}` uses the passes: {:?}",
            lib[m]
        );
    }
    assert!(
        !lib["runtime"].contains("artifact") && !lib["runtime"].contains("compile"),
        "the runtime runs programs only: {:?}",
        lib["runtime"]
    );
    // the fronts use `fhec::` items the library re-exports, not its inner modules
    for dir in [
        repo().join("src/cli"),
        repo().join("src/serve"),
        repo().join("python/src"),
    ] {
        if !dir.exists() {
            continue;
        }
        for p in sources(&dir) {
            let text = code(&p);
            // the server lives in the crate (`fhec::serve`): its paths are `crate::`
            for inner in [
                "fhec::backend::",
                "fhec::runtime::",
                "fhec::artifact::",
                "fhec::session::",
                "fhec::compile::",
                "crate::backend::",
                "crate::runtime::",
                "crate::artifact::",
                "crate::session::",
                "crate::compile::",
            ] {
                assert!(
                    !text.contains(inner),
                    "{} reaches inside the library ({inner})",
                    p.display()
                );
            }
        }
    }
    // the graph docs/design.md prints
    let text: String = lib
        .iter()
        .map(|(m, d)| {
            let d: Vec<&str> = d.iter().map(String::as_str).collect();
            format!(
                "{m:<9} → {}\n",
                if d.is_empty() {
                    "-".to_string()
                } else {
                    d.join(", ")
                }
            )
        })
        .collect();
    let doc = repo().join("docs/design.md");
    let md = std::fs::read_to_string(&doc).expect("docs/design.md");
    let (a, b) = ("<!-- graph -->\n```\n", "```\n<!-- /graph -->");
    let i = md.find(a).expect("graph marker") + a.len();
    let j = md.find(b).expect("graph end marker");
    if std::env::var_os("FHEC_BLESS").is_some() {
        std::fs::write(&doc, format!("{}{text}{}", &md[..i], &md[j..])).expect("write");
    } else {
        assert_eq!(
            &md[i..j],
            text,
            "docs/design.md's module graph is stale (FHEC_BLESS=1 rewrites it)"
        );
    }
}
