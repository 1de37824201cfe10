//! Executing a parsed template against the notification data, with Go's rules for
//! truth, printing and `range`.

use std::collections::BTreeMap;

use chrono::{DateTime, FixedOffset};

use super::{golayout, Command, Node, Operand, Pipeline};

/// The data a template sees: watchtower's structs, as values.
#[derive(Debug, Clone)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    Str(String),
    List(Vec<Value>),
    /// A struct: asking for a field it lacks is an error, as in Go.
    Map(BTreeMap<String, Value>),
    Time(DateTime<FixedOffset>),
    /// An image id: prints whole; `.ShortID` is its first 12 hex digits.
    Id(String),
}

impl Value {
    pub fn map(fields: Vec<(&str, Value)>) -> Value {
        Value::Map(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    fn truthy(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(n) => *n != 0,
            Value::Str(s) | Value::Id(s) => !s.is_empty(),
            Value::List(l) => !l.is_empty(),
            Value::Map(m) => !m.is_empty(),
            Value::Time(_) => true,
        }
    }

    fn print(&self) -> String {
        match self {
            Value::Nil => "<no value>".to_owned(),
            Value::Bool(b) => b.to_string(),
            Value::Int(n) => n.to_string(),
            Value::Str(s) | Value::Id(s) => s.clone(),
            Value::List(l) => {
                let items: Vec<String> = l.iter().map(Value::print).collect();
                format!("[{}]", items.join(" "))
            }
            Value::Map(m) => {
                let items: Vec<String> = m
                    .iter()
                    .map(|(k, v)| format!("{k}:{}", v.print()))
                    .collect();
                format!("map[{}]", items.join(" "))
            }
            Value::Time(t) => golayout::format(t, "2006-01-02 15:04:05.999999999 -0700 MST"),
        }
    }

    fn json(&self) -> serde_json::Value {
        match self {
            Value::Nil => serde_json::Value::Null,
            Value::Bool(b) => (*b).into(),
            Value::Int(n) => (*n).into(),
            Value::Str(s) | Value::Id(s) => s.clone().into(),
            Value::List(l) => l.iter().map(Value::json).collect(),
            Value::Map(m) => m.iter().map(|(k, v)| (k.clone(), v.json())).collect(),
            Value::Time(t) => t.to_rfc3339().into(),
        }
    }

    fn field(&self, name: &str) -> Result<Value, String> {
        match self {
            Value::Map(m) => m.get(name).cloned().ok_or_else(|| {
                let known: Vec<&str> = m.keys().map(String::as_str).collect();
                format!(
                    "there is no field .{name} here (there are: {})",
                    known.join(", ")
                )
            }),
            Value::Id(id) if name == "ShortID" => Ok(Value::Str(short_id(id))),
            Value::Nil => Ok(Value::Nil),
            other => Err(format!("cannot read .{name} of {}", other.kind())),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Value::Nil => "nothing",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "a number",
            Value::Str(_) => "a string",
            Value::List(_) => "a list",
            Value::Map(_) => "a struct",
            Value::Time(_) => "a time",
            Value::Id(_) => "an image id",
        }
    }
}

/// watchtower's `ShortID`: without `sha256:`, 12 hex digits.
fn short_id(id: &str) -> String {
    let hex = id.split_once(':').map_or(id, |(_, h)| h);
    hex.chars().take(12).collect()
}

pub(super) fn run(nodes: &[Node], dot: &Value, out: &mut String) -> Result<(), String> {
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Action(p) => out.push_str(&pipeline(p, dot)?.print()),
            Node::If(p, body, otherwise) => {
                let branch = if pipeline(p, dot)?.truthy() {
                    body
                } else {
                    otherwise
                };
                run(branch, dot, out)?;
            }
            Node::With(p, body, otherwise) => {
                let value = pipeline(p, dot)?;
                if value.truthy() {
                    run(body, &value, out)?;
                } else {
                    run(otherwise, dot, out)?;
                }
            }
            Node::Range(p, body, otherwise) => {
                let items = match pipeline(p, dot)? {
                    Value::List(items) => items,
                    Value::Map(m) => m.into_values().collect(),
                    Value::Nil => Vec::new(),
                    other => {
                        return Err(format!("range over {}, which is not a list", other.kind()))
                    }
                };
                if items.is_empty() {
                    run(otherwise, dot, out)?;
                }
                for item in &items {
                    run(body, item, out)?;
                }
            }
        }
    }
    Ok(())
}

