//! The fake's OData archive lists: `GET /api/v1/Contact` lists the SimpleContact archive
//! and `GET /api/v1/Person` the Person archive (Swagger-v1-Contact.json and
//! Swagger-v1-Person.json), with the columns of `specs/superoffice/archive-providers/`
//! `simplecontact.md` and `person.md` that the fake's records fill.
//!
//! A row is SLIM: keyed by column name, with `PrimaryKey` as text and `EntityName`
//! (SuperOfficeDocs `en/api/web-services/howto/company/get-all-contacts-rest.md`); ints
//! are numbers, dates ISO text in UTC, an empty date `""`. `$select` of a column the
//! archive does not have is refused.
//!
//! `$filter` (SuperOfficeDocs `en/api/search/odata/`): clauses `column operator value`
//! joined by `and`; `after`/`before` take a date (`date.md`), `afterTime`/`beforeTime` a
//! date and time (`datetime.md`), `eq`/`=`/`ne`/`gt`/`ge`/`lt`/`le` a number or a quoted
//! text (`numbers.md`, `strings.md`). `or` and parentheses are not documented for OData;
//! the fake takes them unless its `no-or-in-filter` variant is on.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{json, Map, Value};

use super::super::values::{decode, kind_of, Kind};
use super::parse_date;

/// One filter clause's comparison.
#[derive(Debug)]
enum Op {
    After(DateTime<Utc>),
    Before(DateTime<Utc>),
    Eq(Value),
    Ne(Value),
    Gt(f64),
    Ge(f64),
    Lt(f64),
    Le(f64),
}

/// A parsed `$filter`.
#[derive(Debug)]
enum Expr {
    Clause(String, Op),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

/// A parsed list request.
#[derive(Debug)]
pub struct Query {
    select: Option<Vec<String>>,
    filter: Option<Expr>,
    order: Option<(String, bool)>,
    pub top: usize,
    skip: usize,
}

/// How a row shows a field value: "the SLIM format … just the display values"
/// (SuperOfficeDocs `en/api/search/odata/index.md`), "Dates are always returned as ISO
/// strings" (`$output`): a user-defined number as a number, a date as an ISO date and time,
/// text as it is.
fn display(v: &Value) -> Value {
    let Some(s) = v.as_str() else {
        return v.clone();
    };
    match (kind_of(s), decode(s)) {
        (Kind::Date, Value::String(d)) => json!(format!("{d}T00:00:00")),
        (_, shown) => shown,
    }
}

/// A phone number as a row shows it under the `formatted-phones` variant: digits in pairs
/// after the country code (`+47 22 00 00 01`), whatever spacing the user typed.
pub fn formatted(number: &str) -> String {
    let digits: String = number.chars().filter(|c| c.is_ascii_digit()).collect();
    let (cc, rest) = digits.split_at(digits.len().min(2));
    let pairs: Vec<String> = rest
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    format!("+{cc} {}", pairs.join(" "))
}

/// Every column of a record's archive row; with `formatted_phones`, phone numbers as
/// [`formatted`] shows them.
pub fn row(entity: &str, r: &Value, formatted_phones: bool) -> Map<String, Value> {
    let s = |k: &str| r.get(k).cloned().unwrap_or(Value::Null);
    let date = |k: &str| json!(r.get(k).and_then(Value::as_str).unwrap_or(""));
    let first = |k: &str| {
        json!(r
            .pointer(&format!("/{k}/0/Value"))
            .and_then(Value::as_str)
            .unwrap_or(""))
    };
    let phone = |k: &str| match first(k).as_str() {
        Some(n) if formatted_phones && !n.is_empty() => json!(formatted(n)),
        _ => first(k),
    };
    let person = entity == "Person";
    let id = s(if person { "PersonId" } else { "ContactId" });
    let mut out = Map::new();
    out.insert("PrimaryKey".into(), json!(id.to_string()));
    out.insert("EntityName".into(), json!(entity.to_lowercase()));
    let pairs: Vec<(&str, Value)> = if person {
        vec![
            ("personId", id),
            ("firstName", s("Firstname")),
            ("lastName", s("Lastname")),
            ("middleName", s("MiddleName")),
            ("title", s("Title")),
            (
                "contactId",
                json!(r
                    .pointer("/Contact/ContactId")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)),
            ),
            ("email/emailAddress", first("Emails")),
            ("personMobilePhone/formattedNumber", phone("MobilePhones")),
            ("personUpdatedDate", date("UpdatedDate")),
            ("personRegisteredDate", date("CreatedDate")),
        ]
    } else {
        vec![
            ("contactId", id),
            ("name", s("Name")),
            ("department", s("Department")),
            ("orgnr", s("OrgNr")),
            ("url/URLAddress", first("Urls")),
            ("email/emailAddress", first("Emails")),
            ("phone/formattedNumber", phone("Phones")),
            ("updatedDate", date("UpdatedDate")),
            ("registeredDate", date("CreatedDate")),
        ]
    };
    out.extend(pairs.into_iter().map(|(k, v)| (k.to_string(), v)));
    let (udef, extra) = prefixes(entity);
    for (k, v) in r
        .get("CustomFields")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let column = if k.starts_with("x_") {
            format!("{extra}{k}")
        } else {
            format!("{udef}{k}")
        };
        out.insert(column, display(v));
    }
    out
}

