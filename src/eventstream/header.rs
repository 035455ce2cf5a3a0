//! Header names, the ten value types, and the validated headers section.

use super::FrameError;
use super::MAX_HEADER_VALUE_LEN;

/// The wire type of a header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum HeaderType {
    BoolTrue = 0,
    BoolFalse = 1,
    Byte = 2,
    Short = 3,
    Int = 4,
    Long = 5,
    Bytes = 6,
    String = 7,
    Timestamp = 8,
    Uuid = 9,
}

impl HeaderType {
    fn from_wire(byte: u8) -> Option<Self> {
        Some(match byte {
            0 => Self::BoolTrue,
            1 => Self::BoolFalse,
            2 => Self::Byte,
            3 => Self::Short,
            4 => Self::Int,
            5 => Self::Long,
            6 => Self::Bytes,
            7 => Self::String,
            8 => Self::Timestamp,
            9 => Self::Uuid,
            _ => return None,
        })
    }

    /// The lowercase name `qbox debug decode` prints.
    pub fn name(self) -> &'static str {
        match self {
            Self::BoolTrue | Self::BoolFalse => "bool",
            Self::Byte => "byte",
            Self::Short => "short",
            Self::Int => "int",
            Self::Long => "long",
            Self::Bytes => "bytes",
            Self::String => "string",
            Self::Timestamp => "timestamp",
            Self::Uuid => "uuid",
        }
    }
}

/// A header value, borrowing strings and byte arrays from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderValue<'a> {
    Bool(bool),
    Byte(i8),
    Short(i16),
    Int(i32),
    Long(i64),
    Bytes(&'a [u8]),
    String(&'a str),
    /// Milliseconds since the Unix epoch.
    Timestamp(i64),
    Uuid([u8; 16]),
}

impl HeaderValue<'_> {
    /// The wire type this value is written with.
    pub fn header_type(&self) -> HeaderType {
        match self {
            Self::Bool(true) => HeaderType::BoolTrue,
            Self::Bool(false) => HeaderType::BoolFalse,
            Self::Byte(_) => HeaderType::Byte,
            Self::Short(_) => HeaderType::Short,
            Self::Int(_) => HeaderType::Int,
            Self::Long(_) => HeaderType::Long,
            Self::Bytes(_) => HeaderType::Bytes,
            Self::String(_) => HeaderType::String,
            Self::Timestamp(_) => HeaderType::Timestamp,
            Self::Uuid(_) => HeaderType::Uuid,
        }
    }

    /// The value if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }
}

/// One header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub name: &'a str,
    pub value: HeaderValue<'a>,
}

/// Reads `N` bytes at `pos`, or `None` past the end.
#[inline]
fn take<const N: usize>(raw: &[u8], pos: usize) -> Option<[u8; N]> {
    raw.get(pos..pos.checked_add(N)?)?.try_into().ok()
}

/// The headers section as text, when all of it is valid UTF-8 (the usual
/// case: names and string values are ASCII, and so are the short length and
/// type bytes between them). One validation of the whole section then
/// replaces one per name and per value, which dominates the cost of small
/// frames; slices of it are taken with O(1) boundary checks.
fn section_text(raw: &[u8]) -> Option<&str> {
    std::str::from_utf8(raw).ok()
}

/// `raw[start..end]` as text: sliced from the validated section when
/// possible, validated on its own otherwise.
#[inline]
fn text_at<'a>(
    raw: &'a [u8],
    section: Option<&'a str>,
    start: usize,
    end: usize,
) -> Option<&'a str> {
    match section.and_then(|text| text.get(start..end)) {
        Some(text) => Some(text),
        None => std::str::from_utf8(&raw[start..end]).ok(),
    }
}

