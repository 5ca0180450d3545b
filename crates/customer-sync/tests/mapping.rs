//! The mapping stage end to end through the public API, on a realistic CRM
//! export header: once with the default rules, once with a complete mapping file.

use std::sync::Arc;

use customer_sync::mapping::{DuplicatePolicy, Mapping, MappingSpec, NullPolicy};
use customer_sync::{Field, FieldValue, Location, Record, RecordErrorKind};
use segment_client::Identity;
use serde_json::{Value, json};

const HEADER: [&str; 10] = [
    "Customer ID",
    "E-mail",
    "First Name",
    "Last Name",
    "signup_date",
    "zip",
    "company_name",
    "seats",
    "plan",
    "notes",
];

/// Records as a CSV source makes them: names shared with the header.
fn rows(rows: &[[&str; 10]]) -> Vec<Record> {
    let names: Vec<Arc<str>> = HEADER.iter().map(|&h| Arc::from(h)).collect();
    rows.iter()
        .enumerate()
        .map(|(i, row)| Record {
            location: Location::new("customers.csv", i as u64 + 2),
            fields: names
                .iter()
                .zip(row)
                .map(|(name, value)| Field {
                    name: Arc::clone(name),
                    value: FieldValue::Text((*value).into()),
                })
                .collect(),
        })
        .collect()
}

const ADA: [&str; 10] = [
    "C-1001",
    "ada@example.com",
    "Ada",
    "Lovelace",
    "2024-05-01 09:30:00",
    "N1 9GU",
    "Analytical Engines",
    "12",
    "pro",
    "met at conference",
];
const GRACE: [&str; 10] = [
    "C-1002",
    "grace@example.com",
    "Grace",
    "",
    "2024-05-02",
    "",
    "",
    "",
    "free",
    "",
];

#[test]
fn default_mapping_of_a_crm_export() {
    let mapping = Mapping::new(None, &HEADER).unwrap();
    let records = rows(&[ADA, GRACE]);

    let ada = mapping.apply(&records[0]).unwrap();
    assert_eq!(ada.identity, Identity::user("C-1001"));
    assert_eq!(
        Value::Object(ada.traits),
        json!({
            "email": "ada@example.com",
            "firstName": "Ada",
            "lastName": "Lovelace",
            "createdAt": "2024-05-01T09:30:00Z",
            "address": {"postalCode": "N1 9GU"},
            "company": {"name": "Analytical Engines"},
            "seats": "12",
            "plan": "pro",
            "notes": "met at conference",
        })
    );

    // Empty cells are left out, so Segment keeps what it has.
    let grace = mapping.apply(&records[1]).unwrap();
    assert_eq!(
        Value::Object(grace.traits),
        json!({
            "email": "grace@example.com",
            "firstName": "Grace",
            "createdAt": "2024-05-02T00:00:00Z",
            "plan": "free",
        })
    );
    assert_eq!(mapping.null_policy(), NullPolicy::Omit);
    assert_eq!(mapping.duplicates(), DuplicatePolicy::Last);
}

const MAPPING_FILE: &str = r#"
[identity]
user_id = "Customer ID"

[options]
unmapped = "custom"
null = "null"
duplicates = "first"

[columns]
"E-mail" = "email"
signup_date = { trait = "createdAt", type = "timestamp" }
zip = { trait = "address.postalCode", null = "omit" }
seats = { trait = "company.employee_count", type = "integer" }
plan = "company.plan"
notes = { drop = true }

[constants]
source = "crm-export"
company.industry = "computing"
"#;

