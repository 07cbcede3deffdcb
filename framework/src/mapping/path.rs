//! Field paths of the mapping DSL: `a.b`, `Emails[0].Value`, `UserDefinedFields["SuperOffice:1"]`
//! and `UserDefinedFields[$param]` (a per-connection parameter names the key).

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A parsed, parameter-resolved path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path(pub Vec<Seg>);

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            match s {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) if k.chars().all(|c| c.is_alphanumeric() || c == '_') => {
                    write!(f, ".{k}")?
                }
                Seg::Key(k) => write!(f, "[{k:?}]")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

impl Path {
    /// Parses `text`, replacing `[$name]` by the parameter's value.
    pub fn parse(text: &str, params: &BTreeMap<String, String>) -> Result<Path, String> {
        let mut segs = Vec::new();
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err("empty path".into());
        }
        let mut expect_key = true;
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix('[') {
                let end = r
                    .find(']')
                    .ok_or_else(|| format!("unclosed `[` in path {text:?}"))?;
                let inner = r[..end].trim();
                rest = &r[end + 1..];
                if let Some(name) = inner.strip_prefix('$') {
                    let v = params
                        .get(name)
                        .ok_or_else(|| format!("unknown parameter `${name}` in path {text:?}"))?;
                    segs.push(Seg::Key(v.clone()));
                } else if inner.len() >= 2
                    && (inner.starts_with('"') && inner.ends_with('"')
                        || inner.starts_with('\'') && inner.ends_with('\''))
                {
                    segs.push(Seg::Key(inner[1..inner.len() - 1].to_string()));
                } else {
                    let n = inner
                        .parse::<usize>()
                        .map_err(|_| format!("bad index `[{inner}]` in path {text:?}"))?;
                    segs.push(Seg::Index(n));
                }
                expect_key = false;
            } else if let Some(r) = rest.strip_prefix('.') {
                if expect_key {
                    return Err(format!("unexpected `.` in path {text:?}"));
                }
                rest = r;
                expect_key = true;
            } else {
                if !expect_key {
                    return Err(format!("expected `.` or `[` in path {text:?}"));
                }
                let end = rest.find(['.', '[']).unwrap_or(rest.len());
                let key = &rest[..end];
                if key.is_empty() {
                    return Err(format!("empty field name in path {text:?}"));
                }
                segs.push(Seg::Key(key.to_string()));
                rest = &rest[end..];
                expect_key = false;
            }
        }
        if expect_key {
            return Err(format!("path {text:?} ends with `.`"));
        }
        Ok(Path(segs))
    }

    /// The first key: what the model or the connector must declare.
    pub fn root(&self) -> &str {
        match self.0.first() {
            Some(Seg::Key(k)) => k,
            _ => "",
        }
    }

    /// The key segments only (indices dropped), for looking fields up in a model.
    pub fn keys(&self) -> Vec<String> {
        self.0
            .iter()
            .filter_map(|s| match s {
                Seg::Key(k) => Some(k.clone()),
                Seg::Index(_) => None,
            })
            .collect()
    }

    /// `None` when absent anywhere along the path; `Some(Null)` when explicitly null.
    pub fn get<'a>(&self, mut v: &'a Value) -> Option<&'a Value> {
        for s in &self.0 {
            v = match (s, v) {
                (Seg::Key(k), Value::Object(m)) => m.get(k)?,
                (Seg::Index(i), Value::Array(a)) => a.get(*i)?,
                _ => return None,
            };
        }
        Some(v)
    }

    /// Writes `new` at the path, creating objects and arrays on the way.
    pub fn set(&self, root: &mut Value, new: Value) {
        let mut v = root;
        for s in &self.0 {
            v = match s {
                Seg::Key(k) => {
                    if !v.is_object() {
                        *v = Value::Object(Map::new());
                    }
                    match v {
                        Value::Object(m) => m.entry(k.clone()).or_insert(Value::Null),
                        _ => unreachable!("just made an object"),
                    }
                }
                Seg::Index(i) => {
                    if !v.is_array() {
                        *v = Value::Array(Vec::new());
                    }
                    match v {
                        Value::Array(a) => {
                            while a.len() <= *i {
                                a.push(Value::Null);
                            }
                            &mut a[*i]
                        }
                        _ => unreachable!("just made an array"),
                    }
                }
            };
        }
        *v = new;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_walks_nested_paths() {
        let mut params = BTreeMap::new();
        params.insert("udf".to_string(), "SuperOffice:1".to_string());
        let p = Path::parse("UserDefinedFields[$udf]", &params).unwrap();
        let mut v = json!({});
        p.set(&mut v, json!("x"));
        assert_eq!(v, json!({"UserDefinedFields": {"SuperOffice:1": "x"}}));
        let p = Path::parse("Emails[0].Value", &params).unwrap();
        p.set(&mut v, json!("a@b.c"));
        assert_eq!(p.get(&v), Some(&json!("a@b.c")));
        assert_eq!(
            Path::parse("Emails[1].Value", &params).unwrap().get(&v),
            None
        );
        assert!(Path::parse("a..b", &params).is_err());
        assert!(Path::parse("a[$nope]", &params).is_err());
    }
}
