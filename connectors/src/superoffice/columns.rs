//! Which archive columns of SuperOffice's OData lists carry which entity fields, so a
//! listing `$select`s what the connection's mappings read and yields records from the
//! rows, with no read per record.
//!
//! `GET /api/v1/Contact` lists the SimpleContact archive and `GET /api/v1/Person` the
//! Person archive (Swagger-v1-Contact.json and Swagger-v1-Person.json, the operations'
//! descriptions); their columns are in `specs/superoffice/archive-providers/`
//! `simplecontact.md` and `person.md`. A SLIM row is keyed by the selected column names
//! and carries `PrimaryKey` (text) and `EntityName`; ints are JSON numbers and dates ISO
//! text in UTC (SuperOfficeDocs `en/api/web-services/howto/company/get-all-contacts-rest.md`,
//! `en/api/tutorials/native-app-quickstart.md`, `en/api/search/odata/index.md`
//! "$output": "Dates are always returned as ISO strings"; the archive pages: "updated in UTC").

use ferry_framework::mapping::path::{Path, Seg};
use serde_json::{Map, Value};

use super::values;

/// One OData archive list and the entity it lists.
#[derive(Debug)]
pub struct Archive {
    /// The list's path under the tenant's API: `v1/Contact`.
    pub path: &'static str,
    /// The primary key column (`contactId`): the listing's order and keyset.
    pub key: &'static str,
    /// The entity's id field (`ContactId`).
    pub id_field: &'static str,
    /// When the record was last updated, in UTC (empty, maybe, until first edited).
    pub updated: &'static str,
    /// When the record was registered, in UTC.
    pub registered: &'static str,
    /// Columns every listing selects besides the mapped ones: shown as the record's name.
    pub names: &'static [&'static str],
    /// Single fields: (entity field, column).
    scalars: &'static [(&'static str, &'static str)],
    /// The first item's `Value` of an entity list: (entity list, column).
    first_items: &'static [(&'static str, &'static str)],
    /// A reference: (entity field, its id field, column).
    reference: Option<(&'static str, &'static str, &'static str)>,
    /// User-defined field columns are `<udef><ProgId or SuperOffice:N>`.
    udef: &'static str,
    /// Extra (database) field columns are `<extra><x_name>`.
    extra: &'static str,
}

/// SimpleContact (`simplecontact.md`).
pub const CONTACT: Archive = Archive {
    path: "v1/Contact",
    key: "contactId",
    id_field: "ContactId",
    updated: "updatedDate",
    registered: "registeredDate",
    names: &["name"],
    scalars: &[
        ("Name", "name"),
        ("Department", "department"),
        ("OrgNr", "orgnr"),
    ],
    first_items: &[
        ("Urls", "url/URLAddress"),
        ("Emails", "email/emailAddress"),
        ("Phones", "phone/formattedNumber"),
    ],
    reference: None,
    udef: "contactUdef/",
    extra: "contactExtra/",
};

/// Person (`person.md`).
pub const PERSON: Archive = Archive {
    path: "v1/Person",
    key: "personId",
    id_field: "PersonId",
    updated: "personUpdatedDate",
    registered: "personRegisteredDate",
    names: &["firstName", "lastName"],
    scalars: &[
        ("Firstname", "firstName"),
        ("Lastname", "lastName"),
        ("MiddleName", "middleName"),
        ("Title", "title"),
    ],
    first_items: &[
        ("Emails", "email/emailAddress"),
        ("MobilePhones", "personMobilePhone/formattedNumber"),
    ],
    reference: Some(("Contact", "ContactId", "contactId")),
    udef: "personUdef/",
    extra: "personExtra/",
};

/// The archive that lists `external_entity` (`Person`, else `Contact`).
pub fn archive(external_entity: &str) -> &'static Archive {
    match external_entity {
        "Person" => &PERSON,
        _ => &CONTACT,
    }
}

