//! `regexp:` and `pcre:` tables as regexp_table(5) and pcre_table(5)
//! describe them: `/pattern/flags result`, `!/pattern/flags result`,
//! `/pattern1/!/pattern2/ result` (regexp only), `if /pattern/flags` ...
//! `endif` (nestable, negatable), and `$1`, `${1}`, `$$` in results.
//!
//! `regexp:` uses the `regex` crate (its syntax is close to POSIX ERE for
//! what Postfix tables use; matching is leftmost-first, not POSIX
//! leftmost-longest). `pcre:` uses `fancy-regex` for PCRE's look-around and
//! back-references. Matching is case-insensitive by default; the `i` flag
//! toggles it, as in Postfix. Every rule is checked at load (bad pattern,
//! unknown flag, `$n` beyond the pattern's groups, missing `endif`), and a
//! bad rule is an error, not skipped with a warning as Postfix does, so a
//! typo cannot silently change routing.

use std::path::{Path, PathBuf};

use super::super::error::Diagnostic;
use super::super::main_cf::LogicalLine;
use super::super::{Table, TableError, WrittenAt};
use super::Nesting;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Engine {
    Regex,
    Pcre,
}

#[derive(Debug)]
enum Matcher {
    Regex(regex::Regex),
    Pcre(Box<fancy_regex::Regex>),
}

impl Matcher {
    fn groups(&self) -> usize {
        match self {
            Matcher::Regex(r) => r.captures_len() - 1,
            Matcher::Pcre(r) => r.captures_len() - 1,
        }
    }

    /// The capture groups of a match (index 0 = whole match), or None.
    fn captures(&self, key: &str) -> Result<Option<Vec<Option<String>>>, String> {
        match self {
            Matcher::Regex(r) => {
                Ok(r.captures(key).map(|c| c.iter().map(|m| m.map(|m| m.as_str().to_owned())).collect()))
            }
            Matcher::Pcre(r) => match r.captures(key) {
                Ok(Some(c)) => Ok(Some(c.iter().map(|m| m.map(|m| m.as_str().to_owned())).collect())),
                Ok(None) => Ok(None),
                Err(e) => Err(e.to_string()),
            },
        }
    }

    fn is_match(&self, key: &str) -> Result<bool, String> {
        match self {
            Matcher::Regex(r) => Ok(r.is_match(key)),
            Matcher::Pcre(r) => r.is_match(key).map_err(|e| e.to_string()),
        }
    }
}

/// One part of a result template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Group(usize),
}

#[derive(Debug)]
enum Rule {
    Match { line: usize, pat: Matcher, negate: bool, unless: Option<Matcher>, result: Vec<Part> },
    If { line: usize, pat: Matcher, negate: bool, body: Vec<Rule> },
}

#[derive(Debug)]
pub(crate) struct RegexpTable {
    name: String,
    file: PathBuf,
    rules: Vec<Rule>,
}

impl RegexpTable {
    pub fn parse(
        spec: &str,
        engine: Engine,
        file: &Path,
        lines: Vec<LogicalLine>,
        param: &str,
        errors: &mut Vec<Diagnostic>,
    ) -> Option<RegexpTable> {
        let before = errors.len();
        let mut nesting = Nesting::new();
        for ll in lines {
            let err = |m: String| Diagnostic::param(file, Some(ll.line), param, m);
            let text = ll.text.trim();
            if text == "endif" {
                if let Err(m) =
                    nesting.close(|line, (pat, negate), body| Rule::If { line, pat, negate, body })
                {
                    errors.push(err(m));
                }
                continue;
            }
            if let Some(rest) = text.strip_prefix("if").filter(|r| r.starts_with(char::is_whitespace)) {
                match parse_pattern(rest.trim_start(), engine) {
                    Ok((pat, negate, tail)) if tail.trim().is_empty() => {
                        nesting.open(ll.line, Some((pat, negate)))
                    }
                    Ok(_) => {
                        errors.push(err("an if line takes no result".into()));
                        nesting.open(ll.line, None);
                    }
                    Err(m) => {
                        errors.push(err(m));
                        nesting.open(ll.line, None);
                    }
                }
                continue;
            }
            match parse_rule(text, engine) {
                Ok((pat, negate, unless, result)) => {
                    let groups = pat.groups();
                    if let Some(bad) = result.iter().find_map(|p| match p {
                        Part::Group(n) if *n > groups || (negate && *n > 0) => Some(*n),
                        _ => None,
                    }) {
                        errors.push(err(if negate {
                            format!("${bad}: a negated pattern has no groups to substitute")
                        } else {
                            format!(
                                "out of range replacement index \"{bad}\" (the pattern has {groups} group(s))"
                            )
                        }));
                        continue;
                    }
                    nesting.push(Rule::Match { line: ll.line, pat, negate, unless, result });
                }
                Err(m) => errors.push(err(m)),
            }
        }
        let rules = nesting.finish(|line| {
            errors.push(Diagnostic::param(file, Some(line), param, "if without matching endif"));
        });
        (errors.len() == before).then(|| RegexpTable { name: spec.to_owned(), file: file.to_owned(), rules })
    }
}

