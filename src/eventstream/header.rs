//! Header names, the ten value types, and the validated headers section.
//!
//! An ASCII section is validated by one ASCII check and a structural walk, and
//! text is made `&str` only when a value is looked up; any other section, and
//! every error, goes through the detailed parser. Each decoder remembers the
//! last ASCII section it validated, up to 1 KiB, so a section equal to it byte
//! for byte is valid after one comparison and its strings are cut from the
//! remembered text (the figures are in `docs/performance.md`).

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

/// `raw[start..end]` as text.
#[inline]
fn text_at(raw: &[u8], start: usize, end: usize) -> Option<&str> {
    std::str::from_utf8(raw.get(start..end)?).ok()
}

/// Parses the header starting at `pos`; returns it and the next position.
/// Reports every problem in detail: the validation fast path (`skip`)
/// comes here to explain what it refused.
#[inline]
fn parse_one(raw: &[u8], pos: usize) -> Result<(Header<'_>, usize), FrameError> {
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
    let name =
        text_at(raw, pos + 1, name_end).ok_or(FrameError::HeaderNameNotUtf8 { offset: pos })?;
    let (value, next) = value_at(raw, name, name_end)?;
    Ok((Header { name, value }, next))
}

/// Parses the value whose type byte is at `at`, of the header called `name`.
#[inline]
fn value_at<'a>(
    raw: &'a [u8],
    name: &str,
    at: usize,
) -> Result<(HeaderValue<'a>, usize), FrameError> {
    let truncated = || FrameError::HeaderTruncated {
        name: name.to_owned(),
    };
    let type_byte = *raw.get(at).ok_or_else(truncated)?;
    let value_type =
        HeaderType::from_wire(type_byte).ok_or_else(|| FrameError::UnknownHeaderType {
            name: name.to_owned(),
            value_type: type_byte,
        })?;
    let at = at + 1;
    Ok(match value_type {
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
                HeaderValue::String(std::str::from_utf8(bytes).map_err(|_| {
                    FrameError::HeaderStringNotUtf8 {
                        name: name.to_owned(),
                    }
                })?)
            } else {
                HeaderValue::Bytes(bytes)
            };
            (value, start + len)
        }
    })
}

/// The value whose type byte is at `at` and which ends at `end`, in a
/// section already validated: no error to build, so `None` (which cannot
/// happen) keeps the lookup panic-free. `text` is the section as text when
/// it is known to be ASCII: a string value is then cut from it, with no
/// UTF-8 check.
#[inline]
fn validated_value<'a>(
    raw: &'a [u8],
    text: Option<&'a str>,
    at: usize,
    end: usize,
) -> Option<HeaderValue<'a>> {
    let value = raw.get(at + 1..end)?;
    Some(match HeaderType::from_wire(*raw.get(at)?)? {
        HeaderType::BoolTrue => HeaderValue::Bool(true),
        HeaderType::BoolFalse => HeaderValue::Bool(false),
        HeaderType::Byte => HeaderValue::Byte(i8::from_be_bytes(take(value, 0)?)),
        HeaderType::Short => HeaderValue::Short(i16::from_be_bytes(take(value, 0)?)),
        HeaderType::Int => HeaderValue::Int(i32::from_be_bytes(take(value, 0)?)),
        HeaderType::Long => HeaderValue::Long(i64::from_be_bytes(take(value, 0)?)),
        HeaderType::Timestamp => HeaderValue::Timestamp(i64::from_be_bytes(take(value, 0)?)),
        HeaderType::Uuid => HeaderValue::Uuid(take(value, 0)?),
        HeaderType::Bytes => HeaderValue::Bytes(value.get(2..)?),
        HeaderType::String => HeaderValue::String(match text {
            Some(text) => text.get(at + 3..end)?,
            None => std::str::from_utf8(value.get(2..)?).ok()?,
        }),
    })
}

