//! Record batches read from the log become table rows, and rows become Arrow record
//! batches in the table's current schema.

use std::collections::BTreeMap;
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
    pub parsed: Option<Arc<ParsedValue>>,
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
            let parsed = json.then(|| Arc::new(parse_json(value.as_ref())));
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
    /// A JSON object: its top-level fields.
    Fields(serde_json::Map<String, serde_json::Value>),
    /// A null value.
    Tombstone,
    /// Not JSON, or not an object: why.
    Unfit(String),
}

/// Parses one value for json mode.
pub fn parse_json(value: Option<&Bytes>) -> ParsedValue {
    let Some(bytes) = value else {
        return ParsedValue::Tombstone;
    };
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(serde_json::Value::Object(fields)) => ParsedValue::Fields(fields),
        Ok(other) => ParsedValue::Unfit(format!(
            "the value is a JSON {}, not an object",
            json_kind(&other)
        )),
        Err(error) => ParsedValue::Unfit(format!("the value is not JSON: {error}")),
    }
}

impl ExportRecord {
    /// The value as json mode reads it: the parse made at decoding, else a new one.
    fn json(&self) -> std::borrow::Cow<'_, ParsedValue> {
        match &self.parsed {
            Some(parsed) => std::borrow::Cow::Borrowed(parsed.as_ref()),
            None => std::borrow::Cow::Owned(parse_json(self.value.as_ref())),
        }
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// A typed cell, or why the JSON value does not fit the column's type.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Null,
    Boolean(bool),
    Int(i32),
    Long(i64),
    Float(f32),
    Double(f64),
    Text(String),
}

fn cell(value_type: ValueType, value: &serde_json::Value) -> Result<Cell, String> {
    use serde_json::Value;
    let unfit = || format!("a JSON {} is not a {}", json_kind(value), value_type.name());
    Ok(match (value_type, value) {
        (_, Value::Null) => Cell::Null,
        (ValueType::Json, Value::String(text)) => Cell::Text(text.clone()),
        (ValueType::Json, other) => Cell::Text(other.to_string()),
        (ValueType::String, Value::String(text)) => Cell::Text(text.clone()),
        (ValueType::Boolean, Value::Bool(flag)) => Cell::Boolean(*flag),
        (ValueType::Int, Value::Number(number)) => Cell::Int(
            number
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| format!("{number} is not an int"))?,
        ),
        (ValueType::Long, Value::Number(number)) => Cell::Long(
            number
                .as_i64()
                .ok_or_else(|| format!("{number} is not a long"))?,
        ),
        (ValueType::Float, Value::Number(number)) => {
            Cell::Float(number.as_f64().ok_or_else(unfit)? as f32)
        }
        (ValueType::Double, Value::Number(number)) => {
            Cell::Double(number.as_f64().ok_or_else(unfit)?)
        }
        _ => return Err(unfit()),
    })
}