fn pipeline(p: &Pipeline, dot: &Value) -> Result<Value, String> {
    let mut last: Option<Value> = None;
    for command in &p.0 {
        last = Some(call(command, dot, last)?);
    }
    Ok(last.unwrap_or(Value::Nil))
}

fn call(command: &Command, dot: &Value, piped: Option<Value>) -> Result<Value, String> {
    let (first, rest) = command.0.split_first().ok_or("an empty command")?;
    let mut args = rest
        .iter()
        .map(|o| operand(o, dot))
        .collect::<Result<Vec<_>, _>>()?;
    args.extend(piped);
    match first {
        Operand::Func(name) => function(name, args),
        // `.Time.Format "layout"`: a method of the value before the last name.
        Operand::Field(path) if !args.is_empty() => {
            let (method, base) = path.split_last().ok_or("`.` takes no arguments")?;
            let receiver = walk(dot, base)?;
            match (method.as_str(), &receiver, args.as_slice()) {
                ("Format", Value::Time(t), [Value::Str(layout)]) => {
                    Ok(Value::Str(golayout::format(t, layout)))
                }
                _ => Err(format!(
                    ".{method} with arguments is not supported (only .Time.Format \"layout\")"
                )),
            }
        }
        other if args.is_empty() => operand(other, dot),
        _ => Err("only functions and .Format take arguments".to_owned()),
    }
}

fn operand(o: &Operand, dot: &Value) -> Result<Value, String> {
    Ok(match o {
        Operand::Field(path) => walk(dot, path)?,
        Operand::Str(s) => Value::Str(s.clone()),
        Operand::Int(n) => Value::Int(*n),
        Operand::Bool(b) => Value::Bool(*b),
        Operand::Func(name) => function(name, Vec::new())?,
        Operand::Sub(p) => pipeline(p, dot)?,
    })
}

fn walk(dot: &Value, path: &[String]) -> Result<Value, String> {
    let mut value = dot.clone();
    for name in path {
        value = value.field(name)?;
    }
    Ok(value)
}

fn function(name: &str, args: Vec<Value>) -> Result<Value, String> {
    let one = |args: &[Value]| match args {
        [v] => Ok(v.clone()),
        _ => Err(format!("{name} takes one argument, not {}", args.len())),
    };
    let text = |args: &[Value]| -> Result<String, String> { Ok(one(args)?.print()) };
    Ok(match name {
        "print" => Value::Str(args.iter().map(Value::print).collect::<Vec<_>>().join(" ")),
        "println" => Value::Str(format!(
            "{}\n",
            args.iter().map(Value::print).collect::<Vec<_>>().join(" ")
        )),
        "len" => Value::Int(match one(&args)? {
            Value::List(l) => l.len() as i64,
            Value::Map(m) => m.len() as i64,
            Value::Str(s) | Value::Id(s) => s.len() as i64,
            Value::Nil => 0,
            other => return Err(format!("len of {}", other.kind())),
        }),
        "not" => Value::Bool(!one(&args)?.truthy()),
        "and" => args
            .iter()
            .find(|v| !v.truthy())
            .or(args.last())
            .cloned()
            .unwrap_or(Value::Nil),
        "or" => args
            .iter()
            .find(|v| v.truthy())
            .or(args.last())
            .cloned()
            .unwrap_or(Value::Nil),
        "eq" | "ne" => match args.as_slice() {
            [a, b] => Value::Bool((a.print() == b.print()) == (name == "eq")),
            _ => return Err(format!("{name} takes two arguments")),
        },
        "ToUpper" => Value::Str(text(&args)?.to_uppercase()),
        "ToLower" => Value::Str(text(&args)?.to_lowercase()),
        "Title" => Value::Str(title(&text(&args)?)),
        "ToJSON" => {
            Value::Str(serde_json::to_string_pretty(&one(&args)?.json()).unwrap_or_default())
        }
        other => return Err(format!("the function {other} is not supported")),
    })
}

fn title(s: &str) -> String {
    let mut out = String::new();
    let mut start = true;
    for c in s.chars() {
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = c.is_whitespace();
    }
    out
}
