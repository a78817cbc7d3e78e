//! A reader for MATLAB Level 5 MAT-files (the format of `save -v7` and older).
//!
//! Supports what the WIDER FACE evaluation files use and a little more: the 128-byte header
//! (either byte order), data-element tags in the normal and the small (packed) format,
//! `miCOMPRESSED` (zlib) elements, and `miMATRIX` arrays of the classes cell (nested),
//! struct, char (UTF-8/16/32, uint8 and uint16 data) and every real or complex numeric class.
//! Sparse arrays, objects and MAT v7.3 (HDF5) files are refused with an error.
//!
//! Every length is checked against the bytes that are really there before anything is
//! allocated, nesting is bounded, and decompression stops at [`MAX_DECOMPRESSED_BYTES`], so a
//! damaged or hostile file gives an error, never a panic or an unbounded allocation.
//!
//! Numeric data are converted to `f64` whatever their storage type (MATLAB often stores a
//! double array as uint8 to save space); 64-bit integers beyond 2^53 lose precision.
//! Arrays keep MATLAB's column-major order: element `(r, c)` of an `m×n` array is at
//! `r + c·m`.

use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest decompressed size accepted for one `miCOMPRESSED` element.
pub const MAX_DECOMPRESSED_BYTES: u64 = 256 << 20;
/// The deepest nesting of cells and structs accepted.
pub const MAX_DEPTH: usize = 64;

/// Why a MAT-file was refused.
#[derive(Debug, thiserror::Error)]
pub enum MatError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A parse error in a named file.
    #[error("{path}: {source}")]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: Box<MatError>,
    },
    /// The bytes are not a Level 5 MAT-file.
    #[error("not a MATLAB 5 MAT-file: {0}")]
    NotMat5(String),
    /// The file ends inside an element.
    #[error("truncated at byte {offset}: {what}")]
    Truncated {
        /// Offset (in the file, or in the decompressed element) where more bytes were needed.
        offset: usize,
        /// What was being read.
        what: String,
    },
    /// An element is inconsistent.
    #[error("invalid data at byte {offset}: {reason}")]
    Invalid {
        /// Offset of the element.
        offset: usize,
        /// What is inconsistent.
        reason: String,
    },
    /// A valid but unsupported construct (sparse arrays, objects, …).
    #[error("unsupported at byte {offset}: {what}")]
    Unsupported {
        /// Offset of the element.
        offset: usize,
        /// What is not supported.
        what: String,
    },
    /// A compressed element could not be inflated.
    #[error("bad compressed element at byte {offset}: {reason}")]
    Decompress {
        /// Offset of the element.
        offset: usize,
        /// The inflater's complaint.
        reason: String,
    },
}

/// The class of a MATLAB array (`mxCLASS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatClass {
    /// Cell array.
    Cell,
    /// Structure array.
    Struct,
    /// Character array.
    Char,
    /// `double`.
    Double,
    /// `single`.
    Single,
    /// `int8`.
    Int8,
    /// `uint8` (also the storage of `logical`).
    UInt8,
    /// `int16`.
    Int16,
    /// `uint16`.
    UInt16,
    /// `int32`.
    Int32,
    /// `uint32`.
    UInt32,
    /// `int64`.
    Int64,
    /// `uint64`.
    UInt64,
}

impl MatClass {
    fn from_code(code: u32, offset: usize) -> Result<MatClass, MatError> {
        Ok(match code {
            1 => MatClass::Cell,
            2 => MatClass::Struct,
            4 => MatClass::Char,
            6 => MatClass::Double,
            7 => MatClass::Single,
            8 => MatClass::Int8,
            9 => MatClass::UInt8,
            10 => MatClass::Int16,
            11 => MatClass::UInt16,
            12 => MatClass::Int32,
            13 => MatClass::UInt32,
            14 => MatClass::Int64,
            15 => MatClass::UInt64,
            3 => return unsupported(offset, "MATLAB object arrays"),
            5 => return unsupported(offset, "sparse arrays"),
            16 | 17 => return unsupported(offset, "function handles and opaque objects"),
            other => {
                return Err(MatError::Invalid {
                    offset,
                    reason: format!("unknown array class {other}"),
                })
            }
        })
    }

