//! `$name` expansion as postconf(5) documents it: `$name`, `${name}`,
//! `$(name)`, `${name?value}`, `${name:value}`, the Postfix 3.5 forms
//! `${name?{value}}`, `${name:{value}}`, `${name?{value1}:{value2}}`, the
//! relational form `${{text1} op {text2} ? {value1} : {value2}}` (`==`, `!=`,
//! `<`, `<=`, `>`, `>=`, and the `level` variants that compare
//! compatibility levels), and `$$` for a literal `$`.
//!
//! Owns expansion only; where raw values come from is the caller's
//! [`Source`]. A reference loop (`a = $b`, `b = $a`) is an error naming the
//! chain, never a hang: every name being expanded is on a stack, and a name
//! met again while on it is a loop. Nesting is capped as Postfix caps it.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

/// Deepest chain of references followed (Postfix: "unreasonable macro call
/// nesting" at 100).
const MAX_DEPTH: usize = 100;

/// Where raw (unexpanded) values come from.
pub(crate) trait Source {
    /// The raw value of `name`, or None when it is not defined anywhere.
    fn raw(&self, name: &str) -> Option<Cow<'_, str>>;
}

/// Why a value could not be expanded, and in which parameter's value the
/// problem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExpandError {
    pub param: String,
    pub message: String,
}

/// Expands parameters of one [`Source`], remembering each result so every
/// name is expanded once, and which undefined names were referenced.
pub(crate) struct Expander<'a, S: Source + ?Sized> {
    source: &'a S,
    memo: RefCell<HashMap<String, Result<String, ExpandError>>>,
    stack: RefCell<Vec<String>>,
    /// (referencing parameter, undefined name).
    undefined: RefCell<BTreeSet<(String, String)>>,
}

impl<'a, S: Source + ?Sized> Expander<'a, S> {
    pub fn new(source: &'a S) -> Self {
        Expander {
            source,
            memo: RefCell::new(HashMap::new()),
            stack: RefCell::new(Vec::new()),
            undefined: RefCell::new(BTreeSet::new()),
        }
    }

    /// The expanded value of parameter `name` ("" when undefined).
    pub fn param(&self, name: &str) -> Result<String, ExpandError> {
        if let Some(done) = self.memo.borrow().get(name) {
            return done.clone();
        }
        {
            let stack = self.stack.borrow();
            if let Some(pos) = stack.iter().position(|n| n == name) {
                let mut chain: Vec<String> = stack[pos..].iter().map(|n| format!("${n}")).collect();
                chain.push(format!("${name}"));
                return Err(ExpandError {
                    param: name.to_owned(),
                    message: format!("expansion loop: {}", chain.join(" -> ")),
                });
            }
            if stack.len() >= MAX_DEPTH {
                return Err(ExpandError {
                    param: name.to_owned(),
                    message: format!("unreasonable nesting of parameter references ({MAX_DEPTH} levels)"),
                });
            }
        }
        let Some(raw) = self.source.raw(name) else {
            self.note_undefined(name);
            return Ok(String::new());
        };
        let raw = raw.into_owned();
        self.stack.borrow_mut().push(name.to_owned());
        let result = self.text_in(&raw, name);
        self.stack.borrow_mut().pop();
        self.memo.borrow_mut().insert(name.to_owned(), result.clone());
        result
    }

    /// Names referenced but defined nowhere, with the parameter whose value
    /// referenced them. They expand to the empty string, as in Postfix.
    pub fn undefined(&self) -> Vec<(String, String)> {
        self.undefined.borrow().iter().cloned().collect()
    }

    fn note_undefined(&self, name: &str) {
        let by = self.stack.borrow().last().cloned().unwrap_or_default();
        self.undefined.borrow_mut().insert((by, name.to_owned()));
    }

    /// True when `name` is defined with a non-empty raw value (the test of
    /// `${name?...}` and `${name:...}`).
    fn nonempty(&self, name: &str) -> bool {
        match self.source.raw(name) {
            Some(v) => !v.is_empty(),
            None => {
                self.note_undefined(name);
                false
            }
        }
    }