/// Whether every byte is ASCII: eight bytes at a time, in a form the
/// compiler turns into vector instructions (the standard `is_ascii` is a
/// byte loop at these lengths).
#[inline]
fn is_ascii(raw: &[u8]) -> bool {
    let (words, tail) = raw.as_chunks::<8>();
    let mut high = 0u64;
    for word in words {
        high |= u64::from_ne_bytes(*word);
    }
    for &byte in tail {
        high |= u64::from(byte);
    }
    high & 0x8080_8080_8080_8080 == 0
}

/// Byte equality for header names, which are short: from 8 to 16 bytes,
/// two overlapping 8-byte loads on each side instead of a call to `memcmp`.
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    match (
        a.first_chunk::<8>(),
        a.last_chunk::<8>(),
        b.first_chunk::<8>(),
        b.last_chunk::<8>(),
    ) {
        (Some(a0), Some(a1), Some(b0), Some(b1)) if a.len() <= 16 => a0 == b0 && a1 == b1,
        _ => a == b,
    }
}

/// Bytes after the type byte of values of a fixed size, by wire type;
/// `VARIABLE` for the two types with a length, `UNKNOWN` past the ten.
const VARIABLE: u8 = 0xfe;
const UNKNOWN: u8 = 0xff;
const VALUE_SIZE: [u8; 256] = {
    let mut sizes = [UNKNOWN; 256];
    sizes[HeaderType::BoolTrue as usize] = 0;
    sizes[HeaderType::BoolFalse as usize] = 0;
    sizes[HeaderType::Byte as usize] = 1;
    sizes[HeaderType::Short as usize] = 2;
    sizes[HeaderType::Int as usize] = 4;
    sizes[HeaderType::Long as usize] = 8;
    sizes[HeaderType::Bytes as usize] = VARIABLE;
    sizes[HeaderType::String as usize] = VARIABLE;
    sizes[HeaderType::Timestamp as usize] = 8;
    sizes[HeaderType::Uuid as usize] = 16;
    sizes
};

/// The name of the header at `pos` and where the next one starts, without
/// building its value: the validation fast path, and the lookup by name.
/// Checks the structure (lengths, types, limits) but not UTF-8; `None` for
/// anything wrong, which `parse_one` then explains.
#[inline]
fn skip(raw: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let name_len = usize::from(*raw.get(pos)?);
    let name_end = pos + 1 + name_len;
    let name = raw.get(pos + 1..name_end)?;
    let value_type = *raw.get(name_end)?;
    let at = name_end + 1;
    let next = match VALUE_SIZE[usize::from(value_type)] {
        UNKNOWN => return None,
        VARIABLE => {
            let len = usize::from(u16::from_be_bytes(take(raw, at)?));
            if len > MAX_HEADER_VALUE_LEN {
                return None;
            }
            at + 2 + len
        }
        fixed => at + usize::from(fixed),
    };
    if name.is_empty() || next > raw.len() {
        return None;
    }
    Some((name, next))
}

/// Above this many headers, duplicates are found with a hash set instead of
/// pairwise comparison (which would be quadratic in a hostile frame).
const PAIRWISE_LIMIT: usize = 16;

/// A headers section that has been fully validated: every header parses,
/// every string is UTF-8, no name repeats.
#[derive(Clone, Copy)]
pub struct Headers<'a> {
    raw: &'a [u8],
    /// `raw` as text, when the section is known to be ASCII (one that a
    /// decoder remembered, see [`LastSection`]).
    text: Option<&'a str>,
    count: usize,
}

/// Sections are equal when their bytes are, wherever they are held.
impl PartialEq for Headers<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

impl Eq for Headers<'_> {}