/// The archive's primary key column.
pub fn key(entity: &str) -> &'static str {
    if entity == "Person" {
        "personId"
    } else {
        "contactId"
    }
}

fn prefixes(entity: &str) -> (&'static str, &'static str) {
    if entity == "Person" {
        ("personUdef/", "personExtra/")
    } else {
        ("contactUdef/", "contactExtra/")
    }
}

/// Whether the archive has `column` (user-defined and extra fields by prefix: which ones a
/// tenant defines is its own).
fn known(entity: &str, column: &str) -> bool {
    let (udef, extra) = prefixes(entity);
    column.starts_with(udef)
        || column.starts_with(extra)
        || row(entity, &json!({}), false).contains_key(column)
}

impl Query {
    /// Reads `$select`, `$filter`, `$orderBy`, `$top` and `$skip`; `Err` says what the
    /// tenant would refuse.
    pub fn parse(
        entity: &str,
        q: &HashMap<String, String>,
        allow_or: bool,
    ) -> Result<Query, String> {
        let select = q.get("$select").map(|s| {
            s.split(',')
                .map(|c| c.trim().to_string())
                .collect::<Vec<_>>()
        });
        for c in select.iter().flatten() {
            if !known(entity, c) {
                return Err(format!("unknown column {c:?} in $select"));
            }
        }
        let filter = match q.get("$filter") {
            Some(f) => {
                let tokens = tokens(f)?;
                let mut p = Parser {
                    tokens,
                    at: 0,
                    entity,
                    allow_or,
                };
                let e = p.or_expr()?;
                if p.at < p.tokens.len() {
                    return Err(format!(
                        "cannot parse $filter {f:?} from {:?}",
                        p.tokens[p.at]
                    ));
                }
                Some(e)
            }
            None => None,
        };
        let order = match q.get("$orderBy") {
            Some(o) => {
                let (col, desc) = match o.split_once(' ') {
                    Some((c, dir)) => (c.to_string(), dir.eq_ignore_ascii_case("desc")),
                    None => (o.clone(), false),
                };
                if !known(entity, &col) {
                    return Err(format!("unknown column {col:?} in $orderBy"));
                }
                Some((col, desc))
            }
            None => None,
        };
        let num = |k: &str, d: usize| {
            q.get(k)
                .map_or(Ok(d), |v| v.parse::<usize>())
                .map_err(|_| "$top and $skip must be whole numbers".to_string())
        };
        Ok(Query {
            select,
            filter,
            order,
            top: num("$top", usize::MAX)?,
            skip: num("$skip", 0)?,
        })
    }

    /// The page of rows, and where the next page starts when there is one.
    /// The smallest primary key the answer can hold when the query asks for rows in
    /// ascending primary-key order past a key (`… and contactId gt N`, `$orderBy=contactId`):
    /// records in key order from there give the same page without reading the rest.
    pub fn keyset_start(&self, key: &str) -> Option<i64> {
        if self.order.as_ref() != Some(&(key.to_string(), false)) || self.skip != 0 {
            return None;
        }
        let past = |e: &Expr| match e {
            Expr::Clause(c, Op::Gt(n)) if c == key => Some(*n as i64 + 1),
            _ => None,
        };
        Some(match &self.filter {
            Some(Expr::And(all)) => all.iter().find_map(past).unwrap_or(0),
            Some(e) => past(e).unwrap_or(0),
            None => 0,
        })
    }

