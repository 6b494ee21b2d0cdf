//! What the mesh reads from a leaf certificate: validity and subject alternative names.
//!
//! rustls (through webpki) verifies chains, usages and validity, but does not hand out
//! a certificate's SANs, and the SPIFFE id lives in one; x509-parser reads them here,
//! in one place for loading ([`crate::creds`]) and for peers ([`crate::verify`]).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The parts of a leaf certificate Weft looks at.
#[derive(Debug)]
pub(crate) struct Leaf {
    pub(crate) not_before: SystemTime,
    pub(crate) not_after: SystemTime,
    /// URI SANs, in certificate order.
    pub(crate) uris: Vec<String>,
    /// DNS SANs, in certificate order, as written.
    pub(crate) dns: Vec<String>,
}

/// Parses a DER certificate; the error is the parser's complaint, in words.
pub(crate) fn parse(der: &[u8]) -> Result<Leaf, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let validity = cert.validity();
    let mut leaf = Leaf {
        not_before: system_time(validity.not_before.timestamp()),
        not_after: system_time(validity.not_after.timestamp()),
        uris: Vec::new(),
        dns: Vec::new(),
    };
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("subject alternative names: {e}"))?;
    for name in san.iter().flat_map(|ext| &ext.value.general_names) {
        match name {
            x509_parser::extensions::GeneralName::URI(uri) => leaf.uris.push((*uri).to_owned()),
            x509_parser::extensions::GeneralName::DNSName(dns) => {
                leaf.dns.push((*dns).to_owned());
            }
            _ => {}
        }
    }
    Ok(leaf)
}

/// `t` as `YYYY-MM-DDTHH:MM:SSZ`, for messages.
pub(crate) fn utc(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn system_time(unix: i64) -> SystemTime {
    match u64::try_from(unix) {
        Ok(secs) => UNIX_EPOCH + Duration::from_secs(secs),
        // Before 1970: only seen in hand-made test certificates.
        Err(_) => UNIX_EPOCH - Duration::from_secs(unix.unsigned_abs()),
    }
}