impl std::fmt::Debug for Headers<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> Headers<'a> {
    /// Validates a headers section.
    ///
    /// The usual section is ASCII throughout (names, string values and the
    /// short length and type bytes between them): one ASCII check of the
    /// whole section then stands for the UTF-8 validation of every name and
    /// string, and the walk only checks the structure. Text is made into
    /// `&str` when a value is asked for, not here. Any other section, and
    /// any refused header, goes through the detailed parser.
    pub fn parse(raw: &'a [u8]) -> Result<Self, FrameError> {
        if !is_ascii(raw) {
            return Self::parse_detailed(raw);
        }
        let mut pos = 0;
        let mut count = 0;
        // Names seen so far, for the duplicate check on small sections.
        let mut names: [&[u8]; PAIRWISE_LIMIT] = [&[]; PAIRWISE_LIMIT];
        while pos < raw.len() {
            if count == PAIRWISE_LIMIT {
                return Self::parse_detailed(raw);
            }
            let Some((name, next)) = skip(raw, pos) else {
                return Self::parse_detailed(raw);
            };
            if names[..count].iter().any(|seen| same(seen, name)) {
                return Self::parse_detailed(raw);
            }
            names[count] = name;
            count += 1;
            pos = next;
        }
        Ok(Self {
            raw,
            text: None,
            count,
        })
    }

    /// Validates a section header by header, with UTF-8 checks of each name
    /// and string and a precise error for the first problem.
    #[cold]
    fn parse_detailed(raw: &'a [u8]) -> Result<Self, FrameError> {
        let mut pos = 0;
        let mut count = 0;
        // Names seen so far, for the duplicate check on small sections.
        let mut names: [&str; PAIRWISE_LIMIT] = [""; PAIRWISE_LIMIT];
        let mut many: Option<std::collections::HashSet<&str>> = None;
        while pos < raw.len() {
            let (header, next) = parse_one(raw, pos)?;
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
            text: None,
            count,
        })
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
            pos: 0,
        }
    }

    /// The value of the header called `name`. Walks the names as bytes and
    /// builds only the value asked for.
    pub fn get(&self, name: &str) -> Option<HeaderValue<'a>> {
        let mut pos = 0;
        while pos < self.raw.len() {
            let (found, next) = skip(self.raw, pos)?;
            if same(found, name.as_bytes()) {
                return validated_value(self.raw, self.text, pos + 1 + found.len(), next);
            }
            pos = next;
        }
        None
    }

    /// The string value of the header called `name`.
    pub fn get_str(&self, name: &str) -> Option<&'a str> {
        match self.get(name)? {
            HeaderValue::String(s) => Some(s),
            _ => None,
        }
    }
}

/// Sections longer than this are not remembered (the copy and the
/// comparison would cost more than they save, and the memory is bounded).
const REMEMBERED_LEN: usize = 1024;

/// The last ASCII headers section a decoder validated, and its header
/// count.
///
/// A stream repeats its headers frame after frame (Amazon Q sends the same
/// three headers, event type, content type and message type, with every
/// text event), and whether a section is valid depends on its bytes alone:
/// a section equal byte for byte to the remembered one is valid, with the
/// same count, and one comparison stands for the whole validation. Its
/// string values are cut from the remembered text, so a lookup needs no
/// UTF-8 check either. Any other section is validated in full.
#[derive(Debug, Default)]
pub(super) struct LastSection {
    text: String,
    count: usize,
}

impl LastSection {
    /// Validates `raw`, or recognises it as the remembered section. The
    /// headers of a recognised section borrow the remembered copy, which
    /// holds the same bytes.
    #[inline]
    pub(super) fn parse<'s>(&'s mut self, raw: &'s [u8]) -> Result<Headers<'s>, FrameError> {
        // Nothing remembered yet: the empty text, and the empty section is
        // valid with no headers.
        if self.text.as_bytes() == raw {
            return Ok(self.headers());
        }
        self.validate(raw)
    }

    /// Validates a section that is not the remembered one, and remembers it
    /// if it is ASCII and short.
    #[inline(never)]
    fn validate<'s>(&'s mut self, raw: &'s [u8]) -> Result<Headers<'s>, FrameError> {
        let headers = Headers::parse(raw)?;
        if raw.len() > REMEMBERED_LEN || !is_ascii(raw) {
            return Ok(headers);
        }
        let Ok(text) = std::str::from_utf8(raw) else {
            return Ok(headers);
        };
        self.text.clear();
        self.text.push_str(text);
        self.count = headers.count;
        Ok(self.headers())
    }