/// `/re/flags result`, `!/re/flags result`, `/re1/!/re2/ result`.
fn parse_rule(text: &str, engine: Engine) -> Result<(Matcher, bool, Option<Matcher>, Vec<Part>), String> {
    let (pat, negate, rest) = parse_pattern(text, engine)?;
    let (unless, rest) = match rest.strip_prefix('!') {
        Some(r) if !negate && !r.starts_with(char::is_whitespace) && !r.is_empty() => {
            if engine == Engine::Pcre {
                return Err("the /pattern1/!/pattern2/ form is supported by regexp tables only".into());
            }
            let (p2, neg2, r2) = parse_pattern(r, engine)?;
            if neg2 {
                return Err("bad /pattern1/!/pattern2/ syntax".into());
            }
            (Some(p2), r2)
        }
        _ => (None, rest),
    };
    if !rest.is_empty() && !rest.starts_with(char::is_whitespace) {
        return Err(format!("white space expected after the pattern's flags, at \"{rest}\""));
    }
    let result = rest.trim();
    if result.is_empty() {
        return Err("no result after the pattern".into());
    }
    Ok((pat, negate, unless, parse_template(result)?))
}

/// Parses `[!]<d>re<d>flags` (delimiter `d` is the first character) and
/// returns the matcher, the negation and the text after the flags.
fn parse_pattern(text: &str, engine: Engine) -> Result<(Matcher, bool, &str), String> {
    let (negate, text) = match text.strip_prefix('!') {
        Some(r) => (true, r.trim_start()),
        None => (false, text),
    };
    let delim = text.chars().next().ok_or("missing pattern")?;
    if delim.is_alphanumeric() || delim.is_whitespace() || delim == '\\' {
        return Err(format!("a pattern must start with a delimiter such as /, not \"{delim}\""));
    }
    let body = &text[delim.len_utf8()..];
    let mut pattern = String::new();
    let mut end = None;
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        if c == '\\' {
            match chars.next() {
                // An escaped delimiter stands for the delimiter itself; keep
                // the escape when the delimiter is a regex metacharacter.
                Some((_, n)) if n == delim => {
                    if regex_syntax_is_meta(n) {
                        pattern.push('\\');
                    }
                    pattern.push(n);
                }
                Some((_, n)) => {
                    pattern.push('\\');
                    pattern.push(n);
                }
                None => pattern.push('\\'),
            }
            continue;
        }
        if c == delim {
            end = Some(i + c.len_utf8());
            break;
        }
        pattern.push(c);
    }
    let end = end.ok_or_else(|| format!("missing closing delimiter {delim} in \"{text}\""))?;
    let after = &body[end..];
    let flag_len = after.find(|c: char| c.is_whitespace() || c == '!').unwrap_or(after.len());
    let flags = &after[..flag_len];
    let matcher = compile(&pattern, flags, engine)?;
    Ok((matcher, negate, &after[flag_len..]))
}

fn regex_syntax_is_meta(c: char) -> bool {
    "\\.+*?()|[]{}^$#&-~".contains(c)
}

