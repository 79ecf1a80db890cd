//! A topic table's columns, partitioning and sort order, and the json mode's value
//! columns (`table.value.schema`, or inferred from the records).
//!
//! Columns, in this order (Iceberg spec v2 types):
//!
//! | column | type | |
//! |---|---|---|
//! | `partition` | int, required | Kafka partition |
//! | `offset` | long, required | record offset |
//! | `timestamp` | timestamptz, required | record timestamp (Kafka's ms, stored in µs, UTC) |
//! | `timestamp_type` | string, required | `CreateTime` or `LogAppendTime` |
//! | `key` | binary | null for a null key |
//! | `headers` | list<struct<key: string, value: binary>> | in record order, repeats kept |
//! | `value` | binary | `raw` mode: the value, null for a tombstone |
//! | *typed columns* | | `json` mode: one per top-level JSON field |
//! | `_raw_value`, `_error` | binary, string | `json` mode: a value that does not fit, and why |
//!
//! Partitioned by `identity(partition)` and `day(timestamp)`; sorted by `offset`.

use std::sync::Arc;

use iceberg::spec::{
    ListType, NestedField, NullOrder, PrimitiveType, Schema, SortDirection, SortField, SortOrder,
    StructType, Transform, Type, UnboundPartitionSpec,
};

use crate::TableError;

/// Names of the columns every table has; a JSON field of the same name gets the column
/// `value_<name>`.
pub const RESERVED_COLUMNS: [&str; 9] = [
    "partition",
    "offset",
    "timestamp",
    "timestamp_type",
    "key",
    "headers",
    "value",
    "_raw_value",
    "_error",
];

/// How a topic's values become columns (`table.value.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueFormat {
    /// The value as one binary column.
    Raw,
    /// A JSON object's top-level fields as typed columns.
    Json,
}

impl ValueFormat {
    /// `raw` or `json`.
    ///
    /// # Errors
    /// [`TableError::InvalidSetting`] for anything else.
    pub fn parse(text: &str) -> Result<ValueFormat, TableError> {
        match text.trim() {
            "raw" => Ok(ValueFormat::Raw),
            "json" => Ok(ValueFormat::Json),
            other => Err(TableError::InvalidSetting(format!(
                "table.value.format: expected raw or json, got {other:?}"
            ))),
        }
    }
}

/// The type of a json-mode column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ValueType {
    /// JSON `true`/`false`.
    Boolean,
    /// A JSON integer in i32.
    Int,
    /// A JSON integer in i64.
    Long,
    /// Any JSON number, as f32.
    Float,
    /// Any JSON number, as f64.
    Double,
    /// A JSON string.
    String,
    /// Any JSON value, kept as its JSON text (an Iceberg string).
    Json,
}

impl ValueType {
    /// The field-list name: `boolean`, `int`, `long`, `float`, `double`, `string`, `json`.
    pub fn name(self) -> &'static str {
        match self {
            ValueType::Boolean => "boolean",
            ValueType::Int => "int",
            ValueType::Long => "long",
            ValueType::Float => "float",
            ValueType::Double => "double",
            ValueType::String => "string",
            ValueType::Json => "json",
        }
    }

    fn parse(text: &str) -> Option<ValueType> {
        Some(match text.trim().to_ascii_lowercase().as_str() {
            "boolean" | "bool" => ValueType::Boolean,
            "int" | "integer" | "int32" => ValueType::Int,
            "long" | "bigint" | "int64" => ValueType::Long,
            "float" | "float32" => ValueType::Float,
            "double" | "float64" | "number" => ValueType::Double,
            "string" | "str" => ValueType::String,
            "json" => ValueType::Json,
            _ => return None,
        })
    }

    /// The Iceberg type of the column.
    pub fn iceberg(self) -> PrimitiveType {
        match self {
            ValueType::Boolean => PrimitiveType::Boolean,
            ValueType::Int => PrimitiveType::Int,
            ValueType::Long => PrimitiveType::Long,
            ValueType::Float => PrimitiveType::Float,
            ValueType::Double => PrimitiveType::Double,
            ValueType::String | ValueType::Json => PrimitiveType::String,
        }
    }

    /// The type a table column of Iceberg type `primitive` is read back as.
    pub fn from_iceberg(primitive: &PrimitiveType) -> Option<ValueType> {
        Some(match primitive {
            PrimitiveType::Boolean => ValueType::Boolean,
            PrimitiveType::Int => ValueType::Int,
            PrimitiveType::Long => ValueType::Long,
            PrimitiveType::Float => ValueType::Float,
            PrimitiveType::Double => ValueType::Double,
            PrimitiveType::String => ValueType::String,
            _ => return None,
        })
    }

    /// The narrowest type for one JSON value given as its text (valid JSON, as a
    /// parser delimited it); None for null.
    pub fn of_json(text: &[u8]) -> Option<ValueType> {
        Some(match text.first()? {
            b'n' => return None,
            b't' | b'f' => ValueType::Boolean,
            b'"' => ValueType::String,
            b'[' | b'{' => ValueType::Json,
            _ if std::str::from_utf8(text).is_ok_and(|text| text.parse::<i64>().is_ok()) => {
                ValueType::Long
            }
            _ => ValueType::Double,
        })
    }

    /// The type both `self` and `other` values fit: long and double give double, any
    /// other pair json.
    pub fn widen(self, other: ValueType) -> ValueType {
        match (self, other) {
            (a, b) if a == b => a,
            (ValueType::Long, ValueType::Double) | (ValueType::Double, ValueType::Long) => {
                ValueType::Double
            }
            _ => ValueType::Json,
        }
    }
}

