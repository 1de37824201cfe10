//! watchtower's `--notification-template`: the subset of Go's text/template that
//! watchtower templates use, parsed at start so that anything outside it stops the
//! watcher naming the construct, instead of sending something other than what the user
//! wrote. Supported: text; `{{.}}`, field chains `.A.B`; `{{- … -}}` trimming;
//! `{{/* comments */}}`; `range`, `if`, `with` (each with `else`, `if` with `else if`),
//! `end`; pipelines with `|`; parentheses; string (`"…"`, `` `…` ``), number and
//! `true`/`false` literals; the functions `print`, `println`, `len`, `not`, `and`, `or`,
//! `eq`, `ne`, `ToUpper`, `ToLower`, `Title`, `ToJSON`; and the methods
//! `.Time.Format "layout"` (Go's reference-time layouts) and `.ShortID` on image ids.

mod data;
mod eval;
mod golayout;

pub use data::{entries, legacy_data, level_rank, report_data, sample as sample_report, Entry};
pub use eval::Value;

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipeline),
    If(Pipeline, Vec<Node>, Vec<Node>),
    Range(Pipeline, Vec<Node>, Vec<Node>),
    With(Pipeline, Vec<Node>, Vec<Node>),
}

/// Commands joined by `|`: each one's result is the last argument of the next.
#[derive(Debug, Clone)]
struct Pipeline(Vec<Command>);

#[derive(Debug, Clone)]
struct Command(Vec<Operand>);

#[derive(Debug, Clone)]
enum Operand {
    /// `.` followed by field names (none for `.` itself).
    Field(Vec<String>),
    Str(String),
    Int(i64),
    Bool(bool),
    Func(String),
    Sub(Pipeline),
}

const FUNCTIONS: &[&str] = &[
    "print", "println", "len", "not", "and", "or", "eq", "ne", "ToUpper", "ToLower", "Title",
    "ToJSON",
];

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let tokens = lex(text)?;
        let mut at = 0;
        let (nodes, end) = parse_nodes(&tokens, &mut at)?;
        match end {
            None => Ok(Template { nodes }),
            Some(word) => Err(format!(
                "unexpected {{{{{word}}}}} with no range, if or with to close"
            )),
        }
    }

    pub fn render(&self, data: &Value) -> Result<String, String> {
        let mut out = String::new();
        eval::run(&self.nodes, data, &mut out)?;
        Ok(out)
    }
}

enum Token {
    Text(String),
    Action(String),
}

/// Text and the insides of `{{ }}`, with `{{-`/`-}}` trimming applied to the text.
fn lex(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut rest = text;
    let mut trim_next = false;
    while let Some(open) = rest.find("{{") {
        let mut before = &rest[..open];
        if trim_next {
            before = before.trim_start();
        }
        let inner_start = open + 2;
        let close = rest[inner_start..]
            .find("}}")
            .ok_or("an action `{{` is not closed by `}}`")?
            + inner_start;
        let mut inner = &rest[inner_start..close];
        if let Some(stripped) = inner.strip_prefix("- ") {
            before = before.trim_end();
            inner = stripped;
        } else if inner.starts_with("-\n") || inner.starts_with("-\t") || inner == "-" {
            before = before.trim_end();
            inner = &inner[1..];
        }
        trim_next = false;
        if let Some(stripped) = inner.strip_suffix(" -") {
            trim_next = true;
            inner = stripped;
        } else if inner.ends_with("\n-") || inner.ends_with("\t-") {
            trim_next = true;
            inner = &inner[..inner.len() - 1];
        }
        if !before.is_empty() {
            tokens.push(Token::Text(before.to_owned()));
        }
        let inner = inner.trim();
        if !(inner.starts_with("/*") && inner.ends_with("*/")) {
            tokens.push(Token::Action(inner.to_owned()));
        }
        rest = &rest[close + 2..];
    }
    let last = if trim_next { rest.trim_start() } else { rest };
    if !last.is_empty() {
        tokens.push(Token::Text(last.to_owned()));
    }
    Ok(tokens)
}

/// Nodes up to an `else`, `else if …` or `end` (returned) or the end of the tokens.
fn parse_nodes(tokens: &[Token], at: &mut usize) -> Result<(Vec<Node>, Option<String>), String> {
    let mut nodes = Vec::new();
    while let Some(token) = tokens.get(*at) {
        *at += 1;
        let action = match token {
            Token::Text(t) => {
                nodes.push(Node::Text(t.clone()));
                continue;
            }
            Token::Action(a) => a.as_str(),
        };
        let (word, rest) = action
            .split_once(char::is_whitespace)
            .map(|(w, r)| (w, r.trim()))
            .unwrap_or((action, ""));
        match word {
            "end" | "else" => return Ok((nodes, Some(action.to_owned()))),
            "if" | "range" | "with" => nodes.push(parse_block(word, rest, tokens, at)?),
            "define" | "template" | "block" | "break" | "continue" => {
                return Err(format!(
                    "{{{{{word}}}}} is not supported in notification templates"
                ))
            }
            _ => nodes.push(Node::Action(parse_pipeline(action)?)),
        }
    }
    Ok((nodes, None))
}

