//! Path normalisation tables: the bypass spellings an attacker tries, per option set.

use super::*;

const DEFAULT: PathOptions = PathOptions {
    normalize: true,
    merge_slashes: true,
    escaped_slashes: EscapedSlashes::Unescape,
};
const KEEP: PathOptions = PathOptions {
    escaped_slashes: EscapedSlashes::Keep,
    ..DEFAULT
};
const REJECT: PathOptions = PathOptions {
    escaped_slashes: EscapedSlashes::Reject,
    ..DEFAULT
};
const NO_MERGE: PathOptions = PathOptions {
    merge_slashes: false,
    ..DEFAULT
};
/// Envoy's behaviour with `normalize_path: false`, `merge_slashes: true`.
const RAW: PathOptions = PathOptions {
    normalize: false,
    merge_slashes: true,
    escaped_slashes: EscapedSlashes::Keep,
};
const RAW_UNESCAPE: PathOptions = PathOptions {
    escaped_slashes: EscapedSlashes::Unescape,
    ..RAW
};

type Case = (&'static str, PathOptions, Result<&'static str, PathError>);

#[test]
fn normalisation_table() {
    use PathError::*;
    let cases: &[Case] = &[
        // Unchanged.
        ("/", DEFAULT, Ok("/")),
        ("/cart/addItem", DEFAULT, Ok("/cart/addItem")),
        ("/admin/", DEFAULT, Ok("/admin/")),
        ("/a%20b", DEFAULT, Ok("/a%20b")),
        ("/%C3%A9", DEFAULT, Ok("/%C3%A9")),
        ("/caf\u{e9}", DEFAULT, Ok("/caf\u{e9}")),
        ("/a/.b", DEFAULT, Ok("/a/.b")),
        ("/a/..b", DEFAULT, Ok("/a/..b")),
        ("/a/b..", DEFAULT, Ok("/a/b..")),
        ("/.well-known/x", DEFAULT, Ok("/.well-known/x")),
        ("/users/{id}", DEFAULT, Ok("/users/{id}")),
        // Dot segments.
        ("/admin/../admin/x", DEFAULT, Ok("/admin/x")),
        ("/./admin", DEFAULT, Ok("/admin")),
        ("/a/./b", DEFAULT, Ok("/a/b")),
        ("/admin/.", DEFAULT, Ok("/admin/")),
        ("/admin/..", DEFAULT, Ok("/")),
        ("/a/b/../", DEFAULT, Ok("/a/")),
        ("/..", DEFAULT, Ok("/")),
        ("/../../admin", DEFAULT, Ok("/admin")),
        ("/public/../../admin", DEFAULT, Ok("/admin")),
        ("/caf\u{e9}/../x", DEFAULT, Ok("/x")),
        // Repeated slashes.
        ("//admin", DEFAULT, Ok("/admin")),
        ("///admin//x", DEFAULT, Ok("/admin/x")),
        ("/admin//", DEFAULT, Ok("/admin/")),
        ("//", DEFAULT, Ok("/")),
        // Escaped dots and letters.
        ("/public/%2e%2e/admin", DEFAULT, Ok("/admin")),
        ("/public/%2E%2E/admin", DEFAULT, Ok("/admin")),
        ("/public/.%2e/admin", DEFAULT, Ok("/admin")),
        ("/a/%2e", DEFAULT, Ok("/a/")),
        ("/%61dmin", DEFAULT, Ok("/admin")),
        ("/%41", DEFAULT, Ok("/A")),
        ("/a%7e", DEFAULT, Ok("/a~")),
        ("/a%7E%2d%5f", DEFAULT, Ok("/a~-_")),
        // Other escapes stay, with upper-case hex.
        ("/a%3f", DEFAULT, Ok("/a%3F")),
        ("/%c3%a9", DEFAULT, Ok("/%C3%A9")),
        // Decoded once only.
        ("/a%252Fb", DEFAULT, Ok("/a%252Fb")),
        ("/a%252fb", DEFAULT, Ok("/a%252fb")),
        ("/a%25%32%46b", DEFAULT, Ok("/a%252Fb")),
        (
            "/public/%252e%252e/admin",
            DEFAULT,
            Ok("/public/%252e%252e/admin"),
        ),
        // Escaped slashes, unescaped (the default).
        ("/admin%2fx", DEFAULT, Ok("/admin/x")),
        ("/admin%2Fx", DEFAULT, Ok("/admin/x")),
        ("/public/..%2Fadmin", DEFAULT, Ok("/admin")),
        ("/public/..%2fadmin", DEFAULT, Ok("/admin")),
        ("/public/%5C../admin", DEFAULT, Ok("/admin")),
        ("/public/%5c../admin", DEFAULT, Ok("/admin")),
        ("/..%2F..%2Fetc/passwd", DEFAULT, Ok("/etc/passwd")),
        ("/%2e%2e%2f%2e%2e%2fetc", DEFAULT, Ok("/etc")),
        ("/%2Fadmin", DEFAULT, Ok("/admin")),
        // Literal backslashes.
        ("/public\\..\\admin", DEFAULT, Ok("/admin")),
        ("/a\\b", DEFAULT, Ok("/a/b")),
        // Escaped slashes kept: they stay inside their segment (hex upper-cased).
        ("/admin%2fx", KEEP, Ok("/admin%2Fx")),
        ("/admin%2Fx", KEEP, Ok("/admin%2Fx")),
        ("/public/..%2Fadmin", KEEP, Ok("/public/..%2Fadmin")),
        ("/public/%5c../admin", KEEP, Ok("/public/%5C../admin")),
        ("/public/%2e%2e/admin", KEEP, Ok("/admin")),
        // Escaped slashes refused.
        ("/admin%2fx", REJECT, Err(EscapedSlash)),
        ("/admin%2Fx", REJECT, Err(EscapedSlash)),
        ("/public/%5C../admin", REJECT, Err(EscapedSlash)),
        ("/public/%5c", REJECT, Err(EscapedSlash)),
        ("/public/../admin", REJECT, Ok("/admin")),
        // Without merging, an empty segment is a segment.
        ("//admin", NO_MERGE, Ok("//admin")),
        ("/a//../b", NO_MERGE, Ok("/a/b")),
        ("/public/%5C../admin", NO_MERGE, Ok("/public/admin")),
        ("/./admin", NO_MERGE, Ok("/admin")),
        // Without normalisation only slashes are touched.
        ("/admin/../x", RAW, Ok("/admin/../x")),
        ("/%61dmin", RAW, Ok("/%61dmin")),
        ("/a%2fb", RAW, Ok("/a%2fb")),
        ("/a\\b", RAW, Ok("/a\\b")),
        ("//x", RAW, Ok("/x")),
        ("/a%2fb", RAW_UNESCAPE, Ok("/a/b")),
        ("/public/..%2Fadmin", RAW_UNESCAPE, Ok("/public/../admin")),
        ("/a%zz", RAW, Err(BadEscape)),
        // Refused whatever the options.
        ("/a%zz", DEFAULT, Err(BadEscape)),
        ("/a%4", DEFAULT, Err(BadEscape)),
        ("/a%", DEFAULT, Err(BadEscape)),
        ("/a%%41", DEFAULT, Err(BadEscape)),
        ("/a%g1", KEEP, Err(BadEscape)),
        ("/a\0b", DEFAULT, Err(ControlByte(0))),
        ("/a\r\nHost: x", DEFAULT, Err(ControlByte(b'\r'))),
        ("/a\tb", DEFAULT, Err(ControlByte(b'\t'))),
        ("/a\x7f", DEFAULT, Err(ControlByte(0x7f))),
        ("/a\0b", RAW, Err(ControlByte(0))),
        ("admin", DEFAULT, Err(NotAbsolute)),
        ("", DEFAULT, Err(NotAbsolute)),
        ("%2Fadmin", DEFAULT, Err(NotAbsolute)),
        ("\\admin", DEFAULT, Err(NotAbsolute)),
        ("*", DEFAULT, Err(NotAbsolute)),
    ];
    for (path, opts, want) in cases {
        let got = normalise(path, *opts);
        assert_eq!(got.as_deref(), want.as_deref(), "{path:?} with {opts:?}");
        if let Ok(out) = &got {
            // Nothing to change must mean nothing allocated.
            assert_eq!(
                matches!(out, Cow::Borrowed(_)),
                out == path,
                "{path:?} with {opts:?}: borrowed only when unchanged"
            );
            // A normalised path is a fixed point, and recognised as one without a copy.
            let again = normalise(out, *opts);
            assert!(
                matches!(again, Ok(Cow::Borrowed(p)) if p == out.as_ref()),
                "{path:?} with {opts:?}: {out:?} normalised again gave {again:?}"
            );
        }
    }
}