/// The json mode's value fields, by JSON field name, in column order.
pub type ValueFields = Vec<(String, ValueType)>;

/// Parses `table.value.schema`: empty (infer), a field list `name:type,name:type`
/// (types as [`ValueType::name`]), or a JSON Schema object whose `properties` give the
/// fields (`integer` is long, `number` double, `object` and `array` json).
///
/// # Errors
/// [`TableError::InvalidSetting`] naming what does not parse.
pub fn parse_value_schema(text: &str) -> Result<Option<ValueFields>, TableError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let invalid =
        |reason: String| TableError::InvalidSetting(format!("table.value.schema: {reason}"));
    let mut fields = ValueFields::new();
    if text.starts_with('{') {
        let schema: serde_json::Value =
            serde_json::from_str(text).map_err(|error| invalid(format!("not JSON: {error}")))?;
        let properties = schema
            .get("properties")
            .and_then(serde_json::Value::as_object)
            .ok_or_else(|| {
                invalid("a JSON Schema needs an object of \"properties\"".to_string())
            })?;
        for (name, property) in properties {
            let types: Vec<&str> = match property.get("type") {
                Some(serde_json::Value::String(name)) => vec![name.as_str()],
                Some(serde_json::Value::Array(names)) => {
                    names.iter().filter_map(serde_json::Value::as_str).collect()
                }
                _ => vec![],
            };
            let value_type = types
                .iter()
                .filter(|name| **name != "null")
                .map(|name| match *name {
                    "boolean" => Ok(ValueType::Boolean),
                    "integer" => Ok(ValueType::Long),
                    "number" => Ok(ValueType::Double),
                    "string" => Ok(ValueType::String),
                    "object" | "array" => Ok(ValueType::Json),
                    other => Err(invalid(format!(
                        "property {name:?}: unknown type {other:?}"
                    ))),
                })
                .try_fold(None, |widest: Option<ValueType>, next| {
                    next.map(|next| Some(widest.map_or(next, |widest| widest.widen(next))))
                })?
                .unwrap_or(ValueType::Json);
            fields.push((name.clone(), value_type));
        }
    } else {
        for item in text
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
        {
            let (name, type_name) = item.split_once(':').ok_or_else(|| {
                invalid(format!(
                    "{item:?} is not name:type (e.g. carrier:string,dep_delay:double)"
                ))
            })?;
            let value_type = ValueType::parse(type_name).ok_or_else(|| {
                invalid(format!(
                    "{name}: unknown type {type_name:?}; use boolean, int, long, float, double, string or json"
                ))
            })?;
            fields.push((name.trim().to_string(), value_type));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for (name, _) in &fields {
        if name.is_empty() || !seen.insert(column_name(name)) {
            return Err(invalid(format!("field {name:?} is empty or given twice")));
        }
    }
    Ok(Some(fields))
}

/// The column of JSON field `name`: the name itself, or `value_<name>` for a reserved one.
pub fn column_name(name: &str) -> String {
    if RESERVED_COLUMNS.contains(&name) || name.starts_with("value_") && is_prefixed(name) {
        format!("value_{name}")
    } else {
        name.to_string()
    }
}

/// Whether `name` is `value_` followed by a reserved name (so that mapping stays one to one).
fn is_prefixed(name: &str) -> bool {
    name.strip_prefix("value_")
        .is_some_and(|rest| RESERVED_COLUMNS.contains(&rest) || is_prefixed(rest))
}

/// The JSON field a value column holds (the inverse of [`column_name`]).
pub fn field_name(column: &str) -> &str {
    match column.strip_prefix("value_") {
        Some(rest) if RESERVED_COLUMNS.contains(&rest) || is_prefixed(rest) => rest,
        _ => column,
    }
}

/// The table schema for `format` with json `fields` (ignored in raw mode).
///
/// # Errors
/// [`TableError::Iceberg`] if the schema does not build.
pub fn table_schema(
    format: ValueFormat,
    fields: &[(String, ValueType)],
) -> Result<Schema, TableError> {
    let header = StructType::new(vec![
        Arc::new(NestedField::required(
            8,
            "key",
            Type::Primitive(PrimitiveType::String),
        )),
        Arc::new(NestedField::optional(
            9,
            "value",
            Type::Primitive(PrimitiveType::Binary),
        )),
    ]);
    let mut columns = vec![
        NestedField::required(1, "partition", Type::Primitive(PrimitiveType::Int)),
        NestedField::required(2, "offset", Type::Primitive(PrimitiveType::Long)),
        NestedField::required(3, "timestamp", Type::Primitive(PrimitiveType::Timestamptz)),
        NestedField::required(4, "timestamp_type", Type::Primitive(PrimitiveType::String)),
        NestedField::optional(5, "key", Type::Primitive(PrimitiveType::Binary)),
        NestedField::optional(
            6,
            "headers",
            Type::List(ListType::new(Arc::new(NestedField::list_element(
                7,
                Type::Struct(header),
                true,
            )))),
        ),
    ];
    let mut next_id = 10;
    match format {
        ValueFormat::Raw => columns.push(NestedField::optional(
            next_id,
            "value",
            Type::Primitive(PrimitiveType::Binary),
        )),
        ValueFormat::Json => {
            columns.push(NestedField::optional(
                next_id,
                "_raw_value",
                Type::Primitive(PrimitiveType::Binary),
            ));
            columns.push(NestedField::optional(
                next_id + 1,
                "_error",
                Type::Primitive(PrimitiveType::String),
            ));
            next_id += 2;
            for (name, value_type) in fields {
                columns.push(value_field(next_id, name, *value_type));
                next_id += 1;
            }
        }
    }
    Ok(Schema::builder()
        .with_schema_id(0)
        .with_fields(columns.into_iter().map(Arc::new))
        .build()?)
}

/// The doc of a column holding JSON text (an Iceberg string either way).
const JSON_DOC: &str = "JSON text of the field's value";

/// The column of JSON field `name` with id `id`.
pub fn value_field(id: i32, name: &str, value_type: ValueType) -> NestedField {
    let field = NestedField::optional(id, column_name(name), Type::Primitive(value_type.iceberg()));
    if value_type == ValueType::Json {
        field.with_doc(JSON_DOC)
    } else {
        field
    }
}

/// `identity(partition)`, then `day(timestamp)`.
///
/// # Errors
/// [`TableError::Iceberg`] if the spec does not build.
pub fn partition_spec() -> Result<UnboundPartitionSpec, TableError> {
    Ok(UnboundPartitionSpec::builder()
        .with_spec_id(0)
        .add_partition_field(1, "partition", Transform::Identity)?
        .add_partition_field(3, "timestamp_day", Transform::Day)?
        .build())
}

/// Ascending by `offset`.
///
/// # Errors
/// [`TableError::Iceberg`] if the order does not build.
pub fn sort_order() -> Result<SortOrder, TableError> {
    Ok(SortOrder::builder()
        .with_order_id(1)
        .with_sort_field(
            SortField::builder()
                .source_id(2)
                .direction(SortDirection::Ascending)
                .null_order(NullOrder::First)
                .transform(Transform::Identity)
                .build(),
        )
        .build_unbound()?)
}

/// The json value columns of a table schema, by column name with their types.
pub fn value_columns(schema: &Schema) -> Vec<(String, ValueType)> {
    schema
        .as_struct()
        .fields()
        .iter()
        .filter(|field| !RESERVED_COLUMNS.contains(&field.name.as_str()))
        .filter_map(|field| match field.field_type.as_ref() {
            Type::Primitive(PrimitiveType::String) if field.doc.as_deref() == Some(JSON_DOC) => {
                Some((field.name.clone(), ValueType::Json))
            }
            Type::Primitive(primitive) => {
                Some((field.name.clone(), ValueType::from_iceberg(primitive)?))
            }
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_lists_and_json_schemas_parse() {
        let fields = parse_value_schema("carrier:string, dep_delay:double,flight:long").unwrap();
        assert_eq!(
            fields,
            Some(vec![
                ("carrier".to_string(), ValueType::String),
                ("dep_delay".to_string(), ValueType::Double),
                ("flight".to_string(), ValueType::Long),
            ])
        );
        let fields = parse_value_schema(
            r#"{"type":"object","properties":{"n":{"type":["integer","null"]},"o":{"type":"object"}}}"#,
        )
        .unwrap();
        assert_eq!(
            fields,
            Some(vec![
                ("n".to_string(), ValueType::Long),
                ("o".to_string(), ValueType::Json)
            ])
        );
        assert_eq!(parse_value_schema("  ").unwrap(), None);
        assert!(parse_value_schema("carrier").is_err());
        assert!(parse_value_schema("a:decimal").is_err());
        assert!(parse_value_schema("a:int,a:long").is_err());
        assert!(parse_value_schema("{\"type\":\"object\"}").is_err());
    }

    #[test]
    fn reserved_names_map_both_ways() {
        for name in ["offset", "value", "value_offset", "carrier", "value_x"] {
            assert_eq!(field_name(&column_name(name)), name);
        }
        assert_eq!(column_name("offset"), "value_offset");
        assert_eq!(column_name("value_x"), "value_x");
    }
}
