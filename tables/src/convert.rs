//! Record batches read from the log become table rows, and rows become Arrow record
//! batches in the table's current schema.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float32Builder, Float64Builder, Int32Builder, Int64Builder, StringBuilder,
};
use arrow_array::{
    ArrayRef, BinaryArray, Int32Array, Int64Array, LargeBinaryArray, ListArray, RecordBatch,
    StringArray, StructArray, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema as ArrowSchema};
use bytes::Bytes;
use silt_broker::record_batch::{
    BatchHeader, batch_size_from_prefix, decompressed_records, parse_header, record_entries,
    record_headers,
};

use crate::TableError;
use crate::schema::{ValueType, field_name};

/// One record as a table row holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportRecord {
    /// Kafka partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Timestamp (ms since the epoch).
    pub timestamp_ms: i64,
    /// `CreateTime` or `LogAppendTime`.
    pub timestamp_type: &'static str,
    /// Key, None when null.
    pub key: Option<Bytes>,
    /// Headers in record order (keys as UTF-8, lossily).
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Value, None for a tombstone.
    pub value: Option<Bytes>,
    /// The value as json mode reads it, parsed once when the record was decoded (None
    /// in raw mode).
    pub parsed: Option<ParsedValue>,
}

/// What one read of the log holds from offset `from` on.
#[derive(Debug, Default)]
pub struct DecodedRead {
    /// Data records at or after `from`, in offset order.
    pub records: Vec<ExportRecord>,
    /// The offset after the last whole batch read (`from` when none).
    pub next_offset: i64,
    /// Bytes of the batches read.
    pub bytes: u64,
}

/// Decodes the whole batches of `buf` (a read of `partition` at `from`): control
/// batches and records before `from` are skipped, records of compressed batches
/// decompressed, and with `json` each value parsed once for the rest of the round. A
/// trailing partial batch is left for the next read.
///
/// # Errors
/// [`TableError::Batch`] when a batch does not decode.
pub fn decode_batches(
    partition: i32,
    from: i64,
    buf: &Bytes,
    json: bool,
) -> Result<DecodedRead, TableError> {
    let mut read = DecodedRead {
        next_offset: from,
        ..DecodedRead::default()
    };
    let mut at = 0;
    while at < buf.len() {
        let Ok(size) = batch_size_from_prefix(&buf[at..]) else {
            break;
        };
        if at + size > buf.len() {
            break;
        }
        let batch = buf.slice(at..at + size);
        at += size;
        let header: BatchHeader = parse_header(&batch)?;
        read.bytes += size as u64;
        read.next_offset = read.next_offset.max(header.next_offset());
        if header.is_control() || header.next_offset() <= from {
            continue;
        }
        let section = decompressed_records(&batch, &header)?;
        let timestamp_type = header.timestamp_type().as_config_str();
        for entry in record_entries(&header, &section)? {
            if entry.offset < from {
                continue;
            }
            let headers = record_headers(&section, &entry)?
                .into_iter()
                .map(|(key, value)| {
                    (
                        String::from_utf8_lossy(&section[key]).into_owned(),
                        value.map(|value| section.slice(value)),
                    )
                })
                .collect();
            let value = entry.value.map(|value| section.slice(value));
            let parsed = json.then(|| parse_json(value.as_ref()));
            read.records.push(ExportRecord {
                partition,
                offset: entry.offset,
                timestamp_ms: entry.timestamp,
                timestamp_type,
                key: entry.key.map(|key| section.slice(key)),
                headers,
                value,
                parsed,
            });
        }
    }
    Ok(read)
}

/// Days since the epoch of `timestamp_ms` (UTC), as Iceberg's `day` transform gives.
pub fn day_of(timestamp_ms: i64) -> i32 {
    i32::try_from(timestamp_ms.div_euclid(86_400_000)).unwrap_or(i32::MAX)
}

