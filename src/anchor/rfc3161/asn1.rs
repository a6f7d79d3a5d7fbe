//! Just enough raw DER walking to keep the exact bytes that signatures cover, and a
//! GeneralizedTime that accepts fractional seconds.
//!
//! Decoding with `der` and encoding again does not always give back the signed bytes: `der`
//! sorts a SET OF while decoding, so signed attributes a TSA did not sort would no longer
//! match their signature. The signed attributes and the token are therefore cut out of the
//! input as it came, with the small walker below.

use der::{DecodeValue, EncodeValue, FixedTag, Header, Length, Reader, Tag, Writer};

/// Tag of a SEQUENCE.
pub(super) const SEQUENCE: u8 = 0x30;
/// Tag of a SET.
pub(super) const SET: u8 = 0x31;
/// Tag of a `[0]` constructed context-specific field.
pub(super) const CONTEXT_0: u8 = 0xa0;

/// One DER element: its tag, the whole encoding and its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tlv<'a> {
    /// The identifier octet (only low tag numbers occur in the structures read here).
    pub tag: u8,
    /// Tag, length and content, as found in the input.
    pub whole: &'a [u8],
    /// The content octets.
    pub content: &'a [u8],
}

/// Reads the element at the start of `input`; returns it and what follows it.
pub(super) fn read_tlv(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), String> {
    let (&tag, rest) = input.split_first().ok_or("unexpected end of data")?;
    if tag & 0x1f == 0x1f {
        return Err(format!("unexpected high-number tag 0x{tag:02x}"));
    }
    let (&first, rest) = rest.split_first().ok_or("unexpected end of data in a length")?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 {
            return Err("indefinite length (BER, not DER)".into());
        }
        if n > 4 {
            return Err(format!("a {n}-byte length is too long"));
        }
        let bytes = rest.get(..n).ok_or("unexpected end of data in a length")?;
        let len = bytes.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, rest.get(n..).unwrap_or_default())
    };
    let content = rest.get(..len).ok_or("an element's length runs past the end of the data")?;
    let header_len = input.len() - rest.len();
    let whole = input.get(..header_len + len).ok_or("an element's length runs past the end of the data")?;
    Ok((Tlv { tag, whole, content }, rest.get(len..).unwrap_or_default()))
}

/// Reads `input` as exactly one element with tag `tag`, nothing after it.
pub(super) fn read_only<'a>(input: &'a [u8], tag: u8, what: &str) -> Result<Tlv<'a>, String> {
    let (tlv, rest) = read_tlv(input).map_err(|e| format!("{what}: {e}"))?;
    if tlv.tag != tag {
        return Err(format!("{what}: expected tag 0x{tag:02x}, found 0x{:02x}", tlv.tag));
    }
    if !rest.is_empty() {
        return Err(format!("{what}: {} unexpected bytes after it", rest.len()));
    }
    Ok(tlv)
}

/// The elements inside a constructed element's content.
pub(super) fn children(content: &[u8]) -> Result<Vec<Tlv<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = content;
    while !rest.is_empty() {
        let (tlv, next) = read_tlv(rest)?;
        out.push(tlv);
        rest = next;
    }
    Ok(out)
}

/// A GeneralizedTime kept as written. `der`'s own type refuses fractional seconds, which RFC
/// 3161 allows in genTime (and OpenSSL writes with `clock_precision_digits`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct GenTime(Vec<u8>);

impl GenTime {
    /// The instant in Unix milliseconds (digits beyond milliseconds are dropped).
    pub(super) fn unix_ms(&self) -> Result<i64, String> {
        parse_generalized_time(&self.0)
    }
}

impl FixedTag for GenTime {
    const TAG: Tag = Tag::GeneralizedTime;
}

impl<'a> DecodeValue<'a> for GenTime {
    fn decode_value<R: Reader<'a>>(reader: &mut R, header: Header) -> der::Result<Self> {
        let bytes = reader.read_vec(header.length)?;
        parse_generalized_time(&bytes).map_err(|_| Tag::GeneralizedTime.value_error())?;
        Ok(Self(bytes))
    }
}