/// The JSON fields of `records`' values that `known` columns do not hold, with the
/// widest type their values need (for a schema update before the rows are written).
pub fn new_json_fields(
    records: &[ExportRecord],
    known: &[(String, ValueType)],
) -> Vec<(String, ValueType)> {
    let known: std::collections::BTreeSet<&str> =
        known.iter().map(|(column, _)| field_name(column)).collect();
    let mut found: BTreeMap<String, ValueType> = BTreeMap::new();
    for record in records {
        let parsed = record.json();
        let ParsedValue::Fields(fields) = parsed.as_ref() else {
            continue;
        };
        for (name, value) in fields {
            if known.contains(name.as_str()) {
                continue;
            }
            if let Some(value_type) = ValueType::of(value) {
                let widened = found
                    .get(name)
                    .map_or(value_type, |seen| seen.widen(value_type));
                let _ = found.insert(name.clone(), widened);
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
    records: &[ExportRecord],
) -> Result<RecordBatch, TableError> {
    let json: Vec<std::borrow::Cow<'_, ParsedValue>> =
        if value_types.is_empty() && schema.field_with_name("value").is_ok() {
            Vec::new()
        } else {
            records.iter().map(ExportRecord::json).collect()
        };
    // A record whose value does not fit one column goes whole to `_raw_value`.
    let mut unfit: Vec<Option<String>> = json
        .iter()
        .map(|parsed| match parsed.as_ref() {
            ParsedValue::Unfit(reason) => Some(reason.clone()),
            _ => None,
        })
        .collect();
    let mut cells: BTreeMap<&str, Vec<Cell>> = BTreeMap::new();
    for (column, value_type) in value_types {
        let field = field_name(column);
        let mut column_cells = Vec::with_capacity(records.len());
        for (row, parsed) in json.iter().enumerate() {
            let value = match parsed.as_ref() {
                ParsedValue::Fields(fields) => fields.get(field),
                _ => None,
            };
            match value.map(|value| cell(*value_type, value)) {
                None => column_cells.push(Cell::Null),
                Some(Ok(cell)) => column_cells.push(cell),
                Some(Err(reason)) => {
                    if unfit[row].is_none() {
                        unfit[row] = Some(format!("field {field:?}: {reason}"));
                    }
                    column_cells.push(Cell::Null);
                }
            }
        }
        let _ = cells.insert(column.as_str(), column_cells);
    }
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
            name => {
                let column_cells = cells.get(name).ok_or_else(|| {
                    TableError::Schema(format!(
                        "the table has a column {name:?} Silt does not fill"
                    ))
                })?;
                typed_array(field.data_type(), column_cells, &unfit)?
            }
        };
        columns.push(column);
    }
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// A typed value column; rows of unfit records are null (their value is in `_raw_value`).
fn typed_array(
    data_type: &DataType,
    cells: &[Cell],
    unfit: &[Option<String>],
) -> Result<ArrayRef, TableError> {
    let kept = cells
        .iter()
        .zip(unfit)
        .map(|(cell, unfit)| if unfit.is_some() { &Cell::Null } else { cell });
    let mismatch = || {
        TableError::Schema(format!(
            "a value column of type {data_type} cannot be filled"
        ))
    };
    Ok(match data_type {
        DataType::Boolean => {
            let mut builder = BooleanBuilder::with_capacity(cells.len());
            for cell in kept {
                builder.append_option(match cell {
                    Cell::Boolean(flag) => Some(*flag),
                    _ => None,
                });
            }
            Arc::new(builder.finish())
        }
        DataType::Int32 => {
            let mut builder = Int32Builder::with_capacity(cells.len());
            for cell in kept {
                builder.append_option(match cell {
                    Cell::Int(n) => Some(*n),
                    _ => None,
                });
            }
            Arc::new(builder.finish())
        }
        DataType::Int64 => {
            let mut builder = Int64Builder::with_capacity(cells.len());
            for cell in kept {
                builder.append_option(match cell {
                    Cell::Long(n) => Some(*n),
                    _ => None,
                });
            }
            Arc::new(builder.finish())
        }
        DataType::Float32 => {
            let mut builder = Float32Builder::with_capacity(cells.len());
            for cell in kept {
                builder.append_option(match cell {
                    Cell::Float(n) => Some(*n),
                    _ => None,
                });
            }
            Arc::new(builder.finish())
        }
        DataType::Float64 => {
            let mut builder = Float64Builder::with_capacity(cells.len());
            for cell in kept {
                builder.append_option(match cell {
                    Cell::Double(n) => Some(*n),
                    _ => None,
                });
            }
            Arc::new(builder.finish())
        }
        DataType::Utf8 => {
            let mut builder = StringBuilder::with_capacity(cells.len(), 16 * cells.len());
            for cell in kept {
                builder.append_option(match cell {
                    Cell::Text(text) => Some(text.as_str()),
                    _ => None,
                });
            }
            Arc::new(builder.finish())
        }
        _ => return Err(mismatch()),
    })
}

/// `headers`: a list per record of (key, value) structs, empty for a record without
/// headers.
fn headers_array(field: &Field, records: &[ExportRecord]) -> Result<ArrayRef, TableError> {
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
        assert_eq!(
            cell(ValueType::Long, &serde_json::json!(3)),
            Ok(Cell::Long(3))
        );
        assert_eq!(
            cell(ValueType::Double, &serde_json::json!(3)),
            Ok(Cell::Double(3.0))
        );
        assert_eq!(
            cell(ValueType::Json, &serde_json::json!({"a": 1})),
            Ok(Cell::Text("{\"a\":1}".to_string()))
        );
        assert!(cell(ValueType::Long, &serde_json::json!(2.5)).is_err());
        assert!(cell(ValueType::Long, &serde_json::json!("7")).is_err());
        assert!(cell(ValueType::Int, &serde_json::json!(1i64 << 40)).is_err());
        assert_eq!(
            cell(ValueType::Boolean, &serde_json::Value::Null),
            Ok(Cell::Null)
        );
    }
}