fn binary_array(data_type: &DataType, values: Vec<Option<&[u8]>>) -> Result<ArrayRef, TableError> {
    match data_type {
        DataType::LargeBinary => Ok(Arc::new(LargeBinaryArray::from(values))),
        DataType::Binary => Ok(Arc::new(BinaryArray::from(values))),
        other => Err(TableError::Schema(format!(
            "expected a binary column, found {other}"
        ))),
    }
}

/// A record's value as json mode reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum ParsedValue {
    /// A JSON object: its top-level fields in the order written.
    Fields(Vec<JsonField>),
    /// A null value.
    Tombstone,
    /// Not JSON, or not an object: why.
    Unfit(String),
}

/// One top-level field of a JSON object value: where its name and its value's JSON
/// text lie in the record's value (byte ranges), so a round parses each value once
/// and copies nothing but what the columns keep.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonField {
    name: FieldName,
    value: Range<u32>,
}

#[derive(Debug, Clone, PartialEq)]
enum FieldName {
    /// The name as written (it has no escapes).
    At(Range<u32>),
    /// The name unescaped.
    Unescaped(Box<str>),
}

impl JsonField {
    /// The field's name and its value's JSON text (valid UTF-8: the parser checked
    /// it, and is not asked to again until a column needs it as text), given the
    /// value the field was parsed from (None if `value` is not that value).
    fn resolve<'v>(&'v self, value: &'v [u8]) -> Option<(&'v str, &'v [u8])> {
        let bytes = |range: &Range<u32>| value.get(range.start as usize..range.end as usize);
        let name = match &self.name {
            FieldName::At(range) => std::str::from_utf8(bytes(range)?).ok()?,
            FieldName::Unescaped(name) => name,
        };
        Some((name, bytes(&self.value)?))
    }
}

/// Parses one value for json mode.
pub fn parse_json(value: Option<&Bytes>) -> ParsedValue {
    let Some(bytes) = value else {
        return ParsedValue::Tombstone;
    };
    let is_object = bytes
        .iter()
        .find(|byte| !byte.is_ascii_whitespace())
        .is_some_and(|byte| *byte == b'{');
    if is_object && let Ok(length) = u32::try_from(bytes.len()) {
        let mut deserializer = serde_json::Deserializer::from_slice(bytes);
        let parsed = serde::de::DeserializeSeed::deserialize(
            ObjectFields {
                base: bytes.as_ptr() as usize,
                length,
            },
            &mut deserializer,
        )
        .and_then(|fields| deserializer.end().map(|()| fields));
        return match parsed {
            Ok(fields) => ParsedValue::Fields(fields),
            Err(error) => ParsedValue::Unfit(format!("the value is not JSON: {error}")),
        };
    }
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(other) => ParsedValue::Unfit(format!(
            "the value is a JSON {}, not an object",
            json_kind(other.to_string().as_bytes())
        )),
        Err(error) => ParsedValue::Unfit(format!("the value is not JSON: {error}")),
    }
}

/// Reads a JSON object into [`JsonField`]s of the value starting at address `base`.
struct ObjectFields {
    base: usize,
    length: u32,
}

impl ObjectFields {
    /// The range of `part` (borrowed from the parsed value) in the value.
    fn range_of(&self, part: &[u8]) -> Range<u32> {
        let start = (part.as_ptr() as usize)
            .saturating_sub(self.base)
            .min(self.length as usize) as u32;
        let end = start.saturating_add(part.len() as u32).min(self.length);
        start..end
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for ObjectFields {
    type Value = Vec<JsonField>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ObjectFields {
    type Value = Vec<JsonField>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(name) = map.next_key::<Name<'de>>()? {
            let value: &'de serde_json::value::RawValue = map.next_value()?;
            let name = match name {
                Name::Borrowed(name) => FieldName::At(self.range_of(name.as_bytes())),
                Name::Owned(name) => FieldName::Unescaped(name.into_boxed_str()),
            };
            fields.push(JsonField {
                name,
                value: self.range_of(value.get().as_bytes()),
            });
        }
        Ok(fields)
    }
}

/// A field name: borrowed from the value unless it had escapes.
enum Name<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl<'de> serde::Deserialize<'de> for Name<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> serde::de::Visitor<'de> for NameVisitor {
            type Value = Name<'de>;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("a field name")
            }

            fn visit_borrowed_str<E>(self, name: &'de str) -> Result<Name<'de>, E> {
                Ok(Name::Borrowed(name))
            }

            fn visit_str<E>(self, name: &str) -> Result<Name<'de>, E> {
                Ok(Name::Owned(name.to_string()))
            }

            fn visit_string<E>(self, name: String) -> Result<Name<'de>, E> {
                Ok(Name::Owned(name))
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