fn parse_block(word: &str, pipe: &str, tokens: &[Token], at: &mut usize) -> Result<Node, String> {
    if pipe.is_empty() {
        return Err(format!(
            "{{{{{word}}}}} needs a pipeline, like {{{{{word} .Entries}}}}"
        ));
    }
    let pipeline = parse_pipeline(pipe)?;
    let (body, end) = parse_nodes(tokens, at)?;
    let otherwise = match end.as_deref() {
        Some("end") => Vec::new(),
        Some("else") => {
            let (otherwise, end) = parse_nodes(tokens, at)?;
            if end.as_deref() != Some("end") {
                return Err(format!(
                    "the {{{{else}}}} of {{{{{word} {pipe}}}}} is not followed by {{{{end}}}}"
                ));
            }
            otherwise
        }
        Some(other) if word == "if" && other.starts_with("else if ") => {
            // `else if X` is an `if` inside the else branch, ended by the same `end`.
            let inner = other["else if ".len()..].trim();
            vec![parse_block("if", inner, tokens, at)?]
        }
        Some(other) => {
            return Err(format!(
                "{{{{{other}}}}} is not supported in notification templates"
            ))
        }
        None => return Err(format!("{{{{{word} {pipe}}}}} has no {{{{end}}}}")),
    };
    let pipeline_node = match word {
        "if" => Node::If(pipeline, body, otherwise),
        "range" => Node::Range(pipeline, body, otherwise),
        _ => Node::With(pipeline, body, otherwise),
    };
    Ok(pipeline_node)
}

fn parse_pipeline(text: &str) -> Result<Pipeline, String> {
    let words = split_words(text)?;
    if words.iter().any(|w| w.starts_with('$')) {
        return Err(format!(
            "variables ({}) are not supported in notification templates",
            text.trim()
        ));
    }
    let mut commands = Vec::new();
    for part in words.split(|w| w == "|") {
        if part.is_empty() {
            return Err(format!("an empty command in {{{{{}}}}}", text.trim()));
        }
        let operands = part
            .iter()
            .map(|w| operand(w))
            .collect::<Result<Vec<_>, _>>()?;
        commands.push(Command(operands));
    }
    Ok(Pipeline(commands))
}

fn operand(word: &str) -> Result<Operand, String> {
    if let Some(inner) = word.strip_prefix('(').and_then(|w| w.strip_suffix(')')) {
        return Ok(Operand::Sub(parse_pipeline(inner)?));
    }
    if word == "." {
        return Ok(Operand::Field(Vec::new()));
    }
    if let Some(path) = word.strip_prefix('.') {
        return Ok(Operand::Field(path.split('.').map(str::to_owned).collect()));
    }
    if let Some(s) = word.strip_prefix('"').and_then(|w| w.strip_suffix('"')) {
        return Ok(Operand::Str(unescape(s)?));
    }
    if let Some(s) = word.strip_prefix('`').and_then(|w| w.strip_suffix('`')) {
        return Ok(Operand::Str(s.to_owned()));
    }
    match word {
        "true" => return Ok(Operand::Bool(true)),
        "false" => return Ok(Operand::Bool(false)),
        _ => {}
    }
    if let Ok(n) = word.parse::<i64>() {
        return Ok(Operand::Int(n));
    }
    if FUNCTIONS.contains(&word) {
        return Ok(Operand::Func(word.to_owned()));
    }
    Err(format!(
        "`{word}` is not supported in notification templates (functions: {})",
        FUNCTIONS.join(", ")
    ))
}

/// Go's string escapes: `\n`, `\t`, `\"`, `\\`.
fn unescape(s: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            other => {
                return Err(format!(
                    "the escape \\{} is not supported in notification templates",
                    other.unwrap_or(' ')
                ))
            }
        }
    }
    Ok(out)
}

/// Words of an action: quoted strings and parenthesised groups stay whole; `|` is a word.
fn split_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        match c {
            '"' | '`' => {
                i += 1;
                while i < chars.len() && (chars[i] != c || (c == '"' && chars[i - 1] == '\\')) {
                    i += 1;
                }
                if i == chars.len() {
                    return Err(format!("an unterminated string in {{{{{text}}}}}"));
                }
                i += 1;
            }
            '(' => {
                let mut depth = 0;
                while i < chars.len() {
                    match chars[i] {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    i += 1;
                    if depth == 0 {
                        break;
                    }
                }
                if depth != 0 {
                    return Err(format!("unbalanced parentheses in {{{{{text}}}}}"));
                }
            }
            '|' => i += 1,
            _ => {
                while i < chars.len() && !chars[i].is_whitespace() && !"|()".contains(chars[i]) {
                    i += 1;
                }
            }
        }
        words.push(chars[start..i].iter().collect());
    }
    Ok(words)
}

#[cfg(test)]
mod tests;