    fn text_in(&self, text: &str, param: &str) -> Result<String, ExpandError> {
        let err = |message: String| ExpandError { param: param.to_owned(), message };
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            let Some(c) = after.chars().next() else {
                return Err(err(format!("empty parameter name after '$' in \"{text}\"")));
            };
            match c {
                '$' => {
                    out.push('$');
                    rest = &after[1..];
                }
                '{' | '(' => {
                    let close = if c == '{' { '}' } else { ')' };
                    let Some(end) = matching(after, c, close) else {
                        return Err(err(format!("truncated parameter reference: \"{text}\"")));
                    };
                    let inner = &after[1..end];
                    out.push_str(&self.braced(inner, text, param)?);
                    rest = &after[end + 1..];
                }
                c if is_name_char(c) => {
                    let len = after.find(|c: char| !is_name_char(c)).unwrap_or(after.len());
                    out.push_str(&self.param(&after[..len])?);
                    rest = &after[len..];
                }
                _ => return Err(err(format!("empty parameter name after '$' in \"{text}\""))),
            }
        }
        out.push_str(rest);
        Ok(out)
    }

    /// The inside of `${...}`.
    fn braced(&self, inner: &str, whole: &str, param: &str) -> Result<String, ExpandError> {
        let err = |message: String| ExpandError { param: param.to_owned(), message };
        let trimmed = inner.trim_start();
        if trimmed.starts_with('{') {
            return self.relational(trimmed, whole, param);
        }
        let len = trimmed.find(|c: char| !is_name_char(c)).unwrap_or(trimmed.len());
        if len == 0 {
            return Err(err(format!("empty parameter name in \"{whole}\"")));
        }
        let name = &trimmed[..len];
        let after = trimmed[len..].trim_start();
        if after.is_empty() {
            return self.param(name);
        }
        let (op, value) = after.split_at(1);
        let want = match op {
            "?" => true,
            ":" => false,
            _ => return Err(err(format!("syntax error after parameter name \"{name}\" in \"{whole}\""))),
        };
        let present = self.nonempty(name);
        let value_trim = value.trim_start();
        if value_trim.starts_with('{') {
            // Postfix 3.5 forms: `?{a}`, `:{a}`, `?{a}:{b}`.
            let (first, rest) =
                take_group(value_trim).ok_or_else(|| err(format!("unbalanced '{{' in \"{whole}\"")))?;
            let rest = rest.trim();
            let second = if rest.is_empty() {
                None
            } else if want && rest.starts_with(':') {
                let (g, tail) = take_group(rest[1..].trim_start())
                    .ok_or_else(|| err(format!("'{{' expected after ':' in \"{whole}\"")))?;
                if !tail.trim().is_empty() {
                    return Err(err(format!("unexpected text after '}}' in \"{whole}\"")));
                }
                Some(g)
            } else {
                return Err(err(format!("':' expected after '}}' in \"{whole}\"")));
            };
            return match (want == present, second) {
                (true, _) => self.text_in(first, param),
                (false, Some(g)) => self.text_in(g, param),
                (false, None) => Ok(String::new()),
            };
        }
        if want == present { self.text_in(value, param) } else { Ok(String::new()) }
    }

    /// `{text1} op {text2} ? {value1} : {value2}`.
    fn relational(&self, s: &str, whole: &str, param: &str) -> Result<String, ExpandError> {
        let err = |m: &str| ExpandError { param: param.to_owned(), message: format!("{m} in \"{whole}\"") };
        let (t1, rest) = take_group(s).ok_or_else(|| err("unbalanced '{'"))?;
        let rest = rest.trim_start();
        let op_len = rest.find(|c: char| c.is_whitespace() || c == '{').unwrap_or(rest.len());
        let op = &rest[..op_len];
        let (t2, rest) =
            take_group(rest[op_len..].trim_start()).ok_or_else(|| err("'{' expected after operator"))?;
        let rest = rest.trim_start();
        let rest = rest.strip_prefix('?').ok_or_else(|| err("'?' expected"))?.trim_start();
        let (yes, rest) = take_group(rest).ok_or_else(|| err("'{' expected after '?'"))?;
        let rest = rest.trim_start();
        let rest = rest.strip_prefix(':').ok_or_else(|| err("':' expected"))?.trim_start();
        let (no, rest) = take_group(rest).ok_or_else(|| err("'{' expected after ':'"))?;
        if !rest.trim().is_empty() {
            return Err(err("unexpected text after '}'"));
        }
        let a = self.text_in(t1, param)?;
        let b = self.text_in(t2, param)?;
        let (base, level) = match op.strip_suffix("level") {
            Some(b) => (b, true),
            None => (op, false),
        };
        let ord = if level {
            compare_levels(&a, &b).ok_or_else(|| err("bad compatibility level"))?
        } else if base == "==" || base == "!=" {
            a.cmp(&b)
        } else {
            let x: i64 = a.trim().parse().map_err(|_| err("non-numeric operand"))?;
            let y: i64 = b.trim().parse().map_err(|_| err("non-numeric operand"))?;
            x.cmp(&y)
        };
        use std::cmp::Ordering::*;
        let truth = match base {
            "==" => ord == Equal,
            "!=" => ord != Equal,
            "<" => ord == Less,
            "<=" => ord != Greater,
            ">" => ord == Greater,
            ">=" => ord != Less,
            _ => return Err(err("\"==\", \"!=\", \"<\", \"<=\", \">=\" or \">\" expected")),
        };
        self.text_in(if truth { yes } else { no }, param)
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Index in `s` (which starts with `open`) of the matching `close`.
fn matching(s: &str, open: char, close: char) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        if c == open {
            depth += 1;
        } else if c == close {
            depth -= 1;
            if depth == 0 {
                return Some(i);
            }
        }
    }
    None
}