impl ExportRecord {
    /// The value as json mode reads it: the parse made at decoding, else a new one.
    fn json(&self) -> std::borrow::Cow<'_, ParsedValue> {
        match &self.parsed {
            Some(parsed) => std::borrow::Cow::Borrowed(parsed),
            None => std::borrow::Cow::Owned(parse_json(self.value.as_ref())),
        }
    }
}

/// The kind of JSON value `text` is (valid JSON, as a parser delimited it).
fn json_kind(text: &[u8]) -> &'static str {
    match text.trim_ascii_start().first() {
        Some(b'n') => "null",
        Some(b't' | b'f') => "boolean",
        Some(b'"') => "string",
        Some(b'[') => "array",
        Some(b'{') => "object",
        _ => "number",
    }
}

/// A typed cell (text borrowed from the record's value when it has no escapes).
#[derive(Debug, Clone, PartialEq)]
enum Cell<'v> {
    Null,
    Boolean(bool),
    Int(i32),
    Long(i64),
    Float(f32),
    Double(f64),
    Text(Cow<'v, str>),
}

/// The cell of a `value_type` column for the JSON value `text`, or why it does not fit.
fn cell(value_type: ValueType, text: &[u8]) -> Result<Cell<'_>, String> {
    let kind = json_kind(text);
    let unfit = || format!("a JSON {kind} is not a {}", value_type.name());
    let number = || std::str::from_utf8(text).map_err(|error| error.to_string());
    let not = |what: &str| format!("{} is not {what}", String::from_utf8_lossy(text));
    Ok(match (value_type, kind) {
        (_, "null") => Cell::Null,
        (ValueType::String | ValueType::Json, "string") => Cell::Text(json_string(text)?),
        // The JSON text as serde_json writes it (compact, numbers normalized).
        (ValueType::Json, _) => Cell::Text(Cow::Owned(
            serde_json::from_slice::<serde_json::Value>(text)
                .map_err(|error| error.to_string())?
                .to_string(),
        )),
        (ValueType::Boolean, "boolean") => Cell::Boolean(text.first() == Some(&b't')),
        (ValueType::Int, "number") => Cell::Int(
            number()?
                .parse::<i64>()
                .ok()
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| not("an int"))?,
        ),
        (ValueType::Long, "number") => {
            Cell::Long(number()?.parse::<i64>().map_err(|_| not("a long"))?)
        }
        (ValueType::Float, "number") => {
            Cell::Float(number()?.parse::<f64>().map_err(|_| unfit())? as f32)
        }
        (ValueType::Double, "number") => {
            Cell::Double(number()?.parse::<f64>().map_err(|_| unfit())?)
        }
        _ => return Err(unfit()),
    })
}

/// The text of the JSON string `text` (with its quotes): borrowed unless it has escapes.
fn json_string(text: &[u8]) -> Result<Cow<'_, str>, String> {
    match text
        .strip_prefix(b"\"")
        .and_then(|rest| rest.strip_suffix(b"\""))
    {
        Some(inner) if !inner.contains(&b'\\') => std::str::from_utf8(inner)
            .map(Cow::Borrowed)
            .map_err(|error| error.to_string()),
        _ => serde_json::from_slice::<String>(text)
            .map(Cow::Owned)
            .map_err(|error| error.to_string()),
    }
}

