//! Arbitrary JSON objects for fuzzing and property tests: integers, strings, booleans and
//! nesting, never floats (which do not round-trip through text exactly).

use arbitrary::{Result, Unstructured};
use serde_json::{Map, Value};

/// An arbitrary JSON object, at most a few levels deep.
pub fn object(u: &mut Unstructured<'_>) -> Result<Value> {
    Ok(Value::Object(map(u, 3)?))
}

fn map(u: &mut Unstructured<'_>, depth: u32) -> Result<Map<String, Value>> {
    let mut map = Map::new();
    let len = u.int_in_range(0..=4)?;
    for _ in 0..len {
        map.insert(u.arbitrary()?, value(u, depth)?);
    }
    Ok(map)
}

fn value(u: &mut Unstructured<'_>, depth: u32) -> Result<Value> {
    let choice = if depth == 0 {
        u.int_in_range(0..=3)?
    } else {
        u.int_in_range(0..=5)?
    };
    Ok(match choice {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => Value::from(u.arbitrary::<i64>()?),
        3 => Value::String(u.arbitrary()?),
        4 => Value::Array(
            (0..u.int_in_range(0..=3)?)
                .map(|_| value(u, depth - 1))
                .collect::<Result<_>>()?,
        ),
        _ => Value::Object(map(u, depth - 1)?),
    })
}
