//! Named value transforms for mappings. Connectors add their own with
//! [`register_transform!`](crate::register_transform); the loader rejects unknown names.

use serde_json::Value;

/// One named transform. `apply` must not panic: bad input is an `Err` naming the problem.
pub struct Transform {
    pub name: &'static str,
    pub apply: fn(&Value) -> Result<Value, String>,
}

inventory::collect!(Transform);

/// Registers a transform under a name usable in any mapping's `to_hub` / `to_external`.
#[macro_export]
macro_rules! register_transform {
    ($name:expr, $f:expr) => {
        $crate::__inventory::submit! {
            $crate::mapping::transforms::Transform { name: $name, apply: $f }
        }
    };
}

/// Looks a transform up by name.
pub fn find(name: &str) -> Option<&'static Transform> {
    inventory::iter::<Transform>
        .into_iter()
        .find(|t| t.name == name)
}

fn map_str(v: &Value, f: impl Fn(&str) -> String) -> Result<Value, String> {
    match v {
        Value::String(s) => Ok(Value::String(f(s))),
        Value::Null => Ok(Value::Null),
        other => Err(format!("expected a string, got {other}")),
    }
}

crate::register_transform!("trim", |v| map_str(v, |s| s.trim().to_string()));
crate::register_transform!("lowercase", |v| map_str(v, str::to_lowercase));
crate::register_transform!("uppercase", |v| map_str(v, str::to_uppercase));
crate::register_transform!("empty_to_null", |v| Ok(match v {
    Value::String(s) if s.trim().is_empty() => Value::Null,
    other => other.clone(),
}));
crate::register_transform!("to_string", |v| Ok(match v {
    Value::String(_) | Value::Null => v.clone(),
    Value::Number(n) => Value::String(n.to_string()),
    Value::Bool(b) => Value::String(b.to_string()),
    other => return Err(format!("cannot turn {other} into a string")),
}));
crate::register_transform!("to_integer", |v| match v {
    Value::Null => Ok(Value::Null),
    Value::Number(n) if n.is_i64() || n.is_u64() => Ok(v.clone()),
    Value::String(s) => s
        .trim()
        .parse::<i64>()
        .map(Value::from)
        .map_err(|_| format!("{s:?} is not an integer")),
    other => Err(format!("{other} is not an integer")),
});
crate::register_transform!("to_number", |v| match v {
    Value::Null | Value::Number(_) => Ok(v.clone()),
    Value::String(s) => s
        .trim()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(Value::Number)
        .ok_or_else(|| format!("{s:?} is not a number")),
    other => Err(format!("{other} is not a number")),
});
// "2024-05-01T10:00:00" or RFC 3339 -> "2024-05-01" (hub `date` fields).
crate::register_transform!("date_only", |v| match v {
    Value::Null => Ok(Value::Null),
    Value::String(s)
        if s.len() >= 10 && chrono::NaiveDate::parse_from_str(&s[..10], "%Y-%m-%d").is_ok() =>
    {
        Ok(Value::String(s[..10].to_string()))
    }
    other => Err(format!("{other} is not a date")),
});
