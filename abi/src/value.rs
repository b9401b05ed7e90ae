//! The value type stored in dataframes and passed across the plugin boundary.
//!
//! [`Value`] is `#[repr(u8)]` and derives `StableAbi`, so it crosses between the
//! host and a plugin unchanged. Plugin authors rarely need its variants: use
//! the `From` conversions to build one (`Value::from(3)`, `"text".into()`) and
//! the `as_*` accessors or `TryFrom` to read one back.

use std::fmt;

use abi_stable::StableAbi;
use abi_stable::std_types::{RString, RVec, Tuple2};

/// A dynamically typed value: what a dataframe key holds.
///
/// Maps keep insertion order and are looked up linearly with [`Value::get`];
/// they are meant for small records, not for large indexes (use a dataframe
/// key per record for that).
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub enum Value {
    /// No value.
    #[default]
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed 64-bit integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// A UTF-8 string.
    Str(RString),
    /// Raw bytes.
    Bytes(RVec<u8>),
    /// An ordered list of values.
    List(RVec<Value>),
    /// An ordered map from string keys to values.
    Map(RVec<Tuple2<RString, Value>>),
}

impl Value {
    /// The name of this value's type, as used in error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Map(_) => "map",
        }
    }

    /// True for [`Value::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The integer, if this is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The number as a float, if this is an integer or a float.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            #[expect(clippy::cast_precision_loss, reason = "documented widening to f64")]
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s.as_str()),
            _ => None,
        }
    }

    /// The bytes, if this is a byte string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b.as_slice()),
            _ => None,
        }
    }

    /// The items, if this is a list.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(l) => Some(l.as_slice()),
            _ => None,
        }
    }

    /// The value under `key`, if this is a map that has it.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(m) => m.iter().find(|kv| kv.0.as_str() == key).map(|kv| &kv.1),
            _ => None,
        }
    }

    /// The entries, if this is a map, in insertion order.
    pub fn entries(&self) -> Option<impl Iterator<Item = (&str, &Value)>> {
        match self {
            Value::Map(m) => Some(m.iter().map(|kv| (kv.0.as_str(), &kv.1))),
            _ => None,
        }
    }

    /// Builds a map from key/value pairs, keeping their order.
    pub fn map<K, V, I>(entries: I) -> Value
    where
        K: Into<String>,
        V: Into<Value>,
        I: IntoIterator<Item = (K, V)>,
    {
        Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| Tuple2(RString::from(k.into()), v.into()))
                .collect(),
        )
    }

    /// Builds a byte-string value.
    pub fn bytes(bytes: impl Into<Vec<u8>>) -> Value {
        Value::Bytes(RVec::from(bytes.into()))
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Str(s) => write!(f, "{:?}", s.as_str()),
            Value::Bytes(b) => write!(f, "<{} bytes>", b.len()),
            Value::List(l) => {
                f.write_str("[")?;
                for (i, v) in l.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            Value::Map(m) => {
                f.write_str("{")?;
                for (i, kv) in m.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{} = {}", kv.0, kv.1)?;
                }
                f.write_str("}")
            }
        }
    }
}

macro_rules! from_int {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Value {
                Value::Int(i64::from(v))
            }
        }
    )*};
}
from_int!(i8, i16, i32, i64, u8, u16, u32);

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Float(v)
    }
}
impl From<f32> for Value {
    fn from(v: f32) -> Value {
        Value::Float(f64::from(v))
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Str(RString::from(v))
    }
}
impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Str(RString::from(v))
    }
}
impl From<()> for Value {
    fn from((): ()) -> Value {
        Value::Null
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}
impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(v: Vec<T>) -> Value {
        Value::List(v.into_iter().map(Into::into).collect())
    }
}

/// The error of a failed `TryFrom<Value>`: the value had another type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeMismatch {
    /// The type that was asked for.
    pub expected: &'static str,
    /// The type the value had.
    pub found: &'static str,
}

impl fmt::Display for TypeMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "expected {}, found {}", self.expected, self.found)
    }
}

impl std::error::Error for TypeMismatch {}

macro_rules! try_from_value {
    ($t:ty, $name:literal, $pat:pat => $out:expr) => {
        impl TryFrom<Value> for $t {
            type Error = TypeMismatch;
            fn try_from(v: Value) -> Result<$t, TypeMismatch> {
                match v {
                    $pat => Ok($out),
                    other => Err(TypeMismatch {
                        expected: $name,
                        found: other.type_name(),
                    }),
                }
            }
        }
    };
}
try_from_value!(bool, "bool", Value::Bool(b) => b);
try_from_value!(i64, "integer", Value::Int(i) => i);
try_from_value!(String, "string", Value::Str(s) => s.into_string());
try_from_value!(Vec<u8>, "bytes", Value::Bytes(b) => b.into_vec());

impl TryFrom<Value> for f64 {
    type Error = TypeMismatch;
    fn try_from(v: Value) -> Result<f64, TypeMismatch> {
        v.as_f64().ok_or(TypeMismatch {
            expected: "number",
            found: v.type_name(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_trip() {
        assert_eq!(i64::try_from(Value::from(42)), Ok(42));
        assert_eq!(f64::try_from(Value::from(2)), Ok(2.0));
        assert_eq!(String::try_from(Value::from("hi")), Ok("hi".to_owned()));
        assert_eq!(bool::try_from(Value::from(true)), Ok(true));
        assert_eq!(
            i64::try_from(Value::from("x")).unwrap_err().to_string(),
            "expected integer, found string"
        );
    }

    #[test]
    fn maps_keep_order_and_look_up() {
        let m = Value::map([("b", Value::from(1)), ("a", Value::from("x"))]);
        assert_eq!(m.get("a").and_then(Value::as_str), Some("x"));
        assert_eq!(m.to_string(), "{b = 1, a = \"x\"}");
        assert!(m.get("zz").is_none());
    }
}
