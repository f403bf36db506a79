//! `cidr:` tables as cidr_table(5) describes them: `network/prefix result`
//! or `address result` lines for IPv4 and IPv6 (IPv6 with or without
//! brackets), `!pattern result`, and `if pattern` ... `endif` blocks; the
//! first matching line wins. The key is a client IP address; a key that is
//! not an address matches nothing, and IPv4 patterns never match IPv6 keys.
//!
//! A network written with host bits set (`10.0.0.1/8`) is an error, as in
//! Postfix, because it usually means a typo.

use std::net::IpAddr;
use std::path::Path;

use ipnet::IpNet;

use super::super::error::Diagnostic;
use super::super::main_cf::LogicalLine;
use super::super::values::parse_ip;
use super::super::{Table, TableError};
use super::Nesting;

#[derive(Debug)]
enum Rule {
    Match { net: IpNet, negate: bool, result: String },
    If { net: IpNet, negate: bool, body: Vec<Rule> },
}

#[derive(Debug)]
pub(crate) struct CidrTable {
    name: String,
    rules: Vec<Rule>,
}

/// Parses `addr`, `addr/len`, `[v6]` or `[v6]/len` into a network,
/// refusing host bits beyond the prefix.
pub(crate) fn parse_net(text: &str) -> Result<IpNet, String> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let addr = addr.strip_prefix('[').and_then(|a| a.strip_suffix(']')).unwrap_or(addr);
    let ip: IpAddr = parse_ip(addr).ok_or_else(|| format!("bad address pattern \"{text}\""))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len: u8 = match len {
        Some(l) => {
            l.parse().ok().filter(|l| *l <= max).ok_or_else(|| format!("bad network prefix in \"{text}\""))?
        }
        None => max,
    };
    let net = IpNet::new(ip, len).map_err(|_| format!("bad network prefix in \"{text}\""))?;
    if net.network() != ip {
        let fixed = match net.trunc() {
            IpNet::V4(n) => n.to_string(),
            IpNet::V6(n) => format!("[{}]/{}", n.network(), n.prefix_len()),
        };
        return Err(format!(
            "non-null host address bits in \"{text}\", perhaps you should use \"{fixed}\" instead"
        ));
    }
    Ok(net)
}

fn parse_pattern(text: &str) -> Result<(IpNet, bool), String> {
    let (negate, t) = match text.strip_prefix('!') {
        Some(r) => (true, r.trim_start()),
        None => (false, text),
    };
    Ok((parse_net(t)?, negate))
}

impl CidrTable {
    pub fn parse(
        spec: &str,
        file: &Path,
        lines: Vec<LogicalLine>,
        param: &str,
        errors: &mut Vec<Diagnostic>,
    ) -> Option<CidrTable> {
        let before = errors.len();
        let mut nesting = Nesting::new();
        for ll in lines {
            let err = |m: String| Diagnostic::param(file, Some(ll.line), param, m);
            let text = ll.text.trim();
            if text == "endif" {
                if let Err(m) = nesting.close(|_, (net, negate), body| Rule::If { net, negate, body }) {
                    errors.push(err(m));
                }
                continue;
            }
            let (first, rest) = match text.find(char::is_whitespace) {
                Some(i) => (&text[..i], text[i..].trim()),
                None => (text, ""),
            };
            if first == "if" {
                let cond = parse_pattern(rest).map_err(|m| errors.push(err(m))).ok();
                nesting.open(ll.line, cond);
                continue;
            }
            // `! 10.0.0.0/8 result` is allowed too.
            let (pattern, result) = if first == "!" {
                match rest.find(char::is_whitespace) {
                    Some(i) => (format!("!{}", &rest[..i]), rest[i..].trim()),
                    None => (format!("!{rest}"), ""),
                }
            } else {
                (first.to_owned(), rest)
            };
            if result.is_empty() {
                errors.push(err(format!("no result after the pattern \"{pattern}\"")));
                continue;
            }
            match parse_pattern(&pattern) {
                Ok((net, negate)) => nesting.push(Rule::Match { net, negate, result: result.to_owned() }),
                Err(m) => errors.push(err(m)),
            }
        }
        let rules = nesting.finish(|line| {
            errors.push(Diagnostic::param(file, Some(line), param, "if without matching endif"));
        });
        (errors.len() == before).then(|| CidrTable { name: spec.to_owned(), rules })
    }
}