#[test]
fn mapping_file_for_a_crm_export() {
    let spec = MappingSpec::from_toml(MAPPING_FILE).unwrap();
    assert_eq!(spec.duplicates(), DuplicatePolicy::First);
    let mapping = Mapping::new(Some(&spec), &HEADER).unwrap();
    assert_eq!(mapping.duplicates(), DuplicatePolicy::First);
    let records = rows(&[ADA, GRACE]);

    let ada = mapping.apply(&records[0]).unwrap();
    assert_eq!(ada.identity, Identity::user("C-1001"));
    assert_eq!(
        Value::Object(ada.traits),
        json!({
            "email": "ada@example.com",
            "firstName": "Ada",
            "lastName": "Lovelace",
            "createdAt": "2024-05-01T09:30:00Z",
            "address": {"postalCode": "N1 9GU"},
            "company": {
                "name": "Analytical Engines",
                "employee_count": 12,
                "plan": "pro",
                "industry": "computing",
            },
            "source": "crm-export",
        })
    );

    // `null = "null"` unsets empty traits, except zip, which omits.
    let grace = mapping.apply(&records[1]).unwrap();
    assert_eq!(
        Value::Object(grace.traits),
        json!({
            "email": "grace@example.com",
            "firstName": "Grace",
            "lastName": null,
            "createdAt": "2024-05-02T00:00:00Z",
            "company": {
                "name": null,
                "employee_count": null,
                "plan": "free",
                "industry": "computing",
            },
            "source": "crm-export",
        })
    );

    // The wire form, as the client will send it.
    let params = mapping.apply(&records[0]).unwrap().into_params();
    let wire = serde_json::to_value(&params.traits).unwrap();
    assert_eq!(wire["company"]["employee_count"], 12);
    assert_eq!(params.identity.user_id(), Some("C-1001"));
}

#[test]
fn record_errors_name_the_line_and_column() {
    let spec = MappingSpec::from_toml(MAPPING_FILE).unwrap();
    let mapping = Mapping::new(Some(&spec), &HEADER).unwrap();
    let mut bad_seats = ADA;
    bad_seats[7] = "a dozen";
    let mut no_id = ADA;
    no_id[0] = "";
    let mut bad_date = ADA;
    bad_date[4] = "next tuesday";
    let records = rows(&[bad_seats, no_id, bad_date]);

    let err = mapping.apply(&records[0]).unwrap_err();
    assert_eq!(err.kind, RecordErrorKind::InvalidValue);
    assert_eq!(
        err.to_string(),
        "customers.csv:2: field `seats`: \"a dozen\" is not an integer"
    );
    let err = mapping.apply(&records[1]).unwrap_err();
    assert_eq!(err.kind, RecordErrorKind::MissingIdentity);
    assert_eq!(
        err.to_string(),
        "customers.csv:3: field `Customer ID`: identity column `Customer ID` is empty"
    );
    let err = mapping.apply(&records[2]).unwrap_err();
    assert_eq!(err.field.as_deref(), Some("signup_date"));
    assert!(
        err.message
            .starts_with("\"next tuesday\" is not a timestamp")
    );
}

#[test]
fn printed_mapping_round_trips_for_default_and_file_mappings() {
    let spec = MappingSpec::from_toml(MAPPING_FILE).unwrap();
    for mapping in [
        Mapping::new(None, &HEADER).unwrap(),
        Mapping::new(Some(&spec), &HEADER).unwrap(),
    ] {
        let file = mapping.to_toml();
        let again = Mapping::new(Some(&MappingSpec::from_toml(&file).unwrap()), &HEADER).unwrap();
        assert_eq!(again.describe(), mapping.describe(), "{file}");
        assert_eq!(again.duplicates(), mapping.duplicates());
        for record in rows(&[ADA, GRACE]) {
            assert_eq!(
                again.apply(&record).unwrap(),
                mapping.apply(&record).unwrap()
            );
        }
    }
}

#[test]
fn mapping_file_errors_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mapping.toml");
    std::fs::write(
        &path,
        "[columns]\nseats = { trait = \"seats\", typ = \"integer\" }\n",
    )
    .unwrap();
    let err = MappingSpec::load(&path).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("{}:2:", path.display())),
        "{text}"
    );
    assert!(text.contains("unknown field `typ`"), "{text}");

    std::fs::write(&path, "[columns]\n\"Seats\" = \"seats\"\n").unwrap();
    let spec = MappingSpec::load(&path).unwrap();
    let err = Mapping::new(Some(&spec), &HEADER).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:2:11: column `Seats` is not in the header",
            path.display()
        )
    );
    assert_eq!(
        err.hint(),
        Some("the header has `seats`; names must match exactly")
    );
}
