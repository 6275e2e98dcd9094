//! Typed access to ONNX node attributes, with defaults and type checks.

use super::{Cx, ImportError};
use tract_onnx::pb;
use tract_onnx::pb::attribute_proto::AttributeType as A;

pub(crate) struct Attrs<'a> {
    n: &'a pb::NodeProto,
}

impl<'a> Attrs<'a> {
    pub fn of(n: &'a pb::NodeProto) -> Self {
        Self { n }
    }

    fn get(&self, name: &str, want: A) -> Result<Option<&'a pb::AttributeProto>, ImportError> {
        match self.n.attribute.iter().find(|a| a.name == name) {
            None => Ok(None),
            Some(a) => {
                // Old exporters leave `type` unset; accept that when the field is populated.
                if a.r#type != want as i32 && a.r#type != A::Undefined as i32 {
                    let got = A::try_from(a.r#type)
                        .map(|t| t.as_str_name())
                        .unwrap_or("unknown");
                    return Err(Cx::err(
                        self.n,
                        format!(
                            "attribute `{name}` must be {}, got {got}",
                            want.as_str_name()
                        ),
                    ));
                }
                Ok(Some(a))
            }
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.n.attribute.iter().any(|a| a.name == name)
    }

    pub fn int(&self, name: &str, default: i64) -> Result<i64, ImportError> {
        Ok(self.get(name, A::Int)?.map_or(default, |a| a.i))
    }

    pub fn float(&self, name: &str, default: f32) -> Result<f32, ImportError> {
        Ok(self.get(name, A::Float)?.map_or(default, |a| a.f))
    }

    pub fn ints(&self, name: &str) -> Result<Option<Vec<i64>>, ImportError> {
        Ok(self.get(name, A::Ints)?.map(|a| a.ints.clone()))
    }

    pub fn floats(&self, name: &str) -> Result<Option<Vec<f32>>, ImportError> {
        Ok(self.get(name, A::Floats)?.map(|a| a.floats.clone()))
    }

    pub fn string(&self, name: &str, default: &str) -> Result<String, ImportError> {
        Ok(self.get(name, A::String)?.map_or_else(
            || default.to_string(),
            |a| String::from_utf8_lossy(&a.s).into_owned(),
        ))
    }

    pub fn tensor(&self, name: &str) -> Result<Option<&'a pb::TensorProto>, ImportError> {
        Ok(self.get(name, A::Tensor)?.and_then(|a| a.t.as_ref()))
    }

    /// A non-negative list attribute as `usize`s.
    pub fn usizes(&self, name: &str) -> Result<Option<Vec<usize>>, ImportError> {
        match self.ints(name)? {
            None => Ok(None),
            Some(v) => v
                .into_iter()
                .map(|x| {
                    usize::try_from(x).map_err(|_| {
                        Cx::err(self.n, format!("attribute `{name}` has negative value {x}"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
        }
    }
}

/// Normalizes a possibly negative axis against `rank`.
pub(crate) fn axis(n: &pb::NodeProto, a: i64, rank: usize) -> Result<usize, ImportError> {
    let r = rank as i64;
    let v = if a < 0 { a + r } else { a };
    if (0..r.max(1)).contains(&v) {
        Ok(v as usize)
    } else {
        Err(Cx::err(
            n,
            format!("axis {a} is out of range for rank {rank}"),
        ))
    }
}