    /// The page of rows, and where the next page starts when there is one. With
    /// `in_order`, `records` come in the order the query asks for (see
    /// [`Query::keyset_start`]) and are read only as far as the page needs.
    pub fn answer<'a>(
        &self,
        entity: &str,
        records: impl Iterator<Item = &'a Value>,
        formatted_phones: bool,
        in_order: bool,
    ) -> (Vec<Value>, Option<usize>) {
        let matching = records
            .map(|r| row(entity, r, formatted_phones))
            .filter(|r| self.filter.as_ref().is_none_or(|f| holds(f, r)));
        let mut rows: Vec<Map<String, Value>> = if in_order {
            matching
                .take(self.skip.saturating_add(self.top).saturating_add(1))
                .collect()
        } else {
            matching.collect()
        };
        if let (Some((col, desc)), false) = (&self.order, in_order) {
            rows.sort_by(|a, b| {
                let ord = compare(a.get(col), b.get(col));
                if *desc {
                    ord.reverse()
                } else {
                    ord
                }
            });
        }
        let total = rows.len();
        let page = rows
            .into_iter()
            .skip(self.skip)
            .take(self.top)
            .map(|mut r| {
                if let Some(cols) = &self.select {
                    let mut kept = Map::new();
                    for key in ["PrimaryKey", "EntityName"] {
                        kept.insert(key.into(), r.remove(key).unwrap_or(Value::Null));
                    }
                    for c in cols {
                        kept.insert(c.clone(), r.remove(c).unwrap_or(json!("")));
                    }
                    r = kept;
                }
                Value::Object(r)
            })
            .collect();
        let end = self.skip.saturating_add(self.top);
        (page, (self.top != usize::MAX && end < total).then_some(end))
    }
}

/// Numbers by value; text (ISO dates included) by its text.
fn compare(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    match (a.and_then(Value::as_f64), b.and_then(Value::as_f64)) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        _ => {
            let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
            text(a).cmp(&text(b))
        }
    }
}

fn holds(e: &Expr, row: &Map<String, Value>) -> bool {
    match e {
        Expr::And(all) => all.iter().all(|e| holds(e, row)),
        Expr::Or(any) => any.iter().any(|e| holds(e, row)),
        Expr::Clause(col, op) => {
            let v = row.get(col);
            let when = || v.and_then(Value::as_str).and_then(parse_date);
            let num = || v.and_then(|v| v.as_f64().or_else(|| v.as_str()?.parse().ok()));
            match op {
                Op::After(t) => when().is_some_and(|d| d > *t),
                Op::Before(t) => when().is_some_and(|d| d < *t),
                Op::Eq(x) => same(v, x),
                Op::Ne(x) => !same(v, x),
                Op::Gt(x) => num().is_some_and(|n| n > *x),
                Op::Ge(x) => num().is_some_and(|n| n >= *x),
                Op::Lt(x) => num().is_some_and(|n| n < *x),
                Op::Le(x) => num().is_some_and(|n| n <= *x),
            }
        }
    }
}

fn same(v: Option<&Value>, x: &Value) -> bool {
    match (v, x) {
        (Some(Value::String(s)), Value::String(t)) => s.eq_ignore_ascii_case(t),
        (Some(a), b) => a.as_f64().is_some() && a.as_f64() == b.as_f64(),
        _ => false,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Open,
    Close,
    Word(String),
    Text(String),
}

fn tokens(f: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut chars = f.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            ' ' => {
                chars.next();
            }
            '(' | ')' => {
                chars.next();
                out.push(if c == '(' { Tok::Open } else { Tok::Close });
            }
            '\'' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some('\'') if chars.peek() == Some(&'\'') => {
                            chars.next();
                            s.push('\'');
                        }
                        Some('\'') => break,
                        Some(c) => s.push(c),
                        None => return Err(format!("unclosed quote in $filter {f:?}")),
                    }
                }
                out.push(Tok::Text(s));
            }
            _ => {
                let mut w = String::new();
                while let Some(&c) = chars.peek() {
                    if c == ' ' || c == '(' || c == ')' || c == '\'' {
                        break;
                    }
                    w.push(c);
                    chars.next();
                }
                out.push(Tok::Word(w));
            }
        }
    }
    Ok(out)
}

struct Parser<'a> {
    tokens: Vec<Tok>,
    at: usize,
    entity: &'a str,
    allow_or: bool,
}