impl EncodeValue for GenTime {
    fn value_len(&self) -> der::Result<Length> {
        Length::try_from(self.0.len())
    }

    fn encode_value(&self, writer: &mut impl Writer) -> der::Result<()> {
        writer.write(&self.0)
    }
}

/// Parses `YYYYMMDDHHMMSS[.fraction]Z` (the DER form of GeneralizedTime) to Unix ms.
pub(super) fn parse_generalized_time(bytes: &[u8]) -> Result<i64, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "genTime is not ASCII".to_string())?;
    let bad = || format!("genTime {text:?} is not YYYYMMDDHHMMSS[.fff]Z");
    let body = text.strip_suffix('Z').ok_or_else(bad)?;
    let (whole, fraction) = match body.split_once('.') {
        Some((w, f)) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => (w, f),
        Some(_) => return Err(bad()),
        None => (body, ""),
    };
    if whole.len() != 14 || !whole.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let num = |range: std::ops::Range<usize>| whole.get(range).and_then(|s| s.parse::<u16>().ok()).ok_or_else(bad);
    let (year, month, day) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hour, minute, second) = (num(8..10)?, num(10..12)?, num(12..14)?);
    let month = u8::try_from(month).ok().and_then(|m| time::Month::try_from(m).ok()).ok_or_else(bad)?;
    let date = time::Date::from_calendar_date(i32::from(year), month, u8::try_from(day).map_err(|_| bad())?)
        .map_err(|_| bad())?;
    let hms = |v: u16| u8::try_from(v).map_err(|_| bad());
    let clock = time::Time::from_hms(hms(hour)?, hms(minute)?, hms(second)?).map_err(|_| bad())?;
    let secs = time::PrimitiveDateTime::new(date, clock).assume_utc().unix_timestamp();
    // Milliseconds: the first three fraction digits, right-padded.
    let millis =
        fraction.bytes().chain(std::iter::repeat(b'0')).take(3).fold(0i64, |acc, b| acc * 10 + i64::from(b - b'0'));
    Ok(secs * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generalized_time_with_and_without_fraction() {
        assert_eq!(parse_generalized_time(b"20241024032000Z"), Ok(1_729_740_000_000));
        assert_eq!(parse_generalized_time(b"20241024032000.123Z"), Ok(1_729_740_000_123));
        assert_eq!(parse_generalized_time(b"20241024032000.5Z"), Ok(1_729_740_000_500));
        assert_eq!(parse_generalized_time(b"20241024032000.123456Z"), Ok(1_729_740_000_123));
        for bad in [
            &b""[..],
            b"20241024032000",
            b"20241024032000.Z",
            b"2024102403200Z",
            b"20241324032000Z",
            b"20240230032000Z",
            b"20241024252000Z",
            b"2024102403200aZ",
            b"20241024032000+0100",
            b"\xff\xfe",
        ] {
            assert!(parse_generalized_time(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_walker_reads_elements_and_refuses_bad_lengths() {
        let (tlv, rest) = read_tlv(&[0x30, 0x03, 0x02, 0x01, 0x05, 0xff]).expect("tlv");
        assert_eq!((tlv.tag, tlv.content, rest), (0x30, &[0x02, 0x01, 0x05][..], &[0xff][..]));
        assert_eq!(children(tlv.content).expect("children").len(), 1);
        let long = [&[0x04, 0x81, 0x80][..], &[0u8; 0x80]].concat();
        assert_eq!(read_tlv(&long).expect("long form").0.content.len(), 0x80);
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x05, 0x00],
            &[0x30, 0x80, 0x00, 0x00],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &[0x30, 0x82, 0x01],
            &[0x1f, 0x01, 0x00],
        ] {
            assert!(read_tlv(bad).is_err(), "{bad:?}");
        }
        assert!(read_only(&[0x30, 0x00, 0x00], 0x30, "x").is_err(), "trailing bytes");
        assert!(read_only(&[0x31, 0x00], 0x30, "x").is_err(), "wrong tag");
    }
}