fn compile(pattern: &str, flags: &str, engine: Engine) -> Result<Matcher, String> {
    let mut icase = true;
    let mut multi = false;
    let mut dotall = false;
    let mut extended = false;
    let mut anchored = false;
    let mut ungreedy = false;
    for f in flags.chars() {
        match (engine, f) {
            (_, 'i') => icase = !icase,
            (_, 'm') => multi = !multi,
            (Engine::Regex, 'x') => {
                return Err(
                    "flag x (POSIX basic regular expressions) is not supported; patterns are extended".into(),
                );
            }
            (Engine::Pcre, 's') => dotall = !dotall,
            (Engine::Pcre, 'x') => extended = !extended,
            (Engine::Pcre, 'A') => anchored = true,
            (Engine::Pcre, 'U') => ungreedy = !ungreedy,
            // E (dollar matches only at the end) is how both engines already
            // behave without m; X (PCRE extra) has no effect in PCRE2 either.
            (Engine::Pcre, 'E') | (Engine::Pcre, 'X') => {}
            _ => return Err(format!("unknown flag \"{f}\" after the pattern")),
        }
    }
    match engine {
        Engine::Regex => regex::RegexBuilder::new(pattern)
            .case_insensitive(icase)
            .multi_line(multi)
            .size_limit(1 << 20)
            .build()
            .map(Matcher::Regex)
            .map_err(|e| format!("bad regular expression: {e}")),
        Engine::Pcre => {
            let mut prefix = String::from("(?");
            for (on, c) in [(icase, 'i'), (multi, 'm'), (dotall, 's'), (extended, 'x')] {
                if on {
                    prefix.push(c);
                }
            }
            let mut re = if prefix.len() > 2 { format!("{prefix}){pattern}") } else { pattern.to_owned() };
            if ungreedy {
                re = format!("(?U){re}");
            }
            if anchored {
                re = format!("\\A(?:{re})");
            }
            fancy_regex::Regex::new(&re)
                .map(|r| Matcher::Pcre(Box::new(r)))
                .map_err(|e| format!("bad regular expression: {e}"))
        }
    }
}

/// `$1`, `${1}`, `$(1)` and `$$` in a result.
fn parse_template(s: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        text.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(r) = after.strip_prefix('$') {
            text.push('$');
            rest = r;
            continue;
        }
        let (name, r) = if let Some(inner) = after.strip_prefix('{').or_else(|| after.strip_prefix('(')) {
            let close = if after.starts_with('{') { '}' } else { ')' };
            let end = inner.find(close).ok_or_else(|| format!("missing '{close}' in \"{s}\""))?;
            (inner[..end].trim(), &inner[end + 1..])
        } else {
            let len = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
            (&after[..len], &after[len..])
        };
        let n: usize = name.parse().map_err(|_| format!("non-numeric replacement index \"{name}\""))?;
        if !text.is_empty() {
            parts.push(Part::Text(std::mem::take(&mut text)));
        }
        parts.push(Part::Group(n));
        rest = r;
    }
    text.push_str(rest);
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    Ok(parts)
}

impl RegexpTable {
    fn eval(&self, rules: &[Rule], key: &str) -> Result<Option<String>, TableError> {
        let fail = |line: usize, m: String| TableError {
            table: self.name.clone(),
            message: format!("line {line}: {m}"),
        };
        for rule in rules {
            match rule {
                Rule::If { line, pat, negate, body } => {
                    let hit = pat.is_match(key).map_err(|m| fail(*line, m))?;
                    if hit != *negate
                        && let Some(r) = self.eval(body, key)?
                    {
                        return Ok(Some(r));
                    }
                }
                Rule::Match { line, pat, negate, unless, result } => {
                    if *negate {
                        if !pat.is_match(key).map_err(|m| fail(*line, m))? {
                            return Ok(Some(render(result, &[])));
                        }
                        continue;
                    }
                    let Some(groups) = pat.captures(key).map_err(|m| fail(*line, m))? else {
                        continue;
                    };
                    if let Some(u) = unless
                        && u.is_match(key).map_err(|m| fail(*line, m))?
                    {
                        continue;
                    }
                    return Ok(Some(render(result, &groups)));
                }
            }
        }
        Ok(None)
    }
}

/// Calls `visit` with the line and text of every result that has no
/// `$n` in it, in file order.
fn fixed_results(rules: &[Rule], visit: &mut dyn FnMut(usize, &str)) {
    for rule in rules {
        match rule {
            Rule::If { body, .. } => fixed_results(body, visit),
            Rule::Match { line, result, .. } => {
                if let [Part::Text(t)] = result.as_slice() {
                    visit(*line, t);
                }
            }
        }
    }
}

fn render(parts: &[Part], groups: &[Option<String>]) -> String {
    let mut out = String::new();
    for p in parts {
        match p {
            Part::Text(t) => out.push_str(t),
            Part::Group(n) => out.push_str(groups.get(*n).and_then(|g| g.as_deref()).unwrap_or("")),
        }
    }
    out
}