/// Parses the header starting at `pos`; returns it and the next position.
#[inline]
fn parse_one<'a>(
    raw: &'a [u8],
    section: Option<&'a str>,
    pos: usize,
) -> Result<(Header<'a>, usize), FrameError> {
    let name_len = usize::from(raw[pos]);
    if name_len == 0 {
        return Err(FrameError::EmptyHeaderName { offset: pos });
    }
    let name_end = pos + 1 + name_len;
    if name_end > raw.len() {
        return Err(FrameError::HeaderTruncated {
            name: String::from_utf8_lossy(&raw[pos + 1..]).into_owned(),
        });
    }
    let name = text_at(raw, section, pos + 1, name_end)
        .ok_or(FrameError::HeaderNameNotUtf8 { offset: pos })?;
    let truncated = || FrameError::HeaderTruncated {
        name: name.to_owned(),
    };
    let type_byte = *raw.get(name_end).ok_or_else(truncated)?;
    let value_type =
        HeaderType::from_wire(type_byte).ok_or_else(|| FrameError::UnknownHeaderType {
            name: name.to_owned(),
            value_type: type_byte,
        })?;
    let at = name_end + 1;
    let (value, next) = match value_type {
        HeaderType::BoolTrue => (HeaderValue::Bool(true), at),
        HeaderType::BoolFalse => (HeaderValue::Bool(false), at),
        HeaderType::Byte => {
            let [b] = take::<1>(raw, at).ok_or_else(truncated)?;
            (HeaderValue::Byte(i8::from_be_bytes([b])), at + 1)
        }
        HeaderType::Short => (
            HeaderValue::Short(i16::from_be_bytes(take(raw, at).ok_or_else(truncated)?)),
            at + 2,
        ),
        HeaderType::Int => (
            HeaderValue::Int(i32::from_be_bytes(take(raw, at).ok_or_else(truncated)?)),
            at + 4,
        ),
        HeaderType::Long => (
            HeaderValue::Long(i64::from_be_bytes(take(raw, at).ok_or_else(truncated)?)),
            at + 8,
        ),
        HeaderType::Timestamp => (
            HeaderValue::Timestamp(i64::from_be_bytes(take(raw, at).ok_or_else(truncated)?)),
            at + 8,
        ),
        HeaderType::Uuid => (
            HeaderValue::Uuid(take(raw, at).ok_or_else(truncated)?),
            at + 16,
        ),
        HeaderType::Bytes | HeaderType::String => {
            let len = usize::from(u16::from_be_bytes(take(raw, at).ok_or_else(truncated)?));
            if len > MAX_HEADER_VALUE_LEN {
                return Err(FrameError::HeaderValueTooLong {
                    name: name.to_owned(),
                    len,
                    max: MAX_HEADER_VALUE_LEN,
                });
            }
            let start = at + 2;
            let bytes = raw.get(start..start + len).ok_or_else(truncated)?;
            let value = if value_type == HeaderType::String {
                HeaderValue::String(text_at(raw, section, start, start + len).ok_or_else(|| {
                    FrameError::HeaderStringNotUtf8 {
                        name: name.to_owned(),
                    }
                })?)
            } else {
                HeaderValue::Bytes(bytes)
            };
            (value, start + len)
        }
    };
    Ok((Header { name, value }, next))
}

/// Above this many headers, duplicates are found with a hash set instead of
/// pairwise comparison (which would be quadratic in a hostile frame).
const PAIRWISE_LIMIT: usize = 16;

/// A headers section that has been fully validated: every header parses,
/// every string is UTF-8, no name repeats.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Headers<'a> {
    raw: &'a [u8],
    /// `raw` as text when it is valid UTF-8 as a whole (see `section_text`).
    section: Option<&'a str>,
    count: usize,
}

impl std::fmt::Debug for Headers<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> Headers<'a> {
    /// Validates a headers section.
    pub fn parse(raw: &'a [u8]) -> Result<Self, FrameError> {
        let section = section_text(raw);
        let mut pos = 0;
        let mut count = 0;
        // Names seen so far, for the duplicate check on small sections.
        let mut names: [&str; PAIRWISE_LIMIT] = [""; PAIRWISE_LIMIT];
        let mut many: Option<std::collections::HashSet<&str>> = None;
        while pos < raw.len() {
            let (header, next) = parse_one(raw, section, pos)?;
            let duplicate = match &mut many {
                Some(set) => !set.insert(header.name),
                None if count < PAIRWISE_LIMIT => {
                    let seen = names[..count].contains(&header.name);
                    names[count] = header.name;
                    seen
                }
                None => {
                    let mut set: std::collections::HashSet<&str> = names.iter().copied().collect();
                    let seen = !set.insert(header.name);
                    many = Some(set);
                    seen
                }
            };
            if duplicate {
                return Err(FrameError::DuplicateHeader {
                    name: header.name.to_owned(),
                });
            }
            count += 1;
            pos = next;
        }
        Ok(Self {
            raw,
            section,
            count,
        })
    }

    /// A section `parse` already accepted (the decoder validates before it
    /// builds messages).
    pub(crate) fn validated(raw: &'a [u8], count: usize) -> Self {
        Self {
            raw,
            section: section_text(raw),
            count,
        }
    }

    /// How many headers there are.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The raw bytes of the section.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }

    /// The headers in wire order.
    pub fn iter(&self) -> HeaderIter<'a> {
        HeaderIter {
            raw: self.raw,
            section: self.section,
            pos: 0,
        }
    }

    /// The value of the header called `name`.
    pub fn get(&self, name: &str) -> Option<HeaderValue<'a>> {
        self.iter().find(|h| h.name == name).map(|h| h.value)
    }

    /// The string value of the header called `name`.
    pub fn get_str(&self, name: &str) -> Option<&'a str> {
        match self.get(name)? {
            HeaderValue::String(s) => Some(s),
            _ => None,
        }
    }
}

impl<'a> IntoIterator for &Headers<'a> {
    type Item = Header<'a>;
    type IntoIter = HeaderIter<'a>;
    fn into_iter(self) -> HeaderIter<'a> {
        self.iter()
    }
}

/// Iterator over a validated headers section.
#[derive(Debug, Clone)]
pub struct HeaderIter<'a> {
    raw: &'a [u8],
    section: Option<&'a str>,
    pos: usize,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = Header<'a>;

    fn next(&mut self) -> Option<Header<'a>> {
        if self.pos >= self.raw.len() {
            return None;
        }
        // The section was validated when `Headers` was built, so this parse
        // cannot fail; stopping on an error keeps the iterator panic-free.
        let (header, next) = parse_one(self.raw, self.section, self.pos).ok()?;
        self.pos = next;
        Some(header)
    }
}