/// Finds the column of a JSON field by name; records of a topic mostly repeat one
/// field order, so the column after the last one found is tried first.
struct FieldLookup<'a> {
    names: Vec<&'a str>,
    by_name: HashMap<&'a str, usize>,
}

impl<'a> FieldLookup<'a> {
    fn new(names: Vec<&'a str>) -> FieldLookup<'a> {
        let by_name = names
            .iter()
            .enumerate()
            .map(|(index, name)| (*name, index))
            .collect();
        FieldLookup { names, by_name }
    }

    fn find(&self, name: &str, next: &mut usize) -> Option<usize> {
        let found = if self.names.get(*next) == Some(&name) {
            Some(*next)
        } else {
            self.by_name.get(name).copied()
        };
        if let Some(index) = found {
            *next = index + 1;
        }
        found
    }
}

/// The JSON fields of `records`' values that `known` columns do not hold, with the
/// widest type their values need (for a schema update before the rows are written).
pub fn new_json_fields(
    records: &[ExportRecord],
    known: &[(String, ValueType)],
) -> Vec<(String, ValueType)> {
    let known = FieldLookup::new(known.iter().map(|(column, _)| field_name(column)).collect());
    let mut found: BTreeMap<String, ValueType> = BTreeMap::new();
    for record in records {
        let parsed = record.json();
        let (ParsedValue::Fields(fields), Some(value)) = (parsed.as_ref(), &record.value) else {
            continue;
        };
        let mut next = 0;
        for (name, text) in fields.iter().filter_map(|field| field.resolve(value)) {
            if known.find(name, &mut next).is_some() {
                continue;
            }
            let Some(value_type) = ValueType::of_json(text) else {
                continue;
            };
            match found.get_mut(name) {
                Some(seen) => *seen = seen.widen(value_type),
                None => {
                    let _ = found.insert(name.to_string(), value_type);
                }
            }
        }
    }
    found.into_iter().collect()
}

/// An Arrow record batch of `records` in `schema` (the table's current schema as
/// Arrow, field ids in its metadata); `value_types` are the json columns' types.
///
/// # Errors
/// [`TableError::Schema`] when `schema` has a column this crate does not fill, or
/// [`TableError::Arrow`] when the batch does not build.
pub fn to_record_batch(
    schema: &Arc<ArrowSchema>,
    value_types: &BTreeMap<String, ValueType>,
    records: &[&ExportRecord],
) -> Result<RecordBatch, TableError> {
    let json = !(value_types.is_empty() && schema.field_with_name("value").is_ok());
    let TypedColumns {
        arrays: mut typed,
        unfit,
    } = if json {
        typed_columns(schema, value_types, records)?
    } else {
        TypedColumns {
            arrays: BTreeMap::new(),
            unfit: vec![None; records.len()],
        }
    };
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let column: ArrayRef = match field.name().as_str() {
            "partition" => Arc::new(Int32Array::from_iter_values(
                records.iter().map(|record| record.partition),
            )),
            "offset" => Arc::new(Int64Array::from_iter_values(
                records.iter().map(|record| record.offset),
            )),
            "timestamp" => {
                let micros = TimestampMicrosecondArray::from_iter_values(
                    records
                        .iter()
                        .map(|record| record.timestamp_ms.saturating_mul(1000)),
                );
                match field.data_type() {
                    DataType::Timestamp(_, Some(zone)) => {
                        Arc::new(micros.with_timezone(zone.clone()))
                    }
                    _ => Arc::new(micros),
                }
            }
            "timestamp_type" => Arc::new(StringArray::from_iter_values(
                records.iter().map(|record| record.timestamp_type),
            )),
            "key" => binary_array(
                field.data_type(),
                records.iter().map(|record| record.key.as_deref()).collect(),
            )?,
            "headers" => headers_array(field, records)?,
            "value" => binary_array(
                field.data_type(),
                records
                    .iter()
                    .map(|record| record.value.as_deref())
                    .collect(),
            )?,
            "_raw_value" => binary_array(
                field.data_type(),
                records
                    .iter()
                    .zip(&unfit)
                    .map(|(record, unfit)| unfit.as_ref().and(record.value.as_deref()))
                    .collect(),
            )?,
            "_error" => Arc::new(StringArray::from(
                unfit
                    .iter()
                    .map(|reason| reason.as_deref())
                    .collect::<Vec<_>>(),
            )),
            name => typed.remove(name).ok_or_else(|| {
                TableError::Schema(format!(
                    "the table has a column {name:?} Silt does not fill"
                ))
            })?,
        };
        columns.push(column);
    }
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// The json columns of some records.
struct TypedColumns {
    /// By column name.
    arrays: BTreeMap<String, ArrayRef>,
    /// Per record, why its value went to `_raw_value` (None when it fit).
    unfit: Vec<Option<String>>,
}

/// The json columns of `records`. A record whose value does not fit one column goes
/// whole to `_raw_value`: its typed columns are null.
fn typed_columns(
    schema: &ArrowSchema,
    value_types: &BTreeMap<String, ValueType>,
    records: &[&ExportRecord],
) -> Result<TypedColumns, TableError> {
    let columns: Vec<(&str, ValueType)> = value_types
        .iter()
        .map(|(column, value_type)| (column.as_str(), *value_type))
        .collect();
    let lookup = FieldLookup::new(
        columns
            .iter()
            .map(|(column, _)| field_name(column))
            .collect(),
    );
    let mut builders = columns
        .iter()
        .map(|(column, _)| {
            let field = schema.field_with_name(column)?;
            TypedBuilder::new(field.data_type(), records.len())
        })
        .collect::<Result<Vec<_>, TableError>>()?;
    let mut unfit: Vec<Option<String>> = Vec::with_capacity(records.len());
    let mut row: Vec<Cell<'_>> = vec![Cell::Null; columns.len()];
    for record in records {
        let reason = match (&record.parsed, &record.value) {
            (Some(ParsedValue::Fields(fields)), Some(value)) => {
                fill_row(fields, value, &lookup, &columns, &mut row)
            }
            (Some(ParsedValue::Unfit(reason)), _) => Some(reason.clone()),
            (Some(ParsedValue::Tombstone), _) | (_, None) => None,
            (None, Some(_)) => {
                return Err(TableError::Schema(
                    "a json table's records were decoded without parsing their values".to_string(),
                ));
            }
        };
        for (builder, cell) in builders.iter_mut().zip(row.iter_mut()) {
            let cell = std::mem::replace(cell, Cell::Null);
            builder.append(if reason.is_some() { Cell::Null } else { cell })?;
        }
        unfit.push(reason);
    }
    let arrays = columns
        .iter()
        .zip(builders)
        .map(|((column, _), builder)| (column.to_string(), builder.finish()))
        .collect();
    Ok(TypedColumns { arrays, unfit })
}

/// Puts the cells of one record's `fields` into `row` (by column); why the record
/// does not fit, if one of its fields does not.
fn fill_row<'v>(
    fields: &'v [JsonField],
    value: &'v Bytes,
    lookup: &FieldLookup<'_>,
    columns: &[(&str, ValueType)],
    row: &mut [Cell<'v>],
) -> Option<String> {
    let mut next = 0;
    let mut reason = None;
    for field in fields {
        let Some((name, text)) = field.resolve(value) else {
            return Some("a field of the value could not be read back".to_string());
        };
        let Some(column) = lookup.find(name, &mut next) else {
            continue;
        };
        match cell(columns[column].1, text) {
            Ok(cell) => row[column] = cell,
            Err(why) => {
                if reason.is_none() {
                    reason = Some(format!("field {name:?}: {why}"));
                }
            }
        }
    }
    reason
}

/// An Arrow builder for one json column.
enum TypedBuilder {
    Boolean(BooleanBuilder),
    Int(Int32Builder),
    Long(Int64Builder),
    Float(Float32Builder),
    Double(Float64Builder),
    Text(StringBuilder),
}

impl TypedBuilder {
    fn new(data_type: &DataType, rows: usize) -> Result<TypedBuilder, TableError> {
        Ok(match data_type {
            DataType::Boolean => TypedBuilder::Boolean(BooleanBuilder::with_capacity(rows)),
            DataType::Int32 => TypedBuilder::Int(Int32Builder::with_capacity(rows)),
            DataType::Int64 => TypedBuilder::Long(Int64Builder::with_capacity(rows)),
            DataType::Float32 => TypedBuilder::Float(Float32Builder::with_capacity(rows)),
            DataType::Float64 => TypedBuilder::Double(Float64Builder::with_capacity(rows)),
            DataType::Utf8 => TypedBuilder::Text(StringBuilder::with_capacity(rows, 16 * rows)),
            other => {
                return Err(TableError::Schema(format!(
                    "a value column of type {other} cannot be filled"
                )));
            }
        })
    }