impl Table for RegexpTable {
    fn lookup(&self, key: &str) -> Result<Option<String>, TableError> {
        self.eval(&self.rules, key)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn each_result(&self, visit: &mut dyn FnMut(WrittenAt<'_>, &str)) {
        fixed_results(&self.rules, &mut |line, text| visit(Some((&self.file, line)), text));
    }

    fn is_pattern(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(engine: Engine, text: &str) -> Result<RegexpTable, Vec<String>> {
        let mut errors = Vec::new();
        let lines = super::super::super::main_cf::logical_lines(text, Path::new("t"), &mut errors);
        let t = RegexpTable::parse("regexp:t", engine, Path::new("t"), lines, "transport_maps", &mut errors);
        t.ok_or_else(|| errors.iter().map(|d| d.to_string()).collect())
    }

    fn q(t: &RegexpTable, k: &str) -> Option<String> {
        t.lookup(k).unwrap()
    }

    const RULES: &str = "\
# comment
/^(.*)@(.*)$/ ${2}:$1
if /^z/
/q/ zq
if !/zqq/
/zq/ inner
endif
endif
!/^n/ notn
";

    #[test]
    fn rules_in_order_with_substitution_if_endif_and_negation() {
        for engine in [Engine::Regex, Engine::Pcre] {
            let t = table(engine, RULES).unwrap();
            assert_eq!(q(&t, "u@d").as_deref(), Some("d:u"));
            assert_eq!(q(&t, "zq").as_deref(), Some("zq"));
            assert_eq!(q(&t, "q").as_deref(), Some("notn"));
            assert_eq!(q(&t, "nn"), None);
            assert_eq!(q(&t, "abc").as_deref(), Some("notn"));
        }
    }

    #[test]
    fn matching_is_case_insensitive_unless_the_i_flag_toggles_it() {
        let t = table(Engine::Regex, "/^abc$/ yes\n/^DEF$/i exact\n").unwrap();
        assert_eq!(q(&t, "ABC").as_deref(), Some("yes"));
        assert_eq!(q(&t, "DEF").as_deref(), Some("exact"));
        assert_eq!(q(&t, "def"), None);
        let t = table(Engine::Pcre, "/^DEF$/i exact\n").unwrap();
        assert_eq!(q(&t, "def"), None);
    }

    #[test]
    fn two_pattern_form_and_other_delimiters() {
        let t = table(Engine::Regex, "/x/!/xy/ x-not-xy\n%a/b%  slash\n/a\\/c/ escaped\n").unwrap();
        assert_eq!(q(&t, "xa").as_deref(), Some("x-not-xy"));
        assert_eq!(q(&t, "xya"), None);
        assert_eq!(q(&t, "a/b").as_deref(), Some("slash"));
        assert_eq!(q(&t, "a/c").as_deref(), Some("escaped"));
        assert!(table(Engine::Pcre, "/x/!/xy/ r\n").is_err());
    }

    #[test]
    fn pcre_look_around_and_back_references() {
        let t = table(
            Engine::Pcre,
            "/^(?!postmaster@)(.+)@example\\.com$/ lmtp:[127.0.0.1]:24\n/^(a)\\1$/ double\n",
        )
        .unwrap();
        assert_eq!(q(&t, "user@example.com").as_deref(), Some("lmtp:[127.0.0.1]:24"));
        assert_eq!(q(&t, "postmaster@example.com"), None);
        assert_eq!(q(&t, "aa").as_deref(), Some("double"));
        assert!(table(Engine::Regex, "/^(a)\\1$/ double\n").is_err());
    }

    #[test]
    fn errors_name_the_line() {
        let e = table(Engine::Regex, "/(a)/ $2\n").unwrap_err();
        assert_eq!(
            e,
            vec!["t:1: transport_maps: out of range replacement index \"2\" (the pattern has 1 group(s))"]
        );
        let e = table(Engine::Regex, "/a/ x$1y\n").unwrap_err();
        assert!(e[0].contains("non-numeric replacement index \"1y\""), "{e:?}");
        let e = table(Engine::Regex, "/a( x\n").unwrap_err();
        assert!(e[0].starts_with("t:1:"), "{e:?}");
        let e = table(Engine::Regex, "ok\n/a/ r\nif /b/\n/c/ d\n").unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[1].contains("t:3:") && e[1].contains("without matching endif"), "{e:?}");
        let e = table(Engine::Regex, "endif\n").unwrap_err();
        assert!(e[0].contains("endif without if"));
        let e = table(Engine::Regex, "/a/\n").unwrap_err();
        assert!(e[0].contains("no result"));
        let e = table(Engine::Regex, "/a/q r\n").unwrap_err();
        assert!(e[0].contains("unknown flag"));
        let e = table(Engine::Regex, "!/(a)/ $1\n").unwrap_err();
        assert!(e[0].contains("negated"));
    }

    #[test]
    fn dollar_dollar_and_missing_groups() {
        let t = table(Engine::Regex, "/^(a)|(b)$/ [$1][$2]$$\n").unwrap();
        assert_eq!(q(&t, "b").as_deref(), Some("[][b]$"));
    }
}
