//! The default rules: which column is the identity, and which trait a column
//! becomes, judged by its name alone.
//!
//! Names are compared after [`normalize`], so `First Name`, `first_name`,
//! `firstName` and `FIRST-NAME` are all the same column to these rules.

use super::ValueType;

/// A trait path: one segment per level of nesting (`address.city` is two).
///
/// Segments are kept whole, so a custom trait named after a column that
/// contains a dot (`a.b`) stays one top-level key.
pub(super) type TraitPath = Box<[Box<str>]>;

/// Splits a dotted path (`company.employee_count`) into segments.
pub(super) fn dotted(path: &str) -> TraitPath {
    path.split('.').map(Box::from).collect()
}

/// A one-segment path, for a custom trait named after its column.
pub(super) fn literal(name: &str) -> TraitPath {
    Box::new([Box::from(name)])
}

/// Joins a path with dots, for messages and mapping files.
pub(super) fn display(path: &[Box<str>]) -> String {
    path.join(".")
}

/// Lowercases and strips `_`, `-`, `.` and spaces: the form in which column
/// names are compared with the aliases below.
pub(super) fn normalize(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, '_' | '-' | '.' | ' '))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Column names that become `userId`, in priority order (the first present wins).
pub(super) const USER_ID_COLUMNS: &[&str] = &[
    "user_id",
    "customer_id",
    "id",
    "uid",
    "external_id",
    "account_id",
    "contact_id",
    "member_id",
];

/// Column names that become `anonymousId`.
pub(super) const ANONYMOUS_ID_COLUMNS: &[&str] = &["anonymous_id"];

/// The column in `columns` that the default rules pick from `candidates`:
/// the first candidate (in priority order) that some column matches.
pub(super) fn find_identity(columns: &[&str], candidates: &[&str]) -> Option<usize> {
    let normalized: Vec<String> = columns.iter().map(|c| normalize(c)).collect();
    candidates
        .iter()
        .find_map(|cand| normalized.iter().position(|n| *n == normalize(cand)))
}

/// Normalised column names and the reserved trait each becomes.
///
/// Kept as a flat table rather than a map: it is only consulted when a
/// mapping is built (and for record keys not in the header), never per value.
pub(super) const RESERVED_ALIASES: &[(&str, &str)] = &[
    ("firstname", "firstName"),
    ("givenname", "firstName"),
    ("lastname", "lastName"),
    ("surname", "lastName"),
    ("familyname", "lastName"),
    ("email", "email"),
    ("emailaddress", "email"),
    ("phone", "phone"),
    ("phonenumber", "phone"),
    ("name", "name"),
    ("fullname", "name"),
    ("title", "title"),
    ("jobtitle", "title"),
    ("username", "username"),
    ("website", "website"),
    ("avatar", "avatar"),
    ("avatarurl", "avatar"),
    ("description", "description"),
    ("gender", "gender"),
    ("age", "age"),
    ("birthday", "birthday"),
    ("birthdate", "birthday"),
    ("dateofbirth", "birthday"),
    ("dob", "birthday"),
    ("createdat", "createdAt"),
    ("signupdate", "createdAt"),
    ("signedupat", "createdAt"),
    ("id", "id"),
    ("street", "address.street"),
    ("streetaddress", "address.street"),
    ("address", "address.street"),
    ("addressstreet", "address.street"),
    ("city", "address.city"),
    ("addresscity", "address.city"),
    ("state", "address.state"),
    ("addressstate", "address.state"),
    ("postalcode", "address.postalCode"),
    ("postcode", "address.postalCode"),
    ("zip", "address.postalCode"),
    ("zipcode", "address.postalCode"),
    ("addresspostalcode", "address.postalCode"),
    ("addresszip", "address.postalCode"),
    ("addresszipcode", "address.postalCode"),
    ("country", "address.country"),
    ("addresscountry", "address.country"),
    ("company", "company.name"),
    ("companyname", "company.name"),
    ("companyid", "company.id"),
    ("industry", "company.industry"),
    ("companyindustry", "company.industry"),
    ("employeecount", "company.employee_count"),
    ("companyemployeecount", "company.employee_count"),
    ("companyplan", "company.plan"),
];

/// The reserved trait a column called `name` becomes, if any.
pub(super) fn reserved_trait(name: &str) -> Option<&'static str> {
    let key = normalize(name);
    RESERVED_ALIASES
        .iter()
        .find(|(alias, _)| *alias == key)
        .map(|(_, path)| *path)
}

/// The trait path the default rules give a column: its reserved trait, else a
/// custom trait under the column's own name.
pub(super) fn default_path(name: &str) -> TraitPath {
    reserved_trait(name).map_or_else(|| literal(name), dotted)
}

