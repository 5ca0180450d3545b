//! The customer payload of the integration contract: a user id and typed traits.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One customer to identify: the payload of the integration contract.
///
/// Converts into [`IdentifyParams`](crate::IdentifyParams) with `From`, so it
/// can be handed to any [`SegmentClient`](crate::SegmentClient).
///
/// # Example
/// ```
/// use segment_client::{SegmentIdentifyPayload, UserTraits};
///
/// let payload = SegmentIdentifyPayload {
///     user_id: "cus_123".into(),
///     traits: UserTraits {
///         email: Some("ada@example.com".into()),
///         first_name: Some("Ada".into()),
///         ..UserTraits::default()
///     },
/// };
/// let json = serde_json::to_string(&payload).unwrap();
/// assert_eq!(json, r#"{"userId":"cus_123","traits":{"email":"ada@example.com","firstName":"Ada"}}"#);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SegmentIdentifyPayload {
    /// The customer's id in your system; Segment's `userId`. Must not be empty.
    pub user_id: String,
    /// What is known about the customer.
    #[serde(default)]
    pub traits: UserTraits,
}

/// Identify traits: Segment's reserved traits as typed fields, anything else in
/// [`custom`](Self::custom).
///
/// Serialises to Segment's wire form (`firstName`, `createdAt`, nested
/// `address` and `company`); fields that are `None` are left out, which tells
/// Segment to keep the value it has. To unset a trait downstream, put
/// `null` under its wire name in `custom` (for a reserved trait, leave its typed
/// field `None`; setting both is refused as `invalid_payload`).
///
/// # Example
/// ```
/// use segment_client::{Address, UserTraits};
///
/// let mut traits = UserTraits {
///     email: Some("ada@example.com".into()),
///     address: Some(Address { city: Some("London".into()), ..Address::default() }),
///     ..UserTraits::default()
/// };
/// traits.custom.insert("plan".into(), "pro".into());
/// traits.custom.insert("phone".into(), serde_json::Value::Null); // unset downstream
/// let json = serde_json::to_value(&traits).unwrap();
/// assert_eq!(json["address"]["city"], "London");
/// assert_eq!(json["plan"], "pro");
/// assert!(json["phone"].is_null());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserTraits {
    /// Street address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
    /// Age in years.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age: Option<u32>,
    /// URL of an avatar image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    /// Date of birth, sent as ISO-8601 UTC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub birthday: Option<DateTime<Utc>>,
    /// The company the customer belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub company: Option<Company>,
    /// When the customer's account was created, sent as ISO-8601 UTC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    /// Free-text description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Email address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// First name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    /// Gender.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gender: Option<String>,
    /// Unique id in your database (Segment's `id` trait).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Last name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// Full name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Phone number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Job title.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Username.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Website URL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub website: Option<String>,
    /// Every other trait, by its wire name. A `null` value unsets the trait downstream.
    #[serde(flatten)]
    pub custom: Map<String, Value>,
}

/// The wire names of Segment's reserved identify traits.
pub const RESERVED_TRAITS: [&str; 17] = [
    "address",
    "age",
    "avatar",
    "birthday",
    "company",
    "createdAt",
    "description",
    "email",
    "firstName",
    "gender",
    "id",
    "lastName",
    "name",
    "phone",
    "title",
    "username",
    "website",
];

impl UserTraits {
    /// The wire names of the reserved traits that are set (not `None`).
    pub(crate) fn set_reserved(&self) -> impl Iterator<Item = &'static str> + '_ {
        let set = [
            self.address.is_some(),
            self.age.is_some(),
            self.avatar.is_some(),
            self.birthday.is_some(),
            self.company.is_some(),
            self.created_at.is_some(),
            self.description.is_some(),
            self.email.is_some(),
            self.first_name.is_some(),
            self.gender.is_some(),
            self.id.is_some(),
            self.last_name.is_some(),
            self.name.is_some(),
            self.phone.is_some(),
            self.title.is_some(),
            self.username.is_some(),
            self.website.is_some(),
        ];
        RESERVED_TRAITS
            .into_iter()
            .zip(set)
            .filter_map(|(name, is_set)| is_set.then_some(name))
    }
}

/// Segment's reserved `address` trait.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Address {
    /// City.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// Country.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// Postal or ZIP code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    /// State or region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Street.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub street: Option<String>,
}

/// Segment's reserved `company` trait.
///
/// Segment spells `employee_count` in snake_case on the wire, unlike the other traits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Company {
    /// Company name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Company id in your system.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Industry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub industry: Option<String>,
    /// Number of employees.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub employee_count: Option<u64>,
    /// Plan the company is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn wire_form_is_camel_case_with_nested_objects() {
        let traits = UserTraits {
            first_name: Some("Ada".into()),
            created_at: Some(Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()),
            birthday: Some(Utc.with_ymd_and_hms(1815, 12, 10, 0, 0, 0).unwrap()),
            address: Some(Address {
                postal_code: Some("N1".into()),
                ..Address::default()
            }),
            company: Some(Company {
                employee_count: Some(12),
                ..Company::default()
            }),
            ..UserTraits::default()
        };
        let json = serde_json::to_value(&traits).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "address": {"postalCode": "N1"},
                "birthday": "1815-12-10T00:00:00Z",
                "company": {"employee_count": 12},
                "createdAt": "2024-05-01T12:00:00Z",
                "firstName": "Ada",
            })
        );
    }

    #[test]
    fn round_trips_with_custom_traits() {
        let json =
            r#"{"userId":"u1","traits":{"email":"a@b.c","plan":"pro","score":3,"lastName":null}}"#;
        let payload: SegmentIdentifyPayload = serde_json::from_str(json).unwrap();
        assert_eq!(payload.traits.email.as_deref(), Some("a@b.c"));
        assert_eq!(payload.traits.custom["plan"], "pro");
        assert_eq!(payload.traits.custom["score"], 3);
        let back = serde_json::to_value(&payload).unwrap();
        assert_eq!(back["traits"]["plan"], "pro");
    }

    #[test]
    fn set_reserved_lists_wire_names() {
        let traits = UserTraits {
            email: Some("x".into()),
            created_at: Some(Utc::now()),
            ..UserTraits::default()
        };
        assert_eq!(
            traits.set_reserved().collect::<Vec<_>>(),
            ["createdAt", "email"]
        );
    }
}