    /// Whether this is one of the numeric classes.
    pub fn is_numeric(self) -> bool {
        !matches!(self, MatClass::Cell | MatClass::Struct | MatClass::Char)
    }
}

/// The contents of an array.
#[derive(Debug, Clone, PartialEq)]
pub enum MatData {
    /// Numeric values (any numeric class), column-major, converted to `f64`.
    Numeric {
        /// Real parts.
        real: Vec<f64>,
        /// Imaginary parts, for complex arrays.
        imag: Option<Vec<f64>>,
    },
    /// Characters, column-major.
    Char(Vec<char>),
    /// Cells, column-major.
    Cell(Vec<MatArray>),
    /// A structure array: `values[e * field_names.len() + f]` is field `f` of element `e`.
    Struct {
        /// Field names in file order.
        field_names: Vec<String>,
        /// Field values.
        values: Vec<MatArray>,
    },
}

/// One MATLAB array: a top-level variable or an element of a cell or struct.
#[derive(Debug, Clone, PartialEq)]
pub struct MatArray {
    /// The variable name (empty inside cells).
    pub name: String,
    /// The class.
    pub class: MatClass,
    /// Dimensions (at least two).
    pub dims: Vec<usize>,
    /// Whether the array is `logical`.
    pub logical: bool,
    /// The data, `dims.iter().product()` elements long.
    pub data: MatData,
}

impl MatArray {
    /// Number of elements (the product of the dimensions).
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    /// True when the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.numel() == 0
    }

    /// True when the array is 2-D with at most one row or at most one column.
    pub fn is_vector(&self) -> bool {
        self.dims.len() == 2 && (self.dims[0] <= 1 || self.dims[1] <= 1)
    }

    /// The cells of a cell array, column-major.
    pub fn as_cell(&self) -> Option<&[MatArray]> {
        match &self.data {
            MatData::Cell(cells) => Some(cells),
            _ => None,
        }
    }

    /// The real parts of a numeric array, column-major.
    pub fn as_f64(&self) -> Option<&[f64]> {
        match &self.data {
            MatData::Numeric { real, .. } => Some(real),
            _ => None,
        }
    }

    /// A char array with one row (or an empty one) as a string.
    pub fn as_string(&self) -> Option<String> {
        match &self.data {
            MatData::Char(chars) if self.dims.len() == 2 && self.dims[0] <= 1 => {
                Some(chars.iter().collect())
            }
            _ => None,
        }
    }

    /// The rows of a 2-D char array (MATLAB's padded string matrix).
    pub fn char_rows(&self) -> Option<Vec<String>> {
        match &self.data {
            MatData::Char(chars) if self.dims.len() == 2 => {
                let (m, n) = (self.dims[0], self.dims[1]);
                Some(
                    (0..m)
                        .map(|r| (0..n).filter_map(|c| chars.get(r + c * m)).collect())
                        .collect(),
                )
            }
            _ => None,
        }
    }

    /// Field `name` of element `index` of a struct array.
    pub fn field(&self, index: usize, name: &str) -> Option<&MatArray> {
        match &self.data {
            MatData::Struct {
                field_names,
                values,
            } => {
                let f = field_names.iter().position(|n| n == name)?;
                values.get(index * field_names.len() + f)
            }
            _ => None,
        }
    }
}

/// A parsed MAT-file: its header text and its variables in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct MatFile {
    /// The descriptive text of the header (`MATLAB 5.0 MAT-file, Platform: …`), trimmed.
    pub header: String,
    /// The variables.
    pub variables: Vec<MatArray>,
}

