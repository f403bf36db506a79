//! The floor plan of ARCHITECTURE.md, enforced on the source text: the
//! module graph of the `sluice` crate and of the queue crate has no cycles,
//! each top-level module of `src/` imports only from the floors below it,
//! every source file opens with a `//!` saying what it owns, and no source
//! file grows past 700 lines except the tables of data.
//!
//! The graph is read with `syn`, not by building the crate: every `use`
//! tree, every path in code (`crate::clock::now()`, `super::Reply`,
//! `config::Config` through an imported module) and the `crate::`/`super::`
//! paths inside macro calls. A path is followed through re-exports (`pub
//! use`) to the module that defines the item, so a facade `mod.rs` hides
//! no edge. A module may use its own ancestors and descendants (a facade
//! names its parts; a part uses the facade's shared types): those edges do
//! not count. Every other edge is lifted to the two siblings under the
//! nearest common ancestor (`smtp::session::tests` → `smtp::message`
//! counts as `smtp::session` → `smtp::message`), and that sibling graph
//! must have no cycle. When it has one, the test prints it with the line
//! of source behind each step.
//!
//! `SLUICE_PRINT_MODULE_GRAPH=1 cargo test --test architecture -- --nocapture`
//! prints every sibling edge, for a reader or a reviewer.
//!
//! Never builds or runs sluice; reads files only.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// The floors of `src/`, lowest first (ARCHITECTURE.md says why). A module
/// imports only from floors strictly below its own: modules on one floor
/// never import each other (`smtp` and `delivery` share no code but what
/// lies below them), and nothing imports `cli` but the binary.
const FLOORS: &[(&str, &[&str])] = &[
    ("ground", &["clock", "shutdown", "reply", "resolver", "metric", "verify"]),
    ("configuration", &["config"]),
    ("services", &["milter", "auth"]),
    ("wings", &["smtp", "delivery"]),
    ("daemon", &["server"]),
    ("front door", &["cli"]),
    ("binary", &["main"]),
];

/// Data tables, exempt from the line limit: they are lists, read by
/// searching, not by scrolling.
const TABLES: &[&str] = &["src/config/params.rs"];

/// The longest a source file may grow before it is split by concern.
const MAX_LINES: usize = 700;

/// A module path below the crate root (`["smtp", "session"]`); the root is `[]`.
type ModPath = Vec<String>;

#[derive(Debug, Default)]
struct Module {
    file: PathBuf,
    children: BTreeSet<String>,
    /// Items defined here (types, functions, constants, macros).
    defined: HashSet<String>,
    /// Names brought in by `use`, to the path as written.
    imports: HashMap<String, Vec<String>>,
    /// Targets of glob imports, as written.
    globs: Vec<Vec<String>>,
    /// Every path this module's code names, as written, with the file it is in.
    refs: Vec<Vec<String>>,
}