    /// Appends `cell` (null when absent); a cell of another type than the column's
    /// is a bug in the caller.
    fn append(&mut self, cell: Cell<'_>) -> Result<(), TableError> {
        match (self, cell) {
            (TypedBuilder::Boolean(builder), Cell::Null) => builder.append_null(),
            (TypedBuilder::Int(builder), Cell::Null) => builder.append_null(),
            (TypedBuilder::Long(builder), Cell::Null) => builder.append_null(),
            (TypedBuilder::Float(builder), Cell::Null) => builder.append_null(),
            (TypedBuilder::Double(builder), Cell::Null) => builder.append_null(),
            (TypedBuilder::Text(builder), Cell::Null) => builder.append_null(),
            (TypedBuilder::Boolean(builder), Cell::Boolean(flag)) => builder.append_value(flag),
            (TypedBuilder::Int(builder), Cell::Int(n)) => builder.append_value(n),
            (TypedBuilder::Long(builder), Cell::Long(n)) => builder.append_value(n),
            (TypedBuilder::Float(builder), Cell::Float(n)) => builder.append_value(n),
            (TypedBuilder::Double(builder), Cell::Double(n)) => builder.append_value(n),
            (TypedBuilder::Text(builder), Cell::Text(text)) => builder.append_value(text),
            (_, cell) => {
                return Err(TableError::Schema(format!(
                    "a value column cannot hold {cell:?}"
                )));
            }
        }
        Ok(())
    }

