//! A function token: its JWS compact form taken apart and checked (signature, then the
//! registered claims), and its `function` claim matched against this function.
//!
//! Error texts follow the Go watchdog's JWT library ("token is malformed: ...", "token has
//! invalid claims: token is expired"), since clients and their logs see them in 401 bodies.

use serde_json::{Map, Value};

use super::b64;
use super::keys::KeySet;

/// Clock skew tolerated on `exp` and `nbf`, as the Go watchdog allows.
pub(crate) const LEEWAY_SECONDS: f64 = 1.0;

/// A token taken apart, its signature not yet checked.
pub(crate) struct Token<'a> {
    pub(crate) alg: String,
    pub(crate) kid: Option<String>,
    signed: &'a [u8],
    signature: Vec<u8>,
    pub(crate) claims: Map<String, Value>,
}

/// Why a token was not accepted.
#[derive(Debug, PartialEq)]
pub(crate) enum Rejected {
    /// 401, with the reason.
    Invalid(String),
    /// The key the token names is not in the key set (401 unless a fresh key set has it).
    UnknownKid(String),
}

fn malformed(why: &str) -> Rejected {
    Rejected::Invalid(format!("token is malformed: {why}"))
}

fn claims_error(why: &str) -> Rejected {
    Rejected::Invalid(format!("token has invalid claims: {why}"))
}

fn json_object(part: &str, what: &str) -> Result<Map<String, Value>, Rejected> {
    let raw = b64::decode(part).map_err(|_| malformed(&format!("could not base64 decode {what}")))?;
    match serde_json::from_slice(&raw) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(malformed(&format!("could not JSON decode {what}: not an object"))),
        Err(e) => Err(malformed(&format!("could not JSON decode {what}: {e}"))),
    }
}

impl<'a> Token<'a> {
    pub(crate) fn parse(compact: &'a str) -> Result<Token<'a>, Rejected> {
        let mut parts = compact.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("token contains an invalid number of segments"));
        };
        let head = json_object(header, "header")?;
        let claims = json_object(payload, "claim")?;
        let signature = b64::decode(signature).map_err(|_| malformed("could not base64 decode signature"))?;
        let alg = match head.get("alg") {
            Some(Value::String(a)) => a.clone(),
            _ => {
                return Err(Rejected::Invalid(
                    "token is unverifiable: signing method (alg) is unavailable".into(),
                ));
            }
        };
        if alg.eq_ignore_ascii_case("none") {
            return Err(Rejected::Invalid(
                "token is unverifiable: 'none' signature type is not allowed".into(),
            ));
        }
        let kid = match head.get("kid") {
            None => None,
            Some(Value::String(k)) => Some(k.clone()),
            Some(other) => {
                return Err(Rejected::Invalid(format!(
                    "token is unverifiable: error while executing keyfunc: invalid kid: {other}"
                )));
            }
        };
        let signed = &compact.as_bytes()[..header.len() + 1 + payload.len()];
        Ok(Token { alg, kid, signed, signature, claims })
    }

    /// Checks the signature with the key the token names.
    pub(crate) fn verify(&self, keys: &KeySet) -> Result<(), Rejected> {
        let Some(kid) = &self.kid else {
            return Err(Rejected::Invalid(
                "token is unverifiable: error while executing keyfunc: invalid kid: <nil>".into(),
            ));
        };
        let key = keys.find(kid).ok_or_else(|| Rejected::UnknownKid(kid.clone()))?;
        key.verify(&self.alg, self.signed, &self.signature)
            .map_err(|why| Rejected::Invalid(format!("token signature is invalid: {why}")))
    }

    /// Checks `iss`, `aud`, `exp` and `nbf` at `now` (seconds since the epoch).
    pub(crate) fn validate(&self, issuer: &str, now: f64) -> Result<(), Rejected> {
        let c = &self.claims;
        match c.get("exp") {
            Some(Value::Number(n)) if n.as_f64().is_none_or(|exp| now - LEEWAY_SECONDS >= exp) => {
                return Err(claims_error("token is expired"));
            }
            None | Some(Value::Number(_)) => {}
            Some(_) => return Err(malformed("could not JSON decode claim: exp is not a number")),
        }
        match c.get("nbf") {
            Some(Value::Number(n)) if n.as_f64().is_none_or(|nbf| now + LEEWAY_SECONDS < nbf) => {
                return Err(claims_error("token is not valid yet"));
            }
            None | Some(Value::Number(_)) => {}
            Some(_) => return Err(malformed("could not JSON decode claim: nbf is not a number")),
        }
        match c.get("iss") {
            Some(Value::String(iss)) if iss == issuer => {}
            Some(Value::String(_)) => return Err(claims_error("token has invalid issuer")),
            None => return Err(claims_error("token is missing required claim: iss claim is required")),
            Some(_) => return Err(malformed("could not JSON decode claim: iss is not a string")),
        }
        let audiences = match c.get("aud") {
            None => return Err(claims_error("token is missing required claim: aud claim is required")),
            Some(aud) => {
                strings(aud).ok_or_else(|| malformed("could not JSON decode claim: invalid type for aud"))?
            }
        };
        if !audiences.contains(&issuer) {
            return Err(claims_error("token has invalid audience"));
        }
        Ok(())
    }

    /// The `function` claim's permissions and audience, or why they cannot be read.
    pub(crate) fn function_claim(&self) -> Result<(Vec<&str>, Vec<&str>), Rejected> {
        let bad = |what: &str| {
            malformed(&format!("could not JSON decode claim: function.{what} is not a list of strings"))
        };
        let Some(function) = self.claims.get("function") else {
            return Ok((Vec::new(), Vec::new()));
        };
        let list = |name: &str| match function.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => {
                items.iter().map(Value::as_str).collect::<Option<Vec<_>>>().ok_or_else(|| bad(name))
            }
            Some(_) => Err(bad(name)),
        };
        if !(function.is_object() || function.is_null()) {
            return Err(malformed("could not JSON decode claim: function is not an object"));
        }
        Ok((list("permissions")?, list("audience")?))
    }

    /// The token's audience and issuer, for debug logs.
    pub(crate) fn describe(&self) -> String {
        let aud = self.claims.get("aud").and_then(strings).unwrap_or_default();
        let iss = self.claims.get("iss").and_then(Value::as_str).unwrap_or("");
        format!("audience: [{}]\tissuer: {iss}", aud.join(" "))
    }
}