#[derive(Debug)]
struct Crate {
    /// How the crate names itself from outside (`sluice`), for the binary.
    name: &'static str,
    modules: BTreeMap<ModPath, Module>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn parse(file: &Path) -> syn::File {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
    syn::parse_file(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", file.display()))
}

impl Crate {
    /// Reads the crate whose root file is `lib` (following `mod` items to
    /// their files) and, when given, its binary `main` as module `main`.
    fn load(name: &'static str, lib: &Path, main: Option<&Path>) -> Crate {
        let mut krate = Crate { name, modules: BTreeMap::new() };
        let dir = lib.parent().expect("root file has a directory").to_path_buf();
        krate.load_items(Vec::new(), lib, &parse(lib).items, &dir);
        if let Some(main) = main {
            krate.load_items(vec!["main".to_owned()], main, &parse(main).items, &dir);
        }
        krate
    }

    fn load_items(&mut self, path: ModPath, file: &Path, items: &[syn::Item], child_dir: &Path) {
        let mut collector = Collector::default();
        for item in items {
            collector.visit_item(item);
        }
        let mut module = Module {
            file: file.to_path_buf(),
            defined: collector.defined,
            imports: collector.imports,
            ..Module::default()
        };
        module.globs = collector.globs;
        module.refs = collector.refs;
        for item in items {
            let syn::Item::Mod(m) = item else { continue };
            let name = m.ident.to_string();
            module.children.insert(name.clone());
            let mut child = path.clone();
            child.push(name.clone());
            match &m.content {
                Some((_, inner)) => self.load_items(child, file, inner, &child_dir.join(&name)),
                None => {
                    let flat = child_dir.join(format!("{name}.rs"));
                    let nested = child_dir.join(&name).join("mod.rs");
                    let found = if flat.exists() { flat } else { nested };
                    self.load_items(child, &found, &parse(&found).items, &child_dir.join(&name));
                }
            }
        }
        self.modules.insert(path, module);
    }

    /// The module that defines what `segs`, written in module `from`,
    /// names; `None` for other crates and local names.
    fn resolve(&self, from: &ModPath, segs: &[String], depth: usize) -> Option<ModPath> {
        if depth > 16 || segs.is_empty() {
            return None;
        }
        let here = self.modules.get(from)?;
        let first = segs[0].as_str();
        let (mut base, mut rest): (ModPath, &[String]) = match first {
            "crate" => (Vec::new(), &segs[1..]),
            _ if first == self.name && from.first().map(String::as_str) == Some("main") => {
                (Vec::new(), &segs[1..])
            }
            "self" => (from.clone(), &segs[1..]),
            "super" => {
                let mut base = from.clone();
                let mut rest = segs;
                while rest.first().map(String::as_str) == Some("super") {
                    base.pop();
                    rest = &rest[1..];
                }
                (base, rest)
            }
            _ if here.children.contains(first) => {
                let mut base = from.clone();
                base.push(first.to_owned());
                (base, &segs[1..])
            }
            _ if here.imports.contains_key(first) => {
                let target = &here.imports[first];
                // `use foo::bar;` names itself; its own path resolves elsewhere.
                if target.as_slice() == segs {
                    return self.resolve_use(from, target, depth);
                }
                let mut joined = target.clone();
                joined.extend_from_slice(&segs[1..]);
                return self.resolve_use(from, &joined, depth + 1);
            }
            _ => {
                for glob in &here.globs {
                    if let Some(target) = self.resolve_module(from, glob)
                        && let Some(module) = self.modules.get(&target)
                        && (module.children.contains(first)
                            || module.imports.contains_key(first)
                            || module.defined.contains(first))
                    {
                        let mut joined = glob.clone();
                        joined.extend_from_slice(segs);
                        return self.resolve(from, &joined, depth + 1);
                    }
                }
                return None;
            }
        };
        // Walk down through modules, then follow a re-export of the item.
        loop {
            let module = self.modules.get(&base)?;
            let Some(next) = rest.first() else { return Some(base) };
            if module.children.contains(next) {
                base.push(next.clone());
                rest = &rest[1..];
                continue;
            }
            if module.defined.contains(next) {
                return Some(base);
            }
            if let Some(target) = module.imports.get(next) {
                let mut joined = target.clone();
                joined.extend_from_slice(&rest[1..]);
                return self.resolve_use(&base, &joined, depth + 1).or(Some(base));
            }
            for glob in &module.globs {
                if let Some(target) = self.resolve_module(&base, glob)
                    && let Some(m) = self.modules.get(&target)
                    && (m.defined.contains(next) || m.imports.contains_key(next) || m.children.contains(next))
                {
                    let mut joined = glob.clone();
                    joined.extend_from_slice(rest);
                    return self.resolve(&base, &joined, depth + 1);
                }
            }
            return Some(base);
        }
    }

    /// A `use` path is resolved like any other, except that its first
    /// segment never names one of the module's own imports.
    fn resolve_use(&self, from: &ModPath, segs: &[String], depth: usize) -> Option<ModPath> {
        let here = self.modules.get(from)?;
        let first = segs.first()?.as_str();
        let relative = matches!(first, "crate" | "self" | "super")
            || here.children.contains(first)
            || (first == self.name && from.first().map(String::as_str) == Some("main"));
        if relative { self.resolve(from, segs, depth) } else { None }
    }

    /// The module a glob import names.
    fn resolve_module(&self, from: &ModPath, segs: &[String]) -> Option<ModPath> {
        let target = self.resolve_use(from, segs, 0)?;
        self.modules.contains_key(&target).then_some(target)
    }

    /// Sibling edges: `(from, to)` under their nearest common ancestor, with
    /// the source line behind each (one example per edge).
    fn sibling_edges(&self) -> BTreeMap<(ModPath, ModPath), String> {
        let mut edges = BTreeMap::new();
        for (path, module) in &self.modules {
            for segs in &module.refs {
                let Some(target) = self.resolve(path, segs, 0) else { continue };
                let common = path.iter().zip(&target).take_while(|(a, b)| a == b).count();
                if common == path.len() || common == target.len() {
                    continue; // ancestor or descendant
                }
                let from = path[..=common].to_vec();
                let to = target[..=common].to_vec();
                let why = format!(
                    "{} names {} (in {})",
                    module.file.strip_prefix(root()).unwrap_or(&module.file).display(),
                    segs.join("::"),
                    display(&target)
                );
                edges.entry((from, to)).or_insert(why);
            }
        }
        edges
    }
}

fn display(path: &ModPath) -> String {
    if path.is_empty() { "crate".to_owned() } else { path.join("::") }
}

/// Collects one module's names and paths, without entering inline modules
/// (they are modules of their own).
#[derive(Debug, Default)]
struct Collector {
    defined: HashSet<String>,
    imports: HashMap<String, Vec<String>>,
    globs: Vec<Vec<String>>,
    refs: Vec<Vec<String>>,
}

impl Collector {
    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let name = n.ident.to_string();
                let mut full = prefix.clone();
                if name != "self" {
                    full.push(name.clone());
                }
                let key = if name == "self" { prefix.last().cloned().unwrap_or_default() } else { name };
                self.imports.insert(key, full.clone());
                self.refs.push(full);
            }
            syn::UseTree::Rename(r) => {
                let mut full = prefix.clone();
                if r.ident != "self" {
                    full.push(r.ident.to_string());
                }
                self.imports.insert(r.rename.to_string(), full.clone());
                self.refs.push(full);
            }
            syn::UseTree::Glob(_) => {
                self.globs.push(prefix.clone());
                self.refs.push(prefix.clone());
            }
            syn::UseTree::Group(g) => {
                for tree in &g.items {
                    self.use_tree(prefix, tree);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Collector {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let ident = match item {
            syn::Item::Const(i) => Some(&i.ident),
            syn::Item::Enum(i) => Some(&i.ident),
            syn::Item::Fn(i) => Some(&i.sig.ident),
            syn::Item::Static(i) => Some(&i.ident),
            syn::Item::Struct(i) => Some(&i.ident),
            syn::Item::Trait(i) => Some(&i.ident),
            syn::Item::Type(i) => Some(&i.ident),
            syn::Item::Union(i) => Some(&i.ident),
            syn::Item::Macro(i) => i.ident.as_ref(),
            _ => None,
        };
        if let Some(ident) = ident {
            self.defined.insert(ident.to_string());
        }
        syn::visit::visit_item(self, item);
    }

    fn visit_item_mod(&mut self, _: &'ast syn::ItemMod) {}

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &item.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.segments.len() > 1 {
            self.refs.push(path.segments.iter().map(|s| s.ident.to_string()).collect());
        }
        syn::visit::visit_path(self, path);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        // Macro arguments are tokens, not syntax: find the paths in them by
        // their shape, `a :: b :: c`.
        let text = mac.tokens.to_string();
        let shape =
            regex::Regex::new(r"\b[A-Za-z_][A-Za-z0-9_]*(?:\s*::\s*[A-Za-z_][A-Za-z0-9_]*)+").expect("valid");
        for m in shape.find_iter(&text) {
            self.refs.push(m.as_str().split("::").map(|s| s.trim().to_owned()).collect());
        }
        syn::visit::visit_macro(self, mac);
    }
}

/// One cycle in the sibling graph, if there is any, as a list of nodes
/// (the first repeated at the end).
fn find_cycle(edges: &BTreeMap<(ModPath, ModPath), String>) -> Option<Vec<ModPath>> {
    let mut next: BTreeMap<&ModPath, Vec<&ModPath>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        next.entry(from).or_default().push(to);
    }
    // Depth-first search, colouring nodes: on the stack (grey) or done.
    let mut done: HashSet<&ModPath> = HashSet::new();
    for start in next.keys() {
        let mut stack: Vec<(&ModPath, usize)> = vec![(start, 0)];
        let mut on_stack: Vec<&ModPath> = vec![start];
        if done.contains(start) {
            continue;
        }
        while let Some((node, i)) = stack.pop() {
            let succ = next.get(node).map(Vec::as_slice).unwrap_or(&[]);
            if i < succ.len() {
                stack.push((node, i + 1));
                let s = succ[i];
                if let Some(pos) = on_stack.iter().position(|n| *n == s) {
                    let mut cycle: Vec<ModPath> = on_stack[pos..].iter().map(|n| (*n).clone()).collect();
                    cycle.push(s.clone());
                    return Some(cycle);
                }
                if !done.contains(s) {
                    stack.push((s, 0));
                    on_stack.push(s);
                }
            } else {
                done.insert(node);
                on_stack.pop();
            }
        }
    }
    None
}

fn print_graph(name: &str, edges: &BTreeMap<(ModPath, ModPath), String>) {
    if std::env::var_os("SLUICE_PRINT_MODULE_GRAPH").is_none() {
        return;
    }
    println!("module graph of {name} (sibling edges):");
    for ((from, to), why) in edges {
        println!("  {} -> {}    [{why}]", display(from), display(to));
    }
}

fn assert_acyclic(krate: &Crate) -> BTreeMap<(ModPath, ModPath), String> {
    let edges = krate.sibling_edges();
    print_graph(krate.name, &edges);
    if let Some(cycle) = find_cycle(&edges) {
        let mut msg = format!("the module graph of {} has a cycle:\n", krate.name);
        for pair in cycle.windows(2) {
            let why = &edges[&(pair[0].clone(), pair[1].clone())];
            let _ = writeln!(msg, "  {} -> {}    because {why}", display(&pair[0]), display(&pair[1]));
        }
        msg.push_str("move what both sides need below them (see ARCHITECTURE.md)");
        panic!("{msg}");
    }
    edges
}

#[test]
fn sluice_modules_form_no_cycle_and_respect_the_floors() {
    let krate = Crate::load("sluice", &root().join("src/lib.rs"), Some(&root().join("src/main.rs")));
    let edges = assert_acyclic(&krate);

    let floor_of = |top: &str| FLOORS.iter().position(|(_, mods)| mods.contains(&top));
    let mut wrong = Vec::new();
    for top in krate.modules.keys().filter(|p| p.len() == 1) {
        if floor_of(&top[0]).is_none() {
            wrong.push(format!(
                "top-level module {} is on no floor: add it to FLOORS and ARCHITECTURE.md",
                top[0]
            ));
        }
    }
    for ((from, to), why) in &edges {
        if from.len() != 1 {
            continue;
        }
        let (Some(f), Some(t)) = (floor_of(&from[0]), floor_of(&to[0])) else { continue };
        if t >= f {
            wrong.push(format!(
                "{} (floor {:?}) may not import {} (floor {:?}): {why}",
                from[0], FLOORS[f].0, to[0], FLOORS[t].0
            ));
        }
    }
    assert!(wrong.is_empty(), "the floors of ARCHITECTURE.md are broken:\n  {}", wrong.join("\n  "));
}

#[test]
fn queue_modules_form_no_cycle() {
    let krate = Crate::load("sluice_queue", &root().join("queue/src/lib.rs"), None);
    assert_acyclic(&krate);
}

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_source_file_says_what_it_owns_and_stays_short() {
    let mut files = Vec::new();
    for dir in ["src", "queue/src"] {
        source_files(&root().join(dir), &mut files);
    }
    files.sort();
    let mut wrong = Vec::new();
    for file in &files {
        let name = file.strip_prefix(root()).unwrap_or(file).display().to_string();
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("reading {name}: {e}"));
        if !text.starts_with("//!") {
            wrong.push(format!("{name} does not open with a //! saying what it owns"));
        }
        let lines = text.lines().count();
        if lines > MAX_LINES && !TABLES.contains(&name.as_str()) {
            wrong.push(format!("{name} has {lines} lines (more than {MAX_LINES}): split it by concern"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