    fn finish(self) -> ArrayRef {
        match self {
            TypedBuilder::Boolean(mut builder) => Arc::new(builder.finish()),
            TypedBuilder::Int(mut builder) => Arc::new(builder.finish()),
            TypedBuilder::Long(mut builder) => Arc::new(builder.finish()),
            TypedBuilder::Float(mut builder) => Arc::new(builder.finish()),
            TypedBuilder::Double(mut builder) => Arc::new(builder.finish()),
            TypedBuilder::Text(mut builder) => Arc::new(builder.finish()),
        }
    }
}

/// `headers`: a list per record of (key, value) structs, empty for a record without
/// headers.
fn headers_array(field: &Field, records: &[&ExportRecord]) -> Result<ArrayRef, TableError> {
    let DataType::List(element) = field.data_type() else {
        return Err(TableError::Schema(format!(
            "headers is {}, expected a list",
            field.data_type()
        )));
    };
    let DataType::Struct(pair_fields) = element.data_type() else {
        return Err(TableError::Schema(
            "headers' element is not a struct".to_string(),
        ));
    };
    let pairs = records.iter().flat_map(|record| record.headers.iter());
    let keys: Vec<&str> = pairs.clone().map(|(key, _)| key.as_str()).collect();
    let values: Vec<Option<&[u8]>> = pairs.map(|(_, value)| value.as_deref()).collect();
    let value_type = pair_fields
        .iter()
        .find(|pair_field| pair_field.name() == "value")
        .map(|pair_field| pair_field.data_type().clone())
        .unwrap_or(DataType::LargeBinary);
    let struct_array = StructArray::try_new(
        pair_fields.clone(),
        vec![
            Arc::new(StringArray::from(keys)) as ArrayRef,
            binary_array(&value_type, values)?,
        ],
        None,
    )?;
    let offsets = arrow_buffer_offsets(records.iter().map(|record| record.headers.len()));
    Ok(Arc::new(ListArray::try_new(
        Arc::clone(element),
        offsets,
        Arc::new(struct_array),
        None,
    )?))
}

fn arrow_buffer_offsets(lengths: impl Iterator<Item = usize>) -> arrow_buffer::OffsetBuffer<i32> {
    arrow_buffer::OffsetBuffer::from_lengths(lengths)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;

    #[test]
    fn days_are_utc_and_floor_before_the_epoch() {
        assert_eq!(day_of(0), 0);
        assert_eq!(day_of(86_399_999), 0);
        assert_eq!(day_of(86_400_000), 1);
        assert_eq!(day_of(-1), -1);
    }

    fn record(value: &str) -> ExportRecord {
        ExportRecord {
            partition: 0,
            offset: 0,
            timestamp_ms: 0,
            timestamp_type: "CreateTime",
            key: None,
            headers: Vec::new(),
            value: Some(Bytes::from(value.to_string())),
            parsed: None,
        }
    }

    #[test]
    fn new_fields_take_the_widest_type_their_values_need() {
        let records = [
            record(r#"{"a": 1, "b": "x", "c": null, "d": 1, "known": 1}"#),
            record(r#"{"a": 2.5, "b": 3, "d": 2}"#),
            record("\"not an object\""),
        ];
        let known = [("known".to_string(), ValueType::Long)];
        assert_eq!(
            new_json_fields(&records, &known),
            vec![
                ("a".to_string(), ValueType::Double),
                ("b".to_string(), ValueType::Json),
                ("d".to_string(), ValueType::Long),
            ]
        );
    }

    #[test]
    fn cells_fit_or_say_why_not() {
        assert_eq!(cell(ValueType::Long, b"3"), Ok(Cell::Long(3)));
        assert_eq!(cell(ValueType::Double, b"3"), Ok(Cell::Double(3.0)));
        assert_eq!(
            cell(ValueType::Json, br#"{"a": 1, "b": 2.50}"#),
            Ok(Cell::Text(Cow::Owned("{\"a\":1,\"b\":2.5}".to_string())))
        );
        assert_eq!(
            cell(ValueType::String, br#""plain""#),
            Ok(Cell::Text(Cow::Borrowed("plain")))
        );
        assert_eq!(
            cell(ValueType::String, br#""tab\tand \u00e9""#),
            Ok(Cell::Text(Cow::Owned("tab\tand \u{e9}".to_string())))
        );
        assert_eq!(cell(ValueType::Boolean, b"false"), Ok(Cell::Boolean(false)));
        assert_eq!(cell(ValueType::Int, b"-7"), Ok(Cell::Int(-7)));
        assert!(cell(ValueType::Long, b"2.5").is_err());
        assert!(cell(ValueType::Long, b"1e3").is_err());
        assert!(cell(ValueType::Long, b"18446744073709551615").is_err());
        assert!(cell(ValueType::Long, br#""7""#).is_err());
        assert!(cell(ValueType::Int, (1i64 << 40).to_string().as_bytes()).is_err());
        assert_eq!(
            cell(ValueType::Boolean, b"1"),
            Err("a JSON number is not a boolean".to_string())
        );
        assert_eq!(cell(ValueType::Boolean, b"null"), Ok(Cell::Null));
    }

    fn parsed(value: &str) -> ExportRecord {
        let mut record = record(value);
        record.parsed = Some(parse_json(record.value.as_ref()));
        record
    }

    #[test]
    fn values_parse_into_fields_of_the_value() {
        let record = parsed(r#" {"a": 1, "b\u0041": "x\"y", "c": [1, {"d": null}], "e": "z"} "#);
        let Some(ParsedValue::Fields(fields)) = &record.parsed else {
            panic!("not parsed as fields: {:?}", record.parsed);
        };
        let value = record.value.as_ref().expect("value");
        let resolved: Vec<(&str, &str)> = fields
            .iter()
            .map(|field| field.resolve(value).expect("resolves"))
            .map(|(name, text)| (name, std::str::from_utf8(text).expect("utf-8")))
            .collect();
        assert_eq!(
            resolved,
            vec![
                ("a", "1"),
                ("bA", r#""x\"y""#),
                ("c", r#"[1, {"d": null}]"#),
                ("e", r#""z""#)
            ]
        );
        for (text, why) in [
            ("[1]", "a JSON array, not an object"),
            ("\"s\"", "a JSON string, not an object"),
            ("{\"a\": }", "not JSON"),
            ("{\"a\": 1} x", "not JSON"),
            ("nope", "not JSON"),
        ] {
            match parse_json(Some(&Bytes::from(text.to_string()))) {
                ParsedValue::Unfit(reason) => assert!(reason.contains(why), "{text}: {reason}"),
                other => panic!("{text} parsed as {other:?}"),
            }
        }
        assert_eq!(parse_json(None), ParsedValue::Tombstone);
    }

    #[test]
    fn rows_fill_typed_columns_and_unfit_records_go_whole_to_raw_value() {
        let value_types: BTreeMap<String, ValueType> = [
            ("id".to_string(), ValueType::Long),
            ("name".to_string(), ValueType::String),
            ("value_offset".to_string(), ValueType::Double),
        ]
        .into_iter()
        .collect();
        let schema = Arc::new(ArrowSchema::new(vec![
            Field::new("offset", DataType::Int64, false),
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("value_offset", DataType::Float64, true),
            Field::new("_raw_value", DataType::LargeBinary, true),
            Field::new("_error", DataType::Utf8, true),
        ]));
        let records = [
            parsed(r#"{"name": "a", "id": 1, "offset": 0.5}"#),
            parsed(r#"{"id": "two", "name": "b"}"#),
            parsed(r#"{"id": 3, "extra": true}"#),
            parsed("[3]"),
            parsed(r#"{"id": 4, "id": 5}"#),
        ];
        let rows: Vec<&ExportRecord> = records.iter().collect();
        let batch = to_record_batch(&schema, &value_types, &rows).expect("batch");
        let column = |name: &str| batch.column_by_name(name).expect(name).clone();
        let ids = column("id");
        let ids = ids.as_any().downcast_ref::<Int64Array>().expect("int64");
        assert_eq!(
            ids.iter().collect::<Vec<_>>(),
            vec![Some(1), None, Some(3), None, Some(5)]
        );
        let names = column("name");
        let names = names.as_any().downcast_ref::<StringArray>().expect("utf8");
        assert_eq!(
            names.iter().collect::<Vec<_>>(),
            vec![Some("a"), None, None, None, None]
        );
        let offsets = column("value_offset");
        let offsets = offsets
            .as_any()
            .downcast_ref::<arrow_array::Float64Array>()
            .expect("float64");
        assert_eq!(offsets.value(0), 0.5);
        let errors = column("_error");
        let errors = errors.as_any().downcast_ref::<StringArray>().expect("utf8");
        assert!(errors.is_null(0) && errors.is_null(2) && errors.is_null(4));
        assert!(
            errors
                .value(1)
                .contains("field \"id\": a JSON string is not a long")
        );
        assert!(errors.value(3).contains("array"));
        let raw = column("_raw_value");
        let raw = raw
            .as_any()
            .downcast_ref::<LargeBinaryArray>()
            .expect("binary");
        assert!(raw.is_null(0) && !raw.is_null(1) && !raw.is_null(3));
        assert_eq!(raw.value(1), br#"{"id": "two", "name": "b"}"#);
    }
}
