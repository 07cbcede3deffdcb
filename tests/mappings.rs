//! Every shipped mapping loads against the hub model and its connector, and round-trips:
//! `to_hub(to_external(h)) == h` on its invertible rules.

use std::collections::BTreeMap;
use std::path::Path;

use ferry_framework::connector::registry;
use ferry_framework::hub::{FieldType, HubModel};
use ferry_framework::mapping::{Mapping, RefResolver};
use proptest::prelude::*;
use serde_json::{json, Value};

/// A bijection between hub ids `h<n>` and external ids `<n>`.
struct Ids;
impl RefResolver for Ids {
    fn hub_id(&self, _: &str, ext: &str) -> Option<String> {
        Some(format!("h{ext}"))
    }
    fn external_id(&self, _: &str, hub: &str) -> Option<String> {
        hub.strip_prefix('h').map(str::to_string)
    }
}

fn shipped() -> Vec<(String, Mapping)> {
    ferry_connectors::link();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let hub = HubModel::load(&repo.join("config/hub.yml")).unwrap();
    let mut out = Vec::new();
    for c in registry() {
        for entity in c.entities() {
            for e in entity.parts() {
                let m =
                    Mapping::load_for(&repo.join("mappers"), c.name(), e, &hub, &BTreeMap::new())
                        .unwrap();
                out.push((m.file.display().to_string(), m));
            }
        }
    }
    assert!(!out.is_empty());
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn shipped_mappings_round_trip(seed in proptest::collection::vec("[a-z0-9]{1,12}", 16), n in 1u32..100000) {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let hub = HubModel::load(&repo.join("config/hub.yml")).unwrap();
        for (file, m) in shipped() {
            let fields = m.invertible_hub_fields();
            let mut h = json!({});
            for (i, (path, reference)) in fields.iter().enumerate() {
                let kind = hub.field(&m.hub_entity, std::slice::from_ref(path)).map(|f| f.kind);
                let v = match (reference, kind) {
                    (Some(_), _) => Value::String(format!("h{n}")),
                    (_, Some(FieldType::Integer)) => json!(n),
                    _ => Value::String(seed[i % seed.len()].clone()),
                };
                h[path.as_str()] = v;
            }
            let ext = m.to_external(&h, &Ids).unwrap();
            let back = m.to_hub(&ext, &Ids).unwrap();
            for (path, _) in &fields {
                prop_assert_eq!(&back[path.as_str()], &h[path.as_str()], "{} field {}", file, path);
            }
        }
    }
}

#[test]
fn absent_never_overwrites_and_null_clears() {
    let (_, m) = shipped()
        .into_iter()
        .find(|(f, _)| f.ends_with("contact.yml"))
        .unwrap();
    let hub = m
        .to_hub(&json!({"Name": " Acme ", "OrgNr": null}), &Ids)
        .unwrap();
    assert_eq!(hub["name"], "Acme");
    assert_eq!(hub["org_number"], Value::Null);
    assert!(hub.get("website").is_none(), "absent stays absent: {hub}");
}

#[test]
fn the_industry_parameter_picks_the_user_defined_field() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let hub = HubModel::load(&repo.join("config/hub.yml")).unwrap();
    let c = registry()
        .into_iter()
        .find(|c| c.name() == "superoffice")
        .unwrap();
    let e = c
        .entities()
        .into_iter()
        .find(|e| e.name() == "organization")
        .unwrap();
    let e = &e.parts()[0];
    let params = BTreeMap::from([("industry_field".to_string(), "SuperOffice:7".to_string())]);
    let m = Mapping::load_for(&repo.join("mappers"), c.name(), e, &hub, &params).unwrap();
    let ext = m
        .to_external(&json!({"name": "X", "industry": "Shipping"}), &Ids)
        .unwrap();
    assert_eq!(ext["CustomFields"]["SuperOffice:7"], "Shipping");
}

#[test]
fn a_hub_record_that_breaks_the_model_is_refused_naming_the_field() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let hub = HubModel::load(&repo.join("config/hub.yml")).unwrap();
    let err = hub
        .validate(
            "Organization",
            "rec-1",
            &json!({"name": "A", "colour": "red"}),
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("rec-1") && err.to_string().contains("colour"),
        "{err}"
    );
    let err = hub
        .validate("Organization", "rec-2", &json!({"org_number": "1"}))
        .unwrap_err();
    assert!(err.to_string().contains("required field `name`"), "{err}");
    assert!(hub.validate("Person", "r", &json!({"email": 5})).is_err());
}
