//! The module graph of each crate has no circles (issue 29: crates that show their layers).
//!
//! Every `.rs` file under `src/` of each crate (the firmware's layer crates `firmware/crates/*`, `firmware`,
//! `host`) is one node. Its module path comes from where it lies:
//! `lib.rs` is the crate root, `foo.rs` and `foo/mod.rs` are `foo`, `foo/bar.rs` is `foo::bar`. A binary root
//! (`main.rs` beside a `lib.rs`, `bin/*.rs`) is a node of its own that nothing can name.
//!
//! The edges are the uses of one module by another: every path that starts with `crate::` or `super::` (in `use`
//! declarations, grouped ones like `use crate::{a, b::{c}}` included, and inline in code), and in a binary root
//! every path that starts with the library's name (`host::`, `firmware::`). A path leads to the file of its
//! longest prefix that is a module with a file of its own (`crate::budget::Footprint` → `budget.rs`), except that
//! a name that module re-exports (`pub use`) is followed to where it comes from: `crate::store::Corruption` leads
//! to the file that defines `Corruption`, not to the `store/mod.rs` facade, so a circle through a facade is seen.
//! Paths in comments, doc comments and string literals are not uses. A `mod x;` declaration is not an edge, and
//! neither are `self::` and bare paths (`pub use child::X`, `child::f()`), which can only name a file's own
//! children: a parent that declares, re-exports and calls its children is one unit with them.
//!
//! Test code is not part of the graph: a file declared `#[cfg(test)] mod x;` (with the files under it) and every
//! item under `#[cfg(test)]` inside a file (`mod tests { ... }`, test-only `use`s) are left out. Tests may reach
//! into any layer; only what ships has to be layered.
//!
//! The check fails listing every strongly connected component (Tarjan) of more than one file, with the edges
//! that tie it and a path that makes each edge.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Edges that close a known circle and are allowed for now: (crate, from file, to file, why). None: a new
/// circle fails the test. (The check fails when an allowed edge no longer exists, so an allowance cannot outlive
/// its reason.)
const ALLOWED: &[(&str, &str, &str, &str)] = &[];

/// A token of Rust source, as far as paths are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// An identifier or keyword (raw identifiers without their `r#`).
    Ident(String),
    /// `::`
    Sep,
    /// Any other single punctuation character.
    Punct(char),
}

/// Split source text into tokens, dropping comments (doc comments included), string, byte string, raw string
/// and character literals, lifetimes and numbers.
fn lex(src: &str) -> Vec<Tok> {
    let c: Vec<char> = src.chars().collect();
    let n = c.len();
    let at = |i: usize| -> char { if i < n { c[i] } else { '\0' } };
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < n && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0usize;
            while i < n {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if ch == '"' {
            i = skip_string(&c, i + 1);
        } else if let Some(after) = raw_string_start(&c, i) {
            // r"..", r#".."#, br"..", cr#".."#: `after` is the index just past the opening quote.
            let hashes = c[i..after - 1].iter().filter(|&&h| h == '#').count();
            i = after;
            while i < n {
                if c[i] == '"' && (0..hashes).all(|k| at(i + 1 + k) == '#') {
                    i += 1 + hashes;
                    break;
                }
                i += 1;
            }
        } else if (ch == 'b' || ch == 'c') && at(i + 1) == '"' {
            i = skip_string(&c, i + 2);
        } else if ch == 'b' && at(i + 1) == '\'' {
            i = skip_char(&c, i + 2);
        } else if ch == '\'' {
            if at(i + 1) == '\\' || (at(i + 2) == '\'' && at(i + 1) != '\'') {
                i = skip_char(&c, i + 1);
            } else {
                // A lifetime or label: the quote and its name.
                i += 1;
                while i < n && (c[i].is_alphanumeric() || c[i] == '_') {
                    i += 1;
                }
            }
        } else if ch == 'r' && at(i + 1) == '#' && (at(i + 2).is_alphabetic() || at(i + 2) == '_') {
            let start = i + 2;
            i = start;
            while i < n && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(c[start..i].iter().collect()));
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < n && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(c[start..i].iter().collect()));
        } else if ch.is_ascii_digit() {
            while i < n && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
        } else if ch == ':' && at(i + 1) == ':' {
            out.push(Tok::Sep);
            i += 2;
        } else {
            out.push(Tok::Punct(ch));
            i += 1;
        }
    }
    out
}