/// What a listing asks for and how its rows become records.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `$select`: the key, both dates, the names and a column per mapped field.
    pub select: Vec<String>,
    /// (mapped field, column) pairs the rows carry.
    carried: Vec<(Path, String)>,
    /// Fields the mappings read that no column carries: each listed record is read whole.
    pub uncarried: Vec<String>,
}

impl Archive {
    /// The column that carries `path`, if any.
    pub fn column(&self, path: &Path) -> Option<String> {
        fn key(s: &Seg) -> Option<&str> {
            match s {
                Seg::Key(k) => Some(k.as_str()),
                Seg::Index(_) => None,
            }
        }
        match path.0.as_slice() {
            [a] => {
                let a = key(a)?;
                if a == self.id_field {
                    return Some(self.key.into());
                }
                self.scalars
                    .iter()
                    .find(|(f, _)| *f == a)
                    .map(|(_, c)| c.to_string())
            }
            [a, Seg::Index(0), b] if key(b) == Some("Value") => {
                let a = key(a)?;
                self.first_items
                    .iter()
                    .find(|(f, _)| *f == a)
                    .map(|(_, c)| c.to_string())
            }
            [a, b] => {
                let (a, b) = (key(a)?, key(b)?);
                match self.reference {
                    Some((f, id, column)) if f == a && id == b => return Some(column.into()),
                    _ => {}
                }
                match a {
                    "UserDefinedFields" | "CustomFields" if b.starts_with("SuperOffice:") => {
                        Some(format!("{}{b}", self.udef))
                    }
                    "CustomFields" if b.starts_with("x_") => Some(format!("{}{b}", self.extra)),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// The listing plan for the fields the connection's mappings read.
    pub fn plan(&self, reads: &[Path]) -> Plan {
        let mut select: Vec<String> = [self.key, self.updated, self.registered]
            .iter()
            .chain(self.names)
            .map(|c| c.to_string())
            .collect();
        let mut carried = Vec::new();
        let mut uncarried = Vec::new();
        for p in reads {
            match self.column(p) {
                Some(c) => {
                    if !select.contains(&c) {
                        select.push(c.clone());
                    }
                    carried.push((p.clone(), c));
                }
                None => uncarried.push(p.to_string()),
            }
        }
        // The names make the record's display name even when no mapping reads them.
        for (f, c) in self.scalars.iter().filter(|(_, c)| self.names.contains(c)) {
            if !carried.iter().any(|(_, have)| have == c) {
                carried.push((Path(vec![Seg::Key(f.to_string())]), c.to_string()));
            }
        }
        Plan {
            select,
            carried,
            uncarried,
        }
    }

    /// The plan when what the mappings read is not known: rows give ids and dates, and
    /// each record is read whole.
    pub fn plan_whole(&self) -> Plan {
        let mut plan = self.plan(&[]);
        plan.uncarried.push("(the whole record)".into());
        plan
    }

    /// A record as the entity would hold the fields `plan` carries, from one list row;
    /// `Err` (naming the list) when the row is not an object or has no key.
    pub fn record_of(&self, plan: &Plan, row: &Value) -> Result<Value, String> {
        let fields = row.as_object().ok_or_else(|| {
            let shown: String = row.to_string().chars().take(200).collect();
            format!("{}: a row is not an object: {shown}", self.path)
        })?;
        self.record(plan, fields)
            .map_err(|e| format!("{}: {e}", self.path))
    }

    /// A record as the entity would hold the fields `plan` carries, from one list row;
    /// `Err` when the row has no key.
    pub fn record(&self, plan: &Plan, row: &Map<String, Value>) -> Result<Value, String> {
        let id = row
            .get(self.key)
            .filter(|v| v.is_number() || v.as_str().is_some_and(|s| !s.is_empty()))
            .or_else(|| row.get("PrimaryKey"))
            .cloned()
            .ok_or_else(|| format!("a row has no {} and no PrimaryKey", self.key))?;
        let mut rec = Map::new();
        rec.insert(self.id_field.into(), id);
        for (column, field) in [
            (self.updated, "UpdatedDate"),
            (self.registered, "CreatedDate"),
        ] {
            if let Some(d) = row.get(column).and_then(Value::as_str) {
                if !d.is_empty() {
                    rec.insert(field.into(), Value::String(d.into()));
                }
            }
        }
        let mut rec = Value::Object(rec);
        for (path, column) in &plan.carried {
            if let Some(v) = self.value(path, row.get(column)) {
                path.set(&mut rec, v);
            }
        }
        Ok(rec)
    }

    /// A row's value as the entity holds it at `path`: `None` where the entity would have
    /// nothing (no first e-mail, no company).
    fn value(&self, path: &Path, v: Option<&Value>) -> Option<Value> {
        let v = v.filter(|v| !v.is_null())?;
        let root = path.root();
        let is_item = path.0.iter().any(|s| matches!(s, Seg::Index(_)));
        if is_item && v.as_str() == Some("") {
            return None;
        }
        if self.reference.is_some_and(|(f, _, _)| f == root) {
            return match v {
                Value::Number(n) if n.as_i64() == Some(0) => None,
                Value::String(s) if s.is_empty() || s == "0" => None,
                Value::String(s) => s.parse::<i64>().ok().map(Value::from),
                other => Some(other.clone()),
            };
        }
        if values::ENCODED_MAPS.contains(&root) {
            if let Value::String(s) = v {
                return Some(values::decode(s));
            }
        }
        Some(v.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn p(s: &str) -> Path {
        Path::parse(s, &BTreeMap::new()).unwrap()
    }

    #[test]
    fn the_shipped_mappings_are_carried_by_the_lists() {
        let contact = [
            "Name",
            "OrgNr",
            "Department",
            "Urls[0].Value",
            "Emails[0].Value",
            "Phones[0].Value",
            "CustomFields[\"SuperOffice:1\"]",
        ];
        let plan = CONTACT.plan(&contact.map(p));
        assert!(plan.uncarried.is_empty(), "{:?}", plan.uncarried);
        assert!(plan
            .select
            .contains(&"contactUdef/SuperOffice:1".to_string()));
        let person = [
            "Firstname",
            "Lastname",
            "Emails[0].Value",
            "Title",
            "MobilePhones[0].Value",
            "Contact.ContactId",
        ];
        let plan = PERSON.plan(&person.map(p));
        assert!(plan.uncarried.is_empty(), "{:?}", plan.uncarried);
        let plan = PERSON.plan(&[p("Emails[1].Value"), p("Address")]);
        assert_eq!(plan.uncarried, ["Emails[1].Value", "Address"]);
    }

    #[test]
    fn rows_become_records_shaped_like_the_entity() {
        let plan = PERSON.plan(&[
            p("Firstname"),
            p("Emails[0].Value"),
            p("MobilePhones[0].Value"),
            p("Contact.ContactId"),
            p("UserDefinedFields[\"SuperOffice:3\"]"),
        ]);
        let row = json!({
            "PrimaryKey": "7", "EntityName": "person", "personId": 7, "firstName": "Ada",
            "lastName": "Byron", "email/emailAddress": "", "personMobilePhone/formattedNumber":
            "+47 900", "contactId": 0, "personUdef/SuperOffice:3": "[I:5]",
            "personUpdatedDate": "", "personRegisteredDate": "2024-05-01T10:00:00",
        });
        let rec = PERSON.record(&plan, row.as_object().unwrap()).unwrap();
        assert_eq!(
            rec,
            json!({
                "PersonId": 7, "CreatedDate": "2024-05-01T10:00:00", "Firstname": "Ada",
                "Lastname": "Byron", "MobilePhones": [{"Value": "+47 900"}],
                "UserDefinedFields": {"SuperOffice:3": 5},
            })
        );
        let bad = PERSON.record(&plan, json!({"firstName": "x"}).as_object().unwrap());
        assert!(bad.is_err());
    }
}