fn matches(net: &IpNet, ip: &IpAddr) -> bool {
    // IpNet::contains is false across families, which is the rule we want.
    net.contains(ip)
}

fn eval<'a>(rules: &'a [Rule], ip: &IpAddr) -> Option<&'a str> {
    for r in rules {
        match r {
            Rule::Match { net, negate, result } => {
                if matches(net, ip) != *negate {
                    return Some(result);
                }
            }
            Rule::If { net, negate, body } => {
                if matches(net, ip) != *negate
                    && let Some(r) = eval(body, ip)
                {
                    return Some(r);
                }
            }
        }
    }
    None
}

impl Table for CidrTable {
    fn lookup(&self, key: &str) -> Result<Option<String>, TableError> {
        let key = key.trim();
        let key = key.strip_prefix('[').and_then(|k| k.strip_suffix(']')).unwrap_or(key);
        let Some(ip) = parse_ip(key) else {
            return Ok(None);
        };
        Ok(eval(&self.rules, &ip).map(str::to_owned))
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn is_pattern(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Result<CidrTable, Vec<String>> {
        let mut errors = Vec::new();
        let lines = super::super::super::main_cf::logical_lines(text, Path::new("c"), &mut errors);
        CidrTable::parse("cidr:c", Path::new("c"), lines, "mynetworks", &mut errors)
            .ok_or_else(|| errors.iter().map(|d| d.to_string()).collect())
    }

    const NETS: &str = "\
# first match wins
192.0.2.1           single
192.0.2.0/24        v4net
[2001:db8::1]       v6single
2001:db8::/32       v6net
if 10.0.0.0/8
!10.1.0.0/16        ten-not-ten-one
endif
0.0.0.0/0           any4
";

    #[test]
    fn v4_and_v6_first_match_wins() {
        let t = table(NETS).unwrap();
        let q = |k: &str| t.lookup(k).unwrap();
        assert_eq!(q("192.0.2.1").as_deref(), Some("single"));
        assert_eq!(q("192.0.2.77").as_deref(), Some("v4net"));
        assert_eq!(q("2001:db8::1").as_deref(), Some("v6single"));
        assert_eq!(q("2001:DB8:0:1::5").as_deref(), Some("v6net"));
        assert_eq!(q("10.2.3.4").as_deref(), Some("ten-not-ten-one"));
        assert_eq!(q("10.1.3.4").as_deref(), Some("any4"));
        assert_eq!(q("198.51.100.1").as_deref(), Some("any4"));
        assert_eq!(q("2001:db9::1"), None, "v4 0/0 never matches v6");
        assert_eq!(q("not-an-address"), None);
    }

    #[test]
    fn host_bits_and_bad_lines_are_errors_with_lines() {
        let e =
            table("10.0.0.1/8 x\n2001:db8::1/32 y\n300.1.1.1 z\n10.0.0.0/33 w\n10.0.0.0/8\nif 10.0.0.0/8\n")
                .unwrap_err();
        assert_eq!(e.len(), 6, "{e:?}");
        assert_eq!(
            e[0],
            "c:1: mynetworks: non-null host address bits in \"10.0.0.1/8\", perhaps you should use \"10.0.0.0/8\" instead"
        );
        assert!(e[1].contains("[2001:db8::]/32"), "{e:?}");
        assert!(e[2].starts_with("c:3:"));
        assert!(e[3].starts_with("c:4:"));
        assert!(e[4].contains("no result"));
        assert!(e[5].contains("without matching endif"));
    }

    #[test]
    fn endif_without_if_and_a_bad_if_keep_the_nesting() {
        let e = table("endif\nif 10.0.0.1/8\n10.0.0.0/8 x\nendif\n").unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("c:1:") && e[0].contains("endif without if"), "{e:?}");
        assert!(e[1].starts_with("c:2:") && e[1].contains("host address bits"), "{e:?}");
    }
}
