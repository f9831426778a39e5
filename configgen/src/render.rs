//! Rendering: Go `text/template` syntax through `gtmpl`, made strict.
//!
//! gtmpl renders a missing field as `<no value>` and reports names and lines
//! only for parse errors, so before rendering the template's actions are
//! scanned for `.Field` references and every one must be a known variable;
//! the error names the template and the line.

use std::collections::HashMap;

use crate::vars::{self, Value, Values};

/// A template problem, already formatted as `template NAME:LINE: ...`.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderError(pub String);

impl std::fmt::Display for RenderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RenderError {}

/// A `.Field` reference to the root data, with its 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRef {
    pub field: String,
    pub line: usize,
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

/// Scan `text`'s actions: field references to the root data, and each action
/// with its line. References inside `range`/`with`/`define`/`block` bodies are
/// skipped (there `.` is something else), except `$.Field`, which is always
/// the root. Unclosed actions and unbalanced `{{end}}`/`{{else}}` are errors
/// with a line.
pub fn scan(name: &str, text: &str) -> Result<Scan, RenderError> {
    let bytes = text.as_bytes();
    let line_at = |pos: usize| text[..pos].bytes().filter(|&b| b == b'\n').count() + 1;
    let mut refs = Vec::new();
    let mut actions = Vec::new();
    // (keyword, line, `.` rebound) of each open block.
    let mut blocks: Vec<(&str, usize, bool)> = Vec::new();
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
        let rebound = blocks.iter().any(|b| b.2);
        scan_action(action, inner_start, rebound, &line_at, &mut refs);
        match keyword {
            "if" => blocks.push(("if", line, false)),
            "range" | "with" | "define" | "block" => blocks.push((keyword, line, true)),
            "end" if blocks.pop().is_none() => {
                return Err(RenderError(format!("template {name}:{line}: unexpected {{{{end}}}}")));
            }
            "else" if blocks.is_empty() => {
                return Err(RenderError(format!("template {name}:{line}: unexpected {{{{else}}}}")));
            }
            _ => {}
        }
        actions.push(Action { text: action.to_string(), line });
        pos = end + 2;
    }
    if let Some((keyword, line, _)) = blocks.last() {
        return Err(RenderError(format!("template {name}:{line}: {{{{{keyword}}}}} has no matching {{{{end}}}}")));
    }
    Ok(Scan { refs, actions })
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

/// Collect `.Field` (when `.` is the root) and `$.Field` references from one
/// action's text, skipping string literals.
fn scan_action(action: &str, offset: usize, rebound: bool, line_at: &dyn Fn(usize) -> usize, refs: &mut Vec<FieldRef>) {
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
                let root = match prev {
                    Some(b'$') => {
                        // `$.Field` is the root; `$x.Field` is a variable's field.
                        i < 2 || !ident(bytes[i - 2])
                    }
                    Some(b) if ident(b) || b == b')' || b == b'.' => false,
                    _ => !rebound,
                };
                let name_start = i + 1;
                let mut j = name_start;
                while j < bytes.len() && ident(bytes[j]) {
                    j += 1;
                }
                let starts_alpha = bytes.get(name_start).is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_');
                if root && starts_alpha {
                    refs.push(FieldRef { field: action[name_start..j].to_string(), line: line_at(offset + i) });
                }
                i = j.max(i + 1);
            }
            _ => i += 1,
        }
    }
}

/// The variables as gtmpl data: integers as numbers, booleans as booleans.
pub fn context(values: &Values) -> gtmpl::Value {
    let map: HashMap<String, gtmpl::Value> = values
        .0
        .iter()
        .map(|(name, value)| {
            let value = match value {
                Value::Text(s) => gtmpl::Value::from(s.as_str()),
                Value::Int(n) => gtmpl::Value::from(*n),
                Value::Bool(b) => gtmpl::Value::from(*b),
            };
            (name.to_string(), value)
        })
        .collect();
    gtmpl::Value::Object(map)
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
        if vars::find(&r.field).is_none() || values.get(&r.field).is_none() {
            return Err(RenderError(format!("template {name}:{}: unknown variable .{}", r.line, r.field)));
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
        vars::resolve(&BTreeMap::new(), &|_| None, &BTreeMap::new()).unwrap()
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
