//! The architecture check: the rules in docs/architecture.md (its ```rules block), applied to
//! the sources. It fails naming file:line and the rule broken.
//!
//! A small hand-written scanner, not `syn`: it must see paths inside macro bodies (`html!`,
//! `format!`), which `syn` leaves as opaque tokens; it needs exact line numbers, which `syn`
//! gives only with proc-macro2's `span-locations` (a second build of syn and proc-macro2 for
//! the test); and the grammar it needs is small: comments and literals blanked, `#[cfg(test)]`
//! items skipped, `mod` declarations followed, and `crate::`/`super::` paths resolved to the
//! top-level module they reach.
//!
//! To list every violation at once, run
//! `cargo nextest run -p wharf-registry --test architecture --no-fail-fast`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn registry_src() -> PathBuf {
    workspace().join("crates/wharf-registry/src")
}

// ---------------------------------------------------------------------------------------------
// The rules, parsed from the one place they are written.

#[derive(Debug, Default)]
struct Rules {
    /// (from, to, why); `*` matches any module.
    forbid: Vec<(String, String, String)>,
    cycles: Option<String>,
    file_lines: Option<(usize, String)>,
    fn_lines: Option<(usize, String)>,
    /// `path` or `path::fn`, relative to crates/.
    allow: BTreeMap<String, String>,
}