/// Splits `{group} rest` into the group's inside and the rest.
fn take_group(s: &str) -> Option<(&str, &str)> {
    if !s.starts_with('{') {
        return None;
    }
    let end = matching(s, '{', '}')?;
    Some((&s[1..end], &s[end + 1..]))
}

/// Compares Postfix compatibility levels (`2`, `3.6`, `3.6.1`): numerically
/// per component, missing components are 0.
pub(crate) fn compare_levels(a: &str, b: &str) -> Option<std::cmp::Ordering> {
    fn parts(s: &str) -> Option<[u64; 3]> {
        let mut out = [0u64; 3];
        for (n, p) in s.trim().split('.').enumerate() {
            *out.get_mut(n)? = p.parse().ok()?;
        }
        Some(out)
    }
    Some(parts(a)?.cmp(&parts(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Map(HashMap<&'static str, &'static str>);
    impl Source for Map {
        fn raw(&self, name: &str) -> Option<Cow<'_, str>> {
            self.0.get(name).map(|v| Cow::Borrowed(*v))
        }
    }

    fn map(pairs: &[(&'static str, &'static str)]) -> Map {
        Map(pairs.iter().copied().collect())
    }

    fn expand(pairs: &[(&'static str, &'static str)], name: &str) -> Result<String, ExpandError> {
        let m = map(pairs);
        Expander::new(&m).param(name)
    }

    #[test]
    fn plain_braced_and_parenthesized_references() {
        let p = [("a", "x $b ${b} $(b) ${ b }y"), ("b", "B")];
        assert_eq!(expand(&p, "a").unwrap(), "x B B B By");
    }

    #[test]
    fn dollar_dollar_is_a_literal_dollar() {
        assert_eq!(expand(&[("a", "$$foo $$")], "a").unwrap(), "$foo $");
    }

    #[test]
    fn conditional_forms_as_postconf_expands_them() {
        let p = [
            ("set", "yes"),
            ("empty", ""),
            ("a", "${set?x}${set:y}|${empty?x}${empty:y}|${nothere:z}"),
            ("b", "${set?{[$set]}:{none}} ${empty?{x}:{y}} ${set?{only}} ${empty:{}}"),
            ("c", "${set?x}:{y}}"),
            ("d", "${set?${set}}"),
        ];
        assert_eq!(expand(&p, "a").unwrap(), "x|y|z");
        assert_eq!(expand(&p, "b").unwrap(), "[yes] y only ");
        assert_eq!(expand(&p, "c").unwrap(), "x:{y}}");
        assert_eq!(expand(&p, "d").unwrap(), "yes");
    }

    #[test]
    fn postfix_default_for_the_hard_error_limit_is_20_without_stress() {
        let p = [("stress", ""), ("smtpd_hard_error_limit", "${stress?{1}:{20}}")];
        assert_eq!(expand(&p, "smtpd_hard_error_limit").unwrap(), "20");
        let p = [("stress", "yes"), ("smtpd_hard_error_limit", "${stress?{1}:{20}}")];
        assert_eq!(expand(&p, "smtpd_hard_error_limit").unwrap(), "1");
    }

    #[test]
    fn relational_expressions() {
        let p = [
            ("mail_name", "Postfix"),
            ("compatibility_level", "3.6"),
            ("a", "${{$mail_name} == {Postfix} ? {eq} : {ne}}"),
            ("b", "${{10} < {9} ? {lt} : {ge}}"),
            ("c", "${{$compatibility_level} <level {2} ? {subnet} : {host}}"),
            ("d", "${{3.10} >level {3.9} ? {newer} : {older}}"),
            ("e", "${{a} === {b} ? {x} : {y}}"),
        ];
        assert_eq!(expand(&p, "a").unwrap(), "eq");
        assert_eq!(expand(&p, "b").unwrap(), "ge");
        assert_eq!(expand(&p, "c").unwrap(), "host");
        assert_eq!(expand(&p, "d").unwrap(), "newer");
        assert!(expand(&p, "e").is_err());
    }

    #[test]
    fn a_loop_is_an_error_naming_the_chain_not_a_hang() {
        let p = [("myorigin", "$mydomain"), ("mydomain", "x${myorigin}")];
        let e = expand(&p, "myorigin").unwrap_err();
        assert_eq!(e.param, "myorigin");
        assert_eq!(e.message, "expansion loop: $myorigin -> $mydomain -> $myorigin");
        let p = [("a", "$a")];
        assert_eq!(expand(&p, "a").unwrap_err().message, "expansion loop: $a -> $a");
        // A loop hidden in a conditional branch that is taken.
        let p = [("a", "${b?{$c}}"), ("b", "1"), ("c", "$a")];
        assert!(expand(&p, "a").unwrap_err().message.starts_with("expansion loop"));
    }

    #[test]
    fn a_self_reference_in_an_untaken_branch_is_fine() {
        let p = [("a", "${b?{$a}:{ok}}"), ("b", "")];
        assert_eq!(expand(&p, "a").unwrap(), "ok");
    }

    #[test]
    fn deep_but_finite_chains_are_capped() {
        let names: Vec<String> = (0..150).map(|i| format!("p{i}")).collect();
        let values: Vec<String> = (0..150).map(|i| format!("$p{}", i + 1)).collect();
        struct Chain(Vec<String>, Vec<String>);
        impl Source for Chain {
            fn raw(&self, name: &str) -> Option<Cow<'_, str>> {
                self.0.iter().position(|n| n == name).map(|i| Cow::Borrowed(self.1[i].as_str()))
            }
        }
        let c = Chain(names, values);
        let e = Expander::new(&c).param("p0").unwrap_err();
        assert!(e.message.contains("nesting"), "{e:?}");
    }

    #[test]
    fn undefined_names_expand_empty_and_are_recorded() {
        let m = map(&[("a", "x${nothere}y")]);
        let ex = Expander::new(&m);
        assert_eq!(ex.param("a").unwrap(), "xy");
        assert_eq!(ex.undefined(), vec![("a".to_owned(), "nothere".to_owned())]);
    }

    #[test]
    fn syntax_errors() {
        for bad in ["a$ b", "a$", "${myhostname", "${a?{x}b}", "${a!x}"] {
            let m = map(&[("v", bad), ("a", "1")]);
            assert!(Expander::new(&m).param("v").is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn level_comparison() {
        use std::cmp::Ordering::*;
        assert_eq!(compare_levels("3.6", "2"), Some(Greater));
        assert_eq!(compare_levels("3.10", "3.9"), Some(Greater));
        assert_eq!(compare_levels("2", "2.0.0"), Some(Equal));
        assert_eq!(compare_levels("x", "2"), None);
    }
}