#[test]
fn the_default_unescapes_and_merges() {
    assert_eq!(PathOptions::default(), DEFAULT);
    assert_eq!(EscapedSlashes::default(), EscapedSlashes::Unescape);
}

/// Random spellings from the characters that matter: whatever comes out is canonical
/// (no dot segment, no `//`, no escaped slash, no `\`, no lower-case or needless escape)
/// and recognised as such without a copy.
#[test]
fn random_paths_come_out_canonical() {
    const ALPHABET: &[&str] = &[
        "/", "/", ".", "..", "%", "%2e", "%2E", "%2f", "%2F", "%5c", "%5C", "%25", "%61", "%3f",
        "\\", "a", "b", "2", "f",
    ];
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..20_000 {
        let mut path = String::from("/");
        for _ in 0..rng.usize(0..10) {
            path.push_str(ALPHABET[rng.usize(0..ALPHABET.len())]);
        }
        for opts in [DEFAULT, NO_MERGE, KEEP] {
            let Ok(out) = normalise(&path, opts) else {
                continue;
            };
            assert!(out.starts_with('/'), "{path:?} -> {out:?}");
            assert!(!out.contains('\\'), "{path:?} -> {out:?}");
            for seg in out.split('/') {
                assert!(seg != "." && seg != "..", "{path:?} -> {out:?}");
            }
            if opts.merge_slashes {
                assert!(!out.contains("//"), "{path:?} -> {out:?}");
            }
            let upper = out.to_ascii_uppercase();
            if opts.escaped_slashes == EscapedSlashes::Unescape {
                assert!(
                    !upper.contains("%2F") && !upper.contains("%5C"),
                    "{path:?} -> {out:?}"
                );
            }
            for needless in ["%2E", "%61"] {
                assert!(!upper.contains(needless), "{path:?} -> {out:?}");
            }
            assert!(
                matches!(normalise(&out, opts), Ok(Cow::Borrowed(p)) if p == out.as_ref()),
                "{path:?} with {opts:?} -> {out:?} is not a fixed point"
            );
        }
    }
}
