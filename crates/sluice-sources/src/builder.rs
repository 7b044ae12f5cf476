//! Typed Arrow column builders shared by the PostgreSQL and SQLite readers: one enum so the
//! per-value hot loop is a `match` rather than a dynamic dispatch through `ArrayBuilder`.

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int64Builder,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow_schema::{DataType, SchemaRef, TimeUnit};
use std::sync::Arc;

pub(crate) enum Col {
    Bool(BooleanBuilder),
    I64(Int64Builder),
    F64(Float64Builder),
    Dec(Decimal128Builder),
    Str(StringBuilder),
    Bin(BinaryBuilder),
    Date(Date32Builder),
    Ts(TimestampMicrosecondBuilder),
}

impl Col {
    /// A builder for one of the data types this crate produces (see `pg::arrow_type` and
    /// `sqlite::arrow_type`); anything else is a bug, reported as a panic-free fallback to text.
    pub(crate) fn new(dt: &DataType, cap: usize) -> Col {
        match dt {
            DataType::Boolean => Col::Bool(BooleanBuilder::with_capacity(cap)),
            DataType::Int64 => Col::I64(Int64Builder::with_capacity(cap)),
            DataType::Float64 => Col::F64(Float64Builder::with_capacity(cap)),
            DataType::Decimal128(p, s) => Col::Dec(
                Decimal128Builder::with_capacity(cap).with_data_type(DataType::Decimal128(*p, *s)),
            ),
            DataType::Binary => Col::Bin(BinaryBuilder::with_capacity(cap, cap * 16)),
            DataType::Date32 => Col::Date(Date32Builder::with_capacity(cap)),
            DataType::Timestamp(TimeUnit::Microsecond, tz) => Col::Ts(
                TimestampMicrosecondBuilder::with_capacity(cap)
                    .with_data_type(DataType::Timestamp(TimeUnit::Microsecond, tz.clone())),
            ),
            _ => Col::Str(StringBuilder::with_capacity(cap, cap * 16)),
        }
    }

    pub(crate) fn append_null(&mut self) {
        match self {
            Col::Bool(b) => b.append_null(),
            Col::I64(b) => b.append_null(),
            Col::F64(b) => b.append_null(),
            Col::Dec(b) => b.append_null(),
            Col::Str(b) => b.append_null(),
            Col::Bin(b) => b.append_null(),
            Col::Date(b) => b.append_null(),
            Col::Ts(b) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Col::Bool(b) => Arc::new(b.finish()),
            Col::I64(b) => Arc::new(b.finish()),
            Col::F64(b) => Arc::new(b.finish()),
            Col::Dec(b) => Arc::new(b.finish()),
            Col::Str(b) => Arc::new(b.finish()),
            Col::Bin(b) => Arc::new(b.finish()),
            Col::Date(b) => Arc::new(b.finish()),
            Col::Ts(b) => Arc::new(b.finish()),
        }
    }
}

pub(crate) fn new_cols(schema: &SchemaRef, cap: usize) -> Vec<Col> {
    schema
        .fields()
        .iter()
        .map(|f| Col::new(f.data_type(), cap))
        .collect()
}

/// Finish the builders into a batch; builders are reset and reusable for the next batch.
/// `rows` matters only for a statement without columns (`select from t`), which Arrow can
/// still represent as a row count.
pub(crate) fn finish(
    schema: &SchemaRef,
    cols: &mut [Col],
    rows: usize,
) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let arrays: Vec<ArrayRef> = cols.iter_mut().map(Col::finish).collect();
    RecordBatch::try_new_with_options(
        schema.clone(),
        arrays,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
}