impl MatFile {
    /// Reads and parses a file; errors name the file.
    pub fn open(path: &Path) -> Result<MatFile, MatError> {
        let bytes = std::fs::read(path).map_err(|source| MatError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        MatFile::from_bytes(&bytes).map_err(|e| MatError::InFile {
            path: path.to_path_buf(),
            source: Box::new(e),
        })
    }

    /// Parses the bytes of a MAT-file.
    pub fn from_bytes(bytes: &[u8]) -> Result<MatFile, MatError> {
        if bytes.len() < 128 {
            return Err(MatError::NotMat5(format!(
                "{} bytes, shorter than the 128-byte header",
                bytes.len()
            )));
        }
        let text = String::from_utf8_lossy(&bytes[..116]);
        let header = text.trim_end_matches(['\0', ' ']).trim().to_string();
        if header.starts_with("MATLAB 7.3") || bytes.get(512..516) == Some(b"\x89HDF") {
            return Err(MatError::NotMat5(
                "a MAT v7.3 file (HDF5), which this reader does not support; save with -v7".into(),
            ));
        }
        let big_endian = match &bytes[126..128] {
            b"IM" => false,
            b"MI" => true,
            _ => {
                return Err(MatError::NotMat5(
                    "no endian indicator at bytes 126-127".into(),
                ))
            }
        };
        let r = Reader { big_endian };
        let version = r.u16(&bytes[124..126]);
        if version != 0x0100 {
            return Err(MatError::NotMat5(format!(
                "version 0x{version:04x}, expected 0x0100"
            )));
        }
        let mut variables = Vec::new();
        let mut pos = 128;
        while pos < bytes.len() {
            // Some writers pad the file; a tail of zeros shorter than a tag is no element.
            if bytes.len() - pos < 8 && bytes[pos..].iter().all(|&b| b == 0) {
                break;
            }
            let el = r.element(bytes, pos, bytes.len())?;
            match el.dtype {
                MI_COMPRESSED => {
                    let inflated = inflate(el.data, pos)?;
                    let mut ipos = 0;
                    while ipos < inflated.len() {
                        let inner = r.element(&inflated, ipos, inflated.len())?;
                        variables.push(r.top_level_matrix(&inner, ipos, &inflated)?);
                        ipos = inner.next;
                    }
                }
                _ => variables.push(r.top_level_matrix(&el, pos, bytes)?),
            }
            pos = el.next;
        }
        Ok(MatFile { header, variables })
    }

    /// The variable called `name`.
    pub fn get(&self, name: &str) -> Option<&MatArray> {
        self.variables.iter().find(|v| v.name == name)
    }

    /// The variable names in file order.
    pub fn names(&self) -> Vec<&str> {
        self.variables.iter().map(|v| v.name.as_str()).collect()
    }
}

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;
const MI_UTF8: u32 = 16;
const MI_UTF16: u32 = 17;
const MI_UTF32: u32 = 18;

fn unsupported<T>(offset: usize, what: &str) -> Result<T, MatError> {
    Err(MatError::Unsupported {
        offset,
        what: what.to_string(),
    })
}

fn invalid<T>(offset: usize, reason: impl Into<String>) -> Result<T, MatError> {
    Err(MatError::Invalid {
        offset,
        reason: reason.into(),
    })
}

fn inflate(data: &[u8], offset: usize) -> Result<Vec<u8>, MatError> {
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(data)
        .take(MAX_DECOMPRESSED_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| MatError::Decompress {
            offset,
            reason: e.to_string(),
        })?;
    if out.len() as u64 > MAX_DECOMPRESSED_BYTES {
        return Err(MatError::Decompress {
            offset,
            reason: format!("inflates to more than {MAX_DECOMPRESSED_BYTES} bytes"),
        });
    }
    Ok(out)
}

/// One data element: its type, its payload and where the next element starts.
struct Element<'a> {
    dtype: u32,
    data: &'a [u8],
    /// Offset of the payload in the buffer it came from.
    start: usize,
    next: usize,
}

#[derive(Clone, Copy)]
struct Reader {
    big_endian: bool,
}

impl Reader {
    fn u16(&self, b: &[u8]) -> u16 {
        let a = [b[0], b[1]];
        if self.big_endian {
            u16::from_be_bytes(a)
        } else {
            u16::from_le_bytes(a)
        }
    }

