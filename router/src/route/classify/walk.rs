//! Whether anything below a read writes, found by visiting every node of a
//! `pg_query` parse tree.
//!
//! The crate's own node iterator visits only some node kinds (not
//! `ARRAY[...]`, window clauses, ...), and a walk that misses one kind sends
//! a write to a replica. The tree types do derive `serde::Serialize`, which
//! reaches every field of every node, so this module is a serde serializer
//! that writes nothing: it watches the names going past. A node arrives as
//! the enum variant of its kind (`FuncCall`, `SelectStmt`, ...) holding a
//! struct of that name, and a struct's fields arrive with their names. No
//! tree is built: the walk adds well under a microsecond to a miss, where
//! converting the tree to `serde_json::Value` and walking that cost twice the
//! parse itself.

use std::fmt;

use serde::ser::{self, Serialize};

/// What the walk looks for.
pub(super) struct Walk<'a> {
    /// Reports whether a function, given its name parts, writes.
    is_writer: &'a dyn Fn(&[String]) -> bool,
    /// A write was found; the walk stops.
    found: bool,
    /// The struct and field whose value is being visited.
    field: Option<(&'static str, &'static str)>,
    /// Inside a FuncCall's `funcname`: its `sval` strings.
    funcname: Option<Vec<String>>,
}

/// Stops the walk once a write is found.
#[derive(Debug)]
pub(super) struct Found;

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("found")
    }
}

impl std::error::Error for Found {}

impl ser::Error for Found {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Found
    }
}

/// Whether `tree` contains a data-modifying statement (INSERT, UPDATE,
/// DELETE, MERGE), a SELECT with a locking clause or INTO, or a call to a
/// function `is_writer` accepts.
pub(super) fn writes<T: Serialize>(tree: &T, is_writer: &dyn Fn(&[String]) -> bool) -> bool {
    let mut w = Walk { is_writer, found: false, field: None, funcname: None };
    // An error is either Found or, should a serializer quirk ever fail the
    // walk, no answer: both are treated as a write.
    tree.serialize(&mut w).is_err() || w.found
}

impl Walk<'_> {
    fn found(&mut self) -> Result<(), Found> {
        self.found = true;
        Err(Found)
    }

    /// The field whose value starts now, forgotten for anything nested.
    fn take_field(&mut self) -> Option<(&'static str, &'static str)> {
        self.field.take()
    }
}

type R = Result<(), Found>;

impl<'a, 'b> ser::Serializer for &'a mut Walk<'b> {
    type Ok = ();
    type Error = Found;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Struct<'a, 'b>;
    type SerializeStructVariant = Struct<'a, 'b>;

    fn serialize_bool(self, _: bool) -> R {
        self.take_field();
        Ok(())
    }
    fn serialize_i8(self, _: i8) -> R {
        self.take_field();
        Ok(())
    }
    fn serialize_i16(self, _: i16) -> R {
        self.take_field();
        Ok(())
    }
    fn serialize_i32(self, _: i32) -> R {
        self.take_field();
        Ok(())
    }
    fn serialize_i64(self, _: i64) -> R {
        self.take_field();
        Ok(())
    }
    fn serialize_u8(self, _: u8) -> R {
        self.take_field();
        Ok(())
    }
    fn serialize_u16(self, _: u16) -> R {
        self.take_field();
        Ok(())
    }
    fn serialize_u32(self, _: u32) -> R {
        self.take_field();
        Ok(())
    }
    fn serialize_u64(self, _: u64) -> R {
        self.take_field();
        Ok(())
    }
    fn serialize_f32(self, _: f32) -> R {
        self.take_field();
        Ok(())
    }
    fn serialize_f64(self, _: f64) -> R {
        self.take_field();
        Ok(())
    }
    fn serialize_char(self, _: char) -> R {
        self.take_field();
        Ok(())
    }
    fn serialize_str(self, v: &str) -> R {
        if let (Some(("String", "sval")), Some(names)) = (self.take_field(), self.funcname.as_mut()) {
            names.push(v.to_owned());
        }
        Ok(())
    }
    fn serialize_bytes(self, _: &[u8]) -> R {
        self.take_field();
        Ok(())
    }
    fn serialize_none(self) -> R {
        self.take_field();
        Ok(())
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> R {
        if self.take_field() == Some(("SelectStmt", "into_clause")) {
            return self.found();
        }
        value.serialize(self)
    }
    fn serialize_unit(self) -> R {
        self.take_field();
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> R {
        self.take_field();
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> R {
        self.take_field();
        Ok(())
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _: &'static str, value: &T) -> R {
        self.take_field();
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> R {
        self.take_field();
        match variant {
            "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" => self.found(),
            _ => value.serialize(self),
        }
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Self, Found> {
        if self.take_field() == Some(("SelectStmt", "locking_clause")) && len != Some(0) {
            self.found()?;
        }
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, Found> {
        self.take_field();
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, Found> {
        self.take_field();
        Ok(self)
    }
    fn serialize_tuple_variant(self, _: &'static str, _: u32, _: &'static str, _: usize) -> Result<Self, Found> {
        self.take_field();
        Ok(self)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self, Found> {
        self.take_field();
        Ok(self)
    }
    fn serialize_struct(self, name: &'static str, _: usize) -> Result<Struct<'a, 'b>, Found> {
        self.take_field();
        Ok(Struct { walk: self, name })
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Struct<'a, 'b>, Found> {
        self.take_field();
        Ok(Struct { walk: self, name: variant })
    }
}

/// A struct being visited: its fields arrive with their names.
pub(super) struct Struct<'a, 'b> {
    walk: &'a mut Walk<'b>,
    name: &'static str,
}

impl Struct<'_, '_> {
    fn field<T: ?Sized + Serialize>(&mut self, key: &'static str, value: &T) -> R {
        if (self.name, key) == ("FuncCall", "funcname") {
            let outer = self.walk.funcname.replace(Vec::new());
            let result = value.serialize(&mut *self.walk);
            let names = std::mem::replace(&mut self.walk.funcname, outer).unwrap_or_default();
            result?;
            if (self.walk.is_writer)(&names) {
                return self.walk.found();
            }
            return Ok(());
        }
        self.walk.field = Some((self.name, key));
        value.serialize(&mut *self.walk)
    }
}

impl ser::SerializeStruct for Struct<'_, '_> {
    type Ok = ();
    type Error = Found;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, key: &'static str, value: &T) -> R {
        self.field(key, value)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeStructVariant for Struct<'_, '_> {
    type Ok = ();
    type Error = Found;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, key: &'static str, value: &T) -> R {
        self.field(key, value)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeSeq for &mut Walk<'_> {
    type Ok = ();
    type Error = Found;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> R {
        value.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeTuple for &mut Walk<'_> {
    type Ok = ();
    type Error = Found;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> R {
        value.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeTupleStruct for &mut Walk<'_> {
    type Ok = ();
    type Error = Found;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> R {
        value.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeTupleVariant for &mut Walk<'_> {
    type Ok = ();
    type Error = Found;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> R {
        value.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeMap for &mut Walk<'_> {
    type Ok = ();
    type Error = Found;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> R {
        key.serialize(&mut **self)
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> R {
        value.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}