fn parse_rules(doc: &str) -> Result<Rules, String> {
    let mut rules = Rules::default();
    let block = doc
        .split("```rules\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .ok_or("docs/architecture.md has no ```rules block")?;
    for (n, line) in block.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || {
            format!("rules line {}: {line:?} is not one of `forbid A -> B : why`, `forbid cycles : why`, `limit file-lines N : why`, `limit fn-lines N : why`, `allow PATH : why`", n + 1)
        };
        let (head, why) = line.split_once(" : ").ok_or_else(bad)?;
        let why = why.trim().to_owned();
        let words: Vec<&str> = head.split_whitespace().collect();
        match words.as_slice() {
            ["forbid", "cycles"] => rules.cycles = Some(why),
            ["forbid", from, "->", to] => {
                rules
                    .forbid
                    .push(((*from).to_owned(), (*to).to_owned(), why))
            }
            ["limit", "file-lines", n] => {
                rules.file_lines = Some((n.parse().map_err(|_| bad())?, why))
            }
            ["limit", "fn-lines", n] => rules.fn_lines = Some((n.parse().map_err(|_| bad())?, why)),
            ["allow", path] => {
                rules.allow.insert((*path).to_owned(), why);
            }
            _ => return Err(bad()),
        }
    }
    Ok(rules)
}

fn rules() -> Rules {
    let path = workspace().join("docs/architecture.md");
    let doc = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    parse_rules(&doc).unwrap_or_else(|e| panic!("{e}"))
}

// ---------------------------------------------------------------------------------------------
// The scanner.

/// The source with comments and the contents of string and char literals replaced by spaces,
/// line breaks kept, so that what remains is code at its original line numbers.
fn blank(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let keep_lines = |out: &mut String, ch: char| out.push(if ch == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c[i] == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    keep_lines(&mut out, c[i]);
                    i += 1;
                }
            }
        } else if c[i] == 'r' && !prev_ident_except_b(&c, i) && matches!(next, Some('"' | '#')) {
            // A raw string: r"..", r#".."#; not an identifier ending in r.
            let hashes = c[i + 1..].iter().take_while(|&&ch| ch == '#').count();
            if c.get(i + 1 + hashes) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            out.push_str(&" ".repeat(1 + hashes));
            out.push('"');
            i += 2 + hashes;
            let close: Vec<char> = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            while i < c.len() && !c[i..].starts_with(&close) {
                keep_lines(&mut out, c[i]);
                i += 1;
            }
            out.push('"');
            out.push_str(&" ".repeat(hashes));
            i += 1 + hashes;
        } else if c[i] == '"' {
            out.push('"');
            i += 1;
            while i < c.len() && c[i] != '"' {
                let width = if c[i] == '\\' { 2 } else { 1 };
                for &ch in &c[i..(i + width).min(c.len())] {
                    keep_lines(&mut out, ch);
                }
                i += width;
            }
            out.push('"');
            i += 1;
        } else if c[i] == '\'' && !prev_ident_except_b(&c, i) {
            // A char literal ('x', '\n', '\u{..}'), or a lifetime ('a), which stays.
            let end = if next == Some('\\') {
                c[i + 2..]
                    .iter()
                    .position(|&ch| ch == '\'')
                    .map(|p| i + 2 + p)
            } else if c.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(end) => {
                    out.push('\'');
                    out.push_str(&" ".repeat(end - i - 1));
                    out.push('\'');
                    i = end + 1;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// Whether `c[i]` continues an identifier, other than a `b` prefix (`br".."`, `b'x'`).
fn prev_ident_except_b(c: &[char], i: usize) -> bool {
    if i == 0 {
        return false;
    }
    let p = c[i - 1];
    if p == 'b' {
        return i >= 2 && (c[i - 2].is_alphanumeric() || c[i - 2] == '_');
    }
    p.is_alphanumeric() || p == '_'
}

#[derive(Debug, Clone, PartialEq)]
struct Tok {
    text: String,
    line: usize,
}

fn tokens(code: &str) -> Vec<Tok> {
    let mut toks = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let c: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < c.len() {
            let start = i;
            if c[i].is_alphanumeric() || c[i] == '_' {
                while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                    i += 1;
                }
            } else if c[i] == ':' && c.get(i + 1) == Some(&':') {
                i += 2;
            } else if c[i].is_whitespace() {
                i += 1;
                continue;
            } else {
                i += 1;
            }
            toks.push(Tok {
                text: c[start..i].iter().collect(),
                line: n + 1,
            });
        }
    }
    toks
}

#[derive(Debug, Clone, Copy)]
enum Base {
    Crate,
    /// A `.store` field: reaching the store through `Registry` is reaching the store.
    Field,
    /// `super::` this many times.
    Super(usize),
}

/// A path from `crate::` or `super::`, by its first segment after them.
#[derive(Debug)]
struct PathUse {
    /// The inline modules (`mod x { .. }`) around it in its file.
    inline: Vec<String>,
    base: Base,
    seg: String,
    line: usize,
}

/// One scanned file: what it declares and what it reaches.
#[derive(Debug, Default)]
struct Scan {
    /// `mod x;` declarations outside test code, with the inline modules around them.
    file_mods: Vec<(Vec<String>, String)>,
    paths: Vec<PathUse>,
    /// 1-based inclusive line ranges of `#[cfg(test)]` items.
    test_lines: Vec<(usize, usize)>,
    /// Functions outside test code: (name, first line, last line).
    fns: Vec<(String, usize, usize)>,
}

fn is(toks: &[Tok], i: usize, text: &str) -> bool {
    toks.get(i).is_some_and(|t| t.text == text)
}

fn ident(t: &Tok) -> bool {
    t.text
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// The index after the matching close of the bracket at `i`.
fn close(toks: &[Tok], i: usize) -> usize {
    let mut depth = 0i32;
    for (j, t) in toks.iter().enumerate().skip(i) {
        match t.text.as_str() {
            "{" | "(" | "[" => depth += 1,
            "}" | ")" | "]" => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
    }
    toks.len()
}

/// The index after the item starting at `i`: its `;` or its braced body, whichever ends it.
fn item_end(toks: &[Tok], mut i: usize) -> usize {
    while i < toks.len() {
        match toks[i].text.as_str() {
            ";" => return i + 1,
            "{" => return close(toks, i),
            "(" | "[" => i = close(toks, i),
            _ => i += 1,
        }
    }
    toks.len()
}

/// `#[cfg(test)]` or `#[cfg(all(.., test, ..))]` at `i`: code that exists only in tests.
fn test_attr(toks: &[Tok], i: usize) -> Option<usize> {
    if !(is(toks, i, "#") && is(toks, i + 1, "[") && is(toks, i + 2, "cfg")) {
        return None;
    }
    let end = close(toks, i + 1);
    let inner: Vec<&str> = toks[i + 3..end].iter().map(|t| t.text.as_str()).collect();
    let only_test = inner == ["(", "test", ")", "]"]
        || (inner.starts_with(&["(", "all", "("]) && inner.contains(&"test"));
    only_test.then_some(end)
}

/// The first segments of the path or use tree after the `::` at `i`: `a` in `a::b`, and `a`,
/// `c` in `{a::b, c}`.
fn first_segments(toks: &[Tok], i: usize) -> Vec<(String, usize)> {
    match toks.get(i) {
        Some(t) if ident(t) => vec![(t.text.clone(), t.line)],
        Some(t) if t.text == "{" => {
            let end = close(toks, i);
            let mut out = Vec::new();
            let mut j = i + 1;
            let mut at_start = true;
            while j < end - 1 {
                match toks[j].text.as_str() {
                    "{" | "(" | "[" => {
                        j = close(toks, j);
                        continue;
                    }
                    "," => at_start = true,
                    _ if at_start && ident(&toks[j]) => {
                        out.push((toks[j].text.clone(), toks[j].line));
                        at_start = false;
                    }
                    _ => at_start = false,
                }
                j += 1;
            }
            out
        }
        _ => Vec::new(),
    }
}

/// `Registry`'s field holding the store. An import check alone would pass a handler that
/// writes `state.registry.store.blobs.append(..)`, so a field of this name counts as a use of
/// the store module.
const STORE_FIELD: &str = "store";

fn scan(src: &str) -> Scan {
    let toks = tokens(&blank(src));
    let mut scan = Scan::default();
    // Inline modules we are in, with the depth their body opened at.
    let mut inline: Vec<(String, i32)> = Vec::new();
    let mut depth = 0i32;
    let mut i = 0;
    while i < toks.len() {
        if let Some(attr_end) = test_attr(&toks, i) {
            let end = item_end(&toks, attr_end);
            scan.test_lines
                .push((toks[i].line, toks[end.saturating_sub(1)].line));
            i = end;
            continue;
        }
        let t = toks[i].text.as_str();
        match t {
            "{" => depth += 1,
            "}" => {
                depth -= 1;
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            "mod" if toks.get(i + 1).is_some_and(ident) => {
                let name = toks[i + 1].text.clone();
                if is(&toks, i + 2, ";") {
                    scan.file_mods
                        .push((inline.iter().map(|(n, _)| n.clone()).collect(), name));
                } else if is(&toks, i + 2, "{") {
                    inline.push((name, depth));
                }
            }
            "fn" if toks.get(i + 1).is_some_and(ident) => {
                let mut j = i + 2;
                while j < toks.len() && !matches!(toks[j].text.as_str(), "{" | ";") {
                    j = if matches!(toks[j].text.as_str(), "(" | "[") {
                        close(&toks, j)
                    } else {
                        j + 1
                    };
                }
                if is(&toks, j, "{") {
                    let end = close(&toks, j);
                    scan.fns
                        .push((toks[i + 1].text.clone(), toks[i].line, toks[end - 1].line));
                }
            }
            "crate" | "super" if is(&toks, i + 1, "::") && !(i > 0 && is(&toks, i - 1, "::")) => {
                let mut j = i;
                let mut up = 0;
                while is(&toks, j, "super") && is(&toks, j + 1, "::") {
                    up += 1;
                    j += 2;
                }
                let base = if t == "crate" {
                    j = i + 2;
                    Base::Crate
                } else {
                    Base::Super(up)
                };
                for (seg, line) in first_segments(&toks, j) {
                    scan.paths.push(PathUse {
                        inline: inline.iter().map(|(n, _)| n.clone()).collect(),
                        base,
                        seg,
                        line,
                    });
                }
            }
            "." if is(&toks, i + 1, STORE_FIELD) && !is(&toks, i + 2, "(") => {
                scan.paths.push(PathUse {
                    inline: Vec::new(),
                    base: Base::Field,
                    seg: STORE_FIELD.to_owned(),
                    line: toks[i + 1].line,
                });
            }
            _ => {}
        }
        i += 1;
    }
    scan
}

/// Where a path used in the file of module `file_mod` lands: the absolute module path.
fn resolve(file_mod: &[String], p: &PathUse) -> Vec<String> {
    let mut here: Vec<String> = match p.base {
        Base::Crate | Base::Field => Vec::new(),
        Base::Super(up) => {
            let mut here: Vec<String> = file_mod.iter().chain(&p.inline).cloned().collect();
            here.truncate(here.len().saturating_sub(up));
            here
        }
    };
    here.push(p.seg.clone());
    here
}

// ---------------------------------------------------------------------------------------------
// The crate's module tree.

struct File {
    path: PathBuf,
    /// The module path: `["http", "base"]` for src/http/base.rs.
    module: Vec<String>,
    src: String,
    scan: Scan,
}

/// Every non-test source file reachable from `root` (lib.rs or main.rs) through `mod x;`.
fn module_tree(root: &Path) -> Vec<File> {
    let mut files = Vec::new();
    let mut todo = vec![(root.to_path_buf(), Vec::<String>::new())];
    while let Some((path, module)) = todo.pop() {
        let src = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let scan = scan(&src);
        let stem = path.file_stem().expect("a file").to_string_lossy();
        let dir = if module.is_empty() || stem == "mod" {
            path.parent().expect("a folder").to_path_buf()
        } else {
            path.with_extension("")
        };
        for (inline, name) in &scan.file_mods {
            let base = inline.iter().fold(dir.clone(), |d, m| d.join(m));
            let flat = base.join(format!("{name}.rs"));
            let child = if flat.exists() {
                flat
            } else {
                base.join(name).join("mod.rs")
            };
            let mut m = module.clone();
            m.extend(inline.iter().cloned());
            m.push(name.clone());
            todo.push((child, m));
        }
        files.push(File {
            path,
            module,
            src,
            scan,
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

fn shown(path: &Path) -> String {
    let ws = workspace().canonicalize().expect("the workspace");
    let full = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    full.strip_prefix(&ws)
        .unwrap_or(&full)
        .display()
        .to_string()
}

/// One use of a module by another: file:line and the line's text.
#[derive(Debug, Clone)]
struct Edge {
    from: String,
    to: String,
    at: String,
    text: String,
}

/// The crate's top-level modules (from lib.rs) and every edge between two of them.
fn graph(src: &Path) -> (BTreeSet<String>, Vec<Edge>) {
    let files = module_tree(&src.join("lib.rs"));
    let root = files.iter().find(|f| f.module.is_empty()).expect("lib.rs");
    let top: BTreeSet<String> = root
        .scan
        .file_mods
        .iter()
        .filter(|(inline, _)| inline.is_empty())
        .map(|(_, name)| name.clone())
        .collect();
    // Items lib.rs re-exports (`pub use config::Config`) lead to the module they come from.
    let reexports = reexports(&root.src, &top);
    let mut edges = Vec::new();
    for f in files.iter().filter(|f| !f.module.is_empty()) {
        let from = &f.module[0];
        for p in &f.scan.paths {
            let line = p.line;
            let target = resolve(&f.module, p);
            let to = match reexports.get(&target[0]) {
                Some(m) if target.len() == 1 => m.clone(),
                _ => target[0].clone(),
            };
            if &to != from && top.contains(&to) {
                edges.push(Edge {
                    from: from.clone(),
                    to,
                    at: format!("{}:{line}", shown(&f.path)),
                    text: line_text(&f.src, line),
                });
            }
        }
    }
    (top, edges)
}

/// The line's text; a line that continues a method chain (`.store`) is shown with the line
/// it continues.
fn line_text(src: &str, line: usize) -> String {
    let lines: Vec<&str> = src.lines().collect();
    let this = lines.get(line - 1).map_or("", |l| l.trim());
    match lines.get(line.wrapping_sub(2)) {
        Some(prev) if this.starts_with('.') => format!("{}{this}", prev.trim()),
        _ => this.to_owned(),
    }
}

fn reexports(lib: &str, top: &BTreeSet<String>) -> BTreeMap<String, String> {
    let toks = tokens(&blank(lib));
    let mut out = BTreeMap::new();
    for (i, t) in toks.iter().enumerate() {
        if t.text != "use" || !toks.get(i + 1).is_some_and(|m| top.contains(&m.text)) {
            continue;
        }
        let module = toks[i + 1].text.clone();
        let end = item_end(&toks, i);
        for name in toks[i..end].iter().filter(|t| ident(t)) {
            out.insert(name.text.clone(), module.clone());
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The checks.

fn matches(pattern: &str, module: &str) -> bool {
    pattern == "*" || pattern == module
}

fn forbidden_edges(rules: &Rules, top: &BTreeSet<String>, edges: &[Edge]) -> String {
    let mut out = String::new();
    for (from, to, why) in &rules.forbid {
        for name in [from, to] {
            if name != "*" && !top.contains(name) {
                let _ = writeln!(
                    out,
                    "rule `forbid {from} -> {to}` names `{name}`, which src/lib.rs does not declare: update docs/architecture.md"
                );
            }
        }
        for e in edges
            .iter()
            .filter(|e| matches(from, &e.from) && matches(to, &e.to))
        {
            let _ = writeln!(
                out,
                "{}: {} -> {} breaks `forbid {from} -> {to}` ({why}): {}",
                e.at, e.from, e.to, e.text
            );
        }
    }
    out
}

/// Strongly connected components of more than one module (Tarjan's algorithm).
fn cycles(top: &BTreeSet<String>, edges: &[Edge]) -> Vec<Vec<String>> {
    struct State<'a> {
        next: BTreeMap<&'a str, BTreeSet<&'a str>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        let next: Vec<&str> = s.next.get(v).into_iter().flatten().copied().collect();
        for w in next {
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.stack.contains(&w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let at = s.stack.iter().position(|&x| x == v).expect("on the stack");
            let component: Vec<String> = s.stack.drain(at..).map(str::to_owned).collect();
            if component.len() > 1 {
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        next: BTreeMap::new(),
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for e in edges {
        s.next.entry(&e.from).or_default().insert(&e.to);
    }
    for v in top {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    for c in &mut s.found {
        c.sort();
    }
    s.found.sort();
    s.found
}

fn cycle_report(rules: &Rules, top: &BTreeSet<String>, edges: &[Edge]) -> String {
    let Some(why) = &rules.cycles else {
        return String::new();
    };
    let mut out = String::new();
    for component in cycles(top, edges) {
        let _ = writeln!(
            out,
            "cycle among {{{}}} breaks `forbid cycles` ({why}); its edges, first use of each:",
            component.join(", ")
        );
        let mut seen = BTreeSet::new();
        for e in edges {
            if component.contains(&e.from)
                && component.contains(&e.to)
                && seen.insert((&e.from, &e.to))
            {
                let _ = writeln!(out, "  {}: {} -> {}: {}", e.at, e.from, e.to, e.text);
            }
        }
    }
    out
}

/// Crate roots: crates/*/src/{lib,main}.rs.
fn crate_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    let crates = workspace().join("crates");
    for entry in std::fs::read_dir(&crates).expect("crates/") {
        let src = entry.expect("an entry").path().join("src");
        for root in ["lib.rs", "main.rs"] {
            if src.join(root).exists() {
                roots.push(src.join(root));
            }
        }
    }
    roots.sort();
    roots
}

/// Files and functions over the limits, outside test code, as `key` (for the allow-list) and
/// the line to print.
fn long_code(rules: &Rules) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let mut files: Vec<File> = crate_roots().iter().flat_map(|r| module_tree(r)).collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files.dedup_by(|a, b| a.path == b.path);
    for f in &files {
        let path = shown(&f.path);
        let key = path.trim_start_matches("crates/").to_owned();
        if let Some((limit, why)) = &rules.file_lines {
            let total = f.src.lines().count();
            let test: usize = f.scan.test_lines.iter().map(|(a, b)| b - a + 1).sum();
            let lines = total - test.min(total);
            if lines > *limit {
                found.push((
                    key.clone(),
                    format!(
                        "{path}: {lines} non-test lines, over `limit file-lines {limit}` ({why})"
                    ),
                ));
            }
        }
        if let Some((limit, why)) = &rules.fn_lines {
            for (name, first, last) in &f.scan.fns {
                let lines = last - first + 1;
                if lines > *limit {
                    found.push((
                        format!("{key}::{name}"),
                        format!("{path}:{first}: fn {name} is {lines} lines, over `limit fn-lines {limit}` ({why})"),
                    ));
                }
            }
        }
    }
    found
}

fn long_code_report(rules: &Rules) -> String {
    let found = long_code(rules);
    let mut out = String::new();
    for (key, line) in &found {
        if !rules.allow.contains_key(key) {
            let _ = writeln!(out, "{line}");
        }
    }
    for key in rules.allow.keys() {
        if !found.iter().any(|(k, _)| k == key) {
            let _ = writeln!(
                out,
                "`allow {key}` in docs/architecture.md allows nothing any more: remove it"
            );
        }
    }
    out
}

fn fail_if_any(report: String, what: &str) {
    assert!(
        report.is_empty(),
        "{what} (rules: docs/architecture.md):\n{report}"
    );
}

#[test]
fn no_forbidden_edges() {
    let rules = rules();
    let (top, edges) = graph(&registry_src());
    fail_if_any(
        forbidden_edges(&rules, &top, &edges),
        "forbidden edges between wharf-registry's modules",
    );
}

#[test]
fn no_module_cycles() {
    let rules = rules();
    assert!(
        rules.cycles.is_some(),
        "docs/architecture.md must keep `forbid cycles`"
    );
    let (top, edges) = graph(&registry_src());
    fail_if_any(
        cycle_report(&rules, &top, &edges),
        "cycles among wharf-registry's top-level modules",
    );
}

#[test]
fn no_long_files_or_functions() {
    let rules = rules();
    assert!(
        rules.file_lines.is_some() && rules.fn_lines.is_some(),
        "docs/architecture.md must keep both limits"
    );
    fail_if_any(
        long_code_report(&rules),
        "long source files and functions in crates/*/src",
    );
}

// ---------------------------------------------------------------------------------------------
// The scanner's own tests: what it must see, and what it must not.

#[test]
fn scanner_sees_paths_in_use_trees_and_expressions() {
    let src = r#"
use crate::{auth::policy::Actions, store::{Store, fs}};
use super::super::http::AppState;
fn f() -> usize {
    let s = "crate::ui::nothing"; // crate::ui::nothing either
    /* crate::ui::nor /* nested */ this */
    let c = '"'; let l: &'static str = "";
    crate::metrics::count(super::sibling::X);
    state.registry.store.blobs.len() + creds.store(1)
}
"#;
    let s = scan(src);
    let reached: Vec<String> = s
        .paths
        .iter()
        .map(|p| resolve(&["registry".into(), "gc".into()], p).join("::"))
        .collect();
    assert_eq!(
        reached,
        [
            "auth",
            "store",
            "http",
            "metrics",
            "registry::sibling",
            "store"
        ]
    );
    assert_eq!(s.fns, [("f".to_owned(), 4, 10)]);
}

#[test]
fn scanner_skips_test_code_and_tracks_inline_modules() {
    let src = r#"
mod real;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod inline {
    use crate::store::Store;
}
#[cfg(all(test, unix))]
fn helper() { crate::store::x(); }
#[cfg(any(test, feature = "testsuite"))]
fn shipped() { crate::ui::x(); }
mod outer {
    fn g() { super::here::X; }
}
"#;
    let s = scan(src);
    assert_eq!(s.file_mods, [(vec![], "real".to_owned())]);
    assert_eq!(s.test_lines, [(3, 4), (5, 8), (9, 10)]);
    let reached: Vec<String> = s
        .paths
        .iter()
        .map(|p| resolve(&["debug".into()], p).join("::"))
        .collect();
    assert_eq!(reached, ["ui", "debug::here"]);
}

#[test]
fn rules_parse_and_refuse_what_they_do_not_know() {
    let doc = "x\n```rules\n# a comment\nforbid http -> store : why\nforbid cycles : because\nlimit file-lines 600 : short\nallow a/b.rs::f : reason\n```\n";
    let r = parse_rules(doc).unwrap();
    assert_eq!(r.forbid, [("http".into(), "store".into(), "why".into())]);
    assert_eq!(r.file_lines, Some((600, "short".into())));
    assert!(r.allow.contains_key("a/b.rs::f"));
    assert!(parse_rules("```rules\nforbid http store : why\n```\n").is_err());
}