/// The type Segment expects for a reserved trait path; `None` for custom
/// traits, whose values are sent as the source gave them.
pub(super) fn implied_type(path: &[Box<str>]) -> Option<ValueType> {
    let segments: Vec<&str> = path.iter().map(|s| &**s).collect();
    match segments.as_slice() {
        ["age"] | ["company", "employee_count"] => Some(ValueType::Integer),
        ["birthday"] | ["createdAt"] => Some(ValueType::Timestamp),
        [
            "avatar" | "description" | "email" | "firstName" | "gender" | "id" | "lastName"
            | "name" | "phone" | "title" | "username" | "website",
        ]
        | [
            "address",
            "city" | "country" | "postalCode" | "state" | "street",
        ]
        | ["company", "name" | "id" | "industry" | "plan"] => Some(ValueType::String),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_ignores_case_and_separators() {
        for name in [
            "first_name",
            "firstName",
            "First Name",
            "FIRST-NAME",
            "first.name",
        ] {
            assert_eq!(normalize(name), "firstname", "{name}");
        }
    }

    #[test]
    fn every_alias_infers_its_reserved_trait() {
        let cases = [
            ("first_name", "firstName"),
            ("FirstName", "firstName"),
            ("given_name", "firstName"),
            ("last_name", "lastName"),
            ("lastName", "lastName"),
            ("surname", "lastName"),
            ("family_name", "lastName"),
            ("E-mail", "email"),
            ("email_address", "email"),
            ("Phone", "phone"),
            ("phone_number", "phone"),
            ("name", "name"),
            ("Full Name", "name"),
            ("title", "title"),
            ("job_title", "title"),
            ("user-name", "username"),
            ("website", "website"),
            ("avatar", "avatar"),
            ("avatar_url", "avatar"),
            ("description", "description"),
            ("gender", "gender"),
            ("age", "age"),
            ("birthday", "birthday"),
            ("birth_date", "birthday"),
            ("date_of_birth", "birthday"),
            ("DOB", "birthday"),
            ("created_at", "createdAt"),
            ("createdAt", "createdAt"),
            ("signup_date", "createdAt"),
            ("signed_up_at", "createdAt"),
            ("id", "id"),
            ("street", "address.street"),
            ("street_address", "address.street"),
            ("Address", "address.street"),
            ("address_street", "address.street"),
            ("city", "address.city"),
            ("address_city", "address.city"),
            ("state", "address.state"),
            ("addressState", "address.state"),
            ("postal_code", "address.postalCode"),
            ("postcode", "address.postalCode"),
            ("zip", "address.postalCode"),
            ("ZIP Code", "address.postalCode"),
            ("address_postal_code", "address.postalCode"),
            ("address_zip", "address.postalCode"),
            ("address_zip_code", "address.postalCode"),
            ("country", "address.country"),
            ("address_country", "address.country"),
            ("company", "company.name"),
            ("company_name", "company.name"),
            ("companyId", "company.id"),
            ("industry", "company.industry"),
            ("company_industry", "company.industry"),
            ("employee_count", "company.employee_count"),
            ("company_employee_count", "company.employee_count"),
            ("company_plan", "company.plan"),
        ];
        for (column, expected) in cases {
            assert_eq!(reserved_trait(column), Some(expected), "{column}");
        }
        // Every alias in the table is exercised above.
        for (alias, _) in RESERVED_ALIASES {
            assert!(
                cases.iter().any(|(c, _)| normalize(c) == *alias),
                "alias {alias} untested"
            );
        }
    }

    #[test]
    fn other_names_are_custom_traits_named_as_is() {
        assert_eq!(reserved_trait("plan"), None);
        assert_eq!(reserved_trait("seats"), None);
        assert_eq!(
            &*default_path("Favourite Colour"),
            [Box::from("Favourite Colour")]
        );
        assert_eq!(&*default_path("a.b"), [Box::from("a.b")]);
        assert_eq!(display(&default_path("zip")), "address.postalCode");
    }

    #[test]
    fn identity_detection_follows_priority_not_header_order() {
        let header = ["id", "email", "Customer ID", "userId"];
        assert_eq!(find_identity(&header, USER_ID_COLUMNS), Some(3));
        assert_eq!(find_identity(&header[..3], USER_ID_COLUMNS), Some(2));
        assert_eq!(find_identity(&header[..2], USER_ID_COLUMNS), Some(0));
        for (i, cand) in USER_ID_COLUMNS.iter().enumerate() {
            // Each candidate beats every later one.
            let mut cols: Vec<&str> = USER_ID_COLUMNS[i..].iter().rev().copied().collect();
            cols.push("email");
            let found = find_identity(&cols, USER_ID_COLUMNS).unwrap();
            assert_eq!(cols[found], *cand);
        }
        assert_eq!(find_identity(&["email"], USER_ID_COLUMNS), None);
        assert_eq!(
            find_identity(&["AnonymousId"], ANONYMOUS_ID_COLUMNS),
            Some(0)
        );
    }

    #[test]
    fn implied_types_of_reserved_traits() {
        assert_eq!(implied_type(&dotted("age")), Some(ValueType::Integer));
        assert_eq!(
            implied_type(&dotted("company.employee_count")),
            Some(ValueType::Integer)
        );
        assert_eq!(
            implied_type(&dotted("createdAt")),
            Some(ValueType::Timestamp)
        );
        assert_eq!(
            implied_type(&dotted("birthday")),
            Some(ValueType::Timestamp)
        );
        assert_eq!(
            implied_type(&dotted("address.postalCode")),
            Some(ValueType::String)
        );
        assert_eq!(implied_type(&dotted("email")), Some(ValueType::String));
        assert_eq!(implied_type(&dotted("billing.plan")), None);
        assert_eq!(implied_type(&dotted("company")), None);
    }
}