impl Parser<'_> {
    fn next(&mut self) -> Option<Tok> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn peek_word(&self, w: &str) -> bool {
        matches!(self.tokens.get(self.at), Some(Tok::Word(x)) if x == w)
    }

    fn or_expr(&mut self) -> Result<Expr, String> {
        let mut any = vec![self.and_expr()?];
        while self.peek_word("or") {
            if !self.allow_or {
                return Err("`or` is not supported in $filter".into());
            }
            self.at += 1;
            any.push(self.and_expr()?);
        }
        Ok(if any.len() == 1 {
            any.remove(0)
        } else {
            Expr::Or(any)
        })
    }

    fn and_expr(&mut self) -> Result<Expr, String> {
        let mut all = vec![self.factor()?];
        while self.peek_word("and") {
            self.at += 1;
            all.push(self.factor()?);
        }
        Ok(if all.len() == 1 {
            all.remove(0)
        } else {
            Expr::And(all)
        })
    }

    fn factor(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Tok::Open) if !self.allow_or => {
                Err("parentheses are not supported in $filter".into())
            }
            Some(Tok::Open) => {
                let e = self.or_expr()?;
                match self.next() {
                    Some(Tok::Close) => Ok(e),
                    _ => Err("unbalanced parentheses in $filter".into()),
                }
            }
            Some(Tok::Word(col)) => self.clause(col),
            other => Err(format!("expected a column in $filter, found {other:?}")),
        }
    }

    fn clause(&mut self, col: String) -> Result<Expr, String> {
        if !known(self.entity, &col) {
            return Err(format!("unknown column {col:?} in $filter"));
        }
        let op = match self.next() {
            Some(Tok::Word(op)) => op,
            other => return Err(format!("expected an operator after {col}, found {other:?}")),
        };
        let value = match self.next() {
            Some(Tok::Text(s)) => Value::String(s),
            Some(Tok::Word(w)) => w
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| {
                    format!("the value {w:?} after {col} {op} must be a number or quoted")
                })?,
            other => {
                return Err(format!(
                    "expected a value after {col} {op}, found {other:?}"
                ))
            }
        };
        let text = value.as_str().unwrap_or_default().to_string();
        let number = || {
            value
                .as_f64()
                .ok_or_else(|| format!("{col} {op} takes a number, not {value}"))
        };
        let op = match op.as_str() {
            // The date operators compare dates and take a date; times take the DateTime
            // operators (`date after '2020-05-28'`, `afterTime '2020-05-28T15:00:01'`).
            "after" | "before" => {
                let d = NaiveDate::parse_from_str(&text, "%Y-%m-%d").map_err(|_| {
                    format!("{op} takes a date (yyyy-mm-dd), not {text:?}; use {op}Time for a time")
                })?;
                let start = d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
                if op == "after" {
                    Op::After(start + chrono::Duration::days(1) - chrono::Duration::seconds(1))
                } else {
                    Op::Before(start)
                }
            }
            "afterTime" | "beforeTime" => {
                let t =
                    parse_date(&text).ok_or_else(|| format!("{text:?} is not a date and time"))?;
                if op == "afterTime" {
                    Op::After(t)
                } else {
                    Op::Before(t)
                }
            }
            // `is`/`isNot` on text (`strings.md`); `eq` on numbers (`numbers.md`) and, in
            // the Swagger's example, on text.
            "eq" | "=" | "equals" | "is" => Op::Eq(value),
            "ne" | "unequals" | "isNot" => Op::Ne(value),
            "gt" | "greater" => Op::Gt(number()?),
            "ge" => Op::Ge(number()?),
            "lt" | "less" => Op::Lt(number()?),
            "le" => Op::Le(number()?),
            other => return Err(format!("unsupported operator {other:?} in $filter")),
        };
        Ok(Expr::Clause(col, op))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn filters_with_or_parentheses_and_keyset() {
        let recs = [
            json!({"ContactId": 1, "Name": "A", "UpdatedDate": "", "CreatedDate": "2024-05-01T10:00:00"}),
            json!({"ContactId": 2, "Name": "B", "UpdatedDate": "2024-05-02T10:00:00", "CreatedDate": "2024-04-01T10:00:00"}),
            json!({"ContactId": 3, "Name": "C", "UpdatedDate": "", "CreatedDate": "2024-04-01T10:00:00"}),
        ];
        let f = "(updatedDate afterTime '2024-04-30T00:00:00' or registeredDate afterTime '2024-04-30T00:00:00') and contactId gt 1";
        let query = Query::parse(
            "Contact",
            &q(&[
                ("$filter", f),
                ("$orderBy", "contactId"),
                ("$select", "contactId,name"),
            ]),
            true,
        )
        .unwrap();
        let (rows, more) = query.answer("Contact", recs.iter(), false, false);
        assert_eq!(
            rows,
            vec![json!({"PrimaryKey": "2", "EntityName": "contact", "contactId": 2, "name": "B"})]
        );
        assert_eq!(more, None);
        let refused = Query::parse("Contact", &q(&[("$filter", f)]), false).unwrap_err();
        assert!(refused.contains("not supported"), "{refused}");
        for bad in [
            "updatedDate after '2024-04-30T00:00:00'",
            "nope eq 1",
            "contactId gt 'x'",
            "name eq",
        ] {
            assert!(
                Query::parse("Contact", &q(&[("$filter", bad)]), true).is_err(),
                "{bad}"
            );
        }
        assert!(Query::parse("Contact", &q(&[("$select", "contactId,bogus")]), true).is_err());
    }
}