/// Index just past the closing quote of a string whose body starts at `i` (escapes honoured).
fn skip_string(c: &[char], mut i: usize) -> usize {
    while i < c.len() {
        match c[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// Index just past the closing quote of a character literal whose body starts at `i`.
fn skip_char(c: &[char], mut i: usize) -> usize {
    while i < c.len() {
        match c[i] {
            '\\' => i += 2,
            '\'' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// When a raw (byte/C) string starts at `i`, the index just past its opening quote.
fn raw_string_start(c: &[char], i: usize) -> Option<usize> {
    // Not the tail of an identifier (`bar"` cannot happen in Rust, but `for r in` must not read as `r`).
    if i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_') {
        return None;
    }
    let mut j = i;
    if c.get(j).is_some_and(|&x| x == 'b' || x == 'c') {
        j += 1;
    }
    if c.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    while c.get(j) == Some(&'#') {
        j += 1;
    }
    (c.get(j) == Some(&'"')).then_some(j + 1)
}

/// One path a file uses.
#[derive(Debug, Clone)]
struct UsedPath {
    /// The path as written; its first segment is `crate`, `super`, `self` (also put in front of a bare path
    /// that starts with one of the file's own child modules) or the library's name.
    path: Vec<String>,
    /// The module it is written in: the file's module plus any inline `mod x { .. }` around it.
    at: Vec<String>,
    /// Part of a `pub use` (any `pub(..)` too): a re-export.
    reexport: bool,
    /// The name it is imported or re-exported as (the last segment, or the `as` name).
    name: Option<String>,
}

/// What one file says about the graph: the paths it uses and the test-only children it declares.
#[derive(Debug, Default)]
struct FileUses {
    /// Every path of interest, in `use` declarations and inline in code.
    paths: Vec<UsedPath>,
    /// Module paths of children declared `#[cfg(test)] mod x;`.
    test_children: Vec<Vec<String>>,
    /// The child modules declared `mod x;` (not test-only).
    children: BTreeSet<String>,
}

/// True when the tokens at `i` are `#[cfg(test)]` or `#[cfg(all(test, ..))]`; returns the index past the `]`.
fn cfg_test_at(t: &[Tok], i: usize) -> Option<usize> {
    let id = |k: usize, s: &str| matches!(t.get(k), Some(Tok::Ident(x)) if x == s);
    let p = |k: usize, ch: char| t.get(k) == Some(&Tok::Punct(ch));
    if !(p(i, '#') && p(i + 1, '[') && id(i + 2, "cfg") && p(i + 3, '(')) {
        return None;
    }
    let test_only = (id(i + 4, "test") && p(i + 5, ')')) || (id(i + 4, "all") && p(i + 5, '(') && id(i + 6, "test"));
    if !test_only {
        return None;
    }
    Some(skip_group(t, i + 1))
}

/// `t[i]` opens a bracket; the index just past its matching close.
fn skip_group(t: &[Tok], i: usize) -> usize {
    let mut depth = 0i64;
    let mut k = i;
    while k < t.len() {
        match t[k] {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => {
                depth -= 1;
                if depth == 0 {
                    return k + 1;
                }
            }
            _ => {}
        }
        k += 1;
    }
    k
}

/// The index just past the item that starts at `i` (after its attributes): a `;` outside brackets, or the
/// first `{ .. }` block outside parentheses and square brackets.
fn skip_item(t: &[Tok], mut i: usize) -> usize {
    while t.get(i) == Some(&Tok::Punct('#')) {
        i = skip_group(t, i + 1);
    }
    let mut depth = 0i64;
    while i < t.len() {
        match t[i] {
            Tok::Punct('(' | '[') => depth += 1,
            Tok::Punct(')' | ']') => depth -= 1,
            Tok::Punct('{') if depth == 0 => return skip_group(t, i),
            Tok::Punct(';') if depth == 0 => return i + 1,
            _ => {}
        }
        i += 1;
    }
    i
}

/// Parse the path tree at `t[*i]` onto `prefix`, pushing every full path with its `as` name (`None` for a
/// glob) to `out`. A `self` segment (`{self, ..}`) stands for the prefix.
fn parse_tree(t: &[Tok], i: &mut usize, prefix: Vec<String>, out: &mut Vec<(Vec<String>, Option<String>)>) {
    let mut path = prefix;
    loop {
        match t.get(*i) {
            Some(Tok::Ident(s)) => {
                if s != "self" || path.is_empty() {
                    path.push(s.clone());
                }
                *i += 1;
                if t.get(*i) == Some(&Tok::Sep) {
                    *i += 1;
                } else {
                    let mut name = path.last().cloned();
                    if let (Some(Tok::Ident(a)), Some(Tok::Ident(alias))) = (t.get(*i), t.get(*i + 1))
                        && a == "as"
                    {
                        name = Some(alias.clone());
                        *i += 2;
                    }
                    out.push((path, name));
                    return;
                }
            }
            Some(Tok::Punct('{')) => {
                *i += 1;
                loop {
                    match t.get(*i) {
                        None => return,
                        Some(Tok::Punct('}')) => {
                            *i += 1;
                            return;
                        }
                        Some(Tok::Ident(_) | Tok::Punct('{' | '*')) => {
                            parse_tree(t, i, path.clone(), out);
                            // Anything else up to the next `,` or `}`.
                            while let Some(tok) = t.get(*i) {
                                if matches!(tok, Tok::Punct(',' | '}')) {
                                    break;
                                }
                                *i += 1;
                            }
                        }
                        Some(_) => *i += 1,
                    }
                }
            }
            Some(Tok::Punct('*')) => {
                *i += 1;
                out.push((path, None));
                return;
            }
            _ => {
                // A turbofish `<`, or the end of the path.
                let name = path.last().cloned();
                out.push((path, name));
                return;
            }
        }
    }
}

/// The child modules a file declares with `mod x;` (not under `#[cfg(test)]`, not inside an inline module).
fn declared_children(t: &[Tok]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut depth = 0i64;
    let mut i = 0;
    while i < t.len() {
        if let Some(after) = cfg_test_at(t, i) {
            i = skip_item(t, after);
            continue;
        }
        match &t[i] {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => depth -= 1,
            Tok::Ident(m) if m == "mod" && depth == 0 => {
                if let (Some(Tok::Ident(name)), Some(Tok::Punct(';'))) = (t.get(i + 1), t.get(i + 2)) {
                    out.insert(name.clone());
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Collect what one file uses. `module` is the file's module path; `roots` are the first segments that start
/// a path of interest (`crate`, `super`, `self` in a library file, the library's name in a binary root).
fn scan(src: &str, module: &[String], roots: &[&str]) -> FileUses {
    let t = lex(src);
    let mut uses = FileUses { children: declared_children(&t), ..FileUses::default() };
    // Inline modules: (name, brace depth inside them).
    let mut inline: Vec<(String, i64)> = Vec::new();
    let mut depth = 0i64;
    let mut i = 0;
    let here = |inline: &[(String, i64)]| -> Vec<String> {
        module.iter().cloned().chain(inline.iter().map(|(m, _)| m.clone())).collect()
    };
    while i < t.len() {
        if let Some(after) = cfg_test_at(&t, i) {
            // A test-only child file: remember it; any other test-only item: skip it whole.
            let mut k = after;
            while t.get(k) == Some(&Tok::Punct('#')) {
                k = skip_group(&t, k + 1);
            }
            if let (Some(Tok::Ident(m)), Some(Tok::Ident(name)), Some(Tok::Punct(';'))) =
                (t.get(k), t.get(k + 1), t.get(k + 2))
                && m == "mod"
            {
                let mut child = here(&inline);
                child.push(name.clone());
                uses.test_children.push(child);
            }
            i = skip_item(&t, after);
            continue;
        }
        match &t[i] {
            Tok::Punct('{') => {
                depth += 1;
                i += 1;
            }
            Tok::Punct('}') => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth -= 1;
                i += 1;
            }
            Tok::Ident(m) if m == "mod" => {
                if let (Some(Tok::Ident(name)), Some(Tok::Punct('{'))) = (t.get(i + 1), t.get(i + 2)) {
                    depth += 1;
                    inline.push((name.clone(), depth));
                    i += 3;
                } else {
                    i += 1;
                }
            }
            Tok::Ident(u) if u == "use" => {
                // `pub use` / `pub(crate) use` re-exports; any other `use` imports.
                let reexport = i > 0
                    && (matches!(&t[i - 1], Tok::Ident(p) if p == "pub")
                        || (t[i - 1] == Tok::Punct(')')
                            && (1..i)
                                .rev()
                                .find(|&k| t[k] == Tok::Punct('('))
                                .is_some_and(|k| k > 0 && matches!(&t[k - 1], Tok::Ident(p) if p == "pub"))));
                i += 1;
                if t.get(i) == Some(&Tok::Sep) {
                    i += 1;
                }
                let mut found = Vec::new();
                parse_tree(&t, &mut i, Vec::new(), &mut found);
                let at = here(&inline);
                for (path, name) in found {
                    let Some(first) = path.first() else { continue };
                    let path = if roots.contains(&first.as_str()) {
                        path
                    } else if inline.is_empty() && uses.children.contains(first) {
                        std::iter::once("self".to_owned()).chain(path).collect()
                    } else {
                        continue;
                    };
                    uses.paths.push(UsedPath { path, at: at.clone(), reexport, name });
                }
            }
            Tok::Ident(s)
                if t.get(i + 1) == Some(&Tok::Sep)
                    && (i == 0 || !matches!(t[i - 1], Tok::Sep | Tok::Punct('.')))
                    && (roots.contains(&s.as_str()) || (inline.is_empty() && uses.children.contains(s))) =>
            {
                // A path inline in code; a bare one that starts with a child module is the same as `self::child`.
                let prefix =
                    if roots.contains(&s.as_str()) { vec![s.clone()] } else { vec!["self".to_owned(), s.clone()] };
                i += 2;
                let mut found = Vec::new();
                parse_tree(&t, &mut i, prefix, &mut found);
                let at = here(&inline);
                for (path, name) in found {
                    uses.paths.push(UsedPath { path, at: at.clone(), reexport: false, name });
                }
            }
            _ => i += 1,
        }
    }
    uses
}

/// Where a file sits in its crate.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    /// A library module with this path (empty: the crate root).
    Module(Vec<String>),
    /// A binary root (`main.rs`, `bin/x.rs`).
    Binary,
}

/// The place of a file from its path relative to `src/` (with `/` separators).
fn place_of(rel: &str) -> Place {
    if rel == "main.rs" || rel.starts_with("bin/") {
        return Place::Binary;
    }
    if rel == "lib.rs" {
        return Place::Module(Vec::new());
    }
    let stem = rel.strip_suffix(".rs").unwrap_or(rel);
    let mut parts: Vec<String> = stem.split('/').map(str::to_owned).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    Place::Module(parts)
}

/// A crate's module graph: one node per shipped file, edges with one path that makes each.
#[derive(Debug, Default)]
struct Graph {
    /// File names, relative to the crate's `src/`.
    files: Vec<String>,
    /// Edges: from → (to → a path that makes the edge, as written).
    edges: BTreeMap<usize, BTreeMap<usize, String>>,
}

/// What resolving needs: the modules with files and every module's re-exports.
struct Resolver {
    /// Module path → node.
    node_of: BTreeMap<Vec<String>, usize>,
    /// (module path, re-exported name) → the path it re-exports, from the crate root.
    reexports: BTreeMap<(Vec<String>, String), Vec<String>>,
}

impl Resolver {
    /// The node a path from the crate root leads to: the file of its longest prefix that is a module with a
    /// file, unless the next segment is a name that module re-exports: then where that name comes from.
    fn resolve(&self, abs: &[String], hops: usize) -> Option<usize> {
        let k = (0..=abs.len()).rev().find(|&k| self.node_of.contains_key(&abs[..k]))?;
        if hops < 16
            && let Some(name) = abs.get(k)
            && let Some(target) = self.reexports.get(&(abs[..k].to_vec(), name.clone()))
        {
            let followed: Vec<String> = target.iter().chain(&abs[k + 1..]).cloned().collect();
            return self.resolve(&followed, hops + 1);
        }
        self.node_of.get(&abs[..k]).copied()
    }
}

/// Build the module graph of one crate from its files (`(path relative to src/, text)`); `lib_name` is the
/// name binary roots use for the library.
fn build_graph(files: &[(String, String)], lib_name: &str) -> Graph {
    let places: Vec<Place> = files.iter().map(|(rel, _)| place_of(rel)).collect();
    let scans: Vec<FileUses> = files
        .iter()
        .zip(&places)
        .map(|((_, text), place)| match place {
            Place::Module(m) => scan(text, m, &["crate", "super", "self"]),
            Place::Binary => scan(text, &[], &[lib_name]),
        })
        .collect();
    // Test-only files: declared `#[cfg(test)] mod x;`, and everything under them.
    let test_only: Vec<Vec<String>> = scans.iter().flat_map(|s| s.test_children.iter().cloned()).collect();
    let mut graph = Graph::default();
    let mut resolver = Resolver { node_of: BTreeMap::new(), reexports: BTreeMap::new() };
    let mut kept: Vec<(usize, usize)> = Vec::new(); // (file index, node)
    for (f, place) in places.iter().enumerate() {
        let shipped = match place {
            Place::Module(m) => !test_only.iter().any(|t| m.starts_with(t)),
            Place::Binary => true,
        };
        if !shipped {
            continue;
        }
        let node = graph.files.len();
        graph.files.push(files[f].0.clone());
        if let Place::Module(m) = place {
            resolver.node_of.insert(m.clone(), node);
            for used in scans[f].paths.iter().filter(|u| u.reexport) {
                if let (Some(name), Some(abs)) = (&used.name, absolute(&used.path, &used.at, lib_name)) {
                    resolver.reexports.insert((used.at.clone(), name.clone()), abs);
                }
            }
        }
        kept.push((f, node));
    }
    for (f, from) in kept {
        for used in &scans[f].paths {
            // `self::` and bare paths (which can only name the file's own children) are not edges, like `mod x;`;
            // they only tell where a re-exported name comes from.
            if used.path.first().is_some_and(|s| s == "self") {
                continue;
            }
            let Some(abs) = absolute(&used.path, &used.at, lib_name) else { continue };
            let Some(to) = resolver.resolve(&abs, 0) else { continue };
            if to != from {
                graph.edges.entry(from).or_default().entry(to).or_insert_with(|| used.path.join("::"));
            }
        }
    }
    graph
}

/// The path from the crate root of a path as written in module `at`; `None` when it leaves the crate.
fn absolute(path: &[String], at: &[String], lib_name: &str) -> Option<Vec<String>> {
    let (first, rest) = path.split_first()?;
    match first.as_str() {
        "crate" => Some(rest.to_vec()),
        "self" => Some(at.iter().chain(rest).cloned().collect()),
        s if s == lib_name => Some(rest.to_vec()),
        "super" => {
            let mut base = at.to_vec();
            base.pop()?;
            let mut rest = rest;
            while rest.first().is_some_and(|s| s == "super") {
                base.pop()?;
                rest = &rest[1..];
            }
            base.extend(rest.iter().cloned());
            Some(base)
        }
        _ => None,
    }
}

/// Strongly connected components (Tarjan), each as sorted node indices, in order of their first node.
fn tarjan(nodes: usize, edges: &BTreeMap<usize, BTreeMap<usize, String>>) -> Vec<Vec<usize>> {
    struct State<'a> {
        edges: &'a BTreeMap<usize, BTreeMap<usize, String>>,
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(s: &mut State<'_>, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        let succ: Vec<usize> = s.edges.get(&v).map(|m| m.keys().copied().collect()).unwrap_or_default();
        for w in succ {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack[w] = false;
                comp.push(w);
                if w == v {
                    break;
                }
            }
            comp.sort_unstable();
            s.out.push(comp);
        }
    }
    let mut s = State {
        edges,
        index: vec![None; nodes],
        low: vec![0; nodes],
        on_stack: vec![false; nodes],
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in 0..nodes {
        if s.index[v].is_none() {
            visit(&mut s, v);
        }
    }
    s.out.sort();
    s.out
}

/// The circles of a graph (components of more than one file), described one per paragraph.
fn circles(crate_name: &str, graph: &Graph) -> Vec<String> {
    tarjan(graph.files.len(), &graph.edges)
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|comp| {
            let mut text = format!("{crate_name}: a circle of {} files:\n", comp.len());
            for &v in &comp {
                for (&w, why) in graph.edges.get(&v).into_iter().flatten() {
                    if comp.contains(&w) {
                        let _ = writeln!(text, "    {} -> {}  ({why})", graph.files[v], graph.files[w]);
                    }
                }
            }
            text
        })
        .collect()
}

/// Every `.rs` file under `dir`, as (path relative to `dir` with `/` separators, text), sorted.
fn read_sources(dir: &Path) -> Vec<(String, String)> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<(String, String)>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display())).path();
            if path.is_dir() {
                walk(&path, base, out);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let rel = path.strip_prefix(base).unwrap_or(&path);
                let rel: Vec<String> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
                let text =
                    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
                out.push((rel.join("/"), text));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The workspace's crates: (name, `src/` folder, fewest source files it can have). Cargo itself forbids a
/// circle *between* them (each layer depends only on the ones below: core → store → learn → onnx, protocol →
/// fleet → firmware → host); this check covers the modules *inside* each.
fn workspace_crates() -> Vec<(&'static str, PathBuf, usize)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let layer = |name: &str| root.join("firmware/crates").join(name).join("src");
    vec![
        ("edgelearn_core", layer("core"), 20),
        ("edgelearn_store", layer("store"), 5),
        ("edgelearn_learn", layer("learn"), 25),
        ("edgelearn_onnx", layer("onnx"), 5),
        ("edgelearn_protocol", layer("protocol"), 4),
        ("edgelearn_fleet", layer("fleet"), 8),
        ("firmware", root.join("firmware/src"), 8),
        ("host", root.join("host/src"), 20),
    ]
}

#[test]
fn module_graphs_have_no_circles() {
    let mut report = Vec::new();
    let mut stale = Vec::new();
    for (name, src, fewest) in workspace_crates() {
        let files = read_sources(&src);
        assert!(files.len() >= fewest, "{}: only {} source files found", src.display(), files.len());
        let mut graph = build_graph(&files, name);
        for &(krate, from, to, why) in ALLOWED.iter().filter(|a| a.0 == name) {
            let node = |f: &str| graph.files.iter().position(|x| x == f);
            let removed = match (node(from), node(to)) {
                (Some(a), Some(b)) => graph.edges.get_mut(&a).and_then(|m| m.remove(&b)),
                _ => None,
            };
            if removed.is_none() {
                stale.push(format!("{krate}: {from} -> {to} ({why}) is gone: delete its entry in ALLOWED"));
            }
        }
        report.extend(circles(name, &graph));
    }
    assert!(report.is_empty(), "the module graph has circles:\n{}", report.join("\n"));
    assert!(stale.is_empty(), "{}", stale.join("\n"));
}

#[test]
fn tarjan_finds_the_circles_of_a_small_graph() {
    // 0 → 1 → 2 → 0 is a circle, 2 → 3, 3 ↔ 4 another, 5 stands alone.
    let mut edges: BTreeMap<usize, BTreeMap<usize, String>> = BTreeMap::new();
    for (a, b) in [(0, 1), (1, 2), (2, 0), (2, 3), (3, 4), (4, 3)] {
        edges.entry(a).or_default().insert(b, String::new());
    }
    let comps: Vec<Vec<usize>> = tarjan(6, &edges).into_iter().filter(|c| c.len() > 1).collect();
    assert_eq!(comps, vec![vec![0, 1, 2], vec![3, 4]]);
}

#[test]
fn a_circle_in_hand_made_sources_is_found() {
    let files: Vec<(String, String)> = [
        (
            "lib.rs",
            "pub mod a;\npub mod b;\npub mod c;\npub mod d;\npub mod e;\n#[cfg(test)]\nmod t;\npub use d::Thing;\n",
        ),
        // a → b by a grouped use; the comment, the doc comment and the string name c and are not uses.
        (
            "a.rs",
            "//! See [`crate::c::X`].\nuse crate::{b::{self, Y}};\n// crate::c::X\nconst S: &str = \"crate::c\";\n",
        ),
        // b → a, inline in code through `super::`: a circle a ↔ b.
        (
            "b.rs",
            "pub fn f<'a>(x: &'a u8) -> char { super::a::g(); '\"' }\n#[cfg(test)]\nmod tests { use crate::c; }\n",
        ),
        // c → a, not part of the circle; its test-only use of d is no edge; c → e/f.rs through e's re-export.
        ("c.rs", "use crate::a::Z;\n#[cfg(test)]\nuse crate::d::W;\nfn k() { crate::e::F::new(); }\n"),
        // A facade: declaring, re-exporting and using its own child is no edge; f → e's own item is one.
        ("e/mod.rs", "mod f;\npub use f::F;\nfn u() { f::F::new(); self::f::g(); }\npub struct G;\n"),
        ("e/f.rs", "pub struct F;\nfn v() -> super::G { todo!() }\n"),
        // d → c through the root's re-export, a test-only file t → d which is left out.
        ("d.rs", "mod inner { pub fn h() { super::super::c::f() } }\npub struct Thing;\n"),
        ("t.rs", "use crate::Thing;\nuse crate::c;\n"),
        ("main.rs", "fn main() { demo::a::g(); demo::Thing; }\n"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .collect();
    let graph = build_graph(&files, "demo");
    assert!(!graph.files.contains(&"t.rs".to_owned()), "test-only file kept: {:?}", graph.files);
    let name = |v: usize| graph.files[v].as_str();
    let mut edges: Vec<(&str, &str)> = Vec::new();
    for (&a, m) in &graph.edges {
        for &b in m.keys() {
            edges.push((name(a), name(b)));
        }
    }
    edges.sort_unstable();
    assert_eq!(
        edges,
        vec![
            ("a.rs", "b.rs"),
            ("b.rs", "a.rs"),
            ("c.rs", "a.rs"),
            ("c.rs", "e/f.rs"),
            ("d.rs", "c.rs"),
            ("e/f.rs", "e/mod.rs"),
            ("main.rs", "a.rs"),
            ("main.rs", "d.rs")
        ]
    );
    let found = circles("demo", &graph);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("a.rs -> b.rs") && found[0].contains("b.rs -> a.rs"), "{}", found[0]);
}
