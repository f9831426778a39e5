//! Rendering: Go `text/template` syntax through `gtmpl`, made strict.
//!
//! gtmpl renders a missing field as `<no value>` and reports names and lines
//! only for parse errors, so before rendering the template's actions are
//! scanned for `.Field` references and every one must be a known variable;
//! the error names the template and the line. Inside `{{range .ShardedTables}}`
//! (or through `$t` of `{{range $t := .ShardedTables}}`) `.Field` must be a
//! field of the list's items. Where `.` is something the scanner does not
//! follow (`with`, `define`, ranges over anything else) references are not
//! checked before rendering; a missing one still fails the render.

use std::collections::HashMap;

use crate::vars::{self, ListVar, Value, Values};

/// A template problem, already formatted as `template NAME:LINE: ...`.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderError(pub String);

impl std::fmt::Display for RenderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RenderError {}

/// A `.Field` reference with its 1-based line: to the root data (`list` is
/// `None`) or to an item of the named list variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRef {
    pub field: String,
    pub line: usize,
    pub list: Option<&'static str>,
}

/// What `.` is inside a block.
#[derive(Clone, Copy)]
enum Dot {
    Root,
    /// An item of a list variable: `{{range .ShardedTables}}`.
    Item(&'static ListVar),
    /// Something the scanner does not follow.
    Unknown,
}

/// An open `if`/`range`/`with`/`define`/`block`.
struct Block {
    keyword: &'static str,
    line: usize,
    dot: Dot,
    /// `$t` of `{{range $t := .ShardedTables}}` (or `$i, $t :=`).
    item_var: Option<(String, &'static ListVar)>,
}

/// One `{{ ... }}` action: its text (without delimiters and trim markers) and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub text: String,
    pub line: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    pub refs: Vec<FieldRef>,
    pub actions: Vec<Action>,
}

/// Scan `text`'s actions: field references (to the root data, or to list
/// items inside `{{range .List}}`), and each action with its line. References
/// inside `with`/`define`/`block` bodies and other ranges are skipped (there
/// `.` is something else), except `$.Field`, which is always the root.
/// Unclosed actions, unbalanced `{{end}}`/`{{else}}` and `{{else}}` in a
/// `{{range}}` (gtmpl would render it even for a non-empty list) are errors
/// with a line.
pub fn scan(name: &str, text: &str) -> Result<Scan, RenderError> {
    let bytes = text.as_bytes();
    let line_at = |pos: usize| text[..pos].bytes().filter(|&b| b == b'\n').count() + 1;
    let mut refs = Vec::new();
    let mut actions = Vec::new();
    let mut blocks: Vec<Block> = Vec::new();
    let mut pos = 0;
    while let Some(found) = text[pos..].find("{{") {
        let start = pos + found + 2;
        // Comments: {{/* ... */}}, possibly with trim markers.
        let inner_start = skip_trim_marker(bytes, start);
        if text[inner_start..].starts_with("/*") {
            match text[inner_start..].find("*/") {
                Some(end) => {
                    let after = inner_start + end + 2;
                    match text[after..].find("}}") {
                        Some(close) => pos = after + close + 2,
                        None => return Err(unclosed(name, line_at(start - 2))),
                    }
                    continue;
                }
                None => return Err(unclosed(name, line_at(start - 2))),
            }
        }
        // Find the closing `}}`, skipping string literals.
        let mut i = inner_start;
        let mut end = None;
        while i < bytes.len() {
            match bytes[i] {
                b'"' | b'\'' => {
                    let quote = bytes[i];
                    i += 1;
                    while i < bytes.len() && bytes[i] != quote {
                        if bytes[i] == b'\\' {
                            i += 1;
                        }
                        i += 1;
                    }
                    i += 1;
                }
                b'`' => {
                    i += 1;
                    while i < bytes.len() && bytes[i] != b'`' {
                        i += 1;
                    }
                    i += 1;
                }
                b'}' if bytes.get(i + 1) == Some(&b'}') => {
                    end = Some(i);
                    break;
                }
                _ => i += 1,
            }
        }
        let Some(end) = end else {
            return Err(unclosed(name, line_at(start - 2)));
        };
        let mut action_end = end;
        if end > inner_start && bytes[end - 1] == b'-' && bytes[end - 2].is_ascii_whitespace() {
            action_end = end - 1;
        }
        let action = &text[inner_start..action_end];
        let line = line_at(start - 2);
        let keyword = action.trim_start().split(|c: char| c.is_whitespace() || c == '(').next().unwrap_or("");
        let dot = blocks.last().map_or(Dot::Root, |b| b.dot);
        let item_vars: Vec<&(String, &ListVar)> = blocks.iter().filter_map(|b| b.item_var.as_ref()).collect();
        scan_action(action, inner_start, dot, &item_vars, &line_at, &mut refs);
        let block = |keyword, dot, item_var| Block { keyword, line, dot, item_var };
        match keyword {
            "if" => blocks.push(block("if", dot, None)),
            "range" => {
                let (item_var, list) = range_over_list(action, dot);
                let inner = list.map_or(Dot::Unknown, Dot::Item);
                blocks.push(block("range", inner, item_var.zip(list)));
            }
            "with" => blocks.push(block("with", Dot::Unknown, None)),
            "define" => blocks.push(block("define", Dot::Unknown, None)),
            "block" => blocks.push(block("block", Dot::Unknown, None)),
            "end" if blocks.pop().is_none() => {
                return Err(RenderError(format!("template {name}:{line}: unexpected {{{{end}}}}")));
            }
            "else" => {
                let Some(open) = blocks.last() else {
                    return Err(RenderError(format!("template {name}:{line}: unexpected {{{{else}}}}")));
                };
                if open.keyword == "range" {
                    return Err(RenderError(format!(
                        "template {name}:{line}: {{{{else}}}} in {{{{range}}}} (line {}) is not supported \
                         (gtmpl renders it even when the list is not empty); use {{{{if}}}} around the range",
                        open.line
                    )));
                }
                // In `{{with}}`'s else branch `.` is the enclosing one again.
                if open.keyword == "with" {
                    let outer = blocks.len().checked_sub(2).and_then(|i| blocks.get(i)).map_or(Dot::Root, |b| b.dot);
                    if let Some(open) = blocks.last_mut() {
                        open.dot = outer;
                    }
                }
            }
            _ => {}
        }
        actions.push(Action { text: action.to_string(), line });
        pos = end + 2;
    }
    if let Some(Block { keyword, line, .. }) = blocks.last() {
        return Err(RenderError(format!("template {name}:{line}: {{{{{keyword}}}}} has no matching {{{{end}}}}")));
    }
    Ok(Scan { refs, actions })
}

/// For `range [$i, ][$t :=] .List` (`.List` while `.` is the root, or
/// `$.List`) over a list variable: the item variable `$t`, if any, and the list.
fn range_over_list(action: &str, dot: Dot) -> (Option<String>, Option<&'static ListVar>) {
    let rest = action.trim().strip_prefix("range").unwrap_or("").trim();
    let (decl, pipeline) = match rest.split_once(":=") {
        Some((decl, pipeline)) => (Some(decl), pipeline.trim()),
        None => (None, rest),
    };
    let field = match pipeline.strip_prefix("$.") {
        Some(field) => Some(field),
        None if matches!(dot, Dot::Root) => pipeline.strip_prefix('.'),
        None => None,
    };
    let list = field.and_then(vars::find_list);
    let item_var = decl.and_then(|d| d.split(',').next_back()).map(|v| v.trim().to_string());
    (item_var.filter(|v| v.len() > 1 && v.starts_with('$')), list)
}

/// gtmpl's own line numbers are unreliable, so a parse error is placed by
/// parsing each action on its own (blocks closed, variables declared); the
/// first that fails gives the line.
fn locate_parse_error(name: &str, actions: &[Action]) -> Option<RenderError> {
    for action in actions {
        let text = action.text.trim();
        let keyword = text.split(|c: char| c.is_whitespace() || c == '(').next().unwrap_or("");
        let body = match keyword {
            "end" => continue,
            "if" | "range" | "with" | "define" | "block" => format!("{{{{{text}}}}}{{{{end}}}}"),
            "else" => format!("{{{{if 1}}}}{{{{{text}}}}}{{{{end}}}}"),
            _ => format!("{{{{{text}}}}}"),
        };
        let mut decls = String::new();
        let bytes = text.as_bytes();
        for (i, _) in text.match_indices('$') {
            let len = bytes[i + 1..].iter().take_while(|b| b.is_ascii_alphanumeric() || **b == b'_').count();
            if len > 0 {
                decls.push_str(&format!("{{{{{} := 0}}}}", &text[i..i + 1 + len]));
            }
        }
        let mut tmpl = gtmpl::Template::with_name(name);
        if let Err(err) = tmpl.parse(format!("{decls}{body}")) {
            let msg = match err {
                gtmpl::error::ParseError::WithContext(_, msg) => msg,
                other => other.to_string(),
            };
            return Some(RenderError(format!("template {name}:{}: {msg}", action.line)));
        }
    }
    None
}

fn skip_trim_marker(bytes: &[u8], start: usize) -> usize {
    if bytes.get(start) == Some(&b'-') && bytes.get(start + 1).is_some_and(|b| b.is_ascii_whitespace()) {
        start + 1
    } else {
        start
    }
}

fn unclosed(name: &str, line: usize) -> RenderError {
    RenderError(format!("template {name}:{line}: unclosed action (missing \"}}}}\")"))
}

/// Collect `.Field` (to the root or a list item, as `dot` says), `$.Field`
/// (root) and `$t.Field` (item variable) references from one action's text,
/// skipping string literals.
fn scan_action(
    action: &str,
    offset: usize,
    dot: Dot,
    item_vars: &[&(String, &'static ListVar)],
    line_at: &dyn Fn(usize) -> usize,
    refs: &mut Vec<FieldRef>,
) {
    let bytes = action.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' | b'\'' | b'`' => {
                let quote = bytes[i];
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    if bytes[i] == b'\\' && quote != b'`' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'.' => {
                let prev = if i == 0 { None } else { Some(bytes[i - 1]) };
                // Whose field this is: Some(None) the root, Some(Some(list)) a list item.
                let owner: Option<Option<&'static str>> = match prev {
                    // `$.Field` is the root.
                    Some(b'$') if i < 2 || !ident(bytes[i - 2]) => Some(None),
                    Some(b) if ident(b) => {
                        // `$t.Field` of an item variable; `.A.B`, `$x.B` are not followed.
                        let start = action[..i].trim_end_matches(|c: char| c.is_ascii_alphanumeric() || c == '_').len();
                        let var = start.checked_sub(1).filter(|&s| bytes[s] == b'$').map(|s| &action[s..i]);
                        var.and_then(|var| item_vars.iter().rev().find(|(name, _)| name == var))
                            .map(|(_, list)| Some(list.name))
                    }
                    Some(b) if b == b')' || b == b'.' || b == b'$' => None,
                    _ => match dot {
                        Dot::Root => Some(None),
                        Dot::Item(list) => Some(Some(list.name)),
                        Dot::Unknown => None,
                    },
                };
                let name_start = i + 1;
                let mut j = name_start;
                while j < bytes.len() && ident(bytes[j]) {
                    j += 1;
                }
                let starts_alpha = bytes.get(name_start).is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_');
                if let (Some(list), true) = (owner, starts_alpha) {
                    refs.push(FieldRef { field: action[name_start..j].to_string(), line: line_at(offset + i), list });
                }
                i = j.max(i + 1);
            }
            _ => i += 1,
        }
    }
}

/// The variables as gtmpl data: integers as numbers, booleans as booleans,
/// lists as arrays of objects in which every field of the list is present
/// (an optional one left out is `nil`).
pub fn context(values: &Values) -> gtmpl::Value {
    let map: HashMap<String, gtmpl::Value> =
        values.0.iter().map(|(name, value)| (name.to_string(), to_gtmpl(name, value))).collect();
    gtmpl::Value::Object(map)
}

fn to_gtmpl(name: &str, value: &Value) -> gtmpl::Value {
    match value {
        Value::Text(s) => gtmpl::Value::from(s.as_str()),
        Value::Int(n) => gtmpl::Value::from(*n),
        Value::Bool(b) => gtmpl::Value::from(*b),
        Value::Names(names) => gtmpl::Value::Array(names.iter().map(|n| gtmpl::Value::from(n.as_str())).collect()),
        Value::List(items) => {
            let fields: Vec<&str> = match vars::find_list(name) {
                Some(list) => list.fields.iter().map(|f| f.name).collect(),
                None => Vec::new(),
            };
            let items = items
                .iter()
                .map(|item| {
                    let mut object: HashMap<String, gtmpl::Value> =
                        fields.iter().map(|f| (f.to_string(), gtmpl::Value::Nil)).collect();
                    object.extend(item.iter().map(|(field, value)| (field.to_string(), to_gtmpl(field, value))));
                    gtmpl::Value::Object(object)
                })
                .collect();
            gtmpl::Value::Array(items)
        }
    }
}

/// Render template `text` (named `name` in errors) with `values`.
pub fn render(name: &str, text: &str, values: &Values) -> Result<String, RenderError> {
    let scan = scan(name, text)?;
    let mut tmpl = gtmpl::Template::with_name(name);
    if let Err(err) = tmpl.parse(text) {
        if let Some(located) = locate_parse_error(name, &scan.actions) {
            return Err(located);
        }
        let msg = match err {
            gtmpl::error::ParseError::WithContext(_, msg) => msg,
            other => other.to_string(),
        };
        return Err(RenderError(format!("template {name}: {msg}")));
    }
    for r in &scan.refs {
        match r.list.and_then(vars::find_list) {
            None => {
                let known = vars::find(&r.field).is_some() || vars::find_list(&r.field).is_some();
                if !known || values.get(&r.field).is_none() {
                    return Err(RenderError(format!("template {name}:{}: unknown variable .{}", r.line, r.field)));
                }
            }
            Some(list) if list.field(&r.field).is_none() => {
                return Err(RenderError(format!(
                    "template {name}:{}: unknown field .{} of {} items (expected one of: {})",
                    r.line,
                    r.field,
                    list.name,
                    list.field_names()
                )));
            }
            Some(_) => {}
        }
    }
    let out = tmpl
        .render(&gtmpl::Context::from(context(values)))
        .map_err(|err| RenderError(format!("template {name}: {err}")))?;
    if let Some(at) = out.find("<no value>") {
        let line = out[..at].bytes().filter(|&b| b == b'\n').count() + 1;
        return Err(RenderError(format!("template {name}: output line {line} has <no value> (a missing value)")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn defaults() -> Values {
        vars::resolve(&BTreeMap::new(), &|_| None, &vars::FileValues::default()).unwrap()
    }

    #[test]
    fn renders_typed_values() {
        let text = "name = \"{{.ClusterName}}\"\nshards = {{.ShardCount}}\n{{if .TLSEnabled}}tls{{else}}plain{{end}}\n\
                    {{if eq .PoolMode \"transaction\"}}tx{{end}} {{printf \"%d\" .MaxPoolSize}}";
        let out = render("t.tmpl", text, &defaults()).unwrap();
        assert_eq!(out, "name = \"default\"\nshards = 32\nplain\ntx 100");
    }

    #[test]
    fn unknown_field_names_template_and_line() {
        let text = "a = 1\n\nb = \"{{ .ClusterName }}\"\nc = {{ .Nope }}\n";
        let err = render("x.toml.tmpl", text, &defaults()).unwrap_err();
        assert_eq!(err.0, "template x.toml.tmpl:4: unknown variable .Nope");
        let err = render("x", "{{if .TLSEnabled}}\n{{else}}{{$.Missing}}{{end}}", &defaults()).unwrap_err();
        assert_eq!(err.0, "template x:2: unknown variable .Missing");
    }

    #[test]
    fn scanner_skips_strings_comments_and_rebound_dots() {
        let text = "{{/* .Comment */}}{{ \".NotAField\" }}{{ range $i, $t := .Tables }}{{ .name }}{{ $.ShardCount }}{{ end }}{{- .After -}}";
        let refs = scan("t", text).unwrap().refs;
        let fields: Vec<&str> = refs.iter().map(|r| r.field.as_str()).collect();
        assert_eq!(fields, ["Tables", "ShardCount", "After"]);
    }

    fn with_tables() -> Values {
        let file = vars::parse_values_file(
            "v.toml",
            "[[ShardedTables]]\nName = \"orders\"\nColumn = \"cid\"\nShards = 4\n\
             [[ShardedTables]]\nName = \"items\"\nColumn = \"cid\"\n",
        )
        .unwrap();
        vars::resolve(&BTreeMap::new(), &|_| None, &file).unwrap()
    }

    #[test]
    fn range_over_list_variable() {
        let text =
            "{{range .ShardedTables}}{{.Name}}:{{.Column}}{{if .Shards}}:{{.Shards}}{{end}}/{{$.ShardCount}};{{end}}";
        assert_eq!(render("t", text, &with_tables()).unwrap(), "orders:cid:4/32;items:cid/32;");
        assert_eq!(render("t", text, &defaults()).unwrap(), "");
        let text =
            "{{range $i, $t := $.ShardedTables}}{{$i}}={{$t.Name}}{{if $t.Shards}}({{$t.Shards}}){{end}} {{end}}";
        assert_eq!(render("t", text, &with_tables()).unwrap(), "0=orders(4) 1=items ");
        let text = "{{if .ShardedTables}}some{{else}}none{{end}}";
        assert_eq!(render("t", text, &defaults()).unwrap(), "none");
    }

    #[test]
    fn range_bodies_are_checked_against_item_fields() {
        let refs = scan("t", "{{range .ShardedTables}}{{.Name}}{{$.Port}}{{end}}{{.Port}}").unwrap().refs;
        let got: Vec<(&str, Option<&str>)> = refs.iter().map(|r| (r.field.as_str(), r.list)).collect();
        assert_eq!(got, [("ShardedTables", None), ("Name", Some("ShardedTables")), ("Port", None), ("Port", None)]);

        let text = "a\n{{range .ShardedTables}}\nname = {{.Name}}\ncol = {{.Colum}}\n{{end}}";
        let err = render("x.tmpl", text, &defaults()).unwrap_err();
        assert_eq!(
            err.0,
            "template x.tmpl:4: unknown field .Colum of ShardedTables items (expected one of: Name, Column, Shards)"
        );
        let text = "{{range $t := .ShardedTables}}\n{{$t.Nope}}{{end}}";
        let err = render("x.tmpl", text, &defaults()).unwrap_err();
        assert!(err.0.starts_with("template x.tmpl:2: unknown field .Nope of ShardedTables"), "{}", err.0);
        // A root variable is not an item field, and vice versa.
        let err = render("x.tmpl", "{{range .ShardedTables}}{{.ClusterName}}{{end}}", &defaults()).unwrap_err();
        assert!(err.0.contains("unknown field .ClusterName"), "{}", err.0);
        let err = render("x.tmpl", "{{.Name}}", &defaults()).unwrap_err();
        assert_eq!(err.0, "template x.tmpl:1: unknown variable .Name");
        // `if` inside a range keeps the item; `with` is not followed.
        let err = render("x", "{{range .ShardedTables}}{{if .Shards}}{{.Bad}}{{end}}{{end}}", &defaults()).unwrap_err();
        assert!(err.0.contains("unknown field .Bad"), "{}", err.0);
        assert!(scan("x", "{{with .ShardedTables}}{{.Whatever}}{{else}}{{.Port}}{{end}}").unwrap().refs.len() == 2);
    }

    #[test]
    fn else_in_range_is_refused() {
        let text = "{{range .ShardedTables}}\n{{.Name}}\n{{else}}\nnone\n{{end}}";
        let err = render("x.tmpl", text, &with_tables()).unwrap_err();
        assert!(err.0.starts_with("template x.tmpl:3: {{else}} in {{range}} (line 1) is not supported"), "{}", err.0);
    }

    #[test]
    fn parse_errors_name_template_and_line() {
        let err = render("bad.tmpl", "ok\n{{ if .TLSEnabled }}\nno end\n", &defaults()).unwrap_err();
        assert_eq!(err.0, "template bad.tmpl:2: {{if}} has no matching {{end}}");
        let err = render("bad.tmpl", "a\n\n{{ end }}\n", &defaults()).unwrap_err();
        assert_eq!(err.0, "template bad.tmpl:3: unexpected {{end}}");
        let err = render("bad.tmpl", "ok\n\n{{ .ClusterName \n", &defaults()).unwrap_err();
        assert_eq!(err.0, "template bad.tmpl:3: unclosed action (missing \"}}\")");
        let err = render("bad.tmpl", "ok\n{{ .ClusterName | nosuchfunc }}\n", &defaults()).unwrap_err();
        assert_eq!(err.0, "template bad.tmpl:2: function nosuchfunc not defined");
        let text = "{{ $x := .ClusterName }}\n{{ $x }}\n{{ if }}\n{{ end }}";
        let err = render("bad.tmpl", text, &defaults()).unwrap_err();
        assert_eq!(err.0, "template bad.tmpl:3: missing value for if");
    }
}