/// A string, or a list of strings (as `aud` may be).
fn strings(v: &Value) -> Option<Vec<&str>> {
    match v {
        Value::String(s) => Some(vec![s.as_str()]),
        Value::Array(items) => items.iter().map(Value::as_str).collect(),
        _ => None,
    }
}

/// Whether the function `reference` (`namespace:name`) may be called with these claims: one
/// permission matches it, and the audience is empty or one of its entries matches it.
pub(crate) fn permits(permissions: &[&str], audience: &[&str], reference: &str) -> bool {
    (audience.is_empty() || audience.iter().any(|p| matches(p, reference)))
        && permissions.iter().any(|p| matches(p, reference))
}

/// Whether `pattern` matches the whole of `text`, `*` standing for any run of characters
/// (none included). The Go watchdog looks for the pattern anywhere in the text instead, so that
/// `fn` or `faas` grant `openfaas-fn:fn1`; here a pattern says exactly what it grants.
pub(crate) fn matches(pattern: &str, text: &str) -> bool {
    let mut pieces = pattern.split('*');
    let first = pieces.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else { return false };
    let mut pieces: Vec<&str> = pieces.collect();
    let Some(last) = pieces.pop() else {
        // No `*`: the pattern is the text.
        return rest.is_empty();
    };
    for piece in pieces {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_the_whole_reference() {
        let table: &[(&str, &str, bool)] = &[
            ("*", "openfaas-fn:fn1", true),
            ("openfaas-fn:fn1", "openfaas-fn:fn1", true),
            ("openfaas-fn:*", "openfaas-fn:fn1", true),
            ("*:fn1", "openfaas-fn:fn1", true),
            ("open*fn:f*1", "openfaas-fn:fn1", true),
            ("openfaas-fn:fn1*", "openfaas-fn:fn1", true),
            ("*openfaas-fn:fn1*", "openfaas-fn:fn1", true),
            // What Go's unanchored search grants, and this does not.
            ("fn1", "openfaas-fn:fn1", false),
            ("faas", "openfaas-fn:fn1", false),
            ("openfaas-fn:fn", "openfaas-fn:fn1", false),
            ("fn:fn1", "openfaas-fn:fn1", false),
            ("openfaas-fn:fn1x", "openfaas-fn:fn1", false),
            ("dev:*", "openfaas-fn:fn1", false),
            ("*:fn2", "openfaas-fn:fn1", false),
            ("", "openfaas-fn:fn1", false),
            // A piece may not be used twice, and the last one sits at the end.
            ("a*a", "a", false),
            ("ab*b", "ab", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "acb", false),
            ("**", "", true),
            ("*.*", "x", false),
            // Regular-expression characters are plain text.
            ("openfaas.fn:*", "openfaas-fn:fn1", false),
            ("openfaas-fn:fn.", "openfaas-fn:fn1", false),
        ];
        for (pattern, text, want) in table {
            assert_eq!(matches(pattern, text), *want, "{pattern:?} against {text:?}");
        }
    }

    #[test]
    fn a_call_needs_a_permission_and_a_matching_or_empty_audience() {
        let r = "openfaas-fn:fn1";
        let table: &[(&[&str], &[&str], bool)] = &[
            (&["*"], &[], true),
            (&["openfaas-fn:fn1"], &["openfaas-fn:*"], true),
            (&["openfaas-fn:*"], &["dev:*", "openfaas-fn:fn1"], true),
            (&[], &[], false),
            (&[], &["*"], false),
            (&["openfaas-fn:*"], &["dev:*"], false),
            (&["dev:*"], &["*"], false),
            (&["fn1"], &[], false),
        ];
        for (permissions, audience, want) in table {
            assert_eq!(permits(permissions, audience, r), *want, "{permissions:?} {audience:?}");
        }
    }

    fn token(claims: &str) -> String {
        let h = b64::encode(br#"{"alg":"RS256","kid":"k1"}"#);
        format!("{h}.{}.AAAA", b64::encode(claims.as_bytes()))
    }

    fn validate(claims: &str, now: f64) -> Result<(), Rejected> {
        let t = token(claims);
        Token::parse(&t)?.validate("http://iss", now)
    }

    #[test]
    fn registered_claims_are_checked_with_one_second_of_leeway() {
        let ok = r#""iss":"http://iss","aud":"http://iss""#;
        let table: &[(String, f64, Result<(), &str>)] = &[
            (format!("{{{ok}}}"), 100.0, Ok(())),
            (format!(r#"{{{ok},"exp":100}}"#), 100.5, Ok(())),
            (format!(r#"{{{ok},"exp":100}}"#), 101.0, Err("token has invalid claims: token is expired")),
            (format!(r#"{{{ok},"nbf":100}}"#), 99.5, Ok(())),
            (format!(r#"{{{ok},"nbf":100}}"#), 98.9, Err("token has invalid claims: token is not valid yet")),
            (
                format!(r#"{{{ok},"exp":"100"}}"#),
                1.0,
                Err("token is malformed: could not JSON decode claim: exp is not a number"),
            ),
            (
                r#"{"iss":"http://other","aud":"http://iss"}"#.into(),
                1.0,
                Err("token has invalid claims: token has invalid issuer"),
            ),
            (
                r#"{"aud":"http://iss"}"#.into(),
                1.0,
                Err("token has invalid claims: token is missing required claim: iss claim is required"),
            ),
            (r#"{"iss":"http://iss","aud":["a","http://iss"]}"#.into(), 1.0, Ok(())),
            (
                r#"{"iss":"http://iss","aud":["a"]}"#.into(),
                1.0,
                Err("token has invalid claims: token has invalid audience"),
            ),
            (
                r#"{"iss":"http://iss","aud":"http://iss/"}"#.into(),
                1.0,
                Err("token has invalid claims: token has invalid audience"),
            ),
            (
                r#"{"iss":"http://iss"}"#.into(),
                1.0,
                Err("token has invalid claims: token is missing required claim: aud claim is required"),
            ),
            (
                r#"{"iss":"http://iss","aud":7}"#.into(),
                1.0,
                Err("token is malformed: could not JSON decode claim: invalid type for aud"),
            ),
        ];
        for (claims, now, want) in table {
            let got = validate(claims, *now);
            let want = want.map_err(|s| Rejected::Invalid(s.to_string()));
            assert_eq!(got, want, "{claims} at {now}");
        }
    }

    /// Mangled tokens (bytes cut, swapped, replaced) are refused with a reason, never a panic.
    #[test]
    fn mangled_tokens_are_refused_without_panicking() {
        let keys = KeySet::parse(br#"{"keys": []}"#).expect("an empty key set parses");
        let claims = r#"{"iss":"http://iss","aud":["http://iss"],"exp":1e300,"nbf":-1e300,"function":{"permissions":["*"],"audience":[1]}}"#;
        let good = token(claims);
        let alphabet = b"AZaz09-_.=+/ \"{}[]:,\x00\xff";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let mut bytes = good.clone().into_bytes();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() as usize) % bytes.len();
                match next() % 3 {
                    0 => bytes[at] = alphabet[(next() as usize) % alphabet.len()],
                    1 => bytes.truncate(at.max(1)),
                    _ => bytes.insert(at, alphabet[(next() as usize) % alphabet.len()]),
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            if let Ok(t) = Token::parse(&text) {
                let _ = t.verify(&keys);
                let _ = t.validate("http://iss", 1.0);
                let _ = t.function_claim();
                let _ = t.describe();
            }
        }
        let t = Token::parse(&good).expect("parses");
        assert_eq!(t.validate("http://iss", 1.0), Ok(()));
        assert!(t.function_claim().is_err(), "an audience entry that is not a string");
        assert_eq!(t.verify(&keys), Err(Rejected::UnknownKid("k1".into())));
    }

    #[test]
    fn malformed_tokens_say_why() {
        let table: &[(&str, &str)] = &[
            ("abc", "token is malformed: token contains an invalid number of segments"),
            ("a.b.c.d", "token is malformed: token contains an invalid number of segments"),
            ("!!.e30.AAAA", "token is malformed: could not base64 decode header"),
            ("e30.e30.AAAA", "token is unverifiable: signing method (alg) is unavailable"),
            ("eyJhbGciOiJub25lIn0.e30.", "token is unverifiable: 'none' signature type is not allowed"),
            (
                "eyJhbGciOiJSUzI1NiJ9.W10.AAAA",
                "token is malformed: could not JSON decode claim: not an object",
            ),
        ];
        for (token, want) in table {
            let got = Token::parse(token).err();
            assert_eq!(got, Some(Rejected::Invalid(want.to_string())), "{token}");
        }
    }
}