    fn headers(&self) -> Headers<'_> {
        Headers {
            raw: self.text.as_bytes(),
            text: Some(&self.text),
            count: self.count,
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
        let (header, next) = parse_one(self.raw, self.pos).ok()?;
        self.pos = next;
        Some(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventstream::encode_to_vec;

    /// The headers section of a frame with `headers`.
    fn section(headers: &[Header<'_>]) -> Vec<u8> {
        let frame = encode_to_vec(headers, b"").expect("valid headers");
        frame[12..frame.len() - 4].to_vec()
    }

    fn string<'a>(name: &'a str, value: &'a str) -> Header<'a> {
        Header {
            name,
            value: HeaderValue::String(value),
        }
    }

    /// Everything a consumer can see of a section.
    fn view(headers: &Headers<'_>) -> (usize, Vec<String>, Option<String>, Option<String>) {
        (
            headers.len(),
            headers.iter().map(|h| format!("{h:?}")).collect(),
            headers.get_str(":event-type").map(str::to_owned),
            headers.get(":count").map(|v| format!("{v:?}")),
        )
    }

    #[test]
    fn a_remembered_section_reads_as_a_full_parse_does() {
        let q = [
            string(":event-type", "assistantResponseEvent"),
            string(":content-type", "application/json"),
            string(":message-type", "event"),
        ];
        let other = [
            string(":event-type", "codeEvent"),
            Header {
                name: ":count",
                value: HeaderValue::Int(-7),
            },
        ];
        // Not ASCII: validated every time, never remembered.
        let accented = [string(":event-type", "événement")];
        let sections = [
            section(&q),
            section(&other),
            section(&accented),
            section(&[]),
        ];
        let mut last = LastSection::default();
        for round in 0..3 {
            for raw in &sections {
                let full = view(&Headers::parse(raw).unwrap());
                let remembered = last.parse(raw).unwrap();
                assert_eq!(remembered.as_bytes(), &raw[..]);
                assert_eq!(view(&remembered), full, "round {round}");
                // The same section again, now recognised.
                let again = last.parse(raw).unwrap();
                assert_eq!(view(&again), full, "round {round}");
            }
        }
        assert_eq!(last.text.as_bytes(), &section(&[])[..]);
        let _ = last.parse(&sections[0]).unwrap();
        assert_eq!(last.text.as_bytes(), &sections[0][..]);
        let _ = last.parse(&sections[2]).unwrap();
        assert_eq!(last.text.as_bytes(), &sections[0][..], "not ASCII: kept");
    }

    #[test]
    fn a_section_one_byte_off_the_remembered_one_is_validated_in_full() {
        let q = [
            string(":event-type", "assistantResponseEvent"),
            string(":content-type", "application/json"),
            string(":message-type", "event"),
        ];
        let good = section(&q);
        let mut last = LastSection::default();
        last.parse(&good).unwrap();
        let mut refused = 0;
        for at in 0..good.len() {
            for flip in [0x01, 0x20, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[at] ^= flip;
                let expected = Headers::parse(&bad).map(|h| view(&h));
                let got = last.parse(&bad).map(|h| view(&h));
                assert_eq!(got, expected, "byte {at} ^ {flip:#x}");
                refused += usize::from(got.is_err());
                // The good section is still recognised, or remembered again.
                assert_eq!(
                    view(&last.parse(&good).unwrap()),
                    view(&Headers::parse(&good).unwrap())
                );
            }
        }
        assert!(refused > good.len(), "most corruptions are refused");
        // A duplicate name, which only the full validation finds.
        let twice = b"\x02:a\x07\x00\x01x\x02:a\x07\x00\x01y";
        assert_eq!(
            last.parse(twice),
            Err(FrameError::DuplicateHeader {
                name: ":a".to_owned()
            })
        );
    }
}