    fn u32(&self, b: &[u8]) -> u32 {
        let a = [b[0], b[1], b[2], b[3]];
        if self.big_endian {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    }

    fn u64(&self, b: &[u8]) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[..8]);
        if self.big_endian {
            u64::from_be_bytes(a)
        } else {
            u64::from_le_bytes(a)
        }
    }

    /// Reads the element whose tag is at `pos`, not reaching past `end`.
    fn element<'a>(&self, buf: &'a [u8], pos: usize, end: usize) -> Result<Element<'a>, MatError> {
        if end.saturating_sub(pos) < 8 {
            return Err(MatError::Truncated {
                offset: pos,
                what: "data element tag".into(),
            });
        }
        let first = self.u32(&buf[pos..pos + 4]);
        if first >> 16 != 0 {
            // Small data element: type and size packed into 4 bytes, data in the next 4.
            let dtype = first & 0xffff;
            let nbytes = (first >> 16) as usize;
            if nbytes > 4 {
                return invalid(pos, format!("small data element of {nbytes} bytes"));
            }
            return Ok(Element {
                dtype,
                data: &buf[pos + 4..pos + 4 + nbytes],
                start: pos + 4,
                next: pos + 8,
            });
        }
        let nbytes = self.u32(&buf[pos + 4..pos + 8]) as usize;
        let start = pos + 8;
        let stop = start
            .checked_add(nbytes)
            .filter(|&s| s <= end)
            .ok_or_else(|| MatError::Truncated {
                offset: pos,
                what: format!(
                    "element of type {first} declares {nbytes} bytes, {} remain",
                    end - start
                ),
            })?;
        // Elements are padded to 8 bytes, except compressed ones; a missing final pad is tolerated.
        let next = if first == MI_COMPRESSED {
            stop
        } else {
            stop.next_multiple_of(8).min(end)
        };
        Ok(Element {
            dtype: first,
            data: &buf[start..stop],
            start,
            next,
        })
    }

    fn top_level_matrix(
        &self,
        el: &Element<'_>,
        pos: usize,
        buf: &[u8],
    ) -> Result<MatArray, MatError> {
        if el.dtype != MI_MATRIX {
            return invalid(
                pos,
                format!(
                    "top-level element of type {}, expected a matrix (14)",
                    el.dtype
                ),
            );
        }
        self.matrix(buf, el.start, el.start + el.data.len(), 0)
    }

    /// Parses the payload of an `miMATRIX` element lying at `buf[start..end]`.
    fn matrix(
        &self,
        buf: &[u8],
        start: usize,
        end: usize,
        depth: usize,
    ) -> Result<MatArray, MatError> {
        if depth > MAX_DEPTH {
            return invalid(
                start,
                format!("cells or structs nested deeper than {MAX_DEPTH}"),
            );
        }
        if start == end {
            // MATLAB writes an empty cell element as a matrix of zero bytes.
            return Ok(MatArray {
                name: String::new(),
                class: MatClass::Double,
                dims: vec![0, 0],
                logical: false,
                data: MatData::Numeric {
                    real: Vec::new(),
                    imag: None,
                },
            });
        }
        let flags_el = self.element(buf, start, end)?;
        if flags_el.dtype != MI_UINT32 || flags_el.data.len() < 8 {
            return invalid(start, "array flags missing");
        }
        let flags = self.u32(&flags_el.data[..4]);
        let class = MatClass::from_code(flags & 0xff, start)?;
        let complex = flags & 0x0800 != 0;
        let logical = flags & 0x0200 != 0;

        let dims_el = self.element(buf, flags_el.next, end)?;
        if dims_el.dtype != MI_INT32
            || dims_el.data.len() < 8
            || !dims_el.data.len().is_multiple_of(4)
        {
            return invalid(flags_el.next, "dimensions missing or malformed");
        }
        let mut dims = Vec::with_capacity(dims_el.data.len() / 4);
        for c in dims_el.data.chunks_exact(4) {
            let d = self.u32(c) as i32;
            if d < 0 {
                return invalid(flags_el.next, format!("negative dimension {d}"));
            }
            dims.push(d as usize);
        }
        let numel = dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| MatError::Invalid {
                offset: flags_el.next,
                reason: format!("dimensions {dims:?} overflow"),
            })?;

        let name_el = self.element(buf, dims_el.next, end)?;
        if name_el.dtype != MI_INT8 && name_el.dtype != MI_UINT8 {
            return invalid(dims_el.next, "array name missing");
        }
        let name = String::from_utf8_lossy(name_el.data).into_owned();
        let mut pos = name_el.next;

        let data = match class {
            MatClass::Cell => {
                // Each cell is a tagged element of at least 8 bytes: bound before allocating.
                if numel > (end - pos) / 8 {
                    return Err(MatError::Truncated {
                        offset: pos,
                        what: format!("cell array of {numel} cells"),
                    });
                }
                let mut cells = Vec::with_capacity(numel);
                for _ in 0..numel {
                    let el = self.element(buf, pos, end)?;
                    if el.dtype != MI_MATRIX {
                        return invalid(pos, format!("cell of element type {}", el.dtype));
                    }
                    cells.push(self.matrix(buf, el.start, el.start + el.data.len(), depth + 1)?);
                    pos = el.next;
                }
                MatData::Cell(cells)
            }
            MatClass::Struct => {
                let len_el = self.element(buf, pos, end)?;
                if len_el.data.len() < 4 {
                    return invalid(pos, "struct field-name length missing");
                }
                let name_len = self.u32(&len_el.data[..4]) as usize;
                let names_el = self.element(buf, len_el.next, end)?;
                if name_len == 0 || !names_el.data.len().is_multiple_of(name_len) {
                    return invalid(len_el.next, "struct field names malformed");
                }
                let field_names: Vec<String> = names_el
                    .data
                    .chunks_exact(name_len)
                    .map(|c| {
                        let n = c.iter().position(|&b| b == 0).unwrap_or(c.len());
                        String::from_utf8_lossy(&c[..n]).into_owned()
                    })
                    .collect();
                pos = names_el.next;
                let count = numel.saturating_mul(field_names.len());
                if count > (end - pos) / 8 {
                    return Err(MatError::Truncated {
                        offset: pos,
                        what: format!("struct array of {count} field values"),
                    });
                }
                let mut values = Vec::with_capacity(count);
                for _ in 0..count {
                    let el = self.element(buf, pos, end)?;
                    if el.dtype != MI_MATRIX {
                        return invalid(pos, format!("struct field of element type {}", el.dtype));
                    }
                    values.push(self.matrix(buf, el.start, el.start + el.data.len(), depth + 1)?);
                    pos = el.next;
                }
                MatData::Struct {
                    field_names,
                    values,
                }
            }
            MatClass::Char => {
                if pos >= end && numel == 0 {
                    MatData::Char(Vec::new())
                } else {
                    let el = self.element(buf, pos, end)?;
                    let chars = self.chars(&el, pos)?;
                    if chars.len() != numel {
                        return invalid(
                            pos,
                            format!("char array of {numel} characters holds {}", chars.len()),
                        );
                    }
                    MatData::Char(chars)
                }
            }
            _ => {
                let real_el = self.element(buf, pos, end)?;
                let real = self.numbers(&real_el, numel, pos)?;
                let imag = if complex {
                    let imag_el = self.element(buf, real_el.next, end)?;
                    Some(self.numbers(&imag_el, numel, real_el.next)?)
                } else {
                    None
                };
                MatData::Numeric { real, imag }
            }
        };
        Ok(MatArray {
            name,
            class,
            dims,
            logical,
            data,
        })
    }

    fn chars(&self, el: &Element<'_>, pos: usize) -> Result<Vec<char>, MatError> {
        let d = el.data;
        Ok(match el.dtype {
            MI_UTF8 => String::from_utf8_lossy(d).chars().collect(),
            // Plain 8-bit char data is Latin-1 (each byte one code point).
            MI_UINT8 | MI_INT8 => d.iter().map(|&b| b as char).collect(),
            MI_UINT16 | MI_UTF16 | MI_INT16 => {
                if !d.len().is_multiple_of(2) {
                    return invalid(pos, "odd byte count in 16-bit char data");
                }
                let units = d.chunks_exact(2).map(|c| self.u16(c));
                char::decode_utf16(units)
                    .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
                    .collect()
            }
            MI_UTF32 | MI_UINT32 | MI_INT32 => {
                if !d.len().is_multiple_of(4) {
                    return invalid(pos, "byte count of 32-bit char data not a multiple of 4");
                }
                d.chunks_exact(4)
                    .map(|c| char::from_u32(self.u32(c)).unwrap_or(char::REPLACEMENT_CHARACTER))
                    .collect()
            }
            other => return invalid(pos, format!("char data of element type {other}")),
        })
    }

    fn numbers(&self, el: &Element<'_>, numel: usize, pos: usize) -> Result<Vec<f64>, MatError> {
        let d = el.data;
        let size = match el.dtype {
            MI_INT8 | MI_UINT8 => 1,
            MI_INT16 | MI_UINT16 => 2,
            MI_INT32 | MI_UINT32 | MI_SINGLE => 4,
            MI_DOUBLE | MI_INT64 | MI_UINT64 => 8,
            other => return invalid(pos, format!("numeric data of element type {other}")),
        };
        if d.len() != numel.saturating_mul(size) {
            return invalid(
                pos,
                format!(
                    "array of {numel} elements holds {} bytes of {size}-byte data",
                    d.len()
                ),
            );
        }
        let c = d.chunks_exact(size);
        Ok(match el.dtype {
            MI_INT8 => d.iter().map(|&b| b as i8 as f64).collect(),
            MI_UINT8 => d.iter().map(|&b| b as f64).collect(),
            MI_INT16 => c.map(|b| self.u16(b) as i16 as f64).collect(),
            MI_UINT16 => c.map(|b| self.u16(b) as f64).collect(),
            MI_INT32 => c.map(|b| self.u32(b) as i32 as f64).collect(),
            MI_UINT32 => c.map(|b| self.u32(b) as f64).collect(),
            MI_SINGLE => c.map(|b| f32::from_bits(self.u32(b)) as f64).collect(),
            MI_DOUBLE => c.map(|b| f64::from_bits(self.u64(b))).collect(),
            MI_INT64 => c.map(|b| self.u64(b) as i64 as f64).collect(),
            _ => c.map(|b| self.u64(b) as f64).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A little-endian MAT-file writer for tests, uncompressed or compressed.
    pub(crate) fn header() -> Vec<u8> {
        let mut h = b"MATLAB 5.0 MAT-file, written by a test".to_vec();
        h.resize(116, b' ');
        h.extend_from_slice(&[0; 8]);
        h.extend_from_slice(&0x0100u16.to_le_bytes());
        h.extend_from_slice(b"IM");
        h
    }

    fn tag(out: &mut Vec<u8>, dtype: u32, data: &[u8]) {
        out.extend_from_slice(&dtype.to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
    }

    fn matrix(class: u32, dims: &[i32], name: &str, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        let mut flags = class.to_le_bytes().to_vec();
        flags.extend_from_slice(&[0; 4]);
        tag(&mut m, MI_UINT32, &flags);
        let d: Vec<u8> = dims.iter().flat_map(|d| d.to_le_bytes()).collect();
        tag(&mut m, MI_INT32, &d);
        tag(&mut m, MI_INT8, name.as_bytes());
        m.extend_from_slice(body);
        let mut out = Vec::new();
        tag(&mut out, MI_MATRIX, &m);
        out
    }

    fn doubles(dims: &[i32], name: &str, v: &[f64]) -> Vec<u8> {
        let mut body = Vec::new();
        let d: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        tag(&mut body, MI_DOUBLE, &d);
        matrix(6, dims, name, &body)
    }

    fn chars(name: &str, s: &str) -> Vec<u8> {
        let mut body = Vec::new();
        let d: Vec<u8> = s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
        tag(&mut body, MI_UINT16, &d);
        matrix(4, &[1, s.encode_utf16().count() as i32], name, &body)
    }

    #[test]
    fn reads_numeric_char_and_nested_cells() {
        let mut f = header();
        f.extend(doubles(&[2, 3], "a", &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
        let mut cell_body = chars("", "héllo");
        cell_body.extend(matrix(1, &[1, 1], "", &doubles(&[1, 1], "", &[7.5])));
        f.extend(matrix(1, &[2, 1], "c", &cell_body));
        let mat = MatFile::from_bytes(&f).unwrap();
        assert_eq!(mat.names(), ["a", "c"]);
        let a = mat.get("a").unwrap();
        assert_eq!(a.dims, [2, 3]);
        // Column-major: (row 1, col 2) is element 1 + 2·2.
        assert_eq!(a.as_f64().unwrap()[1 + 2 * 2], 6.0);
        let c = mat.get("c").unwrap().as_cell().unwrap();
        assert_eq!(c[0].as_string().unwrap(), "héllo");
        let inner = c[1].as_cell().unwrap();
        assert_eq!(inner[0].as_f64().unwrap(), [7.5]);
    }

    #[test]
    fn reads_small_elements_and_compression() {
        // A uint8 scalar stored as a small element, inside a compressed element.
        let mut m = Vec::new();
        let mut flags = 9u32.to_le_bytes().to_vec();
        flags.extend_from_slice(&[0; 4]);
        tag(&mut m, MI_UINT32, &flags);
        tag(&mut m, MI_INT32, &[1, 0, 0, 0, 1, 0, 0, 0]);
        // Small name "x" and small data 42.
        m.extend_from_slice(&((1u32 << 16) | MI_INT8).to_le_bytes());
        m.extend_from_slice(b"x\0\0\0");
        m.extend_from_slice(&((1u32 << 16) | MI_UINT8).to_le_bytes());
        m.extend_from_slice(&[42, 0, 0, 0]);
        let mut el = Vec::new();
        tag(&mut el, MI_MATRIX, &m);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut z, &el).unwrap();
        let z = z.finish().unwrap();
        let mut f = header();
        f.extend_from_slice(&MI_COMPRESSED.to_le_bytes());
        f.extend_from_slice(&(z.len() as u32).to_le_bytes());
        f.extend_from_slice(&z);
        let mat = MatFile::from_bytes(&f).unwrap();
        let x = mat.get("x").unwrap();
        assert_eq!(x.class, MatClass::UInt8);
        assert_eq!(x.as_f64().unwrap(), [42.0]);
    }

    #[test]
    fn refuses_bad_input_without_panicking() {
        assert!(matches!(
            MatFile::from_bytes(b"short"),
            Err(MatError::NotMat5(_))
        ));
        let mut junk = vec![0x5au8; 4096];
        assert!(matches!(
            MatFile::from_bytes(&junk),
            Err(MatError::NotMat5(_))
        ));
        // Valid header, garbage after it.
        junk.splice(..128, header());
        assert!(MatFile::from_bytes(&junk).is_err());
        // Every truncation of a valid file is an error (or, at element boundaries, fewer variables).
        let mut f = header();
        f.extend(doubles(&[2, 2], "a", &[1.0, 2.0, 3.0, 4.0]));
        f.extend(matrix(1, &[1, 1], "c", &chars("", "abc")));
        let full = MatFile::from_bytes(&f).unwrap();
        for cut in 128..f.len() {
            if let Ok(m) = MatFile::from_bytes(&f[..cut]) {
                assert!(m.variables.len() < full.variables.len(), "cut {cut}");
            }
        }
        // A corrupted compressed stream.
        let mut g = header();
        g.extend_from_slice(&MI_COMPRESSED.to_le_bytes());
        g.extend_from_slice(&16u32.to_le_bytes());
        g.extend_from_slice(&[0x78, 0x9c, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
        assert!(matches!(
            MatFile::from_bytes(&g),
            Err(MatError::Decompress { .. })
        ));
        // A cell claiming more cells than bytes.
        let mut h = header();
        h.extend(matrix(1, &[100000, 100000], "c", &[]));
        assert!(MatFile::from_bytes(&h).is_err());
    }
}
